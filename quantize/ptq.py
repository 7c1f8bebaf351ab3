"""The post-training quantization pipeline (TFLite int8 scheme).

Why each rule: the parameter choices follow the TFLite converter (see
shared docs int8-spec §3.1-3.2) so that what we export is what TFLite would have
produced; the traps it does not handle (all-zero channels, always-zero
activations, bias overflow, NaN) are handled here and reported, never silent.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgeconv.errors import EdgeconvError
from edgeconv.float_runtime import run_graph
from edgeconv.ir import Graph, Tensor
from edgeconv.qmath import round_half_away

from .calibration import DEFAULT_PERCENTILE
from .observers import MinMaxObserver
from .stats import DEFAULT_BINS, CalibrationStats

INT32_MAX = 2**31 - 1

# outputs whose quantization TFLite fixes, whatever the calibration saw
FIXED_OUTPUT_QPARAMS = {
    ("softmax", False): (1.0 / 256, -128),
    ("softmax", True): (16.0 / 256, 127),
    ("act", "tanh"): (1.0 / 128, 0),
    ("act", "sigmoid"): (1.0 / 256, -128),
}
# ops whose output must share the input's scale and zero point
SHARED_QPARAM_KINDS = ("pool", "reshape", "transpose", "pad")


@dataclass
class QuantizeResult:
    graph: Graph
    warnings: list[str] = field(default_factory=list)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    # which calibration method chose each range-calibrated tensor (empty for plain minmax)
    methods: dict[str, str] = field(default_factory=dict)
    # auto: held-out score of every configuration tried
    trials: list[dict] = field(default_factory=list)


def choose_activation_qparams(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 (scale, zp) for a real range, widened to include 0 (TFLite)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0.0:
        hi = 1.0  # an always-zero tensor: any positive scale represents it exactly
    scale = float(np.float32((hi - lo) / 255.0))
    zp = round_half_away(-128.0 - lo / scale)
    return scale, int(np.clip(zp, -128, 127))


def quantize_weights(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 in [-127, 127], one scale per slice of `axis` (or one for all)."""
    w = np.asarray(w, np.float32)
    if axis is None:
        max_abs = np.array([np.abs(w).max()], np.float32)
        shaped = max_abs.reshape([1] * w.ndim)
    else:
        others = tuple(i for i in range(w.ndim) if i != axis)
        max_abs = np.abs(w).max(axis=others).astype(np.float32)
        shape = [1] * w.ndim
        shape[axis] = -1
        shaped = max_abs.reshape(shape)
    safe = np.where(shaped > 0, shaped, np.float32(1.0))  # all-zero slice: q = 0 at scale 1/127
    # float64: a near-dead channel (max |w| ~ 1e-38) must not overflow 127 / max_abs
    q = np.clip(_round_away(w.astype(np.float64) * (127.0 / safe.astype(np.float64))), -127, 127)
    scale = (np.where(max_abs > 0, max_abs, np.float32(1.0)) / np.float32(127.0)).astype(np.float32)
    return q.astype(np.int8), scale


