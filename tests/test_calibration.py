"""Calibration methods: streaming histograms, the range each method picks, bias
correction, auto, the exactness contract, flat memory, and MNIST accuracy."""

from __future__ import annotations

import copy
import tracemalloc

import numpy as np
import pytest

import edgeconv
from edgeconv import kernels
from edgeconv.errors import EdgeconvError
from edgeconv.float_runtime import conv as float_conv
from edgeconv.float_runtime import run_graph
from edgeconv.formats.native import to_bytes
from edgeconv.quantize.calibration import (
    METHODS,
    choose_range,
    quantization_mse,
    range_entropy,
    range_mse,
    range_percentile,
)
from edgeconv.quantize.observers import HistogramObserver
from edgeconv.quantize.ptq import (
    choose_activation_qparams,
    collect_statistics,
    quantize_graph,
    range_tensors,
)
from tests.conftest import CASES, EXAMPLES, MNIST, read_idx, shared_file


@pytest.fixture(scope="module")
def lenet():
    return edgeconv.load(EXAMPLES / "lenet5.onnx")


@pytest.fixture(scope="module")
def calib200() -> np.ndarray:
    return np.load(EXAMPLES / "mnist_calib_200.npz")["x"].reshape(-1, 1, 28, 28).astype(np.float32)


# ------------------------------------------------------------------ histograms
def test_streaming_histogram_equals_one_shot_histogram_with_the_final_edges():
    rng = np.random.default_rng(0)
    # ranges that grow on both sides, batch after batch, to force several regrids
    batches = [rng.normal(0, s, 5000) + o for s, o in ((0.1, 0), (1, 2), (5, -20), (0.5, 60))]
    h = HistogramObserver(bins=512)
    for b in batches:
        h.update("t", b.astype(np.float32))
    data = np.concatenate(batches).astype(np.float32).astype(np.float64)
    direct = np.bincount(
        np.clip(np.floor((data - h.start) / h.width).astype(np.int64), 0, h.bins - 1),
        minlength=h.bins,
    )
    assert h.counts.sum() == data.size == h.n
    assert np.abs(h.counts - direct).sum() <= 4  # only float rounding at bin edges
    assert h.lo == data.min() and h.hi == data.max()
    assert h.edges[0] <= h.lo and h.edges[-1] > h.hi
    assert h.counts.shape == (512,)  # memory does not grow with the data


def test_histogram_counts_exact_zeros_and_survives_constant_tensors():
    h = HistogramObserver()
    h.update("t", np.zeros(100, np.float32))
    h.update("t", np.array([0.0, 3.0, -1.0], np.float32))
    assert h.zeros == 101 and h.n == 103 and (h.lo, h.hi) == (-1.0, 3.0)
    assert h.counts.sum() == 103
    with pytest.raises(EdgeconvError, match="NaN"):
        h.update("t", np.array([np.nan], np.float32))


def _direct_mse(x: np.ndarray, lo: float, hi: float) -> float:
    """Mean squared int8 error of x at the range [lo, hi], with edgeconv's own kernels."""
    s, zp = choose_activation_qparams(lo, hi)
    q = kernels.quantize(x.astype(np.float32), s, zp)
    return float(np.mean((kernels.dequantize(q, s, zp).astype(np.float64) - x) ** 2))


def test_histogram_mse_matches_the_error_of_quantizing_the_values():
    rng = np.random.default_rng(1)
    x = rng.laplace(0, 1, 200_000).astype(np.float32)
    h = HistogramObserver()
    h.update("t", x)
    for lo, hi in ((x.min(), x.max()), (-4.0, 4.0), (-2.0, 6.0)):
        est = quantization_mse(h, np.array([lo]), np.array([hi]))[0]
        assert est == pytest.approx(_direct_mse(x.astype(np.float64), lo, hi), rel=0.05)


