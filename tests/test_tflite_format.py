"""The .tflite writer and reader as a file format: the schema table against the generated
`tflite` package, round trips, what other readers see, and corrupt or unsupported files
(always one EdgeconvError, never a crash or a hang)."""

from __future__ import annotations

import importlib
import inspect
import re
import time

import numpy as np
import pytest

import edgeconv
from edgeconv import EdgeconvError
from edgeconv.formats import tflite_export, tflite_import, tflite_schema
from edgeconv.formats.tflite_export import build_model, export_tflite, to_bytes
from edgeconv.formats.tflite_import import from_bytes
from edgeconv.ir import Graph
from edgeconv.runtime import Model

from . import tflite_cases as cases
from .conftest import CASES, shared_file

tflite = pytest.importorskip("tflite", reason="the generated `tflite` schema package")


def _mod(name):
    return importlib.import_module(f"tflite.{name}")


# ------------------------------------------------------------------ schema facts
def _slots(table: str) -> dict[str, int]:
    """Field name -> slot, read from the generated builder functions."""
    src = inspect.getsource(_mod(table))
    found = re.findall(
        rf"def {table}Add(\w+)\(builder, \w+\):\s*\n\s*builder\.Prepend\w+Slot\((\d+)", src
    )
    return {k.lower(): int(v) for k, v in found}  # "BuiltinOptions2Type" -> builtinoptions2type


@pytest.mark.parametrize(
    "table,ours",
    [
        ("Model", "Model"),
        ("OperatorCode", "OperatorCode"),
        ("SubGraph", "SubGraph"),
        ("Tensor", "Tensor"),
        ("Buffer", "Buffer"),
        ("QuantizationParameters", "Quantization"),
        ("Operator", "Operator"),
        ("Metadata", "Metadata"),
        ("Conv2DOptions", "Conv2DOptions"),
        ("DepthwiseConv2DOptions", "DepthwiseConv2DOptions"),
        ("FullyConnectedOptions", "FullyConnectedOptions"),
        ("Pool2DOptions", "Pool2DOptions"),
        ("ReshapeOptions", "ReshapeOptions"),
        ("SoftmaxOptions", "SoftmaxOptions"),
        ("AddOptions", "AddOptions"),
        ("SqueezeOptions", "SqueezeOptions"),
    ],
)
def test_slots_match_generated_schema(table, ours):
    want = _slots(table)
    mine = {k: v for k, v in vars(getattr(tflite_schema.Slots, ours)).items() if k[0] != "_"}
    mine.pop("count")
    assert mine, table
    for name, slot in mine.items():
        assert want[name.replace("_", "")] == slot, (table, name)


def test_enums_match_generated_schema():
    ops = _mod("BuiltinOperator").BuiltinOperator
    for code, name in enumerate(tflite_schema.BUILTIN_OPERATORS):
        assert getattr(ops, name) == code
    types = _mod("TensorType").TensorType
    for name, code in tflite_schema.TENSOR_TYPES.items():
        assert getattr(types, name.upper()) == code
    options = _mod("BuiltinOptions").BuiltinOptions
    for name, code in tflite_schema.OPTIONS.items():
        assert getattr(options, name) == code
    acts = _mod("ActivationFunctionType").ActivationFunctionType
    for code, name in enumerate(tflite_schema.ACTIVATION_NAMES):
        assert getattr(acts, name) == code
    pad = _mod("Padding").Padding
    assert (pad.SAME, pad.VALID) == (tflite_schema.PADDING_SAME, tflite_schema.PADDING_VALID)


# ------------------------------------------------------------------ the writer
@pytest.fixture(scope="module")
def lenet_graph(example_data):
    from importlib import resources

    assets = resources.files("edgeconv.examples")
    f = edgeconv.load(str(assets / "lenet5.onnx"))
    return edgeconv.quantize_model(f, example_data["calib"]).graph


