"""Fixed-point multipliers and the scalar requantization oracles (int8 spec, section 3.4).

Everything here is plain Python integers on purpose: the oracles are transcriptions of the
C code in the spec, and Python ints never overflow, so every int32 wrap-around the C code
performs is written out explicitly (``_wrap_int32``) instead of happening by accident.
Both kernel backends are tested against these functions.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ..errors import EdgeconvError
from .modes import (  # noqa: F401  (re-exported)
    FLOAT_MODES,
    QUANTIZE_METHODS,
    ROUNDING_CHOICES,
    ROUNDING_MODES,
    ROUNDING_PROFILES,
)

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1

# The shift range the kernels accept. Single rounding needs total_shift = 31 - shift in
# [1, 62]; double rounding needs 1 << left to stay an int32 and a right shift <= 31.
SHIFT_MIN = -31
SHIFT_MAX = 30


def rounding_code(mode: str) -> int:
    """Map a rounding-mode name to the small int the compiled kernels branch on."""
    if not isinstance(mode, str) or mode not in ROUNDING_MODES:
        raise EdgeconvError(f"rounding={mode!r}: use one of {', '.join(map(repr, ROUNDING_MODES))}")
    return ROUNDING_MODES.index(mode)


def check_rounding(choice: str) -> str:
    """Validate a --rounding value: a kernel mode or a runtime profile."""
    if not isinstance(choice, str) or choice not in ROUNDING_CHOICES:
        raise EdgeconvError(
            f"rounding={choice!r}: use one of {', '.join(map(repr, ROUNDING_CHOICES))}"
        )
    return choice


def delegate_accepts(scales) -> bool:
    """XNNPACK's test on a layer's weight and bias scales: every one a normal float32 > 0."""
    s = np.asarray(scales, np.float32)
    return bool(np.all(s > 0) and np.all(s >= np.finfo(np.float32).tiny) and np.all(np.isfinite(s)))


def mode_for(choice: str, op: str, scales=None) -> str:
    """The kernel mode a rounding choice uses for `op` ('conv', 'depthwise', 'fc',
    'depthwise_blocks'; 'quantize' gives a QUANTIZE_METHODS entry); `scales` (the
    layer's weight and bias scales) decide whether a delegate profile's delegate takes
    the layer."""
    profile = ROUNDING_PROFILES.get(check_rounding(choice))
    if op == "quantize":  # the float -> int8 input quantization
        return "divide" if profile is None else profile.get("quantize", "divide")
    if profile is None:
        return choice
    if "declined" in profile and scales is not None and not delegate_accepts(scales):
        return mode_for(profile["declined"], op)
    if op == "depthwise_blocks":
        return profile.get(op, profile["depthwise"])
    return profile[op]


def real_scales(s_in: float, w_scales, s_out: float, mode: str) -> np.ndarray:
    """The real multipliers s_in * s_w[c] / s_out as the runtime of `mode` computes them:
    in double from the float32-stored scales (TFLite, LiteRT reference FC), or in float32
    arithmetic, left to right (XNNPACK: input_scale * kernel_scale / output_scale)."""
    w = np.atleast_1d(np.asarray(w_scales, np.float32))
    if mode == "fp32":
        with np.errstate(over="ignore", under="ignore"):
            prod = np.float32(s_in) * w
            return (prod / np.float32(s_out)).astype(np.float32).astype(np.float64)
    return np.float64(np.float32(s_in)) * w.astype(np.float64) / np.float64(np.float32(s_out))


def _round_half_away(v: float) -> int:
    """std::round on a double: ties go away from zero (Python's round() goes to even)."""
    # abs(v) + 0.5 is exact here: v = q * 2^31 with |q| < 1 keeps at most 22 fraction bits.
    r = math.floor(abs(v) + 0.5)
    return -r if v < 0 else r


def quantize_multiplier(real: float, rounding: str = "double") -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: real ~= mult * 2^(shift - 31), mult in [2^30, 2^31).

    TFLite flushes multipliers below ~2^-31 to (0, 0) instead of producing right shifts
    larger than 31; builds with single rounding also saturate shifts above 30, which is
    what ``rounding="single"`` reproduces.
    """
    code = rounding_code(rounding)
    real = float(real)
    if not math.isfinite(real):
        raise EdgeconvError(f"multiplier {real!r} is not finite")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = _round_half_away(q * float(1 << 31))
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        q_fixed, shift = 0, 0
    if code == 1 and shift > 30:
        q_fixed, shift = INT32_MAX, 30
    # A negative real can round to exactly -2^31, which TFLite keeps: it is a valid int32.
    return int(q_fixed), int(shift)


def quantize_multipliers(
    reals: np.ndarray, rounding: str = "double"
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel quantize_multiplier, shaped like ``reals``, as the int32 arrays kernels take."""
    arr = np.asarray(reals, dtype=np.float64)
    mult = np.empty(arr.shape, dtype=np.int32)
    shift = np.empty(arr.shape, dtype=np.int32)
    for idx, real in np.ndenumerate(arr):
        mult[idx], shift[idx] = quantize_multiplier(float(real), rounding)
    return mult, shift


def _wrap_int32(v: int) -> int:
    """What a C int32 holds after the operation: two's-complement wrap-around."""
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _c_div(n: int, d: int) -> int:
    """C integer division, truncating toward zero (Python's // floors)."""
    q = abs(n) // abs(d)
    return q if (n >= 0) == (d > 0) else -q


def saturating_rounding_doubling_high_mul(a: int, b: int) -> int:
    """gemmlowp SRDHM on int32 values, as written in the spec."""
    if a == INT32_MIN and b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return _c_div(ab + nudge, 1 << 31)


def rounding_divide_by_pot(x: int, exponent: int) -> int:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent, ties away from zero."""
    mask = (1 << exponent) - 1
    remainder = x & mask  # Python's & on negatives acts on the two's-complement bits
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def _check_scalar_args(acc: int, mult: int, shift: int) -> None:
    if not INT32_MIN <= acc <= INT32_MAX:
        raise EdgeconvError(f"acc={acc} is outside int32")
    if not INT32_MIN <= mult <= INT32_MAX:
        raise EdgeconvError(f"mult={mult} is outside int32")
    if not SHIFT_MIN <= shift <= SHIFT_MAX:
        raise EdgeconvError(f"shift={shift} is outside [{SHIFT_MIN}, {SHIFT_MAX}]")


def requantize_scalar_double(acc: int, mult: int, shift: int) -> int:
    """TFLM MultiplyByQuantizedMultiplier (double rounding, spec 3.4 A) on one value.

    ``acc << left`` is ``x * (1 << left)`` on an int32 in the C code; it wraps on
    overflow on every target TFLM runs on, so the oracle wraps too.
    """
    _check_scalar_args(acc, mult, shift)
    left = max(shift, 0)
    right = max(-shift, 0)
    high = saturating_rounding_doubling_high_mul(_wrap_int32(acc << left), mult)
    return rounding_divide_by_pot(high, right)


def requantize_scalar_single(acc: int, mult: int, shift: int) -> int:
    """TFLITE_SINGLE_ROUNDING MultiplyByQuantizedMultiplier (spec 3.4 B) on one value.

    The int64 result is cast to int32 in the C code, so an out-of-range result wraps.
    """
    _check_scalar_args(acc, mult, shift)
    total_shift = 31 - shift
    return _wrap_int32((acc * mult + (1 << (total_shift - 1))) >> total_shift)


def requantize_scalar_double_up(acc: int, mult: int, shift: int) -> int:
    """SRDHM, then a rounding right shift whose ties go toward +inf (TFLite's optimized
    kernels on x86-64: ruy, and the 8-channel blocks of the depthwise kernel)."""
    _check_scalar_args(acc, mult, shift)
    left = max(shift, 0)
    right = max(-shift, 0)
    high = saturating_rounding_doubling_high_mul(_wrap_int32(acc << left), mult)
    return (high + ((1 << right) >> 1)) >> right


def _saturate_int32(v: float) -> float:
    return min(max(v, float(INT32_MIN)), float(INT32_MAX))


def requantize_scalar_fp32(acc: int, scale: float) -> int:
    """XNNPACK fp32 requantization: float32(acc) * float32(scale), rounded half to even."""
    v = float(np.float32(np.float32(acc) * np.float32(scale)))
    return int(round(_saturate_int32(v)))  # Python's round() on a float: ties to even


def requantize_scalar_fp64(acc: int, scale: float) -> int:
    """LiteRT reference FULLY_CONNECTED: std::round((double)acc * scale), ties away."""
    exact = Fraction(_saturate_int32(float(acc) * float(scale)))  # the double, exactly
    r = math.floor(abs(exact) + Fraction(1, 2))
    return -r if exact < 0 else r
