"""Our kernels against a TFLite runtime on the same model and inputs, byte for byte.

``verify_against(model, "tflite-micro" | "tflite-runtime", x)`` runs the model with
edgeconv's kernels (in the model's rounding mode) and with the oracle, and reports for
every output tensor the number of elements, of mismatches and the largest difference
(in quantization steps for int8/uint8 outputs); with ``layers=True`` it also finds the
first layer whose output differs.

The oracle runs the real .tflite bytes: the file itself for a model loaded from
.tflite, else the graph exported by ``formats.tflite_export``. It runs in a child
process, so a runtime that aborts on a model (TFLM turns a failed check into abort())
gives an error message, not a dead CLI. Oracles:

- ``tflite-micro``: the ``tflite-micro`` package (TFLM's reference kernels on x86-64).
- ``tflite-runtime``: ``tflite_runtime.interpreter`` if importable (it needs numpy<2),
  else ``ai_edge_litert.interpreter`` (its successor); the report says which. The op
  resolver is the interpreter's default (XNNPACK delegate) unless ``resolver`` is
  "builtin" (optimized kernels, no delegate) or "reference" (BUILTIN_REF).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .data import fit_samples, to_model_dtype
from .errors import EdgeconvError
from .runtime import Model

ORACLES = ("tflite-runtime", "tflite-micro")
RESOLVERS = ("default", "builtin", "reference")
# which --rounding reproduces each oracle package and kernel set, measured on x86-64
# (README, section TFLite): (package, resolver) -> rounding
MATCHING_ROUNDING = {
    ("tflite-micro", "default"): "double",
    ("ai-edge-litert", "default"): "xnnpack",
    ("ai-edge-litert", "builtin"): "tflite-opt",
    ("ai-edge-litert", "reference"): "tflite-ref",
    # tflite-runtime 2.14: its default XNNPACK delegate leaves int8 ops to the optimized
    # kernels, and its reference FULLY_CONNECTED still uses the integer multiplier
    ("tflite-runtime", "default"): "tflite-opt",
    ("tflite-runtime", "builtin"): "tflite-opt",
    ("tflite-runtime", "reference"): "double",
}
RANDOM_SAMPLES = 64

# The child process: reads model.tflite + inputs.npz + job.json from a folder, writes
# outputs.npz + result.json. Plain Python + NumPy + the oracle package only.
_WORKER = r"""
import json, sys
import numpy as np
d = sys.argv[1]
job = json.load(open(d + "/job.json"))
model = open(d + "/model.tflite", "rb").read()
x = np.load(d + "/inputs.npz")["x"]
want = job["tensors"]
outs, inter, used = [], {str(i): [] for i in want}, ""
if job["oracle"] == "tflite-micro":
    from tflite_micro.python.tflite_micro import runtime
    import importlib.metadata as md
    try:
        used = "tflite-micro " + md.version("tflite-micro")
    except Exception:
        used = "tflite-micro"
    cfg = runtime.InterpreterConfig
    cfg = cfg.kPreserveAllTensors if want else cfg.kAllocationRecording
    it = runtime.Interpreter.from_bytes(model, arena_size=job["arena"], intrepreter_config=cfg)
    n_out = job["n_outputs"]
    per = [[] for _ in range(n_out)]
    for i in range(len(x)):
        it.set_input(x[i : i + 1], 0)
        it.invoke()
        for k in range(n_out):
            per[k].append(np.array(it.get_output(k), copy=True))
        for t in want:
            inter[str(t)].append(np.array(it.GetTensor(t, 0)["tensor_data"], copy=True))
    outs = [np.concatenate(p) if p else np.zeros(0) for p in per]