def test_mse_and_percentile_clip_outliers_and_beat_minmax_on_heavy_tails():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.laplace(0, 1, 100_000), [80.0, -60.0]]).astype(np.float32)
    h = HistogramObserver()
    h.update("t", x)
    x64 = x.astype(np.float64)
    mm = _direct_mse(x64, h.lo, h.hi)
    lo, hi = range_mse(h)
    assert -60 < lo < 0 < hi < 80
    best = _direct_mse(x64, lo, hi)
    assert best < 0.9 * mm
    for m in ("percentile", "entropy"):  # the least squared error of all the methods
        assert best <= _direct_mse(x64, *choose_range(m, h)) * 1.01
    plo, phi = range_percentile(h, 99.9)
    assert plo == pytest.approx(np.percentile(x, 0.1), abs=2 * h.width)
    assert phi == pytest.approx(np.percentile(x, 99.9), abs=2 * h.width)
    assert range_percentile(h, 100.0) == (h.lo, h.hi)
    with pytest.raises(EdgeconvError, match="percentile"):
        range_percentile(h, 40.0)


def test_entropy_clips_a_far_outlier_and_keeps_a_uniform_range():
    rng = np.random.default_rng(3)
    h = HistogramObserver()
    h.update("t", np.concatenate([np.abs(rng.normal(0, 1, 100_000)), [50.0]]).astype(np.float32))
    lo, hi = range_entropy(h)
    assert lo == h.lo and 2.0 < hi < 10.0
    u = HistogramObserver()
    u.update("t", rng.uniform(0, 10, 100_000).astype(np.float32))
    assert range_entropy(u)[1] == pytest.approx(10.0, rel=0.02)
    with pytest.raises(EdgeconvError, match="unknown calibration method"):
        choose_range("kl", u)


# ------------------------------------------------------------------ the default stays minmax
def test_default_is_tflite_minmax_exactly(lenet, calib200):
    g = lenet.graph
    seen: dict[str, list] = {}
    run_graph(g, {g.inputs[0]: calib200}, lambda n, v: seen.setdefault(n, []).append(v))
    result = quantize_graph(g, calib200)
    assert result.graph.meta["quantization"]["calibration"] == "minmax"
    for name in range_tensors(g):
        vals = np.concatenate([v.reshape(-1) for v in seen[name]])
        assert result.ranges[name] == (float(vals.min()), float(vals.max()))
        assert result.graph.tensors[name].qparams() == choose_activation_qparams(
            float(vals.min()), float(vals.max())
        )
    explicit = quantize_graph(g, calib200, method="minmax")
    assert to_bytes(explicit.graph) == to_bytes(result.graph)
    # the histogram path with method minmax picks the very same ranges
    hist_path = quantize_graph(g, calib200, method="minmax", bias_correction=True)
    for name in range_tensors(g):
        assert hist_path.graph.tensors[name].qparams() == result.graph.tensors[name].qparams()


# ------------------------------------------------------------------ exactness contract
def _structure(graph):
    ops = [(op.kind, op.inputs, op.outputs, repr(sorted(op.attrs.items()))) for op in graph.ops]
    weights = {
        n: (t.data.tobytes(), t.scale.tobytes())
        for n, t in graph.tensors.items()
        if t.dtype == "int8" and t.is_const
    }
    return ops, weights


@pytest.mark.parametrize("method", [m for m in METHODS if m != "minmax"] + ["auto"])
def test_methods_change_only_scales_zero_points_and_biases(method, lenet, calib200):
    base = quantize_graph(lenet.graph, calib200).graph
    other = quantize_graph(lenet.graph, calib200, method=method).graph
    assert _structure(other) == _structure(base)  # same ops, attrs, int8 weights, w scales
    assert {n: t.dtype for n, t in other.tensors.items()} == {
        n: t.dtype for n, t in base.tensors.items()
    }
    # and it runs on the same int8 kernels: the compiled backend and the NumPy reference
    # (the spec transcription) give the same bytes
    x = calib200[:16]
    fast = edgeconv.Model(other).run(x)
    saved = kernels._backend
    try:
        kernels._backend = kernels.reference
        ref = edgeconv.Model(copy.deepcopy(other)).run(x)
    finally:
        kernels._backend = saved
    assert fast.dtype == np.int8 and np.array_equal(fast, ref)


