"""The compiled whole-model engine (kernels/compiled.py + kernels/microkernel.py) against the
NumPy reference kernels, byte for byte.

- the vector requantization of the microkernel against ``reference.requantize`` on
  arbitrary int32 accumulators, multipliers and shifts (every integer rounding mode);
- the microkernel's dot products (all tile sizes, both max-pool fusions) against int64
  NumPy arithmetic wrapped to int32, including accumulators that wrap;
- random chains of ops (conv, depthwise, max/avg pool, clamps, transpose, pad, reshape, FC;
  random shapes, strides, dilations, pads, zero points and scales, huge biases and
  multipliers > 1 that make the max-pool fusion fall back) on every instruction set this
  machine runs, against the per-op reference kernels;
- the demo LeNet-5 and the public models of ../shared/cases;
- the generated code is vectorized: the conv loop's assembly on this x86-64 host, and the
  same LLVM IR compiled for AArch64 Cortex-A72/A76 with llvmlite.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("numba")

from edgeconv import kernels  # noqa: E402
from edgeconv.ir import Graph, Op, Tensor, conv_output_size  # noqa: E402
from edgeconv.kernels import compiled, microkernel, reference  # noqa: E402
from edgeconv.kernels.requant import quantize_multipliers  # noqa: E402
from edgeconv.runtime import Model  # noqa: E402

from .conftest import CASES, EXAMPLES, shared_file  # noqa: E402

ISAS = ["generic"] + (["vnni512"] if microkernel._detected_isa() == "vnni512" else [])
INT_MODES = {"double": 0, "single": 1, "double-up": 2}
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    """Generated kernels go to a per-session temp dir, not the user's cache."""
    d = tmp_path_factory.getbasetemp() / "edgeconv-cache"
    monkeypatch.setenv("EDGECONV_CACHE_DIR", str(d))


