"""edgeconv.kernels.nonlinear against TFLite Micro, byte for byte, plus TFLM-free sanity checks.

The TFLM comparisons need the ``tflite-micro`` package and are skipped without it;
everything below "Sanity" runs anywhere.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgeconv import kernels
from edgeconv.errors import EdgeconvError
from edgeconv.kernels import nonlinear as nl

try:
    from tests.tflm_oracle import Quant, requires_tflm, run_single_op_tflm
except ModuleNotFoundError:  # tests/ is on sys.path but the repo root is not
    from tflm_oracle import Quant, requires_tflm, run_single_op_tflm

ORACLE = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALL_INT8 = np.arange(-128, 128, dtype=np.int8)


def _f32(x: float) -> float:
    return float(np.float32(x))


# Scales over several decades, log-uniform, rounded to float32 like a .tflite file.
scales = st.floats(-4.0, 1.0).map(lambda e: _f32(10.0**e))
wide_scales = st.floats(-4.0, 1.4).map(lambda e: _f32(10.0**e))  # up to ~25: tanh radius 0
zero_points = st.integers(-128, 127)
shapes_2d = st.tuples(st.integers(1, 4), st.integers(1, 40))


@st.composite
def int8_tensors(draw: st.DrawFn, shape_strategy: st.SearchStrategy = shapes_2d) -> np.ndarray:
    """int8 arrays whose values sit in a random window, so softmax rows are not all -128."""
    shape = draw(shape_strategy)
    lo = draw(st.integers(-128, 127))
    hi = draw(st.integers(lo, min(127, lo + draw(st.sampled_from([3, 20, 80, 255])))))
    return draw(hnp.arrays(np.int8, shape, elements=st.integers(lo, hi)))


# --------------------------------------------------------------------------
# Byte-for-byte against TFLM
# --------------------------------------------------------------------------


@requires_tflm
@ORACLE
@given(
    x=int8_tensors(),
    in_scale=scales,
    in_zp=zero_points,
    beta=st.one_of(st.just(1.0), st.floats(-1.5, 1.0).map(lambda e: _f32(10.0**e))),
)
def test_softmax_matches_tflm(x: np.ndarray, in_scale: float, in_zp: int, beta: float) -> None:
    if beta * in_scale * 2**26 <= 1.0:
        with pytest.raises(EdgeconvError):  # TFLM aborts the process for these
            nl.prepare_softmax(in_scale, beta)
        return
    expected = run_single_op_tflm(
        "SOFTMAX", [x], [(in_scale, in_zp)], nl.SOFTMAX_OUTPUT_QPARAMS, {"beta": beta}
    )
    np.testing.assert_array_equal(nl.softmax(x, nl.prepare_softmax(in_scale, beta)), expected)


@requires_tflm
@ORACLE
@given(x=int8_tensors(), in_scale=scales, in_zp=zero_points)
def test_log_softmax_matches_tflm(x: np.ndarray, in_scale: float, in_zp: int) -> None:
    expected = run_single_op_tflm(
        "LOG_SOFTMAX", [x], [(in_scale, in_zp)], nl.LOG_SOFTMAX_OUTPUT_QPARAMS
    )
    np.testing.assert_array_equal(nl.log_softmax(x, nl.prepare_log_softmax(in_scale)), expected)


@requires_tflm
@ORACLE
@given(x=int8_tensors(), in_scale=wide_scales, in_zp=zero_points)
def test_tanh_matches_tflm(x: np.ndarray, in_scale: float, in_zp: int) -> None:
    expected = run_single_op_tflm("TANH", [x], [(in_scale, in_zp)], nl.TANH_OUTPUT_QPARAMS)
    np.testing.assert_array_equal(nl.tanh(x, nl.prepare_tanh(in_scale, in_zp)), expected)


@requires_tflm
@ORACLE
@given(x=int8_tensors(), in_scale=wide_scales, in_zp=zero_points)
def test_logistic_matches_tflm(x: np.ndarray, in_scale: float, in_zp: int) -> None:
    expected = run_single_op_tflm("LOGISTIC", [x], [(in_scale, in_zp)], nl.LOGISTIC_OUTPUT_QPARAMS)
    np.testing.assert_array_equal(nl.logistic(x, nl.prepare_logistic(in_scale, in_zp)), expected)


@st.composite
def add_cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Equal shapes, or equal-rank shapes where either side broadcasts along some axes."""
    shape = draw(st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 12)))
    a_shape = tuple(draw(st.sampled_from([d, 1])) for d in shape)
    b_shape = tuple(
        draw(st.sampled_from([d, 1])) if a == d else d for a, d in zip(a_shape, shape, strict=True)
    )
    a = draw(hnp.arrays(np.int8, a_shape))
    b = draw(hnp.arrays(np.int8, b_shape))
    return a, b


