"""The CLI as a user meets it: the main verbs on the shipped example, --json output,
and every bad input answered with one line and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeconv.cli import main
from tests.conftest import EXAMPLES

LENET = str(EXAMPLES / "lenet5.onnx")
CALIB = str(EXAMPLES / "mnist_calib_200.npz")
TEST = str(EXAMPLES / "mnist_test_1k.npz")


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "lenet5.int8.edgeconv"
    assert main(["quantize", LENET, "--calib", CALIB, "-o", str(out), "--limit", "100"]) == 0
    return out


def _json(capsys) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return json.loads(out[0])


def test_eval_json(int8_model, capsys):
    assert (
        main(
            ["eval", str(int8_model), "--data", TEST, "--limit", "300", "--float", LENET, "--json"]
        )
        == 0
    )
    obj = _json(capsys)
    assert obj["n"] == 300 and obj["accuracy"] > 0.97 and obj["float_accuracy"] > 0.97
    assert obj["latency_ms_p50"] > 0 and obj["agreement"] > 0.97


def test_eval_float_model_reports_float_accuracy(capsys):
    assert main(["eval", LENET, "--data", TEST, "--limit", "100", "--no-timing", "--json"]) == 0
    obj = _json(capsys)
    assert obj["accuracy"] == obj["float_accuracy"]


def test_run_writes_raw_int8(int8_model, tmp_path, capsys):
    x = np.load(TEST)["x"][:4]
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npy"
    assert main(["run", str(int8_model), "--input", str(tmp_path / "x.npy"), "-o", str(out)]) == 0
    y = np.load(out)
    assert y.dtype == np.int8 and y.shape == (4, 10)
    assert np.array_equal(y.argmax(1), np.load(TEST)["y"][:4])


def test_inspect_json(int8_model, capsys):
    assert main(["inspect", str(int8_model), "--json", "--target", "cortex-m4"]) == 0
    obj = _json(capsys)
    assert obj["quantized"] and obj["macs"] == 416_520 and obj["params"] == 61_706
    assert obj["target"]["weights_fit_flash"] is True
    assert [r["op"] for r in obj["layers"] if r["macs"]] == [
        "conv+relu",
        "conv+relu",
        "fc+relu",
        "fc+relu",
        "fc",
    ]


def test_demo_json(capsys):
    assert main(["demo", "--json", "--limit", "200"]) == 0
    obj = _json(capsys)
    for key in ("accuracy", "n", "float_accuracy", "latency_ms_p50", "agreement"):
        assert key in obj
    assert obj["n"] == 200 and obj["int8_param_bytes"] * 3.9 < obj["float_param_bytes"]


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgeconv: error: "), err
    return err[0]


def test_missing_model_file(capsys, tmp_path):
    assert "not found" in _error(capsys, ["inspect", str(tmp_path / "none.onnx")])


def test_wrong_extension(capsys, tmp_path):
    p = tmp_path / "model.h5"
    p.write_bytes(b"\x89HDF\r\n")
    assert "unknown model format" in _error(capsys, ["inspect", str(p)])


def test_truncated_onnx(capsys, tmp_path):
    p = tmp_path / "cut.onnx"
    p.write_bytes(open(LENET, "rb").read()[:5000])
    assert "not a valid ONNX" in _error(capsys, ["inspect", str(p)])


def test_garbage_onnx(capsys, tmp_path):
    p = tmp_path / "junk.onnx"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    assert "not a valid ONNX" in _error(capsys, ["inspect", str(p)])


def test_unsupported_op(capsys, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Erf", ["x"], ["y"], name="erf_1")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    p = tmp_path / "erf.onnx"
    onnx.save(helper.make_model(g), p)
    msg = _error(capsys, ["inspect", str(p)])
    assert "erf_1" in msg and "Erf" in msg and "Conv" in msg


def test_wrong_input_shape_at_run_time(int8_model, capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 27, 28), np.float32))
    msg = _error(
        capsys,
        ["run", str(int8_model), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")],
    )
    assert "shape [2, 27, 28]" in msg and "[N, 1, 28, 28]" in msg
    assert not (tmp_path / "y.npy").exists()


def test_wrong_input_dtype_at_run_time(int8_model, capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.array(["a"] * 784))
    msg = _error(
        capsys,
        ["run", str(int8_model), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")],
    )
    assert "dtype" in msg


def test_empty_calibration_data(capsys, tmp_path):
    np.savez(tmp_path / "c.npz", x=np.zeros((0, 28, 28), np.uint8))
    msg = _error(
        capsys,
        ["quantize", LENET, "--calib", str(tmp_path / "c.npz"), "-o", str(tmp_path / "m.edgeconv")],
    )
    assert "no samples" in msg
    assert not (tmp_path / "m.edgeconv").exists()


def test_mismatched_calibration_data(capsys, tmp_path):
    np.savez(tmp_path / "c.npz", x=np.zeros((10, 32, 32), np.uint8))
    msg = _error(
        capsys,
        ["quantize", LENET, "--calib", str(tmp_path / "c.npz"), "-o", str(tmp_path / "m.edgeconv")],
    )
    assert "calibration data" in msg and "[N, 1, 28, 28]" in msg


def test_labels_missing(capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 28, 28), np.uint8))
    assert "no labels" in _error(capsys, ["eval", LENET, "--data", str(tmp_path / "x.npy")])


def test_failed_quantize_keeps_existing_output(capsys, tmp_path):
    out = tmp_path / "m.edgeconv"
    out.write_bytes(b"previous model")
    np.savez(tmp_path / "c.npz", x=np.full((4, 28, 28), np.nan, np.float32))
    assert "NaN" in _error(
        capsys, ["quantize", LENET, "--calib", str(tmp_path / "c.npz"), "-o", str(out)]
    )
    assert out.read_bytes() == b"previous model"


def test_console_script_and_cheap_import():
    code = (
        "import sys, edgeconv; assert 'numba' not in sys.modules; "
        "assert 'onnx' not in sys.modules; print(edgeconv.__version__)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    out = subprocess.run(
        [sys.executable, "-m", "edgeconv.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for verb in ("demo", "quantize", "eval", "run", "inspect"):
        assert verb in out
