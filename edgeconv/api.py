"""The library calls behind the CLI verbs, so an edge app and the CLI do the same thing."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from .data import fit_samples, load_dataset, to_model_dtype
from .errors import EdgeconvError
from .runtime import Model, load


def quantize_model(
    model: str | os.PathLike | Model,
    calib: str | os.PathLike | np.ndarray,
    *,
    limit: int | None = None,
    per_channel: bool = True,
    progress: Callable[[int], None] | None = None,
    method: str = "minmax",
    percentile: float = 99.99,
    bias_correction: bool = False,
):
    """Float model + calibration samples -> QuantizeResult (int8 graph, warnings, ranges).
    `method`: minmax (default), percentile, mse, entropy or auto (see edgeconv.quantize)."""
    from edgeconv.quantize import quantize_graph

    m = model if isinstance(model, Model) else load(model)
    if m.quantized:
        raise EdgeconvError(f"{m.path}: the model is already int8; quantize takes a float model")
    x = calib if isinstance(calib, np.ndarray) else load_dataset(calib)[0]
    if limit is not None:
        x = x[:limit]
    x = to_model_dtype(
        fit_samples(x, m.input_shape, "calibration data"), "float32", "calibration data"
    )
    return quantize_graph(
        m.graph,
        x,
        per_channel=per_channel,
        progress=progress,
        method=method,
        percentile=percentile,
        bias_correction=bias_correction,
    )


def measure_latency(model: Model, x: np.ndarray, n: int = 200, warmup: int = 3) -> dict:
    """Per-image latency at batch 1 over up to `n` samples, after warm-up (compile) runs."""
    import time

    x = fit_samples(np.asarray(x), model.input_shape)
    if len(x) == 0:
        raise EdgeconvError("no samples to time")
    for i in range(warmup):
        model.run(x[i % len(x)][None])
    times = []
    for i in range(min(n, max(len(x), 1) * 4)):
        sample = x[i % len(x)][None]
        t = time.perf_counter()
        model.run(sample)
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return {
        "latency_ms_p50": float(np.percentile(ms, 50)),
        "latency_ms_p90": float(np.percentile(ms, 90)),
        "latency_samples": len(times),
    }