@requires_tflm
@ORACLE
@given(
    ab=add_cases(),
    a_scale=scales,
    b_scale=scales,
    out_scale=st.floats(-3.0, 1.5).map(lambda e: _f32(10.0**e)),
    zps=st.tuples(zero_points, zero_points, zero_points),
    relu=st.booleans(),
)
def test_add_matches_tflm(
    ab: tuple[np.ndarray, np.ndarray],
    a_scale: float,
    b_scale: float,
    out_scale: float,
    zps: tuple[int, int, int],
    relu: bool,
) -> None:
    a, b = ab
    za, zb, zo = zps
    expected = run_single_op_tflm(
        "ADD",
        [a, b],
        [(a_scale, za), (b_scale, zb)],
        (out_scale, zo),
        {"fused_activation_function": "RELU" if relu else "NONE"},
        out_shape=np.broadcast_shapes(a.shape, b.shape),
    )
    # CalculateActivationRangeQuantized for RELU: zp_out + round(0 / s) = zp_out.
    act_min = max(-128, zo) if relu else -128
    p = nl.prepare_add(a_scale, za, b_scale, zb, out_scale, zo)
    np.testing.assert_array_equal(nl.add(a, b, p, act_min, 127), expected)


@requires_tflm
@pytest.mark.parametrize("op", ["TANH", "LOGISTIC"])
def test_tanh_logistic_every_input_on_a_scale_grid(op: str) -> None:
    """All 256 inputs for scales 2^-12 .. 2^4.5 (half-octave steps) and 4 zero points."""
    fn, prep, out_q = {
        "TANH": (nl.tanh, nl.prepare_tanh, nl.TANH_OUTPUT_QPARAMS),
        "LOGISTIC": (nl.logistic, nl.prepare_logistic, nl.LOGISTIC_OUTPUT_QPARAMS),
    }[op]
    x = ALL_INT8.reshape(1, 256)
    for k in range(-24, 10):
        s = _f32(2.0 ** (k / 2) * 1.0123)
        for zp in (-128, -5, 0, 77):
            expected = run_single_op_tflm(op, [x], [(s, zp)], out_q)
            np.testing.assert_array_equal(fn(x, prep(s, zp)), expected, err_msg=f"{s} {zp}")


@requires_tflm
def test_softmax_extreme_scales_and_long_rows_match_tflm() -> None:
    """Multiplier clamped at 2^31-1 (scale*beta >= 32), scales near 2^-26, 500-wide rows."""
    rng = np.random.default_rng(7)
    for s in (1.2 * 2**-26, 1e-6, 0.01, 31.9, 32.0, 100.0, 1e4):
        for x in (
            ALL_INT8.reshape(2, 128),
            rng.integers(-128, 128, (2, 500)).astype(np.int8),
            np.full((1, 9), 3, np.int8),
        ):
            exp_sm = run_single_op_tflm(
                "SOFTMAX", [x], [(s, 0)], nl.SOFTMAX_OUTPUT_QPARAMS, {"beta": 1.0}
            )
            np.testing.assert_array_equal(nl.softmax(x, nl.prepare_softmax(s)), exp_sm)
            exp_ls = run_single_op_tflm("LOG_SOFTMAX", [x], [(s, 0)], nl.LOG_SOFTMAX_OUTPUT_QPARAMS)
            np.testing.assert_array_equal(nl.log_softmax(x, nl.prepare_log_softmax(s)), exp_ls)
    # Up to 4095 equal values the log-softmax Q12 accumulator holds.
    x = np.zeros((1, 4095), np.int8)
    exp_ls = run_single_op_tflm("LOG_SOFTMAX", [x], [(0.1, 0)], nl.LOG_SOFTMAX_OUTPUT_QPARAMS)
    np.testing.assert_array_equal(nl.log_softmax(x, nl.prepare_log_softmax(0.1)), exp_ls)