else:
    try:
        from tflite_runtime import interpreter as tfl
        import importlib.metadata as md
        used = "tflite-runtime " + md.version("tflite-runtime")
    except Exception as e:
        from ai_edge_litert import interpreter as tfl
        import importlib.metadata as md
        why = f"tflite_runtime not importable: {type(e).__name__}"
        used = f"ai-edge-litert {md.version('ai-edge-litert')} ({why})"
    resolvers = {
        "default": tfl.OpResolverType.AUTO,
        "builtin": tfl.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        "reference": tfl.OpResolverType.BUILTIN_REF,
    }
    def make():
        return tfl.Interpreter(
            model_content=model,
            experimental_op_resolver_type=resolvers[job["resolver"]],
            experimental_preserve_all_tensors=bool(want),
        )
    def run(it, xb):
        it.set_tensor(it.get_input_details()[0]["index"], xb)
        it.invoke()
        got = [np.array(it.get_tensor(o["index"]), copy=True) for o in it.get_output_details()]
        return got, {t: np.array(it.get_tensor(t), copy=True) for t in want}
    outs = None
    try:  # the whole batch at once, if the model's shapes allow it
        it = make()
        inp = it.get_input_details()[0]
        it.resize_tensor_input(inp["index"], [len(x), *inp["shape"][1:]])
        it.allocate_tensors()
        outs, tens = run(it, x)
        if any(o.shape[:1] != (len(x),) for o in outs) or any(
            v.shape[:1] != (len(x),) for v in tens.values()
        ):
            outs = None
        else:
            for t, v in tens.items():
                inter[str(t)].append(v)
    except Exception:
        outs = None
    if outs is None:  # one sample at a time
        inter = {str(i): [] for i in want}
        it = make()
        it.allocate_tensors()
        per = None
        for i in range(len(x)):
            got, tens = run(it, x[i : i + 1])
            per = [[] for _ in got] if per is None else per
            for k, o in enumerate(got):
                per[k].append(o)
            for t, v in tens.items():
                inter[str(t)].append(v)
        outs = [np.concatenate(p) for p in per]
