"""Write an edgeconv graph as a TFLite flatbuffer (schema v3) that TFLite Micro, the
TFLite / LiteRT interpreter and Netron open.

The int8 tensors are written exactly as the graph holds them (weights, int32 biases,
scales and zero points), so every runtime starts from the integers edgeconv runs.
What TFLite cannot say directly is rewritten without changing the arithmetic:
explicit conv/pool padding that is neither SAME nor VALID becomes a PAD op (int8 PAD
fills with the zero point, which is what an out-of-image tap means), and the model's
edges become QUANTIZE / DEQUANTIZE ops when ``io`` asks for uint8 or float I/O.

Only the ``flatbuffers`` package is needed (no TensorFlow). Field numbers come from
``tflite_schema``; the tests read every file written here back with the generated
``tflite`` package and run it in TFLM and in ai-edge-litert.

One table per IR op kind (``_EXPORTERS``), each a small function.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import EdgeconvError
from ..fileio import atomic_write
from ..ir import Graph, Op, Tensor, same_pads
from .tflite_schema import (
    ACT_NONE,
    ACT_RELU,
    ACT_RELU6,
    ACT_RELU_N1_TO_1,
    FILE_IDENTIFIER,
    OP,
    OPTIONS,
    PADDING_SAME,
    PADDING_VALID,
    SCHEMA_VERSION,
    TENSOR_TYPES,
    Slots,
)

IO_TYPES = ("int8", "uint8", "float")
BUFFER_ALIGNMENT = 16  # TFLM reads constant tensors in place; the converter aligns to 16

# output quantization the TFLite kernels require (Prepare fails otherwise)
FIXED_OUTPUT = {
    "SOFTMAX": (1.0 / 256, -128),
    "LOGISTIC": (1.0 / 256, -128),
    "TANH": (1.0 / 128, 0),
    "LOG_SOFTMAX": (16.0 / 256, 127),
}

# (op, int8?) -> operator version, as the TFLite converter writes it for these inputs
_VERSIONS_INT8 = {
    "CONV_2D": 3,
    "DEPTHWISE_CONV_2D": 3,
    "FULLY_CONNECTED": 4,
    "MAX_POOL_2D": 2,
    "AVERAGE_POOL_2D": 2,
    "RESHAPE": 1,
    "SOFTMAX": 2,
    "LOG_SOFTMAX": 2,
    "ADD": 2,
    "TANH": 2,
    "LOGISTIC": 2,
    "PAD": 2,
    "TRANSPOSE": 2,
    "RELU": 2,
    "RELU6": 2,
    "RELU_N1_TO_1": 1,
    "QUANTIZE": 2,
    "DEQUANTIZE": 2,
}


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    buffer: int = 0
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    axis: int = 0


@dataclass
class _Operator:
    op: str
    inputs: list[int]
    outputs: list[int]
    options: tuple[str, list[tuple]] | None = None  # (table, [(slot, kind, value, default)])
    version: int = 1


@dataclass
class _Model:
    tensors: list[_Tensor] = field(default_factory=list)
    buffers: list[bytes] = field(default_factory=lambda: [b""])
    operators: list[_Operator] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)


class _Exporter:
    def __init__(self, graph: Graph, io: str):
        self.g = graph
        self.io = io
        self.m = _Model()
        self.quantized = graph.is_quantized

    # ------------------------------------------------------------------ tensors
    def fail(self, op: Op | None, msg: str) -> EdgeconvError:
        where = f"op {op.name or op.outputs[0]!r} ({op.kind}): " if op is not None else ""
        return EdgeconvError(f"cannot export to .tflite: {where}{msg}")

    def add_tensor(
        self,
        name: str,
        shape,
        dtype: str,
        data: np.ndarray | None = None,
        scale=None,
        zero_point=None,
        axis: int | None = 0,
    ) -> int:
        if dtype not in TENSOR_TYPES:
            raise self.fail(None, f"tensor {name!r} has dtype {dtype}")
        buf = 0
        if data is not None:
            arr = np.ascontiguousarray(np.asarray(data, dtype=dtype))
            self.m.buffers.append(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
            buf = len(self.m.buffers) - 1
        t = _Tensor(name, tuple(int(s) for s in shape), dtype, buf)
        if scale is not None:
            t.scale = np.atleast_1d(np.asarray(scale, np.float32))
            zp = np.atleast_1d(np.asarray(zero_point if zero_point is not None else 0, np.int64))
            t.zero_point = np.broadcast_to(zp, t.scale.shape).copy()
            t.axis = int(axis or 0)
        self.m.tensors.append(t)
        return len(self.m.tensors) - 1

    def tensor(self, name: str) -> int:
        """The TFLite index of IR tensor `name`, written on first use."""
        if name not in self.m.index:
            t: Tensor = self.g.tensor(name)
            self.m.index[name] = self.add_tensor(
                name, t.shape, t.dtype, t.data, t.scale, t.zero_point, t.axis
            )
        return self.m.index[name]

    def derived(self, base: str, suffix: str, shape, dtype: str | None = None) -> int:
        """A new activation tensor with `base`'s quantization (a PAD / edge output)."""
        t = self.g.tensor(base)
        name = f"{base}{suffix}"
        return self.add_tensor(name, shape, dtype or t.dtype, None, t.scale, t.zero_point)

    def const(self, name: str, values, dtype: str = "int32") -> int:
        arr = np.asarray(values, dtype=dtype)
        return self.add_tensor(name, arr.shape, dtype, arr)

    def emit(self, op: str, inputs, outputs, options=None) -> None:
        version = _VERSIONS_INT8.get(op, 1) if self.quantized else 1
        self.m.operators.append(_Operator(op, list(inputs), list(outputs), options, version))

    # ------------------------------------------------------------------ helpers
    def activation(self, op: Op) -> int:
        act = op.attrs.get("activation", "none")
        if act == "none":
            return ACT_NONE
        if act == "relu":
            return ACT_RELU
        if act == "relu6":
            return ACT_RELU6
        if act == "clip" and tuple(op.attrs.get("clip", ())) == (-1.0, 1.0):
            return ACT_RELU_N1_TO_1
        raise self.fail(
            op,
            f"fused activation {act} {op.attrs.get('clip', '')} has no TFLite equivalent "
            "(TFLite fuses NONE, RELU, RELU6 and RELU_N1_TO_1)",
        )

    def padding(self, op: Op, in_shape, kernel, stride, dilation) -> str | None:
        """'SAME' / 'VALID' when the IR pads are exactly what TFLite would use, else None."""
        pads = tuple(op.attrs["pads"])
        if pads == (0, 0, 0, 0):
            return "VALID"
        top, bottom = same_pads(in_shape[1], kernel[0], stride[0], dilation[0])
        left, right = same_pads(in_shape[2], kernel[1], stride[1], dilation[1])
        if pads == (top, left, bottom, right):
            return "SAME"
        return None

    def pad_input(self, op: Op, src: str) -> int:
        """PAD the input explicitly (int8 PAD fills with the zero point = real 0)."""
        top, left, bottom, right = op.attrs["pads"]
        n, h, w, c = self.g.tensor(src).shape
        out = self.derived(
            src, f"_pad_for_{op.outputs[0]}", (n, h + top + bottom, w + left + right, c)
        )
        paddings = self.const(
            f"{op.outputs[0]}_paddings", [[0, 0], [top, bottom], [left, right], [0, 0]]
        )
        self.emit("PAD", [self.tensor(src), paddings], [out], ("PadOptions", []))
        return out

    def optional(self, op: Op, i: int) -> int:
        return self.tensor(op.inputs[i]) if len(op.inputs) > i else -1

    def check_weights(self, op: Op, axis: int) -> None:
        if not self.quantized:
            return
        w = self.g.tensor(op.inputs[1])
        if w.dtype != "int8" or w.scale is None:
            raise self.fail(op, f"weights are {w.dtype}, not int8 with scales")
        if np.any(np.asarray(w.zero_point) != 0):
            raise self.fail(op, "int8 weights must have zero point 0 (TFLite int8 scheme)")
        if w.scale.size > 1 and w.axis != axis:
            raise self.fail(op, f"per-channel weights on axis {w.axis}; TFLite needs axis {axis}")
        if len(op.inputs) > 2 and self.g.tensor(op.inputs[2]).dtype != "int32":
            raise self.fail(op, "the bias of an int8 layer must be int32")

    def check_fixed_output(self, op: Op, tfl_op: str) -> None:
        if not self.quantized:
            return
        want = FIXED_OUTPUT[tfl_op]
        s, zp = self.g.tensor(op.outputs[0]).qparams()
        if zp != want[1] or not np.isclose(s, want[0], rtol=1e-6):
            raise self.fail(
                op,
                f"{tfl_op} output must be quantized with scale {want[0]:g}, zero point "
                f"{want[1]} (TFLite requires it); the graph has scale {s:g}, zero point {zp}",
            )


