"""`edgeconv export MODEL --target rpi4|rpi5|rpi-zero2|rpi-armv7 -o DIR`: a folder to copy to a
Raspberry Pi and run there.

    DIR/model.edgeconv     the int8 model
    DIR/run.py             the runner (targets/rpi/runner.py): images, stdin/stdout, --warmup
    DIR/edgeconv/          the edgeconv runtime (pure Python, copied from this install)
    DIR/requirements.txt   NumPy (+ Numba on 64-bit) pinned to what the emulated check ran
    DIR/systemd/           example units: warm-up oneshot, socket-activated inference
    DIR/README.md          install, warm-up, run, service
    DIR/bundle.json        manifest with sha256 of every file

The bundle is deterministic (same model and edgeconv -> same bytes) and is written beside
DIR and renamed into place, so a failed export leaves no half bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from edgeconv.errors import EdgeconvError

SIXTY_FOUR_BIT = ("rpi4", "rpi5", "rpi-zero2")
# Parts of an installed edgeconv a device never needs (converters, targets, demo data).
_NOT_VENDORED = {"quantize", "targets", "examples", "__pycache__", "tests"}


def tested_versions() -> dict:
    """The package versions the emulated Pi check installs and verifies (tested.json)."""
    return json.loads(resources.files(__package__).joinpath("tested.json").read_text())


def requirements_for(profile) -> tuple[str, str]:
    """(requirements.txt text, one-line summary) for a Pi profile."""
    t = tested_versions()
    if profile.name in SIXTY_FOUR_BIT:
        v = t["aarch64"]
        lines = [
            "# For 64-bit Raspberry Pi OS. Pinned to what edgeconv's emulated check ran on",
            f"# {t['os']}, aarch64, Python {t['python']} (targets/rpi/emulate.py).",
            f"numpy=={v['numpy']}",
            f'numba=={v["numba"]} ; platform_machine == "aarch64"',
            f'llvmlite=={v["llvmlite"]} ; platform_machine == "aarch64"',
        ]
        summary = (f"numpy {v['numpy']}, numba {v['numba']} (llvmlite {v['llvmlite']}), "
                   "wheels for aarch64.")
    else:
        v = t["armv7l"]
        lines = [
            "# For 32-bit Raspberry Pi OS (armhf). Tested on emulated "
            f"{t['os']} armhf, Python {t['python']},",
            f"# with Debian's python3-numpy {v['numpy']} (apt) in a --system-site-packages venv.",
            "# Numba has no armv7 wheels, and Debian's armhf python3-numba aborts on first use,",
            "# so edgeconv runs its NumPy kernels here (same output bytes, slower).",
            f"numpy=={v['numpy']}",
        ]
        summary = f"numpy {v['numpy']} only (Debian's python3-numpy satisfies it)."
    return "\n".join(lines) + "\n", summary


def _install_text(profile) -> str:
    if profile.name in SIXTY_FOUR_BIT:
        return (
            "64-bit Raspberry Pi OS (bookworm, Python 3.11): pip gets NumPy and Numba wheels.\n\n"
            "    python3 -m venv .venv\n"
            "    .venv/bin/pip install -r requirements.txt\n\n"
            "Or with Debian's own packages (older Numba/NumPy, no downloads from PyPI):\n\n"
            "    sudo apt install python3-numpy python3-numba\n"
            "    python3 -m venv --system-site-packages .venv\n\n"
            "If Numba is missing or cannot compile here, the runtime says so once and uses\n"
            "its NumPy kernels (same output bytes, slower)."
        )
    return (
        "32-bit Raspberry Pi OS (armhf, bookworm): NumPy from Debian, no Numba.\n\n"
        "    sudo apt install python3-numpy\n"
        "    python3 -m venv --system-site-packages .venv\n"
        "    .venv/bin/pip install -r requirements.txt   # already satisfied by apt's NumPy\n\n"
        "Do not install python3-numba on armhf: Debian's 0.56.4 aborts the process on its first\n"
        "compilation. If it is installed anyway, edgeconv notices with a one-time probe in a\n"
        "child process and keeps to its NumPy kernels; `run.py --info` shows why."
    )


def _unit_name(outdir: Path) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", outdir.name.lower()).strip("-")
    return name or "edgeconv-model"


def _vendor_runtime(dest: Path) -> list[str]:
    """Copy the installed edgeconv package's Python files (minus _NOT_VENDORED) into dest."""
    import edgeconv

    src = Path(edgeconv.__file__).resolve().parent
    copied = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in _NOT_VENDORED and not d.startswith("."))
        rel = Path(root).relative_to(src)
        for f in sorted(files):
            if f.endswith(".py"):
                target = dest / rel / f
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes((Path(root) / f).read_bytes())
                copied.append(str(Path("edgeconv") / rel / f))
    if "edgeconv/runtime.py" not in copied:
        raise EdgeconvError(f"could not find edgeconv's runtime in {src}")
    return copied


