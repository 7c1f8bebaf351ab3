"""Read a .tflite model into edgeconv's graph: full-integer int8 models (int8, uint8 or
float I/O through QUANTIZE / DEQUANTIZE at the edges) and float32 models.

The stored int8 weights, int32 biases, scales and zero points are taken exactly as they
are: nothing is re-quantized, so our kernels start from the integers every TFLite
runtime starts from. Float edges (float input -> QUANTIZE, DEQUANTIZE -> float output)
are dropped from the graph because ``Model.run`` does the same two steps with TFLM's
arithmetic; int8 <-> uint8 edges stay as ``quantize`` ops.

The file is read with ``flatbuf``, which checks every offset, and every tensor is
checked against its buffer and every op's output shape against what the op computes:
a truncated, bit-flipped or inconsistent file is an EdgeconvError, never a crash. An op
edgeconv does not run, or a hybrid (dynamic-range) model, is refused by name.

One small function per TFLite operator (``_IMPORTERS``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import EdgeconvError
from ..fileio import read_bytes
from ..ir import Graph, Op, Tensor, conv_output_size, same_pads
from .flatbuf import Buffer, Table
from .tflite_schema import (
    ACT_NONE,
    ACT_RELU,
    ACT_RELU6,
    ACT_RELU_N1_TO_1,
    ACTIVATION_NAMES,
    FILE_IDENTIFIER,
    OP,
    PADDING_SAME,
    PADDING_VALID,
    SCHEMA_VERSION,
    TENSOR_TYPE_NAMES,
    Slots,
    op_name,
)

# numpy dtypes of the tensor types a constant may have here
_NP_TYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "int32": np.int32,
    "int64": np.int64,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
}
_ACTIVATIONS = {ACT_NONE: "none", ACT_RELU: "relu", ACT_RELU6: "relu6", ACT_RELU_N1_TO_1: "clip"}
FIXED_OUTPUT = {
    "SOFTMAX": (1.0 / 256, -128),
    "LOGISTIC": (1.0 / 256, -128),
    "TANH": (1.0 / 128, 0),
    "LOG_SOFTMAX": (16.0 / 256, 127),
}


@dataclass
class _TflTensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    data: np.ndarray | None
    scale: np.ndarray | None
    zero_point: np.ndarray | None
    axis: int


@dataclass
class _TflOp:
    index: int
    name: str  # builtin operator name
    inputs: list[int]
    outputs: list[int]
    options: Table | None
    options_type: int


class _Reader:
    """Flatbuffer -> plain records, with every structural check."""

    def __init__(self, data: bytes, source: str):
        self.source = source
        self.buf = Buffer(data, source)
        if len(data) < 8:
            raise self.buf.fail(f"only {len(data)} bytes; a .tflite file is a flatbuffer")
        if data[4:8] != FILE_IDENTIFIER:
            raise EdgeconvError(
                f"{source}: not a TFLite model (file identifier {bytes(data[4:8])!r}, "
                f"expected {FILE_IDENTIFIER!r})"
            )
        self.model = self.buf.root()
        version = self.model.scalar(Slots.Model.version, "u32")
        if version != SCHEMA_VERSION:
            raise EdgeconvError(
                f"{source}: TFLite schema version {version}; edgeconv reads version "
                f"{SCHEMA_VERSION}"
            )
        self.description = self.model.string(Slots.Model.description, "description") or ""
        self.buffers = self.model.tables(Slots.Model.buffers, "buffers")
        subgraphs = self.model.tables(Slots.Model.subgraphs, "subgraphs")
        if len(subgraphs) != 1:
            raise EdgeconvError(
                f"{source}: {len(subgraphs)} subgraphs; edgeconv imports single-subgraph "
                "models (no control flow)"
            )
        self.sg = subgraphs[0]
        self.codes = [
            self._opcode(t) for t in self.model.tables(Slots.Model.operator_codes, "operator codes")
        ]
        self.tensors = [
            self._tensor(i, t)
            for i, t in enumerate(self.sg.tables(Slots.SubGraph.tensors, "tensors"))
        ]
        self.inputs = self._indices(self.sg, Slots.SubGraph.inputs, "subgraph inputs", False)
        self.outputs = self._indices(self.sg, Slots.SubGraph.outputs, "subgraph outputs", False)
        self.ops = [
            self._operator(i, t)
            for i, t in enumerate(self.sg.tables(Slots.SubGraph.operators, "operators"))
        ]
        self.metadata = self._metadata()

    def fail(self, what: str) -> EdgeconvError:
        return EdgeconvError(f"{self.source}: {what}")

    def _opcode(self, t: Table) -> tuple[int, str | None, int]:
        s = Slots.OperatorCode
        code = max(t.scalar(s.deprecated_builtin_code, "i8"), t.scalar(s.builtin_code, "i32"))
        custom = t.string(s.custom_code, "custom code")
        return code, custom, t.scalar(s.version, "i32", 1)

    def _indices(self, t: Table, slot: int, what: str, optional: bool) -> list[int]:
        arr = t.array(slot, "int32", what)
        vals = [] if arr is None else [int(v) for v in arr]
        n = len(self.tensors)
        for v in vals:
            if not (0 <= v < n or (optional and v == -1)):
                raise self.buf.fail(f"{what} name tensor {v}; the model has {n} tensors")
        return vals

    def _buffer_data(self, index: int, tensor_name: str) -> tuple[int, int] | None:
        if not 0 <= index < len(self.buffers):
            raise self.buf.fail(
                f"tensor {tensor_name!r} uses buffer {index}; the model has "
                f"{len(self.buffers)} buffers"
            )
        b = self.buffers[index]
        vec = b.raw(Slots.Buffer.data, f"buffer {index}")
        if vec is not None and vec[1] > 0:
            return vec
        offset = b.scalar(Slots.Buffer.offset, "u64")
        size = b.scalar(Slots.Buffer.size, "u64")
        if offset > 1 and size > 0:  # data stored after the flatbuffer (models > 2 GB)
            if offset + size > self.buf.size:
                raise self.buf.fail(f"buffer {index} lies past the end of the file")
            return offset, size
        return None

    def _tensor(self, i: int, t: Table) -> _TflTensor:
        s = Slots.Tensor
        name = t.string(s.name, f"tensor {i} name") or f"tensor_{i}"
        shape_arr = t.array(s.shape, "int32", f"tensor {name!r} shape")
        shape = tuple(int(v) for v in shape_arr) if shape_arr is not None else ()
        code = t.scalar(s.type, "i8")
        dtype = TENSOR_TYPE_NAMES.get(code, f"type #{code}")
        if any(d < 0 for d in shape):
            raise self.buf.fail(f"tensor {name!r} has a negative dimension {list(shape)}")
        if t.scalar(s.is_variable, "bool"):
            raise self.fail(f"tensor {name!r} is a variable (stateful models are not supported)")
        if t.has(s.sparsity):
            raise self.fail(f"tensor {name!r} is sparse; edgeconv reads dense tensors")
        data = None
        where = self._buffer_data(t.scalar(s.buffer, "u32"), name)
        if where is not None:
            if dtype not in _NP_TYPES:
                raise self.fail(
                    f"constant tensor {name!r} has type {dtype}, which edgeconv does not read"
                )
            np_type = np.dtype(_NP_TYPES[dtype]).newbyteorder("<")
            count = int(np.prod(shape, dtype=object)) if shape else 1
            start, size = where
            if count * np_type.itemsize != size:
                raise self.buf.fail(
                    f"tensor {name!r} has shape {list(shape)} ({dtype}: {count * np_type.itemsize}"
                    f" bytes) but its buffer holds {size} bytes"
                )
            raw = np.frombuffer(self.buf.data, np_type, count, start)
            data = raw.astype(np_type.newbyteorder("=")).reshape(shape)
        scale = zero_point = None
        axis = 0
        q = t.table(s.quantization, f"tensor {name!r} quantization")
        if q is not None:
            qs = Slots.Quantization
            if q.scalar(qs.details_type, "u8"):
                raise self.fail(f"tensor {name!r} uses custom quantization details")
            sc = q.array(qs.scale, "float32", f"tensor {name!r} scales")
            zp = q.array(qs.zero_point, "int64", f"tensor {name!r} zero points")
            if sc is not None and sc.size:
                zp = np.zeros(sc.size, np.int64) if zp is None or zp.size == 0 else zp
                if zp.size != sc.size:
                    raise self.buf.fail(
                        f"tensor {name!r} has {sc.size} scales but {zp.size} zero points"
                    )
                axis = q.scalar(qs.quantized_dimension, "i32")
                if sc.size > 1 and not (0 <= axis < len(shape) and shape[axis] == sc.size):
                    raise self.buf.fail(
                        f"tensor {name!r}: {sc.size} per-channel scales do not match "
                        f"dimension {axis} of shape {list(shape)}"
                    )
                if not np.all(np.isfinite(sc)) or np.any(sc < 0):
                    raise self.buf.fail(f"tensor {name!r} has a scale that is not finite and >= 0")
                if np.any(np.abs(zp) > 2**31):
                    raise self.buf.fail(f"tensor {name!r} has a zero point outside int32")
                scale, zero_point = sc.astype(np.float32), zp.astype(np.int32)
        return _TflTensor(i, name, shape, dtype, data, scale, zero_point, axis)

    def _operator(self, i: int, t: Table) -> _TflOp:
        s = Slots.Operator
        idx = t.scalar(s.opcode_index, "u32")
        if idx >= len(self.codes):
            raise self.buf.fail(f"operator {i} uses opcode {idx}; the model has {len(self.codes)}")
        code, custom, _ = self.codes[idx]
        name = op_name(code)
        if code == OP["CUSTOM"]:
            raise self.fail(
                f"operator {i} is the custom op {custom!r}, which edgeconv does not run; "
                f"supported: {', '.join(sorted(_IMPORTERS))}"
            )
        ins = self._indices(t, s.inputs, f"operator {i} ({name}) inputs", True)
        outs = self._indices(t, s.outputs, f"operator {i} ({name}) outputs", False)
        if not outs:
            raise self.buf.fail(f"operator {i} ({name}) has no output")
        opts_type = t.scalar(s.builtin_options_type, "u8")
        opts = t.table(s.builtin_options, f"operator {i} ({name}) options") if opts_type else None
        return _TflOp(i, name, ins, outs, opts, opts_type)

    def _metadata(self) -> dict[str, str]:
        out = {}
        for m in self.model.tables(Slots.Model.metadata, "metadata"):
            name = m.string(Slots.Metadata.name, "metadata name") or ""
            where = self._buffer_data(m.scalar(Slots.Metadata.buffer, "u32"), f"metadata {name}")
            if where is not None and name in ("edgeconv", "min_runtime_version"):
                start, size = where
                out[name] = (
                    self.buf.data[start : start + min(size, 1 << 16)]
                    .decode("utf-8", errors="replace")
                    .rstrip("\0")
                )
        return out


# ------------------------------------------------------------------------------ importer
class _Importer:
    def __init__(self, r: _Reader):
        self.r = r
        self.source = r.source
        self.graph = Graph({}, [], [], [], {"source_format": "tflite", "source": r.source})
        self.names: dict[int, str] = {}
        self.op: _TflOp | None = None
        self.quantized = False

    # ---- errors and tensors
    def fail(self, msg: str) -> EdgeconvError:
        op = self.op
        where = f"operator {op.index} ({op.name}): " if op is not None else ""
        return EdgeconvError(f"{self.source}: {where}{msg}")

    def t(self, i: int) -> _TflTensor:
        return self.r.tensors[i]

    def name(self, i: int) -> str:
        """The IR name of tensor i (TFLite names need not be unique), registered on use."""
        if i not in self.names:
            t = self.t(i)
            name = t.name if t.name not in self.graph.tensors else f"{t.name}#{i}"
            self.names[i] = name
            self.graph.tensors[name] = self.ir_tensor(t, name)
        return self.names[i]

    def ir_tensor(self, t: _TflTensor, name: str) -> Tensor:
        if t.dtype not in ("float32", "int8", "uint8", "int32", "int64"):
            raise self.fail(
                f"tensor {t.name!r} has type {t.dtype}; edgeconv runs float32 and int8 models "
                "(int16 activations / float16 or 4-bit weights are not supported)"
            )
        shape = t.shape
        if t.data is None:
            if 0 in shape:
                raise self.fail(f"activation {t.name!r} has an empty dimension {list(shape)}")
            if len(shape) == 0 or shape[0] != 1:
                raise self.fail(
                    f"activation {t.name!r} has shape {list(shape)}; edgeconv imports models "
                    "with batch size 1 (the runtime batches any number of samples)"
                )
        axis = t.axis if t.scale is not None and t.scale.size > 1 else None
        return Tensor(name, shape, t.dtype, t.data, t.scale, t.zero_point, axis)

    def new(self, like: int, suffix: str, shape, dtype: str | None = None) -> str:
        t = self.t(like)
        name = f"{self.names.get(like, t.name)}{suffix}"
        while name in self.graph.tensors:
            name += "_"
        self.graph.tensors[name] = Tensor(
            name, tuple(shape), dtype or t.dtype, None, t.scale, t.zero_point, None
        )
        return name

    def emit(self, kind: str, inputs: list[str], output: str, attrs=None) -> None:
        label = f"{self.op.name.lower()}_{self.op.index}" if self.op else output
        self.graph.ops.append(Op(kind, inputs, [output], attrs or {}, label))

    def input(self, k: int, what: str = "input") -> _TflTensor:
        if k >= len(self.op.inputs) or self.op.inputs[k] < 0:
            raise self.fail(f"{what} (input {k}) is missing")
        return self.t(self.op.inputs[k])

    def opt(self, slot: int, kind: str, default=0):
        o = self.op.options
        return default if o is None else o.scalar(slot, kind, default)

    def activation(self, code: int) -> dict:
        if code not in _ACTIVATIONS:
            name = ACTIVATION_NAMES[code] if 0 <= code < len(ACTIVATION_NAMES) else code
            raise self.fail(
                f"fused activation {name} is not supported (NONE, RELU, RELU6, RELU_N1_TO_1)"
            )
        act = _ACTIVATIONS[code]
        return {"activation": act, "clip": (-1.0, 1.0)} if act == "clip" else {"activation": act}

    def check_shape(self, out: _TflTensor, shape) -> None:
        if tuple(out.shape) != tuple(shape):
            raise self.fail(
                f"output {out.name!r} is declared {list(out.shape)} but the op computes "
                f"{list(shape)} (inconsistent model)"
            )

    def check_activation_types(self, *ts: _TflTensor) -> None:
        for t in ts:
            if t.data is not None:
                raise self.fail(f"{t.name!r} is a constant where an activation is expected")
            want = ("int8", "uint8") if self.quantized else ("float32",)
            if t.dtype not in want:
                if (
                    self.quantized
                    and t.dtype == "float32"
                    or not self.quantized
                    and t.dtype == "int8"
                ):
                    raise self.fail(
                        "mixes float32 and int8 activations; edgeconv imports full-integer int8 "
                        "models and float32 models"
                    )
                raise self.fail(f"activation {t.name!r} is {t.dtype}")
            if self.quantized and (t.scale is None or t.scale.size != 1):
                raise self.fail(f"int8 activation {t.name!r} needs one scale and zero point")

    def same_qparams(self, a: _TflTensor, b: _TflTensor, what: str) -> None:
        if not self.quantized:
            return
        if a.scale[0] != b.scale[0] or a.zero_point[0] != b.zero_point[0]:
            raise self.fail(
                f"{what} with different input and output quantization ({a.scale[0]:g}, "
                f"{a.zero_point[0]}) -> ({b.scale[0]:g}, {b.zero_point[0]}) is not supported"
            )

    def const_ints(self, t: _TflTensor, what: str) -> np.ndarray:
        if t.data is None or t.dtype not in ("int32", "int64"):
            raise self.fail(f"{what} must be a constant int32/int64 tensor")
        return t.data.astype(np.int64)

    def weights(self, w: _TflTensor, axis: int, cout: int) -> None:
        """int8 weights with zero point 0, per-tensor or per-channel on `axis`."""
        if not self.quantized:
            if w.dtype != "float32" or w.data is None:
                raise self.fail(f"weights {w.name!r} must be constant float32 in a float model")
            return
        if w.data is None or w.dtype != "int8" or w.scale is None:
            raise self.fail(f"weights {w.name!r} must be constant int8 with scales")
        if np.any(w.zero_point != 0):
            raise self.fail(f"weights {w.name!r} have non-zero zero points (not TFLite int8)")
        if w.scale.size not in (1, cout) or (w.scale.size > 1 and w.axis != axis):
            raise self.fail(
                f"weights {w.name!r}: {w.scale.size} scales on dimension {w.axis}; expected "
                f"1 or {cout} on dimension {axis}"
            )

    def bias(self, k: int, cout: int, s_in: float, w: _TflTensor) -> list[str]:
        if k < len(self.op.inputs) and self.op.inputs[k] >= 0:
            b = self.t(self.op.inputs[k])
            want = "int32" if self.quantized else "float32"
            if b.data is None or b.dtype != want or b.data.shape != (cout,):
                raise self.fail(f"bias {b.name!r} must be a constant {want} [{cout}]")
            return [self.name(b.index)]
        if not self.quantized:
            return []
        out = self.t(self.op.outputs[0])
        name = f"{out.name}_zero_bias"
        scale = (np.float32(s_in) * np.broadcast_to(w.scale, (cout,))).astype(np.float32)
        self.graph.tensors[name] = Tensor(
            name, (cout,), "int32", np.zeros(cout, np.int32), scale, np.zeros(cout, np.int32), 0
        )
        return [name]


# ---------------------------------------------------------------- per-op importers
def _window_pads(imp: _Importer, padding: int, size, kernel, stride, dilation):
    if padding not in (PADDING_SAME, PADDING_VALID):
        raise imp.fail(f"unknown padding {padding}")
    if min(stride) < 1 or min(dilation) < 1 or min(kernel) < 1:
        raise imp.fail(f"stride {stride}, dilation {dilation}, kernel {kernel} must be >= 1")
    if padding == PADDING_VALID:
        return (0, 0, 0, 0)
    top, bottom = same_pads(size[0], kernel[0], stride[0], dilation[0])
    left, right = same_pads(size[1], kernel[1], stride[1], dilation[1])
    return (top, left, bottom, right)


def _conv(imp: _Importer, depthwise: bool) -> None:
    x, w = imp.input(0), imp.input(1, "weights")
    out = imp.t(imp.op.outputs[0])
    imp.check_activation_types(x, out)
    if len(x.shape) != 4 or len(w.shape) != 4 or 0 in w.shape or 0 in x.shape:
        raise imp.fail(f"expects 4-D input and weights, got {list(x.shape)} and {list(w.shape)}")
    S = Slots.DepthwiseConv2DOptions if depthwise else Slots.Conv2DOptions
    stride = (imp.opt(S.stride_h, "i32"), imp.opt(S.stride_w, "i32"))
    dilation = (imp.opt(S.dilation_h_factor, "i32", 1), imp.opt(S.dilation_w_factor, "i32", 1))
    kernel = w.shape[1:3]
    pads = _window_pads(imp, imp.opt(S.padding, "i8"), x.shape[1:3], kernel, stride, dilation)
    cin = x.shape[3]
    if depthwise:
        cout = w.shape[3]
        if w.shape[0] != 1 or cout % cin:
            raise imp.fail(f"depthwise weights {list(w.shape)} do not fit {cin} input channels")
        extra = {"depthwise": True, "depth_multiplier": cout // cin}
        imp.weights(w, 3, cout)
    else:
        cout = w.shape[0]
        if w.shape[3] != cin:
            raise imp.fail(
                f"weights have {w.shape[3]} input channels, the input {cin} (grouped "
                "convolution is not supported)"
            )
        extra = {"depthwise": False, "depth_multiplier": 1}
        imp.weights(w, 0, cout)
    oh = conv_output_size(x.shape[1], kernel[0], stride[0], dilation[0], pads[0], pads[2])
    ow = conv_output_size(x.shape[2], kernel[1], stride[1], dilation[1], pads[1], pads[3])
    imp.check_shape(out, (1, oh, ow, cout))
    s_in = float(x.scale[0]) if imp.quantized else 0.0
    attrs = {"stride": stride, "dilation": dilation, "pads": pads, **extra}
    attrs.update(imp.activation(imp.opt(S.fused_activation_function, "i8")))
    ins = [imp.name(x.index), imp.name(w.index), *imp.bias(2, cout, s_in, w)]
    imp.emit("conv", ins, imp.name(out.index), attrs)


def _fc(imp: _Importer) -> None:
    x, w = imp.input(0), imp.input(1, "weights")
    out = imp.t(imp.op.outputs[0])
    S = Slots.FullyConnectedOptions
    if imp.opt(S.asymmetric_quantize_inputs, "bool") or (
        x.dtype == "float32" and w.dtype in ("int8", "uint8")
    ):
        raise imp.fail(
            "is hybrid (dynamic-range quantized: float32 activations, int8 weights); edgeconv "
            "imports full-integer int8 models (re-convert with full integer quantization and a "
            "representative dataset) or float32 models"
        )
    imp.check_activation_types(x, out)
    if imp.opt(S.weights_format, "i8") != 0:
        raise imp.fail("shuffled weights format is not supported")
    if len(w.shape) != 2 or 0 in w.shape:
        raise imp.fail(f"weights must be 2-D [out, in], got {list(w.shape)}")
    cout, k = w.shape
    imp.weights(w, 0, cout)
    numel = int(np.prod(x.shape))
    if numel != k:
        raise imp.fail(f"input {list(x.shape)} has {numel} values; the weights take {k} per sample")
    src = imp.name(x.index)
    if tuple(x.shape) != (1, k):
        flat = imp.new(x.index, "_flat", (1, k))
        imp.emit("reshape", [src], flat, {"shape": (k,)})
        src = flat
    if int(np.prod(out.shape)) != cout or out.shape[0] != 1:
        raise imp.fail(f"output {list(out.shape)} does not hold {cout} values")
    s_in = float(x.scale[0]) if imp.quantized else 0.0
    attrs = imp.activation(imp.opt(S.fused_activation_function, "i8"))
    ins = [src, imp.name(w.index), *imp.bias(2, cout, s_in, w)]
    if tuple(out.shape) == (1, cout):
        imp.emit("fc", ins, imp.name(out.index), attrs)
        return
    y = imp.new(out.index, "_fc", (1, cout))  # keep_num_dims: the same values, reshaped
    imp.emit("fc", ins, y, attrs)
    imp.emit("reshape", [y], imp.name(out.index), {"shape": tuple(out.shape[1:])})


def _pool(imp: _Importer, mode: str) -> None:
    x, out = imp.input(0), imp.t(imp.op.outputs[0])
    imp.check_activation_types(x, out)
    imp.same_qparams(x, out, f"{imp.op.name}")
    if len(x.shape) != 4:
        raise imp.fail(f"expects a 4-D NHWC input, got {list(x.shape)}")
    S = Slots.Pool2DOptions
    kernel = (imp.opt(S.filter_height, "i32"), imp.opt(S.filter_width, "i32"))
    stride = (imp.opt(S.stride_h, "i32"), imp.opt(S.stride_w, "i32"))
    pads = _window_pads(imp, imp.opt(S.padding, "i8"), x.shape[1:3], kernel, stride, (1, 1))
    oh = conv_output_size(x.shape[1], kernel[0], stride[0], 1, pads[0], pads[2])
    ow = conv_output_size(x.shape[2], kernel[1], stride[1], 1, pads[1], pads[3])
    imp.check_shape(out, (1, oh, ow, x.shape[3]))
    attrs = {"mode": mode, "kernel": kernel, "stride": stride, "pads": pads}
    attrs["count_include_pad"] = False
    attrs.update(imp.activation(imp.opt(S.fused_activation_function, "i8")))
    imp.emit("pool", [imp.name(x.index)], imp.name(out.index), attrs)


def _reshape(imp: _Importer) -> None:
    x, out = imp.input(0), imp.t(imp.op.outputs[0])
    imp.check_activation_types(x, out)
    imp.same_qparams(x, out, imp.op.name)
    if int(np.prod(x.shape)) != int(np.prod(out.shape)):
        raise imp.fail(f"cannot reshape {list(x.shape)} to {list(out.shape)}")
    imp.emit("reshape", [imp.name(x.index)], imp.name(out.index), {"shape": tuple(out.shape[1:])})


def _fixed_output(imp: _Importer, out: _TflTensor) -> None:
    if not imp.quantized:
        return
    s, zp = FIXED_OUTPUT[imp.op.name]
    if out.zero_point[0] != zp or not np.isclose(out.scale[0], s, rtol=1e-6):
        raise imp.fail(f"int8 output must be quantized ({s:g}, {zp}) as TFLite requires")


def _softmax(imp: _Importer, log: bool) -> None:
    x, out = imp.input(0), imp.t(imp.op.outputs[0])
    imp.check_activation_types(x, out)
    imp.check_shape(out, x.shape)
    _fixed_output(imp, out)
    attrs = {"log": log, "beta": 1.0}
    if not log:
        attrs["beta"] = float(imp.opt(Slots.SoftmaxOptions.beta, "f32", 0.0))
    imp.emit("softmax", [imp.name(x.index)], imp.name(out.index), attrs)


def _unary(imp: _Importer, fn: str) -> None:
    x, out = imp.input(0), imp.t(imp.op.outputs[0])
    imp.check_activation_types(x, out)
    imp.check_shape(out, x.shape)
    attrs = {"fn": fn}
    if fn in ("tanh", "sigmoid"):
        _fixed_output(imp, out)
    else:
        imp.same_qparams(x, out, imp.op.name)
    if fn == "clip":
        attrs.update(lo=-1.0, hi=1.0)
    imp.emit("act", [imp.name(x.index)], imp.name(out.index), attrs)


def _add(imp: _Importer) -> None:
    a, b, out = imp.input(0), imp.input(1), imp.t(imp.op.outputs[0])
    imp.check_activation_types(a, b, out)
    if a.shape != b.shape:
        raise imp.fail(
            f"ADD with broadcasting ({list(a.shape)} + {list(b.shape)}) is not supported"
        )
    imp.check_shape(out, a.shape)
    attrs = imp.activation(imp.opt(Slots.AddOptions.fused_activation_function, "i8"))
    imp.emit("add", [imp.name(a.index), imp.name(b.index)], imp.name(out.index), attrs)


def _pad(imp: _Importer) -> None:
    x, out = imp.input(0), imp.t(imp.op.outputs[0])
    imp.check_activation_types(x, out)
    imp.same_qparams(x, out, imp.op.name)
    p = imp.const_ints(imp.input(1, "paddings"), "paddings")
    if len(x.shape) != 4 or p.shape != (4, 2):
        raise imp.fail(
            f"pads a {len(x.shape)}-D tensor with paddings {list(p.shape)}; expected NHWC"
        )
    if p[0].any() or p[3].any() or (p < 0).any():
        raise imp.fail("only non-negative padding of height and width is supported")
    if imp.op.name == "PADV2" and len(imp.op.inputs) > 2 and imp.op.inputs[2] >= 0:
        value = imp.t(imp.op.inputs[2])
        fill = 0 if value.data is None else value.data.reshape(-1)[:1]
        zero = x.zero_point[0] if imp.quantized else 0
        if value.data is None or value.data.size != 1 or fill[0] != zero:
            raise imp.fail("PADV2 with a value other than zero (the zero point) is not supported")
    top, bottom, left, right = int(p[1, 0]), int(p[1, 1]), int(p[2, 0]), int(p[2, 1])
    imp.check_shape(out, (1, x.shape[1] + top + bottom, x.shape[2] + left + right, x.shape[3]))
    imp.emit("pad", [imp.name(x.index)], imp.name(out.index), {"pads": (top, left, bottom, right)})


def _transpose(imp: _Importer) -> None:
    x, out = imp.input(0), imp.t(imp.op.outputs[0])
    imp.check_activation_types(x, out)
    imp.same_qparams(x, out, imp.op.name)
    perm = tuple(int(v) for v in imp.const_ints(imp.input(1, "perm"), "perm").reshape(-1))
    if sorted(perm) != list(range(len(x.shape))) or perm[0] != 0:
        raise imp.fail(
            f"perm {list(perm)} must permute {len(x.shape)} axes and keep the batch first"
        )
    imp.check_shape(out, tuple(x.shape[p] for p in perm))
    imp.emit("transpose", [imp.name(x.index)], imp.name(out.index), {"perm": perm})


def _quantize(imp: _Importer) -> None:
    x, out = imp.input(0), imp.t(imp.op.outputs[0])
    ints = ("int8", "uint8")
    if x.dtype not in ints or out.dtype not in ints:
        raise imp.fail(
            f"QUANTIZE from {x.dtype} to {out.dtype} inside the graph is not supported (only "
            "at the model's input, or between int8 and uint8)"
        )
    imp.check_shape(out, x.shape)
    for t in (x, out):
        if t.scale is None or t.scale.size != 1:
            raise imp.fail(f"{t.name!r} needs one scale and zero point")
    imp.emit("quantize", [imp.name(x.index)], imp.name(out.index))


def _dequantize(imp: _Importer) -> None:
    raise imp.fail(
        "DEQUANTIZE inside the graph (a mixed float/int8 model) is not supported; only at "
        "the model's output"
    )


_IMPORTERS = {
    "CONV_2D": lambda imp: _conv(imp, False),
    "DEPTHWISE_CONV_2D": lambda imp: _conv(imp, True),
    "FULLY_CONNECTED": _fc,
    "MAX_POOL_2D": lambda imp: _pool(imp, "max"),
    "AVERAGE_POOL_2D": lambda imp: _pool(imp, "avg"),
    "RESHAPE": _reshape,
    "SQUEEZE": _reshape,
    "EXPAND_DIMS": _reshape,
    "SOFTMAX": lambda imp: _softmax(imp, False),
    "LOG_SOFTMAX": lambda imp: _softmax(imp, True),
    "TANH": lambda imp: _unary(imp, "tanh"),
    "LOGISTIC": lambda imp: _unary(imp, "sigmoid"),
    "RELU": lambda imp: _unary(imp, "relu"),
    "RELU6": lambda imp: _unary(imp, "relu6"),
    "RELU_N1_TO_1": lambda imp: _unary(imp, "clip"),
    "ADD": _add,
    "PAD": _pad,
    "PADV2": _pad,
    "TRANSPOSE": _transpose,
    "QUANTIZE": _quantize,
    "DEQUANTIZE": _dequantize,
}
SUPPORTED_OPS = tuple(sorted(_IMPORTERS))


# ---------------------------------------------------------------- graph assembly
def _fold_constant_dequantize(r: _Reader) -> list[_TflOp]:
    """DEQUANTIZE of a constant (float16 or int8 stored weights of a float model) becomes a
    float32 constant; the op disappears."""
    kept = []
    for op in r.ops:
        if op.name == "DEQUANTIZE" and op.inputs and op.inputs[0] >= 0:
            src = r.tensors[op.inputs[0]]
            if src.data is not None:
                if src.dtype == "float16":
                    val = src.data.astype(np.float32)
                elif src.scale is not None and src.dtype in ("int8", "uint8"):
                    shape = [1] * src.data.ndim
                    if src.scale.size > 1:
                        shape[src.axis] = -1
                    zp = src.zero_point.reshape(shape).astype(np.float32)
                    val = (src.data.astype(np.float32) - zp) * src.scale.reshape(shape)
                else:
                    raise EdgeconvError(f"{r.source}: cannot dequantize constant {src.name!r}")
                dst = r.tensors[op.outputs[0]]
                dst.data, dst.dtype, dst.scale, dst.zero_point = val, "float32", None, None
                continue
        kept.append(op)
    return kept


def _edges(r: _Reader, ops: list[_TflOp]) -> tuple[list[int], list[int], list[_TflOp], str]:
    """Drop float QUANTIZE / DEQUANTIZE ops at the model's edges."""
    inputs, outputs = list(r.inputs), list(r.outputs)
    consumers: dict[int, int] = {}
    for op in ops:
        for i in op.inputs:
            consumers[i] = consumers.get(i, 0) + 1
    io = None
    kept = []
    for op in ops:
        src = r.tensors[op.inputs[0]] if op.inputs and op.inputs[0] >= 0 else None
        dst = r.tensors[op.outputs[0]]
        if (
            op.name == "QUANTIZE"
            and src is not None
            and src.index in inputs
            and src.dtype == "float32"
            and dst.dtype == "int8"
            and consumers.get(src.index) == 1
        ):
            inputs[inputs.index(src.index)] = dst.index
            io = "float"
            continue
        if (
            op.name == "DEQUANTIZE"
            and src is not None
            and dst.index in outputs
            and src.dtype == "int8"
            and dst.dtype == "float32"
            and consumers.get(dst.index, 0) == 0
        ):
            outputs[outputs.index(dst.index)] = src.index
            io = "float"
            continue
        kept.append(op)
    if io is None:
        types = {r.tensors[i].dtype for i in inputs + outputs}
        io = "uint8" if "uint8" in types else ("int8" if "int8" in types else "float32")
    return inputs, outputs, kept, io