# ---------------------------------------------------------------------- per-op writers
def _conv(ex: _Exporter, op: Op) -> None:
    a = op.attrs
    x, w = op.inputs[0], ex.g.tensor(op.inputs[1])
    kernel = w.shape[1:3]
    stride, dilation = tuple(a["stride"]), tuple(a["dilation"])
    mode = ex.padding(op, ex.g.tensor(x).shape, kernel, stride, dilation)
    src = ex.tensor(x)
    if mode is None:
        src, mode = ex.pad_input(op, x), "VALID"
    padding = PADDING_SAME if mode == "SAME" else PADDING_VALID
    act = ex.activation(op)
    ins = [src, ex.tensor(op.inputs[1]), ex.optional(op, 2)]
    out = [ex.tensor(op.outputs[0])]
    if a["depthwise"]:
        ex.check_weights(op, 3)
        s = Slots.DepthwiseConv2DOptions
        opts = [
            (s.padding, "i8", padding, 0),
            (s.stride_w, "i32", stride[1], 0),
            (s.stride_h, "i32", stride[0], 0),
            (s.depth_multiplier, "i32", int(a.get("depth_multiplier", 1)), 0),
            (s.fused_activation_function, "i8", act, 0),
            (s.dilation_w_factor, "i32", dilation[1], 1),
            (s.dilation_h_factor, "i32", dilation[0], 1),
        ]
        ex.emit("DEPTHWISE_CONV_2D", ins, out, ("DepthwiseConv2DOptions", opts))
    else:
        ex.check_weights(op, 0)
        s = Slots.Conv2DOptions
        opts = [
            (s.padding, "i8", padding, 0),
            (s.stride_w, "i32", stride[1], 0),
            (s.stride_h, "i32", stride[0], 0),
            (s.fused_activation_function, "i8", act, 0),
            (s.dilation_w_factor, "i32", dilation[1], 1),
            (s.dilation_h_factor, "i32", dilation[0], 1),
        ]
        ex.emit("CONV_2D", ins, out, ("Conv2DOptions", opts))


