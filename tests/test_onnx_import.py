"""ONNX import against onnxruntime: every op type the importer claims, built in memory with
``onnx.helper``, run through ``edgeconv.load(path).run(x)`` (float path) and compared with
onnxruntime on random inputs; the importer's error messages; and an int8 sanity check
(quantize, run dequantized, stay close to float) that catches layout bugs in the int8 path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgeconv
from edgeconv.errors import EdgeconvError

ort = pytest.importorskip("onnxruntime")


# ------------------------------------------------------------------------ building models
class Net:
    """A small ONNX graph under construction: one float input ``x`` (batch dimension
    symbolic unless `batch` is given), and the output of the last node added is the graph
    output."""

    def __init__(self, in_shape, *, opset: int = 13, batch: int | str = "N", seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.in_shape = tuple(in_shape)  # without the batch
        self.batch = batch
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.last = "x"
        self.count = 0
        self.ir_version = 8
        self.inits_as_inputs = False
        self.check: Callable | None = None  # extra assertions on the imported IR graph
        self.x_scale = 1.0  # input magnitude
        self.out_dims: list | None = None  # output shape where ONNX shape inference has none

    def _name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}{self.count}"

    def init(self, arr, hint: str = "c") -> str:
        name = self._name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def ints(self, values, hint: str = "i") -> str:
        return self.init(np.asarray(values, np.int64), hint)

    def floats(self, values, hint: str = "f") -> str:
        return self.init(np.asarray(values, np.float32), hint)

    def randn(self, *shape, scale: float | None = None) -> np.ndarray:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        s = 1.0 / np.sqrt(fan_in) if scale is None else scale
        return (self.rng.standard_normal(shape) * s).astype(np.float32)

    def weight(self, *shape, scale: float | None = None, hint: str = "w") -> str:
        return self.init(self.randn(*shape, scale=scale), hint)

    def node(self, op: str, *inputs: str | None, n_out: int = 1, name: str | None = None,
             **attrs) -> str:
        """Append a node; an input of None (or no inputs at all, except for a Constant) means
        the previous node's output."""
        if not inputs and op != "Constant":
            inputs = (None,)
        ins = [self.last if i is None else i for i in inputs]
        outs = [self._name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, ins, outs, name=name or f"{op}_{self.count}",
                                           **attrs))
        self.last = outs[0]
        return outs[0]

    def conv(self, cin: int, cout: int, k, *, x: str | None = None, bias: bool = True,
             group: int = 1, **attrs) -> str:
        """A Conv with random weights; 1-D (an int kernel is (k,)) when the net's input is."""
        k = (k,) if isinstance(k, int) and len(self.in_shape) == 2 else k
        k = (k, k) if isinstance(k, int) else tuple(k)
        w = self.weight(cout, cin // group, *k)
        ins = [x, w] + ([self.init(self.randn(cout, scale=0.5), "b")] if bias else [])
        return self.node("Conv", *ins, group=group, **attrs)

    def gemm(self, k: int, m: int, *, x: str | None = None, **attrs) -> str:
        trans_b = attrs.get("transB", 0)
        w = self.weight(*((m, k) if trans_b else (k, m)))
        return self.node("Gemm", x, w, self.init(self.randn(m, scale=0.5), "b"), **attrs)

    def model(self) -> onnx.ModelProto:
        dims = [self.batch, *self.in_shape]
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)]
        if self.inits_as_inputs:
            inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                       for t in self.inits]
        outputs = [helper.make_tensor_value_info(self.last, TensorProto.FLOAT, None)]
        graph = helper.make_graph(self.nodes, "test", inputs, outputs, initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = self.ir_version
        # the output's type (the checker wants a shape) comes from ONNX shape inference
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        out = inferred.graph.output[0]
        if not out.type.tensor_type.HasField("shape"):
            out = helper.make_tensor_value_info(self.last, TensorProto.FLOAT, self.out_dims)
        model.graph.output[0].CopyFrom(out)
        onnx.checker.check_model(model, full_check=True)
        return model

    def save(self, folder: Path, name: str = "model") -> Path:
        path = folder / f"{name}.onnx"
        onnx.save(self.model(), str(path))
        return path

    def sample(self, n: int, seed: int = 1) -> np.ndarray:
        n = self.batch if isinstance(self.batch, int) else n
        rng = np.random.default_rng(seed)
        return (rng.standard_normal((n, *self.in_shape)) * self.x_scale).astype(np.float32)


def onnxruntime_run(path: Path, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # no warnings about old opsets
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def assert_matches_onnxruntime(path: Path, x: np.ndarray) -> None:
    ref = onnxruntime_run(path, x)
    got = edgeconv.load(path).run(x)
    assert got.dtype == np.float32
    assert got.shape == ref.shape
    tol = 1e-4 * max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=tol)


def no_transpose(graph) -> None:
    """Only the graph input's NCHW -> NHWC transpose is left: the NHWC -> NCHW one before the
    Flatten/Reshape was folded into the FC weights."""
    kinds = [op.kind for op in graph.ops]
    assert kinds.count("transpose") <= 1, kinds
    assert all(op.attrs["perm"] == (0, 2, 3, 1) for op in graph.ops if op.kind == "transpose")


def kinds_are(*kinds: str) -> Callable:
    def check(graph) -> None:
        assert tuple(op.kind for op in graph.ops) == kinds

    return check


CASES: dict[str, Callable[[], Net]] = {}


def case(fn: Callable[[], Net]) -> Callable[[], Net]:
    CASES[fn.__name__] = fn
    return fn


# -------------------------------------------------------------------------------- Conv
# (input C,H,W or C,L; cout; kernel; attributes)
CONV = {
    "pads_symmetric": ((3, 8, 8), 4, 3, dict(pads=[1, 1, 1, 1])),
    "pads_asymmetric": ((3, 7, 9), 5, 3, dict(pads=[0, 1, 2, 1])),
    "same_upper_stride2": ((3, 7, 8), 4, 3, dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    "same_lower_stride2": ((3, 7, 8), 4, 3, dict(auto_pad="SAME_LOWER", strides=[2, 2])),
    "same_upper_even_kernel": ((2, 6, 7), 3, 4, dict(auto_pad="SAME_UPPER")),
    "same_lower_even_kernel": ((2, 6, 7), 3, 4, dict(auto_pad="SAME_LOWER")),
    "valid_stride3": ((3, 11, 10), 4, 3, dict(auto_pad="VALID", strides=[3, 3])),
    "valid": ((3, 6, 6), 4, 3, dict(auto_pad="VALID")),
    "stride2_pads": ((3, 9, 8), 4, 3, dict(strides=[2, 2], pads=[1, 0, 1, 0])),
    "stride3_pads": ((3, 10, 10), 4, 3, dict(strides=[3, 3], pads=[1, 1, 1, 1])),
    "strides_mixed": ((3, 9, 9), 4, 3, dict(strides=[1, 2], pads=[1, 1, 0, 0])),
    "dilation2": ((3, 10, 10), 4, 3, dict(dilations=[2, 2], pads=[2, 2, 2, 2])),
    "dilation2_stride2_asym": ((3, 11, 10), 4, 3,
                               dict(dilations=[2, 2], strides=[2, 2], pads=[0, 1, 2, 0])),
    "dilations_mixed": ((2, 9, 9), 3, 3, dict(dilations=[1, 2], strides=[2, 1])),
    "rect_kernel": ((3, 8, 8), 4, (3, 1), dict(pads=[1, 0, 1, 0])),
    "pointwise": ((5, 4, 4), 6, 1, {}),
    "no_bias": ((3, 8, 8), 4, 3, dict(pads=[1, 1, 1, 1], bias=False)),
    "single_channel_input": ((1, 8, 8), 4, 3, dict(pads=[1, 1, 1, 1])),
    "single_output_channel": ((3, 6, 6), 1, 3, {}),
    "depthwise_m1": ((4, 8, 8), 4, 3, dict(group=4, pads=[1, 1, 1, 1], strides=[2, 2])),
    "depthwise_m2": ((3, 8, 8), 6, 3, dict(group=3, pads=[2, 1, 0, 1], dilations=[2, 2])),
    "depthwise_m2_no_bias": ((3, 7, 7), 6, 3, dict(group=3, auto_pad="SAME_UPPER",
                                                    strides=[2, 2], bias=False)),
    "conv1d": ((4, 20), 6, 3, dict(pads=[1, 2], strides=[2], dilations=[2])),
    "conv1d_same_upper": ((3, 15), 5, 4, dict(auto_pad="SAME_UPPER", strides=[2])),
    "conv1d_single_channel": ((1, 16), 3, 5, dict(pads=[2, 2])),
    "conv1d_depthwise_m2": ((3, 12), 6, 3, dict(group=3, pads=[1, 1])),
}


def _conv_case(in_shape, cout, k, attrs) -> Callable[[], Net]:
    def build() -> Net:
        net = Net(in_shape)
        net.conv(in_shape[0], cout, k, **attrs)
        return net

    return build


for _name, _spec in CONV.items():
    CASES[f"conv_{_name}"] = _conv_case(*_spec)


@case
def conv_chain_relu():
    net = Net((3, 9, 9))
    net.conv(3, 4, 3, pads=[1, 1, 1, 1])
    net.node("Relu")
    net.conv(4, 6, 3, strides=[2, 2])
    return net


# -------------------------------------------------------------------------- Gemm / MatMul
@case
def gemm_transb1():
    net = Net((16,))
    net.gemm(16, 8, transB=1)
    return net


@case
def gemm_transb0_alpha_beta_bias_1xm():
    net = Net((16,))
    w = net.weight(16, 8)
    net.node("Gemm", None, w, net.init(net.randn(1, 8), "b"), alpha=0.5, beta=2.0)
    return net


@case
def gemm_transb1_alpha_beta_bias_m():
    net = Net((12,))
    w = net.weight(5, 12)
    net.node("Gemm", None, w, net.init(net.randn(5), "b"), transB=1, alpha=-1.5, beta=0.25)
    return net


@case
def gemm_scalar_bias():
    net = Net((12,))
    net.node("Gemm", None, net.weight(12, 5), net.floats([0.75]))
    return net


@case
def gemm_no_bias():
    net = Net((12,))
    net.node("Gemm", None, net.weight(5, 12), transB=1)
    return net


@case
def matmul_add_bias():
    net = Net((16,))
    net.node("MatMul", None, net.weight(16, 8))
    net.node("Add", None, net.init(net.randn(8), "b"))
    return net


@case
def matmul_add_bias_first_operand():
    net = Net((16,))
    mm = net.node("MatMul", None, net.weight(16, 8))
    net.node("Add", net.init(net.randn(1, 8), "b"), mm)
    return net


@case
def matmul_no_bias():
    net = Net((10,))
    net.node("MatMul", None, net.weight(10, 3))
    return net


@case
def gemm_relu_gemm():
    net = Net((16,))
    net.gemm(16, 12, transB=1)
    net.node("Relu")
    net.gemm(12, 4)
    return net


# ---------------------------------------------------------------------------- activations
@case
def relu_after_conv():
    net = Net((3, 6, 6))
    net.conv(3, 4, 3, pads=[1, 1, 1, 1])
    net.node("Relu")
    net.check = kinds_are("transpose", "conv", "transpose")  # the Relu is fused
    return net


@case
def relu_on_input():
    net = Net((3, 5, 5))
    net.node("Relu")
    return net


def _clip_net(opset: int) -> Net:
    net = Net((3, 6, 6), opset=opset)
    net.x_scale = 4.0  # so that the conv output crosses 6 and the lower bounds
    net.conv(3, 4, 3, pads=[1, 1, 1, 1])
    return net


def fused(activation: str) -> Callable:
    def check(graph) -> None:
        convs = [op for op in graph.ops if op.kind == "conv"]
        assert [op.attrs["activation"] for op in convs] == [activation]
        assert "act" not in [op.kind for op in graph.ops]

    return check


@case
def clip_relu6_opset13_inputs():
    net = _clip_net(13)
    net.node("Clip", None, net.floats(0.0), net.floats(6.0))
    net.check = fused("relu6")
    return net


@case
def clip_relu6_opset6_attributes():
    net = _clip_net(6)
    net.node("Clip", min=0.0, max=6.0)
    net.check = fused("relu6")
    return net


@case
def clip_range_opset13_constants():
    net = _clip_net(13)
    conv = net.last
    lo = net.node("Constant", value=numpy_helper.from_array(np.array(-0.5, np.float32)))
    hi = net.node("Constant", value=numpy_helper.from_array(np.array(0.75, np.float32)))
    net.node("Clip", conv, lo, hi)
    net.check = fused("clip")
    return net


@case
def clip_range_opset6_attributes():
    net = _clip_net(6)
    net.node("Clip", min=-1.0, max=2.5)
    return net


@case
def clip_min_only_opset13():
    net = _clip_net(13)
    net.node("Clip", None, net.floats(0.0))
    net.check = fused("relu")
    return net


@case
def clip_max_only_opset11():
    net = Net((16,), opset=11)
    net.x_scale = 4.0
    net.gemm(16, 8)
    net.node("Clip", None, "", net.floats(0.5))
    return net


@case
def tanh_after_gemm():
    net = Net((16,))
    net.x_scale = 3.0
    net.gemm(16, 8, transB=1)
    net.node("Tanh")
    return net


@case
def sigmoid_after_conv():
    net = Net((3, 6, 6))
    net.x_scale = 3.0
    net.conv(3, 4, 3)
    net.node("Sigmoid")
    return net


# ---------------------------------------------------------------------------------- pools
POOL = {
    "maxpool_k3_s2_pads": ((3, 8, 8), "MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2],
                                                      pads=[1, 1, 1, 1])),
    "maxpool_asym_pads": ((2, 7, 8), "MaxPool", dict(kernel_shape=[2, 3], pads=[0, 1, 1, 0])),
    "maxpool_k2_s2_ceil": ((3, 7, 7), "MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2],
                                                      ceil_mode=1)),
    "maxpool_k3_s2_pads_ceil": ((3, 8, 8), "MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2],
                                                           pads=[1, 1, 1, 1], ceil_mode=1)),
    "maxpool_s3_ceil": ((2, 10, 11), "MaxPool", dict(kernel_shape=[2, 2], strides=[3, 3],
                                                     ceil_mode=1)),
    # ceil mode would start a last window in the end padding: ONNX drops that window (the
    # spec and onnxruntime do; ONNX shape inference still counts it)
    "maxpool_ceil_window_in_padding": ((2, 7, 7), "MaxPool", dict(kernel_shape=[2, 2],
                                                                  strides=[2, 2],
                                                                  pads=[1, 1, 1, 1],
                                                                  ceil_mode=1)),
    "maxpool_valid_ceil": ((2, 7, 8), "MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2],
                                                      auto_pad="VALID", ceil_mode=1)),
    "maxpool_same_upper": ((3, 7, 8), "MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2],
                                                      auto_pad="SAME_UPPER")),
    "maxpool_1d": ((3, 15), "MaxPool", dict(kernel_shape=[3], strides=[2], pads=[1, 1])),
    "avgpool_exclude_pad": ((3, 8, 8), "AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2],
                                                           pads=[1, 1, 1, 1],
                                                           count_include_pad=0)),
    "avgpool_include_pad": ((3, 8, 8), "AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2],
                                                           pads=[1, 1, 1, 1],
                                                           count_include_pad=1)),
    "avgpool_asym_pads_exclude": ((2, 7, 6), "AveragePool", dict(kernel_shape=[3, 2],
                                                                 pads=[0, 1, 2, 0])),
    "avgpool_asym_pads_include": ((2, 7, 6), "AveragePool", dict(kernel_shape=[3, 2],
                                                                 pads=[0, 1, 2, 0],
                                                                 count_include_pad=1)),
    "avgpool_ceil_same_output": ((3, 7, 7), "AveragePool", dict(kernel_shape=[3, 3],
                                                                strides=[2, 2], ceil_mode=1)),
    "avgpool_ceil_extra_window_exclude_pad": ((2, 7, 8), "AveragePool",
                                              dict(kernel_shape=[2, 2], strides=[2, 2],
                                                   pads=[1, 0, 1, 0], ceil_mode=1)),
    "avgpool_ceil_extra_window_include_pad_no_pads": ((2, 7, 7), "AveragePool",
                                                      dict(kernel_shape=[2, 2], strides=[2, 2],
                                                           ceil_mode=1, count_include_pad=1)),
    "avgpool_1d": ((3, 16), "AveragePool", dict(kernel_shape=[4], strides=[4])),
    "global_avgpool": ((5, 6, 7), "GlobalAveragePool", {}),
    "global_maxpool": ((5, 6, 7), "GlobalMaxPool", {}),
    "global_avgpool_1d": ((4, 9), "GlobalAveragePool", {}),
}


