"""What each optimisation of the compiled engine is worth, measured one change at a time.

    python benchmarks/ablation.py [MODEL] [--rounds 7] [--iters 300] [--json]

MODEL defaults to the shipped LeNet-5 (quantized here on the shipped calibration slice).
Every configuration below is the previous one plus one change; all of them run in this
one process, interleaved round by round (order rotating), pinned to one CPU, on the
same int8 inputs, and every one is checked byte-identical to the NumPy reference first.

  0  per-op Numba kernels (kernels/fast.py), Python between the layers (the starting
     point; the input zero point is already folded into the bias there)
  1  + microkernel with weights pre-packed at load (compiled engine, portable vector
     microkernel, one compiled call per op, shapes read at run time, buffers per call)
  2  + per-layer specialisation (shapes, strides, offsets as compile-time literals)
  3  + whole model in one compiled call (no Python between layers)
  4  + conv+act+max-pool fusion (needs 3: a fused group is one stage of one call)
  5  + preallocated activation buffers (zero-point borders filled once)
  6  + AVX-512 VNNI microkernel (vpdpbusd; x86-64 only)
  7  + pixel pairs: a layer with <= 8 output channels puts two pixels in one 16-lane vector
  8  + straight-line reductions: group offsets as constants  = edgeconv's default
  9  + 2 threads (prange over the batch; batch throughput only)

The switches are ``EDGECONV_ENGINE_OPTIONS`` / ``EDGECONV_ISA`` (kernels/compiled.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", str(min(2, os.cpu_count() or 1)))

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

_LATER = "nopair,nostatic"  # the changes of steps 7 and 8, off until then
CONFIGS = [
    # label, EDGECONV_ENGINE, EDGECONV_ENGINE_OPTIONS, EDGECONV_ISA, threads
    ("per-op Numba kernels (fast.py)", "ops", "", "", 1),
    ("+ microkernel, weights pre-packed", "", f"split,unspecialised,nofuse,fresh,{_LATER}",
     "generic", 1),
    ("+ per-layer specialisation", "", f"split,nofuse,fresh,{_LATER}", "generic", 1),
    ("+ whole model in one call", "", f"nofuse,fresh,{_LATER}", "generic", 1),
    ("+ conv+act+pool fusion", "", f"fresh,{_LATER}", "generic", 1),
    ("+ preallocated buffers", "", _LATER, "generic", 1),
    ("+ AVX-512 VNNI microkernel", "", _LATER, "vnni512", 1),
    ("+ pixel pairs (layers with <= 8 channels)", "", "nostatic", "vnni512", 1),
    ("+ straight-line reductions (constant offsets)", "", "", "vnni512", 1),
    ("+ 2 threads (prange), batch only", "", "", "vnni512", 2),
]


def _graph(model_path: str | None):
    import edgeconv

    path = model_path or str(REPO / "examples" / "lenet5.onnx")
    m = edgeconv.load(path)
    if not m.quantized:
        calib = np.load(REPO / "examples" / "mnist_calib_200.npz")["x"]
        m = edgeconv.runtime.Model(edgeconv.quantize_model(m, calib).graph)
    return m.graph, Path(path).name


def _model(graph, engine, options, isa, threads):
    from edgeconv.runtime import Model

    saved = {k: os.environ.get(k) for k in ("EDGECONV_ENGINE", "EDGECONV_ENGINE_OPTIONS",
                                            "EDGECONV_ISA")}
    os.environ.update(EDGECONV_ENGINE=engine, EDGECONV_ENGINE_OPTIONS=options, EDGECONV_ISA=isa)
    try:
        m = Model(graph)
        m.threads = threads
        m._run_steps()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return m


def _reference(graph, x):
    from edgeconv import kernels
    from edgeconv.kernels import reference
    from edgeconv.runtime import Model

    saved = kernels._backend
    kernels._backend = reference
    try:
        return Model(graph).run(x)
    finally:
        kernels._backend = saved


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from edgeconv.kernels.microkernel import _detected_isa

    graph, name = _graph(args.model)
    x = np.load(REPO / "examples" / "mnist_test_1k.npz")["x"][: max(args.batch, 64)]
    from edgeconv.runtime import Model

    xi = Model(graph).prepare_input(x.astype(np.float32))
    want = _reference(graph, xi)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    one = {cpus[-1]} if cpus else None

    configs = [c for c in CONFIGS if c[3] != "vnni512" or _detected_isa() == "vnni512"]
    models = []
    for label, engine, options, isa, threads in configs:
        m = _model(graph, engine, options, isa, threads)
        t = time.perf_counter()
        got = m.run(xi)
        first = time.perf_counter() - t
        assert np.array_equal(got, want), f"{label}: not byte-identical to the reference"
        models.append((label, m, threads, first))
    singles = [np.ascontiguousarray(xi[i : i + 1]) for i in range(64)]
    batch = np.ascontiguousarray(xi[: args.batch])
    lat = {label: [] for label, *_ in models}
    thr = {label: [] for label, *_ in models}
    for r in range(args.rounds):
        order = models[r % len(models) :] + models[: r % len(models)]
        for label, m, threads, _ in order:
            if one and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, one if threads == 1 else set(cpus[:threads]))
            if threads == 1:
                for i in range(args.iters):
                    s = singles[i % len(singles)]
                    t = time.perf_counter_ns()
                    m.run(s)
                    lat[label].append(time.perf_counter_ns() - t)
            for _ in range(args.reps):
                t = time.perf_counter()
                m.run(batch)
                thr[label].append(time.perf_counter() - t)
    rows = []
    for label, _, threads, first in models:
        p50 = float(np.percentile(lat[label], 50)) / 1e3 if lat[label] else None
        rows.append({"step": label, "threads": threads, "p50_us": p50,
                     "images_per_s": args.batch / float(np.median(thr[label])),
                     "images_per_s_best": args.batch / float(np.min(thr[label])),
                     "first_call_s": first})
    if args.json:
        print(json.dumps({"model": name, "rows": rows, "rounds": args.rounds,
                          "load": os.getloadavg()}))
        return 0
    print(f"{name}: batch-1 p50 per image and batch-{args.batch} throughput, one process, "
          f"{args.rounds} interleaved rounds, load average {os.getloadavg()[0]:.2f}")
    print(f"| # | step | batch-1 p50 µs | × vs previous | batch-{args.batch} img/s median | "
          "× vs previous | best img/s |")
    print("|---|---|---|---|---|---|---|")
    prev = None
    for i, r in enumerate(rows):
        lat_x = (f"{prev['p50_us'] / r['p50_us']:.2f}×" if prev and r["p50_us"] and
                 prev["p50_us"] else "")
        thr_x = f"{r['images_per_s'] / prev['images_per_s']:.2f}×" if prev else ""
        p50 = f"{r['p50_us']:.1f}" if r["p50_us"] else "—"
        print(f"| {i} | {r['step']} | {p50} | {lat_x} | {r['images_per_s']:,.0f} | {thr_x} | "
              f"{r['images_per_s_best']:,.0f} |")
        prev = r
    return 0


if __name__ == "__main__":
    sys.exit(main())
