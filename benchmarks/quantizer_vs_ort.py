"""Head-to-head: edgeconv's int8 quantizer against onnxruntime's ``quantize_static``.

Both quantize the same float ONNX models from the same calibration images; both int8
models are scored on the same test images (all 10,000 MNIST test images by default).

- onnxruntime: ``quantize_static`` with QDQ format, int8 activations and int8 weights
  (S8S8), per-channel weights, calibration MinMax and Entropy, after ORT's recommended
  ``quant_pre_process``; the QDQ model runs in an onnxruntime CPU session.
- edgeconv: ``edgeconv.quantize_model`` with each calibration method (minmax is the
  default), run on edgeconv's int8 kernels.

    python benchmarks/quantizer_vs_ort.py [--json] [--calib N] [--test N] [MODEL.onnx ...]

Needs onnxruntime (the test extra). Prints one table: float accuracy as each runtime
computes it, then int8 accuracy per quantizer and method.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CASES = REPO.parent / "shared" / "cases"
MNIST = REPO.parent / "shared" / "data" / "mnist"
DEFAULT_MODELS = [
    REPO / "examples" / "lenet5.onnx",
    CASES / "mnist-8.onnx",
    CASES / "lenet5_pytorch2.0_opset10_gemm_flatten.onnx",
]
EDGECONV_METHODS = ("minmax", "percentile", "mse", "entropy", "auto")


def load_test(n: int | None) -> tuple[np.ndarray, np.ndarray]:
    x = np.frombuffer(gzip.open(MNIST / "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16)
    y = np.frombuffer(gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
    x = x.reshape(-1, 1, 28, 28).astype(np.float32)
    return (x, y) if n is None else (x[:n], y[:n])


def ort_predict(path: str | Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    batch = inp.shape[0] if isinstance(inp.shape[0], int) else 500
    out = []
    for i in range(0, len(x), batch):
        chunk = x[i : i + batch].reshape((-1, *[int(d) for d in inp.shape[1:]]))
        out.append(sess.run(None, {inp.name: chunk})[0].reshape(len(chunk), -1).argmax(1))
    return np.concatenate(out)


def ort_quantize(
    float_path: Path, calib: np.ndarray, method: str, workdir: Path
) -> tuple[Path, str]:
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(float_path))
    src = workdir / f"{float_path.stem}.float.onnx"
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 11:  # the QDQ quantizer wants opset >= 11 (it warns, then fails on fusions)
        from onnx import version_converter

        model = version_converter.convert_version(model, 13)
    onnx.save(model, str(src))
    pre = workdir / f"{float_path.stem}.pre.onnx"
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    except Exception as e:  # noqa: BLE001 - fall back to the unprocessed model, say so
        print(
            f"  ({float_path.name}: quant_pre_process failed: {e}; using the model as is)",
            file=sys.stderr,
        )
        pre = src
    sess = ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [int(d) for d in inp.shape[1:]]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            s = next(self.it, None)
            return None if s is None else {inp.name: s.reshape((1, *shape))}

    out = workdir / f"{float_path.stem}.ort_{method.lower()}.onnx"

    def quantize(extra: dict) -> None:
        with contextlib.redirect_stdout(sys.stderr):  # ORT prints progress on stdout
            _quantize(extra)

    def _quantize(extra: dict) -> None:
        quantize_static(
            str(pre),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=getattr(CalibrationMethod, method),
            extra_options=extra,
        )

    try:
        quantize({})
        return out, ""
    except ValueError as e:
        # onnxruntime's weight-scale adjustment for int32 biases raises on some graphs
        # ("truth value of an array ... is ambiguous"); its own option skips that step
        note = f"ORT raised {e!s:.60}; retried with QDQDisableWeightAdjustForInt32Bias"
        quantize({"QDQDisableWeightAdjustForInt32Bias": True})
        return out, note


def run(
    models: list[Path],
    calib: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    bias_correction: bool = False,
) -> list[dict]:
    import edgeconv

    rows = []
    for path in models:
        if not path.exists():
            print(f"skipping {path}: not present", file=sys.stderr)
            continue
        row: dict = {"model": path.name, "n_test": int(len(x)), "n_calib": int(len(calib))}
        row["float_ort"] = float((ort_predict(path, x) == y).mean() * 100)
        fmodel = edgeconv.load(path)
        row["float_edgeconv"] = float((fmodel.predict(x) == y).mean() * 100)
        with tempfile.TemporaryDirectory() as tmp:
            for method in ("MinMax", "Entropy"):
                t = time.perf_counter()
                qpath, note = ort_quantize(path, calib, method, Path(tmp))
                if note:
                    row.setdefault("notes", []).append(f"{method}: {note}")
                row[f"ort_{method.lower()}_s"] = time.perf_counter() - t
                row[f"ort_{method.lower()}"] = float((ort_predict(qpath, x) == y).mean() * 100)
        for method in EDGECONV_METHODS:
            for bc in (False, True) if bias_correction else (False,):
                key = f"edgeconv_{method}" + ("+bc" if bc else "")
                t = time.perf_counter()
                q = edgeconv.quantize_model(fmodel, calib, method=method, bias_correction=bc)
                row[f"{key}_s"] = time.perf_counter() - t
                pred = edgeconv.Model(q.graph).predict(x)
                row[key] = float((pred == y).mean() * 100)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    cols = [
        ("float (ORT)", "float_ort"),
        ("float (edgeconv)", "float_edgeconv"),
        ("ORT MinMax", "ort_minmax"),
        ("ORT Entropy", "ort_entropy"),
    ]
    cols += [(f"edgeconv {m}", f"edgeconv_{m}") for m in EDGECONV_METHODS]
    if rows and "edgeconv_minmax+bc" in rows[0]:
        cols += [(f"edgeconv {m}+bc", f"edgeconv_{m}+bc") for m in EDGECONV_METHODS]
    lines = ["| model | " + " | ".join(c for c, _ in cols) + " |", "|---|" + "---|" * len(cols)]
    for r in rows:
        lines.append(f"| {r['model']} | " + " | ".join(f"{r[k]:.2f}" for _, k in cols) + " |")
    for r in rows:
        for note in r.get("notes", []):
            lines.append(f"note, {r['model']}: {note}")
    if rows:
        lines.append(
            f"\ntop-1 %, {rows[0]['n_test']} MNIST test images, "
            f"{rows[0]['n_calib']} calibration images"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="*", type=Path)
    p.add_argument("--calib", type=int, default=200, help="calibration images (default 200)")
    p.add_argument("--calib-file", type=Path, default=REPO / "examples" / "mnist_calib_200.npz")
    p.add_argument("--test", type=int, help="score on the first N test images (default all)")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--bias-correction", action="store_true", help="also every edgeconv method with it"
    )
    a = p.parse_args(argv)
    calib = np.load(a.calib_file)["x"][: a.calib].reshape(-1, 1, 28, 28).astype(np.float32)
    x, y = load_test(a.test)
    rows = run(a.models or DEFAULT_MODELS, calib, x, y, a.bias_correction)
    print(json.dumps(rows) if a.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