def _pool_case(in_shape, op, attrs) -> Callable[[], Net]:
    def build() -> Net:
        net = Net(in_shape, opset=13 if op.startswith("Global") else 12)
        net.conv(in_shape[0], in_shape[0] + 1, 1)  # C>1 and a conv-stored (NHWC) input
        net.node(op, **attrs)
        return net

    return build


for _name, _spec in POOL.items():
    CASES[_name] = _pool_case(*_spec)


# ----------------------------------------------------------------------- flatten / reshape
@case
def flatten_conv_gemm():
    net = Net((3, 6, 6))
    net.conv(3, 4, 3, pads=[1, 1, 1, 1])
    net.node("Relu")
    net.node("Flatten")
    net.gemm(4 * 36, 10, transB=1)
    net.check = no_transpose
    return net


@case
def flatten_single_channel_input_no_transpose_at_all():
    net = Net((1, 8, 8))
    net.conv(1, 4, 3)
    net.node("Relu")
    net.node("Flatten")
    net.gemm(4 * 36, 10, transB=1)
    net.check = kinds_are("reshape", "conv", "reshape", "fc")
    return net


@case
def flatten_maxpool_gemm_matmul():
    net = Net((2, 8, 8))
    net.conv(2, 5, 3)
    net.node("MaxPool", kernel_shape=[2, 2], strides=[2, 2])
    net.node("Flatten")
    net.node("MatMul", None, net.weight(5 * 9, 7))
    net.node("Add", None, net.init(net.randn(7), "b"))
    net.check = no_transpose
    return net