def _fc(ex: _Exporter, op: Op) -> None:
    ex.check_weights(op, 0)
    s = Slots.FullyConnectedOptions
    opts = [(s.fused_activation_function, "i8", ex.activation(op), 0)]
    ins = [ex.tensor(op.inputs[0]), ex.tensor(op.inputs[1]), ex.optional(op, 2)]
    ex.emit("FULLY_CONNECTED", ins, [ex.tensor(op.outputs[0])], ("FullyConnectedOptions", opts))


def _pool(ex: _Exporter, op: Op) -> None:
    a = op.attrs
    x = op.inputs[0]
    kernel, stride = tuple(a["kernel"]), tuple(a["stride"])
    mode = ex.padding(op, ex.g.tensor(x).shape, kernel, stride, (1, 1))
    src = ex.tensor(x)
    include_pad = bool(a.get("count_include_pad")) and tuple(a["pads"]) != (0, 0, 0, 0)
    if a["mode"] == "avg" and include_pad:
        # ONNX count_include_pad: padded taps are real zeros and count in n, which is what
        # an explicit PAD followed by a VALID pool computes
        src, mode = ex.pad_input(op, x), "VALID"
    elif mode is None:
        raise ex.fail(
            op,
            f"pads {tuple(a['pads'])} are neither TFLite SAME nor VALID for this "
            f"{a['mode']} pool (TFLite pools ignore padded taps only with SAME)",
        )
    s = Slots.Pool2DOptions
    opts = [
        (s.padding, "i8", PADDING_SAME if mode == "SAME" else PADDING_VALID, 0),
        (s.stride_w, "i32", stride[1], 0),
        (s.stride_h, "i32", stride[0], 0),
        (s.filter_width, "i32", kernel[1], 0),
        (s.filter_height, "i32", kernel[0], 0),
        (s.fused_activation_function, "i8", ex.activation(op), 0),
    ]
    name = "MAX_POOL_2D" if a["mode"] == "max" else "AVERAGE_POOL_2D"
    ex.emit(name, [src], [ex.tensor(op.outputs[0])], ("Pool2DOptions", opts))