def _round_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _quantize_bias(
    bias: np.ndarray,
    s_in: float,
    w_scale: np.ndarray,
    weights: np.ndarray,
    w_float: np.ndarray,
    axis: int | None,
    name: str,
    warnings: list[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int32 bias at s_in * s_w[c]; a channel whose bias would overflow int32 gets a larger
    weight scale (TFLite's AdjustWeightsForBiasScale) and a warning."""
    w_scale = w_scale.copy()
    per = np.broadcast_to(w_scale, bias.shape).astype(np.float64)
    q = np.round(bias.astype(np.float64) / (np.float64(s_in) * per))
    over = np.abs(q) > INT32_MAX
    if over.any():
        if axis is None:
            need = np.abs(bias).max() / (s_in * INT32_MAX) * 1.001
            w_scale[:] = np.float32(need)
        else:
            need = np.abs(bias) / (s_in * INT32_MAX) * 1.001
            w_scale = np.where(over, need, w_scale).astype(np.float32)
        shape = [1] * w_float.ndim
        if axis is not None:
            shape[axis] = -1
        weights = np.clip(_round_away(w_float / w_scale.reshape(shape)), -127, 127).astype(np.int8)
        per = np.broadcast_to(w_scale, bias.shape).astype(np.float64)
        q = np.round(bias.astype(np.float64) / (np.float64(s_in) * per))
        warnings.append(
            f"{name}: bias too large for int32 at scale s_in*s_w in {int(over.sum())} channel(s); "
            "enlarged their weight scale"
        )
    return q.astype(np.int32), w_scale, weights


def _chunks(samples: np.ndarray, batch: int):
    """Batches of the samples, each checked for NaN/inf as it goes (a whole-array check
    would allocate a temporary as large as the data)."""
    if samples.shape[0] == 0:
        raise EdgeconvError("calibration data is empty")
    for start in range(0, samples.shape[0], batch):
        chunk = samples[start : start + batch]
        if not np.all(np.isfinite(chunk)):
            raise EdgeconvError("calibration data contains NaN or inf")
        yield chunk


def calibrate(
    graph: Graph,
    samples: np.ndarray,
    batch: int = 64,
    progress: Callable[[int], None] | None = None,
) -> dict[str, tuple[float, float]]:
    """Run the float graph over the samples and return every activation's (min, max)."""
    observers: dict[str, MinMaxObserver] = {}

    def observe(name: str, value: np.ndarray) -> None:
        observers.setdefault(name, MinMaxObserver()).update(name, value)

    for chunk in _chunks(samples, batch):
        run_graph(graph, {graph.inputs[0]: chunk}, observe)
        if progress:
            progress(len(chunk))
    return {name: obs.range() for name, obs in observers.items()}


def collect_statistics(
    graph: Graph,
    samples: np.ndarray,
    *,
    bins: int = DEFAULT_BINS,
    layer_means: bool = False,
    batch: int = 64,
    progress: Callable[[int], None] | None = None,
    into: CalibrationStats | None = None,
) -> CalibrationStats:
    """One streaming pass of the float graph: a histogram per activation (and, for bias
    correction, each conv/fc layer's mean input window). Memory is O(bins x tensors)
    whatever the number of samples; pass `into` to continue a previous pass."""
    stats = into or CalibrationStats(graph, bins, layer_means)
    for chunk in _chunks(samples, batch):
        run_graph(graph, {graph.inputs[0]: chunk}, stats.observe)
        if progress:
            progress(len(chunk))
    return stats


def range_tensors(graph: Graph) -> list[str]:
    """The activations whose (scale, zero point) come from their calibrated range: the
    graph input and every op output that is neither fixed (softmax, tanh, sigmoid) nor
    shared with the op's input (pool, reshape, ReLU, ...)."""
    names = list(graph.inputs)
    for op in graph.ops:
        if _fixed_qparams(op) is None and not _shares_qparams(op):
            names.append(op.outputs[0])
    return names


def _fixed_qparams(op) -> tuple[float, int] | None:
    key = (
        (op.kind, op.attrs.get("log", False))
        if op.kind == "softmax"
        else (op.kind, op.attrs.get("fn"))
    )
    return FIXED_OUTPUT_QPARAMS.get(key)


def _shares_qparams(op) -> bool:
    return op.kind in SHARED_QPARAM_KINDS or (
        op.kind == "act" and op.attrs["fn"] in ("relu", "relu6", "clip")
    )


def _check_float_single_input(graph: Graph) -> None:
    if graph.is_quantized:
        raise EdgeconvError("the model is already int8; quantize takes a float model")
    if len(graph.inputs) != 1:
        raise EdgeconvError(
            f"quantize supports single-input models (this one has {len(graph.inputs)})"
        )


def quantize_graph(
    graph: Graph,
    samples: np.ndarray,
    *,
    per_channel: bool = True,
    progress: Callable[[int], None] | None = None,
    method: str = "minmax",
    percentile: float = DEFAULT_PERCENTILE,
    bias_correction: bool = False,
    holdout: float = 0.2,
) -> QuantizeResult:
    """Float graph + calibration samples (already shaped as the model's input) -> int8 graph.

    `method` picks each activation's range: "minmax" (TFLite's rule, the default),
    "percentile", "mse", "entropy", or "auto" (each method tried per model, then per
    tensor, on a held-out `holdout` fraction of the samples; the best is kept).
    `bias_correction` shifts each conv/fc bias by the mean error its int8 weights make on
    the calibration data. Either way only scales, zero points and bias values change.
    """
    _check_float_single_input(graph)
    if method == "minmax" and not bias_correction:
        ranges = calibrate(graph, samples, progress=progress)
        q, warnings = build_quantized(graph, ranges, per_channel=per_channel)
        q.meta["quantization"] = {
            "scheme": "tflite-int8",
            "calibration": "minmax",
            "calibration_samples": int(len(samples)),
            "per_channel": per_channel,
        }
        if warnings:
            q.meta["quantization"]["warnings"] = warnings
        q.validate()
        return QuantizeResult(q, warnings, ranges)
    from .auto import quantize_with_method

    return quantize_with_method(
        graph,
        samples,
        per_channel=per_channel,
        progress=progress,
        method=method,
        percentile=percentile,
        bias_correction=bias_correction,
        holdout=holdout,
    )


def build_quantized(
    graph: Graph,
    ranges: dict[str, tuple[float, float]],
    *,
    per_channel: bool = True,
    input_means: dict[str, np.ndarray] | None = None,
) -> tuple[Graph, list[str]]:
    """The int8 graph for given activation ranges (TFLite's parameter rules). With
    `input_means` (layer output name -> mean input window), biases get the mean-shift correction."""
    q = copy.deepcopy(graph)
    warnings: list[str] = []

    def set_q(name: str, scale: float, zp: int) -> None:
        t = q.tensors[name]
        t.dtype = "int8"
        t.scale = np.array([scale], np.float32)
        t.zero_point = np.array([zp], np.int32)

    for name in q.inputs:
        set_q(name, *choose_activation_qparams(*ranges[name]))
    for op in q.ops:
        out = op.outputs[0]
        x = q.tensors[op.inputs[0]]
        fixed = _fixed_qparams(op)
        if fixed is not None:
            set_q(out, *fixed)
        elif _shares_qparams(op):
            # shared parameters: the op moves or clamps values, never rescales them
            set_q(out, *x.qparams())
        else:
            set_q(out, *choose_activation_qparams(*ranges[out]))
        if op.kind in ("conv", "fc"):
            mean = None if input_means is None else input_means.get(out)
            _quantize_layer(q, op, per_channel, warnings, mean)
    return q, warnings


def _quantize_layer(
    q: Graph, op, per_channel: bool, warnings: list[str], input_mean: np.ndarray | None = None
) -> None:
    x = q.tensors[op.inputs[0]]
    wt = q.tensors[op.inputs[1]]
    w_float = wt.data.astype(np.float32)
    if not np.all(np.isfinite(w_float)):
        raise EdgeconvError(f"layer {op.name!r}: weights contain NaN or inf")
    if not per_channel:
        axis = None
    else:  # per output channel: OHWI axis 0, depthwise 1HW(C*M) axis 3, FC rows axis 0
        axis = 3 if op.kind == "conv" and op.attrs["depthwise"] else 0
    w_q, w_scale = quantize_weights(w_float, axis)
    s_in, _ = x.qparams()
    cout = w_float.shape[3] if op.kind == "conv" and op.attrs["depthwise"] else w_float.shape[0]
    if len(op.inputs) == 3:
        b = q.tensors[op.inputs[2]].data.astype(np.float32)
        if not np.all(np.isfinite(b)):
            raise EdgeconvError(f"layer {op.name!r}: bias contains NaN or inf")
    else:
        b = np.zeros(cout, np.float32)
    if input_mean is not None:
        from .bias_correction import bias_shift

        b = (b + bias_shift(op, w_float, w_q, w_scale, input_mean)).astype(np.float32)
    b_q, w_scale, w_q = _quantize_bias(b, s_in, w_scale, w_q, w_float, axis, op.name, warnings)
    wt.data, wt.dtype = w_q, "int8"
    wt.scale, wt.zero_point, wt.axis = w_scale, np.zeros(len(w_scale), np.int32), axis
    bias_scale = (np.float32(s_in) * np.broadcast_to(w_scale, (cout,))).astype(np.float32)
    bias_name = op.inputs[2] if len(op.inputs) == 3 else f"{op.outputs[0]}_bias"
    q.tensors[bias_name] = Tensor(
        bias_name, (cout,), "int32", b_q, bias_scale, np.zeros(cout, np.int32), 0
    )
    if len(op.inputs) == 2:
        op.inputs.append(bias_name)