@requires_tflm
def test_tanh_of_zero_point_is_minus_128_when_radius_is_zero() -> None:
    """TFLM quirk kept on purpose: scale >= 8 gives radius 0 and 'x <= -0' wins."""
    x = np.array([0, 1, -1], dtype=np.int8)
    expected = run_single_op_tflm("TANH", [x], [(10.0, 0)], nl.TANH_OUTPUT_QPARAMS)
    assert expected.tolist() == [-128, 127, -128]
    np.testing.assert_array_equal(nl.tanh(x, nl.prepare_tanh(10.0, 0)), expected)


@requires_tflm
def test_softmax_511_equal_logits_match_tflm() -> None:
    x = np.zeros((1, 511), np.int8)
    expected = run_single_op_tflm(
        "SOFTMAX", [x], [(0.1, 0)], nl.SOFTMAX_OUTPUT_QPARAMS, {"beta": 1.0}
    )
    np.testing.assert_array_equal(nl.softmax(x, nl.prepare_softmax(0.1)), expected)


def _abort_case(case: str) -> dict:
    """(edgeconv call that must raise, TFLM run that must abort) for each known abort."""
    x = np.zeros((1, 4), np.int8)
    if case == "softmax tiny scale":
        edgeconv = lambda: nl.prepare_softmax(1e-9)  # noqa: E731
        tflm = dict(
            op="SOFTMAX",
            inputs=[x],
            in_qparams=[(1e-9, 0)],
            options={"beta": 1.0},
            out_qparams=nl.SOFTMAX_OUTPUT_QPARAMS,
        )
    elif case == "softmax 512 equal logits":
        x = np.zeros((1, 512), np.int8)
        edgeconv = lambda: nl.softmax(x, nl.prepare_softmax(0.1))  # noqa: E731
        tflm = dict(
            op="SOFTMAX",
            inputs=[x],
            in_qparams=[(0.1, 0)],
            options={"beta": 1.0},
            out_qparams=nl.SOFTMAX_OUTPUT_QPARAMS,
        )
    else:
        edgeconv = lambda: nl.prepare_add(1.0, 0, 1.0, 0, 1e-7, 0)  # noqa: E731
        tflm = dict(
            op="ADD",
            inputs=[x, x],
            in_qparams=[Quant(1.0, 0), Quant(1.0, 0)],
            out_qparams=(1e-7, 0),
            options={},
        )
    return {"edgeconv": edgeconv, "tflm": tflm}


@requires_tflm
@pytest.mark.parametrize(
    "case", ["softmax tiny scale", "softmax 512 equal logits", "add tiny output scale"]
)
def test_tflm_aborts_where_edgeconv_raises(case: str) -> None:
    """Where TFLM hits a TFLITE_CHECK (abort()), edgeconv raises instead of making up bytes."""
    c = _abort_case(case)
    with pytest.raises(EdgeconvError):
        c["edgeconv"]()
    with pytest.raises(RuntimeError, match="status"):
        run_single_op_tflm(**c["tflm"], isolated=True)


# --------------------------------------------------------------------------
# Sanity (no TFLM needed)
# --------------------------------------------------------------------------


