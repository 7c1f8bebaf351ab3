"""Cold start of a bundle: a fresh process that imports edgeconv, loads the model and answers
one request (`run.py --stdin`, one MNIST-sized image), timed from spawn to answer.

    python -m edgeconv.targets.rpi.coldstart BUNDLE [--runs 5] [--json]
    python3 coldstart.py BUNDLE            # stand-alone, e.g. inside an emulated Pi

Cases, each in fresh processes:
  numba, empty cache   NUMBA_CACHE_DIR is a new empty folder: every kernel is compiled
  numba, warm cache    the same folder after one run: kernels are loaded, not compiled
  numpy                EDGECONV_BACKEND=numpy: no Numba at all
The backend probe verdict is cached before timing (it runs once per environment, not per
process); its own one-time cost is reported as "first ever probe". Times are wall-clock
medians; `--timing` from run.py splits each into import / load / backend / run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _one_image_npy(bundle: Path) -> bytes:
    import numpy as np

    man = json.loads((bundle / "bundle.json").read_text())
    shape = man["model"]["input"]["shape"][1:]
    x = (np.arange(int(np.prod(shape))) * 37 % 256).astype(np.uint8).reshape(1, *shape)
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def _spawn(python: str, bundle: Path, stdin: bytes, env: dict) -> tuple[float, dict]:
    t = time.perf_counter()
    r = subprocess.run([python, str(bundle / "run.py"), "--stdin", "--timing"], input=stdin,
                       capture_output=True, env=env, timeout=1800)
    wall = time.perf_counter() - t
    if r.returncode != 0 or not r.stdout:
        raise RuntimeError(f"run.py failed ({r.returncode}): {r.stderr.decode()[-500:]}")
    timing = json.loads(r.stderr.decode().strip().splitlines()[-1])
    return wall, timing


def measure(bundle: Path, python: str = sys.executable, runs: int = 3) -> dict:
    bundle = Path(bundle).resolve()
    stdin = _one_image_npy(bundle)
    work = Path(tempfile.mkdtemp(prefix="edgeconv-coldstart-"))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CACHE", "EDGECONV_"))}
    base["EDGECONV_CACHE_DIR"] = str(work / "edgeconv")
    out: dict = {"python": python, "bundle": str(bundle), "runs": runs}
    try:
        # first ever: no probe verdict yet (also fills the probe cache for what follows)
        env = {**base, "NUMBA_CACHE_DIR": str(work / "numba-first")}
        wall, timing = _spawn(python, bundle, stdin, env)
        out["first_ever_s"] = wall
        out["backend"] = timing["backend"]
        cases = {"numpy": []}
        if timing["backend"] == "numba":
            cases = {"numba_empty_cache": [], "numba_warm_cache": [], "numpy": []}
        splits: dict[str, list] = {k: [] for k in cases}
        for i in range(runs):
            for case in cases:
                env = dict(base)
                if case == "numba_empty_cache":
                    env["NUMBA_CACHE_DIR"] = str(work / f"numba-empty-{i}")
                elif case == "numba_warm_cache":
                    env["NUMBA_CACHE_DIR"] = str(work / "numba-first")  # filled above
                else:
                    env["EDGECONV_BACKEND"] = "numpy"
                    env["NUMBA_CACHE_DIR"] = str(work / "numba-unused")
                wall, timing = _spawn(python, bundle, stdin, env)
                cases[case].append(wall)
                splits[case].append(timing)
        for case, walls in cases.items():
            parts = {k: statistics.median(t[k] for t in splits[case])
                     for k in ("import_s", "load_s", "backend_s", "run_s")}
            out[case] = {"median_s": statistics.median(walls), "min_s": min(walls),
                         "max_s": max(walls), **{f"median_{k}": v for k, v in parts.items()}}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def text(res: dict) -> str:
    lines = [f"cold start of {res['bundle']} ({res['python']}), {res['runs']} runs, median wall:"]
    lines.append(f"  first ever (probe + compile): {res['first_ever_s']:.2f} s")
    for case in ("numba_empty_cache", "numba_warm_cache", "numpy"):
        if case in res:
            c = res[case]
            lines.append(
                f"  {case:<18} {c['median_s']:.2f} s  (import {c['median_import_s']:.2f}, "
                f"load {c['median_load_s']:.3f}, backend {c['median_backend_s']:.2f}, "
                f"first run {c['median_run_s']:.2f})"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle")
    p.add_argument("--python", default=sys.executable, help="interpreter to run run.py with")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    res = measure(Path(args.bundle), args.python, args.runs)
    print(json.dumps(res) if args.json else text(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