def _act(ex: _Exporter, op: Op) -> None:
    fn = op.attrs["fn"]
    ins, outs = [ex.tensor(op.inputs[0])], [ex.tensor(op.outputs[0])]
    if fn == "clip":
        if (op.attrs.get("lo"), op.attrs.get("hi")) != (-1.0, 1.0):
            raise ex.fail(op, "a Clip other than [-1, 1] has no TFLite builtin")
        fn = "relu_n1_to_1"
    name = {
        "relu": "RELU",
        "relu6": "RELU6",
        "relu_n1_to_1": "RELU_N1_TO_1",
        "tanh": "TANH",
        "sigmoid": "LOGISTIC",
    }.get(fn)
    if name is None:
        raise ex.fail(op, f"activation {fn!r} has no TFLite builtin")
    if name in FIXED_OUTPUT:
        ex.check_fixed_output(op, name)
    ex.emit(name, ins, outs)


def _add(ex: _Exporter, op: Op) -> None:
    a, b = ex.g.tensor(op.inputs[0]), ex.g.tensor(op.inputs[1])
    if a.shape != b.shape:
        raise ex.fail(op, f"ADD of shapes {a.shape} and {b.shape} (broadcasting) is not exported")
    opts = [(Slots.AddOptions.fused_activation_function, "i8", ex.activation(op), 0)]
    ins = [ex.tensor(op.inputs[0]), ex.tensor(op.inputs[1])]
    ex.emit("ADD", ins, [ex.tensor(op.outputs[0])], ("AddOptions", opts))


def _softmax(ex: _Exporter, op: Op) -> None:
    ins, outs = [ex.tensor(op.inputs[0])], [ex.tensor(op.outputs[0])]
    if op.attrs.get("log"):
        ex.check_fixed_output(op, "LOG_SOFTMAX")
        ex.emit("LOG_SOFTMAX", ins, outs, ("LogSoftmaxOptions", []))
        return
    ex.check_fixed_output(op, "SOFTMAX")
    beta = float(op.attrs.get("beta", 1.0))
    ex.emit(
        "SOFTMAX", ins, outs, ("SoftmaxOptions", [(Slots.SoftmaxOptions.beta, "f32", beta, 0.0)])
    )


def _reshape(ex: _Exporter, op: Op) -> None:
    shape = [-1, *(int(s) for s in op.attrs["shape"])]  # any batch
    shape_t = ex.const(f"{op.outputs[0]}_shape", shape)
    opts = ("ReshapeOptions", [(Slots.ReshapeOptions.new_shape, "vec_i32", shape, None)])
    ex.emit("RESHAPE", [ex.tensor(op.inputs[0]), shape_t], [ex.tensor(op.outputs[0])], opts)


def _transpose(ex: _Exporter, op: Op) -> None:
    perm = ex.const(f"{op.outputs[0]}_perm", [int(p) for p in op.attrs["perm"]])
    ins = [ex.tensor(op.inputs[0]), perm]
    ex.emit("TRANSPOSE", ins, [ex.tensor(op.outputs[0])], ("TransposeOptions", []))


def _pad(ex: _Exporter, op: Op) -> None:
    top, left, bottom, right = op.attrs["pads"]
    paddings = ex.const(f"{op.outputs[0]}_paddings", [[0, 0], [top, bottom], [left, right], [0, 0]])
    ins = [ex.tensor(op.inputs[0]), paddings]
    ex.emit("PAD", ins, [ex.tensor(op.outputs[0])], ("PadOptions", []))


