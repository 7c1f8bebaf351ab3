"""The `edgeconv` command: parse arguments, call the library, print.

Every user error becomes one line on stderr and exit code 2; `--json` prints
exactly one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import resources
from pathlib import Path

from .errors import EdgeconvError
from .kernels.modes import ROUNDING_CHOICES  # the kernels' modes + runtime profiles (no NumPy)


def _emit(args, obj: dict, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(obj))
    else:
        print(text)


def _progress(args, total: int, label: str):
    from .progress import Progress

    return Progress(total, label, enabled=None if not getattr(args, "json", False) else False)


def _load(args, path):
    from .runtime import load

    return load(path, rounding=getattr(args, "rounding", "double"))


def _dataset(args, path, model, limit=None, need_labels=True):
    from .data import fit_samples, load_dataset

    x, y = load_dataset(path, getattr(args, "labels", None))
    if need_labels and y is None:
        raise EdgeconvError(
            f"{path}: no labels found (use .npz with 'y'/'labels', or --labels FILE)"
        )
    if limit:
        x = x[:limit]
        y = None if y is None else y[:limit]
    return fit_samples(x, model.input_shape, str(path)), y


def _score(args, model, x, y, label: str) -> tuple[float, object]:
    bar = _progress(args, len(x), label)
    try:
        pred = model.predict(x, progress=bar)
    finally:
        bar.close()
    return float((pred == y).mean()), pred


# ---------------------------------------------------------------- commands
def cmd_quantize(args) -> int:
    from .api import quantize_model
    from .data import load_dataset
    from .formats.native import save, to_bytes

    model = _load(args, args.model)
    calib, _ = load_dataset(args.calib)
    n = min(len(calib), args.limit) if args.limit else len(calib)
    bar = _progress(args, n, "calibrating")
    try:
        result = quantize_model(
            model,
            calib,
            limit=n,
            per_channel=not args.per_tensor,
            progress=bar,
            method=args.method,
            percentile=args.percentile,
            bias_correction=args.bias_correction,
        )
    finally:
        bar.close()
    for w in result.warnings:
        print(f"edgeconv: warning: {w}", file=sys.stderr)
    save(result.graph, args.output)
    size = len(to_bytes(result.graph))
    obj = {
        "output": str(args.output),
        "calibration_samples": n,
        "bytes": size,
        "warnings": result.warnings,
        "method": args.method,
    }
    text = f"wrote {args.output} ({size:,} bytes; calibrated on {n} samples, {args.method})"
    if result.methods and args.method == "auto":
        obj["methods"] = result.methods
        text += "\nauto chose: " + ", ".join(f"{t}={m}" for t, m in result.methods.items())
    if args.report or args.html:
        from .runtime import Model

        data = args.report_data or args.calib
        rep, rtext = _layer_report(args, model, Model(result.graph, str(args.output)), data)
        obj["report"] = rep
        text += "\n" + rtext
    _emit(args, obj, text)
    return 0


def _layer_report(args, fmodel, qmodel, data) -> tuple[dict, str]:
    """The per-layer report of an int8 model against its float model on `data`."""
    from .fileio import atomic_write
    from .quantize.report import layer_report

    x, _ = _dataset(args, data, qmodel, args.report_limit, need_labels=False)
    rep = layer_report(fmodel.graph, qmodel, x)
    text = rep.text()
    if args.html:
        atomic_write(args.html, rep.html().encode("utf-8"))
        text += f"\nwrote {args.html}"
    out = rep.as_dict()
    if args.html:
        out["html"] = str(args.html)
    return out, text


def cmd_compare(args) -> int:
    """Per-layer error of an int8 model against the float model it came from."""
    fmodel = _load(args, args.float_model)
    qmodel = _load(args, args.int8_model)
    if fmodel.quantized or not qmodel.quantized:
        raise EdgeconvError("compare takes a float model then an int8 model: FLOAT INT8")
    fnames = {fmodel.graph.inputs[0], *(op.outputs[0] for op in fmodel.graph.ops)}
    qnames = {op.outputs[0] for op in qmodel.graph.ops}
    if not fnames & qnames:
        raise EdgeconvError(
            f"{args.int8_model} shares no tensor names with {args.float_model}: was it "
            "quantized from this float model?"
        )
    rep, text = _layer_report(args, fmodel, qmodel, args.data)
    obj = {"float_model": str(args.float_model), "int8_model": str(args.int8_model), **rep}
    _emit(args, obj, text)
    return 0


def cmd_eval(args) -> int:
    from .api import measure_latency

    model = _load(args, args.model)
    x, y = _dataset(args, args.data, model, args.limit)
    acc, pred = _score(args, model, x, y, "int8" if model.quantized else "float")
    obj = {
        "model": str(args.model),
        "n": int(len(x)),
        "accuracy": acc,
        "quantized": model.quantized,
    }
    lines = [f"{args.model}: accuracy {acc * 100:.2f} % on {len(x)} samples"]
    if not model.quantized:
        obj["float_accuracy"] = acc
    if args.float_model:
        ref = _load(args, args.float_model)
        facc, fpred = _score(args, ref, x, y, "float")
        obj["float_accuracy"] = facc
        obj["agreement"] = float((fpred == pred).mean())
        lines.append(
            f"float model {args.float_model}: {facc * 100:.2f} %, top-1 agreement "
            f"{obj['agreement'] * 100:.2f} %"
        )
    if not args.no_timing:
        lat = measure_latency(model, x)
        obj.update(lat)
        lines.append(
            f"latency (batch 1): p50 {lat['latency_ms_p50']:.3f} ms, "
            f"p90 {lat['latency_ms_p90']:.3f} ms"
        )
    _emit(args, obj, "\n".join(lines))
    return 0


def cmd_run(args) -> int:
    import io

    import numpy as np

    from .data import load_dataset
    from .fileio import atomic_write

    model = _load(args, args.model)
    x, _ = load_dataset(args.input)
    y = model.run(x, dequantize=args.dequantize)
    buf = io.BytesIO()
    np.save(buf, y, allow_pickle=False)
    atomic_write(args.output, buf.getvalue())
    _emit(
        args,
        {"output": str(args.output), "shape": list(y.shape), "dtype": str(y.dtype)},
        f"wrote {args.output}: {list(y.shape)} {y.dtype}",
    )
    return 0


def cmd_inspect(args) -> int:
    from .summary import layer_rows, totals

    model = _load(args, args.model)
    g = model.graph
    rows, tot = layer_rows(g), totals(g)
    inp = g.tensor(g.inputs[0])
    obj = {
        "model": str(args.model),
        "quantized": model.quantized,
        "input": {
            "name": inp.name,
            "shape": list(inp.shape),
            "dtype": inp.dtype,
            "qparams": None
            if inp.scale is None
            else {"scale": float(inp.scale[0]), "zero_point": int(inp.zero_point[0])},
        },
        "outputs": g.outputs,
        "layers": rows,
        **tot,
        "meta": g.meta,
    }
    lines = [
        f"{args.model}: {'int8' if model.quantized else 'float32'} model, "
        f"input {inp.name} {list(inp.shape)} {inp.dtype}"
    ]
    if inp.scale is not None:
        lines[0] += f" (s={float(inp.scale[0]):.6g} zp={int(inp.zero_point[0])})"
    head = f"{'#':>3} {'op':<22} {'output':<16} {'params':>8} {'bytes':>8} {'MACs':>9}  qparams"
    lines += [head, "-" * len(head)]
    for i, r in enumerate(rows):
        lines.append(
            f"{i:>3} {r['op']:<22} {str(r['output_shape']):<16} {r['params']:>8,} "
            f"{r['param_bytes']:>8,} {r['macs']:>9,}  {r['qparams'] or ''}"
        )
    lines.append(
        f"total: {tot['params']:,} params, {tot['param_bytes']:,} bytes of weights, "
        f"{tot['macs']:,} MACs per sample, largest activation "
        f"{tot['largest_activation_bytes']:,} bytes"
    )
    if args.target:
        from .targets import get_profile

        prof = get_profile(args.target)
        fit = {
            "target": prof.name,
            "flash_bytes": prof.flash_bytes,
            "sram_bytes": prof.sram_bytes,
            "weights_fit_flash": prof.flash_bytes is None or tot["param_bytes"] <= prof.flash_bytes,
        }
        obj["target"] = fit
        lines.append(
            f"target {prof.name}: weights {tot['param_bytes']:,} B vs flash "
            f"{prof.flash_bytes or 'unbounded'} -> "
            f"{'fits' if fit['weights_fit_flash'] else 'DOES NOT FIT'}"
        )
        if prof.kind == "mcu" and model.quantized:  # C export: arena, flash, per-layer peak
            from .targets.c_export import inspect_c

            mem = inspect_c(g, prof)
            lines += mem.pop("text").splitlines()
            obj["c_export"] = mem
            if mem.get("error"):
                _emit(args, obj, "\n".join(lines))
                print(f"edgeconv: error: {mem['error']}", file=sys.stderr)
                return 2
    _emit(args, obj, "\n".join(lines))
    return 0


def cmd_export(args) -> int:
    """One verb, three kinds of output: a .tflite file, C sources for an MCU, a Pi bundle."""
    model = _load(args, args.model)
    if bool(args.format) == bool(args.target):
        raise EdgeconvError("export needs exactly one of --format tflite or --target NAME")
    if not model.quantized:
        raise EdgeconvError(f"{args.model} is a float model; run `edgeconv quantize` first")
    if args.format == "tflite":
        from .formats.tflite_export import export_tflite

        report = export_tflite(model.graph, args.output, io=args.io)
    else:
        from .targets import get_profile

        profile = get_profile(args.target)
        if profile.kind == "mcu":
            from .targets.c_export import export_c

            report = export_c(model.graph, args.output, profile, rounding=args.rounding)
        else:
            from .targets.rpi.bundle import export_bundle

            report = export_bundle(model, args.output, profile)
    _emit(args, report, report.pop("text", f"wrote {args.output}"))
    return 0


def cmd_verify(args) -> int:
    """Our kernels against an independent executor of the same model, byte for byte."""
    if bool(args.against) == bool(args.target):
        raise EdgeconvError("verify needs exactly one of --against ORACLE or --target NAME")
    model = _load(args, args.model)
    x = None
    if args.data:
        from .data import load_dataset

        x, _ = load_dataset(args.data, getattr(args, "labels", None))
        if args.limit:
            x = x[: args.limit]
    if args.against:
        from .verify import verify_against

        report = verify_against(model, args.against, x, layers=args.layers)
    else:
        from .targets.c_verify import verify_c

        report = verify_c(model, args.target, x, emulate=args.emulate)
    _emit(args, report, report.pop("text", ""))
    return 1 if report.get("mismatches", 0) else 0


def cmd_info(args) -> int:
    """Version, backend and why, Numba cache location and state, CPU features. Imports
    neither Numba nor NumPy (the backend verdict comes from the cached probe)."""
    from .sysinfo import info, info_text

    obj = info()
    _emit(args, obj, info_text(obj))
    return 0


def cmd_warmup(args) -> int:
    """Compile every kernel the model uses now (filling Numba's cache), not on the first
    real request."""
    from .sysinfo import warmup

    obj = warmup(_load(args, args.model))
    cache = obj["numba_cache"]
    text = (
        f"warmed up {args.model} on the {obj['backend']} backend: first run "
        f"{obj['first_run_seconds']:.2f} s, then {obj['second_run_seconds'] * 1e3:.1f} ms"
    )
    if cache is not None:
        text += (
            f"\nnumba cache: {obj['numba_cache_dir']} ({cache['kernels']} library kernels, "
            f"{cache['models']} compiled model(s), {cache['bytes'] / 1024:.0f} KiB)"
        )
    else:
        text += f" ({obj['backend_reason']}; nothing to cache)"
    _emit(args, obj, text)
    return 0


def cmd_demo(args) -> int:
    from .api import measure_latency, quantize_model
    from .formats.native import save, to_bytes
    from .runtime import Model, load
    from .summary import totals

    assets = resources.files("edgeconv.examples")
    float_path = Path(str(assets / "lenet5.onnx"))
    calib_path = Path(args.calib) if args.calib else Path(str(assets / "mnist_calib_200.npz"))
    data_path = Path(args.data) if args.data else Path(str(assets / "mnist_test_1k.npz"))
    t0 = time.perf_counter()
    fmodel = load(float_path)
    bar = _progress(args, 200, "calibrating")
    try:
        result = quantize_model(fmodel, calib_path, limit=200, progress=bar)
    finally:
        bar.close()
    qmodel = Model(result.graph, "lenet5.int8", rounding=args.rounding)
    x, y = _dataset(args, data_path, qmodel, args.limit)
    facc, fpred = _score(args, fmodel, x, y, "float")
    qacc, qpred = _score(args, qmodel, x, y, "int8")
    lat = measure_latency(qmodel, x)
    flat = measure_latency(fmodel, x, n=50)
    fbytes, qbytes = totals(fmodel.graph)["param_bytes"], totals(result.graph)["param_bytes"]
    qfile = len(to_bytes(result.graph))
    if args.save:
        save(result.graph, args.save)
    from . import kernels

    obj = {
        "model": "LeNet-5 (examples/lenet5.onnx)",
        "data": str(data_path),
        "n": int(len(x)),
        "calibration_samples": 200,
        "float_accuracy": facc,
        "accuracy": qacc,
        "agreement": float((fpred == qpred).mean()),
        "float_param_bytes": fbytes,
        "int8_param_bytes": qbytes,
        "float_file_bytes": float_path.stat().st_size,
        "int8_file_bytes": qfile,
        "backend": kernels.backend_name(),
        "float_latency_ms_p50": flat["latency_ms_p50"],
        **lat,
        "total_seconds": time.perf_counter() - t0,
    }
    text = "\n".join(
        [
            f"edgeconv demo: LeNet-5 on {len(x)} MNIST test images "
            f"(calibrated on 200 training images, backend {obj['backend']})",
            f"  float32 accuracy : {facc * 100:6.2f} %",
            f"  int8 accuracy    : {qacc * 100:6.2f} %",
            f"  top-1 agreement  : {obj['agreement'] * 100:6.2f} %",
            f"  weights          : {fbytes:,} B float32 -> {qbytes:,} B int8 "
            f"({fbytes / max(qbytes, 1):.1f}x smaller; model file {qfile:,} B)",
            f"  latency, batch 1 : int8 p50 {lat['latency_ms_p50']:.3f} ms "
            f"(float NumPy p50 {flat['latency_ms_p50']:.3f} ms)",
        ]
        + ([f"  saved int8 model : {args.save}"] if args.save else [])
    )
    _emit(args, obj, text)
    return 0


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeconv", description="float CNN -> int8 -> edge inference")
    from . import __version__

    p.add_argument("--version", action="version", version=f"edgeconv {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def report_options(sp):
        sp.add_argument("--report", action="store_true", help="print the per-layer error table")
        sp.add_argument("--html", help="write the report as one self-contained HTML page")
        sp.add_argument(
            "--report-data", help="samples for the report (default: the calibration samples)"
        )
        sp.add_argument(
            "--report-limit", type=int, default=1000, help="report on the first N (1000)"
        )

    def common(sp, json_flag=True, rounding=True):
        if json_flag:
            sp.add_argument("--json", action="store_true", help="print one JSON object")
        if rounding:
            sp.add_argument(
                "--rounding",
                choices=ROUNDING_CHOICES,
                default="double",
                help="int8 requantization rounding (default: double, as TFLM); a mode, or a "
                "runtime profile that picks one per op (README: TFLite)",
            )

    d = sub.add_parser("demo", help="quantize the shipped LeNet-5 and score it on MNIST")
    d.add_argument("--data", help="test data instead of the shipped 1,000 MNIST images")
    d.add_argument("--calib", help="calibration data instead of the shipped 200 images")
    d.add_argument("--labels", help="labels file for --data (IDX)")
    d.add_argument("--limit", type=int, help="score only the first N samples")
    d.add_argument("--save", help="also write the int8 model to this .edgeconv file")
    common(d)
    d.set_defaults(func=cmd_demo)

    q = sub.add_parser("quantize", help="post-training int8 quantization of a float model")
    q.add_argument("model")
    q.add_argument("--calib", required=True, help="calibration samples (.npz/.npy/IDX)")
    q.add_argument("-o", "--output", required=True, help="output .edgeconv file")
    q.add_argument("--limit", type=int, help="use at most N calibration samples")
    q.add_argument("--per-tensor", action="store_true", help="one weight scale per layer")
    q.add_argument(
        "--method",
        choices=("minmax", "percentile", "mse", "entropy", "auto"),
        default="minmax",
        help="how activation ranges are calibrated (default: minmax, as TFLite); auto tries "
        "each per model and per tensor on a held-out fifth of the calibration samples",
    )
    q.add_argument("--percentile", type=float, default=99.99, help="for --method percentile")
    q.add_argument(
        "--bias-correction", action="store_true", help="correct the mean shift of int8 weights"
    )
    report_options(q)
    common(q, rounding=False)
    q.set_defaults(func=cmd_quantize)

    c = sub.add_parser("compare", help="per-layer error of an int8 model vs its float model")
    c.add_argument("float_model", metavar="FLOAT")
    c.add_argument("int8_model", metavar="INT8")
    c.add_argument("--data", required=True, help="samples to compare on (.npz/.npy/IDX)")
    c.add_argument("--labels", help=argparse.SUPPRESS)
    c.add_argument("--limit", dest="report_limit", type=int, help="use the first N samples")
    c.add_argument("--html", help="also write a self-contained HTML page with histograms")
    common(c)
    c.set_defaults(func=cmd_compare)

    e = sub.add_parser("eval", help="top-1 accuracy (and latency) on labelled data")
    e.add_argument("model")
    e.add_argument("--data", required=True)
    e.add_argument("--labels", help="labels file (IDX/.npy) if the data file has none")
    e.add_argument("--limit", type=int)
    e.add_argument("--float", dest="float_model", help="float model to compare against")
    e.add_argument("--no-timing", action="store_true", help="skip the latency measurement")
    common(e)
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser("run", help="raw outputs for the given inputs, saved as .npy")
    r.add_argument("model")
    r.add_argument("--input", required=True)
    r.add_argument("-o", "--output", required=True)
    r.add_argument("--dequantize", action="store_true", help="float outputs from an int8 model")
    common(r)
    r.set_defaults(func=cmd_run)

    i = sub.add_parser("inspect", help="layers, shapes, qparams, params, MACs, bytes")
    i.add_argument("model")
    i.add_argument("--target", help="also check the weights against a target's flash budget")
    common(i, rounding=False)
    i.set_defaults(func=cmd_inspect)

    x = sub.add_parser("export", help="write a .tflite, MCU C sources, or a Raspberry Pi bundle")
    x.add_argument("model")
    x.add_argument("-o", "--output", required=True, help="output file (.tflite) or folder")
    x.add_argument("--format", choices=("tflite",), help="file format to write")
    x.add_argument("--target", help="target profile (cortex-m4, generic-c, rpi4, ...)")
    x.add_argument("--io", choices=("int8", "uint8", "float"), default="int8",
                   help="tflite: type of the model's input/output tensors")
    common(x)
    x.set_defaults(func=cmd_export)

    v = sub.add_parser("verify", help="compare our kernels with another runtime, byte for byte")
    v.add_argument("model")
    v.add_argument("--against", choices=("tflite-runtime", "tflite-micro"))
    v.add_argument("--target", help="host-c, or an MCU target such as cortex-m4")
    v.add_argument("--emulate", action="store_true", help="run the MCU build under QEMU")
    v.add_argument("--data", help="inputs (.npz/.npy/IDX); default: the model's sample inputs")
    v.add_argument("--labels", help=argparse.SUPPRESS)
    v.add_argument("--limit", type=int, help="use the first N inputs")
    v.add_argument("--layers", action="store_true", help="find the first layer that differs")
    common(v)
    v.set_defaults(func=cmd_verify)

    f = sub.add_parser("info", help="version, backend, Numba cache, CPU features")
    common(f, rounding=False)
    f.set_defaults(func=cmd_info)

    w = sub.add_parser("warmup", help="compile the model's kernels now (fills the Numba cache)")
    w.add_argument("model")
    common(w)
    w.set_defaults(func=cmd_warmup)

    # `edgeconv bench ...` is handed to edgeconv.bench's own parser by main(); this entry
    # only lists it (and takes any arguments) in `edgeconv --help`.
    b = sub.add_parser("bench", add_help=False, help="speed vs LiteRT and onnxruntime (see -h)")
    b.add_argument("argv", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # the benchmark has its own parser (python -m edgeconv.bench)
        from .bench import main as bench_main

        return bench_main(argv[1:], prog="edgeconv bench")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EdgeconvError as e:
        print(f"edgeconv: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgeconv: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
