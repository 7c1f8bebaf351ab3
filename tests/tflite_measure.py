"""Measure which edgeconv rounding mode reproduces each TFLite runtime, op by op.

    python -m tests.tflite_measure [--models 40] [--no-lenet]

For every op kind, random single-layer int8 graphs (``tests/tflite_cases.py``) are
exported with edgeconv's .tflite writer and run in TFLite Micro and in the ai-edge-litert
interpreter with its three kernel sets (default = XNNPACK delegate, builtin optimized
kernels without delegate, BUILTIN_REF reference kernels); edgeconv runs the same graph in
every rounding mode and profile. It prints a Markdown table of mismatching output
elements (the README's TFLite table is this output). ``test_tflite_rounding.py`` asserts
the zero entries on a smaller sample.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import numpy as np

from edgeconv.formats.tflite_export import to_bytes
from edgeconv.kernels.requant import ROUNDING_CHOICES
from edgeconv.runtime import Model

from . import tflite_cases as cases

RUNTIMES = ("tflite-micro", "litert-default", "litert-builtin", "litert-ref")
RUNTIME_LABELS = {
    "tflite-micro": "TFLite Micro (tflite-micro)",
    "litert-default": "ai-edge-litert, default (XNNPACK delegate)",
    "litert-builtin": "ai-edge-litert, builtin optimized kernels (no delegate)",
    "litert-ref": "ai-edge-litert, BUILTIN_REF reference kernels",
}
# the choice edgeconv offers for each runtime
MATCHING = {
    "tflite-micro": "double",
    "litert-default": "xnnpack",
    "litert-builtin": "tflite-opt",
    "litert-ref": "tflite-ref",
}


def litert_available() -> bool:
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except Exception:
        return False
    return True


def tflm_available() -> bool:
    try:
        from tflite_micro.python.tflite_micro import runtime  # noqa: F401
    except Exception:
        return False
    return True


def run_tflm(data: bytes, x: np.ndarray) -> np.ndarray:
    from tflite_micro.python.tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(data, arena_size=(1 << 20) + 64 * x[0].nbytes)
    outs = []
    for i in range(len(x)):
        it.set_input(np.ascontiguousarray(x[i : i + 1]), 0)
        it.invoke()
        outs.append(np.array(it.get_output(0), copy=True))
    return np.concatenate(outs)


def run_litert(data: bytes, x: np.ndarray, kind: str) -> np.ndarray:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = {
        "litert-default": OpResolverType.AUTO,
        "litert-builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        "litert-ref": OpResolverType.BUILTIN_REF,
    }[kind]
    it = Interpreter(model_content=data, experimental_op_resolver_type=resolver)
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], [len(x), *inp["shape"][1:]])
    it.allocate_tensors()
    it.set_tensor(inp["index"], np.ascontiguousarray(x))
    it.invoke()
    return np.array(it.get_tensor(it.get_output_details()[0]["index"]), copy=True)


def run_runtime(kind: str, data: bytes, x: np.ndarray) -> np.ndarray:
    return run_tflm(data, x) if kind == "tflite-micro" else run_litert(data, x, kind)


def ours(graph, x: np.ndarray, rounding: str) -> np.ndarray:
    """edgeconv's kernels op by op (EDGECONV_ENGINE=ops): compiling a fused engine for
    every small random graph would cost a second each and test nothing more."""
    old = os.environ.get("EDGECONV_ENGINE")
    os.environ["EDGECONV_ENGINE"] = "ops"
    try:
        return Model(graph, "case", rounding).run(x)
    finally:
        if old is None:
            del os.environ["EDGECONV_ENGINE"]
        else:
            os.environ["EDGECONV_ENGINE"] = old


def _dequantized_back(y: np.ndarray, graph) -> np.ndarray:
    """A float (DEQUANTIZE) output back to int8, exactly."""
    scale, zp = graph.tensor(graph.outputs[0]).qparams()
    q = np.rint(y.astype(np.float64) / np.float64(np.float32(scale))) + zp
    return np.clip(q, -128, 127).astype(np.int8)


def _choice(rng, options):
    return options[int(rng.integers(0, len(options)))]


# op label -> (graph, inputs, io) from a Generator
def _conv(rng, depthwise=False, dyadic=False):
    return cases.conv_graph(
        rng,
        depthwise=depthwise,
        n=2,
        h=int(rng.integers(3, 14)),
        w=int(rng.integers(3, 14)),
        cin=int(rng.integers(1, 20)),
        cout_or_mult=int(rng.integers(1, 3)) if depthwise else int(rng.integers(1, 24)),
        kernel=(int(rng.integers(1, 6)), int(rng.integers(1, 6))),
        stride=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
        dilation=(int(rng.integers(1, 3)), 1),
        padding=_choice(rng, ("SAME", "VALID", "EXPLICIT")),
        activation=_choice(rng, cases.ACTIVATIONS),
        dyadic=dyadic,
    )


def _fc(rng, per_channel=True, dyadic=False):
    return cases.fc_graph(
        rng,
        n=16,
        k=int(rng.integers(1, 400)),
        cout=int(rng.integers(1, 40)),
        per_channel=per_channel,
        activation=_choice(rng, cases.ACTIVATIONS),
        dyadic=dyadic,
    )


CASES: dict[str, Callable] = {
    "CONV_2D": lambda rng: (*_conv(rng), "int8"),
    "CONV_2D (power-of-two scales)": lambda rng: (*_conv(rng, dyadic=True), "int8"),
    "DEPTHWISE_CONV_2D": lambda rng: (*_conv(rng, True), "int8"),
    "DEPTHWISE_CONV_2D (power-of-two scales)": lambda rng: (*_conv(rng, True, True), "int8"),
    "FULLY_CONNECTED (per-channel)": lambda rng: (*_fc(rng), "int8"),
    "FULLY_CONNECTED (per-tensor)": lambda rng: (*_fc(rng, False), "int8"),
    "FULLY_CONNECTED (power-of-two scales)": lambda rng: (*_fc(rng, True, True), "int8"),
    "MAX_POOL_2D": lambda rng: (
        *cases.pool_graph(
            rng,
            mode="max",
            h=int(rng.integers(2, 12)),
            w=int(rng.integers(2, 12)),
            c=int(rng.integers(1, 10)),
            kernel=(2, 2),
            stride=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
            padding=_choice(rng, ("SAME", "VALID")),
            activation=_choice(rng, cases.ACTIVATIONS),
        ),
        "int8",
    ),
    "AVERAGE_POOL_2D": lambda rng: (
        *cases.pool_graph(
            rng,
            mode="avg",
            h=int(rng.integers(3, 12)),
            w=int(rng.integers(3, 12)),
            c=int(rng.integers(1, 10)),
            kernel=(int(rng.integers(1, 4)), int(rng.integers(1, 4))),
            stride=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
            padding=_choice(rng, ("SAME", "VALID")),
            activation=_choice(rng, cases.ACTIVATIONS),
        ),
        "int8",
    ),
    "ADD": lambda rng: (*cases.add_graph(rng, activation=_choice(rng, cases.ACTIVATIONS)), "int8"),
    "SOFTMAX": lambda rng: (*cases.unary_graph(rng, kind="softmax"), "int8"),
    "LOGISTIC": lambda rng: (*cases.unary_graph(rng, kind="sigmoid"), "int8"),
    "TANH": lambda rng: (*cases.unary_graph(rng, kind="tanh"), "int8"),
    "QUANTIZE (float input)": lambda rng: (*cases.identity_graph(rng), "float"),
}


def measure_op(
    label: str, models: int, seed: int = 0, runtimes=RUNTIMES, choices=ROUNDING_CHOICES
) -> dict:
    """{runtime: {"elements": n, choice: mismatches, ...}} over `models` random graphs."""
    rng = np.random.default_rng(seed)
    table = {rt: {"elements": 0, **dict.fromkeys(choices, 0)} for rt in runtimes}
    for _ in range(models):
        graph, x, io = CASES[label](rng)
        data = to_bytes(graph, io)
        mine = {c: ours(graph, x, c) for c in choices}
        for rt in runtimes:
            ref = run_runtime(rt, data, x)
            if io == "float":
                ref = _dequantized_back(ref, graph)
            row = table[rt]
            row["elements"] += int(ref.size)
            for c in choices:
                row[c] += int((mine[c].reshape(ref.shape) != ref).sum())
    return table


def measure_lenet(runtimes=RUNTIMES, choices=ROUNDING_CHOICES, limit: int | None = None) -> dict:
    """The demo LeNet-5, quantized as `edgeconv demo` does, on the MNIST test images."""
    import gzip
    from importlib import resources
    from pathlib import Path

    import edgeconv

    assets = resources.files("edgeconv.examples")
    f = edgeconv.load(str(assets / "lenet5.onnx"))
    calib = np.load(str(assets / "mnist_calib_200.npz"))["x"]
    graph = edgeconv.quantize_model(f, calib, limit=200).graph
    mnist = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
    raw = gzip.open(mnist / "t10k-images-idx3-ubyte.gz").read()
    x = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 1, 28, 28)[:limit]
    xq = Model(graph).prepare_input(x)
    data = to_bytes(graph)
    mine = {c: ours(graph, xq, c) for c in choices}
    table = {}
    for rt in runtimes:
        ref = run_runtime(rt, data, xq)
        table[rt] = {"elements": int(ref.size), **{c: int((mine[c] != ref).sum()) for c in choices}}
    return table


def markdown(results: dict[str, dict], choices=ROUNDING_CHOICES) -> str:
    head = "| runtime | op | elements | " + " | ".join(f"`{c}`" for c in choices) + " |"
    lines = [head, "|" + "---|" * (3 + len(choices))]
    for rt in RUNTIMES:
        for label, table in results.items():
            if rt not in table:
                continue
            row = table[rt]
            cells = []
            for c in choices:
                v = row[c]
                cell = f"{v:,}"
                if c == MATCHING[rt]:
                    cell = f"**{cell}**"
                cells.append(cell)
            lines.append(
                f"| {RUNTIME_LABELS[rt]} | {label} | {row['elements']:,} | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(lines)


def pivot(results: dict[str, dict]) -> str:
    """One row per op, one column per runtime: the matching choice and its mismatches,
    with TFLM's `double` beside it where the runtime differs from TFLM."""
    short = {
        "tflite-micro": "TFLite Micro",
        "litert-default": "ai-edge-litert default (XNNPACK)",
        "litert-builtin": "ai-edge-litert builtin (optimized, no delegate)",
        "litert-ref": "ai-edge-litert BUILTIN_REF",
    }
    lines = [
        "| op (output elements) | " + " | ".join(short[rt] for rt in RUNTIMES) + " |",
        "|" + "---|" * (1 + len(RUNTIMES)),
    ]
    for label, table in results.items():
        cells = []
        for rt in RUNTIMES:
            row = table[rt]
            cell = f"`{MATCHING[rt]}`: **{row[MATCHING[rt]]:,}**"
            if MATCHING[rt] != "double":
                cell += f" (`double`: {row['double']:,})"
            cells.append(cell)
        elements = table[RUNTIMES[0]]["elements"]
        lines.append(f"| {label} ({elements:,}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, default=40, help="random graphs per op")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-lenet", action="store_true")
    args = p.parse_args(argv)
    if not (litert_available() and tflm_available()):
        print("needs tflite-micro and ai-edge-litert (pip install -e '.[test]')", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    results = {}
    for i, label in enumerate(CASES):
        results[label] = measure_op(label, args.models, args.seed + i)
    if not args.no_lenet:
        results["LeNet-5 (demo, 10,000 MNIST test images)"] = measure_lenet()
    print(pivot(results))
    print()
    print(markdown(results))
    print(
        f"\n{args.models} random models per op, seed {args.seed}; {time.perf_counter() - t0:.0f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