# ------------------------------------------------------------------ bias correction
def test_bias_correction_removes_the_mean_error_of_the_int8_weights(lenet, calib200):
    g = lenet.graph
    plain = quantize_graph(g, calib200, method="mse")
    corrected = quantize_graph(g, calib200, method="mse", bias_correction=True)
    convs = [op for op in g.ops if op.kind == "conv"]
    op = convs[1]  # the second conv: its input is the first pool's float output
    inputs: list[np.ndarray] = []
    run_graph(
        g, {g.inputs[0]: calib200}, lambda n, v: inputs.append(v) if n == op.inputs[0] else None
    )
    x = np.concatenate(inputs)
    w = g.tensors[op.inputs[1]].data.astype(np.float64)
    qw = corrected.graph.tensors[op.inputs[1]]
    err = qw.data.astype(np.float64) * qw.scale.astype(np.float64).reshape(-1, 1, 1, 1) - w
    # independent: the float conv of the calibration inputs with the weight error, averaged
    no_act = copy.deepcopy(op)
    no_act.attrs["activation"] = "none"
    shift = float_conv(no_act, x.astype(np.float64), err, None).mean(axis=(0, 1, 2))
    s_in = corrected.graph.tensors[op.inputs[0]].qparams()[0]
    bias_scale = s_in * qw.scale.astype(np.float64)
    delta = corrected.graph.tensors[op.inputs[2]].data.astype(np.float64) - plain.graph.tensors[
        op.inputs[2]
    ].data.astype(np.float64)
    assert np.abs(shift).max() > 0.5 * bias_scale.max()  # the correction is not negligible
    assert np.allclose(delta * bias_scale, -shift, atol=bias_scale.max())
    assert corrected.graph.meta["quantization"]["bias_correction"] is True


# ------------------------------------------------------------------ auto
def test_auto_tries_every_method_and_keeps_the_best_on_held_out_data(lenet, calib200):
    result = quantize_graph(lenet.graph, calib200, method="auto")
    meta = result.graph.meta["quantization"]
    assert meta["calibration"] == "auto" and meta["holdout_samples"] == 40
    assert set(result.methods) == set(range_tensors(lenet.graph))
    assert set(result.methods.values()) <= set(METHODS)
    model_trials = {t["method"]: t for t in result.trials if t["scope"] == "model"}
    assert set(model_trials) == set(METHODS)
    best_model = max((t["agreement"], t["sqnr_db"]) for t in model_trials.values())
    tensor_trials = [(t["agreement"], t["sqnr_db"]) for t in result.trials if t["scope"] != "model"]
    assert tensor_trials, "auto did not try methods per tensor"
    # the kept configuration is the best one tried; score it again independently
    g = lenet.graph
    held = calib200[-40:]
    ref = run_graph(g, {g.inputs[0]: held})["logits"].astype(np.float64)
    stats = collect_statistics(g, calib200[:-40])
    ranges = {t: choose_range(m, stats.hists[t]) for t, m in result.methods.items()}
    from edgeconv.quantize.ptq import build_quantized

    q, _ = build_quantized(g, ranges)
    y = edgeconv.Model(q).run(held, dequantize=True).astype(np.float64)
    sqnr = 10 * np.log10(np.sum(ref**2) / np.sum((ref - y) ** 2))
    agree = float(np.mean(ref.argmax(1) == y.argmax(1)))
    assert (agree, sqnr) >= best_model
    assert (agree, pytest.approx(sqnr, abs=1e-6)) == max([best_model, *tensor_trials])


