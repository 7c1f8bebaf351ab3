"""Exported .tflite models run in TFLite Micro (and ai-edge-litert) give exactly edgeconv's
bytes: the demo LeNet-5 on all 10,000 MNIST test images, random single-layer models
(hypothesis), the public models in ../shared/cases, and the CLI verbs."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgeconv
from edgeconv.cli import main
from edgeconv.formats.tflite_export import to_bytes
from edgeconv.runtime import Model
from edgeconv.verify import verify_against

from . import tflite_cases as cases
from .conftest import CASES, shared_file
from .tflite_measure import litert_available, ours, run_litert, run_tflm, tflm_available

requires_tflm = pytest.mark.skipif(not tflm_available(), reason="pip install tflite-micro")
requires_litert = pytest.mark.skipif(not litert_available(), reason="pip install ai-edge-litert")
ASSETS = resources.files("edgeconv.examples")


@pytest.fixture(scope="module")
def demo_graph():
    """The int8 LeNet-5 exactly as `edgeconv demo` makes it."""
    f = edgeconv.load(str(ASSETS / "lenet5.onnx"))
    calib = np.load(str(ASSETS / "mnist_calib_200.npz"))["x"]
    return edgeconv.quantize_model(f, calib, limit=200).graph


# ------------------------------------------------------------------ LeNet-5, 10k images
@requires_tflm
def test_demo_lenet_tflm_all_mnist_test_images(demo_graph, mnist_test):
    x, y = mnist_test
    assert len(x) == 10_000
    model = Model(demo_graph, "lenet5", "double")
    xq = model.prepare_input(x[:, None])
    ours = model.run(xq)
    tflm = run_tflm(to_bytes(demo_graph), xq)
    assert tflm.shape == ours.shape == (10_000, 10)
    assert int((tflm != ours).sum()) == 0
    assert (ours.argmax(1) == y).mean() > 0.98


@requires_litert
@pytest.mark.parametrize(
    "runtime,rounding",
    [("litert-builtin", "tflite-opt"), ("litert-default", "xnnpack"), ("litert-ref", "tflite-ref")],
)
def test_demo_lenet_litert_all_mnist_test_images(demo_graph, mnist_test, runtime, rounding):
    x, _ = mnist_test
    model = Model(demo_graph, "lenet5", rounding)
    xq = model.prepare_input(x[:, None])
    ref = run_litert(to_bytes(demo_graph), xq, runtime)
    assert int((model.run(xq) != ref).sum()) == 0
    # and the TFLM mode is not what this runtime does: the profile is doing real work
    assert int((Model(demo_graph, "lenet5", "double").run(xq) != ref).sum()) > 0


# ------------------------------------------------------------------ single layers
ACT = st.sampled_from(cases.ACTIVATIONS)
PADDING = st.sampled_from(["SAME", "VALID", "EXPLICIT"])


@st.composite
def conv_layers(draw, depthwise: bool):
    seed = draw(st.integers(0, 2**32 - 1))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    return cases.conv_graph(
        np.random.default_rng(seed),
        depthwise=depthwise,
        n=2,
        h=draw(st.integers(kh, 12)),
        w=draw(st.integers(kw, 12)),
        cin=draw(st.integers(1, 12)),
        cout_or_mult=draw(st.integers(1, 3)) if depthwise else draw(st.integers(1, 16)),
        kernel=(kh, kw),
        stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        dilation=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        padding=draw(PADDING),
        per_channel=draw(st.booleans()),
        activation=draw(ACT),
    )


@st.composite
def fc_layers(draw):
    return cases.fc_graph(
        np.random.default_rng(draw(st.integers(0, 2**32 - 1))),
        n=8,
        k=draw(st.integers(1, 300)),
        cout=draw(st.integers(1, 32)),
        per_channel=draw(st.booleans()),
        activation=draw(ACT),
    )


@st.composite
def pool_layers(draw):
    mode = draw(st.sampled_from(["max", "avg"]))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return cases.pool_graph(
        np.random.default_rng(draw(st.integers(0, 2**32 - 1))),
        mode=mode,
        h=draw(st.integers(kh, 12)),
        w=draw(st.integers(kw, 12)),
        c=draw(st.integers(1, 8)),
        kernel=(kh, kw),
        stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        padding=draw(st.sampled_from(["SAME", "VALID"] + (["EXPLICIT"] if mode == "avg" else []))),
        activation=draw(ACT),
    )


LAYERS = {
    "conv": conv_layers(False),
    "depthwise": conv_layers(True),
    "fc": fc_layers(),
    "pool": pool_layers(),
}


@requires_tflm
@pytest.mark.parametrize("kind", list(LAYERS))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_layer_equals_tflm(kind, data):
    graph, x = data.draw(LAYERS[kind])
    mine = ours(graph, x, "double")
    tflm = run_tflm(to_bytes(graph), x)
    np.testing.assert_array_equal(tflm.reshape(mine.shape), mine)


# ------------------------------------------------------------------ public models
@requires_tflm
def test_hello_world_int8_verifies_against_tflm():
    path = shared_file(CASES / "tflm_hello_world_int8.tflite")
    x = np.linspace(0, 2 * np.pi, 1000, dtype=np.float32).reshape(-1, 1)
    report = verify_against(edgeconv.load(path), "tflite-micro", x, layers=True)
    assert report["elements"] == 1000 and report["mismatches"] == 0
    assert report["first_differing_layer"] is None
    assert report["oracle_package"].startswith("tflite-micro")


@requires_tflm
@pytest.mark.parametrize("name", ["mnist-8.onnx", "lenet5_pytorch2.0_opset10_gemm_flatten.onnx"])
def test_public_onnx_models_quantized_exported_verify(name, mnist_calib, mnist_test, tmp_path):
    f = edgeconv.load(shared_file(CASES / name))
    graph = edgeconv.quantize_model(f, mnist_calib).graph
    edgeconv.save(graph, tmp_path / "m.edgeconv")
    x = mnist_test[0][:1000]
    report = verify_against(edgeconv.load(tmp_path / "m.edgeconv"), "tflite-micro", x)
    assert report["elements"] == 10_000 and report["mismatches"] == 0


@requires_tflm
def test_hello_world_float_quantized_exported_verify(tmp_path):
    f = edgeconv.load(shared_file(CASES / "tflm_hello_world_float.tflite"))
    assert not f.quantized
    calib = np.random.default_rng(0).uniform(0, 2 * np.pi, (200, 1)).astype(np.float32)
    graph = edgeconv.quantize_model(f, calib).graph
    path = tmp_path / "hello_int8.tflite"
    edgeconv.formats.tflite_export.export_tflite(graph, path)
    x = np.linspace(0, 2 * np.pi, 500, dtype=np.float32).reshape(-1, 1)
    report = verify_against(edgeconv.load(path), "tflite-micro", x)
    assert report["mismatches"] == 0 and report["elements"] == 500
    # and it still computes a sine
    y = edgeconv.load(path).run(x, dequantize=True).ravel()
    assert np.abs(y - np.sin(x.ravel())).max() < 0.25


# ------------------------------------------------------------------ CLI
@requires_tflm
def test_cli_export_and_verify(demo_graph, tmp_path, capsys):
    src = tmp_path / "lenet.int8.edgeconv"
    edgeconv.save(demo_graph, src)
    out = tmp_path / "lenet.tflite"
    assert main(["export", str(src), "--format", "tflite", "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bytes"] == out.stat().st_size and report["io"] == "int8"
    data = str(ASSETS / "mnist_test_1k.npz")
    argv = ["verify", str(out), "--against", "tflite-micro", "--data", data, "--limit", "300"]
    assert main([*argv, "--json", "--layers"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["mismatches"], r["elements"], r["max_abs_diff"]) == (0, 3000, 0.0)
    assert r["first_differing_layer"] is None
    # another rounding than TFLM's: mismatches, exit code 1, and the first layer named
    assert main([*argv, "--json", "--layers", "--rounding", "single"]) == 1
    r = json.loads(capsys.readouterr().out)
    assert r["mismatches"] > 0 and r["first_differing_layer"]["kind"] == "conv"
    assert main([*argv]) == 0
    assert "MATCH: byte-identical" in capsys.readouterr().out


@requires_litert
def test_cli_verify_tflite_runtime_says_which_package(demo_graph, tmp_path, capsys):
    out = tmp_path / "lenet.tflite"
    out.write_bytes(to_bytes(demo_graph))
    data = str(ASSETS / "mnist_test_1k.npz")
    argv = ["verify", str(out), "--against", "tflite-runtime", "--data", data, "--json"]
    assert main([*argv, "--rounding", "xnnpack"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["mismatches"] == 0 and r["elements"] == 10_000
    assert r["oracle_package"].split()[0] in ("tflite-runtime", "ai-edge-litert")
    assert main(argv) == 1  # the default rounding is TFLM's, not XNNPACK's
    r = json.loads(capsys.readouterr().out)
    assert r["matching_rounding"] == "xnnpack"


def test_cli_export_refuses_float_model(capsys, tmp_path):
    assert (
        main(
            ["export", str(ASSETS / "lenet5.onnx"), "--format", "tflite", "-o", str(tmp_path / "f")]
        )
        == 2
    )
    assert "float model" in capsys.readouterr().err