def _quantize(ex: _Exporter, op: Op) -> None:
    ins, outs = [ex.tensor(op.inputs[0])], [ex.tensor(op.outputs[0])]
    ex.emit("QUANTIZE", ins, outs, ("QuantizeOptions", []))


def _dequantize(ex: _Exporter, op: Op) -> None:
    ins, outs = [ex.tensor(op.inputs[0])], [ex.tensor(op.outputs[0])]
    ex.emit("DEQUANTIZE", ins, outs, ("DequantizeOptions", []))


_EXPORTERS = {
    "conv": _conv,
    "fc": _fc,
    "pool": _pool,
    "act": _act,
    "add": _add,
    "softmax": _softmax,
    "reshape": _reshape,
    "transpose": _transpose,
    "pad": _pad,
    "quantize": _quantize,
    "dequantize": _dequantize,
}


# ---------------------------------------------------------------------- graph edges
def _edges(ex: _Exporter) -> list[tuple[str, str, int, str]]:
    """Graph inputs/outputs, with QUANTIZE / DEQUANTIZE ops when io asks for another type."""
    g = ex.g
    for name in g.inputs:
        t = g.tensor(name)
        if ex.io == "int8" or t.dtype != "int8":
            ex.m.inputs.append(ex.tensor(name))
            continue
        if ex.io == "uint8":
            edge = ex.add_tensor(
                f"{name}_uint8", t.shape, "uint8", None, t.scale, t.zero_point + 128
            )
        else:
            edge = ex.add_tensor(f"{name}_float", t.shape, "float32")
        ex.m.inputs.append(edge)
        ex.emit("QUANTIZE", [edge], [ex.tensor(name)], ("QuantizeOptions", []))
    tail = []
    for name in g.outputs:
        t = g.tensor(name)
        if ex.io == "int8" or t.dtype != "int8":
            ex.m.outputs.append(ex.tensor(name))
            continue
        if ex.io == "uint8":
            edge = ex.add_tensor(
                f"{name}_uint8", t.shape, "uint8", None, t.scale, t.zero_point + 128
            )
            tail.append(("QUANTIZE", name, edge, "QuantizeOptions"))
        else:
            edge = ex.add_tensor(f"{name}_float", t.shape, "float32")
            tail.append(("DEQUANTIZE", name, edge, "DequantizeOptions"))
        ex.m.outputs.append(edge)
    return tail


def build_model(graph: Graph, io: str = "int8") -> _Model:
    """The TFLite model as plain Python data (serialised by ``to_bytes``)."""
    if io not in IO_TYPES:
        raise EdgeconvError(f"io={io!r}: use one of {', '.join(IO_TYPES)}")
    graph.validate()
    ex = _Exporter(graph, io)
    if io != "int8" and not ex.quantized:
        raise EdgeconvError(f"io={io!r} applies to int8 models; this graph is float")
    for name, t in graph.tensors.items():
        if not t.is_const and 0 in t.shape:
            raise EdgeconvError(f"cannot export to .tflite: tensor {name!r} is empty {t.shape}")
    if ex.quantized:
        for name, t in graph.tensors.items():
            if not t.is_const and t.dtype == "float32":
                raise EdgeconvError(
                    f"cannot export to .tflite: activation {name!r} is float32 inside an int8 "
                    "graph (mixed float/int8 graphs are not supported)"
                )
    tail = _edges(ex)
    for op in graph.ops:
        writer = _EXPORTERS.get(op.kind)
        if writer is None:
            raise ex.fail(op, f"op kind {op.kind!r} has no TFLite writer")
        writer(ex, op)
    for op_name, name, edge, options in tail:
        ex.emit(op_name, [ex.tensor(name)], [edge], (options, []))
    return ex.m


# ---------------------------------------------------------------------- serialisation
def _metadata(graph: Graph, io: str) -> bytes:
    from .. import __version__

    info = {
        "producer": "edgeconv",
        "version": __version__,
        "io": io,
        "rounding_reference": "double (TFLM); see edgeconv README, section TFLite",
        "meta": graph.meta,
    }
    return json.dumps(
        info, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)
    ).encode()


