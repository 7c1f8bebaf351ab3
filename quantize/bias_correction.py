"""Bias correction: int8 weights w_q * s_w differ from the float weights w by a small
error e, and a layer's expected output moves by e . E[x], per output channel. Adding
-e . E[x] (E[x]: the mean input window seen in calibration) to the float bias before it
is quantized takes that shift back out. Only the int32 bias values change; the kernels
and every scale stay as they are."""

from __future__ import annotations

import numpy as np


def bias_shift(
    op, w_float: np.ndarray, w_q: np.ndarray, w_scale: np.ndarray, input_mean: np.ndarray
) -> np.ndarray:
    """The per-output-channel amount to add to the float bias."""
    if op.kind == "fc":  # w [Cout, K], mean [K]
        err = w_q.astype(np.float64) * np.asarray(w_scale, np.float64).reshape(-1, 1) - w_float
        return -(err @ np.asarray(input_mean, np.float64).reshape(-1))
    if op.attrs["depthwise"]:  # w [1, KH, KW, C*M], mean [KH, KW, C]
        m = op.attrs["depth_multiplier"]
        scale = np.asarray(w_scale, np.float64).reshape(1, 1, 1, -1)
        err = w_q.astype(np.float64) * scale - w_float
        mean = np.repeat(input_mean, m, axis=2)  # channel ic*m + j reads input ic
        return -np.einsum("hwc,hwc->c", err[0], mean)
    # w [Cout, KH, KW, Cin] (OHWI), mean [KH, KW, Cin]
    scale = np.asarray(w_scale, np.float64).reshape(-1, 1, 1, 1)
    err = w_q.astype(np.float64) * scale - w_float
    return -np.einsum("ohwc,hwc->o", err, input_mean)
