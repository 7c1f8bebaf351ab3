"""Quantization with a histogram-based calibration method, and `auto`: every method is
tried on the whole model, then tensor by tensor, on a held-out part of the calibration
samples, and the configuration whose int8 outputs agree best with the float model's is
kept. The ranges of the final model come from all the calibration samples."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgeconv.errors import EdgeconvError
from edgeconv.float_runtime import run_graph
from edgeconv.ir import Graph

from .calibration import METHODS, choose_range
from .ptq import (
    QuantizeResult,
    _check_float_single_input,
    build_quantized,
    collect_statistics,
    range_tensors,
)


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """10 log10(sum ref^2 / sum (ref - test)^2); inf when identical."""
    ref = np.asarray(ref, np.float64)
    noise = float(np.sum((ref - np.asarray(test, np.float64)) ** 2))
    signal = float(np.sum(ref * ref))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * np.log10(signal / noise)


def _score(q: Graph, x: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement, output SQNR dB) of the int8 graph against the float outputs."""
    from edgeconv.runtime import Model

    y = Model(q).run(x, dequantize=True)
    n = len(ref)
    agree = float(np.mean(ref.reshape(n, -1).argmax(1) == y.reshape(n, -1).argmax(1)))
    return agree, sqnr_db(ref, y)


def quantize_with_method(
    graph: Graph,
    samples: np.ndarray,
    *,
    per_channel: bool = True,
    progress: Callable[[int], None] | None = None,
    method: str = "minmax",
    percentile: float = 99.99,
    bias_correction: bool = False,
    holdout: float = 0.2,
) -> QuantizeResult:
    _check_float_single_input(graph)
    if method != "auto" and method not in METHODS:
        raise EdgeconvError(
            f"unknown calibration method {method!r}; use one of {', '.join(METHODS)} or auto"
        )
    free = range_tensors(graph)
    trials: list[dict] = []
    if method == "auto":
        n = int(samples.shape[0])
        if n < 2:
            raise EdgeconvError("--method auto needs at least 2 calibration samples")
        if not 0.0 < holdout < 1.0:
            raise EdgeconvError(f"holdout must be a fraction in (0, 1), got {holdout}")
        n_hold = min(max(1, int(round(n * holdout))), n - 1)
        fit, held = samples[: n - n_hold], samples[n - n_hold :]
        stats = collect_statistics(graph, fit, layer_means=bias_correction, progress=progress)
        ref = run_graph(graph, {graph.inputs[0]: np.asarray(held, np.float32)})
        ref = ref[graph.outputs[0]]
        cand = {m: {t: choose_range(m, stats.hists[t], percentile) for t in free} for m in METHODS}
        means = stats.input_means() if bias_correction else None

        def evaluate(choice: dict[str, str]) -> tuple[float, float]:
            ranges = {t: cand[choice[t]][t] for t in free}
            q, _ = build_quantized(graph, ranges, per_channel=per_channel, input_means=means)
            return _score(q, held, ref)

        best_m, best = None, None
        for m in METHODS:  # per model
            s = evaluate(dict.fromkeys(free, m))
            trials.append({"scope": "model", "method": m, "agreement": s[0], "sqnr_db": s[1]})
            if best is None or s > best:
                best_m, best = m, s
        choice = dict.fromkeys(free, best_m)
        for t in free:  # then per tensor, greedily, from the best whole-model choice
            for m in METHODS:
                if m == choice[t] or cand[m][t] == cand[choice[t]][t]:
                    continue
                s = evaluate({**choice, t: m})
                trials.append({"scope": t, "method": m, "agreement": s[0], "sqnr_db": s[1]})
                if s > best:
                    choice[t], best = m, s
        # the final ranges use every sample: continue the same streaming pass over the rest
        collect_statistics(graph, held, into=stats, progress=progress)
    else:
        stats = collect_statistics(graph, samples, layer_means=bias_correction, progress=progress)
        choice = dict.fromkeys(free, method)
    ranges = stats.ranges()  # minmax of every tensor, then the chosen ranges on top
    for t in free:
        ranges[t] = choose_range(choice[t], stats.hists[t], percentile)
    means = stats.input_means() if bias_correction else None
    q, warnings = build_quantized(graph, ranges, per_channel=per_channel, input_means=means)
    meta = {
        "scheme": "tflite-int8",
        "calibration": method,
        "calibration_samples": int(stats.samples),
        "per_channel": per_channel,
        "bias_correction": bool(bias_correction),
    }
    if method == "percentile" or "percentile" in choice.values():
        meta["percentile"] = percentile
    if method == "auto":
        meta["methods"] = dict(choice)
        meta["holdout_samples"] = int(len(held))
    if warnings:
        meta["warnings"] = warnings
    q.meta["quantization"] = meta
    q.validate()
    return QuantizeResult(q, warnings, ranges, methods=dict(choice), trials=trials)