def reference_outputs(graph: Graph, x: np.ndarray, rounding: str = "double") -> np.ndarray:
    """The graph run op by op on the NumPy reference kernels (the oracle)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kernels, "_backend", reference)
        return Model(graph, rounding=rounding).run(x)


def compiled_model(graph: Graph, isa: str, rounding: str = "double") -> Model:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGECONV_ISA", isa)
        m = Model(graph, rounding=rounding)
        m._run_steps()  # plans with the ISA asked for
    return m


def segments(model: Model) -> list:
    """The compiled segments of a model; none of them may have fallen back to per-op."""
    steps = model._run_steps()
    assert not any(getattr(s, "fell_back", False) for s in steps), "compiled engine fell back"
    return [s.segment for s in steps if hasattr(s, "segment")]


# ----------------------------------------------------------------------------------------
# The microkernel on its own
# ----------------------------------------------------------------------------------------


def _harness(isa, mr, pool, mode, nstore, pair=False, offsets=None):
    from numba import njit

    tile = microkernel.tile(isa, mr, pool, mode, nstore, pair, offsets)

    @njit
    def run(dst, x, pix, w, p32, tab, ng, zp, lo, hi, b8):
        tile(dst, 0, 16, x, pix, 0, w, 0, p32, 0, 16, 32, tab, 0, ng, zp, lo, hi, b8)

    return run


def _ref_requant(acc, mult, shift, rounding, zp, lo, hi):
    r = reference.requantize(acc.astype(np.int32), mult, shift, rounding).astype(np.int64)
    v = ((r + zp + 2**31) % 2**32) - 2**31
    return np.clip(v, lo, hi)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("rounding", sorted(INT_MODES))
@settings(deadline=None, max_examples=40)
@given(seed=st.integers(0, 2**32 - 1))
def test_microkernel_requant_matches_reference(isa, rounding, seed):
    """Zero weights: the output is requantize(bias) for 16 arbitrary int32 lanes."""
    rng = np.random.default_rng(seed)
    run = _harness(isa, 1, 0, INT_MODES[rounding], 16)
    gs = microkernel.GROUP_BYTES[isa]
    acc = rng.integers(INT32_MIN, INT32_MAX, 16, endpoint=True)
    acc[:4] = [INT32_MIN, INT32_MAX, 0, -1]
    acc[4:8] >>= rng.integers(8, 30, 4)
    if rng.integers(2):
        mult, shift = quantize_multipliers(np.exp(rng.uniform(-20, 5, 16)), rounding)
    else:
        mult = rng.integers(INT32_MIN, INT32_MAX, 16, endpoint=True).astype(np.int32)
        mult[0] = INT32_MIN
        shift = rng.integers(-31, 30, 16, endpoint=True).astype(np.int32)
    zp = int(rng.integers(-128, 128))
    lo = int(rng.integers(-128, 128))
    hi = int(rng.integers(lo, 128))
    p32 = np.concatenate([acc.astype(np.int32), mult, shift, np.zeros(16, np.int32)])
    x = np.zeros(64, np.uint8 if isa == "vnni512" else np.int8)
    w = np.zeros(16 * gs, np.int8)
    dst = np.zeros(16, np.int8)
    run(dst, x, np.zeros(1, np.int64), w, p32.astype(np.int32), np.zeros(1, np.int32), 1, zp,
        lo, hi, 0)
    np.testing.assert_array_equal(dst, _ref_requant(acc, mult, shift, rounding, zp, lo, hi))


@pytest.mark.parametrize("isa", ISAS)
@settings(deadline=None, max_examples=60)
@given(
    seed=st.integers(0, 2**32 - 1),
    mr=st.integers(1, 9),
    pool=st.sampled_from([0, 1, 2]),
    nstore=st.sampled_from([1, 5, 8, 16]),
    ng=st.integers(1, 40),
    pair=st.booleans(),
    static=st.booleans(),
)
def test_microkernel_tile_matches_numpy(isa, seed, mr, pool, nstore, ng, pair, static):
    """Every tile flavour: mr pixels (or pixel pairs sharing a vector), three pool modes,
    partial stores, loop or straight-line reduction, accumulators that wrap."""
    if pair:
        mr, nstore = mr + mr % 2, min(nstore, 8)
    rng = np.random.default_rng(seed)
    gs = microkernel.GROUP_BYTES[isa]
    k = ng * gs
    x8 = rng.integers(-128, 128, (mr, k)).astype(np.int8)
    w = rng.integers(-128, 128, (16, k)).astype(np.int8)
    bias = rng.integers(INT32_MIN, INT32_MAX, 16, endpoint=True)
    bias[:4] >>= 12  # some lanes wrap around, some do not
    bias[8:12] >>= 12
    mult, shift = quantize_multipliers(np.exp(rng.uniform(-12, 2, 16)))
    if pair:  # the planner's pair layout: channels 0-7 twice
        for v in (w, bias, mult, shift):
            v[8:] = v[:8]
    offset = 128 if isa == "vnni512" else 0
    xs = (x8.astype(np.int16) + offset).astype(np.uint8 if offset else np.int8)
    perm = rng.permutation(mr)  # pixels anywhere in the buffer, in any order
    buf = np.zeros(mr * k + 64, xs.dtype)
    for m in range(mr):
        buf[perm[m] * k : (perm[m] + 1) * k] = xs[m]
    pix = (perm * k).astype(np.int64)
    tab = (np.arange(ng) * gs).astype(np.int32)
    offsets = tuple(int(v) for v in tab) if static else None
    wp = np.ascontiguousarray(w.reshape(16, ng, gs).transpose(1, 0, 2)).reshape(-1)
    p32 = np.concatenate([bias.astype(np.int32), mult, shift, np.zeros(16, np.int32)])
    dst = np.zeros(16 * mr, np.int8)
    run = _harness(isa, mr, pool, 0, nstore, pair, offsets)
    run(dst, buf, pix, wp, p32, tab if not static else np.zeros(1, np.int32), ng, 3, -128,
        127, 0)
    acc = xs.astype(np.int64) @ w.astype(np.int64).T + bias  # [mr, 16]
    acc = ((acc + 2**31) % 2**32) - 2**31
    if pool == 1:
        want = _ref_requant(acc.max(0), mult, shift, "double", 3, -128, 127)[None]
    else:
        want = np.stack([_ref_requant(a, mult, shift, "double", 3, -128, 127) for a in acc])
        if pool == 2:
            want = want.max(0, keepdims=True)
    rows = dst.reshape(-1, 16)
    np.testing.assert_array_equal(rows[: len(want), :nstore], want[:, :nstore])
    assert not rows[len(want) :].any() and not rows[:, nstore:].any()  # nothing else written


def test_compose_clamp_is_sequential_clamping():
    v = np.arange(-128, 128)
    for a, b, c, d in np.random.default_rng(0).integers(-128, 128, (400, 4)):
        a, b = sorted((a, b))
        c, d = sorted((c, d))
        lo, hi = compiled.compose_clamp((a, b), (c, d))
        np.testing.assert_array_equal(np.clip(np.clip(v, a, b), c, d), np.clip(v, lo, hi))


# ----------------------------------------------------------------------------------------
# Random graphs
# ----------------------------------------------------------------------------------------


class _Builder:
    """An int8 graph built layer by layer, quantized like the PTQ pass would."""

    def __init__(self, rng, shape, extreme: bool):
        self.rng, self.extreme = rng, extreme
        self.tensors: dict[str, Tensor] = {}
        self.ops: list[Op] = []
        self.cur = self.act("x", shape)

    def act(self, name, shape, scale=None, zp=None):
        rng = self.rng
        scale = float(np.exp(rng.uniform(-6, 1))) if scale is None else scale
        zp = int(rng.integers(-128, 128)) if zp is None else zp
        self.tensors[name] = Tensor(
            name, tuple(shape), "int8", scale=np.array([scale], np.float32),
            zero_point=np.array([zp], np.int32),
        )
        return name

    def same(self, kind, out_shape, **attrs):
        """An op whose output shares its input's qparams."""
        t = self.tensors[self.cur]
        out = self.act(f"t{len(self.ops)}", out_shape, float(t.scale[0]), int(t.zero_point[0]))
        self.ops.append(Op(kind, [self.cur], [out], attrs, name=f"{kind}{len(self.ops)}"))
        self.cur = out

    def weights(self, name, shape, cout, axis, in_scale, out_scale):
        rng = self.rng
        w = rng.integers(-127, 128, shape).astype(np.int8)
        # weight scales: mostly a normal real multiplier, sometimes > 1 (shift > 0)
        ws = np.exp(rng.uniform(-4, 0, cout)) * out_scale / in_scale / 100
        if self.extreme and rng.integers(3) == 0:
            ws *= np.exp(rng.uniform(3, 8))
        ws = ws.astype(np.float32)
        self.tensors[name] = Tensor(name, shape, "int8", w, ws, np.zeros(cout, np.int32), axis)
        hi = 2**31 - 1 if self.extreme and rng.integers(3) == 0 else 2**14
        b = rng.integers(-hi, hi, cout).astype(np.int32)
        bs = (ws.astype(np.float64) * in_scale).astype(np.float32)
        self.tensors[name + "_b"] = Tensor(name + "_b", (cout,), "int32", b, bs,
                                           np.zeros(cout, np.int32), 0)
        return name, name + "_b"

    def conv(self, cout, k, stride, dilation, pads, activation, depthwise=False, mult=1):
        _, h, w, cin = self.tensors[self.cur].shape
        oh = conv_output_size(h, k[0], stride[0], dilation[0], pads[0], pads[2])
        ow = conv_output_size(w, k[1], stride[1], dilation[1], pads[1], pads[3])
        if depthwise:
            cout = cin * mult
            shape = (1, k[0], k[1], cout)
            axis = 3
        else:
            shape = (cout, k[0], k[1], cin)
            axis = 0
        s_in = float(self.tensors[self.cur].scale[0])
        out = self.act(f"t{len(self.ops)}", (1, oh, ow, cout))
        wn, bn = self.weights(f"w{len(self.ops)}", shape, cout, axis, s_in,
                              float(self.tensors[out].scale[0]))
        attrs = dict(stride=stride, dilation=dilation, pads=pads, activation=activation,
                     depthwise=depthwise, depth_multiplier=mult if depthwise else 1)
        self.ops.append(Op("conv", [self.cur, wn, bn], [out], attrs, name=f"conv{len(self.ops)}"))
        self.cur = out

    def fc(self, cout, activation):
        _, k = self.tensors[self.cur].shape
        s_in = float(self.tensors[self.cur].scale[0])
        out = self.act(f"t{len(self.ops)}", (1, cout))
        wn, bn = self.weights(f"w{len(self.ops)}", (cout, k), cout, 0, s_in,
                              float(self.tensors[out].scale[0]))
        self.ops.append(Op("fc", [self.cur, wn, bn], [out], dict(activation=activation),
                           name=f"fc{len(self.ops)}"))
        self.cur = out

    def pool(self, mode, k, stride, pads, include_pad=False, activation="none"):
        _, h, w, c = self.tensors[self.cur].shape
        oh = conv_output_size(h, k[0], stride[0], 1, pads[0], pads[2])
        ow = conv_output_size(w, k[1], stride[1], 1, pads[1], pads[3])
        self.same("pool", (1, oh, ow, c), mode=mode, kernel=k, stride=stride, pads=pads,
                  activation=activation, count_include_pad=include_pad)

    def graph(self) -> Graph:
        return Graph(self.tensors, self.ops, ["x"], [self.cur])