def test_auto_needs_two_samples_and_unknown_methods_are_refused(lenet, calib200):
    with pytest.raises(EdgeconvError, match="at least 2"):
        quantize_graph(lenet.graph, calib200[:1], method="auto")
    with pytest.raises(EdgeconvError, match="unknown calibration method"):
        quantize_graph(lenet.graph, calib200, method="histogram")


# ------------------------------------------------------------------ memory
def _peak_calibration_bytes(graph, x: np.ndarray) -> int:
    tracemalloc.start()
    try:
        quantize_graph(graph, x, method="mse")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_calibration_memory_is_flat_in_the_number_of_samples(lenet):
    path = MNIST / "train10k-images-idx3-ubyte.gz"
    if path.exists():
        x = read_idx(path, 16).reshape(-1, 1, 28, 28).astype(np.float32)
    else:  # the shipped 200 images, repeated: the sample count is what matters here
        base = np.load(EXAMPLES / "mnist_calib_200.npz")["x"].reshape(-1, 1, 28, 28)
        x = np.tile(base, (50, 1, 1, 1)).astype(np.float32)
    assert len(x) == 10_000
    small = _peak_calibration_bytes(lenet.graph, x[:1000])
    large = _peak_calibration_bytes(lenet.graph, x)
    print(
        f"peak traced memory while calibrating (input array excluded): 1,000 images "
        f"{small / 2**20:.1f} MiB, 10,000 images {large / 2**20:.1f} MiB "
        f"(the input itself: {x.nbytes / 2**20:.1f} MiB)"
    )
    assert large <= small * 1.15 + 2**20
    assert large < x.nbytes / 2  # far below one copy of the data


# ------------------------------------------------------------------ accuracy
def _ort_float_accuracy(path, x, y) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    xf = x.reshape(-1, 1, 28, 28).astype(np.float32)
    if isinstance(inp.shape[0], int):
        pred = [sess.run(None, {inp.name: s[None]})[0].argmax() for s in xf]
    else:
        pred = sess.run(None, {inp.name: xf})[0].argmax(1)
    return float(np.mean(np.asarray(pred) == y) * 100)


@pytest.mark.parametrize(
    "name, tolerance",
    [
        ("examples/lenet5.onnx", 0.1),
        ("mnist-8.onnx", 0.3),
        ("lenet5_pytorch2.0_opset10_gemm_flatten.onnx", 0.3),
    ],
)
def test_int8_accuracy_close_to_float_default_and_auto(name, tolerance, mnist_test):
    path = EXAMPLES / "lenet5.onnx" if name.startswith("examples/") else shared_file(CASES / name)
    x, y = mnist_test
    calib = np.load(EXAMPLES / "mnist_calib_200.npz")["x"]  # <= 200 calibration images
    facc = _ort_float_accuracy(path, x, y)
    fmodel = edgeconv.load(path)
    out = {}
    for method in ("minmax", "auto"):
        q = edgeconv.quantize_model(fmodel, calib, method=method)
        out[method] = float(np.mean(edgeconv.Model(q.graph).predict(x) == y) * 100)
    print(f"{name}: float {facc:.2f} %, int8 minmax {out['minmax']:.2f} %, auto {out['auto']:.2f}")
    assert abs(out["minmax"] - facc) <= tolerance
    assert abs(out["auto"] - facc) <= 0.3


def test_constant_then_spread_and_tiny_then_huge_values_keep_every_count():
    h = HistogramObserver(bins=64)
    h.update("t", np.full(10, 5.0, np.float32))
    for m in METHODS:  # a constant tensor keeps its exact range under every method
        assert choose_range(m, h) == (5.0, 5.0)
    h.update("t", np.array([4.0, 6.0], np.float32))
    assert h.counts.sum() == 12 and h.counts[np.searchsorted(h.edges, 5.0) - 1] >= 10
    t = HistogramObserver(bins=64)
    t.update("t", np.array([1e-20, 2e-20], np.float32))
    t.update("t", np.array([1e6], np.float32))
    assert t.counts.sum() == 3 and t.edges[-1] > 1e6
