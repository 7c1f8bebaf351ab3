"""Writing files so that a failure never leaves a half-written or clobbered output."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import EdgeconvError


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise EdgeconvError(f"cannot write {target}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_bytes(path: str | os.PathLike, what: str = "file") -> bytes:
    """Read a whole file, turning OS errors into one-line user errors."""
    p = Path(path)
    if not p.exists():
        raise EdgeconvError(f"{what} not found: {p}")
    if p.is_dir():
        raise EdgeconvError(f"{what} is a folder, not a file: {p}")
    try:
        return p.read_bytes()
    except OSError as e:
        raise EdgeconvError(f"cannot read {what} {p}: {e.strerror}") from None