keep = {"t" + k: np.concatenate(v) for k, v in inter.items() if v}
np.savez(d + "/outputs.npz", *outs, **keep)
json.dump({"used": used, "n": len(outs)}, open(d + "/result.json", "w"))
"""


def _model_bytes(model: Model) -> tuple[bytes, dict[str, int], str]:
    """The .tflite the oracle runs, IR tensor name -> its index there, and its I/O type."""
    meta = model.graph.meta.get("tflite")
    if model.path.lower().endswith(".tflite") and Path(model.path).is_file() and meta:
        return Path(model.path).read_bytes(), dict(meta.get("tensor_index", {})), meta["io"]
    from .formats.tflite_export import export_bytes

    data, index = export_bytes(model.graph)
    return data, index, "int8" if model.quantized else "float32"


def _random_inputs(model: Model, io: str, n: int = RANDOM_SAMPLES) -> np.ndarray:
    rng = np.random.default_rng(0)
    shape = (n, *model.input_shape)
    if not model.quantized:
        return rng.standard_normal(shape).astype(np.float32)
    if io == "float":  # real values across the input's range, most of them between steps
        scale, zp = model.input.qparams()
        steps = rng.integers(-128, 128, shape) - zp + rng.uniform(-0.6, 0.6, shape)
        return (steps * scale).astype(np.float32)
    if model.input.dtype == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.integers(-128, 128, shape, dtype=np.int8)


def _arena_size(model: Model, data: bytes) -> int:
    act = sum(
        int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize
        for t in model.graph.tensors.values()
        if not t.is_const
    )
    return (1 << 20) + 4 * act + 2 * len(data)


def run_oracle(
    data: bytes,
    x: np.ndarray,
    oracle: str,
    *,
    resolver: str = "default",
    tensors: list[int] | None = None,
    n_outputs: int = 1,
    arena: int = 4 << 20,
    timeout: float = 600.0,
) -> tuple[list[np.ndarray], dict[int, np.ndarray], str]:
    """Run .tflite bytes on a batch in the oracle (child process): (outputs, requested
    intermediate tensors by index, "package version" used)."""
    if oracle not in ORACLES:
        raise EdgeconvError(f"oracle {oracle!r}: use one of {', '.join(ORACLES)}")
    if resolver not in RESOLVERS:
        raise EdgeconvError(f"resolver {resolver!r}: use one of {', '.join(RESOLVERS)}")
    tensors = list(tensors or [])
    job = dict(
        oracle=oracle, resolver=resolver, tensors=tensors, n_outputs=n_outputs, arena=int(arena)
    )
    with tempfile.TemporaryDirectory(prefix="edgeconv-verify-") as tmp:
        Path(tmp, "model.tflite").write_bytes(data)
        np.savez(Path(tmp, "inputs.npz"), x=np.ascontiguousarray(x))
        Path(tmp, "job.json").write_text(json.dumps(job))
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _WORKER, tmp],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise EdgeconvError(f"{oracle} did not finish within {timeout:.0f} s") from None
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            if any("ModuleNotFoundError" in ln for ln in lines):
                pkg = "tflite-micro" if oracle == "tflite-micro" else "ai-edge-litert"
                raise EdgeconvError(
                    f"the {oracle} oracle is not installed: pip install {pkg} "
                    "(or pip install 'edgeconv[test]')"
                )
            tail = " | ".join(lines[-3:]) or "no message"
            if proc.returncode < 0:
                tail += f" (killed by signal {-proc.returncode})"
            raise EdgeconvError(f"{oracle} failed on this model: {tail}")
        result = json.loads(Path(tmp, "result.json").read_text())
        with np.load(Path(tmp, "outputs.npz")) as z:
            outs = [z[f"arr_{i}"] for i in range(result["n"])]
            inter = {t: z[f"t{t}"] for t in tensors if f"t{t}" in z.files}
    return outs, inter, result["used"]


def _as_quantized(y: np.ndarray, like: np.ndarray, scale: float, zp: int) -> np.ndarray:
    """A float output of DEQUANTIZE back to the integers it came from (exact inverse)."""
    q = np.rint(y.astype(np.float64) / np.float64(np.float32(scale))) + zp
    info = np.iinfo(like.dtype)
    return np.clip(q, info.min, info.max).astype(like.dtype)


def _compare(ours: np.ndarray, ref: np.ndarray, name: str, quantized: bool) -> dict:
    ref = ref.reshape(ours.shape) if ref.size == ours.size else ref
    if ref.shape != ours.shape:
        raise EdgeconvError(
            f"output {name!r}: edgeconv gives shape {list(ours.shape)}, the oracle "
            f"{list(ref.shape)}"
        )
    if quantized:
        diff = np.abs(ours.astype(np.int64) - ref.astype(np.int64))
        bad = diff != 0
    else:  # float model: the summation order differs between runtimes
        diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
        bad = diff > 1e-5 * np.maximum(1.0, np.abs(ref.astype(np.float64)))
    return {
        "name": name,
        "elements": int(ours.size),
        "mismatches": int(bad.sum()),
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
    }


def verify_against(
    model: Model,
    oracle: str,
    x: np.ndarray | None = None,
    *,
    layers: bool = False,
    resolver: str = "default",
) -> dict:
    """Run `model` with edgeconv and with `oracle` on `x` (default: random inputs) and
    compare every output byte for byte; see the module docstring."""
    if oracle not in ORACLES:
        raise EdgeconvError(f"--against {oracle!r}: use one of {', '.join(ORACLES)}")
    data, index, io = _model_bytes(model)
    source = "data" if x is not None else f"{RANDOM_SAMPLES} random inputs (seed 0)"
    raw = _random_inputs(model, io) if x is None else fit_samples(np.asarray(x), model.input_shape)
    if len(raw) == 0:
        raise EdgeconvError("no inputs to verify on")
    ours_in = model.prepare_input(raw)
    oracle_in = ours_in if io != "float" else to_model_dtype(raw, "float32")
    g = model.graph
    want: list[tuple[str, int]] = []
    if layers and model.quantized:
        for op in g.ops:
            name = op.outputs[0]
            if name in index and name not in g.outputs:
                want.append((name, index[name]))
    outs, inter, used = run_oracle(
        data,
        oracle_in,
        oracle,
        resolver=resolver if oracle == "tflite-runtime" else "default",
        tensors=[i for _, i in want],
        n_outputs=len(g.outputs),
        arena=_arena_size(model, data),
    )
    if len(outs) != len(g.outputs):
        raise EdgeconvError(f"the oracle gives {len(outs)} outputs, the model has {len(g.outputs)}")
    mine = model.trace(ours_in) if want else model.run_all(ours_in)
    rows = []
    for name, ref in zip(g.outputs, outs, strict=True):
        ours = mine[name]
        t = g.tensor(name)
        if model.quantized and ref.dtype.kind == "f":  # float-I/O file: DEQUANTIZE output
            ref = _as_quantized(ref, ours, *t.qparams())
        rows.append(_compare(ours, ref, name, model.quantized))
    report = {
        "model": model.path or "<graph>",
        "oracle": oracle,
        "oracle_package": used,
        "resolver": resolver if oracle == "tflite-runtime" else None,
        "rounding": model.rounding,
        "matching_rounding": MATCHING_ROUNDING.get(
            (used.split()[0], resolver if oracle == "tflite-runtime" else "default")
        )
        if model.quantized
        else None,
        "exact": model.quantized,
        "inputs": source,
        "samples": int(len(raw)),
        "outputs": rows,
        "elements": sum(r["elements"] for r in rows),
        "mismatches": sum(r["mismatches"] for r in rows),
        "max_abs_diff": max((r["max_abs_diff"] for r in rows), default=0.0),
    }
    if layers:
        report["first_differing_layer"] = _first_difference(model, want, mine, inter)
    report["text"] = _text(report)
    return report


def _first_difference(model: Model, want, mine, inter) -> dict | None:
    producers = model.graph.producers()
    for name, idx in want:
        if idx not in inter or name not in mine:
            continue
        ours, ref = mine[name], inter[idx]
        if ref.size != ours.size:
            continue
        row = _compare(ours, ref.reshape(ours.shape), name, True)
        if row["mismatches"]:
            op = producers[name]
            return {"op": op.name, "kind": op.kind, "tensor": name, **row}
    return None


def _text(r: dict) -> str:
    head = (
        f"{r['model']}: edgeconv (rounding {r['rounding']}) vs {r['oracle']} "
        f"[{r['oracle_package']}"
        + (f", resolver {r['resolver']}" if r["resolver"] else "")
        + f"] on {r['samples']} samples ({r['inputs']})"
    )
    lines = [head]
    for row in r["outputs"]:
        lines.append(
            f"  {row['name']}: {row['mismatches']:,} of {row['elements']:,} elements differ, "
            f"max |diff| {row['max_abs_diff']:g}"
        )
    if "first_differing_layer" in r:
        f = r["first_differing_layer"]
        lines.append(
            "  first layer that differs: "
            + (
                f"{f['op']} ({f['kind']}) -> {f['tensor']}: {f['mismatches']:,} of "
                f"{f['elements']:,}"
                if f
                else "none inside the graph"
            )
        )
    if r["mismatches"] == 0:
        verdict = "MATCH: byte-identical" if r["exact"] else "MATCH (float model: within 1e-5)"
    else:
        verdict = "MISMATCH"
    if r["mismatches"] and r["matching_rounding"] and r["matching_rounding"] != r["rounding"]:
        verdict += f" (this oracle's kernels are matched by --rounding {r['matching_rounding']})"
    lines.append(verdict)
    return "\n".join(lines)