def test_generated_reader_sees_what_we_wrote(lenet_graph):
    data = to_bytes(lenet_graph)
    assert data[4:8] == b"TFL3"
    m = _mod("Model").Model.GetRootAs(data, 0)
    assert m.Version() == 3 and m.SubgraphsLength() == 1
    assert m.Description().decode().startswith("edgeconv")
    names = [m.Metadata(i).Name().decode() for i in range(m.MetadataLength())]
    assert names == ["edgeconv"]
    sg = m.Subgraphs(0)
    written = build_model(lenet_graph)
    assert sg.TensorsLength() == len(written.tensors)
    for i, t in enumerate(written.tensors):
        ft = sg.Tensors(i)
        assert ft.Name().decode() == t.name
        assert tuple(ft.ShapeAsNumpy()) == t.shape
        if t.name in lenet_graph.tensors and lenet_graph.tensors[t.name].is_const:
            ir = lenet_graph.tensors[t.name]
            buf = m.Buffers(ft.Buffer()).DataAsNumpy()
            np.testing.assert_array_equal(buf.view(ir.data.dtype).reshape(ir.shape), ir.data)
            q = ft.Quantization()
            np.testing.assert_array_equal(q.ScaleAsNumpy(), ir.scale)
            assert q.QuantizedDimension() == (ir.axis or 0)
    # constant data starts on a 16-byte boundary (TFLM reads it in place)
    for i in range(m.BuffersLength()):
        b = m.Buffers(i)
        if b.DataLength():
            start = b._tab.Vector(b._tab.Offset(4))
            assert start % tflite_export.BUFFER_ALIGNMENT == 0
    codes = [
        tflite_schema.op_name(m.OperatorCodes(sg.Operators(i).OpcodeIndex()).BuiltinCode())
        for i in range(sg.OperatorsLength())
    ]
    assert codes == [
        "RESHAPE",
        "CONV_2D",
        "MAX_POOL_2D",
        "CONV_2D",
        "MAX_POOL_2D",
        "RESHAPE",
        "FULLY_CONNECTED",
        "FULLY_CONNECTED",
        "FULLY_CONNECTED",
    ]


def _same_graph(a: Graph, b: Graph) -> None:
    assert [op.kind for op in a.ops] == [op.kind for op in b.ops]
    for oa, ob in zip(a.ops, b.ops, strict=True):
        for k in ("stride", "dilation", "pads", "activation", "depthwise", "mode", "kernel"):
            if k in oa.attrs:
                assert tuple(np.atleast_1d(oa.attrs[k])) == tuple(np.atleast_1d(ob.attrs[k])), k
        for na, nb in zip(oa.inputs, ob.inputs, strict=True):
            ta, tb = a.tensors[na], b.tensors[nb]
            assert ta.shape == tb.shape and ta.dtype == tb.dtype
            if ta.is_const:
                np.testing.assert_array_equal(ta.data, tb.data)  # stored integers, unchanged
                np.testing.assert_array_equal(ta.scale, tb.scale)


def test_round_trip_keeps_every_integer(lenet_graph, tmp_path, example_data):
    path = tmp_path / "lenet.tflite"
    report = export_tflite(lenet_graph, path)
    assert report["bytes"] == path.stat().st_size and report["ops"][1] == "CONV_2D"
    back = edgeconv.load(path)
    _same_graph(lenet_graph, back.graph)
    x = example_data["x"][:50]
    np.testing.assert_array_equal(Model(lenet_graph).run(x), back.run(x))


@pytest.mark.parametrize("io", ["uint8", "float"])
def test_io_edges_round_trip(lenet_graph, tmp_path, example_data, io):
    path = tmp_path / f"lenet_{io}.tflite"
    export_tflite(lenet_graph, path, io=io)
    back = edgeconv.load(path)
    assert back.graph.meta["tflite"]["io"] == io
    x = example_data["x"][:20]
    want = Model(lenet_graph).run(x)
    if io == "float":  # the float edges are Model.run's own quantize / dequantize
        assert back.input.dtype == "int8"
        np.testing.assert_array_equal(back.run(x), want)
    else:
        assert back.input.dtype == "uint8" and back.graph.ops[0].kind == "quantize"
        got = back.run(Model(lenet_graph).prepare_input(x).astype(np.int16) + 128)
        np.testing.assert_array_equal(got.astype(np.int16) - 128, want)
        deq = back.run(back.prepare_input(x.astype(np.float32)), dequantize=True)
        np.testing.assert_array_equal(deq, Model(lenet_graph).run(x, dequantize=True))


def test_explicit_padding_becomes_pad_op():
    g, x = cases.conv_graph(np.random.default_rng(1), padding="EXPLICIT")
    m = build_model(g)
    assert [o.op for o in m.operators] == ["PAD", "CONV_2D"]
    back = from_bytes(to_bytes(g))
    np.testing.assert_array_equal(Model(back).run(x), Model(g).run(x))


def test_float_graph_round_trip(tmp_path):
    f = edgeconv.load(shared_file(CASES / "mnist-8.onnx"))
    path = tmp_path / "mnist8_float.tflite"
    export_tflite(f.graph, path)
    back = edgeconv.load(path)
    assert not back.quantized
    x = np.random.default_rng(0).uniform(0, 255, (4, *f.input_shape)).astype(np.float32)
    np.testing.assert_allclose(back.run(x), f.run(x), rtol=1e-5, atol=1e-4)