@case
def flatten_conv1d_gemm():
    net = Net((3, 12))
    net.conv(3, 4, 3)
    net.node("Flatten")
    net.gemm(4 * 10, 5, transB=1)
    net.check = no_transpose
    return net


@case
def flatten_as_output():
    net = Net((3, 4, 5))
    net.conv(3, 4, 1)
    net.node("Flatten")
    return net


@case
def reshape_zero_minus_one():
    net = Net((3, 6, 6))
    net.conv(3, 4, 3)
    net.node("Reshape", None, net.ints([0, -1]))
    net.gemm(4 * 16, 6)
    net.check = no_transpose
    return net


@case
def reshape_minus_one_first():
    net = Net((3, 6, 6))
    net.conv(3, 4, 3)
    net.node("Reshape", None, net.ints([-1, 4 * 16]))
    net.gemm(4 * 16, 6)
    return net


@case
def reshape_to_4d_then_conv():
    net = Net((12,))
    net.gemm(12, 48)
    net.node("Reshape", None, net.ints([0, 3, 4, -1]))
    net.conv(3, 2, 3, pads=[1, 1, 1, 1])
    return net


@case
def reshape_3d_output():
    net = Net((3, 4, 4))
    net.conv(3, 6, 1)
    net.node("Reshape", None, net.ints([0, 0, -1]))
    return net


