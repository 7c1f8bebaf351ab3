"""int8 SOFTMAX, LOG_SOFTMAX, TANH, LOGISTIC and ADD, bit-exact with TFLite Micro.

TFLM evaluates these ops with gemmlowp's 32-bit fixed-point arithmetic (Q-format
polynomials, Newton-Raphson reciprocals, a log approximation) rather than with a
float formula or a lookup table, so a float model of the op is 1-2 LSB off on a
fair share of inputs. To be byte-identical we replay the integer recipe step by
step: every value is held in an int64 NumPy array but always stays inside the
int32 range the C++ code works in, and the few places where C++ would wrap
around are wrapped explicitly (``_wrap32``).

The recipe is read from the public TFLM / TFLite / gemmlowp sources:
``micro/kernels/{softmax_common,log_softmax,tanh,logistic_common,add_common}.cc``,
``kernels/internal/reference/{softmax,log_softmax}.h``,
``kernels/internal/reference/integer_ops/{tanh,logistic,add}.h``,
``kernels/internal/{common.h,common.cc,quantization_util.cc}`` and gemmlowp's
``fixedpoint/fixedpoint.h``. TFLM is built without ``TFLITE_SINGLE_ROUNDING``,
so every multiplier uses double rounding (SRDHM then rounding right shift).

Each op is split into ``prepare_*`` (all the float work on quantization
parameters, done once per model load, exactly as TFLM's Prepare does it) and the
integer kernel, which does no float arithmetic at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import EdgeconvError
from .requant import quantize_multiplier

__all__ = [
    "LOGISTIC_OUTPUT_QPARAMS",
    "LOG_SOFTMAX_OUTPUT_QPARAMS",
    "SOFTMAX_OUTPUT_QPARAMS",
    "TANH_OUTPUT_QPARAMS",
    "AddParams",
    "LogSoftmaxParams",
    "LogisticParams",
    "SoftmaxParams",
    "TanhParams",
    "add",
    "log_softmax",
    "logistic",
    "prepare_add",
    "prepare_log_softmax",
    "prepare_logistic",
    "prepare_softmax",
    "prepare_tanh",
    "softmax",
    "tanh",
]

_I32_MIN = -(1 << 31)
_I32_MAX = (1 << 31) - 1

# Output quantization TFLM imposes on these ops (scale, zero_point).
SOFTMAX_OUTPUT_QPARAMS = (1.0 / 256.0, -128)
LOG_SOFTMAX_OUTPUT_QPARAMS = (16.0 / 256.0, 127)
TANH_OUTPUT_QPARAMS = (1.0 / 128.0, 0)
LOGISTIC_OUTPUT_QPARAMS = (1.0 / 256.0, -128)


# --------------------------------------------------------------------------
# Scalar helpers used by the prepare functions (float work, done once).
# --------------------------------------------------------------------------


def _round_half_away(x: float) -> int:
    """TfLiteRound / std::round: Python's round() is half-to-even, TFLite's is not."""
    r = math.floor(abs(x) + 0.5)
    # abs(x)+0.5 is exact for the magnitudes used here (< 2^52), so floor is exact.
    return int(r) if x >= 0 else -int(r)


def _quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier, double-rounding build (the one TFLM uses)."""
    return quantize_multiplier(real, "double")