def _write_options(b, table: str, fields: list[tuple]) -> int:
    vectors = {}
    for slot, kind, value, _ in fields:
        if kind == "vec_i32":
            vectors[slot] = b.CreateNumpyVector(np.asarray(value, np.int32))
    b.StartObject(max([f[0] for f in fields], default=-1) + 1)
    for slot, kind, value, default in fields:
        if kind == "i8":
            b.PrependInt8Slot(slot, int(value), default)
        elif kind == "i32":
            b.PrependInt32Slot(slot, int(value), default)
        elif kind == "f32":
            b.PrependFloat32Slot(slot, float(value), default)
        elif kind == "vec_i32":
            b.PrependUOffsetTRelativeSlot(slot, vectors[slot], 0)
        else:  # pragma: no cover - programming error
            raise ValueError(kind)
    return b.EndObject()


def _aligned_bytes(b, payload: bytes) -> int:
    b.StartVector(1, len(payload), BUFFER_ALIGNMENT)
    b.head = b.head - len(payload)
    b.Bytes[b.head : b.head + len(payload)] = payload
    return b.EndVector()


def _offsets(b, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def to_bytes(graph: Graph, io: str = "int8", description: str | None = None) -> bytes:
    """Serialise `graph` to .tflite bytes."""
    return _serialise(build_model(graph, io), graph, io, description)


def export_bytes(graph: Graph, io: str = "int8") -> tuple[bytes, dict[str, int]]:
    """The .tflite bytes and, for every graph tensor written, its TFLite tensor index."""
    m = build_model(graph, io)
    return _serialise(m, graph, io, None), dict(m.index)


def _serialise(m: _Model, graph: Graph, io: str, description: str | None) -> bytes:
    try:
        import flatbuffers
    except ImportError:
        raise EdgeconvError(
            "writing .tflite needs the 'flatbuffers' package: pip install flatbuffers"
        ) from None
    from .. import __version__

    meta_payload = _metadata(graph, io)
    m.buffers.append(meta_payload)
    meta_buffer = len(m.buffers) - 1

    size = sum(len(p) for p in m.buffers) + 4096 + 256 * len(m.tensors)
    b = flatbuffers.Builder(size)

    buffers = []
    for payload in m.buffers:
        data = _aligned_bytes(b, payload) if payload else None
        b.StartObject(Slots.Buffer.count)
        if data is not None:
            b.PrependUOffsetTRelativeSlot(Slots.Buffer.data, data, 0)
        buffers.append(b.EndObject())

    tensors = []
    for t in m.tensors:
        name = b.CreateString(t.name)
        shape = b.CreateNumpyVector(np.asarray(t.shape, np.int32))
        quant = None
        if t.scale is not None:
            S = Slots.Quantization
            scale = b.CreateNumpyVector(t.scale.astype(np.float32))
            zp = b.CreateNumpyVector(t.zero_point.astype(np.int64))
            b.StartObject(S.count)
            b.PrependUOffsetTRelativeSlot(S.scale, scale, 0)
            b.PrependUOffsetTRelativeSlot(S.zero_point, zp, 0)
            b.PrependInt32Slot(S.quantized_dimension, t.axis, 0)
            quant = b.EndObject()
        S = Slots.Tensor
        b.StartObject(S.count)
        b.PrependUOffsetTRelativeSlot(S.shape, shape, 0)
        b.PrependInt8Slot(S.type, TENSOR_TYPES[t.dtype], 0)
        b.PrependUint32Slot(S.buffer, t.buffer, 0)
        b.PrependUOffsetTRelativeSlot(S.name, name, 0)
        if quant is not None:
            b.PrependUOffsetTRelativeSlot(S.quantization, quant, 0)
        tensors.append(b.EndObject())

    codes: dict[tuple[str, int], int] = {}
    for o in m.operators:
        codes.setdefault((o.op, o.version), len(codes))
    operators = []
    for o in m.operators:
        opts = _write_options(b, o.options[0], o.options[1]) if o.options else None
        ins = b.CreateNumpyVector(np.asarray(o.inputs, np.int32))
        outs = b.CreateNumpyVector(np.asarray(o.outputs, np.int32))
        S = Slots.Operator
        b.StartObject(S.count)
        b.PrependUint32Slot(S.opcode_index, codes[(o.op, o.version)], 0)
        b.PrependUOffsetTRelativeSlot(S.inputs, ins, 0)
        b.PrependUOffsetTRelativeSlot(S.outputs, outs, 0)
        if opts is not None:
            b.PrependUint8Slot(S.builtin_options_type, OPTIONS[o.options[0]], 0)
            b.PrependUOffsetTRelativeSlot(S.builtin_options, opts, 0)
        operators.append(b.EndObject())

    S = Slots.SubGraph
    tensors_vec = _offsets(b, tensors)
    ops_vec = _offsets(b, operators)
    gin = b.CreateNumpyVector(np.asarray(m.inputs, np.int32))
    gout = b.CreateNumpyVector(np.asarray(m.outputs, np.int32))
    sg_name = b.CreateString("main")
    b.StartObject(S.count)
    b.PrependUOffsetTRelativeSlot(S.tensors, tensors_vec, 0)
    b.PrependUOffsetTRelativeSlot(S.inputs, gin, 0)
    b.PrependUOffsetTRelativeSlot(S.outputs, gout, 0)
    b.PrependUOffsetTRelativeSlot(S.operators, ops_vec, 0)
    b.PrependUOffsetTRelativeSlot(S.name, sg_name, 0)
    subgraph = b.EndObject()

    opcodes = []
    for (name, version), _ in sorted(codes.items(), key=lambda kv: kv[1]):
        code = OP[name]
        S = Slots.OperatorCode
        b.StartObject(S.count)
        b.PrependInt8Slot(S.deprecated_builtin_code, min(code, 127), 0)
        b.PrependInt32Slot(S.version, version, 1)
        b.PrependInt32Slot(S.builtin_code, code, 0)
        opcodes.append(b.EndObject())

    meta_name = b.CreateString("edgeconv")
    S = Slots.Metadata
    b.StartObject(S.count)
    b.PrependUOffsetTRelativeSlot(S.name, meta_name, 0)
    b.PrependUint32Slot(S.buffer, meta_buffer, 0)
    metadata = b.EndObject()

    S = Slots.Model
    codes_vec = _offsets(b, opcodes)
    subgraphs_vec = _offsets(b, [subgraph])
    buffers_vec = _offsets(b, buffers)
    metadata_vec = _offsets(b, [metadata])
    desc = b.CreateString(
        description or f"edgeconv {__version__} ({'int8' if graph.is_quantized else 'float32'})"
    )
    b.StartObject(S.count)
    b.PrependUint32Slot(S.version, SCHEMA_VERSION, 0)
    b.PrependUOffsetTRelativeSlot(S.operator_codes, codes_vec, 0)
    b.PrependUOffsetTRelativeSlot(S.subgraphs, subgraphs_vec, 0)
    b.PrependUOffsetTRelativeSlot(S.description, desc, 0)
    b.PrependUOffsetTRelativeSlot(S.buffers, buffers_vec, 0)
    b.PrependUOffsetTRelativeSlot(S.metadata, metadata_vec, 0)
    b.Finish(b.EndObject(), file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


def export_tflite(graph: Graph, path: str | os.PathLike, io: str = "int8") -> dict:
    """Write `graph` to `path` as .tflite; returns a report (printed by the CLI)."""
    m = build_model(graph, io)
    data = _serialise(m, graph, io, None)
    atomic_write(path, data)
    ops = [o.op for o in m.operators]
    counts = {name: ops.count(name) for name in dict.fromkeys(ops)}
    text = (
        f"wrote {path} ({len(data):,} bytes, {len(ops)} ops: "
        + ", ".join(f"{n}x{k}" if n > 1 else k for k, n in ((k, counts[k]) for k in counts))
        + f"; io {io})"
    )
    return {"output": str(path), "bytes": len(data), "ops": ops, "io": io, "text": text}