@case
def reshape_by_shape_subgraph():
    """What torch.onnx emits for x.view(x.size(0), -1)."""
    net = Net((3, 6, 6))
    conv = net.conv(3, 4, 3)
    shape = net.node("Shape", conv)
    idx = net.node("Constant", value=numpy_helper.from_array(np.array(0, np.int64)))
    batch = net.node("Gather", shape, idx, axis=0)
    batch1 = net.node("Unsqueeze", batch, net.ints([0]))
    minus1 = net.node("Constant", value=numpy_helper.from_array(np.array([-1], np.int64)))
    target = net.node("Concat", batch1, minus1, axis=0)
    net.node("Reshape", conv, target)
    net.gemm(4 * 16, 5, transB=1)
    net.check = no_transpose
    return net


@case
def reshape_by_shape_subgraph_opset11():
    """Same, opset 11 (Unsqueeze axes as an attribute), with a channel count read from the
    shape too: x.view(x.size(0), x.size(1), -1)."""
    net = Net((3, 6, 6), opset=11)
    conv = net.conv(3, 4, 3)
    shape = net.node("Shape", conv)
    parts = []
    for i in (0, 1):
        idx = net.node("Constant", value=numpy_helper.from_array(np.array(i, np.int64)))
        dim = net.node("Gather", shape, idx, axis=0)
        parts.append(net.node("Unsqueeze", dim, axes=[0]))
    target = net.node("Concat", *parts, net.ints([-1]), axis=0)
    net.node("Reshape", conv, target)
    net.out_dims = ["N", 4, 16]
    return net