def _as_float32(value: object, what: str) -> float:
    """Scales live in the .tflite file as float32; TFLM widens that float32 to double."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise EdgeconvError(f"{what} must be a number, got {value!r}")
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise EdgeconvError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(f) or f <= 0.0:
        raise EdgeconvError(f"{what} must be a finite positive number, got {value!r}")
    with np.errstate(over="ignore", under="ignore"):
        f32 = float(np.float32(f))
    if not math.isfinite(f32) or f32 <= 0.0:
        raise EdgeconvError(f"{what}={value!r} is not representable as a positive float32")
    return f32


def _as_zero_point(value: object, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise EdgeconvError(f"{what} must be an integer, got {value!r}")
    zp = int(value)
    if not -128 <= zp <= 127:
        raise EdgeconvError(f"{what} must be in [-128, 127] for int8, got {zp}")
    return zp


def _calculate_input_radius(integer_bits: int, left_shift: int, total_bits: int = 31) -> int:
    """CalculateInputRadius (float build): largest |diff| whose rescaled value cannot overflow."""
    # Python ints and float division by a power of two are exact here, like the C++ double math.
    value = ((1 << integer_bits) - 1) * (1 << (total_bits - integer_bits)) / (1 << left_shift)
    return math.floor(value)


def _check_int8(x: object, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise EdgeconvError(f"{what} must be a numpy int8 array, got {type(x).__name__}")
    if x.dtype != np.int8:
        raise EdgeconvError(f"{what} must have dtype int8, got {x.dtype}")
    return x


def _check_params(p: object, cls: type, op: str) -> None:
    if not isinstance(p, cls):
        raise EdgeconvError(
            f"{op} needs the {cls.__name__} returned by prepare_{op}, got {type(p).__name__}"
        )


# --------------------------------------------------------------------------
# Vectorised gemmlowp fixed-point primitives on int64 arrays holding int32 values.
# --------------------------------------------------------------------------


def _wrap32(v: np.ndarray) -> np.ndarray:
    """Two's-complement int32 wrap-around, as the C++ int32 arithmetic does in practice."""
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _srdhm(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul (ARM VQRDMULH).

    The C++ nudge-then-truncate formulation equals floor((a*b + 2^30) / 2^31) for
    both signs, which an arithmetic right shift computes directly.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    out = (a * b + (1 << 30)) >> 31
    return np.where((a == _I32_MIN) & (b == _I32_MIN), _I32_MAX, out)


def _rdbpot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """RoundingDivideByPOT: arithmetic right shift rounding half away from zero."""
    exponent = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def _sat_lshift(x: np.ndarray, exponent: int) -> np.ndarray:
    """SaturatingRoundingMultiplyByPOT with a positive exponent: left shift, saturating."""
    if exponent == 0:
        return x
    threshold = (1 << (31 - exponent)) - 1
    out = np.where(x > threshold, _I32_MAX, x << exponent)
    return np.where(x < -threshold, _I32_MIN, out)


def _rounding_half_sum(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """gemmlowp RoundingHalfSum: (a + b + sign) / 2 with C truncating division."""
    s = np.asarray(a, dtype=np.int64) + np.asarray(b, dtype=np.int64)
    return np.where(s >= 0, (s + 1) // 2, -((1 - s) // 2))


def _clz32(x: np.ndarray) -> np.ndarray:
    """CountLeadingZeros of the value reinterpreted as uint32 (32 for zero)."""
    u = (x & 0xFFFFFFFF).astype(np.float64)  # exact: < 2^32 < 2^53
    _, bit_length = np.frexp(u)
    return 32 - bit_length.astype(np.int64)


def _mbqm(x: np.ndarray, multiplier: int, shift: int) -> np.ndarray:
    """MultiplyByQuantizedMultiplier, double-rounding flavour (the one TFLM builds)."""
    left = max(shift, 0)
    right = max(-shift, 0)
    return _rdbpot(_srdhm(_wrap32(x << left), multiplier), right)


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a: np.ndarray) -> np.ndarray:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out: 4th-order Taylor around -1/8."""
    constant_term = 1895147668  # exp(-1/8)
    constant_1_over_3 = 715827883
    x = a + (1 << 28)
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    x4_over_4 = _rdbpot(x4, 2)
    poly = _rdbpot(_srdhm(_wrap32(x4_over_4 + x3), constant_1_over_3) + x2, 1)
    return _wrap32(constant_term + _srdhm(constant_term, _wrap32(x + poly)))


# exp(-2^k) in Q0.31 for the barrel shifter, k = -2..4.
_EXP_BARREL = (
    (-2, 1672461947),
    (-1, 1302514674),
    (0, 790015084),
    (1, 290630308),
    (2, 39332535),
    (3, 720401),
    (4, 242),
)


def _exp_on_negative_values(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp exp_on_negative_values: Q(integer_bits) input <= 0, Q0.31 output.

    Splits a into (a mod 1/4) - 1/4, whose exp comes from the polynomial, and a sum of
    powers of two, whose exps are multiplied in one per set bit.
    """
    frac_bits = 31 - integer_bits
    one_quarter = 1 << (frac_bits - 2)
    a_mod_quarter_minus_one_quarter = (a & (one_quarter - 1)) - one_quarter
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        _sat_lshift(a_mod_quarter_minus_one_quarter, integer_bits)
    )
    remainder = _wrap32(a_mod_quarter_minus_one_quarter - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = 1 << (frac_bits + exponent)
            result = np.where(remainder & bit, _srdhm(result, multiplier), result)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))  # -32.0: exp is 0 in Q0.31 below that
        result = np.where(a < clamp, 0, result)
    return np.where(a == 0, _I32_MAX, result)


