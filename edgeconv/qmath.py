"""Scalar quantization arithmetic shared by the quantizer, the runtime and exporters,
written as TFLite does it so that every consumer derives the same integers."""

from __future__ import annotations

import math

import numpy as np


def round_half_away(x: float) -> int:
    """TfLiteRound / std::round: halves go away from zero (not Python's banker's round)."""
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def activation_range(
    activation: str, scale: float, zero_point: int, clip: tuple[float, float] | None = None
) -> tuple[int, int]:
    """int8 clamp of a fused activation (TFLite CalculateActivationRangeQuantized)."""

    def q(f: float) -> int:
        return zero_point + round_half_away(float(np.float32(f) / np.float32(scale)))

    if activation == "none":
        return -128, 127
    if activation == "relu":
        return max(-128, q(0.0)), 127
    if activation == "relu6":
        return max(-128, q(0.0)), min(127, q(6.0))
    if activation == "clip":
        lo, hi = clip
        return max(-128, q(lo)), min(127, q(hi))
    raise ValueError(f"unknown fused activation {activation!r}")


def real_multipliers(in_scale: float, weight_scales: np.ndarray, out_scale: float) -> np.ndarray:
    """s_in * s_w / s_out in double from the float32-stored scales (TFLite's order)."""
    return (
        np.float64(np.float32(in_scale))
        * np.asarray(weight_scales, np.float32).astype(np.float64)
        / np.float64(np.float32(out_scale))
    )