def _fits(h, w, k, stride, dil, pads):
    return (h + pads[0] + pads[2] >= dil[0] * (k[0] - 1) + 1
            and w + pads[1] + pads[3] >= dil[1] * (k[1] - 1) + 1)


@st.composite
def chains(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    extreme = draw(st.booleans())
    h, w, c = draw(st.integers(1, 12)), draw(st.integers(1, 12)), draw(st.integers(1, 7))
    b = _Builder(rng, (1, h, w, c), extreme)
    for _ in range(draw(st.integers(1, 3))):
        _, h, w, c = b.tensors[b.cur].shape
        kind = draw(st.sampled_from(["conv", "conv", "conv", "dw", "pool", "act", "transpose",
                                     "pad"]))
        k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
        act = draw(st.sampled_from(["none", "relu", "relu6"]))
        if kind in ("conv", "dw") and _fits(h, w, k, stride, dil, pads):
            b.conv(draw(st.integers(1, 40)), k, stride, dil, pads, act, kind == "dw",
                   draw(st.integers(1, 3)))
            if draw(st.booleans()) and kind == "conv":  # often a pool right after
                pk = draw(st.integers(1, 3))
                _, h2, w2, _ = b.tensors[b.cur].shape
                if h2 >= pk and w2 >= pk:
                    fused = draw(st.booleans())
                    ps = (pk, pk) if fused else (draw(st.integers(1, 3)),) * 2
                    pp = (0, 0, 0, 0) if fused else tuple(draw(st.integers(0, pk - 1)) for _ in
                                                         range(4))
                    b.pool("max", (pk, pk), ps, pp)
        elif kind == "pool" and _fits(h, w, k, stride, (1, 1), (0, 0, 0, 0)):
            mode = draw(st.sampled_from(["max", "avg"]))
            b.pool(mode, k, stride, (0, 0, 0, 0), draw(st.booleans()))
        elif kind == "act":
            b.same("act", (1, h, w, c), fn=draw(st.sampled_from(["relu", "relu6"])))
        elif kind == "transpose":
            perm = (0, *draw(st.permutations([1, 2, 3])))
            shape = b.tensors[b.cur].shape
            b.same("transpose", tuple(shape[p] for p in perm), perm=perm)
        elif kind == "pad":
            b.same("pad", (1, h + pads[0] + pads[2], w + pads[1] + pads[3], c), pads=pads)
    _, h, w, c = b.tensors[b.cur].shape
    if draw(st.booleans()) or not b.ops:
        b.same("reshape", (1, h * w * c), shape=(h * w * c,))
        b.fc(draw(st.integers(1, 40)), draw(st.sampled_from(["none", "relu"])))
    n = draw(st.integers(1, 3))
    x = rng.integers(-128, 128, (n, *b.tensors["x"].shape[1:])).astype(np.int8)
    return b.graph(), x, draw(st.sampled_from(ISAS)), draw(st.sampled_from(sorted(INT_MODES)))


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.data_too_large])
@given(chains())
def test_random_chains_match_reference(case):
    graph, x, isa, rounding = case
    want = reference_outputs(graph, x, rounding)
    m = compiled_model(graph, isa, rounding)
    assert segments(m), "the chain was not compiled"
    got = m.run(x)
    assert segments(m)  # and it ran compiled
    assert got.dtype == np.int8 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def _fusion_graph(bias_hi, scale_up):
    """conv 3x3 + relu + 2x2 max pool, reshape, fc: the LeNet pattern, parametrised."""
    rng = np.random.default_rng(5)
    b = _Builder(rng, (1, 9, 9, 3), extreme=False)
    b.conv(20, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), "relu")
    conv = b.ops[-1]
    wt, bt = b.tensors[conv.inputs[1]], b.tensors[conv.inputs[2]]
    bt.data = rng.integers(-bias_hi, bias_hi, bt.data.shape).astype(np.int32)
    bt.data[0] = bias_hi  # one channel near the top of int32 (accumulators may wrap)
    wt.scale = (wt.scale * scale_up).astype(np.float32)
    b.pool("max", (2, 2), (2, 2), (0, 0, 0, 0))
    _, h, w, c = b.tensors[b.cur].shape
    b.same("reshape", (1, h * w * c), shape=(h * w * c,))
    b.fc(10, "none")
    return b.graph()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("bias_hi,scale_up,monotone", [(2**10, 1.0, True),
                                                        (2**31 - 1, 1.0, False),
                                                        (2**10, 1e4, False)])
