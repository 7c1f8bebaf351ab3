"""Run one TFLite builtin op in the TFLite Micro Python interpreter, as a test oracle.

Builds a single-op .tflite flatbuffer in memory with the ``tflite`` package's
generated builder functions (no TensorFlow needed), hands it to
``tflite_micro``'s interpreter and returns the output. Reusable by any test that
needs "what does TFLM say": kernels, the TFLite exporter, fused activations.

Quick use::

    from tests.tflm_oracle import TFLM_AVAILABLE, requires_tflm, run_single_op_tflm

    y = run_single_op_tflm("SOFTMAX", [x], [(0.1, 3)], (1 / 256, -128), {"beta": 1.0})
    y = run_single_op_tflm(
        "CONV_2D",
        [x, Const(w), Const(bias)],
        [(s_x, zp_x), Quant(s_w, [0] * oc, axis=0), Quant(s_x * s_w, [0] * oc)],
        (s_y, zp_y),
        {"padding": "SAME", "stride_w": 1, "stride_h": 1, "fused_activation_function": "RELU"},
        out_shape=(1, 8, 8, oc),
    )

Lower level: ``build_model(...) -> bytes`` and ``run_model(model_bytes, inputs)``
(the latter also runs .tflite files written by edgeconv's exporter).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

try:
    from tflite_micro.python.tflite_micro import runtime as _tflm_runtime
except Exception:  # pragma: no cover - depends on the environment
    _tflm_runtime = None

try:
    import flatbuffers as _flatbuffers
    import tflite as _tflite  # noqa: F401  (the generated schema package)
except Exception:  # pragma: no cover - depends on the environment
    _flatbuffers = None

TFLM_AVAILABLE: bool = _tflm_runtime is not None and _flatbuffers is not None
SKIP_REASON = "pip install tflite-micro to run TFLM oracle tests"
requires_tflm = pytest.mark.skipif(not TFLM_AVAILABLE, reason=SKIP_REASON)

__all__ = [
    "SKIP_REASON",
    "TFLM_AVAILABLE",
    "Const",
    "Quant",
    "TensorSpec",
    "build_model",
    "requires_tflm",
    "run_model",
    "run_model_isolated",
    "run_single_op_tflm",
]

# numpy dtype -> tflite TensorType value (schema.fbs).
_TENSOR_TYPES = {
    np.dtype(np.float32): 0,
    np.dtype(np.int32): 2,
    np.dtype(np.uint8): 3,
    np.dtype(np.int64): 4,
    np.dtype(np.bool_): 6,
    np.dtype(np.int16): 7,
    np.dtype(np.int8): 9,
}

# Builtin op -> its options table, for the ops edgeconv cares about. Anything else:
# pass options_type explicitly (the table name in schema.fbs, e.g. "ConcatenationOptions").
_OPTIONS_TABLE = {
    "ADD": "AddOptions",
    "SUB": "SubOptions",
    "MUL": "MulOptions",
    "SOFTMAX": "SoftmaxOptions",
    "LOG_SOFTMAX": "LogSoftmaxOptions",
    "CONV_2D": "Conv2DOptions",
    "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "FULLY_CONNECTED": "FullyConnectedOptions",
    "MAX_POOL_2D": "Pool2DOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "RESHAPE": "ReshapeOptions",
    "PAD": "PadOptions",
    "CONCATENATION": "ConcatenationOptions",
    "ARG_MAX": "ArgMaxOptions",
    "QUANTIZE": "QuantizeOptions",
    "DEQUANTIZE": "DequantizeOptions",
}


@dataclass(frozen=True)
class Quant:
    """Quantization of one tensor: per-tensor (scalars) or per-axis (sequences + axis)."""

    scale: float | Sequence[float]
    zero_point: int | Sequence[int] = 0
    axis: int = 0

    def scales(self) -> np.ndarray:
        return np.atleast_1d(np.asarray(self.scale, dtype=np.float32))

    def zero_points(self) -> np.ndarray:
        zp = np.atleast_1d(np.asarray(self.zero_point, dtype=np.int64))
        if zp.size == 1 and self.scales().size > 1:
            zp = np.repeat(zp, self.scales().size)
        return zp


@dataclass(frozen=True)
class Const:
    """Wraps an array that goes into the model as a constant buffer (weights, bias, shape)."""

    data: np.ndarray


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the graph. ``data`` set = constant tensor, else runtime input/output."""

    shape: tuple[int, ...]
    dtype: np.dtype
    quant: Quant | None = None
    data: np.ndarray | None = None
    name: str = ""


