"""What `edgeconv info` and `edgeconv warmup` report: the backend and why, where Numba keeps
its compiled kernels and how full that cache is, and the CPU's SIMD features.

Everything here is cheap and imports neither Numba nor NumPy: versions come from package
metadata, CPU features from the kernel's auxiliary vector (what the C library's
``getauxval(AT_HWCAP)`` returns; under qemu-user it describes the emulated CPU).
"""

from __future__ import annotations

import os
import struct
import sys
import time
from importlib.util import find_spec
from pathlib import Path

AT_HWCAP, AT_HWCAP2 = 16, 26
# Linux uapi asm/hwcap.h bits that matter for int8 dot products.
_AARCH64_HWCAP = {"neon": 1 << 1, "dotprod": 1 << 20, "sve": 1 << 22}
_AARCH64_HWCAP2 = {"i8mm": 1 << 13}
_ARM32_HWCAP = {"neon": 1 << 12, "dotprod": 1 << 24}
_ARM32_HWCAP2: dict[str, int] = {}
# Cortex "CPU part" numbers as /proc/cpuinfo prints them (ARM implementer 0x41).
_ARM_PARTS = {
    "0xc07": "cortex-a7",
    "0xd03": "cortex-a53",
    "0xd08": "cortex-a72",
    "0xd0b": "cortex-a76",
    "0xd05": "cortex-a55",
    "0xd0d": "cortex-a77",
}