def _newton_reciprocal_f2(half_denominator: np.ndarray) -> np.ndarray:
    """Three Newton-Raphson steps for 1/half_denominator, result in Q2.29."""
    x = 1515870810 + _srdhm(half_denominator, -1010580540)  # 48/17 - 32/17 * d
    one_f2 = 1 << 29
    for _ in range(3):
        half_denominator_times_x = _srdhm(half_denominator, x)
        one_minus = _wrap32(one_f2 - half_denominator_times_x)
        x = _wrap32(x + _sat_lshift(_srdhm(x, one_minus), 2))
    return x


def _one_over_one_plus_x_for_x_in_0_1(a: np.ndarray) -> np.ndarray:
    half_denominator = _rounding_half_sum(a, _I32_MAX)
    x = _newton_reciprocal_f2(half_denominator)
    return _sat_lshift(x, 1)


def _one_minus_x_over_one_plus_x_for_x_in_0_1(a: np.ndarray) -> np.ndarray:
    half_denominator = _rounding_half_sum(a, _I32_MAX)
    x = _newton_reciprocal_f2(half_denominator)
    return _sat_lshift(_wrap32(x - (1 << 29)), 2)


def _fixed_tanh(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp::tanh: (1 - exp(-2|a|)) / (1 + exp(-2|a|)), sign restored, Q0.31 out."""
    negative = a < 0
    n = np.where(negative, a, -a)
    # ExactMulByPot<1>: same raw value read with one more integer bit, i.e. 2 * n.
    t = _one_minus_x_over_one_plus_x_for_x_in_0_1(_exp_on_negative_values(n, integer_bits + 1))
    return np.where(a == 0, 0, np.where(negative, -t, t))


def _fixed_logistic(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp::logistic: 1 / (1 + exp(-|a|)), mirrored as 1 - y for a < 0, Q0.31 out."""
    positive = a > 0
    abs_input = np.where(positive, a, -a)
    if_positive = _one_over_one_plus_x_for_x_in_0_1(
        _exp_on_negative_values(-abs_input, integer_bits)
    )
    if_negative = _I32_MAX - if_positive
    return np.where(a == 0, 1 << 30, np.where(positive, if_positive, if_negative))


def _log_x_for_x_greater_than_or_equal_to_1(
    x: np.ndarray, input_integer_bits: int, output_integer_bits: int
) -> np.ndarray:
    """TFLite log_x_for_x_greater_than_or_equal_to_1_impl (a Padé-style log approximation).

    Normalises x to r * 2^z with r near 1 using two candidate headroom shifts (one
    pre-multiplied by sqrt(1/2)), then evaluates a rational approximation of log(r).
    """
    accum_bits = output_integer_bits + 1
    log_2 = 1488522236
    sqrt_sqrt_half = 1805811301
    sqrt_half = 1518500250
    one_quarter = 536870912
    alpha_n = 117049297
    alpha_d = 127690142
    alpha_i = 1057819769
    alpha_f = 638450708
    shifted_quarter = _rdbpot(np.int64(one_quarter), accum_bits)

    def sat_lshift_param(v: np.ndarray, e: np.ndarray) -> np.ndarray:
        # SaturatingRoundingMultiplyByPOTParam; e is always >= 0 here.
        threshold = (np.int64(1) << (31 - e)) - 1
        out = np.where(v > threshold, _I32_MAX, _wrap32(v << e))
        out = np.where(v < -threshold, _I32_MIN, out)
        return np.where(e == 0, v, out)

    def saturate(v: np.ndarray) -> np.ndarray:
        return np.clip(v, _I32_MIN, _I32_MAX)

    z_a = x
    z_a_headroom_plus_1 = _clz32(z_a)
    r_a_tmp = sat_lshift_param(z_a, z_a_headroom_plus_1 - 1)
    r_a_raw = sat_lshift_param(_srdhm(r_a_tmp, sqrt_half), np.int64(1))
    z_a_pow_2_adj = saturate(
        sat_lshift_param(input_integer_bits - z_a_headroom_plus_1, np.int64(31 - accum_bits))
        + shifted_quarter
    )

    z_b = _srdhm(z_a, sqrt_half)
    z_b_headroom = _clz32(z_b) - 1
    r_b_raw = sat_lshift_param(z_a, z_b_headroom)
    z_b_pow_2_adj = saturate(
        sat_lshift_param(input_integer_bits - z_b_headroom, np.int64(31 - accum_bits))
        - shifted_quarter
    )

    r = np.minimum(r_a_raw, r_b_raw)
    z_pow_2_adj = np.maximum(z_a_pow_2_adj, z_b_pow_2_adj)

    p = _rounding_half_sum(r, sqrt_sqrt_half)
    q = _wrap32(r - sqrt_sqrt_half)
    q = _wrap32(q + q)

    common_sq = _srdhm(q, q)
    num = _wrap32(_srdhm(q, r) + _srdhm(_srdhm(q, common_sq), alpha_n))
    denom_minus_one_0 = _wrap32(
        _srdhm(p, _wrap32(_wrap32(alpha_i + q) + _srdhm(alpha_d, common_sq))) + _srdhm(alpha_f, q)
    )
    recip_denom = _one_over_one_plus_x_for_x_in_0_1(denom_minus_one_0)

    num_scaled = _rdbpot(num, accum_bits)
    total = _wrap32(_srdhm(z_pow_2_adj, log_2) + _srdhm(num_scaled, recip_denom))
    return _sat_lshift(total, accum_bits - output_integer_bits)


# --------------------------------------------------------------------------
# SOFTMAX
# --------------------------------------------------------------------------

_SCALED_DIFF_INTEGER_BITS = 5  # exp() input is Q5.26
_ACCUMULATION_INTEGER_BITS = 12  # sum of exps is Q12.19


@dataclass(frozen=True)
class SoftmaxParams:
    """What TFLM's SoftmaxPrepare derives from (input scale, beta)."""

    input_multiplier: int
    input_left_shift: int
    diff_min: int


def _softmax_scaling(in_scale: float, beta: float) -> tuple[int, int, int]:
    """PreprocessSoftmaxScaling + CalculateInputRadius, kScaledDiffIntegerBits = 5."""
    real = min(beta * in_scale * (1 << (31 - _SCALED_DIFF_INTEGER_BITS)), (1 << 31) - 1.0)
    if real <= 1.0:
        # TFLM's QuantizeMultiplierGreaterThanOne CHECK-fails (aborts) here.
        raise EdgeconvError(
            f"softmax needs beta * input_scale > 2^-26, got {beta!r} * {in_scale!r}"
        )
    multiplier, left_shift = _quantize_multiplier(real)
    diff_min = -_calculate_input_radius(_SCALED_DIFF_INTEGER_BITS, left_shift)
    return multiplier, left_shift, diff_min


def prepare_softmax(in_scale: float, beta: float = 1.0) -> SoftmaxParams:
    """Fold beta and the input scale into one Q5.26 multiplier, once per model load.

    Both are float32 in the .tflite file and widened to double by TFLM, so they are
    rounded to float32 here first; otherwise the multiplier can differ in its last bit.
    """
    s = _as_float32(in_scale, "softmax input scale")
    b = _as_float32(beta, "softmax beta")
    return SoftmaxParams(*_softmax_scaling(s, b))


def _rows(x: np.ndarray, op: str) -> np.ndarray:
    if x.ndim < 1:
        raise EdgeconvError(f"{op} needs an input with at least 1 dimension, got a scalar")
    return x.astype(np.int64).reshape(-1, x.shape[-1])


def _exp_sum(
    rows: np.ndarray, multiplier: int, left_shift: int, diff_min: int, op: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Shared first pass of softmax and log-softmax: rescaled diffs, exps and their Q12 sum."""
    diff = rows - rows.max(axis=1, keepdims=True)
    valid = diff >= diff_min
    # diff * 2^left_shift fits in int32 wherever valid (that is what diff_min guarantees).
    diff_rescaled = _srdhm(_wrap32(diff << left_shift), multiplier)
    exps = _exp_on_negative_values(diff_rescaled, _SCALED_DIFF_INTEGER_BITS)
    sum_of_exps = np.where(valid, _rdbpot(exps, _ACCUMULATION_INTEGER_BITS), 0).sum(axis=1)
    if sum_of_exps.size and int(sum_of_exps.max()) > _I32_MAX:
        raise EdgeconvError(
            f"{op}: a row of {rows.shape[1]} values overflows TFLM's int32 Q12.19 sum of "
            "exps (at most 4095 values per row are safe)"
        )
    return diff, valid, diff_rescaled, exps, sum_of_exps


def softmax(x: np.ndarray, p: SoftmaxParams) -> np.ndarray:
    """int8 softmax over the last axis, output quantized as (1/256, -128).

    Matches TFLM reference_ops::Softmax<int8, int8>: exps of the (max-subtracted)
    diffs in fixed point, a fixed-point reciprocal of their sum, and entries whose
    diff is below diff_min forced to -128 (exp too small to matter).
    """
    _check_params(p, SoftmaxParams, "softmax")
    x = _check_int8(x, "softmax input")
    if x.size == 0:
        _rows(x, "softmax")
        return np.empty(x.shape, dtype=np.int8)
    rows = _rows(x, "softmax")
    _, valid, _, exps, sum_of_exps = _exp_sum(
        rows, p.input_multiplier, p.input_left_shift, p.diff_min, "softmax"
    )

    # GetReciprocal: normalise the sum to [1, 2), take 1/x in Q0.31, remember the shift.
    headroom_plus_one = _clz32(sum_of_exps)
    num_bits_over_unit = _ACCUMULATION_INTEGER_BITS - headroom_plus_one
    shifted_sum_minus_one = ((sum_of_exps << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31)
    shifted_scale = _one_over_one_plus_x_for_x_in_0_1(_wrap32(shifted_sum_minus_one))
    exponent = (num_bits_over_unit + 31 - 8)[:, None]
    if int(exponent.max()) > 31:
        # TFLITE_CHECK(exponent <= 31) aborts TFLM; we refuse instead of inventing a result.
        raise EdgeconvError(
            "softmax: a row's sum of exps reaches 512 (e.g. >= 512 near-equal logits), "
            "which TFLM's int8 softmax rejects"
        )

    unsat = _rdbpot(_srdhm(shifted_scale[:, None], exps), exponent)
    out = np.clip(unsat - 128, -128, 127)
    out = np.where(valid, out, -128)
    return out.astype(np.int8).reshape(x.shape)


# --------------------------------------------------------------------------
# LOG_SOFTMAX
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class LogSoftmaxParams:
    """What TFLM's LogSoftmax Prepare derives from the input scale (beta is fixed at 1)."""

    input_multiplier: int
    input_left_shift: int
    reverse_scaling_divisor: int
    reverse_scaling_right_shift: int
    diff_min: int


def prepare_log_softmax(in_scale: float) -> LogSoftmaxParams:
    """PreprocessLogSoftmaxScalingExp: the softmax multiplier plus its inverse.

    The inverse lets the kernel translate the most negative representable Q5.26
    result back into an input-diff threshold, below which the output is -128.
    """
    s = _as_float32(in_scale, "log_softmax input scale")
    multiplier, left_shift, diff_min = _softmax_scaling(s, 1.0)
    real_reverse = (1 << (31 - left_shift)) / float(multiplier)
    rev_mult, rev_shift = _quantize_multiplier(real_reverse)
    if not (0.0 < real_reverse < 1.0) or rev_shift > 0:
        # QuantizeMultiplierSmallerThanOneExp CHECK-fails in TFLM.
        raise EdgeconvError(f"log_softmax input scale {in_scale!r} is outside TFLM's range")
    return LogSoftmaxParams(
        input_multiplier=multiplier,
        input_left_shift=left_shift,
        reverse_scaling_divisor=rev_mult,
        reverse_scaling_right_shift=-rev_shift,
        diff_min=diff_min,
    )


def log_softmax(x: np.ndarray, p: LogSoftmaxParams) -> np.ndarray:
    """int8 log-softmax over the last axis, output quantized as (16/256, 127).

    Matches TFLM reference_ops::LogSoftmaxQuantized<int8>: log of the Q12 sum of
    exps with gemmlowp-style fixed-point log, subtracted from the Q5.26 diff.
    """
    _check_params(p, LogSoftmaxParams, "log_softmax")
    x = _check_int8(x, "log_softmax input")
    if x.size == 0:
        _rows(x, "log_softmax")
        return np.empty(x.shape, dtype=np.int8)
    rows = _rows(x, "log_softmax")
    diff, _, diff_in_q5, _, sum_of_exps = _exp_sum(
        rows, p.input_multiplier, p.input_left_shift, p.diff_min, "log_softmax"
    )
    log_sum_of_exps_in_q5 = _log_x_for_x_greater_than_or_equal_to_1(
        sum_of_exps, _ACCUMULATION_INTEGER_BITS, _SCALED_DIFF_INTEGER_BITS
    )
    shifted_log_sum = _wrap32(log_sum_of_exps_in_q5 + _I32_MIN)
    adjusted_diff_min = np.maximum(
        p.diff_min - 1,
        _mbqm(shifted_log_sum, p.reverse_scaling_divisor, -p.reverse_scaling_right_shift),
    )[:, None]
    output_integer_bits = 4
    out = (
        _rdbpot(
            _wrap32(diff_in_q5 - log_sum_of_exps_in_q5[:, None]),
            31 - _SCALED_DIFF_INTEGER_BITS - output_integer_bits,
        )
        + 127
    )
    out = np.clip(out, -128, 127)
    # Strict '>' here, where the exp pass used '>=': copied from TFLM on purpose.
    out = np.where(diff > adjusted_diff_min, out, -128)
    return out.astype(np.int8).reshape(x.shape)


# --------------------------------------------------------------------------
# TANH and LOGISTIC
# --------------------------------------------------------------------------

_SIGMOID_INPUT_INTEGER_BITS = 4  # the kernels work on Q4.27 inputs


@dataclass(frozen=True)
class TanhParams:
    """TFLM tanh OpData for int8 (input rescale to Q4.27, saturation radius), plus the
    256-entry table those parameters imply.

    The int8 output depends on the input byte alone, so prepare runs TFLM's fixed-point
    recipe once on all 256 inputs and the kernel is a lookup: same bytes, ~50x faster.
    """

    input_zero_point: int
    input_range_radius: int
    input_multiplier: int
    input_left_shift: int
    table: np.ndarray = field(repr=False, compare=False)  # indexed by x + 128, read-only


@dataclass(frozen=True)
class LogisticParams:
    """TFLM OpDataLogistic for int8 (same derivation as tanh) plus its 256-entry table."""

    input_zero_point: int
    input_range_radius: int
    input_multiplier: int
    input_left_shift: int
    table: np.ndarray = field(repr=False, compare=False)  # indexed by x + 128, read-only


def _sigmoid_like_params(in_scale: object, in_zp: object, op: str) -> tuple[int, int, int, int]:
    """The shared tanh/logistic Prepare.

    Unlike other ops, TFLM does not go through QuantizeMultiplier here: it calls
    frexp itself and skips the q == 2^31 renormalisation, and the radius uses a
    plain shift that is undefined for a negative exponent, hence the scale bound.
    """
    s = _as_float32(in_scale, f"{op} input scale")
    zp = _as_zero_point(in_zp, f"{op} input zero point")
    real = s * float(1 << (31 - _SIGMOID_INPUT_INTEGER_BITS))
    q, left_shift = math.frexp(real)
    multiplier = _round_half_away(q * (1 << 31))
    if left_shift < 0 or multiplier > _I32_MAX:
        raise EdgeconvError(f"{op} input scale {in_scale!r} is below TFLM's supported 2^-28")
    radius = _calculate_input_radius(_SIGMOID_INPUT_INTEGER_BITS, left_shift, 31)
    return zp, radius, multiplier, left_shift


_ALL_INT8 = np.arange(-128, 128, dtype=np.int64)


def _sigmoid_like_table(
    zp: int, radius: int, multiplier: int, left_shift: int, fixed_fn, out_shift: int, out_zp: int
) -> np.ndarray:
    """Replays reference_integer_ops::Tanh / Logistic on every int8 input.

    TFLM tests 'input <= -radius' before 'input >= radius', so with an input scale
    >= 8 (radius 0) the zero point itself maps to -128: kept, because TFLM does it.
    """
    centred = _ALL_INT8 - zp
    low = centred <= -radius
    high = centred >= radius
    # Entries outside the radius are overwritten below; zero them so nothing overflows.
    q4 = _mbqm(np.where(low | high, 0, centred), multiplier, left_shift)
    out = _rdbpot(fixed_fn(q4, _SIGMOID_INPUT_INTEGER_BITS), out_shift) + out_zp
    out = np.clip(out, -128, 127)
    out = np.where(low, -128, np.where(high, 127, out)).astype(np.int8)  # low wins
    out.setflags(write=False)
    return out


def prepare_tanh(in_scale: float, in_zp: int) -> TanhParams:
    """Rescale factor from the int8 input to Q4.27, the |input| beyond which tanh = +-1,
    and the resulting 256-entry table."""
    zp, radius, mult, shift = _sigmoid_like_params(in_scale, in_zp, "tanh")
    table = _sigmoid_like_table(zp, radius, mult, shift, _fixed_tanh, 31 - 7, 0)
    return TanhParams(zp, radius, mult, shift, table)


def prepare_logistic(in_scale: float, in_zp: int) -> LogisticParams:
    """Rescale factor from the int8 input to Q4.27, the saturation radius, and the
    resulting 256-entry table."""
    zp, radius, mult, shift = _sigmoid_like_params(in_scale, in_zp, "logistic")
    table = _sigmoid_like_table(zp, radius, mult, shift, _fixed_logistic, 31 - 8, -128)
    return LogisticParams(zp, radius, mult, shift, table)


def _lookup(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    # x + 128 as an index without widening: flip the sign bit of the byte.
    return table[x.view(np.uint8) ^ np.uint8(0x80)]


def tanh(x: np.ndarray, p: TanhParams) -> np.ndarray:
    """int8 tanh, output quantized as (1/128, 0), byte-identical to TFLM's TANH."""
    _check_params(p, TanhParams, "tanh")
    return _lookup(_check_int8(x, "tanh input"), p.table)


def logistic(x: np.ndarray, p: LogisticParams) -> np.ndarray:
    """int8 logistic (sigmoid), output quantized as (1/256, -128), byte-identical to TFLM."""
    _check_params(p, LogisticParams, "logistic")
    return _lookup(_check_int8(x, "logistic input"), p.table)


# --------------------------------------------------------------------------
# ADD
# --------------------------------------------------------------------------

_ADD_LEFT_SHIFT = 20


@dataclass(frozen=True)
class AddParams:
    """TFLM OpDataAdd for int8: both inputs rescaled to a common 2^-20-headroom scale."""

    input1_offset: int
    input1_multiplier: int
    input1_shift: int
    input2_offset: int
    input2_multiplier: int
    input2_shift: int
    output_offset: int
    output_multiplier: int
    output_shift: int
    left_shift: int = _ADD_LEFT_SHIFT


def _smaller_than_one_multiplier(real: float, what: str) -> tuple[int, int]:
    """QuantizeMultiplierSmallerThanOneExp, with TFLM's CHECKs turned into errors."""
    if what == "output" and real >= 1.0:
        raise EdgeconvError(
            "add: output scale is too small for TFLM: it must exceed "
            f"2 * max(input scales) / 2^20 (multiplier {real:.6g} >= 1)"
        )
    if not 0.0 < real < 1.0:
        raise EdgeconvError(f"add: {what} multiplier {real!r} must be in (0, 1) for TFLM")
    multiplier, shift = _quantize_multiplier(real)
    if shift > 0:
        raise EdgeconvError(f"add: {what} multiplier {real!r} rounds up to 1")
    return multiplier, shift


def prepare_add(
    a_scale: float, a_zp: int, b_scale: float, b_zp: int, out_scale: float, out_zp: int
) -> AddParams:
    """TFLM CalculateOpDataAdd: each input is scaled by s_i / (2 * max(s_a, s_b)) after a
    2^20 left shift, and the sum by 2 * max(s_a, s_b) / (2^20 * s_out).

    Raises if the output scale is so small (< 2 * max input scale / 2^20) that TFLM
    would abort in Prepare.
    """
    sa = _as_float32(a_scale, "add input a scale")
    sb = _as_float32(b_scale, "add input b scale")
    so = _as_float32(out_scale, "add output scale")
    za = _as_zero_point(a_zp, "add input a zero point")
    zb = _as_zero_point(b_zp, "add input b zero point")
    zo = _as_zero_point(out_zp, "add output zero point")
    twice_max_input_scale = 2.0 * max(sa, sb)
    m1, s1 = _smaller_than_one_multiplier(sa / twice_max_input_scale, "input a")
    m2, s2 = _smaller_than_one_multiplier(sb / twice_max_input_scale, "input b")
    mo, sho = _smaller_than_one_multiplier(
        twice_max_input_scale / ((1 << _ADD_LEFT_SHIFT) * so), "output"
    )
    return AddParams(
        input1_offset=-za,
        input1_multiplier=m1,
        input1_shift=s1,
        input2_offset=-zb,
        input2_multiplier=m2,
        input2_shift=s2,
        output_offset=zo,
        output_multiplier=mo,
        output_shift=sho,
    )


def add(
    a: np.ndarray, b: np.ndarray, p: AddParams, act_min: int = -128, act_max: int = 127
) -> np.ndarray:
    """int8 a + b with NumPy broadcasting, as reference_integer_ops::AddFunc per element.

    act_min/act_max are the fused-activation clamp bounds already in output units
    (TFLM's CalculateActivationRangeQuantized result).
    """
    _check_params(p, AddParams, "add")
    a = _check_int8(a, "add input a")
    b = _check_int8(b, "add input b")
    for name, v in (("act_min", act_min), ("act_max", act_max)):
        _as_zero_point(v, f"add {name}")
    if act_min > act_max:
        raise EdgeconvError(f"add: act_min {act_min} is greater than act_max {act_max}")
    try:
        a64, b64 = np.broadcast_arrays(a.astype(np.int64), b.astype(np.int64))
    except ValueError:
        raise EdgeconvError(f"add: shapes {a.shape} and {b.shape} do not broadcast") from None

    def scaled(v: np.ndarray, offset: int, multiplier: int, shift: int) -> np.ndarray:
        shifted = (v + offset) << p.left_shift
        return _rdbpot(_srdhm(shifted, multiplier), -shift)

    raw_sum = scaled(a64, p.input1_offset, p.input1_multiplier, p.input1_shift) + scaled(
        b64, p.input2_offset, p.input2_multiplier, p.input2_shift
    )
    raw_out = _rdbpot(_srdhm(raw_sum, p.output_multiplier), -p.output_shift) + p.output_offset
    return np.clip(raw_out, int(act_min), int(act_max)).astype(np.int8)
