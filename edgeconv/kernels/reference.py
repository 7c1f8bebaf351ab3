"""Plain-NumPy int8 kernels: the test oracle and the fallback when Numba is missing.

Read this module side by side with the int8 spec (sections 3.3, 3.4, 3.7). The loops over
kernel taps are kept visible, like TFLM's reference kernels; only batch, output positions
and channels are vectorised, so a LeNet-sized image still runs in a few milliseconds.

All integer arithmetic happens in int64 and every place where the C code would hold an
int32 wraps explicitly (``_wrap_int32``). That keeps the result defined for any input and
equal to TFLM on two's-complement targets, and lets ``fast`` accumulate in real int32.

The argument checks (``_conv_args`` and friends) are shared with ``fast`` so both backends
reject exactly the same inputs with the same EdgeconvError.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import EdgeconvError
from .requant import (
    FLOAT_MODES,
    INT32_MAX,
    INT32_MIN,
    QUANTIZE_METHODS,
    SHIFT_MAX,
    SHIFT_MIN,
    rounding_code,
)

BACKEND_NAME = "numpy"

# ----------------------------------------------------------------------------------------
# Argument checks (shared with fast.py)
# ----------------------------------------------------------------------------------------


def _int(name: str, value: object) -> int:
    """Accept Python/NumPy integers only: a float or bool here is almost always a bug."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise EdgeconvError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _int8_range(name: str, value: object) -> int:
    v = _int(name, value)
    if not -128 <= v <= 127:
        raise EdgeconvError(f"{name}={v} is outside the int8 range [-128, 127]")
    return v


def _array(name: str, a: object, dtype: type, ndim: int) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise EdgeconvError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise EdgeconvError(f"{name} must have dtype {np.dtype(dtype).name}, got {a.dtype}")
    if a.ndim != ndim:
        raise EdgeconvError(f"{name} must be {ndim}-D, got shape {a.shape}")
    return a


def _pair(name: str, value: object) -> tuple[int, int]:
    """(h, w) from an int or a 2-sequence; every entry must be >= 1."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        value = (value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise EdgeconvError(f"{name} must be an int or a pair (h, w), got {value!r}")
    h, w = _int(name, value[0]), _int(name, value[1])
    if h < 1 or w < 1:
        raise EdgeconvError(f"{name}={value!r} must be >= 1")
    return h, w


def _pads(value: object) -> tuple[int, int, int, int]:
    if not isinstance(value, (tuple, list)) or len(value) != 4:
        raise EdgeconvError(f"pads must be (top, left, bottom, right), got {value!r}")
    pads = tuple(_int("pads", p) for p in value)
    if min(pads) < 0:
        raise EdgeconvError(f"pads={value!r} must be >= 0")
    return pads  # type: ignore[return-value]


def _act_range(act_min: object, act_max: object) -> tuple[int, int]:
    lo, hi = _int8_range("act_min", act_min), _int8_range("act_max", act_max)
    if lo > hi:
        raise EdgeconvError(f"act_min={lo} is larger than act_max={hi}")
    return lo, hi


def _int_vector(name: str, value: object, n: int, lo: int, hi: int) -> np.ndarray:
    """An integer per channel as int32[n]; a scalar or length-1 value is repeated."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise EdgeconvError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] not in (1, n)):
        raise EdgeconvError(f"{name} must have shape ({n},) (or be a scalar), got {arr.shape}")
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise EdgeconvError(f"{name} has values outside [{lo}, {hi}]")
    # A fresh writable copy: a read-only broadcast view would be a different Numba type.
    return np.array(np.broadcast_to(arr, (n,)), dtype=np.int32)


def _mult_shift(mult: object, shift: object, n: int) -> tuple[np.ndarray, np.ndarray]:
    return (
        _int_vector("mult", mult, n, INT32_MIN, INT32_MAX),
        _int_vector("shift", shift, n, SHIFT_MIN, SHIFT_MAX),
    )