QParams = Quant | tuple[float, int] | None


def _as_quant(q: QParams) -> Quant | None:
    if q is None or isinstance(q, Quant):
        return q
    scale, zero_point = q
    return Quant(scale, zero_point)


def _module(name: str) -> Any:
    # `tflite.Model` etc. are re-exported classes; the builder functions live in the modules.
    return importlib.import_module(f"tflite.{name}")


def _builtin_code(op: str | int) -> int:
    if isinstance(op, int):
        return op
    codes = _module("BuiltinOperator").BuiltinOperator
    try:
        return int(getattr(codes, op.upper()))
    except AttributeError:
        raise ValueError(f"unknown TFLite builtin operator {op!r}") from None


def _camel(field: str) -> str:
    if any(c.isupper() for c in field):
        return field  # already the builder's spelling, e.g. "StrideW"
    return "".join(part[:1].upper() + part[1:] for part in field.split("_"))


def _enum_value(field: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if field.endswith("activation_function") or field.endswith("ActivationFunction"):
        return int(getattr(_module("ActivationFunctionType").ActivationFunctionType, value))
    if field.lower() == "padding":
        return int(getattr(_module("Padding").Padding, value))
    raise ValueError(f"option {field}={value!r}: give the enum's integer value")


def _int_vector(builder: Any, values: Sequence[int], dtype: Any = np.int32) -> int:
    return builder.CreateNumpyVector(np.asarray(list(values), dtype=dtype))


def _aligned_bytes(builder: Any, payload: bytes, alignment: int = 16) -> int:
    # TFLM reads constant tensors in place; keep them aligned like the converter does.
    builder.StartVector(1, len(payload), alignment)
    builder.head = builder.head - len(payload)
    builder.Bytes[builder.head : builder.head + len(payload)] = payload
    builder.vectorNumElems = len(payload)
    return builder.EndVector()


def _options_table(builder: Any, table: str, options: Mapping[str, Any]) -> int:
    mod = _module(table)
    getattr(mod, f"{table}Start")(builder)
    for field, value in options.items():
        adder = getattr(mod, f"{table}Add{_camel(field)}", None)
        if adder is None:
            raise ValueError(f"{table} has no field {field!r}")
        adder(builder, _enum_value(field, value))
    return getattr(mod, f"{table}End")(builder)


def _quantization(builder: Any, quant: Quant) -> int:
    qp = _module("QuantizationParameters")
    scale_vec = builder.CreateNumpyVector(quant.scales())
    zp_vec = builder.CreateNumpyVector(quant.zero_points())
    qp.QuantizationParametersStart(builder)
    qp.QuantizationParametersAddScale(builder, scale_vec)
    qp.QuantizationParametersAddZeroPoint(builder, zp_vec)
    qp.QuantizationParametersAddQuantizedDimension(builder, quant.axis)
    return qp.QuantizationParametersEnd(builder)


def _offset_vector(builder: Any, start: Any, offsets: Sequence[int]) -> int:
    start(builder, len(offsets))
    for off in reversed(offsets):
        builder.PrependUOffsetTRelative(off)
    return builder.EndVector()


def build_model(
    op: str | int,
    inputs: Sequence[TensorSpec | None],
    outputs: Sequence[TensorSpec],
    options: Mapping[str, Any] | None = None,
    *,
    options_type: str | None = None,
    op_version: int = 1,
) -> bytes:
    """Serialise a one-operator TFLite model.

    ``inputs`` are the op's inputs in order: a TensorSpec with ``data`` becomes a
    constant buffer, one without becomes a graph input (in order), and None is an
    omitted optional input (tensor index -1, e.g. FULLY_CONNECTED without bias).
    ``options`` uses schema.fbs field names (snake_case or the builder's CamelCase);
    activation and padding enums may be given by name ("RELU", "SAME").
    """
    if _flatbuffers is None:
        raise RuntimeError("flatbuffers and tflite packages are needed to build models")
    m = {
        n: _module(n) for n in ("Model", "SubGraph", "Tensor", "Operator", "OperatorCode", "Buffer")
    }
    b = _flatbuffers.Builder(1024)
    code = _builtin_code(op)
    op_name = op.upper() if isinstance(op, str) else None

    # Buffers: 0 is the mandatory empty sentinel, then one per constant tensor.
    specs = [s for s in inputs if s is not None] + list(outputs)
    buffer_payloads: list[bytes | None] = [None]
    buffer_index = []
    for spec in specs:
        if spec.data is not None:
            arr = np.ascontiguousarray(np.asarray(spec.data, dtype=spec.dtype))
            buffer_payloads.append(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
            buffer_index.append(len(buffer_payloads) - 1)
        else:
            buffer_index.append(0)
    buffers = []
    for payload in buffer_payloads:
        data_vec = _aligned_bytes(b, payload) if payload else None
        m["Buffer"].BufferStart(b)
        if data_vec is not None:
            m["Buffer"].BufferAddData(b, data_vec)
        buffers.append(m["Buffer"].BufferEnd(b))

    tensors = []
    for i, (spec, buf) in enumerate(zip(specs, buffer_index, strict=True)):
        name = b.CreateString(spec.name or f"t{i}")
        shape = _int_vector(b, spec.shape)
        quant = _quantization(b, spec.quant) if spec.quant is not None else None
        t = m["Tensor"]
        t.TensorStart(b)
        t.TensorAddShape(b, shape)
        t.TensorAddType(b, _TENSOR_TYPES[np.dtype(spec.dtype)])
        t.TensorAddBuffer(b, buf)
        t.TensorAddName(b, name)
        if quant is not None:
            t.TensorAddQuantization(b, quant)
        tensors.append(t.TensorEnd(b))

    op_inputs, graph_inputs, k = [], [], 0
    for spec in inputs:
        if spec is None:
            op_inputs.append(-1)
            continue
        op_inputs.append(k)
        if spec.data is None:
            graph_inputs.append(k)
        k += 1
    op_outputs = list(range(k, k + len(outputs)))

    table = options_type or (_OPTIONS_TABLE.get(op_name) if op_name else None)
    opts = _options_table(b, table, options or {}) if table else None
    if options and not table:
        raise ValueError(f"{op!r}: options given but no options_type known")
    o = m["Operator"]
    in_vec = _int_vector(b, op_inputs)
    out_vec = _int_vector(b, op_outputs)
    o.OperatorStart(b)
    o.OperatorAddOpcodeIndex(b, 0)
    o.OperatorAddInputs(b, in_vec)
    o.OperatorAddOutputs(b, out_vec)
    if opts is not None:
        o.OperatorAddBuiltinOptionsType(
            b, int(getattr(_module("BuiltinOptions").BuiltinOptions, table))
        )
        o.OperatorAddBuiltinOptions(b, opts)
    operator = o.OperatorEnd(b)

    sg = m["SubGraph"]
    tensors_vec = _offset_vector(b, sg.SubGraphStartTensorsVector, tensors)
    ops_vec = _offset_vector(b, sg.SubGraphStartOperatorsVector, [operator])
    gin = _int_vector(b, graph_inputs)
    gout = _int_vector(b, op_outputs)
    sg_name = b.CreateString("main")
    sg.SubGraphStart(b)
    sg.SubGraphAddTensors(b, tensors_vec)
    sg.SubGraphAddInputs(b, gin)
    sg.SubGraphAddOutputs(b, gout)
    sg.SubGraphAddOperators(b, ops_vec)
    sg.SubGraphAddName(b, sg_name)
    subgraph = sg.SubGraphEnd(b)

    oc = m["OperatorCode"]
    oc.OperatorCodeStart(b)
    oc.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
    oc.OperatorCodeAddBuiltinCode(b, code)
    oc.OperatorCodeAddVersion(b, op_version)
    opcode = oc.OperatorCodeEnd(b)

    md = m["Model"]
    codes_vec = _offset_vector(b, md.ModelStartOperatorCodesVector, [opcode])
    subgraphs_vec = _offset_vector(b, md.ModelStartSubgraphsVector, [subgraph])
    buffers_vec = _offset_vector(b, md.ModelStartBuffersVector, buffers)
    desc = b.CreateString("edgeconv tflm_oracle single-op model")
    md.ModelStart(b)
    md.ModelAddVersion(b, 3)
    md.ModelAddOperatorCodes(b, codes_vec)
    md.ModelAddSubgraphs(b, subgraphs_vec)
    md.ModelAddDescription(b, desc)
    md.ModelAddBuffers(b, buffers_vec)
    b.Finish(md.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def run_model(
    model: bytes, inputs: Sequence[np.ndarray], arena_size: int | None = None
) -> list[np.ndarray]:
    """Run a .tflite flatbuffer once in TFLM; returns every graph output as a new array."""
    if _tflm_runtime is None:
        pytest.skip(SKIP_REASON)
    if arena_size is None:
        data_bytes = sum(np.asarray(x).nbytes for x in inputs)
        arena_size = 256 * 1024 + 16 * data_bytes + 4 * len(model)
    interp = _tflm_runtime.Interpreter.from_bytes(bytes(model), arena_size=arena_size)
    for i, x in enumerate(inputs):
        interp.set_input(np.ascontiguousarray(x), i)
    interp.invoke()
    n_outputs = _module("Model").Model.GetRootAs(model, 0).Subgraphs(0).OutputsLength()
    outputs = [np.array(interp.get_output(i), copy=True) for i in range(n_outputs)]
    return outputs


_ISOLATED_SCRIPT = """
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
d = sys.argv[1]
model = open(d + "/model.tflite", "rb").read()
ins = np.load(d + "/inputs.npz")
interp = runtime.Interpreter.from_bytes(model, arena_size=int(sys.argv[2]))
for i in range(len(ins.files)):
    interp.set_input(ins[f"arr_{i}"], i)
interp.invoke()
outs = [np.array(interp.get_output(i)) for i in range(int(sys.argv[3]))]
np.savez(d + "/outputs.npz", *outs)
"""


def run_model_isolated(
    model: bytes,
    inputs: Sequence[np.ndarray],
    arena_size: int | None = None,
    timeout: float = 120.0,
) -> list[np.ndarray]:
    """Like run_model, but in a child process.

    TFLM turns a failed TFLITE_CHECK (e.g. a multiplier out of range in Prepare)
    into abort(), which kills the whole pytest process; here it becomes a
    RuntimeError carrying the exit status and TFLM's message. About 0.5 s a call.
    """
    if _tflm_runtime is None:
        pytest.skip(SKIP_REASON)
    if arena_size is None:
        data_bytes = sum(np.asarray(x).nbytes for x in inputs)
        arena_size = 256 * 1024 + 16 * data_bytes + 4 * len(model)
    n_outputs = _module("Model").Model.GetRootAs(model, 0).Subgraphs(0).OutputsLength()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "model.tflite").write_bytes(bytes(model))
        np.savez(Path(tmp, "inputs.npz"), *[np.ascontiguousarray(x) for x in inputs])
        proc = subprocess.run(
            [sys.executable, "-c", _ISOLATED_SCRIPT, tmp, str(arena_size), str(n_outputs)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:]) or "no message"
            if proc.returncode == -6:
                tail += " (SIGABRT: a failed TFLITE_CHECK)"
            raise RuntimeError(f"TFLM exited with status {proc.returncode}: {tail}")
        with np.load(Path(tmp, "outputs.npz")) as outs:
            return [outs[f"arr_{i}"] for i in range(n_outputs)]


def run_single_op_tflm(
    op: str | int,
    inputs: Sequence[np.ndarray | Const | None],
    in_qparams: Sequence[QParams],
    out_qparams: QParams,
    options: Mapping[str, Any] | None = None,
    *,
    out_shape: Sequence[int] | None = None,
    out_dtype: Any = None,
    options_type: str | None = None,
    isolated: bool = False,
) -> np.ndarray:
    """Build a one-op model around ``inputs`` and return TFLM's (single) output.

    in_qparams[i] quantizes inputs[i]: (scale, zero_point), a Quant (per-axis), or
    None (float / unquantized int32). Arrays are runtime inputs, Const(...) are baked
    into the model. The output takes the first input's shape and dtype unless
    out_shape / out_dtype say otherwise. isolated=True runs TFLM in a child process
    (see run_model_isolated) for parameters that may make TFLM abort.
    """
    if len(in_qparams) != len(inputs):
        raise ValueError("in_qparams needs one entry per input (None for unquantized)")
    specs: list[TensorSpec | None] = []
    runtime_inputs = []
    first = None
    for x, q in zip(inputs, in_qparams, strict=True):
        if x is None:
            specs.append(None)
            continue
        const = isinstance(x, Const)
        arr = np.asarray(x.data if const else x)
        first = arr if first is None else first
        specs.append(TensorSpec(tuple(arr.shape), arr.dtype, _as_quant(q), arr if const else None))
        if not const:
            runtime_inputs.append(arr)
    if first is None:
        raise ValueError("at least one input is needed")
    out_spec = TensorSpec(
        tuple(out_shape) if out_shape is not None else tuple(first.shape),
        np.dtype(out_dtype) if out_dtype is not None else first.dtype,
        _as_quant(out_qparams),
    )
    model = build_model(op, specs, [out_spec], options, options_type=options_type)
    runner = run_model_isolated if isolated else run_model
    return runner(model, runtime_inputs)[0]
