"""Numba-compiled int8 kernels, byte-identical to ``reference``.

The public functions are thin wrappers: they validate with the same checks as
``reference`` (so users see an EdgeconvError, never a Numba TypingError), prepare
contiguous arrays of fixed dtypes (so each kernel compiles for one signature), and call an
``@njit`` inner function.

Two algebraic rewrites make the conv inner loop a plain int8 x int8 -> int32 dot product:
- the input zero point moves into the bias: sum w*(x - zp) = sum w*x - zp*sum(w);
- the input is padded with zp, so an out-of-image tap adds w*zp - w*zp = 0, which is
  TFLM's "skip the tap". With dilation_w == 1 the KW*Cin inputs one kernel row reads are
  then contiguous in the padded NHWC row and line up with w[oc, ky, :, :].
Both rewrites hold modulo 2^32, i.e. also when the C int32 accumulator would wrap. The
KH runs of one output pixel are copied into one KH*KW*Cin buffer before the dot products
(see ``_conv2d_kernel`` for why).

The element-wise ops (quantize, dequantize, argmax, pad) have no hot loop and are already
vectorised NumPy, so this backend re-exports the reference versions.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..errors import EdgeconvError
from .reference import (
    _conv_args,
    _ConvArgs,
    _fc_args,
    _int8_range,
    _pool_args,
    _requantize_args,
    argmax,
    dequantize,
    pad,
    quantize,
)

BACKEND_NAME = "numba"

__all__ = [
    "BACKEND_NAME",
    "argmax",
    "avg_pool2d",
    "conv2d",
    "depthwise_conv2d",
    "dequantize",
    "fully_connected",
    "max_pool2d",
    "pad",
    "quantize",
    "requantize",
]

# ----------------------------------------------------------------------------------------
# Scalar requantization (spec 3.4), compiled
# ----------------------------------------------------------------------------------------


@njit(cache=True)
def _wrap32(v):
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


@njit(cache=True)
def _requant_float(acc, scale, mode):
    """fp32 (float32 product, ties to even) or fp64 (double product, ties away from zero),
    saturated to int32 before rounding; as ``reference._requantize_float``."""
    if mode == 3:
        v = np.float64(np.float32(acc) * np.float32(scale))
        v = min(max(v, -2147483648.0), 2147483647.0)
        return np.int64(np.rint(v))
    v = min(max(np.float64(acc) * scale, -2147483648.0), 2147483647.0)
    a = abs(v)
    r = np.floor(a)
    if a - r >= 0.5:
        r += 1.0
    return np.int64(r) if v >= 0 else -np.int64(r)


@njit(cache=True)
def _requant_one(acc, mult, shift, scale, mode):
    """One int32 accumulator -> int32 result (both held in int64).

    Data-dependent conditions are computed as 0/1 integers rather than branches: on real
    accumulators they are unpredictable, and mispredicts cost more than the arithmetic.
    """
    if mode >= 3:
        return _requant_float(acc, scale, mode)
    a = np.int64(acc)
    q = np.int64(mult)
    s = np.int64(shift)
    if mode == 1:
        total = 31 - s
        return _wrap32((a * q + (np.int64(1) << (total - 1))) >> total)
    left = max(s, 0)
    right = max(-s, 0)
    a = _wrap32(a << left)
    # SRDHM: (ab + nudge) / 2^31 with C truncation equals floor((ab + 2^30) / 2^31); the only
    # result above INT32_MAX is INT32_MIN * INT32_MIN, which gemmlowp saturates.
    high = min((a * q + (np.int64(1) << 30)) >> 31, np.int64(2147483647))
    if mode == 2:  # double-up: rounding shift with ties toward +inf
        return (high + ((np.int64(1) << right) >> 1)) >> right
    # RoundingDivideByPOT
    mask = (np.int64(1) << right) - 1
    remainder = high & mask
    threshold = (mask >> 1) + np.int64(high < 0)
    return (high >> right) + np.int64(remainder > threshold)


@njit(cache=True)
def _finish(acc, mult, shift, scale, mode, out_zp, act_min, act_max):
    """Requantize, add the output zero point (int32 in C), clamp to the activation range.
    The float modes clamp without wrapping (XNNPACK clamps in float)."""
    v = _requant_one(acc, mult, shift, scale, mode) + out_zp
    if mode < 3:
        v = _wrap32(v)
    return min(max(v, np.int64(act_min)), np.int64(act_max))


@njit(cache=True)
def _requantize_flat(acc, mult, shift, scale, mode):
    n = acc.shape[0]
    period = mult.shape[0]
    out = np.empty(n, dtype=np.int32)
    for i in range(n):
        c = i % period
        out[i] = _requant_one(acc[i], mult[c], shift[c], scale[c], mode)
    return out


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
    flat = np.ascontiguousarray(acc).reshape(-1)
    return _requantize_flat(flat, mult_v, shift_v, scale_v, mode).reshape(acc.shape)


# ----------------------------------------------------------------------------------------
# Conv / depthwise / fully connected
# ----------------------------------------------------------------------------------------


def _padded_input(a: _ConvArgs, kh: int, kw: int) -> np.ndarray:
    """NHWC input padded with in_zp, cut to the rows/cols the outputs actually read.

    Pads larger than the kernel overhang would otherwise allocate rows no tap touches.
    """
    x = a.x
    n, h, w, c = x.shape
    top, left = a.pads[0], a.pads[1]
    (sh, sw), (dh, dw), (oh, ow) = a.stride, a.dilation, a.out_hw
    ph = (oh - 1) * sh + dh * (kh - 1) + 1
    pw = (ow - 1) * sw + dw * (kw - 1) + 1
    xp = np.full((n, ph, pw, c), a.in_zp, dtype=np.int8)
    rows = max(0, min(h, ph - top))
    cols = max(0, min(w, pw - left))
    xp[:, top : top + rows, left : left + cols, :] = x[:, :rows, :cols, :]
    return xp


def _folded_bias(bias: np.ndarray, in_zp: int, w_per_out: np.ndarray) -> np.ndarray:
    """bias[oc] - in_zp * sum(w[oc]) as the int32 the accumulator starts from (wrapping)."""
    sums = w_per_out.astype(np.int64).sum(axis=1)
    folded = bias.astype(np.int64) - np.int64(in_zp) * sums
    return (((folded + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)).astype(np.int32)


@njit(cache=True)
def _conv2d_kernel(
    xp, w, bias_eff, mult, shift, scale, sh, sw, dh, dw, oh, ow, out_zp, act_min, act_max, mode
):
    n, ph, pw, cin = xp.shape
    cout, kh, kw, _ = w.shape
    # Flat indices instead of per-pixel array views: a view costs a reference-count
    # update, which in this loop nest costs more than the arithmetic.
    xf = xp.reshape(-1)
    wf = w.reshape(-1)
    k = kh * kw * cin
    row_len = pw * cin
    # One kernel row is one contiguous run of kw*cin values when dilation_w == 1,
    # otherwise kw runs of cin values, dw*cin apart.
    if dw == 1:
        run, nruns = kw * cin, 1
    else:
        run, nruns = cin, kw
    # The runs of one output pixel are copied into ``patch`` (KH*KW*Cin contiguous int8,
    # the same [ky][kx][ic] order as w[oc]) so each output channel is ONE long dot product.
    # LLVM vectorises a long dot; the KW*Cin runs alone (5..30 values in LeNet) would
    # mostly fall into the scalar remainder loop (measured: 12x slower on LeNet conv2).
    patch = np.empty(k, dtype=np.int8)
    out = np.empty((n, oh, ow, cout), dtype=np.int8)
    of = out.reshape(-1)
    o = 0
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                base = ((b * ph + oy * sh) * pw + ox * sw) * cin
                p = 0
                for ky in range(kh):
                    for r in range(nruns):
                        start = base + ky * dh * row_len + r * dw * cin
                        for i in range(run):
                            patch[p + i] = xf[start + i]
                        p += run
                for oc in range(cout):
                    acc = np.int32(bias_eff[oc])
                    ws = oc * k
                    for i in range(k):
                        acc = np.int32(acc + np.int32(patch[i]) * np.int32(wf[ws + i]))
                    of[o] = _finish(
                        acc, mult[oc], shift[oc], scale[oc], mode, out_zp, act_min, act_max
                    )
                    o += 1
    return out


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
    """Int8 Conv2D, same contract as ``reference.conv2d``."""
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
    w_c = np.ascontiguousarray(a.w)
    cout, kh, kw, _ = w_c.shape
    xp = _padded_input(a, kh, kw)
    bias_eff = _folded_bias(a.bias, a.in_zp, w_c.reshape(cout, -1))
    return _conv2d_kernel(
        xp,
        w_c,
        bias_eff,
        a.mult,
        a.shift,
        a.scale,
        a.stride[0],
        a.stride[1],
        a.dilation[0],
        a.dilation[1],
        a.out_hw[0],
        a.out_hw[1],
        a.out_zp,
        a.act[0],
        a.act[1],
        a.mode,
    )


@njit(cache=True)
def _depthwise_kernel(
    xp,
    w,
    bias_eff,
    mult,
    shift,
    scale,
    sh,
    sw,
    dh,
    dw,
    oh,
    ow,
    depth_mult,
    out_zp,
    act_min,
    act_max,
    mode,
):
    n, ph, pw, cin = xp.shape
    _, kh, kw, cout = w.shape
    xf = xp.reshape(-1)
    wf = w.reshape(-1)
    out = np.empty((n, oh, ow, cout), dtype=np.int8)
    of = out.reshape(-1)
    acc = np.empty(cout, dtype=np.int32)
    o = 0
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for oc in range(cout):
                    acc[oc] = bias_eff[oc]
                for ky in range(kh):
                    for kx in range(kw):
                        xs = ((b * ph + oy * sh + ky * dh) * pw + ox * sw + kx * dw) * cin
                        ws = (ky * kw + kx) * cout
                        if depth_mult == 1:  # the common case gets a loop LLVM vectorises
                            for c in range(cout):
                                acc[c] += np.int32(xf[xs + c]) * np.int32(wf[ws + c])
                        else:
                            for ic in range(cin):
                                xv = np.int32(xf[xs + ic])
                                oc0 = ic * depth_mult
                                for m in range(depth_mult):
                                    acc[oc0 + m] += xv * np.int32(wf[ws + oc0 + m])
                for oc in range(cout):
                    of[o] = _finish(
                        acc[oc], mult[oc], shift[oc], scale[oc], mode, out_zp, act_min, act_max
                    )
                    o += 1
    return out


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
    """Int8 DepthwiseConv2D, same contract as ``reference.depthwise_conv2d``."""
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
    w_c = np.ascontiguousarray(a.w)
    _, kh, kw, cout = w_c.shape
    xp = _padded_input(a, kh, kw)
    bias_eff = _folded_bias(a.bias, a.in_zp, w_c.reshape(-1, cout).T)
    return _depthwise_kernel(
        xp,
        w_c,
        bias_eff,
        a.mult,
        a.shift,
        a.scale,
        a.stride[0],
        a.stride[1],
        a.dilation[0],
        a.dilation[1],
        a.out_hw[0],
        a.out_hw[1],
        a.depth_multiplier,
        a.out_zp,
        a.act[0],
        a.act[1],
        a.mode,
    )


@njit(cache=True)
def _fc_kernel(x, w, bias_eff, mult, shift, scale, out_zp, act_min, act_max, mode):
    n, k = x.shape
    cout = w.shape[0]
    out = np.empty((n, cout), dtype=np.int8)
    for b in range(n):
        xrow = x[b]
        for oc in range(cout):
            wrow = w[oc]
            acc = np.int32(bias_eff[oc])
            for i in range(k):
                acc = np.int32(acc + np.int32(xrow[i]) * np.int32(wrow[i]))
            out[b, oc] = _finish(
                acc, mult[oc], shift[oc], scale[oc], mode, out_zp, act_min, act_max
            )
    return out


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
    """Int8 FullyConnected, same contract as ``reference.fully_connected``."""
    a = _fc_args(x, w, bias, in_zp, out_zp, mult, shift, act_min, act_max, rounding, scale)
    w_c = np.ascontiguousarray(a.w)
    bias_eff = _folded_bias(a.bias, a.in_zp, w_c)
    return _fc_kernel(
        np.ascontiguousarray(a.x),
        w_c,
        bias_eff,
        a.mult,
        a.shift,
        a.scale,
        a.out_zp,
        a.act[0],
        a.act[1],
        a.mode,
    )


# ----------------------------------------------------------------------------------------
# Pooling: loops over the in-image taps only, as TFLM does
# ----------------------------------------------------------------------------------------


@njit(cache=True)
def _max_pool_kernel(x, kh, kw, sh, sw, top, left, oh, ow, act_min, act_max):
    n, h, w, c = x.shape
    xf = x.reshape(-1)
    out = np.empty((n, oh, ow, c), dtype=np.int8)
    of = out.reshape(-1)
    best = np.empty(c, dtype=np.int8)
    o = 0
    for b in range(n):
        for oy in range(oh):
            y0 = oy * sh - top
            ky0, ky1 = max(0, -y0), min(kh, h - y0)
            for ox in range(ow):
                x0 = ox * sw - left
                kx0, kx1 = max(0, -x0), min(kw, w - x0)
                for ch in range(c):
                    best[ch] = -128  # TFLM starts from the int8 minimum
                for ky in range(ky0, ky1):
                    for kx in range(kx0, kx1):
                        p = ((b * h + y0 + ky) * w + x0 + kx) * c
                        for ch in range(c):
                            # max(), not `if v > best`: a data-dependent branch mispredicts
                            # on real activations and was 3x slower.
                            best[ch] = max(best[ch], xf[p + ch])
                for ch in range(c):
                    of[o] = min(max(np.int64(best[ch]), act_min), act_max)
                    o += 1
    return out


def max_pool2d(
    x: np.ndarray,
    *,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    act_min: int = -128,
    act_max: int = 127,
) -> np.ndarray:
    """Int8 MaxPool, same contract as ``reference.max_pool2d``."""
    a = _pool_args(x, kernel, stride, pads, act_min, act_max)
    return _max_pool_kernel(
        np.ascontiguousarray(a.x),
        a.kernel[0],
        a.kernel[1],
        a.stride[0],
        a.stride[1],
        a.pads[0],
        a.pads[1],
        a.out_hw[0],
        a.out_hw[1],
        a.act[0],
        a.act[1],
    )


@njit(cache=True)
def _avg_pool_kernel(x, kh, kw, sh, sw, top, left, oh, ow, act_min, act_max, include_pad, zp):
    n, h, w, c = x.shape
    xf = x.reshape(-1)
    out = np.empty((n, oh, ow, c), dtype=np.int8)
    of = out.reshape(-1)
    acc = np.empty(c, dtype=np.int32)
    o = 0
    for b in range(n):
        for oy in range(oh):
            y0 = oy * sh - top
            ky0, ky1 = max(0, -y0), min(kh, h - y0)
            for ox in range(ow):
                x0 = ox * sw - left
                kx0, kx1 = max(0, -x0), min(kw, w - x0)
                count = max(0, ky1 - ky0) * max(0, kx1 - kx0)
                for ch in range(c):
                    acc[ch] = 0
                for ky in range(ky0, ky1):
                    for kx in range(kx0, kx1):
                        p = ((b * h + y0 + ky) * w + x0 + kx) * c
                        for ch in range(c):
                            acc[ch] += xf[p + ch]
                if include_pad:  # ONNX: padded taps hold zp (real 0) and count in n
                    for ch in range(c):
                        acc[ch] += (kh * kw - count) * zp
                    count = kh * kw
                half = count // 2
                for ch in range(c):
                    v = np.int64(acc[ch])
                    # C's truncating division, written on non-negative operands.
                    if v > 0:
                        r = (v + half) // count
                    else:
                        r = -((half - v) // count)
                    of[o] = min(max(r, act_min), act_max)
                    o += 1
    return out


def _empty_window_exists(h: int, kh: int, sh: int, top: int, oh: int) -> bool:
    for oy in range(oh):
        y0 = oy * sh - top
        if min(kh, h - y0) - max(0, -y0) <= 0:
            return True
    return False


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
    """Int8 AveragePool, same contract as ``reference.avg_pool2d``."""
    a = _pool_args(x, kernel, stride, pads, act_min, act_max)
    zp = _int8_range("zp", zp)
    (kh, kw), (sh, sw), (oh, ow) = a.kernel, a.stride, a.out_hw
    _, h, w, _ = a.x.shape
    if not count_include_pad and (
        _empty_window_exists(h, kh, sh, a.pads[0], oh)
        or _empty_window_exists(w, kw, sw, a.pads[1], ow)
    ):
        raise EdgeconvError(
            f"pads={a.pads} leave an avg-pool window with no input pixel (TFLM rejects this)"
        )
    return _avg_pool_kernel(
        np.ascontiguousarray(a.x),
        kh,
        kw,
        sh,
        sw,
        a.pads[0],
        a.pads[1],
        oh,
        ow,
        a.act[0],
        a.act[1],
        bool(count_include_pad),
        zp,
    )