@case
def reshape_by_shape_slice_opset15():
    """Shape with start/end (opset 15): x.view(*x.shape[:2], -1)."""
    net = Net((3, 6, 6), opset=15)
    conv = net.conv(3, 4, 3)
    first2 = net.node("Shape", conv, start=0, end=2)
    target = net.node("Concat", first2, net.ints([-1]), axis=0)
    net.node("Reshape", conv, target)
    net.out_dims = ["N", 4, 16]
    return net


# ------------------------------------------------------------------- transpose / pad layout
@case
def transpose_keras_nhwc_input():
    net = Net((6, 6, 3))  # [N,H,W,C]
    net.node("Transpose", perm=[0, 3, 1, 2])
    net.conv(3, 4, 3, pads=[1, 1, 1, 1])
    net.node("Relu")
    net.check = kinds_are("conv", "transpose")  # NHWC input read directly
    return net


@case
def transpose_keras_nlc_input_conv1d():
    net = Net((10, 3))  # [N,L,C]
    net.node("Transpose", perm=[0, 2, 1])
    net.conv(3, 4, 3)
    return net


@case
def transpose_to_nhwc_output():
    net = Net((3, 5, 6))
    net.conv(3, 4, 3, pads=[1, 1, 1, 1])
    net.node("Transpose", perm=[0, 2, 3, 1])
    net.check = kinds_are("transpose", "conv")  # the output is the conv's own NHWC data
    return net


@case
def transpose_swap_hw():
    net = Net((3, 5, 6))
    net.conv(3, 4, 3)
    net.node("Transpose", perm=[0, 1, 3, 2])
    net.conv(4, 2, 2)
    return net


@case
def transpose_2d_input_to_conv1d():
    net = Net((7, 3))
    net.node("Transpose", perm=[0, 2, 1])
    net.node("Relu")
    net.conv(3, 2, 3, pads=[1, 1])
    return net


@case
def pad_then_conv():
    net = Net((3, 6, 7))
    net.node("Pad", None, net.ints([0, 0, 1, 2, 0, 0, 2, 1]))
    net.conv(3, 4, 3)
    return net


@case
def pad_constant_zero_input_then_conv():
    net = Net((3, 6, 7), opset=11)
    net.node("Pad", None, net.ints([0, 0, 1, 0, 0, 0, 0, 3]), net.floats(0.0), mode="constant")
    net.conv(3, 4, 3, strides=[2, 2])
    return net


@case
def pad_opset2_attribute_then_conv():
    net = Net((3, 6, 7), opset=10)
    net.node("Pad", pads=[0, 0, 2, 1, 0, 0, 0, 1])
    net.conv(3, 4, 3)
    return net


@case
def pad_opset18_axes_then_conv():
    net = Net((3, 6, 7), opset=18)
    net.node("Pad", None, net.ints([1, 2, 0, 1]), "", net.ints([2, 3]))
    net.conv(3, 4, 3)
    return net


@case
def pad_1d_then_conv1d():
    net = Net((3, 10))
    net.node("Pad", None, net.ints([0, 0, 2, 0, 0, 1]))
    net.conv(3, 4, 3)
    return net


# ----------------------------------------------------------------------------- batch norm
def _bn_params(net: Net, c: int) -> list[str]:
    rng = net.rng
    return [net.floats(rng.uniform(0.5, 1.5, c)), net.floats(rng.normal(0, 0.5, c)),
            net.floats(rng.normal(0, 0.5, c)), net.floats(rng.uniform(0.2, 2.0, c))]


def _bn_folded(g) -> None:
    kinds = [op.kind for op in g.ops]
    assert kinds.count("conv") == 1, kinds
    assert not any(op.attrs.get("batchnorm") for op in g.ops)


@case
def batchnorm_after_conv():
    net = Net((3, 6, 6))
    net.conv(3, 4, 3, pads=[1, 1, 1, 1])
    net.node("BatchNormalization", None, *_bn_params(net, 4), epsilon=1e-3)
    net.check = _bn_folded
    return net


@case
def batchnorm_after_conv_no_bias_relu():
    net = Net((3, 6, 6))
    net.conv(3, 4, 3, bias=False)
    net.node("BatchNormalization", None, *_bn_params(net, 4))
    net.node("Relu")
    net.check = lambda g: (_bn_folded(g), kinds_are("transpose", "conv", "transpose")(g))
    return net


@case
def batchnorm_after_depthwise():
    net = Net((3, 6, 6))
    net.conv(3, 6, 3, group=3, pads=[1, 1, 1, 1])
    net.node("BatchNormalization", None, *_bn_params(net, 6))
    net.check = _bn_folded
    return net


@case
def batchnorm_after_conv1d():
    net = Net((3, 12))
    net.conv(3, 4, 3)
    net.node("BatchNormalization", None, *_bn_params(net, 4))
    net.check = _bn_folded
    return net


