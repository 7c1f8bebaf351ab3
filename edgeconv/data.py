"""Reading sample data the way users have it: .npz, .npy, and MNIST IDX (raw or .gz),
and fitting samples to a model's input shape and dtype.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zipfile
from pathlib import Path

import numpy as np

from .errors import EdgeconvError
from .fileio import read_bytes

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_NPZ_KEYS = (("x", "y"), ("images", "labels"))


def _read_idx(raw: bytes, source: str) -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise EdgeconvError(f"{source}: not an IDX file (bad magic number)")
    ndim = raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise EdgeconvError(f"{source}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:head])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(dims)) if dims else 0
    if len(raw) - head < count * dtype.itemsize:
        raise EdgeconvError(
            f"{source}: truncated IDX file (header says {list(dims)}, "
            f"{(len(raw) - head) // max(dtype.itemsize, 1)} values present)"
        )
    return np.frombuffer(raw, dtype, count, head).reshape(dims).astype(dtype.newbyteorder("="))


def _load_array_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    raw = read_bytes(path, "data file")
    name = path.name.lower()
    if name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise EdgeconvError(f"{path}: corrupt gzip file ({e})") from None
        name = name[:-3]
    if name.endswith(".npz"):
        try:
            archive = np.load(io.BytesIO(raw), allow_pickle=False)
        except (ValueError, OSError, zipfile.BadZipFile) as e:
            raise EdgeconvError(f"{path}: not a readable .npz file ({e})") from None
        for xk, yk in _NPZ_KEYS:
            if xk in archive.files:
                try:
                    x = archive[xk]
                    y = archive[yk] if yk in archive.files else None
                except ValueError as e:
                    raise EdgeconvError(f"{path}: {e} (edgeconv never unpickles data)") from None
                return x, y
        raise EdgeconvError(
            f"{path}: .npz has keys {archive.files}; expected 'x' (and 'y') or 'images' "
            "(and 'labels')"
        )
    if name.endswith(".npy"):
        try:
            return np.load(io.BytesIO(raw), allow_pickle=False), None
        except ValueError as e:
            raise EdgeconvError(f"{path}: not a readable .npy file ({e})") from None
    if raw[:2] == b"\0\0":
        return _read_idx(raw, str(path)), None
    raise EdgeconvError(
        f"{path}: unknown data format; use .npz (x/y or images/labels), .npy, or MNIST IDX "
        "(raw or .gz)"
    )


def _sibling_labels(path: Path) -> Path | None:
    """MNIST naming: t10k-images-idx3-ubyte.gz -> t10k-labels-idx1-ubyte.gz."""
    name = path.name
    if "images-idx3" in name:
        cand = path.with_name(name.replace("images-idx3", "labels-idx1"))
        return cand if cand.exists() else None
    return None


def load_dataset(
    path: str | os.PathLike, labels: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Samples and (if found) integer labels. IDX images find their labels file by the
    MNIST naming convention unless `labels` names one."""
    p = Path(path)
    x, y = _load_array_file(p)
    label_path = Path(labels) if labels else (_sibling_labels(p) if y is None else None)
    if label_path is not None:
        y, _ = _load_array_file(label_path)
    if x.size == 0 or x.ndim == 0:
        raise EdgeconvError(f"{p}: contains no samples")
    if not np.issubdtype(x.dtype, np.number):
        raise EdgeconvError(f"{p}: samples have non-numeric dtype {x.dtype}")
    if y is not None:
        y = np.asarray(y).reshape(-1)
        if not np.issubdtype(y.dtype, np.integer):
            if np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
                y = y.astype(np.int64)
            else:
                raise EdgeconvError(f"{label_path or p}: labels must be integers, got {y.dtype}")
        if len(y) != len(x):
            raise EdgeconvError(
                f"{label_path or p}: {len(y)} labels for {len(x)} samples; they must match"
            )
    return x, y


def fit_samples(x: np.ndarray, sample_shape: tuple[int, ...], source: str = "input") -> np.ndarray:
    """Reshape `x` to [N, *sample_shape] when the per-sample element count matches
    (e.g. [N,28,28] -> [N,1,28,28]); a single un-batched sample becomes N=1."""
    x = np.asarray(x)
    if x.shape[1:] == tuple(sample_shape):  # the common case, before np.prod (~3 us)
        return x
    per = int(np.prod(sample_shape))
    if x.ndim >= 1 and x.size and int(np.prod(x.shape[1:])) == per:
        return x.reshape((x.shape[0], *sample_shape))
    if x.size == per:
        return x.reshape((1, *sample_shape))
    raise EdgeconvError(
        f"{source} has shape {list(x.shape)}; the model expects [N, "
        f"{', '.join(map(str, sample_shape))}] ({per} values per sample)"
    )


def to_model_dtype(x: np.ndarray, dtype: str, source: str = "input") -> np.ndarray:
    """Integer pixels become float32 unless the model takes integers itself."""
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise EdgeconvError(f"{source} has non-numeric dtype {x.dtype}")
    if dtype in ("int8", "uint8"):
        if x.dtype != np.dtype(dtype):
            raise EdgeconvError(f"{source} is {x.dtype}; this model takes {dtype} directly")
        return x
    x = np.asarray(x, np.float32)
    if not np.all(np.isfinite(x)):
        raise EdgeconvError(f"{source} contains NaN or inf")
    return x