def _fill(template: str, values: dict[str, str]) -> str:
    text = resources.files(__package__).joinpath("templates", template).read_text()
    for key, val in values.items():
        text = text.replace(f"@@{key}@@", val)
    left = re.findall(r"@@[A-Z_]+@@", text)
    if left:
        raise AssertionError(f"template {template}: unfilled {left}")
    return text


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export_bundle(model, outdir, profile) -> dict:
    """Write the bundle for `model` (an int8 edgeconv Model) and Linux `profile` to outdir."""
    from edgeconv import __version__
    from edgeconv.formats.native import to_bytes

    if profile.kind != "linux":
        raise EdgeconvError(f"target {profile.name} is not a Linux board")
    if not model.quantized:
        raise EdgeconvError("a Raspberry Pi bundle needs an int8 model; run `edgeconv quantize`")
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise EdgeconvError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "bundle.json").is_file():
        raise EdgeconvError(
            f"{out} is not empty and is not an edgeconv bundle; choose a new folder"
        )
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise EdgeconvError(f"cannot write {out}: folder {parent} does not exist")

    name = _unit_name(out)
    model_bytes = to_bytes(model.graph)
    g = model.graph
    inp, outp = g.tensor(g.inputs[0]), g.tensor(g.outputs[0])
    requirements, req_summary = requirements_for(profile)
    values = {
        "NAME": name,
        "DIR": f"/opt/{name}",
        "TARGET": profile.name,
        "DESCRIPTION": f"{profile.description} ({profile.cpu})",
        "VERSION": __version__,
        "MODEL_BYTES": f"{len(model_bytes):,}",
        "MODEL_SHA": _sha256(model_bytes),
        "INPUT": f"`{inp.name}` {list(inp.shape)} {inp.dtype}",
        "OUTPUT": f"`{outp.name}` {list(outp.shape)} {outp.dtype}",
        "REQ_SUMMARY": req_summary,
        "INSTALL": _install_text(profile),
    }
    runner = resources.files(__package__).joinpath("runner.py").read_bytes()

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    try:
        files: dict[str, bytes] = {
            "model.edgeconv": model_bytes,
            "run.py": runner,
            "requirements.txt": requirements.encode(),
            "README.md": _fill("README.md", values).encode(),
            f"systemd/{name}-warmup.service": _fill("warmup.service", values).encode(),
            f"systemd/{name}.socket": _fill("infer.socket", values).encode(),
            f"systemd/{name}@.service": _fill("infer@.service", values).encode(),
        }
        for rel, data in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        (tmp / "run.py").chmod(0o755)
        vendored = _vendor_runtime(tmp / "edgeconv")
        listing = {rel: _sha256((tmp / rel).read_bytes()) for rel in [*files, *vendored]}
        manifest = {
            "format": "edgeconv-rpi-bundle/1",
            "edgeconv_version": __version__,
            "target": profile.name,
            "cpu": profile.cpu,
            "model": {
                "file": "model.edgeconv",
                "sha256": values["MODEL_SHA"],
                "bytes": len(model_bytes),
                "input": {"name": inp.name, "shape": list(inp.shape), "dtype": inp.dtype},
                "outputs": list(g.outputs),
            },
            "requirements": [ln for ln in requirements.splitlines() if ln and ln[0] != "#"],
            "files": dict(sorted(listing.items())),
        }
        (tmp / "bundle.json").write_text(json.dumps(manifest, indent=1) + "\n")
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    total = sum((out / rel).stat().st_size for rel in [*listing, "bundle.json"])
    text = (
        f"wrote {out}/ for {profile.name}: model.edgeconv ({len(model_bytes):,} B), run.py, "
        f"edgeconv runtime ({len(vendored)} files), requirements.txt, README.md, systemd/ "
        f"({total / 1024:.0f} KiB in all)\n"
        f"on the Pi: python3 -m venv .venv && .venv/bin/pip install -r requirements.txt && "
        f".venv/bin/python3 run.py --warmup   (see {out}/README.md)"
    )
    return {
        "output": str(out),
        "target": profile.name,
        "files": sorted([*listing, "bundle.json"]),
        "bytes": total,
        "model_sha256": values["MODEL_SHA"],
        "requirements": manifest["requirements"],
        "text": text,
    }