def test_exporter_refuses_what_tflite_cannot_say():
    g, _ = cases.unary_graph(np.random.default_rng(0), kind="softmax")
    g.tensors["y"].scale = np.array([0.01], np.float32)
    with pytest.raises(EdgeconvError, match="SOFTMAX output must be quantized"):
        to_bytes(g)
    g, _ = cases.conv_graph(np.random.default_rng(0))
    g.ops[0].attrs.update(activation="clip", clip=(0.0, 3.0))
    with pytest.raises(EdgeconvError, match="no TFLite equivalent"):
        to_bytes(g)
    with pytest.raises(EdgeconvError, match="io="):
        to_bytes(g, io="int16")


# ------------------------------------------------------------------ the reader
def test_hello_world_int8_imports_stored_integers():
    path = shared_file(CASES / "tflm_hello_world_int8.tflite")
    m = edgeconv.load(path)
    g = m.graph
    assert [op.kind for op in g.ops] == ["fc", "fc", "fc"]
    assert m.input.qparams() == (pytest.approx(0.024480115), -128)
    w = g.tensors[g.ops[0].inputs[1]]
    assert w.dtype == "int8" and w.data.shape == (16, 1)
    b = g.tensors[g.ops[0].inputs[2]]
    assert b.dtype == "int32"
    # the stored tensors byte for byte, as the generated reader sees them
    data = path.read_bytes()
    fm = _mod("Model").Model.GetRootAs(data, 0)
    sg = fm.Subgraphs(0)
    by_name = {sg.Tensors(i).Name().decode(): sg.Tensors(i) for i in range(sg.TensorsLength())}
    raw = fm.Buffers(by_name[w.name].Buffer()).DataAsNumpy().view(np.int8)
    np.testing.assert_array_equal(raw.reshape(w.shape), w.data)
    assert g.ops[0].attrs["activation"] == "relu"


def test_unknown_op_is_named():
    g, _ = cases.unary_graph(np.random.default_rng(0), kind="tanh")
    m = build_model(g)
    m.operators[0].op = "MUL"
    data = tflite_export._serialise(m, g, "int8", None)
    with pytest.raises(EdgeconvError, match=r"operator 0 is MUL.*supported: .*CONV_2D"):
        from_bytes(data)


def _hybrid_fc() -> bytes:
    """A dynamic-range quantized FULLY_CONNECTED: float32 activations, int8 weights."""
    from .tflm_oracle import Quant, TensorSpec
    from .tflm_oracle import build_model as build_single

    w = np.ones((4, 8), np.int8)
    specs = [
        TensorSpec((1, 8), np.float32),
        TensorSpec((4, 8), np.int8, Quant(0.1, 0), w),
        TensorSpec((4,), np.float32, None, np.zeros(4, np.float32)),
    ]
    return build_single("FULLY_CONNECTED", specs, [TensorSpec((1, 4), np.float32)])


def test_hybrid_model_refused():
    with pytest.raises(EdgeconvError, match="hybrid"):
        from_bytes(_hybrid_fc())


def test_tflite_by_magic_without_extension(tmp_path, lenet_graph):
    path = tmp_path / "model.bin"
    path.write_bytes(to_bytes(lenet_graph))
    assert edgeconv.load(path).graph.meta["source_format"] == "tflite"


# ------------------------------------------------------------------ corrupt files
def _expect_clean_error(data: bytes, match: str | None = None) -> str:
    t0 = time.perf_counter()
    with pytest.raises(EdgeconvError, match=match) as e:
        from_bytes(data, "bad.tflite")
    assert time.perf_counter() - t0 < 2.0
    return str(e.value)


