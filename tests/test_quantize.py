"""The PTQ pipeline: TFLite's parameter rules, the traps it must survive, and real
accuracy on MNIST (shipped example and the public models in ../shared/cases)."""

from __future__ import annotations

import numpy as np
import pytest

import edgeconv
from edgeconv.errors import EdgeconvError
from edgeconv.ir import Graph, Op, Tensor
from edgeconv.quantize.ptq import (
    choose_activation_qparams,
    quantize_graph,
    quantize_weights,
)
from tests.conftest import CASES, EXAMPLES, shared_file


def test_activation_qparams_follow_tflite():
    scale, zp = choose_activation_qparams(0.0, 255.0)
    assert scale == pytest.approx(1.0) and zp == -128
    scale, zp = choose_activation_qparams(-1.0, 1.0)
    assert scale == pytest.approx(2 / 255) and zp in (-1, 0)
    # range widened to include 0
    scale, zp = choose_activation_qparams(2.0, 4.0)
    assert scale == pytest.approx(4 / 255) and zp == -128
    scale, zp = choose_activation_qparams(-4.0, -2.0)
    assert scale == pytest.approx(4 / 255) and zp == 127


def test_always_zero_activation_gets_a_finite_scale():
    scale, zp = choose_activation_qparams(0.0, 0.0)
    assert np.isfinite(scale) and scale > 0 and -128 <= zp <= 127


def test_weights_per_channel_symmetric_and_zero_channel_safe():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 3, 2)).astype(np.float32)
    w[2] = 0.0
    q, scale = quantize_weights(w, axis=0)
    assert q.dtype == np.int8 and q.min() >= -127 and q.max() <= 127
    assert np.all(np.isfinite(scale)) and np.all(scale > 0)
    assert np.all(q[2] == 0)
    for c in (0, 1, 3):
        assert np.abs(q[c]).max() == 127  # the largest weight maps to +-127
        assert np.allclose(q[c] * scale[c], w[c], atol=scale[c] / 2 + 1e-7)


def _fc_graph(w: np.ndarray, b: np.ndarray) -> Graph:
    t = {
        "x": Tensor("x", (1, w.shape[1])),
        "w": Tensor("w", w.shape, data=w.astype(np.float32)),
        "b": Tensor("b", b.shape, data=b.astype(np.float32)),
        "y": Tensor("y", (1, w.shape[0])),
    }
    return Graph(t, [Op("fc", ["x", "w", "b"], ["y"], {"activation": "none"}, "fc")], ["x"], ["y"])


def test_bias_overflow_enlarges_weight_scale_and_warns():
    w = np.array([[1e-6, -1e-6], [0.5, 0.25]], np.float32)
    b = np.array([1e6, 0.1], np.float32)  # channel 0: 1e6 / (s_in * 1e-6/127) overflows int32
    x = np.array([[1.0, -1.0], [0.5, 0.2]], np.float32)
    result = quantize_graph(_fc_graph(w, b), x)
    assert result.warnings and "bias too large" in result.warnings[0]
    bias = result.graph.tensors["b"]
    assert bias.dtype == "int32" and np.abs(bias.data.astype(np.int64)).max() <= 2**31 - 1
    y = edgeconv.Model(result.graph).run(x, dequantize=True)
    ref = x @ w.T + b
    assert np.allclose(y[:, 0], ref[:, 0], rtol=0.02)


def test_nan_in_calibration_data_is_a_clear_error():
    w = np.ones((2, 2), np.float32)
    x = np.array([[np.nan, 1.0]], np.float32)
    with pytest.raises(EdgeconvError, match="NaN"):
        quantize_graph(_fc_graph(w, np.zeros(2)), x)


def test_nan_in_weights_is_a_clear_error():
    w = np.array([[np.nan, 1.0], [1.0, 1.0]], np.float32)
    with pytest.raises(EdgeconvError, match="NaN"):
        quantize_graph(_fc_graph(w, np.zeros(2)), np.ones((2, 2), np.float32))


def test_empty_calibration_is_a_clear_error():
    w = np.ones((2, 2), np.float32)
    with pytest.raises(EdgeconvError, match="empty"):
        quantize_graph(_fc_graph(w, np.zeros(2)), np.zeros((0, 2), np.float32))


def test_quantizing_an_int8_model_is_refused(example_data):
    q = edgeconv.quantize_model(edgeconv.load(EXAMPLES / "lenet5.onnx"), example_data["calib"][:20])
    with pytest.raises(EdgeconvError, match="already int8"):
        edgeconv.quantize_model(edgeconv.Model(q.graph), example_data["calib"][:20])


def _accuracies(path, calib, x, y):
    fmodel = edgeconv.load(path)
    qmodel = edgeconv.Model(edgeconv.quantize_model(fmodel, calib).graph)
    fp, qp = fmodel.predict(x), qmodel.predict(x)
    return (fp == y).mean() * 100, (qp == y).mean() * 100, (fp == qp).mean() * 100


def test_example_lenet5_on_all_mnist_test_images(mnist_test, mnist_calib):
    x, y = mnist_test
    facc, qacc, agree = _accuracies(EXAMPLES / "lenet5.onnx", mnist_calib, x, y)
    print(f"LeNet-5 t10k: float {facc:.2f} % int8 {qacc:.2f} % agreement {agree:.2f} %")
    assert facc >= 98.5
    assert abs(facc - qacc) <= 0.3
    assert agree >= 99.0


@pytest.mark.parametrize(
    "name, float_accuracy",
    [("mnist-8.onnx", 98.91), ("lenet5_pytorch2.0_opset10_gemm_flatten.onnx", 98.26)],
)
def test_public_models_quantize_within_half_a_point(name, float_accuracy, mnist_test, mnist_calib):
    x, y = mnist_test
    facc, qacc, agree = _accuracies(shared_file(CASES / name), mnist_calib, x, y)
    print(f"{name}: float {facc:.2f} % int8 {qacc:.2f} % agreement {agree:.2f} %")
    assert facc == pytest.approx(float_accuracy, abs=0.01)  # the importer is faithful
    assert abs(facc - qacc) <= 0.5