def _bias(bias: object, n: int) -> np.ndarray:
    """bias as int32[n]; None means zeros (a conv exported without a bias)."""
    if bias is None:
        return np.zeros(n, dtype=np.int32)
    if not isinstance(bias, np.ndarray):
        raise EdgeconvError(f"bias must be a numpy array or None, got {type(bias).__name__}")
    if bias.shape != (n,):
        raise EdgeconvError(f"bias must have shape ({n},), got {bias.shape}")
    return _int_vector("bias", bias, n, INT32_MIN, INT32_MAX)


def _scale_vector(
    scale: object, n: int, rounding: object, mult: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """The real multipliers as float64[n] for the float rounding modes (fp32, fp64), which
    use them instead of mult/shift; without ``scale`` the value mult * 2^(shift - 31) that
    mult/shift stand for (exact in double). Zeros (unused) for the fixed-point modes."""
    if rounding not in FLOAT_MODES:
        return np.zeros(n, dtype=np.float64)
    if scale is None:
        return mult.astype(np.float64) * np.exp2(shift.astype(np.float64) - 31)
    arr = np.asarray(scale)
    if arr.dtype.kind not in "fiu":
        raise EdgeconvError(f"scale must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] not in (1, n)):
        raise EdgeconvError(f"scale must have shape ({n},) (or be a scalar), got {arr.shape}")
    arr = np.array(np.broadcast_to(arr, (n,)), dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise EdgeconvError("scale must be finite and >= 0")
    return arr


def _out_size(axis: str, size: int, pad_total: int, span: int, stride: int) -> int:
    """Output length along one axis; ``span`` is the dilated kernel extent."""
    out = (size + pad_total - span) // stride + 1
    if out < 1:
        raise EdgeconvError(
            f"{axis}: input {size} + pads {pad_total} is smaller than the kernel extent {span}"
        )
    return out


class _ConvArgs(NamedTuple):
    x: np.ndarray
    w: np.ndarray
    bias: np.ndarray  # int32[cout]
    in_zp: int
    out_zp: int
    mult: np.ndarray  # int32[cout]
    shift: np.ndarray  # int32[cout]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: tuple[int, int, int, int]
    out_hw: tuple[int, int]
    act: tuple[int, int]
    mode: int  # rounding_code
    depth_multiplier: int
    scale: np.ndarray  # float64[cout]: real multipliers, used by the float modes


def _conv_args(
    x,
    w,
    bias,
    in_zp,
    out_zp,
    mult,
    shift,
    stride,
    dilation,
    pads,
    act_min,
    act_max,
    rounding,
    depth_multiplier=None,
    scale=None,
) -> _ConvArgs:
    """Validate a conv2d (depth_multiplier None) or depthwise_conv2d call."""
    x = _array("x", x, np.int8, 4)
    w = _array("w", w, np.int8, 4)
    cin = x.shape[3]
    if depth_multiplier is None:
        m = 1
        if w.shape[3] != cin:
            raise EdgeconvError(f"w has {w.shape[3]} input channels (OHWI), x has {cin} (NHWC)")
        cout = w.shape[0]
    else:
        m = _int("depth_multiplier", depth_multiplier)
        if m < 1:
            raise EdgeconvError(f"depth_multiplier={m} must be >= 1")
        if w.shape[0] != 1:
            raise EdgeconvError(f"depthwise w must have shape [1, KH, KW, Cin*M], got {w.shape}")
        cout = cin * m
        if w.shape[3] != cout:
            raise EdgeconvError(
                f"depthwise w has {w.shape[3]} channels, expected Cin*M = {cin}*{m} = {cout}"
            )
    if min(x.shape[1:]) < 1 or min(w.shape) < 1:
        raise EdgeconvError(f"empty x {x.shape} or w {w.shape}")
    stride_hw = _pair("stride", stride)
    dil_hw = _pair("dilation", dilation)
    pad4 = _pads(pads)
    kh, kw = w.shape[1], w.shape[2]
    oh = _out_size("height", x.shape[1], pad4[0] + pad4[2], dil_hw[0] * (kh - 1) + 1, stride_hw[0])
    ow = _out_size("width", x.shape[2], pad4[1] + pad4[3], dil_hw[1] * (kw - 1) + 1, stride_hw[1])
    mult_v, shift_v = _mult_shift(mult, shift, cout)
    return _ConvArgs(
        x=x,
        w=w,
        bias=_bias(bias, cout),
        in_zp=_int8_range("in_zp", in_zp),
        out_zp=_int8_range("out_zp", out_zp),
        mult=mult_v,
        shift=shift_v,
        stride=stride_hw,
        dilation=dil_hw,
        pads=pad4,
        out_hw=(oh, ow),
        act=_act_range(act_min, act_max),
        mode=rounding_code(rounding),
        depth_multiplier=m,
        scale=_scale_vector(scale, cout, rounding, mult_v, shift_v),
    )


class _FcArgs(NamedTuple):
    x: np.ndarray
    w: np.ndarray
    bias: np.ndarray
    in_zp: int
    out_zp: int
    mult: np.ndarray
    shift: np.ndarray
    act: tuple[int, int]
    mode: int
    scale: np.ndarray


def _fc_args(
    x, w, bias, in_zp, out_zp, mult, shift, act_min, act_max, rounding, scale=None
) -> _FcArgs:
    x = _array("x", x, np.int8, 2)
    w = _array("w", w, np.int8, 2)
    if w.shape[1] != x.shape[1]:
        raise EdgeconvError(f"w has {w.shape[1]} inputs per row, x has {x.shape[1]} features")
    if w.shape[0] < 1 or w.shape[1] < 1:
        raise EdgeconvError(f"empty w {w.shape}")
    cout = w.shape[0]
    mult_v, shift_v = _mult_shift(mult, shift, cout)
    return _FcArgs(
        x=x,
        w=w,
        bias=_bias(bias, cout),
        in_zp=_int8_range("in_zp", in_zp),
        out_zp=_int8_range("out_zp", out_zp),
        mult=mult_v,
        shift=shift_v,
        act=_act_range(act_min, act_max),
        mode=rounding_code(rounding),
        scale=_scale_vector(scale, cout, rounding, mult_v, shift_v),
    )


class _PoolArgs(NamedTuple):
    x: np.ndarray
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int]
    out_hw: tuple[int, int]
    act: tuple[int, int]


def _pool_args(x, kernel, stride, pads, act_min, act_max) -> _PoolArgs:
    x = _array("x", x, np.int8, 4)
    if min(x.shape[1:]) < 1:
        raise EdgeconvError(f"empty x {x.shape}")
    k = _pair("kernel", kernel)
    s = _pair("stride", stride)
    p = _pads(pads)
    oh = _out_size("height", x.shape[1], p[0] + p[2], k[0], s[0])
    ow = _out_size("width", x.shape[2], p[1] + p[3], k[1], s[1])
    return _PoolArgs(x, k, s, p, (oh, ow), _act_range(act_min, act_max))


def _requantize_args(
    acc, mult, shift, rounding, scale=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]:
    """acc as int32; mult/shift (and scale) as [L] (L = acc's last axis, or 1)."""
    if not isinstance(acc, np.ndarray):
        acc = np.asarray(acc)
    if acc.dtype.kind not in "iu":
        raise EdgeconvError(f"acc must hold integers, got dtype {acc.dtype}")
    if acc.dtype != np.int32:
        if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
            raise EdgeconvError("acc has values outside int32")
        acc = acc.astype(np.int32)
    n = acc.shape[-1] if acc.ndim else 1
    m = np.asarray(mult)
    s = np.asarray(shift)
    sc = np.asarray(scale if scale is not None else 0)
    per = (m, s, sc)
    length = n if any(a.ndim == 1 and a.shape[0] == n for a in per) else 1
    mult_v, shift_v = _mult_shift(mult, shift, length)
    mode = rounding_code(rounding)
    return acc, mult_v, shift_v, mode, _scale_vector(scale, length, rounding, mult_v, shift_v)


def _float_scale(scale: object) -> np.float32:
    """TFLite stores scales as float32; every formula below uses that float32 value."""
    try:
        s = np.float32(scale)
    except (TypeError, ValueError):
        raise EdgeconvError(f"scale must be a number, got {scale!r}") from None
    if np.ndim(s) != 0 or not np.isfinite(s) or s <= 0:
        raise EdgeconvError(f"scale={scale!r} must be a finite number > 0")
    return s


# ----------------------------------------------------------------------------------------
# Requantization (spec 3.4), vectorised; requant.py holds the scalar oracles
# ----------------------------------------------------------------------------------------


def _wrap_int32(v: np.ndarray) -> np.ndarray:
    """int64 -> the value a C int32 would hold (two's-complement wrap-around)."""
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _round_half_away_f64(v: np.ndarray) -> np.ndarray:
    """std::round on doubles; the fraction ``a - floor(a)`` is exact, so no 0.49999... trap."""
    a = np.abs(v)
    r = np.floor(a)
    return np.copysign(r + (a - r >= 0.5), v)


def _requantize_float(acc: np.ndarray, scale: np.ndarray, mode: int) -> np.ndarray:
    """fp32 (XNNPACK: float32 product, ties to even) or fp64 (LiteRT reference FC: double
    product, ties away); saturated to int32 before rounding."""
    if mode == 3:
        v = (acc.astype(np.float32) * scale.astype(np.float32)).astype(np.float64)
        v = np.rint(np.clip(v, INT32_MIN, INT32_MAX))
    else:
        v = _round_half_away_f64(np.clip(acc.astype(np.float64) * scale, INT32_MIN, INT32_MAX))
    return v.astype(np.int64)


def _requantize64(
    acc: np.ndarray, mult: np.ndarray, shift: np.ndarray, mode: int, scale=None
) -> np.ndarray:
    """MultiplyByQuantizedMultiplier on int64 arrays holding int32 values (broadcasting);
    the float modes use ``scale`` instead of mult/shift."""
    if mode >= 3:
        return _requantize_float(acc, scale, mode)
    acc = acc.astype(np.int64)
    mult = mult.astype(np.int64)
    shift = shift.astype(np.int64)
    if mode == 1:  # (B) single rounding: one rounding step, ties toward +inf
        total_shift = 31 - shift
        return _wrap_int32((acc * mult + (np.int64(1) << (total_shift - 1))) >> total_shift)
    # (A) double rounding: SRDHM, then RoundingDivideByPOT
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    a = _wrap_int32(acc << left)  # int32 `x * (1 << left)` in C
    ab = a * mult
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    num = ab + nudge
    high = np.sign(num) * (np.abs(num) >> 31)  # C division truncates toward zero
    high = np.where((a == INT32_MIN) & (mult == INT32_MIN), INT32_MAX, high)
    if mode == 2:  # double-up: the rounding shift's ties go toward +inf
        return (high + ((np.int64(1) << right) >> 1)) >> right
    mask = (np.int64(1) << right) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (high < 0)
    return (high >> right) + (remainder > threshold)


def _output_stage(acc: np.ndarray, mult, shift, mode: int, out_zp: int, act, scale) -> np.ndarray:
    """int32 accumulator -> requantize -> + out_zp -> clamp -> int8 (TFLM's last four lines).
    The float modes clamp without wrapping, as XNNPACK clamps in float."""
    v = _requantize64(_wrap_int32(acc), mult, shift, mode, scale)
    v = v + out_zp if mode >= 3 else _wrap_int32(v + out_zp)
    return np.clip(v, act[0], act[1]).astype(np.int8)


def requantize(
    acc: np.ndarray,
    mult: np.ndarray | int,
    shift: np.ndarray | int,
    rounding: str = "double",
    scale: np.ndarray | float | None = None,
) -> np.ndarray:
    """Requantize int32 accumulators; mult/shift (scale for fp32/fp64) broadcast along the
    last axis."""
    acc, mult_v, shift_v, mode, scale_v = _requantize_args(acc, mult, shift, rounding, scale)
    out = _requantize64(acc, mult_v, shift_v, mode, scale_v)
    return out.astype(np.int32).reshape(acc.shape)


# ----------------------------------------------------------------------------------------
# Convolutions and fully connected (spec 3.3)
# ----------------------------------------------------------------------------------------


def _taps(a: _ConvArgs, xs: np.ndarray):
    """Yield (ky, kx, view): xs at the positions tap (ky, kx) reads for every output pixel.

    ``xs`` is the zero-point-corrected input padded with zeros, so an out-of-image tap adds
    0 to the accumulator: exactly TFLM's "skip taps outside the image".
    """
    (sh, sw), (dh, dw), (oh, ow) = a.stride, a.dilation, a.out_hw
    for ky in range(a.w.shape[1]):
        for kx in range(a.w.shape[2]):
            y0, x0 = ky * dh, kx * dw
            yield ky, kx, xs[:, y0 : y0 + sh * (oh - 1) + 1 : sh, x0 : x0 + sw * (ow - 1) + 1 : sw]


def _shifted_padded_input(a: _ConvArgs) -> np.ndarray:
    top, left, bottom, right = a.pads
    xs = a.x.astype(np.int64) - a.in_zp  # x + input_offset
    return np.pad(xs, ((0, 0), (top, bottom), (left, right), (0, 0)))


def conv2d(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    *,
    in_zp: int,
    out_zp: int,
    mult: np.ndarray,
    shift: np.ndarray,
    stride: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    act_min: int = -128,
    act_max: int = 127,
    rounding: str = "double",
    scale: np.ndarray | None = None,
) -> np.ndarray:
    """TFLM reference int8 Conv2D (per-channel), x NHWC and w OHWI. ``scale`` (the real
    multipliers) is used instead of mult/shift by the float rounding modes."""
    a = _conv_args(
        x,
        w,
        bias,
        in_zp,
        out_zp,
        mult,
        shift,
        stride,
        dilation,
        pads,
        act_min,
        act_max,
        rounding,
        scale=scale,
    )
    xs = _shifted_padded_input(a)
    n, (oh, ow), cout = a.x.shape[0], a.out_hw, a.w.shape[0]
    acc = np.zeros((n, oh, ow, cout), dtype=np.int64)
    w64 = a.w.astype(np.int64)
    for ky, kx, patch in _taps(a, xs):
        acc += patch @ w64[:, ky, kx, :].T  # [N,OH,OW,Cin] @ [Cin,Cout]
    acc += a.bias
    return _output_stage(acc, a.mult, a.shift, a.mode, a.out_zp, a.act, a.scale)


def depthwise_conv2d(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    *,
    in_zp: int,
    out_zp: int,
    mult: np.ndarray,
    shift: np.ndarray,
    stride: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    depth_multiplier: int = 1,
    act_min: int = -128,
    act_max: int = 127,
    rounding: str = "double",
    scale: np.ndarray | None = None,
) -> np.ndarray:
    """TFLM reference int8 DepthwiseConv2D; w is [1, KH, KW, Cin*M], oc = ic*M + m."""
    a = _conv_args(
        x,
        w,
        bias,
        in_zp,
        out_zp,
        mult,
        shift,
        stride,
        dilation,
        pads,
        act_min,
        act_max,
        rounding,
        depth_multiplier,
        scale,
    )
    # Repeat each input channel M times so output channel oc reads input channel oc // M.
    xs = np.repeat(_shifted_padded_input(a), a.depth_multiplier, axis=3)
    n, (oh, ow), cout = a.x.shape[0], a.out_hw, a.w.shape[3]
    acc = np.zeros((n, oh, ow, cout), dtype=np.int64)
    w64 = a.w.astype(np.int64)
    for ky, kx, patch in _taps(a, xs):
        acc += patch * w64[0, ky, kx, :]
    acc += a.bias
    return _output_stage(acc, a.mult, a.shift, a.mode, a.out_zp, a.act, a.scale)


def fully_connected(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    *,
    in_zp: int,
    out_zp: int,
    mult: np.ndarray,
    shift: np.ndarray,
    act_min: int = -128,
    act_max: int = 127,
    rounding: str = "double",
    scale: np.ndarray | None = None,
) -> np.ndarray:
    """TFLM int8 FullyConnected with the integer multiplier (rounding="fp64" gives LiteRT's
    reference float path, rounding="fp32" XNNPACK's)."""
    a = _fc_args(x, w, bias, in_zp, out_zp, mult, shift, act_min, act_max, rounding, scale)
    acc = (a.x.astype(np.int64) - a.in_zp) @ a.w.astype(np.int64).T + a.bias
    return _output_stage(acc, a.mult, a.shift, a.mode, a.out_zp, a.act, a.scale)


# ----------------------------------------------------------------------------------------
# Pooling (spec 3.7, TFLM integer_ops/pooling.h)
# ----------------------------------------------------------------------------------------


def _pool_windows(a: _PoolArgs, xp: np.ndarray):
    """Yield, for every kernel tap, the view of the padded ``xp`` it reads per output pixel."""
    (kh, kw), (sh, sw), (oh, ow) = a.kernel, a.stride, a.out_hw
    for ky in range(kh):
        for kx in range(kw):
            yield xp[:, ky : ky + sh * (oh - 1) + 1 : sh, kx : kx + sw * (ow - 1) + 1 : sw]


def _pad_nhwc(x: np.ndarray, pads, value) -> np.ndarray:
    top, left, bottom, right = pads
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def max_pool2d(
    x: np.ndarray,
    *,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    act_min: int = -128,
    act_max: int = 127,
) -> np.ndarray:
    """Max of the in-image taps; TFLM starts from -128, so an all-padding window gives -128."""
    a = _pool_args(x, kernel, stride, pads, act_min, act_max)
    xp = _pad_nhwc(a.x.astype(np.int16), a.pads, -32768)  # below any int8: never the max
    best = np.full((a.x.shape[0], *a.out_hw, a.x.shape[3]), -128, dtype=np.int16)
    for view in _pool_windows(a, xp):
        best = np.maximum(best, view)
    return np.clip(best, a.act[0], a.act[1]).astype(np.int8)


def avg_pool2d(
    x: np.ndarray,
    *,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    act_min: int = -128,
    act_max: int = 127,
    count_include_pad: bool = False,
    zp: int = 0,
) -> np.ndarray:
    """TFLM AveragePool (padded taps excluded), or ONNX's count_include_pad semantic.

    With count_include_pad a padded tap is the value ``zp`` (real 0) and n = KH*KW.
    """
    a = _pool_args(x, kernel, stride, pads, act_min, act_max)
    zp = _int8_range("zp", zp)
    xp = _pad_nhwc(a.x.astype(np.int64), a.pads, 0)
    inside = _pad_nhwc(np.ones((1, *a.x.shape[1:3], 1), dtype=np.int64), a.pads, 0)
    total = np.zeros((a.x.shape[0], *a.out_hw, a.x.shape[3]), dtype=np.int64)
    count = np.zeros((1, *a.out_hw, 1), dtype=np.int64)
    for view, in_view in zip(_pool_windows(a, xp), _pool_windows(a, inside), strict=True):
        total += view
        count += in_view
    if count_include_pad:
        window = a.kernel[0] * a.kernel[1]
        total = total + (window - count) * zp
        count = np.full_like(count, window)
    elif count.min() == 0:
        raise EdgeconvError(
            f"pads={a.pads} leave an avg-pool window with no input pixel (TFLM rejects this)"
        )
    half = count // 2
    # C: acc > 0 ? (acc + n/2) / n : (acc - n/2) / n, with '/' truncating toward zero.
    rounded = np.where(total > 0, (total + half) // count, -((half - total) // count))
    return np.clip(rounded, a.act[0], a.act[1]).astype(np.int8)


# ----------------------------------------------------------------------------------------
# Element-wise helpers (vectorised NumPy; fast.py re-exports these)
# ----------------------------------------------------------------------------------------


def _round_half_away_f32(v: np.ndarray) -> np.ndarray:
    """TfLiteRound on float32. ``trunc(v + 0.5)`` is wrong for 0.49999997, so split off the
    integer part first (the fraction ``a - floor(a)`` is exact in float)."""
    a = np.abs(v)
    r = np.floor(a)
    r = r + (a - r >= np.float32(0.5)).astype(np.float32)
    return np.copysign(r, v)


def quantize(x: np.ndarray, scale: float, zp: int, method: str = "divide") -> np.ndarray:
    """TFLM Quantize: clamp(round_half_away(x / float32(scale)) + zp), all in float32.

    method="reciprocal" is TFLite's optimized and XNNPACK quantize (measured):
    round_half_to_even(x * (1 / float32(scale))), the reciprocal also in float32."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise EdgeconvError(f"x must hold real numbers, got dtype {arr.dtype}")
    if method not in QUANTIZE_METHODS:
        raise EdgeconvError(f"method={method!r}: use one of {', '.join(QUANTIZE_METHODS)}")
    s = _float_scale(scale)
    zp = _int8_range("zp", zp)
    if method == "divide":
        v = arr.astype(np.float32) / s
    else:
        v = arr.astype(np.float32) * (np.float32(1.0) / s)
    if np.isnan(v).any():
        raise EdgeconvError("x contains NaN")
    # Saturate before rounding and the int conversion (C leaves out-of-range casts
    # undefined); anything beyond +-512 clamps to the same int8 value anyway.
    v = np.clip(v, -512, 512)
    r = (_round_half_away_f32(v) if method == "divide" else np.rint(v)).astype(np.int32)
    return np.clip(r + zp, -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, scale: float, zp: int) -> np.ndarray:
    """(q - zp) * scale in float32; equal to TFLite's double-then-cast, since the product of
    a 9-bit integer and a float32 is exact in double."""
    if not isinstance(q, np.ndarray) or q.dtype != np.int8:
        raise EdgeconvError(f"q must be an int8 numpy array, got {getattr(q, 'dtype', type(q))}")
    s = _float_scale(scale)
    zp = _int8_range("zp", zp)
    return (q.astype(np.int32) - zp).astype(np.float32) * s


def argmax(x: np.ndarray) -> np.ndarray:
    """Class index per row; on int8 logits this equals argmax of the dequantized values
    (scale > 0), so classification can skip softmax. Ties go to the first index."""
    if not isinstance(x, np.ndarray) or x.ndim != 2:
        raise EdgeconvError(f"x must be a 2-D numpy array, got {getattr(x, 'shape', type(x))}")
    if x.shape[1] == 0:
        raise EdgeconvError("x has no classes (last axis is empty)")
    return np.argmax(x, axis=-1).astype(np.int64)


def pad(x: np.ndarray, pads: tuple[int, int, int, int], value: int) -> np.ndarray:
    """Constant NHWC padding; an int8 pad op pads with the zero point (real 0)."""
    x = _array("x", x, np.int8, 4)
    return _pad_nhwc(x, _pads(pads), _int8_range("value", value)).astype(np.int8)