def test_pool_fusion_paths(isa, bias_hi, scale_up, monotone):
    """Requantize-once where provably monotone, requantize-then-max otherwise: both exact."""
    graph = _fusion_graph(bias_hi, scale_up)
    x = np.random.default_rng(1).integers(-128, 128, (16, 9, 9, 3)).astype(np.int8)
    m = compiled_model(graph, isa)
    (seg,) = segments(m)
    assert ("once per window (monotone)" in seg.plan.source) == monotone
    np.testing.assert_array_equal(m.run(x), reference_outputs(graph, x))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_and_batch_sizes(threads):
    graph = _fusion_graph(2**10, 1.0)
    m = compiled_model(graph, ISAS[-1])
    m.threads = threads
    rng = np.random.default_rng(2)
    for n in (0, 1, 2, 5, 33):
        x = rng.integers(-128, 128, (n, 9, 9, 3)).astype(np.int8)
        got = m.run(x)
        assert got.shape == (n, 10)
        if n:
            np.testing.assert_array_equal(got, reference_outputs(graph, x))
    # a strided (non-contiguous) batch
    x = rng.integers(-128, 128, (6, 9, 9, 3)).astype(np.int8)[::2]
    np.testing.assert_array_equal(m.run(x), reference_outputs(graph, np.ascontiguousarray(x)))


