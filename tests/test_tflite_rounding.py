"""Rounding modes: the requantize sweep against plain-Python oracles, the runtime profiles
against ai-edge-litert's three kernel sets, and the backends agreeing on the new modes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeconv import EdgeconvError
from edgeconv.formats.tflite_export import to_bytes
from edgeconv.kernels import fast, reference, requant
from edgeconv.kernels.requant import (
    ROUNDING_CHOICES,
    ROUNDING_MODES,
    delegate_accepts,
    mode_for,
    quantize_multiplier,
)

from . import tflite_cases as cases
from .tflite_measure import MATCHING, litert_available, measure_op, ours, run_litert

requires_litert = pytest.mark.skipif(not litert_available(), reason="pip install ai-edge-litert")

SWEEP = np.arange(-(2**17), 2**17 + 1, dtype=np.int64)
# real multipliers: LeNet-like small ones, one with an exact power of two (ties), one > 1
SWEEP_MULTIPLIERS = [0.25, 0.0013753, 0.00390625 * 3, 0.0000917, 0.61803, 1.7]


def _scalar(mode: str, acc: int, mult: int, shift: int, real: float) -> int:
    if mode == "double":
        return requant.requantize_scalar_double(acc, mult, shift)
    if mode == "single":
        return requant.requantize_scalar_single(acc, mult, shift)
    if mode == "double-up":
        return requant.requantize_scalar_double_up(acc, mult, shift)
    if mode == "fp32":
        return requant.requantize_scalar_fp32(acc, real)
    return requant.requantize_scalar_fp64(acc, real)


@pytest.mark.parametrize("real", SWEEP_MULTIPLIERS)
def test_requantize_sweep_every_accumulator(real, record_property):
    """Every int32 accumulator in [-2^17, 2^17]: both backends equal the Python oracle in
    every mode. Double and single rounding differ wherever there is a right shift (a
    second rounding step), and nowhere when there is none."""
    results = {}
    for mode in ROUNDING_MODES:
        mult, shift = quantize_multiplier(real, mode)
        scale = np.float32(real) if mode == "fp32" else real
        want = np.array([_scalar(mode, int(a), mult, shift, float(scale)) for a in SWEEP])
        for backend in (reference, fast):
            got = backend.requantize(SWEEP.astype(np.int32), mult, shift, mode, scale=scale)
            np.testing.assert_array_equal(got, want, err_msg=f"{backend.__name__} {mode}")
        results[mode] = want
    differ = int((results["double"] != results["single"]).sum())
    up = int((results["double"] != results["double-up"]).sum())
    record_property("double_vs_single_differ", differ)
    shift = quantize_multiplier(real)[1]
    print(
        f"\nmultiplier {real} (shift {shift}): double vs single differ at {differ:,} of "
        f"{SWEEP.size:,} accumulators, double vs double-up at {up:,}"
    )
    assert (differ > 0) == (shift < 0)


def test_double_single_example_from_the_spec():
    # x=1, q=2^30, shift=-1 is exactly 0.25 after one step: double gives 1, single 0
    assert requant.requantize_scalar_double(1, 1 << 30, -1) == 1
    assert requant.requantize_scalar_single(1, 1 << 30, -1) == 0
    # double-up differs from double on negative ties of the second step only
    assert requant.requantize_scalar_double(-6, 1 << 30, -1) == -2  # -1.5 -> away
    assert requant.requantize_scalar_double_up(-6, 1 << 30, -1) == -1  # -1.5 -> up
    assert requant.requantize_scalar_fp32(5, 0.5) == 2  # 2.5 -> even
    assert requant.requantize_scalar_fp64(5, 0.5) == 3  # 2.5 -> away
    assert requant.requantize_scalar_fp64(-5, 0.5) == -3


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    mode=st.sampled_from(["fp32", "fp64", "double-up"]),
    depthwise=st.booleans(),
)
def test_backends_identical_with_explicit_scale(seed, mode, depthwise):
    rng = np.random.default_rng(seed)
    cin, m = int(rng.integers(1, 6)), int(rng.integers(1, 3))
    cout = cin * m if depthwise else int(rng.integers(1, 9))
    x = rng.integers(-128, 128, (2, 7, 6, cin), dtype=np.int8)
    shape = (1, 3, 3, cout) if depthwise else (cout, 3, 3, cin)
    w = rng.integers(-127, 128, shape, dtype=np.int8)
    bias = rng.integers(-(2**20), 2**20, cout).astype(np.int32)
    scale = np.exp(rng.uniform(np.log(1e-6), np.log(1e-2), cout))
    if mode == "fp32":
        scale = scale.astype(np.float32).astype(np.float64)
    mult, shift = requant.quantize_multipliers(scale, mode)
    kw = dict(in_zp=int(rng.integers(-128, 128)), out_zp=int(rng.integers(-128, 128)))
    kw.update(mult=mult, shift=shift, pads=(1, 0, 1, 2), rounding=mode, scale=scale)
    if depthwise:
        a = reference.depthwise_conv2d(x, w, bias, depth_multiplier=m, **kw)
        b = fast.depthwise_conv2d(x, w, bias, depth_multiplier=m, **kw)
    else:
        a, b = reference.conv2d(x, w, bias, **kw), fast.conv2d(x, w, bias, **kw)
    np.testing.assert_array_equal(a, b)
    xf = x.reshape(2, -1)[:, :20]
    wf = rng.integers(-127, 128, (cout, 20), dtype=np.int8)
    kw.pop("pads")
    np.testing.assert_array_equal(
        reference.fully_connected(xf, wf, bias, **kw), fast.fully_connected(xf, wf, bias, **kw)
    )


def test_quantize_methods_against_scalar_formulas():
    rng = np.random.default_rng(0)
    scale = np.float32(0.0371)
    steps = rng.integers(-140, 140, 4000) + rng.choice([0, 0.5, -0.5, 0.25, 0.4999999], 4000)
    x = (steps * scale).astype(np.float32)
    div = reference.quantize(x, scale, 3, "divide")
    rec = reference.quantize(x, scale, 3, "reciprocal")
    inv = np.float32(1) / scale
    for v, d, r in zip(x, div, rec, strict=True):
        q = float(np.float32(v) / scale)
        away = math.floor(abs(q) + 0.5) * (1 if q >= 0 else -1)
        assert d == max(-128, min(127, away + 3))
        assert r == max(-128, min(127, round(float(np.float32(v) * inv)) + 3))
    assert (div != rec).any()
    np.testing.assert_array_equal(fast.quantize(x, scale, 3, "reciprocal"), rec)
    with pytest.raises(EdgeconvError, match="method"):
        reference.quantize(x, scale, 3, "nearest")


def test_profiles_pick_modes():
    assert set(ROUNDING_CHOICES) >= {"double", "single", "tflite-ref", "tflite-opt", "xnnpack"}
    assert mode_for("double", "fc") == "double"
    assert mode_for("tflite-ref", "fc") == "fp64" and mode_for("tflite-ref", "conv") == "double"
    assert mode_for("tflite-opt", "depthwise") == "double"
    assert mode_for("tflite-opt", "depthwise_blocks") == "double-up"
    assert mode_for("xnnpack", "conv", [0.01, 0.02]) == "fp32"
    assert mode_for("xnnpack", "conv", [0.01, 1e-40]) == "double-up"  # declined by XNNPACK
    assert mode_for("xnnpack", "quantize") == "reciprocal"
    assert mode_for("single", "quantize") == "divide"
    assert not delegate_accepts([1e-39]) and delegate_accepts([1e-37])
    with pytest.raises(EdgeconvError, match="rounding="):
        mode_for("nearest", "conv")


# ------------------------------------------------------------------ against ai-edge-litert
@requires_litert
@pytest.mark.parametrize(
    "op",
    [
        "CONV_2D",
        "CONV_2D (power-of-two scales)",
        "DEPTHWISE_CONV_2D",
        "DEPTHWISE_CONV_2D (power-of-two scales)",
        "FULLY_CONNECTED (per-channel)",
        "FULLY_CONNECTED (per-tensor)",
        "FULLY_CONNECTED (power-of-two scales)",
        "QUANTIZE (float input)",
    ],
)
def test_profiles_match_litert(op):
    runtimes = ("litert-default", "litert-builtin", "litert-ref")
    table = measure_op(op, models=8, seed=11, runtimes=runtimes, choices=tuple(MATCHING.values()))
    for rt in runtimes:
        assert table[rt]["elements"] > 0
        assert table[rt][MATCHING[rt]] == 0, (op, rt, table[rt])


@requires_litert
def test_xnnpack_declines_a_subnormal_scale_and_the_profile_follows():
    graph, x = cases.fc_graph(np.random.default_rng(3), n=64, k=200, cout=24)
    graph.tensors["w"].scale[5] = np.float32(2.6e-40)  # a near-dead channel
    graph.tensors["b"].scale[5] = np.float32(1e-41)
    ref = run_litert(to_bytes(graph), x, "litert-default")
    np.testing.assert_array_equal(ours(graph, x, "xnnpack"), ref)
    healthy, xh = cases.fc_graph(np.random.default_rng(3), n=64, k=200, cout=24)
    np.testing.assert_array_equal(
        ours(healthy, xh, "xnnpack"), run_litert(to_bytes(healthy), xh, "litert-default")
    )


@requires_litert
def test_depthwise_tail_channels_round_differently():
    """TFLite's optimized depthwise kernel: output channels in full blocks of 8 round like
    ruy (double-up), the rest like the reference (double)."""
    graph, x = cases.conv_graph(
        np.random.default_rng(7), depthwise=True, n=16, h=12, w=12, cin=21, cout_or_mult=1
    )
    ref = run_litert(to_bytes(graph), x, "litert-builtin")
    np.testing.assert_array_equal(ours(graph, x, "tflite-opt"), ref)
    up, dbl = ours(graph, x, "double-up"), ours(graph, x, "double")
    np.testing.assert_array_equal(up[..., :16], ref[..., :16])
    np.testing.assert_array_equal(dbl[..., 16:], ref[..., 16:])