@case
def batchnorm_standalone_on_input():
    net = Net((3, 5, 6))
    net.node("BatchNormalization", None, *_bn_params(net, 3))
    return net


@case
def batchnorm_after_relu_not_foldable():
    net = Net((3, 6, 6))
    net.conv(3, 4, 3)
    net.node("Relu")
    net.node("BatchNormalization", None, *_bn_params(net, 4))
    return net


# -------------------------------------------------------------------------------- softmax
def _softmax_case(op: str, opset: int, axis: int | None) -> Callable[[], Net]:
    def build() -> Net:
        net = Net((16,), opset=opset)
        net.x_scale = 3.0
        net.gemm(16, 10, transB=1)
        net.node(op, **({} if axis is None else {"axis": axis}))
        return net

    return build


for _op in ("Softmax", "LogSoftmax"):
    CASES[f"{_op.lower()}_opset11_axis1"] = _softmax_case(_op, 11, 1)
    CASES[f"{_op.lower()}_opset11_default_axis"] = _softmax_case(_op, 11, None)
    CASES[f"{_op.lower()}_opset13_axis_minus1"] = _softmax_case(_op, 13, -1)
    CASES[f"{_op.lower()}_opset13_default_axis"] = _softmax_case(_op, 13, None)


@case
def softmax_after_flatten():
    net = Net((3, 4, 4))
    net.conv(3, 2, 3)
    net.node("Flatten")
    net.node("Softmax", axis=1)
    return net


# -------------------------------------------------------------------- dropped / plumbing
@case
def dropout_and_identity_dropped():
    net = Net((3, 6, 6))
    net.conv(3, 4, 3)
    net.node("Dropout", None, net.floats(0.3), n_out=2)
    net.node("Identity")
    net.node("Relu")
    net.check = kinds_are("transpose", "conv", "transpose")
    return net


@case
def dropout_opset10_ratio_attribute():
    net = Net((8,), opset=10)
    net.gemm(8, 4)
    net.node("Dropout", ratio=0.5)
    return net


@case
def constant_node_feeds_weight():
    net = Net((3, 6, 6))
    w = net.node("Constant", value=numpy_helper.from_array(net.randn(4, 3, 3, 3), "wc"))
    b = net.node("Constant", value_floats=[0.1, -0.2, 0.3, 0.4])
    net.node("Conv", "x", w, b, pads=[1, 1, 1, 1])
    return net


@case
def constant_folded_weight_expression():
    """A weight computed from constants (Mul of an initializer by a Constant)."""
    net = Net((8,))
    k = net.node("Constant", value_float=0.5)
    w = net.node("Mul", net.weight(8, 4), k)
    net.node("MatMul", "x", w)
    return net


@case
def constant_folded_expressions():
    """Weights and shapes computed by constant subgraphs of every foldable op type."""
    net = Net((8,))
    half = net.node("Constant", value_float=0.5)
    w1 = net.node("Squeeze", net.weight(1, 8, 4), net.ints([0]))  # (8, 4)
    w1 = net.node("Div", net.node("Sub", w1, net.floats(0.1)), net.floats(2.0))
    w1 = net.node("Add", net.node("Mul", w1, half), net.floats(0.05))
    a = net.node("MatMul", "x", w1)
    w2 = net.node("Transpose", net.weight(4, 8), perm=[1, 0])  # (8, 4)
    b = net.node("MatMul", "x", net.node("Identity", w2))
    w3 = net.node("Flatten", net.weight(8, 2, 2), axis=1)  # (8, 4)
    c = net.node("MatMul", "x", w3)
    w4 = net.node("Reshape", net.weight(32), net.ints([8, -1]))
    shape = net.node("Cast", net.floats([0, -1]), to=TensorProto.INT64)
    w4 = net.node("Reshape", w4, net.node("Div", shape, net.ints(1)))  # integer Div
    d = net.node("MatMul", "x", w4)
    net.node("Add", net.node("Add", a, b), net.node("Add", c, d))
    net.out_dims = ["N", 4]
    return net


@case
def initializers_as_graph_inputs():
    net = Net((3, 6, 6), opset=9)
    net.ir_version = 3
    net.inits_as_inputs = True
    net.conv(3, 4, 3, pads=[1, 1, 1, 1])
    net.node("Relu")
    net.node("Flatten")
    net.gemm(4 * 36, 5, transB=1)
    return net


@case
def fixed_batch_one():
    net = Net((3, 6, 6), batch=1)
    net.conv(3, 4, 3)
    net.node("Flatten")
    net.gemm(4 * 16, 3)
    return net


# -------------------------------------------------------------------------------- add
@case
def add_conv_bias_constant():
    net = Net((3, 6, 6))
    net.conv(3, 4, 3, bias=False)
    net.node("Add", None, net.floats(net.randn(4, 1, 1)))
    net.check = kinds_are("transpose", "conv", "transpose")
    return net


@case
def add_residual_two_convs():
    net = Net((4, 6, 6))
    a = net.conv(4, 4, 3, pads=[1, 1, 1, 1])
    r = net.node("Relu", a)
    b = net.conv(4, 4, 3, pads=[1, 1, 1, 1])
    net.node("Add", b, r)
    net.node("Relu")
    return net


@case
def add_input_and_conv_layouts_differ():
    net = Net((3, 5, 5))
    c = net.conv(3, 3, 3, pads=[1, 1, 1, 1])
    net.node("Add", "x", c)
    return net