def test_unsupported_ops_run_between_segments():
    """softmax is not compiled: conv+pool and the FC chain become two... segments around it
    only when chained; here softmax ends the graph and runs on the per-op kernels."""
    graph = _fusion_graph(2**10, 1.0)
    last = graph.outputs[0]
    out = "probs"
    graph.tensors[out] = Tensor(out, graph.tensors[last].shape, "int8",
                                scale=np.array([1 / 256], np.float32),
                                zero_point=np.array([-128], np.int32))
    graph.ops.append(Op("softmax", [last], [out], {"beta": 1.0}, name="softmax"))
    graph.outputs = [out]
    x = np.random.default_rng(3).integers(-128, 128, (4, 9, 9, 3)).astype(np.int8)
    m = compiled_model(graph, ISAS[-1])
    assert len(segments(m)) == 1 and len(m._run_steps()) == 2
    np.testing.assert_array_equal(m.run(x), reference_outputs(graph, x))


def test_compile_failure_falls_back_to_per_op_kernels():
    """If Numba/LLVM cannot build the generated module (an old Numba on some board), the
    chain runs op by op, with a warning, and the outputs do not change."""
    graph = _fusion_graph(2**10, 1.0)
    x = np.random.default_rng(4).integers(-128, 128, (3, 9, 9, 3)).astype(np.int8)
    m = compiled_model(graph, ISAS[-1])
    step = m._run_steps()[0]

    def fail(*args):
        raise RuntimeError("simulated LLVM failure")

    step.segment.module = type("Broken", (), {"run": staticmethod(fail)})
    with pytest.warns(RuntimeWarning, match="op by op"):
        got = m.run(x)
    assert step.fell_back
    np.testing.assert_array_equal(got, reference_outputs(graph, x))
    np.testing.assert_array_equal(m.run(x), got)  # and stays on the per-op path


