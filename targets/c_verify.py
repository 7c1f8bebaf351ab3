"""`edgeconv verify MODEL --target host-c | cortex-m4 --emulate`: run the exported C on
the same int8 inputs as our Numba kernels and compare the outputs byte for byte.

The C build always goes through the verification harness (``targets/c/harness``): it
fills the arena and 64 guard bytes after it with a pattern before every inference and
reports the highest byte that changed, so the check "the arena export reports is exactly
the memory the code touches" runs on every verify.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from edgeconv.errors import EdgeconvError

from . import c_build
from .c_export import export_c
from .profiles import get_profile

HOST_TARGETS = ("host-c", "generic-c")
DEFAULT_SAMPLES = 64


def _inputs(model, x) -> tuple[np.ndarray, str]:
    """int8 model inputs [N, ...] and a description of where they came from."""
    if x is None:
        rng = np.random.default_rng(0)
        shape = (DEFAULT_SAMPLES, *model.input_shape)
        return rng.integers(-128, 128, shape, dtype=np.int8), (
            f"{DEFAULT_SAMPLES} random int8 inputs (seed 0)"
        )
    xq = model.prepare_input(np.asarray(x))
    if xq.dtype != np.int8:
        raise EdgeconvError(f"C verification needs an int8 model (input is {xq.dtype})")
    return np.ascontiguousarray(xq), f"{len(xq)} given inputs"


def verify_c(
    model,
    target: str,
    x: np.ndarray | None = None,
    *,
    emulate: bool = False,
    sanitize: bool = False,
    workdir: str | Path | None = None,
    fuse: bool = True,
) -> dict:
    """Export `model` to C, build it for `target`, run it on `x` (int8 or float samples,
    quantized like `model.run` does) and compare with `model.run` byte for byte."""
    if not model.quantized:
        raise EdgeconvError(f"{model.path}: a float model; run `edgeconv quantize` first")
    host = target in HOST_TARGETS
    profile = get_profile("generic-c" if host else target)
    if profile.kind != "mcu":
        raise EdgeconvError(f"target {target}: C verification needs host-c or an MCU target")
    if not host and not emulate:
        raise EdgeconvError(
            f"--target {target} runs the build on an emulated board: add --emulate "
            "(or use --target host-c to run it natively)"
        )
    if not host and not profile.qemu_machine:
        raise EdgeconvError(f"no QEMU board is set up for {target}; emulated targets: "
                            "cortex-m0plus, cortex-m4, cortex-m7")  # fmt: skip
    if host:
        c_build.host_cc()
    else:
        c_build.arm_tools()
        c_build.qemu()

    xq, source = _inputs(model, x)
    if len(xq) == 0:
        raise EdgeconvError("no inputs to verify")
    t0 = time.perf_counter()
    expected = np.ascontiguousarray(model.run(xq)).astype(np.int8)
    t_ours = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="edgeconv-verify-") as tmp:
        root = Path(workdir) if workdir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        src, build = root / "src", root / "build"
        rep = export_c(
            model.graph, src, profile, model.rounding, fuse=fuse, measure=not host,
            compare_tflm=False, source=model.path,
        )  # fmt: skip
        build.mkdir(exist_ok=True)
        (build / "inputs.bin").write_bytes(xq.tobytes())
        out_path = build / "outputs.bin"
        t0 = time.perf_counter()
        if host:
            exe = c_build.build_host(src, build, sanitize=sanitize)
            t_build = time.perf_counter() - t0
            t0 = time.perf_counter()
            res = c_build.run_host(exe, build / "inputs.bin", out_path)
        else:
            elf = c_build.build_arm(src, build, profile)
            t_build = time.perf_counter() - t0
            t0 = time.perf_counter()
            # QEMU runs some 10^8 guest instructions a second; be generous
            macs = sum(r["macs"] for r in rep["layers"])
            budget = 60 + len(xq) * (macs + 10_000) * 30 / 5e7
            res = c_build.run_qemu(elf, profile.qemu_machine, build, timeout=budget)
        t_run = time.perf_counter() - t0
        got = np.frombuffer(out_path.read_bytes(), dtype=np.int8)

    per = int(np.prod(expected.shape[1:]))
    n = len(xq)
    if res.get("n") != n or got.size != n * per:
        raise EdgeconvError(
            f"the C harness processed {res.get('n')} of {n} inputs ({got.size} output bytes)"
        )
    got = got.reshape(n, per)
    exp = expected.reshape(n, per)
    diff = got != exp
    mismatches = int(diff.sum())
    report = {
        "target": target,
        "emulated": not host,
        "board": None if host else profile.qemu_machine,
        "inputs": source,
        "samples": n,
        "elements": int(exp.size),
        "mismatches": mismatches,
        "mismatched_samples": int(diff.any(axis=1).sum()),
        "max_abs_diff": int(np.abs(got.astype(np.int16) - exp).max()) if exp.size else 0,
        "rounding": model.rounding,
        "arena_bytes": rep["arena_bytes"],
        "arena_touched_bytes": res["touched"],
        "arena_guard_intact": bool(res["guard_ok"]),
        "ram_bytes": rep["ram_bytes"],
        "sanitizers": bool(sanitize and host),
        "build_seconds": round(t_build, 3),
        "run_seconds": round(t_run, 3),
        "ours_seconds": round(t_ours, 3),
    }
    if mismatches:
        first = int(np.argmax(diff.any(axis=1)))
        report["first_mismatch"] = {
            "sample": first,
            "expected": exp[first].tolist(),
            "got": got[first].tolist(),
        }
    if not host:
        m = rep.get("flash_measured") or {}
        mean_ticks = res["ticks_sum"] / max(n, 1)
        report.update(
            text_bytes=m.get("text_bytes"),
            data_bytes=m.get("data_bytes"),
            bss_bytes=m.get("bss_bytes"),
            instructions_per_inference=int(round(c_build.ticks_to_instructions(mean_ticks))),
            instructions_min=int(round(c_build.ticks_to_instructions(res["ticks_min"]))),
            instructions_max=int(round(c_build.ticks_to_instructions(res["ticks_max"]))),
            stack_bytes=res["stack_bytes"],
            compiler=m.get("compiler"),
        )
    report["text"] = _text(report)
    return report


def _text(r: dict) -> str:
    where = f"{r['target']} on QEMU {r['board']}" if r["emulated"] else "host C build"
    if r["sanitizers"]:
        where += " (ASan+UBSan)"
    verdict = "byte-identical" if r["mismatches"] == 0 else f"{r['mismatches']:,} bytes DIFFER"
    lines = [
        f"{where} vs edgeconv kernels on {r['inputs']}: {r['elements']:,} output bytes, "
        f"{verdict} ({r['mismatched_samples']} samples differ)",
        f"arena {r['arena_bytes']:,} B, bytes touched {r['arena_touched_bytes']:,}, guard bytes "
        f"{'intact' if r['arena_guard_intact'] else 'OVERWRITTEN'}",
    ]
    if r["emulated"]:
        lines.append(
            f"{r['compiler']}: text {r['text_bytes']:,} B, data {r['data_bytes']:,} B, bss "
            f"{r['bss_bytes']:,} B; {r['instructions_per_inference']:,} instructions per "
            f"inference (min {r['instructions_min']:,}, max {r['instructions_max']:,}), "
            f"stack {r['stack_bytes']:,} B"
        )
    return "\n".join(lines)