@case
def add_two_gemms():
    net = Net((8,))
    a = net.gemm(8, 5, x="x")
    b = net.gemm(8, 5, x="x", transB=1)
    net.node("Add", a, b)
    return net


@pytest.mark.parametrize("name", sorted(CASES))
def test_float_matches_onnxruntime(name, tmp_path):
    net = CASES[name]()
    path = net.save(tmp_path)
    assert_matches_onnxruntime(path, net.sample(2))
    if net.check is not None:
        net.check(edgeconv.load(path).graph)


def _lenet_like() -> Net:
    net = Net((3, 12, 12))
    net.conv(3, 6, 3, pads=[1, 1, 1, 1])
    net.node("Relu")
    net.node("MaxPool", kernel_shape=[2, 2], strides=[2, 2])
    net.conv(6, 8, 3)
    net.node("Relu")
    net.node("AveragePool", kernel_shape=[2, 2], strides=[2, 2])
    net.node("Flatten")
    net.gemm(8 * 4, 16, transB=1)
    net.node("Relu")
    net.gemm(16, 10, transB=1)
    return net


@pytest.mark.parametrize("batch", [1, 5])
def test_dynamic_batch(batch, tmp_path):
    net = _lenet_like()
    path = net.save(tmp_path)
    x = net.sample(batch, seed=batch)
    assert_matches_onnxruntime(path, x)
    assert edgeconv.load(path).run(x).shape == (batch, 10)


def test_every_importer_op_type_is_covered():
    """The cases above build every op type the importer lists as supported."""
    from edgeconv.formats import onnx_import

    built = {n.op_type for build in CASES.values() for n in build().nodes}
    claimed = set(onnx_import._CONVERTERS) | set(onnx_import._FOLDABLE)
    missing = claimed - built
    assert not missing, f"no test case builds {sorted(missing)}"


# -------------------------------------------------------------------------------- errors
def _load_error(path) -> str:
    with pytest.raises(EdgeconvError) as err:
        edgeconv.load(path)
    return str(err.value)


def test_unsupported_op_names_node_and_lists_supported(tmp_path):
    net = Net((3, 4, 4))
    net.conv(3, 2, 1)
    net.node("Erf", name="my_erf")
    msg = _load_error(net.save(tmp_path))
    assert "my_erf" in msg and "Erf" in msg and "not supported" in msg
    for op in ("Conv", "Gemm", "MaxPool", "Softmax"):
        assert op in msg


def test_grouped_conv_is_rejected(tmp_path):
    net = Net((4, 6, 6))
    net.conv(4, 4, 3, group=2, name="grouped_conv")
    msg = _load_error(net.save(tmp_path))
    assert "grouped_conv" in msg and "grouped convolution" in msg and "not supported" in msg


def _valid_bytes() -> bytes:
    return _lenet_like().model().SerializeToString()


def test_truncated_file(tmp_path):
    data = _valid_bytes()
    for cut in (len(data) // 2, len(data) - 7, 40):
        p = tmp_path / f"cut{cut}.onnx"
        p.write_bytes(data[:cut])
        assert "not a valid ONNX file" in _load_error(p)


def test_random_bytes(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(5):
        p = tmp_path / f"junk{i}.onnx"
        p.write_bytes(rng.integers(0, 256, 500 + 100 * i, dtype=np.uint8).tobytes())
        assert "not a valid ONNX file" in _load_error(p)


def test_missing_file(tmp_path):
    assert "not found" in _load_error(tmp_path / "nope.onnx")


def test_empty_graph(tmp_path):
    graph = helper.make_graph([], "empty", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 4])], [helper.make_tensor_value_info(
            "x", TensorProto.FLOAT, [1, 4])])
    p = tmp_path / "empty.onnx"
    onnx.save(helper.make_model(graph), str(p))
    assert "no nodes" in _load_error(p)


@pytest.mark.parametrize("where", ["conv_weight", "conv_bias", "gemm_weight", "bn_var"])
def test_nan_in_weights(where, tmp_path):
    net = Net((3, 6, 6))
    net.conv(3, 4, 3)
    net.node("BatchNormalization", None, *_bn_params(net, 4))
    net.node("Flatten")
    net.gemm(4 * 16, 3)
    index = {"conv_weight": 0, "conv_bias": 1, "gemm_weight": -2, "bn_var": 5}[where]
    arr = numpy_helper.to_array(net.inits[index]).copy()
    arr.flat[1] = np.nan if where != "bn_var" else -np.inf
    net.inits[index].CopyFrom(numpy_helper.from_array(arr, net.inits[index].name))
    msg = _load_error(net.save(tmp_path))
    assert "NaN or inf" in msg


def test_constant_add_that_is_not_a_bias(tmp_path):
    net = Net((3, 4, 4))
    net.node("Add", None, net.floats(net.randn(3, 1, 1)), name="add_on_input")
    msg = _load_error(net.save(tmp_path))
    assert "add_on_input" in msg and "adding a constant" in msg


def test_softmax_over_channels_of_4d(tmp_path):
    net = Net((3, 4, 4))
    net.conv(3, 2, 1)
    net.node("Softmax", axis=1, name="sm4d")
    msg = _load_error(net.save(tmp_path))
    assert "sm4d" in msg and "softmax" in msg