def _rng_cases(n: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        s = _f32(10.0 ** rng.uniform(-3, 0.5))
        zp = int(rng.integers(-128, 128))
        yield rng, s, zp


def test_exports_through_edgeconv_kernels() -> None:
    for name in kernels._NONLINEAR_KERNELS:
        assert getattr(kernels, name) is getattr(nl, name)


@given(value=st.integers(-128, 127), depth=st.integers(1, 64), in_scale=scales)
def test_softmax_equal_logits_give_equal_outputs(value: int, depth: int, in_scale: float) -> None:
    out = nl.softmax(np.full((2, depth), value, np.int8), nl.prepare_softmax(in_scale))
    assert (out == out[0, 0]).all()
    assert abs((int(out[0, 0]) + 128) / 256 - min(1 / depth, 255 / 256)) <= 1 / 256


def test_softmax_and_log_softmax_are_monotonic_in_the_logit() -> None:
    x = ALL_INT8.reshape(1, 256)
    for _, s, zp in _rng_cases(40, 1):
        assert (np.diff(nl.softmax(x, nl.prepare_softmax(s)).astype(int)) >= 0).all()
        assert (np.diff(nl.log_softmax(x, nl.prepare_log_softmax(s)).astype(int)) >= 0).all()
        for fn, prep in ((nl.tanh, nl.prepare_tanh), (nl.logistic, nl.prepare_logistic)):
            assert (np.diff(fn(ALL_INT8, prep(s, zp)).astype(int)) >= 0).all()


def test_outputs_within_one_lsb_of_float() -> None:
    for rng, s, zp in _rng_cases(300, 2):
        x = rng.integers(-128, 128, (2, int(rng.integers(1, 40)))).astype(np.int8)
        r = (x.astype(np.float64) - zp) * s
        e = np.exp(r - r.max(axis=-1, keepdims=True))
        prob = e / e.sum(axis=-1, keepdims=True)
        q = nl.softmax(x, nl.prepare_softmax(s)).astype(np.float64)
        assert np.abs((q + 128) - prob * 256).max() <= 1.0

        log_prob = np.log(np.maximum(prob, 1e-300))
        ql = nl.log_softmax(x, nl.prepare_log_softmax(s)).astype(np.float64)
        representable = log_prob > -15.9  # below that TFLM clips to -128
        assert np.abs((ql - 127) - log_prob * 16)[representable].max(initial=0) <= 1.0

        ra = (ALL_INT8.astype(np.float64) - zp) * s
        qt = nl.tanh(ALL_INT8, nl.prepare_tanh(s, zp)).astype(np.float64)
        assert np.abs(qt - np.clip(np.tanh(ra) * 128, -128, 127)).max() <= 1.0
        qg = nl.logistic(ALL_INT8, nl.prepare_logistic(s, zp)).astype(np.float64)
        sig = 0.5 * (1 + np.tanh(ra / 2))
        assert np.abs(qg + 128 - np.clip(sig * 256, 0, 255)).max() <= 1.0


def test_tanh_is_odd_and_logistic_symmetric_around_zero_point() -> None:
    x = np.arange(-127, 128, dtype=np.int8)
    for _, s, _zp in _rng_cases(40, 3):
        t = nl.tanh(x, nl.prepare_tanh(s, 0)).astype(int)
        # Exactly odd, except that +1.0 clamps to 127 while -1.0 is representable (-128).
        pair_sum = t + t[::-1]
        saturated = (t == -128) | (t[::-1] == -128)
        assert ((pair_sum == 0) | ((pair_sum == -1) & saturated)).all()
        g = nl.logistic(x, nl.prepare_logistic(s, 0)).astype(int) + 128
        assert np.abs(g + g[::-1] - 256).max() <= 1  # sigma(x) + sigma(-x) = 1


def test_add_near_float_symmetric_and_clamped() -> None:
    for rng, s, zp in _rng_cases(300, 4):
        sb, so = (_f32(10.0 ** rng.uniform(-3, 0.5)) for _ in range(2))
        zb, zo = (int(v) for v in rng.integers(-128, 128, 2))
        a = rng.integers(-128, 128, (3, 17)).astype(np.int8)
        b = rng.integers(-128, 128, (3, 17)).astype(np.int8)
        out = nl.add(a, b, nl.prepare_add(s, zp, sb, zb, so, zo))
        real = (a.astype(np.float64) - zp) * s + (b.astype(np.float64) - zb) * sb
        assert np.abs(out - np.clip(np.round(real / so) + zo, -128, 127)).max() <= 1
        swapped = nl.add(b, a, nl.prepare_add(sb, zb, s, zp, so, zo))
        np.testing.assert_array_equal(out, swapped)
        lo = min(zo, 0)
        clamped = nl.add(a, b, nl.prepare_add(s, zp, sb, zb, so, zo), lo, 100)
        np.testing.assert_array_equal(clamped, np.clip(out, lo, 100))


def test_add_broadcasts_like_numpy() -> None:
    p = nl.prepare_add(0.05, 3, 0.02, -9, 0.07, 1)
    a = np.arange(-60, 60, dtype=np.int8).reshape(4, 1, 30)
    b = np.arange(-128, 127, 40, dtype=np.int8).reshape(1, 7, 1)
    full_a, full_b = np.broadcast_arrays(a, b)
    np.testing.assert_array_equal(nl.add(a, b, p), nl.add(full_a.copy(), full_b.copy(), p))


def test_empty_and_nd_inputs_keep_their_shape() -> None:
    x = np.arange(-60, 60, dtype=np.int8).reshape(2, 3, 20)
    for fn, p in (
        (nl.softmax, nl.prepare_softmax(0.1)),
        (nl.log_softmax, nl.prepare_log_softmax(0.1)),
        (nl.tanh, nl.prepare_tanh(0.1, 0)),
        (nl.logistic, nl.prepare_logistic(0.1, 0)),
    ):
        assert fn(x, p).shape == x.shape
        assert fn(x, p).dtype == np.int8
        assert fn(x[:0], p).shape == (0, 3, 20)
    np.testing.assert_array_equal(
        nl.softmax(x, nl.prepare_softmax(0.1)).reshape(6, 20),
        nl.softmax(x.reshape(6, 20), nl.prepare_softmax(0.1)),
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda: nl.prepare_softmax(0.0),
        lambda: nl.prepare_softmax(-0.5),
        lambda: nl.prepare_softmax(math.nan),
        lambda: nl.prepare_softmax(math.inf),
        lambda: nl.prepare_softmax("0.1"),  # type: ignore[arg-type]
        lambda: nl.prepare_softmax(0.1, beta=0.0),
        lambda: nl.prepare_softmax(1e-9),  # below TFLM's 2^-26 (TFLM would abort)
        lambda: nl.prepare_log_softmax(1e-50),  # underflows float32
        lambda: nl.prepare_tanh(0.1, 128),
        lambda: nl.prepare_tanh(0.1, 1.5),  # type: ignore[arg-type]
        lambda: nl.prepare_logistic(1e-10, 0),
        lambda: nl.prepare_add(0.1, 0, 0.1, 0, 1e-8, 0),
        lambda: nl.prepare_add(0.1, 0, -0.1, 0, 0.1, 0),
        lambda: nl.softmax(np.zeros((2, 3), np.int16), nl.prepare_softmax(0.1)),
        lambda: nl.softmax([[1, 2]], nl.prepare_softmax(0.1)),  # type: ignore[arg-type]
        lambda: nl.softmax(np.int8(3) * np.ones((), np.int8), nl.prepare_softmax(0.1)),
        lambda: nl.softmax(np.zeros((1, 3), np.int8), nl.prepare_tanh(0.1, 0)),  # type: ignore
        lambda: nl.softmax(np.zeros((1, 5000), np.int8), nl.prepare_softmax(0.1)),
        lambda: nl.tanh(np.zeros(3, np.uint8), nl.prepare_tanh(0.1, 0)),
        lambda: nl.logistic(np.zeros(3, np.int8), nl.prepare_tanh(0.1, 0)),  # type: ignore
        lambda: nl.add(
            np.zeros(3, np.int8), np.zeros(4, np.int8), nl.prepare_add(0.1, 0, 0.1, 0, 0.1, 0)
        ),
        lambda: nl.add(
            np.zeros(3, np.int8),
            np.zeros(3, np.int8),
            nl.prepare_add(0.1, 0, 0.1, 0, 0.1, 0),
            10,
            -10,
        ),
        lambda: nl.add(
            np.zeros(3, np.int8),
            np.zeros(3, np.int8),
            nl.prepare_add(0.1, 0, 0.1, 0, 0.1, 0),
            -200,
            127,
        ),
    ],
)
def test_bad_arguments_raise_edgeconv_error(call) -> None:
    with pytest.raises(EdgeconvError) as info:
        call()
    assert "\n" not in str(info.value)


def test_params_are_frozen() -> None:
    p = nl.prepare_softmax(0.1)
    with pytest.raises(AttributeError):
        p.diff_min = 0  # type: ignore[misc]
    t = nl.prepare_tanh(0.1, 0)
    with pytest.raises(ValueError):
        t.table[0] = 5  # the lookup table is shared by every call: read-only


def test_strided_inputs_match_contiguous_ones() -> None:
    x = np.arange(-128, 128, dtype=np.int8).reshape(16, 16)
    view = x[::2, ::3].T  # non-contiguous
    for fn, p in (
        (nl.tanh, nl.prepare_tanh(0.07, -3)),
        (nl.logistic, nl.prepare_logistic(0.07, -3)),
        (nl.softmax, nl.prepare_softmax(0.07)),
        (nl.log_softmax, nl.prepare_log_softmax(0.07)),
    ):
        np.testing.assert_array_equal(fn(view, p), fn(np.ascontiguousarray(view), p))
