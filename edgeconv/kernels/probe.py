"""Is Numba usable in this environment? Decided without risking the caller's process.

An installed Numba can still be unusable: Debian bookworm's armhf ``python3-numba`` 0.56.4
aborts the whole process on the first ``@njit`` call (LLVM cannot resolve
``__sync_fetch_and_add_4``, numba issue 7452), and an abort cannot be caught with ``try``.
So the first time an environment is seen, a child interpreter imports Numba and compiles
and runs a small int8 kernel; its verdict is kept in a small JSON file, keyed by everything
that could change it (interpreter, Numba and llvmlite install, machine, NUMBA_* codegen
settings). Later processes read the verdict instead of probing again.

Nothing here imports Numba in the calling process.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from importlib.util import find_spec
from pathlib import Path

PROBE_VERSION = 1
PROBE_TIMEOUT_S = float(os.environ.get("EDGECONV_PROBE_TIMEOUT", "300"))
_CACHE_NAME = "backend-probe.json"
# Settings that change what Numba generates (and so whether it works).
_CODEGEN_ENV = ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NUMBA_OPT", "NUMBA_DISABLE_JIT")

# The child compiles a kernel shaped like ours (int8 x int8 -> int32 with wrap-around,
# an allocation through Numba's runtime, a 64-bit multiply) and prints its result, which
# the parent checks: "it imported" is not enough, it must compute.
_PROBE_CODE = """
import numpy as np
from numba import njit

@njit(cache=False)
def _probe(x, w):
    out = np.empty(x.shape[0], np.int32)
    for i in range(x.shape[0]):
        acc = np.int32(0)
        for j in range(x.shape[1]):
            acc += np.int32(x[i, j]) * np.int32(w[j])
        out[i] = np.int32((np.int64(acc) * np.int64(1518500250)) >> np.int64(31))
    return out

x = (np.arange(-128, 128, dtype=np.int16).reshape(16, 16) * 7).astype(np.int8)
w = np.arange(16, dtype=np.int8) * np.int8(-8)
print("edgeconv-probe", ",".join(str(int(v)) for v in _probe(x, w)))
"""


def _expected() -> str:
    """The probe's answer computed by NumPy in this process (int64, no wrap needed here)."""
    import numpy as np

    x = (np.arange(-128, 128, dtype=np.int16).reshape(16, 16) * 7).astype(np.int8)
    w = np.arange(16, dtype=np.int8) * np.int8(-8)
    acc = (x.astype(np.int64) * w.astype(np.int64)).sum(axis=1)
    acc = ((acc + 2**31) % 2**32) - 2**31
    out = (acc * 1518500250) >> 31
    return "edgeconv-probe " + ",".join(str(int(v)) for v in out)


def cache_dir() -> Path:
    """Where edgeconv keeps small per-machine state: $EDGECONV_CACHE_DIR, else
    $XDG_CACHE_HOME/edgeconv, else ~/.cache/edgeconv."""
    env = os.environ.get("EDGECONV_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "edgeconv" if xdg else Path.home() / ".cache" / "edgeconv"


def cache_file() -> Path:
    return cache_dir() / _CACHE_NAME


def _stamp(module: str) -> list:
    spec = find_spec(module)
    if spec is None or not spec.origin:
        return [module, None]
    try:
        st = os.stat(spec.origin)
    except OSError:
        return [module, spec.origin]
    return [module, spec.origin, st.st_mtime_ns, st.st_size]


def environment_key() -> str:
    """A short hash of what decides whether Numba works here. Cheap: no imports."""
    parts = [
        PROBE_VERSION,
        sys.executable,
        sys.version,
        os.uname().machine,
        _stamp("numba"),
        _stamp("llvmlite"),
        _stamp("numpy"),
        [(k, os.environ.get(k)) for k in _CODEGEN_ENV],
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def _read_cache() -> dict:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, verdict: dict) -> bool:
    """Add one verdict to the cache file (atomic rename; False if it cannot be written)."""
    import tempfile

    path = cache_file()
    data = _read_cache()
    data[key] = verdict
    if len(data) > 32:  # old environments: keep the newest
        newest = sorted(data.items(), key=lambda kv: kv[1].get("when", 0))[-32:]
        data = dict(newest)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        return False
    return True


def _describe_exit(code: int) -> str:
    import signal

    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _telling_line(stderr: str) -> str:
    """The stderr line that says why: an error line if any (not an emulator's own
    "qemu: uncaught target signal"), else the last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    own = [ln for ln in lines if not ln.startswith("qemu:")]
    errors = [ln for ln in own if "error" in ln.lower()]
    return (errors or own or lines or [""])[-1]


def run_probe(timeout: float | None = None) -> dict:
    """Run the child interpreter now and return its verdict (not cached)."""
    import subprocess

    t0 = time.perf_counter()
    env = dict(os.environ)
    env.pop("EDGECONV_BACKEND", None)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE_CODE],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S if timeout is None else timeout,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return {
            "usable": False,
            "reason": f"the Numba probe took longer than {timeout or PROBE_TIMEOUT_S:.0f} s",
            "seconds": time.perf_counter() - t0,
            "cacheable": False,
        }
    except OSError as e:
        return {"usable": False, "reason": f"could not start the Numba probe: {e}",
                "seconds": time.perf_counter() - t0, "cacheable": False}
    seconds = time.perf_counter() - t0
    out = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and out and out[-1] == _expected():
        return {"usable": True, "reason": "probe compiled and ran an int8 kernel",
                "seconds": seconds}
    if proc.returncode == 0:
        why = f"wrong result from the probe kernel: {out[-1] if out else '(nothing)'}"
    else:
        line = _telling_line(proc.stderr)
        why = _describe_exit(proc.returncode) + (f": {line[:200]}" if line else "")
    return {"usable": False, "reason": f"Numba probe failed ({why})", "seconds": seconds}


def numba_verdict(*, refresh: bool = False) -> dict:
    """{'usable': bool, 'reason': str, 'cached': bool, ...} for this environment.

    Numba missing is answered without a probe. Otherwise the cached verdict is used, or the
    probe runs once and its verdict is stored (a timeout is not stored)."""
    if find_spec("numba") is None:
        return {"usable": False, "reason": "numba is not installed", "cached": False}
    key = environment_key()
    if not refresh:
        hit = _read_cache().get(key)
        if isinstance(hit, dict) and isinstance(hit.get("usable"), bool):
            return {**hit, "cached": True}
    verdict = run_probe()
    cacheable = verdict.pop("cacheable", True)
    verdict["when"] = time.time()
    stored = cacheable and _write_cache(key, verdict)
    return {**verdict, "cached": False, "stored": stored}