def test_truncated_files(lenet_graph):
    data = to_bytes(lenet_graph)
    for n in [0, 3, 7, 8, 16, 100, len(data) // 2, len(data) - 1]:
        _expect_clean_error(data[:n])


def test_wrong_identifier(lenet_graph):
    data = bytearray(to_bytes(lenet_graph))
    data[4:8] = b"ONNX"
    _expect_clean_error(bytes(data), "not a TFLite model")


def test_buffer_index_out_of_range(lenet_graph):
    m = build_model(lenet_graph)
    m.tensors[2].buffer = 9999
    data = tflite_export._serialise(m, lenet_graph, "int8", None)
    _expect_clean_error(data, "uses buffer 9999")


def test_tensor_shape_not_matching_its_buffer(lenet_graph):
    m = build_model(lenet_graph)
    weights = next(t for t in m.tensors if t.buffer and t.dtype == "int8")
    weights.shape = (weights.shape[0], weights.shape[1] + 1, *weights.shape[2:])
    data = tflite_export._serialise(m, lenet_graph, "int8", None)
    _expect_clean_error(data, "but its buffer holds")


def test_output_shape_not_matching_the_op(lenet_graph):
    m = build_model(lenet_graph)
    conv_out = m.tensors[m.operators[1].outputs[0]]
    conv_out.shape = (1, 27, 28, 6)
    data = tflite_export._serialise(m, lenet_graph, "int8", None)
    _expect_clean_error(data, "declared")


def test_tensor_index_out_of_range(lenet_graph):
    m = build_model(lenet_graph)
    m.operators[3].inputs[1] = 500
    data = tflite_export._serialise(m, lenet_graph, "int8", None)
    _expect_clean_error(data, "name tensor 500")


def test_huge_vector_length_is_not_a_hang(lenet_graph):
    data = bytearray(to_bytes(lenet_graph))
    root = int.from_bytes(data[0:4], "little")
    # every uint32 that could be a vector length: make the first few absurd
    hits = 0
    for pos in range(root, len(data) - 4, 4):
        if 0 < int.from_bytes(data[pos : pos + 4], "little") < 64:
            bad = bytearray(data)
            bad[pos : pos + 4] = (0x7FFFFFF0).to_bytes(4, "little")
            try:
                from_bytes(bytes(bad))
            except EdgeconvError:
                pass
            hits += 1
            if hits >= 40:
                break
    assert hits >= 10


def test_bit_flips_never_crash(lenet_graph, example_data):
    """A single-bit flip anywhere gives a clean error, or a model that loads and runs (a
    flip in weight bytes is still a valid model); never another exception, never a hang."""
    x = example_data["x"][:1]
    data = to_bytes(lenet_graph)
    rng = np.random.default_rng(0)
    positions = rng.choice(len(data), 600, replace=False)
    outcomes = {"error": 0, "loaded": 0}
    t0 = time.perf_counter()
    for pos in positions:
        bad = bytearray(data)
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        try:
            g = from_bytes(bytes(bad), "flipped.tflite")
            Model(g).run(x)
            outcomes["loaded"] += 1
        except EdgeconvError:
            outcomes["error"] += 1
    assert outcomes["error"] > 0 and outcomes["loaded"] > 0
    assert time.perf_counter() - t0 < 30


def test_unsupported_types_are_named():
    g, _ = cases.fc_graph(np.random.default_rng(0))
    m = build_model(g)
    m.tensors[0].dtype = "int16"
    m.tensors[-1].dtype = "int16"
    data = tflite_export._serialise(m, g, "int8", None)
    with pytest.raises(EdgeconvError, match="int16"):
        from_bytes(data)


def test_importer_refuses_mixed_float_int8():
    g, _ = cases.fc_graph(np.random.default_rng(0))
    m = build_model(g)
    m.tensors[m.index["y"]].dtype = "float32"
    m.tensors[m.index["y"]].scale = None
    data = tflite_export._serialise(m, g, "int8", None)
    with pytest.raises(EdgeconvError, match="mixes float32 and int8"):
        from_bytes(data)


def test_relu_n1_to_1_round_trip():
    g, _ = cases.fc_graph(np.random.default_rng(0))
    g.ops[0].attrs["activation"] = "clip"
    g.ops[0].attrs["clip"] = (-1.0, 1.0)  # fused RELU_N1_TO_1
    assert "RELU_N1_TO_1" in tflite_import.SUPPORTED_OPS
    back = from_bytes(to_bytes(g))
    assert back.ops[-1].attrs["activation"] == "clip"
    assert tuple(back.ops[-1].attrs["clip"]) == (-1.0, 1.0)


def test_float16_weights_behind_dequantize_become_float32_constants():
    """A float model whose weights are stored float16 and DEQUANTIZEd (TFLite's float16
    quantization) imports as a float32 model."""
    from edgeconv.formats.tflite_export import _Operator, _Tensor

    f = edgeconv.load(shared_file(CASES / "tflm_hello_world_float.tflite"))
    m = build_model(f.graph)
    first_fc = m.operators[0]
    wi = first_fc.inputs[1]
    w32 = m.tensors[wi]
    half = f.graph.tensors[w32.name].data.astype(np.float16)
    m.buffers.append(half.tobytes())
    m.tensors.append(_Tensor(f"{w32.name}_fp16", w32.shape, "float16", len(m.buffers) - 1))
    w32.buffer = 0  # now computed by the DEQUANTIZE
    m.operators.insert(
        0, _Operator("DEQUANTIZE", [len(m.tensors) - 1], [wi], ("DequantizeOptions", []))
    )
    g = from_bytes(tflite_export._serialise(m, f.graph, "int8", None))
    assert not g.is_quantized and [op.kind for op in g.ops] == ["fc", "fc", "fc"]
    np.testing.assert_array_equal(g.tensors[w32.name].data, half.astype(np.float32))
    x = np.linspace(0, 6, 50, dtype=np.float32).reshape(-1, 1)
    np.testing.assert_allclose(Model(g).run(x), f.run(x), atol=2e-2)