# ----------------------------------------------------------------------------------------
# Real models
# ----------------------------------------------------------------------------------------


def _quantized(path, limit=200):
    import edgeconv

    calib = np.load(EXAMPLES / "mnist_calib_200.npz")["x"]
    return edgeconv.quantize_model(edgeconv.load(path), calib, limit=limit).graph


@pytest.fixture(scope="module")
def lenet_graph():
    return _quantized(EXAMPLES / "lenet5.onnx")


@pytest.fixture(scope="module")
def mnist_1k():
    return np.load(EXAMPLES / "mnist_test_1k.npz")["x"]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("rounding", ["double", "single", "double-up", "tflite-opt"])
def test_lenet5_compiled_matches_reference(lenet_graph, mnist_1k, isa, rounding):
    m = compiled_model(lenet_graph, isa, rounding)
    x = m.prepare_input(mnist_1k)
    want = reference_outputs(lenet_graph, x, rounding)
    got = m.run(x)
    np.testing.assert_array_equal(got, want)
    seg = segments(m)  # after the run: nothing fell back
    assert seg, "LeNet-5 must run on the compiled engine"
    if rounding != "tflite-opt":  # whole model in one call
        assert len(m._run_steps()) == 1
        src = seg[0].plan.source
        assert src.count("once per window (monotone)") == 2  # both conv+pool fused


@pytest.mark.parametrize(
    "name", ["mnist-8.onnx", "lenet5_pytorch2.0_opset10_gemm_flatten.onnx"]
)
def test_public_models_compiled_match_reference(name, mnist_1k):
    graph = _quantized(shared_file(CASES / name))
    for isa in ISAS:
        m = compiled_model(graph, isa)
        x = m.prepare_input(mnist_1k[:300])
        np.testing.assert_array_equal(m.run(x), reference_outputs(graph, x))
        assert segments(m)


# ----------------------------------------------------------------------------------------
# Vectorization of the generated conv loop
# ----------------------------------------------------------------------------------------