def version_of(dist: str) -> str | None:
    """Installed version of `dist` (None if it is not importable). Reads the name of the
    *.dist-info / *.egg-info folder beside the package (one directory listing); only if that
    is ambiguous does it fall back to importlib.metadata, which costs ~50 ms to import."""
    spec = find_spec(dist)
    if spec is None or not spec.origin:
        return None
    site = Path(spec.origin).parent.parent

    def norm(n: str) -> str:
        return n.lower().replace("-", "_").replace(".", "_")

    found = set()
    try:
        for entry in os.scandir(site):
            base, dot, suffix = entry.name.rpartition(".")
            if suffix not in ("dist-info", "egg-info") or "-" not in base:
                continue
            project, version = base.split("-", 1)
            if norm(project) == norm(dist):
                found.add(version.split("-py")[0])
    except OSError:
        pass
    if len(found) == 1:
        return found.pop()
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _auxv() -> dict[int, int]:
    try:
        raw = Path("/proc/self/auxv").read_bytes()
    except OSError:
        return {}
    word = struct.calcsize("L")  # the process's own word size (4 on 32-bit ARM)
    fmt = "L" * (len(raw) // word)
    vals = struct.unpack(fmt, raw[: len(fmt) * word])
    return {vals[i]: vals[i + 1] for i in range(0, len(vals) - 1, 2)}


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return info
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in info:
            info[key.strip()] = value.strip()
    return info


def cpu_features(machine: str | None = None) -> dict:
    """{'arch', 'neon', 'dotprod', 'i8mm', 'source', 'cpu'}: None where it does not apply."""
    machine = machine or os.uname().machine
    is_arm64 = machine in ("aarch64", "arm64") and struct.calcsize("P") == 8
    is_arm32 = machine.startswith("arm") or (machine == "aarch64" and not is_arm64)
    out: dict = {"arch": machine, "neon": None, "dotprod": None, "i8mm": None}
    if is_arm64 or is_arm32:
        aux = _auxv()
        bits = _AARCH64_HWCAP if is_arm64 else _ARM32_HWCAP
        bits2 = _AARCH64_HWCAP2 if is_arm64 else _ARM32_HWCAP2
        if AT_HWCAP in aux:
            hw, hw2 = aux[AT_HWCAP], aux.get(AT_HWCAP2, 0)
            out["neon"] = bool(hw & bits["neon"])
            out["dotprod"] = bool(hw & bits["dotprod"])
            out["i8mm"] = bool(hw2 & bits2["i8mm"]) if "i8mm" in bits2 else None
            out["source"] = "AT_HWCAP"
        if is_arm32 and machine == "aarch64":
            out["arch"] = "aarch64 kernel, 32-bit userland"
        part = _cpuinfo().get("CPU part")
        if part:
            out["cpu"] = _ARM_PARTS.get(part.lower(), f"part {part}")
    elif machine in ("x86_64", "AMD64", "i686", "i386"):
        flags = set(_cpuinfo().get("flags", "").split())
        out["simd"] = [f for f in ("sse4_2", "avx2", "avx512bw", "avx512_vnni", "avx_vnni")
                       if f in flags]
        out["source"] = "/proc/cpuinfo"
    return out


def _fast_kernels_file() -> Path | None:
    spec = find_spec("edgeconv.kernels.fast")
    return Path(spec.origin) if spec and spec.origin else None


def _writable_dir(path: Path) -> bool:
    """Would Numba accept `path` as a cache folder (it must exist or be creatable, and be
    writable)? Checked without creating anything."""
    p = path
    while not p.exists():
        if p.parent == p:
            return False
        p = p.parent
    return p.is_dir() and os.access(p, os.W_OK | os.X_OK)


def numba_cache_dir(source: Path | None = None) -> tuple[Path | None, str]:
    """Where Numba will cache the kernels of `source` (default: edgeconv's fast.py), by the
    same rules, in the same order, as Numba's own cache locators: NUMBA_CACHE_DIR, then the
    source's __pycache__ if writable, then the user-wide cache folder."""
    import hashlib

    source = source or _fast_kernels_file()
    if source is None:
        return None, "edgeconv.kernels.fast not found"
    src_dir = os.path.dirname(os.path.abspath(source))
    sub = "_".join([os.path.split(src_dir)[-1], hashlib.sha1(src_dir.encode()).hexdigest()])
    user = os.environ.get("NUMBA_CACHE_DIR")
    if user:
        cand = Path(user) / sub
        if _writable_dir(cand):
            return cand, "NUMBA_CACHE_DIR"
    intree = Path(src_dir) / "__pycache__"
    if _writable_dir(intree):
        return intree, "beside the installed kernels (__pycache__)"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    cand = Path(xdg) / "numba" / sub
    if _writable_dir(cand):
        return cand, "user-wide cache"
    return None, "no writable cache folder: every process recompiles"


def cached_kernel_names(source: Path) -> list[str]:
    """The cache entry stems Numba uses for the ``@njit(cache=True...)`` functions of
    `source`: ``<module>.<function>-<first line>.py<XY>`` (the decorator's line)."""
    stem, tag = source.stem, f"py{sys.version_info[0]}{sys.version_info[1]}"
    lines = source.read_text().splitlines()
    names = []
    for i, line in enumerate(lines):
        if line.lstrip().startswith("@njit(") and "cache=True" in line:
            for follow in lines[i + 1 : i + 4]:
                if follow.lstrip().startswith("def "):
                    fn = follow.lstrip()[4:].split("(", 1)[0].strip()
                    names.append(f"{stem}.{fn}-{i + 1}.{tag}")
                    break
    return names


# Per-model modules the compiled engine generates (kernels/compiled.py): their source goes
# to <edgeconv cache>/kernels/edgeconv_gen_<hash>.py, and Numba caches them like any module.
_GENERATED_DIR, _GENERATED_GLOB = "kernels", "edgeconv_gen_*.py"


def _listing(folder: Path | None) -> dict[str, os.stat_result]:
    """name -> stat of the Numba cache files (.nbi/.nbc) in `folder`, in one directory scan."""
    if folder is None:
        return {}
    try:
        with os.scandir(folder) as it:
            return {e.name: e.stat() for e in it if e.name.endswith((".nbi", ".nbc"))}
    except OSError:
        return {}


def numba_cache_state(folder: Path | None = None) -> dict:
    """What of edgeconv's compiled code is in Numba's cache: the library kernels (the
    ``@njit(cache=True)`` functions of edgeconv/kernels/*.py, found in `folder`, default
    where fast.py's go) and the per-model modules of the compiled engine. Cheap: one
    directory listing per cache folder, whatever their size."""
    from .kernels.probe import cache_dir

    fast = _fast_kernels_file()
    if fast is None:
        return {"kernels": 0, "of": 0, "models": 0, "bytes": 0, "state": "no kernels found"}
    if folder is None:
        folder = numba_cache_dir(fast)[0]
    stems: list[str] = []
    newest_source = 0.0
    for src in sorted(fast.parent.glob("*.py")):
        names = cached_kernel_names(src)
        if names:
            stems += names
            newest_source = max(newest_source, src.stat().st_mtime)
    files = _listing(folder)
    present = [n for n in stems if f"{n}.nbi" in files]
    wanted = tuple(f"{n}." for n in present)
    size = sum(st.st_size for name, st in files.items() if name.startswith(wanted))
    older = any(files[f"{n}.nbi"].st_mtime < newest_source for n in present)
    models: set[str] = set()
    gen_dir = cache_dir() / _GENERATED_DIR
    if gen_dir.is_dir():
        sources = {p.stem for p in gen_dir.glob(_GENERATED_GLOB)}
        if sources:
            gen_files = _listing(numba_cache_dir(gen_dir / "x.py")[0])
            for name, st in gen_files.items():
                stem = name.split(".", 1)[0]
                if stem in sources:
                    models.add(stem)
                    size += st.st_size
    if not present and not models:
        state = "empty"
    else:
        state = "filled"
        if older:
            state += "; some entries predate the kernels' source (Numba rechecks them)"
    return {"kernels": len(present), "of": len(stems), "models": len(models), "bytes": size,
            "state": state}


def backend_report() -> dict:
    """Backend, why, and the probe cache, without importing Numba."""
    from .kernels import backend_choice
    from .kernels.probe import cache_file

    name, reason = backend_choice()
    return {"backend": name, "backend_reason": reason, "probe_cache": str(cache_file())}


def info() -> dict:
    import platform

    from . import __version__

    folder, why = numba_cache_dir()
    obj = {
        "version": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        **backend_report(),
        "numba": version_of("numba"),
        "llvmlite": version_of("llvmlite"),
        "numpy": version_of("numpy"),
        "numba_cache_dir": None if folder is None else str(folder),
        "numba_cache_where": why,
        "numba_cache": numba_cache_state(folder),
        "cpu": cpu_features(),
    }
    if os.environ.get("NUMBA_CPU_NAME"):
        obj["numba_cpu_name"] = os.environ["NUMBA_CPU_NAME"]
    return obj


def info_text(obj: dict) -> str:
    cpu = obj["cpu"]
    cache = obj["numba_cache"]

    def yn(v):
        return "n/a" if v is None else ("yes" if v else "no")

    feats = (
        f"NEON {yn(cpu['neon'])}, dotprod {yn(cpu['dotprod'])}"
        + (f", i8mm {yn(cpu['i8mm'])}" if cpu.get("i8mm") is not None else "")
        if cpu["neon"] is not None
        else ("SIMD " + (" ".join(cpu.get("simd", [])) or "none seen") + "; NEON/dotprod n/a")
    )
    if cache["kernels"] or cache["models"]:
        cached = (
            f"{cache['kernels']} of {cache['of']} library kernels, {cache['models']} compiled "
            f"model(s), {cache['bytes'] / 1024:.0f} KiB; {cache['state']}"
        )
    else:
        cached = "empty (fill it with `edgeconv warmup MODEL` or a bundle's `run.py --warmup`)"
    lines = [
        f"edgeconv {obj['version']} (Python {obj['python']}, {obj['machine']})",
        f"backend: {obj['backend']} ({obj['backend_reason']})",
        f"numba: {obj['numba'] or 'not installed'}"
        + (f" (llvmlite {obj['llvmlite']})" if obj["llvmlite"] else ""),
        f"numpy: {obj['numpy']}",
        f"numba cache: {obj['numba_cache_dir'] or '-'} [{obj['numba_cache_where']}]",
        f"numba cache state: {cached}",
        f"cpu: {cpu['arch']}" + (f" ({cpu['cpu']})" if cpu.get("cpu") else "") + f"; {feats}",
        f"backend probe cache: {obj['probe_cache']}",
    ]
    if obj.get("numba_cpu_name"):
        lines.append(f"NUMBA_CPU_NAME: {obj['numba_cpu_name']}")
    return "\n".join(lines)


def warmup(model) -> dict:
    """Run one sample of zeros through `model` so every kernel it uses is compiled (and,
    with Numba, written to the cache); report how long that took and the cache after."""
    import numpy as np

    from . import kernels

    t0 = time.perf_counter()
    backend = kernels.get_backend()
    t_backend = time.perf_counter() - t0
    dtype = np.int8 if model.quantized else np.float32
    x = np.zeros((1, *model.input_shape), dtype)
    t1 = time.perf_counter()
    model.run(x)
    t_first = time.perf_counter() - t1
    t2 = time.perf_counter()
    model.run(x)
    t_second = time.perf_counter() - t2
    threads = int(getattr(model, "threads", 1) or 1)
    if threads > 1:  # a batch takes the multi-threaded path, compiled separately
        model.run(np.zeros((threads, *model.input_shape), dtype))
    folder, why = numba_cache_dir()
    return {
        "model": model.path,
        "backend": backend.BACKEND_NAME,
        "backend_reason": kernels.backend_reason(),
        "backend_seconds": t_backend,
        "first_run_seconds": t_first,
        "second_run_seconds": t_second,
        "numba_cache_dir": None if folder is None or backend.BACKEND_NAME != "numba"
        else str(folder),
        "numba_cache": numba_cache_state(folder) if backend.BACKEND_NAME == "numba" else None,
        "python": sys.version.split()[0],
    }
