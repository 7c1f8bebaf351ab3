"""The per-layer quantization report: its figures against an independent float
computation (onnxruntime running the float ONNX model), its speed, the worst-layer
verdict, the self-contained HTML page with its PNG histograms, and the CLI verbs."""

from __future__ import annotations

import base64
import json
import re
import struct
import time
import zlib

import numpy as np
import pytest

import edgeconv
from edgeconv.cli import main
from edgeconv.quantize.png import encode_png
from edgeconv.quantize.report import layer_report
from tests.conftest import EXAMPLES

LENET = EXAMPLES / "lenet5.onnx"
# LeNet-5 activations onnxruntime can expose, and their layout there
ORT_TENSORS = {
    "/1/Relu_output_0": "nchw",
    "/2/MaxPool_output_0": "nchw",
    "/4/Relu_output_0": "nchw",
    "/8/Relu_output_0": "flat",
    "/10/Relu_output_0": "flat",
    "logits": "flat",
}


@pytest.fixture(scope="module")
def quantized(example_data):
    fmodel = edgeconv.load(LENET)
    q = edgeconv.quantize_model(fmodel, example_data["calib"])
    qmodel = edgeconv.Model(q.graph)
    qmodel.run(example_data["x"][:2])  # load the compiled kernels
    return fmodel, qmodel


def _ort_activations(x: np.ndarray) -> dict[str, np.ndarray]:
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(LENET))
    have = {o.name for o in m.graph.output}
    for name in ORT_TENSORS:
        if name not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(name, 1, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(list(ORT_TENSORS), {"input": x.reshape(-1, 1, 28, 28).astype(np.float32)})
    res = {}
    for (name, layout), v in zip(ORT_TENSORS.items(), outs, strict=True):
        res[name] = v.transpose(0, 2, 3, 1) if layout == "nchw" else v  # edgeconv is NHWC
    return res


def test_report_figures_match_an_independent_float_computation(quantized, example_data):
    fmodel, qmodel = quantized
    x = example_data["x"]
    t = time.perf_counter()
    rep = layer_report(fmodel.graph, qmodel, x)
    seconds = time.perf_counter() - t
    print(f"per-layer report, LeNet-5, {len(x)} images: {seconds:.2f} s")
    assert seconds < 5.0
    assert rep.n == 1000
    rows = {r["tensor"]: r for r in rep.rows}
    ref = _ort_activations(x)
    raw = qmodel.trace(x)
    for name, f in ref.items():
        tensor = qmodel.graph.tensors[name]
        s, zp = float(tensor.scale[0]), int(tensor.zero_point[0])
        d = (raw[name].astype(np.float64) - zp) * s
        f = f.astype(np.float64).reshape(d.shape)
        err = f - d
        sqnr = 10 * np.log10(np.sum(f**2) / np.sum(err**2))
        cosine = np.sum(f * d) / np.linalg.norm(f) / np.linalg.norm(d)
        top, bottom = (127 - zp) * s + s / 2, (-128 - zp) * s - s / 2
        clipped = np.mean((f >= top) | (f < bottom))
        r = rows[name]
        assert r["sqnr_db"] == pytest.approx(sqnr, abs=0.01), name
        assert r["cosine"] == pytest.approx(cosine, abs=1e-6), name
        assert r["max_abs_error"] == pytest.approx(np.abs(err).max(), abs=1e-3 * s + 1e-5), name
        assert r["clip_fraction"] == pytest.approx(clipped, abs=2e-5), name
        assert (r["scale"], r["zero_point"]) == (pytest.approx(s), zp)
    # every row is an activation of the int8 model, the input first
    assert rep.rows[0]["op"] == "input" and len(rep.rows) == len(qmodel.graph.ops) + 1
    assert rep.worst is not None and rep.worst["sqnr_alone_db"] == min(
        r["sqnr_alone_db"] for r in rep.rows
    )
    assert "worst layer:" in rep.text()


def test_the_layer_that_was_damaged_is_named_worst(quantized, example_data):
    fmodel, qmodel = quantized
    g = qmodel.graph
    import copy

    bad = copy.deepcopy(g)
    t = bad.tensors["/8/Relu_output_0"]
    t.scale = (t.scale / 8).astype(np.float32)  # clips most of that fc layer's outputs
    rep = layer_report(fmodel.graph, edgeconv.Model(bad), example_data["x"][:200])
    assert rep.worst["tensor"] == "/8/Relu_output_0" and rep.worst["op"] == "fc"
    assert rep.worst["clip_fraction"] > 0.01
    good = {
        r["tensor"]: r for r in layer_report(fmodel.graph, qmodel, example_data["x"][:200]).rows
    }
    assert good["/8/Relu_output_0"]["sqnr_alone_db"] > rep.worst["sqnr_alone_db"] + 10


def _decode_png(data: bytes) -> np.ndarray:
    """An independent reader for the PNGs the report writes (8-bit RGB, filter 0)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    w, h, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2) and b"IEND" in chunks
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(h, w * 3 + 1)
    assert np.all(rows[:, 0] == 0)
    return rows[:, 1:].reshape(h, w, 3)


def test_png_encoder_round_trips():
    img = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    assert np.array_equal(_decode_png(encode_png(img)), img)


def test_html_is_one_self_contained_page_with_a_histogram_per_layer(quantized, example_data):
    fmodel, qmodel = quantized
    rep = layer_report(fmodel.graph, qmodel, example_data["x"][:300])
    page = rep.html()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"(src|href)=['\"](?!data:)", page)  # nothing fetched from outside
    pngs = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(pngs) == len(rep.rows)
    for b64 in pngs:
        img = _decode_png(base64.b64decode(b64))
        assert img.shape == (120, 360, 3) and len(np.unique(img.reshape(-1, 3), axis=0)) >= 3
    data = json.loads(re.search(r"id='report-data'>(.*?)</script>", page, re.S).group(1))
    assert data["worst_layer"]["tensor"] == rep.worst["tensor"]


def test_cli_quantize_report_and_compare(tmp_path, capsys):
    out, page = tmp_path / "q.edgeconv", tmp_path / "report.html"
    calib, test = EXAMPLES / "mnist_calib_200.npz", EXAMPLES / "mnist_test_1k.npz"
    argv = ["quantize", str(LENET), "--calib", str(calib), "-o", str(out), "--method", "auto"]
    rc = main([*argv, "--report", "--report-data", str(test), "--html", str(page), "--json"])
    obj = json.loads(capsys.readouterr().out)
    assert rc == 0 and out.exists() and page.exists()
    assert obj["method"] == "auto" and set(obj["methods"].values()) <= {
        "minmax",
        "percentile",
        "mse",
        "entropy",
    }
    assert obj["report"]["n"] == 1000 and obj["report"]["worst_layer"]["tensor"]
    rc = main(["compare", str(LENET), str(out), "--data", str(test), "--limit", "100"])
    text = capsys.readouterr().out
    assert rc == 0 and "worst layer:" in text and "SQNR dB" in text and "(100 samples)" in text
    rc = main(["compare", str(out), str(LENET), "--data", str(test)])
    assert rc == 2 and "FLOAT INT8" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse refuses an unknown method
        main(["quantize", str(LENET), "--calib", str(calib), "-o", str(out), "--method", "kl"])
    assert exc.value.code == 2
