"""Kernel tests: fast == reference byte for byte, both == the spec's scalar arithmetic.

The scalar oracles in ``requant`` are themselves checked against exact rational math, the
reference conv against a float conv of the dequantized tensors and against a hand-computed
example, so a bug shared by both backends still has to get past an independent check.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeconv.errors import EdgeconvError
from edgeconv.kernels import _BACKEND_KERNELS, requant
from edgeconv.kernels import reference as ref

try:
    from edgeconv.kernels import fast
except ImportError:  # a machine without numba still runs the reference/oracle tests
    fast = None

needs_numba = pytest.mark.skipif(fast is None, reason="numba is not installed")
BACKENDS = [ref] + ([fast] if fast is not None else [])
INT32_MIN, INT32_MAX = requant.INT32_MIN, requant.INT32_MAX

SETTINGS = settings(
    deadline=None,
    max_examples=120,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _rng(draw) -> np.random.Generator:
    """Arrays come from a NumPy RNG seeded by hypothesis: cheap to draw, still shrinkable."""
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


def _int8(rng, shape) -> np.ndarray:
    return rng.integers(-128, 128, size=shape, dtype=np.int8)


def _requant_params(draw, rng, n: int, rounding: str):
    """Per-channel (mult, shift): usually from real multipliers, sometimes any legal int32."""
    if draw(st.integers(0, 4)) == 0:
        mult = rng.integers(INT32_MIN, INT32_MAX, size=n, endpoint=True).astype(np.int32)
        shift = rng.integers(requant.SHIFT_MIN, requant.SHIFT_MAX, size=n, endpoint=True)
        return mult, shift.astype(np.int32)
    reals = np.exp(rng.uniform(np.log(1e-4), np.log(2.0), size=n))
    return requant.quantize_multipliers(reals, rounding)


def _bias(draw, rng, n: int):
    kind = draw(st.sampled_from(["none", "small", "large", "int32"]))
    if kind == "none":
        return None
    hi = {"small": 2**10, "large": 2**20, "int32": 2**31}[kind]
    return rng.integers(-hi, hi, size=n).astype(np.int32)


def _act(draw):
    lo = draw(st.integers(-128, 127))
    hi = draw(st.integers(lo, 127))
    return lo, hi


def _pads_for(draw, size: int, span: int) -> tuple[int, int]:
    """(before, after) pads up to 6 each (can exceed the kernel overhang), output >= 1."""
    before = draw(st.integers(0, 6))
    after = draw(st.integers(0, 6))
    deficit = span - (size + before + after)
    if deficit > 0:
        after += deficit
    return before, after


@st.composite
def conv_cases(draw, depthwise: bool = False):
    rng = _rng(draw)
    n = draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    cin = draw(st.integers(1, 8))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    top, bottom = _pads_for(draw, h, dh * (kh - 1) + 1)
    left, right = _pads_for(draw, w, dw * (kw - 1) + 1)
    rounding = draw(st.sampled_from(requant.ROUNDING_MODES))
    kwargs = {}
    if depthwise:
        m = draw(st.integers(1, 3))
        cout = cin * m
        wt = _int8(rng, (1, kh, kw, cout))
        kwargs["depth_multiplier"] = m
    else:
        cout = draw(st.integers(1, 8))
        wt = _int8(rng, (cout, kh, kw, cin))
    mult, shift = _requant_params(draw, rng, cout, rounding)
    act_min, act_max = _act(draw)
    x = _int8(rng, (n, h, w, cin))
    args = (x, wt, _bias(draw, rng, cout))
    kwargs.update(
        in_zp=draw(st.integers(-128, 127)),
        out_zp=draw(st.integers(-128, 127)),
        mult=mult,
        shift=shift,
        stride=(sh, sw),
        dilation=(dh, dw),
        pads=(top, left, bottom, right),
        act_min=act_min,
        act_max=act_max,
        rounding=rounding,
    )
    return args, kwargs


@st.composite
def fc_cases(draw):
    rng = _rng(draw)
    n, k, cout = draw(st.integers(1, 4)), draw(st.integers(1, 70)), draw(st.integers(1, 12))
    rounding = draw(st.sampled_from(requant.ROUNDING_MODES))
    mult, shift = _requant_params(draw, rng, cout, rounding)
    if draw(st.booleans()):  # per-tensor layer passes length-1 arrays
        mult, shift = mult[:1], shift[:1]
    act_min, act_max = _act(draw)
    args = (_int8(rng, (n, k)), _int8(rng, (cout, k)), _bias(draw, rng, cout))
    kwargs = dict(
        in_zp=draw(st.integers(-128, 127)),
        out_zp=draw(st.integers(-128, 127)),
        mult=mult,
        shift=shift,
        act_min=act_min,
        act_max=act_max,
        rounding=rounding,
    )
    return args, kwargs


@st.composite
def pool_cases(draw):
    rng = _rng(draw)
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 8))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    top, bottom = _pads_for(draw, h, kh)
    left, right = _pads_for(draw, w, kw)
    act_min, act_max = _act(draw)
    kwargs = dict(
        kernel=(kh, kw),
        stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        pads=(top, left, bottom, right),
        act_min=act_min,
        act_max=act_max,
    )
    return _int8(rng, (n, h, w, c)), kwargs


def _same_result(fast_fn, ref_fn, *args, **kwargs) -> np.ndarray | None:
    """Both backends return identical int8 arrays, or both raise EdgeconvError."""
    try:
        expected = ref_fn(*args, **kwargs)
    except EdgeconvError:
        with pytest.raises(EdgeconvError):
            fast_fn(*args, **kwargs)
        return None
    got = fast_fn(*args, **kwargs)
    assert got.dtype == expected.dtype == np.int8
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    return expected


# ----------------------------------------------------------------------------------------
# Backend module contract
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", BACKENDS, ids=lambda m: m.__name__)
def test_backend_defines_every_kernel(module):
    short = module.__name__.rsplit(".", 1)[1]
    assert module.BACKEND_NAME == {"reference": "numpy", "fast": "numba"}[short]
    for name in _BACKEND_KERNELS:
        assert callable(getattr(module, name)), name


# ----------------------------------------------------------------------------------------
# fast == reference
# ----------------------------------------------------------------------------------------


@needs_numba
@SETTINGS
@given(conv_cases())
def test_conv2d_fast_matches_reference(case):
    args, kwargs = case
    out = _same_result(fast.conv2d, ref.conv2d, *args, **kwargs)
    n, h, w, _ = args[0].shape
    top, left, bottom, right = kwargs["pads"]
    (sh, sw), (dh, dw) = kwargs["stride"], kwargs["dilation"]
    kh, kw = args[1].shape[1:3]
    assert out.shape == (
        n,
        (h + top + bottom - dh * (kh - 1) - 1) // sh + 1,
        (w + left + right - dw * (kw - 1) - 1) // sw + 1,
        args[1].shape[0],
    )


@needs_numba
@SETTINGS
@given(conv_cases(depthwise=True))
def test_depthwise_fast_matches_reference(case):
    args, kwargs = case
    _same_result(fast.depthwise_conv2d, ref.depthwise_conv2d, *args, **kwargs)


@needs_numba
@SETTINGS
@given(fc_cases())
def test_fully_connected_fast_matches_reference(case):
    args, kwargs = case
    _same_result(fast.fully_connected, ref.fully_connected, *args, **kwargs)


@needs_numba
@SETTINGS
@given(pool_cases())
def test_max_pool_fast_matches_reference(case):
    x, kwargs = case
    _same_result(fast.max_pool2d, ref.max_pool2d, x, **kwargs)


@needs_numba
@SETTINGS
@given(pool_cases(), st.booleans(), st.integers(-128, 127))
def test_avg_pool_fast_matches_reference(case, include_pad, zp):
    x, kwargs = case
    _same_result(fast.avg_pool2d, ref.avg_pool2d, x, count_include_pad=include_pad, zp=zp, **kwargs)


@needs_numba
def test_non_contiguous_inputs():
    rng = np.random.default_rng(1)
    x = _int8(rng, (2, 9, 10, 6))[:, ::2, 1:, ::2]  # strided view, 3 channels
    w = np.asfortranarray(_int8(rng, (4, 3, 3, 3)))
    mult, shift = requant.quantize_multipliers(np.full(4, 0.01))
    kw = dict(in_zp=3, out_zp=-2, mult=mult, shift=shift, pads=(1, 1, 1, 1))
    _same_result(fast.conv2d, ref.conv2d, x, w, None, **kw)
    _same_result(fast.max_pool2d, ref.max_pool2d, x, kernel=2, stride=1)
    xf = _int8(rng, (5, 8)).T  # [8, 5] view with transposed strides
    wf = _int8(rng, (3, 5))
    m3, s3 = requant.quantize_multipliers(np.full(3, 0.02))
    _same_result(
        fast.fully_connected,
        ref.fully_connected,
        xf,
        wf,
        None,
        in_zp=0,
        out_zp=0,
        mult=m3,
        shift=s3,
    )


@needs_numba
def test_empty_batch():
    x = np.zeros((0, 5, 5, 2), np.int8)
    w = np.ones((3, 3, 3, 2), np.int8)
    kw = dict(in_zp=0, out_zp=0, mult=[1 << 30], shift=[0])
    assert _same_result(fast.conv2d, ref.conv2d, x, w, None, **kw).shape == (0, 3, 3, 3)


# ----------------------------------------------------------------------------------------
# requantize == scalar oracles, and the oracles == exact math
# ----------------------------------------------------------------------------------------

ACC_EXTREMES = [INT32_MIN, INT32_MIN + 1, -(2**30), -1, 0, 1, 2**30, INT32_MAX - 1, INT32_MAX]
MULT_EXTREMES = [INT32_MIN, -1, 0, 1, 2**30, 2**30 + 1, INT32_MAX]

_ORACLE = {
    "double": requant.requantize_scalar_double,
    "single": requant.requantize_scalar_single,
    "double-up": requant.requantize_scalar_double_up,
    # the float modes, given only mult/shift, use the real value mult * 2^(shift - 31)
    "fp32": lambda a, m, s: requant.requantize_scalar_fp32(a, m * 2.0 ** (s - 31)),
    "fp64": lambda a, m, s: requant.requantize_scalar_fp64(a, m * 2.0 ** (s - 31)),
}


def _oracle_array(acc, mult, shift, rounding):
    f = _ORACLE[rounding]
    return np.array([f(int(a), int(m), int(s)) for a, m, s in zip(acc, mult, shift, strict=True)])


@pytest.mark.parametrize("module", BACKENDS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("rounding", requant.ROUNDING_MODES)
@settings(deadline=None, max_examples=100)
@given(seed=st.integers(0, 2**32 - 1), real_mults=st.booleans())
def test_requantize_matches_oracle(module, rounding, seed, real_mults):
    rng = np.random.default_rng(seed)
    n = 64
    acc = rng.integers(INT32_MIN, INT32_MAX, size=n, endpoint=True)
    acc[: len(ACC_EXTREMES)] = ACC_EXTREMES
    acc[len(ACC_EXTREMES) : 20] >>= rng.integers(8, 31, size=20 - len(ACC_EXTREMES))
    if real_mults:
        reals = np.exp(rng.uniform(np.log(1e-9), np.log(2.0**29), size=n))
        mult, shift = requant.quantize_multipliers(reals, rounding)
    else:
        mult = rng.integers(INT32_MIN, INT32_MAX, size=n, endpoint=True)
        mult[rng.integers(0, n, size=8)] = rng.choice(MULT_EXTREMES, size=8)
        mult[0] = INT32_MIN  # meets acc[0] = INT32_MIN: the SRDHM saturation case
        shift = rng.integers(requant.SHIFT_MIN, requant.SHIFT_MAX, size=n, endpoint=True)
    acc, mult, shift = acc.astype(np.int32), mult.astype(np.int32), shift.astype(np.int32)
    # acc is [n] and mult/shift are [n]: one parameter per "channel" of the last axis.
    got = module.requantize(acc, mult, shift, rounding)
    assert got.dtype == np.int32 and got.shape == acc.shape
    np.testing.assert_array_equal(got, _oracle_array(acc, mult, shift, rounding))


@pytest.mark.parametrize("module", BACKENDS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("rounding", requant.ROUNDING_MODES)
def test_requantize_sweep(module, rounding):
    acc = np.arange(-3000, 3001, dtype=np.int32)
    for mult, shift in [
        (1 << 30, -1),
        (1 << 30, 0),
        (1 << 30, -5),
        (1518500250, -3),
        (2**31 - 1, -31),
        (1 << 30, 3),
        (1932735283, -12),
    ]:
        got = module.requantize(acc, mult, shift, rounding)
        want = [_ORACLE[rounding](int(a), mult, shift) for a in acc]
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("module", BACKENDS, ids=lambda m: m.__name__)
def test_requantize_broadcasts_last_axis(module):
    rng = np.random.default_rng(7)
    acc = rng.integers(-(2**20), 2**20, size=(2, 3, 4)).astype(np.int32)
    mult = np.array([1 << 30, 1500000000, 1200000000, 2**31 - 1], np.int32)
    shift = np.array([-1, -4, 0, -9], np.int32)
    got = module.requantize(acc, mult, shift)
    for idx in np.ndindex(acc.shape):
        c = idx[-1]
        assert got[idx] == requant.requantize_scalar_double(
            int(acc[idx]), int(mult[c]), int(shift[c])
        )
    scalar = module.requantize(acc, 1 << 30, -2, "single")
    assert scalar.shape == acc.shape
    assert module.requantize(np.int32(5), 1 << 30, -1).shape == ()


def test_ruy_example_double_vs_single():
    # spec 3.4: x=1, q=2^30, shift=-1 is exactly 0.25; double rounding gives 1, single 0.
    assert requant.requantize_scalar_double(1, 1 << 30, -1) == 1
    assert requant.requantize_scalar_single(1, 1 << 30, -1) == 0
    for module in BACKENDS:
        assert module.requantize(np.array([1], np.int32), 1 << 30, -1, "double")[0] == 1
        assert module.requantize(np.array([1], np.int32), 1 << 30, -1, "single")[0] == 0


def test_srdhm_saturates_only_at_int32_min_squared():
    assert requant.saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN) == INT32_MAX
    assert requant.saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MAX) == INT32_MIN + 1
    assert requant.requantize_scalar_double(INT32_MIN, INT32_MIN, 0) == INT32_MAX
    for module in BACKENDS:
        acc = np.array([INT32_MIN, INT32_MIN, INT32_MIN, INT32_MAX], np.int32)
        mult = np.array([INT32_MIN, INT32_MIN, INT32_MAX, INT32_MIN], np.int32)
        shift = np.array([0, -3, 0, 0], np.int32)
        got = module.requantize(acc, mult, shift, "double")
        assert got.tolist() == [INT32_MAX, 1 << 28, -(2**31 - 1), -(2**31 - 1)]


@settings(deadline=None, max_examples=150)
@given(
    acc=st.integers(INT32_MIN, INT32_MAX),
    mult=st.integers(0, INT32_MAX),
    shift=st.integers(requant.SHIFT_MIN, 0),
)
def test_oracles_against_exact_arithmetic(acc, mult, shift):
    """Without left-shift overflow the oracles are rounding rules on the exact product."""
    exact = Fraction(acc * mult, 2 ** (31 - shift))
    single = requant.requantize_scalar_single(acc, mult, shift)
    assert single == math.floor(exact + Fraction(1, 2))  # ties toward +inf, one rounding
    double = requant.requantize_scalar_double(acc, mult, shift)
    # Two roundings: SRDHM to 2^-31 steps (ties up), then ties away from zero.
    high = math.floor(Fraction(acc * mult, 2**31) + Fraction(1, 2))
    quotient = Fraction(high, 2**-shift)
    away = math.floor(abs(quotient) + Fraction(1, 2))
    assert double == (away if quotient >= 0 else -away)
    assert abs(double - exact) <= 1


# ----------------------------------------------------------------------------------------
# quantize_multiplier
# ----------------------------------------------------------------------------------------


def test_quantize_multiplier_edge_cases():
    qm = requant.quantize_multiplier
    assert qm(0.0) == (0, 0)
    assert qm(0.5) == (1 << 30, 0)
    assert qm(1.0) == (1 << 30, 1)
    assert qm(0.25) == (1 << 30, -1)
    assert qm(3.0) == (1610612736, 2)  # > 1: 0.75 * 2^2
    # Tiny: 2^-32 still representable with shift -31, 2^-33 and below flush to (0, 0).
    assert qm(2.0**-32) == (1 << 30, -31)
    assert qm(2.0**-33) == (0, 0)
    assert qm(1e-12) == (0, 0)
    # q * 2^31 rounds up to 2^31: halve and bump the shift.
    assert qm(1 - 2.0**-40) == (1 << 30, 1)
    assert qm((2**31 - 0.5) / 2**31) == (1 << 30, 1)  # a tie, rounded away from zero
    assert qm((2**31 - 0.75) / 2**31) == (2**31 - 1, 0)
    # std::round ties go away from zero (Python's round() would give 2^30 here).
    assert qm((2**30 + 0.5) / 2**31) == (2**30 + 1, 0)
    # Single-rounding builds saturate shifts above 30.
    assert qm(2.0**31) == (1 << 30, 32)
    assert qm(2.0**31, "single") == (2**31 - 1, 30)
    assert qm(2.0**29, "single") == (1 << 30, 30)
    assert qm(-0.5) == (-(1 << 30), 0)
    with pytest.raises(EdgeconvError):
        qm(float("nan"))


@settings(deadline=None, max_examples=150)
@given(st.floats(1e-9, 2.0**29))
def test_quantize_multiplier_is_close(real):
    mult, shift = requant.quantize_multiplier(real)
    assert 2**30 <= mult < 2**31
    # Rounding q to 31 bits: |error| <= half a unit of 2^(shift-31).
    represented = Fraction(mult) * Fraction(2) ** (shift - 31)
    assert abs(represented - Fraction(real)) <= Fraction(2) ** (shift - 32)


def test_quantize_multipliers_vector():
    reals = np.array([0.5, 0.0, 3.0, 2.0**-40])
    mult, shift = requant.quantize_multipliers(reals)
    assert mult.dtype == shift.dtype == np.int32
    assert mult.tolist() == [1 << 30, 0, 1610612736, 0]
    assert shift.tolist() == [0, 0, 2, 0]


def test_rounding_code():
    assert requant.rounding_code("double") == 0
    assert requant.rounding_code("single") == 1
    with pytest.raises(EdgeconvError, match="'double', 'single'"):
        requant.rounding_code("nearest")


# ----------------------------------------------------------------------------------------
# Hand-computed examples
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", BACKENDS, ids=lambda m: m.__name__)
def test_conv2d_by_hand(module):
    # x - in_zp = [[0,1,2],[3,4,5],[6,7,8]]; w = [[1,-1],[2,0]]; pads top=1,left=1.
    # out[oy,ox] = x'[oy-1,ox-1] - x'[oy-1,ox] + 2 x'[oy,ox-1] (taps outside skipped):
    # acc = [[0,0,2],[0,5,7],[-3,11,13]]; + bias 1 = [[1,1,3],[1,6,8],[-2,12,14]].
    x = np.arange(1, 10, dtype=np.int8).reshape(1, 3, 3, 1)
    w = np.array([1, -1, 2, 0], np.int8).reshape(1, 2, 2, 1)
    bias = np.array([1], np.int32)
    mult, shift = requant.quantize_multiplier(0.25)  # (2^30, -1)
    kw = dict(in_zp=1, out_zp=-5, mult=np.array([mult]), shift=np.array([shift]), pads=(1, 1, 0, 0))
    # Double: acc/4 via SRDHM (ties up) then RoundingDivideByPOT (ties away):
    # 1->1 (0.25 rounds twice), 3->1, 6->2, 8->2, -2->-1, 12->3, 14->4.
    double = module.conv2d(x, w, bias, rounding="double", **kw)
    assert double[0, :, :, 0].tolist() == [[-4, -4, -4], [-4, -3, -3], [-6, -2, -1]]
    # Single: floor(acc/4 + 1/2): 1->0, 3->1, 6->2, 8->2, -2->0, 12->3, 14->4.
    single = module.conv2d(x, w, bias, rounding="single", **kw)
    assert single[0, :, :, 0].tolist() == [[-5, -5, -4], [-5, -3, -3], [-5, -2, -1]]
    clamped = module.conv2d(x, w, bias, rounding="double", act_min=-5, act_max=-3, **kw)
    assert clamped[0, :, :, 0].tolist() == [[-4, -4, -4], [-4, -3, -3], [-5, -3, -3]]


@pytest.mark.parametrize("module", BACKENDS, ids=lambda m: m.__name__)
def test_depthwise_by_hand(module):
    # Cin=2, M=2: output channels (ic0,m0), (ic0,m1), (ic1,m0), (ic1,m1); 1x1 kernel.
    x = np.array([10, -20], np.int8).reshape(1, 1, 1, 2)
    w = np.array([1, 2, 3, -4], np.int8).reshape(1, 1, 1, 4)
    out = module.depthwise_conv2d(
        x, w, None, in_zp=0, out_zp=0, mult=[1 << 30], shift=[1], depth_multiplier=2
    )
    # real multiplier 1.0: acc = [10, 20, -60, 80]
    assert out.reshape(-1).tolist() == [10, 20, -60, 80]


@pytest.mark.parametrize("module", BACKENDS, ids=lambda m: m.__name__)
def test_pools_by_hand(module):
    x = np.array([[1, 2, -7], [-1, -2, 4], [5, 6, 0]], np.int8).reshape(1, 3, 3, 1)
    kw = dict(kernel=2, stride=2, pads=(1, 1, 0, 0))
    # Windows (top-left corner at -1,-1 in the image): {1}, {2,-7}, {-1,5}, {-2,4,6,0}.
    assert module.max_pool2d(x, **kw)[0, :, :, 0].tolist() == [[1, 2], [5, 6]]
    assert module.max_pool2d(x, act_max=3, **kw)[0, :, :, 0].tolist() == [[1, 2], [3, 3]]
    # TFLM avg: sum over in-image taps, n = their count, ties away from zero:
    # 1/1=1, -5/2=-2.5->-3, 4/2=2, 8/4=2.
    assert module.avg_pool2d(x, **kw)[0, :, :, 0].tolist() == [[1, -3], [2, 2]]
    # count_include_pad with zp=1: pads count as 1, n=4: (1+3)/4=1, (-5+2)/4=-0.75->-1,
    # (4+2)/4=1.5->2, 8/4=2.
    out = module.avg_pool2d(x, count_include_pad=True, zp=1, **kw)
    assert out[0, :, :, 0].tolist() == [[1, -1], [2, 2]]
    # Exact halves: (1 + 2) / 2 = 1.5 -> 2 and (-1 - 2) / 2 = -1.5 -> -2.
    y = np.array([1, 2, -1, -2], np.int8).reshape(1, 1, 4, 1)
    assert module.avg_pool2d(y, kernel=(1, 2), stride=2).reshape(-1).tolist() == [2, -2]


@pytest.mark.parametrize("module", BACKENDS, ids=lambda m: m.__name__)
def test_fully_connected_by_hand(module):
    x = np.array([[3, -1, 2]], np.int8)
    w = np.array([[1, 2, 3], [-1, 0, 1]], np.int8)
    # in_zp = 1: x' = [2, -2, 1]; acc = [2-4+3, -2+0+1] + bias [10, -10] = [11, -11]
    out = module.fully_connected(
        x, w, np.array([10, -10], np.int32), in_zp=1, out_zp=3, mult=[1 << 30], shift=[-1]
    )
    # * 0.25 double: 11 -> SRDHM 6 -> 3; -11 -> SRDHM -5 -> -3 (ties away)
    assert out.tolist() == [[6, 0]]


# ----------------------------------------------------------------------------------------
# Reference conv vs float conv of the dequantized tensors
# ----------------------------------------------------------------------------------------


def _float_conv(x, w, stride, pads):
    """Direct float64 conv, zero padding (real 0), written independently of the kernels."""
    top, left, bottom, right = pads
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    cout, kh, kw, _ = w.shape
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))
    win = win[:, :: stride[0], :: stride[1]]  # [N, OH, OW, Cin, KH, KW]
    return np.einsum("nyxcij,oijc->nyxo", win, w)


@settings(deadline=None, max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), rounding=st.sampled_from(requant.ROUNDING_MODES))
def test_reference_conv_close_to_float_conv(seed, rounding):
    rng = np.random.default_rng(seed)
    n, h, w, cin, cout, k = 2, 8, 7, 3, 4, 3
    s_in = np.float32(rng.uniform(0.01, 0.1))
    in_zp = int(rng.integers(-20, 20))
    s_w = rng.uniform(0.005, 0.02, size=cout).astype(np.float32)
    s_out = np.float32(rng.uniform(0.05, 0.3))
    out_zp = int(rng.integers(-10, 10))
    x = _int8(rng, (n, h, w, cin))
    wq = rng.integers(-127, 128, size=(cout, k, k, cin), dtype=np.int8)
    bias = rng.integers(-3000, 3000, size=cout).astype(np.int32)
    reals = np.float64(s_in) * s_w.astype(np.float64) / np.float64(s_out)
    mult, shift = requant.quantize_multipliers(reals, rounding)
    pads = (1, 0, 2, 1)
    got = ref.conv2d(
        x,
        wq,
        bias,
        in_zp=in_zp,
        out_zp=out_zp,
        mult=mult,
        shift=shift,
        stride=(2, 1),
        pads=pads,
        rounding=rounding,
    )
    xr = (x.astype(np.float64) - in_zp) * np.float64(s_in)
    wr = wq.astype(np.float64) * s_w.astype(np.float64)[:, None, None, None]
    real = _float_conv(xr, wr, (2, 1), pads) + bias * np.float64(s_in) * s_w.astype(np.float64)
    want = np.clip(np.round(real / np.float64(s_out)) + out_zp, -128, 127)
    assert got.shape == want.shape
    assert np.abs(got.astype(np.int64) - want).max() <= 1


# ----------------------------------------------------------------------------------------
# quantize / dequantize / argmax / pad
# ----------------------------------------------------------------------------------------


def test_quantize_rounds_half_away_in_float32():
    x = np.array([0.5, -0.5, 1.5, 2.5, -2.5, 0.49999997, -0.49999997, 126.5, 1e9, -np.inf])
    assert ref.quantize(x, 1.0, 0).tolist() == [1, -1, 2, 3, -3, 0, 0, 127, 127, -128]
    assert ref.quantize(np.array([0.0, 1.0]), 0.5, -128).tolist() == [-128, -126]


@settings(deadline=None, max_examples=100)
@given(
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(1e-4, 10.0),
    zp=st.integers(-128, 127),
)
def test_quantize_matches_scalar_tflite(seed, scale, zp):
    x = np.random.default_rng(seed).normal(0, 200 * scale, size=50).astype(np.float32)
    x[:5] = (np.arange(5) - 2 + 0.5) * np.float32(scale)  # near-ties
    got = ref.quantize(x, scale, zp)
    for xv, q in zip(x, got, strict=True):
        v = float(np.float32(xv) / np.float32(scale))  # float32 division, exact in double
        r = math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1)
        assert q == min(127, max(-128, r + zp))


def test_dequantize():
    q = np.array([-128, 0, 5, 127], np.int8)
    got = ref.dequantize(q, 0.1, 5)
    assert got.dtype == np.float32
    want = ((q.astype(np.float64) - 5) * np.float64(np.float32(0.1))).astype(np.float32)
    np.testing.assert_array_equal(got, want)


def test_argmax_first_max_wins():
    x = np.array([[1, 7, 7, 0], [-128, -128, -128, -128]], np.int8)
    got = ref.argmax(x)
    assert got.dtype == np.int64 and got.tolist() == [1, 0]


def test_pad():
    x = np.ones((1, 2, 2, 1), np.int8)
    out = ref.pad(x, (1, 0, 0, 2), -3)
    assert out.dtype == np.int8 and out.shape == (1, 3, 4, 1)
    assert out[0, :, :, 0].tolist() == [[-3, -3, -3, -3], [1, 1, -3, -3], [1, 1, -3, -3]]


# ----------------------------------------------------------------------------------------
# Bad arguments -> EdgeconvError (never a numba TypingError or IndexError)
# ----------------------------------------------------------------------------------------

_X = np.zeros((1, 6, 6, 2), np.int8)
_W = np.zeros((3, 3, 3, 2), np.int8)
_M = np.full(3, 1 << 30, np.int32)
_S = np.zeros(3, np.int32)
_CONV_OK = dict(in_zp=0, out_zp=0, mult=_M, shift=_S)


def _conv(module, x=_X, w=_W, bias=None, **overrides):
    return module.conv2d(x, w, bias, **{**_CONV_OK, **overrides})


BAD_CALLS = {
    "x float": lambda m: _conv(m, x=_X.astype(np.float32)),
    "x list": lambda m: _conv(m, x=_X.tolist()),
    "x rank 3": lambda m: _conv(m, x=_X[0]),
    "w channel mismatch": lambda m: _conv(m, w=np.zeros((3, 3, 3, 4), np.int8)),
    "w int32": lambda m: _conv(m, w=_W.astype(np.int32)),
    "bias length": lambda m: _conv(m, bias=np.zeros(2, np.int32)),
    "bias float": lambda m: _conv(m, bias=np.zeros(3, np.float32)),
    "mult length": lambda m: _conv(m, mult=np.ones(2, np.int32)),
    "mult float": lambda m: _conv(m, mult=np.ones(3)),
    "shift too large": lambda m: _conv(m, shift=np.full(3, 31, np.int32)),
    "shift too small": lambda m: _conv(m, shift=np.full(3, -32, np.int32)),
    "in_zp range": lambda m: _conv(m, in_zp=200),
    "out_zp float": lambda m: _conv(m, out_zp=0.5),
    "stride 0": lambda m: _conv(m, stride=(0, 1)),
    "dilation shape": lambda m: _conv(m, dilation=(1, 1, 1)),
    "pads negative": lambda m: _conv(m, pads=(0, -1, 0, 0)),
    "pads length": lambda m: _conv(m, pads=(1, 1)),
    "kernel too big": lambda m: _conv(m, w=np.zeros((3, 7, 3, 2), np.int8)),
    "act range": lambda m: _conv(m, act_min=10, act_max=-10),
    "rounding": lambda m: _conv(m, rounding="nearest"),
    "depthwise channels": lambda m: m.depthwise_conv2d(
        _X, np.zeros((1, 3, 3, 3), np.int8), None, **_CONV_OK
    ),
    "depthwise multiplier": lambda m: m.depthwise_conv2d(
        _X, np.zeros((1, 3, 3, 2), np.int8), None, depth_multiplier=0, **_CONV_OK
    ),
    "fc K mismatch": lambda m: m.fully_connected(
        np.zeros((2, 5), np.int8), np.zeros((3, 4), np.int8), None, **_CONV_OK
    ),
    "fc rank": lambda m: m.fully_connected(_X, np.zeros((3, 2), np.int8), None, **_CONV_OK),
    "max pool kernel": lambda m: m.max_pool2d(_X, kernel=(0, 2), stride=1),
    "max pool too big": lambda m: m.max_pool2d(_X, kernel=7, stride=1),
    "avg pool empty window": lambda m: m.avg_pool2d(_X, kernel=2, stride=2, pads=(2, 0, 0, 0)),
    "avg pool zp": lambda m: m.avg_pool2d(_X, kernel=2, stride=2, zp=128),
    "requantize float acc": lambda m: m.requantize(np.zeros(3), 1, 0),
    "requantize acc range": lambda m: m.requantize(np.array([2**31]), 1, 0),
    "requantize mult shape": lambda m: m.requantize(np.zeros((2, 3), np.int32), _M[:2], 0),
    "quantize scale": lambda m: m.quantize(np.zeros(3, np.float32), 0.0, 0),
    "quantize nan": lambda m: m.quantize(np.array([np.nan], np.float32), 1.0, 0),
    "dequantize dtype": lambda m: m.dequantize(np.zeros(3, np.int16), 1.0, 0),
    "argmax rank": lambda m: m.argmax(np.zeros(3, np.int8)),
    "pad value": lambda m: m.pad(_X, (1, 1, 1, 1), 300),
}


@pytest.mark.parametrize("module", BACKENDS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_arguments_raise_edgeconv_error(module, case):
    with pytest.raises(EdgeconvError):
        BAD_CALLS[case](module)


def test_error_message_names_the_argument():
    with pytest.raises(EdgeconvError, match="w has 4 input channels"):
        _conv(ref, w=np.zeros((3, 3, 3, 4), np.int8))
    with pytest.raises(EdgeconvError, match="^x must have dtype int8"):
        _conv(ref, x=_X.astype(np.float32))