def _image_function(graph, isa):
    """The generated per-image function, compiled here (``run`` may have come from the
    cache, which holds no separate copy of it) for the argument types ``run`` passes."""
    from numba import njit

    m = compiled_model(graph, isa)
    (seg,) = segments(m)
    plan = seg.plan
    args = (
        np.zeros(int(np.prod(plan.in_shape)), np.int8), 0,
        np.zeros(int(np.prod(plan.out_shape)), np.int8), 0,
        seg._scratch[0], plan.w8, plan.p32, plan.tab,
        np.empty(plan.acc_size, np.int32), np.empty(plan.pix_size, np.int64),
    )
    fn = njit(seg.module.image.py_func)
    fn(*args)
    return fn, fn.signatures[0]


def _conv_loop_ops(asm: str) -> list[str]:
    return re.findall(r"^\s+([a-z][\w.]*)\s", asm, re.M)


@pytest.mark.skipif(__import__("platform").machine() not in ("x86_64", "AMD64"),
                    reason="x86-64 assembly check")
@pytest.mark.parametrize("isa", ISAS)
def test_conv_inner_loop_is_vectorized_x86(lenet_graph, isa):
    fn, sig = _image_function(lenet_graph, isa)
    ops = _conv_loop_ops(fn.inspect_asm(sig))
    if isa == "vnni512":
        # 64 int8 multiply-adds per instruction on 512-bit registers
        assert ops.count("vpdpbusd") >= 2
        assert re.search(r"vpdpbusd\s+[^\n]*%zmm", fn.inspect_asm(sig))
    else:
        assert ops.count("vpmulld") + ops.count("pmulld") + ops.count("vpmaddwd") >= 2
    # the microkernel's loop: no scalar multiply of int8 values in the conv loop
    assert ops.count("imull") < 20


AARCH64 = [("cortex-a72", {"smlal", "smlal2", "mla"}), ("cortex-a76", {"smlal", "smlal2", "mla",
                                                                       "sdot"})]


@pytest.mark.parametrize("cpu,vector_macs", AARCH64)
def test_conv_inner_loop_is_vectorized_aarch64(lenet_graph, cpu, vector_macs):
    """The generic microkernel's LLVM IR, as Numba emitted it here, compiled for AArch64."""
    import llvmlite.binding as ll

    if not hasattr(ll, "create_pass_builder"):
        pytest.skip("this llvmlite has no new-pass-manager API to optimize the retargeted IR")
    fn, sig = _image_function(lenet_graph, "generic")
    ir = fn.inspect_llvm(sig)
    asm = compiled.retarget_asm(ir, "aarch64-unknown-linux-gnu", cpu)
    ops = _conv_loop_ops(asm)
    found = vector_macs & set(ops)
    assert found, f"no NEON multiply-accumulate in the {cpu} code"
    # the accumulators live in 128-bit v registers: widening MACs on .4s lanes
    assert re.search(r"(smlal2?|mla|sdot)\s+v\d+\.4s", asm)
    assert ll.llvm_version_info >= (11,)


def test_op_names_cannot_inject_code_into_the_generated_module(lenet_graph, mnist_1k, monkeypatch):
    """Op names come from the model file and reach comments in generated code: a newline in
    one must not end the comment (loading a model must never execute code from it)."""
    import copy
    import os

    monkeypatch.delenv("EDGECONV_PWNED", raising=False)
    graph = copy.deepcopy(lenet_graph)
    for op in graph.ops:
        op.name = f"{op.name}\nimport os\nos.environ['EDGECONV_PWNED'] = '1'\n#"
    m = compiled_model(graph, ISAS[0])
    got = m.run(m.prepare_input(mnist_1k[:8]))
    np.testing.assert_array_equal(got, compiled_model(lenet_graph, ISAS[0]).run(
        m.prepare_input(mnist_1k[:8])))
    src = segments(m)[0].plan.source
    assert "EDGECONV_PWNED" not in os.environ
    assert not any(line.lstrip().startswith("os.environ") for line in src.splitlines())
