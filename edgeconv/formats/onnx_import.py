"""ONNX (float) -> IR.

ONNX activations are NCHW; the IR keeps them NHWC. Each ONNX value is tracked
with how it is stored (`Value.layout`): "plain" (stored exactly as ONNX sees it)
or "nchw" (an ONNX NCHW / NCL tensor stored as NHWC / N1LC). Transposes between
the two are free renamings where possible; a real `transpose` op is emitted only
where the data must move (e.g. before a Flatten, later folded into the FC
weights by a pass).

Converters live in a table, one small function per ONNX op type.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import EdgeconvError
from ..fileio import read_bytes
from ..ir import Graph, Op, Tensor, same_pads

NCHW_TO_NHWC = (0, 2, 3, 1)
NHWC_TO_NCHW = (0, 3, 1, 2)


@dataclass
class Value:
    """An ONNX activation as the importer tracks it."""

    name: str  # IR tensor name holding the data
    shape: tuple[int, ...]  # the shape ONNX sees (batch as 1)
    layout: str  # "plain" or "nchw"


class _Importer:
    def __init__(self, model, source: str):
        self.model = model
        self.source = source
        self.graph = Graph({}, [], [], [], {"source_format": "onnx", "source": source})
        self.consts: dict[str, np.ndarray] = {}
        self.values: dict[str, Value] = {}
        self.converted: dict[tuple, object] = {}  # layout conversions already emitted
        self.opset = 13
        for imp in model.opset_import:
            if imp.domain in ("", "ai.onnx"):
                self.opset = imp.version
        self.node = None
        self.onnx_uses: dict[str, int] = {}
        for n in model.graph.node:
            if n.op_type == "Shape":
                continue  # reads only the shape, never the data
            for name in n.input:
                self.onnx_uses[name] = self.onnx_uses.get(name, 0) + 1
        for out in model.graph.output:
            self.onnx_uses[out.name] = self.onnx_uses.get(out.name, 0) + 1

    # ------------------------------------------------------------------ helpers
    def fail(self, why: str) -> EdgeconvError:
        n = self.node
        where = f"node {n.name or n.output[0]!r} ({n.op_type})" if n is not None else self.source
        return EdgeconvError(f"{self.source}: {where}: {why}")

    def attr(self, name: str, default=None):
        from onnx import helper

        for a in self.node.attribute:
            if a.name == name:
                v = helper.get_attribute_value(a)
                return v.decode() if isinstance(v, bytes) else v
        return default

    def new_tensor(self, hint: str, shape, dtype="float32", data=None) -> str:
        name = hint
        i = 1
        while name in self.graph.tensors:
            name = f"{hint}_{i}"
            i += 1
        if data is not None:
            data = np.ascontiguousarray(data, dtype=dtype)
            shape = data.shape
        self.graph.tensors[name] = Tensor(name, tuple(int(s) for s in shape), dtype, data)
        return name

    def emit(self, kind: str, inputs: list[str], out_shape, attrs=None, out_name=None) -> str:
        out = self.new_tensor(out_name or f"{self.node.output[0]}", out_shape)
        # layout changes for the graph outputs are emitted after the last node
        name = self.node.name if self.node is not None and self.node.name else out
        self.graph.ops.append(Op(kind, inputs, [out], attrs or {}, name))
        return out

    def const(self, name: str, what: str = "input") -> np.ndarray:
        if name not in self.consts:
            raise self.fail(f"{what} {name!r} must be a constant (initializer) here")
        return self.consts[name]

    def value(self, name: str) -> Value:
        if name in self.values:
            return self.values[name]
        if name in self.consts:
            raise self.fail(f"input {name!r} is a constant where an activation is expected")
        raise self.fail(f"input {name!r} is not produced by any earlier node")

    def internal_shape(self, shape, layout) -> tuple[int, ...]:
        if layout == "plain":
            return tuple(shape)
        if len(shape) == 4:
            return tuple(shape[i] for i in NCHW_TO_NHWC)
        n, c, length = shape
        return (n, 1, length, c)

    def reshaped(self, name: str, shape, out_name: str) -> str:
        """`name` viewed with `shape` (same element order): a reshape op unless it already
        has that shape."""
        shape = tuple(int(s) for s in shape)
        if self.graph.tensors[name].shape == shape:
            return name
        return self.emit("reshape", [name], shape, {"shape": shape[1:]}, out_name=out_name)

    def as_nchw(self, v: Value) -> Value:
        """The value stored NHWC (what conv/pool need), emitting a transpose if needed."""
        if v.layout == "nchw":
            return v
        if len(v.shape) not in (3, 4):
            raise self.fail(f"expects a 3-D or 4-D (N,C,...) input, got shape {list(v.shape)}")
        key = (v.name, v.shape, "nchw")
        if key not in self.converted:
            target = self.internal_shape(v.shape, "nchw")
            if v.shape[1] == 1 or int(np.prod(v.shape[2:])) == 1:
                # channels or space is a single element: the memory order is the same
                name = self.reshaped(v.name, target, f"{v.name}_nhwc")
            else:
                src = v.name
                if len(v.shape) == 3:  # N,C,L -> N,C,1,L, then the 4-D transpose
                    n, c, length = v.shape
                    src = self.reshaped(v.name, (n, c, 1, length), f"{v.name}_nc1l")
                name = self.emit("transpose", [src], target, {"perm": NCHW_TO_NHWC},
                                 out_name=f"{v.name}_nhwc")
            self.converted[key] = Value(name, v.shape, "nchw")
        return self.converted[key]

    def onnx_order(self, v: Value) -> str:
        """An IR tensor holding `v`'s elements in ONNX (NCHW / NCL) order, emitting a
        transpose if the data must move. Its shape is v.shape, except that a 3-D value
        comes as (N,C,1,L) and one that needed no data movement keeps its stored shape."""
        if v.layout == "plain":
            return v.name
        inner = self.graph.tensors[v.name].shape  # N,H,W,C (N,1,L,C for 3-D)
        if inner[3] == 1 or inner[1] * inner[2] == 1:
            return v.name  # no data movement: a reshape is enough
        key = (v.name, v.shape, "onnx_order")
        if key not in self.converted:
            shape = tuple(inner[i] for i in NHWC_TO_NCHW)
            self.converted[key] = self.emit("transpose", [v.name], shape,
                                            {"perm": NHWC_TO_NCHW}, out_name=f"{v.name}_nchw")
        return self.converted[key]

    def as_plain(self, v: Value) -> Value:
        """The value stored in ONNX order (what flatten/reshape/gemm need)."""
        if v.layout == "plain":
            return v
        key = (v.name, v.shape, "plain")
        if key not in self.converted:
            name = self.reshaped(self.onnx_order(v), v.shape, f"{v.name}_nchw")
            self.converted[key] = Value(name, v.shape, "plain")
        return self.converted[key]

    def bind(self, onnx_name: str, ir_name: str, shape, layout: str) -> None:
        self.values[onnx_name] = Value(ir_name, tuple(int(s) for s in shape), layout)

    # ------------------------------------------------------------------ driver
    def run(self) -> Graph:
        from onnx import numpy_helper

        g = self.model.graph
        for init in g.initializer:
            try:
                self.consts[init.name] = numpy_helper.to_array(init)
            except Exception as e:  # noqa: BLE001 - protobuf/numpy give many kinds
                raise EdgeconvError(
                    f"{self.source}: initializer {init.name!r} cannot be read ({e})"
                ) from None
        for inp in g.input:
            if inp.name in self.consts:
                continue  # initializers listed as inputs (old exporters)
            shape = self.input_shape(inp)
            elem = inp.type.tensor_type.elem_type
            if elem != 1:  # FLOAT
                raise EdgeconvError(
                    f"{self.source}: input {inp.name!r} has ONNX element type {elem}; only "
                    "float32 inputs are supported for float models"
                )
            name = self.new_tensor(inp.name, shape)
            self.graph.inputs.append(name)
            self.bind(inp.name, name, shape, "plain")
        if not self.graph.inputs:
            raise EdgeconvError(f"{self.source}: the model has no (non-constant) input")
        for node in g.node:
            self.node = node
            if node.domain not in ("", "ai.onnx"):
                raise self.fail(f"custom domain {node.domain!r} is not supported")
            if all(i in self.consts or i == "" for i in node.input) and node.op_type in _FOLDABLE:
                self.fold_constant(node)
                continue
            convert = _CONVERTERS.get(node.op_type)
            if convert is None:
                raise self.fail(
                    "op type is not supported; edgeconv imports: "
                    + ", ".join(sorted(set(_CONVERTERS) | set(_FOLDABLE)))
                )
            convert(self)
        self.node = None
        for out in g.output:
            if out.name in self.consts:
                raise EdgeconvError(f"{self.source}: output {out.name!r} is a constant")
            v = self.values.get(out.name)
            if v is None:
                raise EdgeconvError(f"{self.source}: output {out.name!r} is never produced")
            v = self.as_plain(v)
            self.graph.outputs.append(v.name)
        self.graph.prune()
        self.graph.validate()
        return self.graph

    def input_shape(self, inp) -> tuple[int, ...]:
        dims = inp.type.tensor_type.shape.dim
        if not dims:
            raise EdgeconvError(f"{self.source}: input {inp.name!r} has no declared shape")
        shape = []
        for i, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(d.dim_value)
            elif i == 0:
                shape.append(1)  # symbolic batch
            else:
                raise EdgeconvError(
                    f"{self.source}: input {inp.name!r} dimension {i} is not fixed "
                    f"({d.dim_param or '?'}); only the batch dimension may be dynamic"
                )
        if len(shape) > 1 and shape[0] != 1:
            shape[0] = 1  # a fixed batch of N runs as N batches of one
        return tuple(shape)

    # ------------------------------------------------------- constant folding
    def fold_constant(self, node) -> None:
        args = [self.consts[i] if i else None for i in node.input]
        try:
            outs = _FOLDABLE[node.op_type](self, *args)
        except EdgeconvError:
            raise
        except Exception as e:  # noqa: BLE001 - numpy raises many kinds on bad shapes
            raise self.fail(f"cannot evaluate constant expression ({e})") from None
        for name, arr in zip(node.output, outs, strict=False):  # optional outputs unused
            self.consts[name] = np.asarray(arr)


# ---------------------------------------------------------------- constants
def _f_constant(imp: _Importer, *args):
    from onnx import numpy_helper

    for a in imp.node.attribute:
        if a.name == "value":
            return [numpy_helper.to_array(a.t)]
        if a.name in ("value_float", "value_int"):
            return [np.array(imp.attr(a.name))]
        if a.name in ("value_floats", "value_ints"):
            return [np.array(imp.attr(a.name))]
    raise imp.fail("Constant without a supported value attribute")


def _f_reshape(imp, data, shape):
    shape = [int(s) for s in shape]
    shape = [data.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [data.reshape(shape)]


def _f_unsqueeze(imp, data, axes=None):
    axes = list(axes) if axes is not None else list(imp.attr("axes"))
    out = data
    for a in sorted(int(a) % (data.ndim + len(axes)) for a in axes):
        out = np.expand_dims(out, a)
    return [out]


def _f_squeeze(imp, data, axes=None):
    axes = axes if axes is not None else imp.attr("axes")
    return [np.squeeze(data, tuple(int(a) for a in axes) if axes is not None else None)]


def _f_gather(imp, data, idx):
    return [np.take(data, idx, axis=imp.attr("axis", 0))]


def _f_concat(imp, *arrays):
    return [np.concatenate(arrays, axis=imp.attr("axis"))]


def _f_cast(imp, data):
    from onnx import helper

    return [data.astype(helper.tensor_dtype_to_np_dtype(imp.attr("to")))]


def _f_transpose(imp, data):
    perm = imp.attr("perm")
    return [np.transpose(data, perm)]


def _f_flatten(imp, data):
    axis = imp.attr("axis", 1)
    return [data.reshape(int(np.prod(data.shape[:axis])), -1)]


_FOLDABLE = {
    "Constant": _f_constant,
    "Reshape": _f_reshape,
    "Unsqueeze": _f_unsqueeze,
    "Squeeze": _f_squeeze,
    "Gather": _f_gather,
    "Concat": _f_concat,
    "Cast": _f_cast,
    "Transpose": _f_transpose,
    "Flatten": _f_flatten,
    "Identity": lambda imp, x: [x],
    "Shape": lambda imp, x: [_shape_of(imp, x.shape)],
    "Add": lambda imp, a, b: [a + b],
    "Sub": lambda imp, a, b: [a - b],
    "Mul": lambda imp, a, b: [a * b],
    "Div": lambda imp, a, b: [a / b if a.dtype.kind == "f" else a // b],
}


# ---------------------------------------------------------------- converters
def _check_finite(imp: _Importer, arr: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(arr, np.float32)
    if not np.all(np.isfinite(arr)):
        raise imp.fail(f"{what} contains NaN or inf")
    return arr


def _scalar(imp: _Importer, name: str, what: str) -> float:
    arr = np.asarray(imp.const(name, what))
    if arr.size != 1:
        raise imp.fail(f"{what} must be a single value, got shape {list(arr.shape)}")
    return float(arr.reshape(-1)[0])


def _spatial(imp: _Importer, rank: int, name: str, default: int) -> tuple[int, int]:
    vals = imp.attr(name) or [default] * (rank - 2)
    vals = [int(v) for v in vals]
    if len(vals) != rank - 2:
        raise imp.fail(f"attribute {name}={vals} does not match a {rank}-D input")
    return (1, vals[0]) if rank == 3 else (vals[0], vals[1])


def _window(imp: _Importer, v: Value, kernel, stride, dilation):
    """Resolve auto_pad / pads into (top, left, bottom, right) for the stored NHWC tensor."""
    rank = len(v.shape)
    auto = imp.attr("auto_pad", "NOTSET")
    spatial = (1, v.shape[2]) if rank == 3 else (v.shape[2], v.shape[3])
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        ph = same_pads(spatial[0], kernel[0], stride[0], dilation[0], auto == "SAME_UPPER")
        pw = same_pads(spatial[1], kernel[1], stride[1], dilation[1], auto == "SAME_UPPER")
        return (ph[0], pw[0], ph[1], pw[1])
    if auto not in ("NOTSET", "VALID"):
        raise imp.fail(f"auto_pad={auto!r} is not supported")
    pads = [int(p) for p in (imp.attr("pads") or [0] * (2 * (rank - 2)))]
    if auto == "VALID":
        pads = [0] * (2 * (rank - 2))
    if any(p < 0 for p in pads):
        raise imp.fail(f"negative pads {pads} are not supported")
    if rank == 3:
        return (0, pads[0], 0, pads[1])
    return (pads[0], pads[1], pads[2], pads[3])


def _out_hw(shape_hw, kernel, stride, dilation, pads, ceil=False):
    out = []
    for i in range(2):
        span = shape_hw[i] + pads[i] + pads[i + 2] - dilation[i] * (kernel[i] - 1) - 1
        n = (-(-span // stride[i]) if ceil else span // stride[i]) + 1
        if ceil and (n - 1) * stride[i] >= shape_hw[i] + pads[i]:
            n -= 1  # ONNX (and PyTorch) drop a window that would start in the end padding
        out.append(n)
    return tuple(out)


def _nchw_shape(v: Value, c: int, hw) -> tuple[int, ...]:
    return (1, c, hw[1]) if len(v.shape) == 3 else (1, c, hw[0], hw[1])


def _conv(imp: _Importer):
    node = imp.node
    v = imp.as_nchw(imp.value(node.input[0]))
    w = _check_finite(imp, imp.const(node.input[1], "weight"), "weight")
    rank = len(v.shape)
    if w.ndim != rank:
        raise imp.fail(f"weight rank {w.ndim} does not match input rank {rank}")
    if rank == 3:
        w = w[:, :, None, :]
    cout, cin_g, kh, kw = w.shape
    cin = v.shape[1]
    group = int(imp.attr("group", 1))
    stride = _spatial(imp, rank, "strides", 1)
    dilation = _spatial(imp, rank, "dilations", 1)
    pads = _window(imp, v, (kh, kw), stride, dilation)
    attrs = {"stride": stride, "dilation": dilation, "pads": pads, "activation": "none"}
    if group == 1:
        if cin_g != cin:
            raise imp.fail(f"weight expects {cin_g} input channels, input has {cin}")
        weight = w.transpose(0, 2, 3, 1)  # OIHW -> OHWI
        attrs.update(depthwise=False, depth_multiplier=1)
    elif group == cin and cin_g == 1 and cout % cin == 0:
        weight = w.transpose(1, 2, 3, 0)  # (C*M)1HW -> 1HW(C*M)
        attrs.update(depthwise=True, depth_multiplier=cout // cin)
    else:
        raise imp.fail(
            f"grouped convolution (group={group}, {cin} input channels) is not supported; "
            "only group=1 and depthwise (group = input channels) are"
        )
    hw_in = imp.graph.tensors[v.name].shape[1:3]
    hw = _out_hw(hw_in, (kh, kw), stride, dilation, pads)
    if min(hw) < 1:
        raise imp.fail(f"kernel {kh}x{kw} does not fit the input {list(v.shape)}")
    inputs = [v.name, imp.new_tensor(f"{node.input[1]}_w", None, data=weight)]
    if len(node.input) > 2 and node.input[2]:
        b = _check_finite(imp, imp.const(node.input[2], "bias"), "bias").reshape(-1)
        if b.size != cout:
            raise imp.fail(f"bias has {b.size} values for {cout} output channels")
        inputs.append(imp.new_tensor(f"{node.input[2]}_b", None, data=b))
    out_shape = (1, hw[0], hw[1], cout)
    out = imp.emit("conv", inputs, out_shape, attrs)
    imp.bind(node.output[0], out, _nchw_shape(v, cout, hw), "nchw")


def _pool(imp: _Importer, mode: str, global_: bool = False):
    node = imp.node
    v = imp.as_nchw(imp.value(node.input[0]))
    rank = len(v.shape)
    hw_in = imp.graph.tensors[v.name].shape[1:3]
    if len(node.output) > 1 and node.output[1]:
        raise imp.fail("the Indices output of MaxPool is not supported")
    if global_:
        kernel, stride, pads, ceil = tuple(hw_in), (1, 1), (0, 0, 0, 0), False
    else:
        if imp.attr("kernel_shape") is None:
            raise imp.fail("attribute kernel_shape is missing")
        k = [int(x) for x in imp.attr("kernel_shape")]
        if len(k) != rank - 2:
            raise imp.fail(f"kernel_shape {k} does not match a {rank}-D input")
        kernel = (1, k[0]) if rank == 3 else (k[0], k[1])
        stride = _spatial(imp, rank, "strides", 1)
        if any(d != 1 for d in (imp.attr("dilations") or [1])):
            raise imp.fail("dilated pooling is not supported")
        pads = _window(imp, v, kernel, stride, (1, 1))
        ceil = bool(imp.attr("ceil_mode", 0))
    count_include_pad = bool(imp.attr("count_include_pad", 0))
    hw = _out_hw(hw_in, kernel, stride, (1, 1), pads, ceil)
    extra_h = (hw[0] - 1) * stride[0] + kernel[0] - (hw_in[0] + pads[0] + pads[2])
    extra_w = (hw[1] - 1) * stride[1] + kernel[1] - (hw_in[1] + pads[1] + pads[3])
    if extra_h > 0 or extra_w > 0:  # windows that only ceil mode reaches: pad further
        if mode == "avg" and count_include_pad:
            if any(pads):
                raise imp.fail("AveragePool with ceil_mode=1, count_include_pad=1 and pads, "
                               "whose last windows reach past the padding, is not supported")
            count_include_pad = False  # no pads: the windows average the input they cover
        pads = (pads[0], pads[1], pads[2] + max(extra_h, 0), pads[3] + max(extra_w, 0))
    if min(hw) < 1:
        raise imp.fail(f"pool window {kernel} does not fit the input {list(v.shape)}")
    attrs = {"mode": mode, "kernel": kernel, "stride": stride, "pads": pads, "activation": "none",
             "count_include_pad": count_include_pad}
    c = v.shape[1]
    out = imp.emit("pool", [v.name], (1, hw[0], hw[1], c), attrs)
    imp.bind(node.output[0], out, _nchw_shape(v, c, hw), "nchw")


def _fc_input(imp: _Importer) -> Value:
    v = imp.as_plain(imp.value(imp.node.input[0]))
    if len(v.shape) != 2:
        raise imp.fail(f"expects a 2-D [batch, features] input, got shape {list(v.shape)}")
    return v


def _emit_fc(imp: _Importer, v: Value, weight: np.ndarray, bias: np.ndarray | None):
    node = imp.node
    if weight.shape[1] != v.shape[1]:
        raise imp.fail(f"weight takes {weight.shape[1]} features, input has {v.shape[1]}")
    inputs = [v.name, imp.new_tensor(f"{node.output[0]}_w", None, data=weight)]
    if bias is not None:
        bias = np.broadcast_to(bias.reshape(-1), (weight.shape[0],))
        inputs.append(imp.new_tensor(f"{node.output[0]}_b", None, data=bias))
    out = imp.emit("fc", inputs, (1, weight.shape[0]), {"activation": "none"})
    imp.bind(node.output[0], out, (1, weight.shape[0]), "plain")


def _gemm(imp: _Importer):
    node = imp.node
    if imp.attr("transA", 0):
        raise imp.fail("transA=1 is not supported")
    v = _fc_input(imp)
    b = _check_finite(imp, imp.const(node.input[1], "B"), "weight")
    b = b if imp.attr("transB", 0) else b.T
    weight = float(imp.attr("alpha", 1.0)) * b
    bias = None
    if len(node.input) > 2 and node.input[2]:
        c = _check_finite(imp, imp.const(node.input[2], "C"), "bias")
        if c.ndim > 2 or c.shape[-1:] not in ((), (1,), (weight.shape[0],)) or (
                c.ndim == 2 and c.shape[0] != 1):
            raise imp.fail(f"bias C of shape {list(c.shape)} is not per output feature")
        bias = float(imp.attr("beta", 1.0)) * c
    _emit_fc(imp, v, weight, bias)


def _matmul(imp: _Importer):
    node = imp.node
    v = _fc_input(imp)
    b = _check_finite(imp, imp.const(node.input[1], "B"), "weight")
    if b.ndim != 2:
        raise imp.fail(f"MatMul weight must be 2-D, got shape {list(b.shape)}")
    _emit_fc(imp, v, b.T, None)


def _per_channel_vector(c: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """`c` as one value per channel (axis 1) if it broadcasts that way onto `shape`."""
    if c.ndim > len(shape):
        return None
    full = (1,) * (len(shape) - c.ndim) + c.shape
    if any(d != 1 for i, d in enumerate(full) if i != 1) or full[1] not in (1, shape[1]):
        return None
    return c.reshape(-1)


def _add(imp: _Importer):
    node = imp.node
    a, b = node.input[0], node.input[1]
    if a in imp.consts:
        a, b = b, a
    v = imp.value(a)
    if b not in imp.consts:
        w = imp.value(b)
        if w.shape != v.shape:
            raise imp.fail(f"adds shapes {list(v.shape)} and {list(w.shape)}; only equal shapes")
        if w.layout != v.layout:
            w = imp.as_nchw(w) if v.layout == "nchw" else imp.as_plain(w)
        out = imp.emit("add", [v.name, w.name], imp.graph.tensors[v.name].shape,
                       {"activation": "none"})
        imp.bind(node.output[0], out, v.shape, v.layout)
        return
    c = _check_finite(imp, imp.consts[b], "addend")
    producer = imp.graph.producers().get(v.name)
    vector = _per_channel_vector(c, v.shape)
    # every reader of the producer's data, also through Identity/Dropout/free-transpose
    # aliases of it: the bias may change only if this Add is the only one
    readers = sum(imp.onnx_uses.get(n, 0) for n, val in imp.values.items() if val.name == v.name)
    if (producer is None or producer.kind not in ("conv", "fc") or vector is None
            or readers != 1 or producer.attrs.get("batchnorm")):
        raise imp.fail(
            "adding a constant is supported only as the bias of the Conv/Gemm/MatMul "
            "right before it (one value per output channel)"
        )
    cout = imp.graph.tensors[producer.outputs[0]].shape[-1]
    add = np.broadcast_to(vector, (cout,)).astype(np.float32)
    if len(producer.inputs) == 3:
        bias = imp.graph.tensors[producer.inputs[2]]
        bias.data = (bias.data + add).astype(np.float32)
    else:
        producer.inputs.append(imp.new_tensor(f"{b}_b", None, data=add))
    imp.values[node.output[0]] = v


def _act(imp: _Importer, fn: str, **attrs):
    v = imp.value(imp.node.input[0])
    out = imp.emit("act", [v.name], imp.graph.tensors[v.name].shape, {"fn": fn, **attrs})
    imp.bind(imp.node.output[0], out, v.shape, v.layout)


def _clip(imp: _Importer):
    node = imp.node
    if imp.opset >= 11:
        lo = _scalar(imp, node.input[1], "min") if len(node.input) > 1 and node.input[1] else None
        hi = _scalar(imp, node.input[2], "max") if len(node.input) > 2 and node.input[2] else None
    else:
        lo, hi = imp.attr("min"), imp.attr("max")
    lo = -np.inf if lo is None else lo
    hi = np.inf if hi is None else hi
    if lo == 0 and hi == 6:
        return _act(imp, "relu6")
    if lo == 0 and np.isinf(hi):
        return _act(imp, "relu")
    if not lo < hi:
        raise imp.fail(f"Clip range [{lo}, {hi}] is empty")
    return _act(imp, "clip", lo=float(lo), hi=float(hi))


def _softmax(imp: _Importer, log: bool):
    v = imp.as_plain(imp.value(imp.node.input[0]))
    axis = imp.attr("axis", -1 if imp.opset >= 13 else 1)
    if axis % len(v.shape) != len(v.shape) - 1 or len(v.shape) != 2:
        raise imp.fail(f"only softmax over the last axis of a 2-D tensor is supported "
                       f"(shape {list(v.shape)}, axis {axis})")
    out = imp.emit("softmax", [v.name], v.shape, {"beta": 1.0, "log": log})
    imp.bind(imp.node.output[0], out, v.shape, "plain")


def _reshape_to(imp: _Importer, v: Value, shape: list[int]):
    if imp.attr("allowzero", 0) and 0 in shape:
        raise imp.fail(f"reshape to {shape} with allowzero=1 (an empty tensor) is not supported")
    numel = int(np.prod(v.shape))
    shape = [v.shape[i] if s == 0 and i < len(v.shape) else s for i, s in enumerate(shape)]
    if shape and shape[0] == -1 and shape.count(-1) == 1:
        shape[0] = 1
    if shape.count(-1) > 1:
        raise imp.fail(f"reshape target {shape} has more than one -1")
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        shape[shape.index(-1)] = numel // known if known else 0
    if int(np.prod(shape)) != numel or not shape or shape[0] != 1:
        raise imp.fail(f"cannot reshape {list(v.shape)} to {shape} keeping the batch dimension")
    # straight from the ONNX-ordered data (no intermediate as_plain reshape), so that a
    # layout transpose -> flatten -> FC chain stays visible to fold_transpose_into_fc
    out = imp.emit("reshape", [imp.onnx_order(v)], tuple(shape), {"shape": tuple(shape[1:])})
    imp.bind(imp.node.output[0], out, shape, "plain")


def _reshape(imp: _Importer):
    shape = [int(s) for s in imp.const(imp.node.input[1], "shape")]
    _reshape_to(imp, imp.value(imp.node.input[0]), shape)


def _flatten(imp: _Importer):
    v = imp.value(imp.node.input[0])
    if imp.attr("axis", 1) != 1:
        raise imp.fail("only Flatten with axis=1 is supported")
    _reshape_to(imp, v, [1, int(np.prod(v.shape[1:]))])


def _transpose(imp: _Importer):
    v = imp.value(imp.node.input[0])
    rank = len(v.shape)
    perm = tuple(int(p) for p in (imp.attr("perm") or range(rank)[::-1]))
    if sorted(perm) != list(range(rank)):
        raise imp.fail(f"transpose perm {list(perm)} is not a permutation of {rank} axes")
    if perm[0] != 0:
        raise imp.fail(f"transpose perm {list(perm)} moves the batch dimension")
    shape = tuple(v.shape[p] for p in perm)
    out_name = imp.node.output[0]
    if perm == tuple(range(rank)):
        imp.values[out_name] = v
        return
    if rank == 4 and v.layout == "plain" and perm == NHWC_TO_NCHW:
        imp.values[out_name] = Value(v.name, shape, "nchw")  # Keras NHWC input: free
        return
    if rank == 4 and v.layout == "nchw" and perm == NCHW_TO_NHWC:
        imp.values[out_name] = Value(v.name, shape, "plain")
        return
    if rank == 3 and perm == (0, 2, 1):  # N,L,C <-> N,C,L: N,1,L,C storage is a reshape away
        n, a, b = v.shape
        if v.layout == "plain":  # Keras NLC -> NCL, stored N,1,L,C
            name = imp.reshaped(v.name, (n, 1, a, b), f"{out_name}_nhwc")
            imp.values[out_name] = Value(name, shape, "nchw")
        else:  # NCL stored N,1,L,C -> NLC
            name = imp.reshaped(v.name, (n, b, a), out_name)
            imp.values[out_name] = Value(name, shape, "plain")
        return
    v = imp.as_plain(v)
    out = imp.emit("transpose", [v.name], shape, {"perm": perm})
    imp.bind(out_name, out, shape, "plain")


def _pad(imp: _Importer):
    node = imp.node
    v = imp.as_nchw(imp.value(node.input[0]))
    mode = imp.attr("mode", "constant")
    if imp.opset >= 11:
        pads = [int(p) for p in imp.const(node.input[1], "pads")]
        value = _scalar(imp, node.input[2], "constant_value") if (
            len(node.input) > 2 and node.input[2]) else 0.0
    else:
        pads = [int(p) for p in imp.attr("pads")]
        value = float(imp.attr("value", 0.0))
    rank = len(v.shape)
    if mode != "constant" or value != 0.0:
        raise imp.fail("only constant zero padding is supported")
    if imp.opset >= 18 and len(node.input) > 3 and node.input[3]:  # pads for these axes only
        axes = [int(a) % rank for a in np.atleast_1d(imp.const(node.input[3], "axes"))]
        if len(pads) != 2 * len(axes) or len(set(axes)) != len(axes):
            raise imp.fail(f"pads {pads} do not match axes {axes}")
        full = [0] * (2 * rank)
        for i, a in enumerate(axes):
            full[a], full[rank + a] = pads[i], pads[len(axes) + i]
        pads = full
    if len(pads) != 2 * rank:
        raise imp.fail(f"pads {pads} do not match a {rank}-D input")
    begin, end = pads[:rank], pads[rank:]
    if begin[:2] != [0, 0] or end[:2] != [0, 0] or any(p < 0 for p in pads):
        raise imp.fail(f"only non-negative padding of the spatial axes is supported, got {pads}")
    p = (0, begin[2], 0, end[2]) if rank == 3 else (begin[2], begin[3], end[2], end[3])
    h, w, c = imp.graph.tensors[v.name].shape[1:]
    hw = (h + p[0] + p[2], w + p[1] + p[3])
    out = imp.emit("pad", [v.name], (1, hw[0], hw[1], c), {"pads": p})
    imp.bind(node.output[0], out, _nchw_shape(v, c, hw), "nchw")


def _batchnorm(imp: _Importer):
    node = imp.node
    v = imp.as_nchw(imp.value(node.input[0]))
    scale, bias, mean, var = (
        _check_finite(imp, imp.const(n, "BatchNormalization parameter"), "parameter")
        for n in node.input[1:5]
    )
    c = v.shape[1]
    if imp.attr("training_mode", 0) or (len(node.output) > 1 and any(node.output[1:])):
        raise imp.fail("BatchNormalization in training mode is not supported")
    if any(p.size != c for p in (scale, bias, mean, var)):
        raise imp.fail(f"parameters must hold one value per channel ({c}); "
                       f"got sizes {[p.size for p in (scale, bias, mean, var)]}")
    scale, bias, mean, var = (p.reshape(-1) for p in (scale, bias, mean, var))
    with np.errstate(invalid="ignore"):
        gain = scale / np.sqrt(var + float(imp.attr("epsilon", 1e-5)))
    if not np.all(np.isfinite(gain)):
        raise imp.fail("variance + epsilon is not positive in every channel")
    shift = bias - mean * gain
    # a BN is a 1x1 depthwise conv; the fold_batchnorm pass merges it into a preceding conv
    w = imp.new_tensor(f"{node.output[0]}_gain", None, data=gain.reshape(1, 1, 1, c))
    b = imp.new_tensor(f"{node.output[0]}_shift", None, data=shift)
    attrs = {"stride": (1, 1), "dilation": (1, 1), "pads": (0, 0, 0, 0), "activation": "none",
             "depthwise": True, "depth_multiplier": 1, "batchnorm": True}
    out = imp.emit("conv", [v.name, w, b], imp.graph.tensors[v.name].shape, attrs)
    imp.bind(node.output[0], out, v.shape, "nchw")


def _shape_of(imp: _Importer, shape) -> np.ndarray:
    dims = np.array(shape, np.int64)
    start, end = imp.attr("start", 0), imp.attr("end")
    return dims[start:end]


def _shape(imp: _Importer):
    """Shape of an activation, as a constant (what PyTorch's x.view(x.size(0), -1) emits).
    The batch dimension reads as 1 (as everywhere in the IR); a Reshape keeps the batch
    whatever its first target dimension, and refuses a target whose first dimension is not 1."""
    v = imp.value(imp.node.input[0])
    imp.consts[imp.node.output[0]] = _shape_of(imp, v.shape)


def _identity(imp: _Importer):
    imp.values[imp.node.output[0]] = imp.value(imp.node.input[0])


_CONVERTERS = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Add": _add,
    "Relu": lambda imp: _act(imp, "relu"),
    "Clip": _clip,
    "Tanh": lambda imp: _act(imp, "tanh"),
    "Sigmoid": lambda imp: _act(imp, "sigmoid"),
    "MaxPool": lambda imp: _pool(imp, "max"),
    "AveragePool": lambda imp: _pool(imp, "avg"),
    "GlobalAveragePool": lambda imp: _pool(imp, "avg", global_=True),
    "GlobalMaxPool": lambda imp: _pool(imp, "max", global_=True),
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Pad": _pad,
    "BatchNormalization": _batchnorm,
    "Softmax": lambda imp: _softmax(imp, False),
    "LogSoftmax": lambda imp: _softmax(imp, True),
    "Dropout": _identity,
    "Identity": _identity,
    "Shape": _shape,
}


def load_onnx(path: str | os.PathLike) -> Graph:
    """Read a float ONNX model into the IR (then runs the standard clean-up passes)."""
    import onnx
    from google.protobuf.message import DecodeError

    data = read_bytes(path, "ONNX model")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise EdgeconvError(f"{path}: not a valid ONNX file ({type(e).__name__})") from None
    if not model.graph.node:
        raise EdgeconvError(f"{path}: not a valid ONNX file (the graph has no nodes)")
    graph = _Importer(model, str(path)).run()
    from ..passes import simplify

    return simplify(graph)