def test_avgpool_ceil_include_pad_past_padding(tmp_path):
    net = Net((2, 7, 7), opset=12)
    net.node("AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 1, 0], ceil_mode=1,
             count_include_pad=1, name="avg_ceil")
    msg = _load_error(net.save(tmp_path))
    assert "avg_ceil" in msg and "ceil_mode=1" in msg and "not supported" in msg


def test_gemm_bias_per_row_is_rejected(tmp_path):
    net = Net((6,), batch=1)
    net.node("Gemm", None, net.weight(6, 3), net.floats(np.ones((3, 1))), name="gemm_c")
    msg = _load_error(net.save(tmp_path))
    assert "gemm_c" in msg and "not per output feature" in msg


def test_transpose_moving_batch_is_rejected(tmp_path):
    net = Net((3, 4), batch=1)
    net.node("Transpose", perm=[1, 0, 2], name="tr")
    msg = _load_error(net.save(tmp_path))
    assert "tr" in msg and "batch" in msg


def test_constant_add_on_shared_conv_output_is_never_silently_wrong(tmp_path):
    """The conv output is read twice (once through an Identity alias): merging the Add into
    the conv bias would change the other reader too. Either a correct result or a clear
    error, never a wrong answer."""
    net = Net((3, 5, 5))
    c = net.conv(3, 4, 3, bias=False)
    d = net.node("Identity", c)
    e = net.node("Add", d, net.floats(net.randn(4, 1, 1)), name="bias_add")
    f = net.node("Relu", c)
    net.node("Add", e, f)
    path = net.save(tmp_path)
    try:
        model = edgeconv.load(path)
    except EdgeconvError as err:
        assert "bias_add" in str(err) and "adding a constant" in str(err)
        return
    x = net.sample(2)
    np.testing.assert_allclose(model.run(x), onnxruntime_run(path, x), rtol=1e-4, atol=1e-4)


def test_dynamic_spatial_dimension(tmp_path):
    net = Net((3, "H", 6))
    net.node("Relu")
    assert "only the batch dimension may be dynamic" in _load_error(net.save(tmp_path))


# ----------------------------------------------------------------------------------- int8
def _depthwise_stack() -> Net:
    net = Net((4, 10, 10))
    net.conv(4, 8, 3, group=4, pads=[1, 1, 1, 1], strides=[2, 2])
    net.node("BatchNormalization", None, *_bn_params(net, 8))
    net.node("Clip", None, net.floats(0.0), net.floats(6.0))
    net.conv(8, 6, 1)
    net.node("Relu")
    net.node("GlobalAveragePool")
    net.node("Flatten")
    net.gemm(6, 5, transB=1)
    return net


def _conv1d_stack() -> Net:
    net = Net((3, 24))
    net.conv(3, 6, 5, pads=[2, 2])
    net.node("BatchNormalization", None, *_bn_params(net, 6))
    net.node("Relu")
    net.node("MaxPool", kernel_shape=[2], strides=[2])
    net.conv(6, 4, 3, strides=[2])
    net.node("Flatten")
    net.gemm(4 * 5, 6, transB=1)
    return net


def _keras_stack() -> Net:
    net = Net((9, 8, 3))  # NHWC input
    net.node("Transpose", perm=[0, 3, 1, 2])
    net.node("Pad", None, net.ints([0, 0, 1, 0, 0, 0, 0, 1]))
    net.conv(3, 5, 3, strides=[2, 2])
    net.node("Relu")
    net.node("AveragePool", kernel_shape=[2, 2], pads=[0, 0, 1, 1])
    net.node("Reshape", None, net.ints([0, -1]))
    net.node("MatMul", None, net.weight(5 * 4 * 4, 7))
    net.node("Add", None, net.init(net.randn(7), "b"))
    return net


def _pool_stack() -> Net:
    net = Net((3, 13, 13), opset=12)
    net.conv(3, 6, 3, pads=[1, 1, 1, 1])
    net.node("MaxPool", kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)
    net.node("AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 0], ceil_mode=1)
    net.node("Sigmoid")
    net.node("GlobalMaxPool")
    net.node("Flatten")
    net.gemm(6, 4, transB=1)
    return net


INT8 = {"lenet_like": _lenet_like, "depthwise_stack": _depthwise_stack,
        "conv1d_stack": _conv1d_stack, "keras_stack": _keras_stack, "pool_stack": _pool_stack}


@pytest.mark.parametrize("name", sorted(INT8))
def test_int8_close_to_float(name, tmp_path):
    net = INT8[name]()
    path = net.save(tmp_path)
    x = net.sample(16, seed=2)
    ref = onnxruntime_run(path, x)
    float_model = edgeconv.load(path)
    np.testing.assert_allclose(float_model.run(x), ref, rtol=1e-4,
                               atol=1e-4 * max(1.0, float(np.abs(ref).max())))
    result = edgeconv.quantize_model(float_model, net.sample(64, seed=3))
    q = edgeconv.Model(result.graph)
    assert q.quantized
    y = q.run(x, dequantize=True)
    assert y.shape == ref.shape
    span = float(ref.max() - ref.min())
    err = float(np.abs(y - ref).max())
    assert err < 0.05 * span, f"int8 max error {err:.4f} vs float output range {span:.4f}"