def from_bytes(data: bytes, source: str = "<tflite>") -> Graph:
    """Parse .tflite bytes into a validated edgeconv graph."""
    r = _Reader(data, source)
    ops = _fold_constant_dequantize(r)
    inputs, outputs, ops, io = _edges(r, ops)
    imp = _Importer(r)
    act_types = {
        r.tensors[i].dtype for op in ops for i in op.outputs if r.tensors[i].data is None
    } | {r.tensors[i].dtype for i in inputs}
    imp.quantized = bool(act_types & {"int8", "uint8"})
    if not inputs or not outputs:
        raise EdgeconvError(f"{source}: the model has no inputs or no outputs")
    for i in inputs:
        imp.graph.inputs.append(imp.name(i))
    produced = set(inputs)
    for op in ops:
        imp.op = op
        convert = _IMPORTERS.get(op.name)
        if convert is None:
            raise EdgeconvError(
                f"{source}: operator {op.index} is {op.name}, which edgeconv does not import; "
                f"supported: {', '.join(SUPPORTED_OPS)}"
            )
        if len(op.outputs) != 1:
            raise imp.fail(f"has {len(op.outputs)} outputs; edgeconv ops have one")
        for i in op.inputs:
            if i >= 0 and r.tensors[i].data is None and i not in produced:
                raise imp.fail(f"reads tensor {r.tensors[i].name!r} before it is computed")
        convert(imp)
        produced.update(op.outputs)
    imp.op = None
    for i in outputs:
        if i not in produced:
            raise EdgeconvError(f"{source}: output tensor {r.tensors[i].name!r} is never computed")
        imp.graph.outputs.append(imp.name(i))
    g = imp.graph
    g.meta["tflite"] = {
        "io": io,
        "description": r.description,
        "tensor_index": dict(zip(imp.names.values(), imp.names.keys(), strict=True)),
        **({"edgeconv": r.metadata["edgeconv"]} if "edgeconv" in r.metadata else {}),
    }
    g.validate()
    return g


def load_tflite(path: str | os.PathLike) -> Graph:
    """Read a .tflite file into an edgeconv graph (see the module docstring)."""
    return from_bytes(read_bytes(path, "model file"), str(path))
