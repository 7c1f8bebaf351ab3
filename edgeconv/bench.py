"""Speed of edgeconv against LiteRT (XNNPACK and builtin kernels) and onnxruntime.

    python -m edgeconv.bench MODEL [--threads N] [--json] [--plot chart.png]
    edgeconv bench MODEL ...

MODEL is a float ``.onnx`` (quantized here with edgeconv's PTQ on ``--calib``) or an int8
``.edgeconv``. From the one int8 graph the benchmark derives what every engine runs:

- ``edgeconv``: ``edgeconv.load(...).run(x)`` on the Numba backend (the compiled engine);
- ``edgeconv-numpy``: the same with ``EDGECONV_BACKEND=numpy`` (the fallback kernels);
- ``litert-xnnpack`` / ``litert-builtin``: ai-edge-litert's interpreter on the ``.tflite``
  that ``edgeconv export --format tflite`` writes from the same graph (same int8 weights,
  scales and zero points), with its default XNNPACK delegate / with builtin kernels only;
- ``onnxruntime``: an onnxruntime session on a QDQ int8 model made by onnxruntime's own
  ``quantize_static`` (S8S8, per-channel, MinMax) from the float ONNX and the same
  calibration samples (ORT cannot run edgeconv's graph, so it gets its own quantization).

Every engine runs in its own worker process, pinned to the same CPU(s) with 1 thread
(``--threads N`` adds an N-thread run of each); the workers take turns, round after round
(interleaved, the order rotating), so background load hits all engines alike. Only one
worker computes at a time. Reported per engine: batch-1 latency p50/p90/p99 per image
over all rounds, batch-``B`` images/s (median over rounds), load + first call time,
peak RSS of the worker, top-1 agreement with edgeconv; then cold start (a new process:
import, load, first inference), for edgeconv with a warm and with an empty Numba cache.

These are measurements, not tests: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import EdgeconvError

ENGINES = ("edgeconv", "edgeconv-numpy", "litert-xnnpack", "litert-builtin", "onnxruntime")
REFERENCE = "litert-xnnpack"
POOL = 64  # distinct batch-1 inputs, cycled


# ----------------------------------------------------------------------------------------
# Engines (built inside the worker process)
# ----------------------------------------------------------------------------------------


class _Engine:
    batch_mode = "native"

    def run1(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def run_batch(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _Edgeconv(_Engine):
    def __init__(self, spec):
        import edgeconv

        self.m = edgeconv.load(spec["int8_path"])
        self.m.threads = spec["threads"]

    def run1(self, x):
        return self.m.run(x)

    def run_batch(self, x):
        return self.m.run(x)


class _Litert(_Engine):
    def __init__(self, spec):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        kw = {"model_path": spec["tflite_path"], "num_threads": spec["threads"]}
        if spec["engine"].startswith("litert-builtin"):
            kw["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.kw = kw
        self.it = Interpreter(**kw)
        self.it.allocate_tensors()
        self.i = self.it.get_input_details()[0]["index"]
        self.o = self.it.get_output_details()[0]["index"]
        self.bt = None

    def run1(self, x):
        self.it.set_tensor(self.i, x)
        self.it.invoke()
        return self.it.get_tensor(self.o)

    def _batch_interpreter(self, n, shape):
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(**self.kw)
        try:
            it.resize_tensor_input(self.i, [n, *shape])
            it.allocate_tensors()
            it.set_tensor(self.i, np.zeros((n, *shape), np.int8))
            it.invoke()
            out = it.get_tensor(it.get_output_details()[0]["index"])
            if out.shape[0] != n:
                raise ValueError("output batch does not follow the input batch")
            return it
        except Exception:  # noqa: BLE001 - the model has a fixed batch: invoke per image
            self.batch_mode = "per-image invokes"
            return None

    def run_batch(self, x):
        if self.bt is None:
            self.bt = self._batch_interpreter(x.shape[0], x.shape[1:]) or False
        if self.bt is False:
            return np.concatenate([self.run1(x[i : i + 1]).copy() for i in range(len(x))])
        self.bt.set_tensor(self.i, x)
        self.bt.invoke()
        return self.bt.get_tensor(self.bt.get_output_details()[0]["index"])


class _Onnxruntime(_Engine):
    def __init__(self, spec):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = spec["threads"]
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        self.s = ort.InferenceSession(spec["qdq_path"], so, providers=["CPUExecutionProvider"])
        inp = self.s.get_inputs()[0]
        self.name, self.out = inp.name, self.s.get_outputs()[0].name
        dim0 = inp.shape[0]
        self.fixed = isinstance(dim0, int) and dim0 > 0
        if self.fixed:
            self.batch_mode = "per-image runs"

    def run1(self, x):
        return self.s.run([self.out], {self.name: x})[0]

    def run_batch(self, x):
        if self.fixed:
            return np.concatenate([self.run1(x[i : i + 1]) for i in range(len(x))])
        return self.s.run([self.out], {self.name: x})[0]


def _make_engine(spec) -> _Engine:
    name = spec["engine"]
    if name.startswith("edgeconv"):
        return _Edgeconv(spec)
    if name.startswith("litert"):
        return _Litert(spec)
    if name.startswith("onnxruntime"):
        return _Onnxruntime(spec)
    raise ValueError(name)


def _pin(cpus) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, set(cpus))
        except OSError:
            pass


def _engine_env(spec) -> dict:
    env = {
        "NUMBA_NUM_THREADS": str(spec["threads"]),
        "OMP_NUM_THREADS": str(spec["threads"]),
        "OPENBLAS_NUM_THREADS": "1",
        "EDGECONV_THREADS": str(spec["threads"]),
    }
    if spec["engine"].startswith("edgeconv-numpy"):
        env["EDGECONV_BACKEND"] = "numpy"
    return env


def _worker(conn, spec) -> None:
    """One engine in its own process: build it, then answer timing requests."""
    os.environ.update(_engine_env(spec))
    _pin(spec["cpus"])
    try:
        x1 = [np.ascontiguousarray(a) for a in spec["inputs1"]]
        xb = np.ascontiguousarray(spec["input_batch"])
        t0 = time.perf_counter()
        eng = _make_engine(spec)
        t1 = time.perf_counter()
        first = eng.run1(x1[0])
        t2 = time.perf_counter()
        conn.send({"load_s": t1 - t0, "first_call_s": t2 - t1, "ok": first is not None})
    except Exception as e:  # noqa: BLE001 - report any failure to the coordinator
        conn.send({"error": f"{type(e).__name__}: {e}"})
        return
    k = 0
    while True:
        cmd, arg = conn.recv()
        if cmd == "lat":
            out = np.empty(arg, np.int64)
            clock = time.perf_counter_ns
            run1 = eng.run1
            for j in range(arg):
                x = x1[k % len(x1)]
                k += 1
                t = clock()
                run1(x)
                out[j] = clock() - t
            conn.send(out)
        elif cmd == "thr":
            secs = []
            for _ in range(arg):
                t = time.perf_counter()
                eng.run_batch(xb)
                secs.append(time.perf_counter() - t)
            conn.send({"secs": secs, "batch_mode": eng.batch_mode})
        elif cmd == "outputs":
            conn.send(np.concatenate([np.asarray(eng.run1(x)).reshape(1, -1) for x in x1]))
        elif cmd == "rss":
            conn.send(_peak_rss_mb())
        else:
            conn.send(None)
            return


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: unlike ru_maxrss it restarts at exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _Worker:
    def __init__(self, spec):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, spec), daemon=True)
        self.proc.start()
        child.close()
        self.info = self.conn.recv()

    def call(self, cmd, arg=None):
        self.conn.send((cmd, arg))
        return self.conn.recv()

    def close(self):
        try:
            if self.proc.is_alive():
                self.conn.send(("exit", None))
                self.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            pass
        self.proc.join(timeout=10)


# ----------------------------------------------------------------------------------------
# Preparing the models and inputs (coordinator)
# ----------------------------------------------------------------------------------------


@dataclass
class Setup:
    workdir: Path
    int8_path: Path
    tflite_path: Path | None
    qdq_path: Path | None
    x_float: np.ndarray  # [N, *input shape] float32, as the float model takes it
    x_int8: np.ndarray  # the same samples quantized with the int8 model's input qparams
    notes: dict = field(default_factory=dict)


def _shipped(name: str) -> Path:
    from importlib import resources

    return Path(str(resources.files("edgeconv.examples") / name))


def _samples(path, shape, n, seed=0) -> np.ndarray:
    from .data import fit_samples, load_dataset

    if path is not None:
        x, _ = load_dataset(path)
        x = fit_samples(x, shape, str(path))
        return np.asarray(x[:n], np.float32)
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, *shape)).astype(np.float32)


def _default_data(shape):
    if tuple(shape) in ((1, 28, 28), (28, 28, 1), (784,)):
        return _shipped("mnist_test_1k.npz"), _shipped("mnist_calib_200.npz")
    return None, None


def prepare(args) -> Setup:
    import edgeconv

    from .formats.native import save

    work = Path(args.workdir or tempfile.mkdtemp(prefix="edgeconv-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model = edgeconv.load(args.model)
    notes: dict = {}
    float_onnx = args.onnx or (args.model if str(args.model).endswith(".onnx") else None)
    data, calib = _default_data(model.input_shape)
    data = args.data or data
    calib = args.calib or calib
    if not model.quantized:
        if calib is None:
            raise EdgeconvError("a float model needs --calib samples to quantize")
        q = edgeconv.quantize_model(model, str(calib), limit=args.calib_limit)
        graph = q.graph
        notes["quantized_with"] = f"edgeconv PTQ, {Path(str(calib)).name}"
    else:
        graph = model.graph
    int8_path = work / "model.int8.edgeconv"
    save(graph, int8_path)
    int8 = edgeconv.load(int8_path)
    x_float = _samples(data, int8.input_shape, max(args.batch, POOL))
    if len(x_float) < max(args.batch, POOL):
        reps = -(-max(args.batch, POOL) // len(x_float))
        x_float = np.concatenate([x_float] * reps)
    x_int8 = int8.prepare_input(x_float)
    notes["inputs"] = str(data) if data else "uniform random in [0, 1)"
    tflite = None
    if "litert" in " ".join(args.engine_list):
        tflite = Path(args.tflite) if args.tflite else None
        if tflite is None:
            try:
                from .formats.tflite_export import export_tflite
            except ImportError as e:
                notes["litert"] = f"pending: no .tflite exporter ({e})"
            else:
                tflite = work / "model.tflite"
                export_tflite(graph, tflite, io="int8")
    qdq = None
    if "onnxruntime" in args.engine_list:
        if float_onnx is None:
            notes["onnxruntime"] = "skipped: needs the float ONNX (--onnx)"
        else:
            qdq = work / "model.qdq.onnx"
            how = _ort_qdq(Path(float_onnx), qdq, str(calib), int8.input_shape, args.calib_limit)
            notes["onnxruntime_model"] = (
                f"onnxruntime.quantization.quantize_static: QDQ, S8S8, {how}, MinMax, "
                f"same {args.calib_limit} calibration samples"
            )
    return Setup(work, int8_path, tflite, qdq, x_float, x_int8, notes)


def _ort_qdq(float_path: Path, out: Path, calib, shape, limit: int) -> str:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    model = onnx.load(str(float_path))
    src = out.with_name("model.float.onnx")
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:  # QDQ per-channel needs opset >= 13
        from onnx import version_converter

        model = version_converter.convert_version(model, 13)
    onnx.save(model, str(src))
    pre = out.with_name("model.pre.onnx")
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    except Exception:  # noqa: BLE001 - quantize the model as is
        pre = src
    name = model.graph.input[0].name
    samples = _samples(calib, shape, limit)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(samples)

        def get_next(self):
            s = next(self.it, None)
            return None if s is None else {name: s[None]}

    def run(per_channel: bool) -> None:
        quantize_static(
            str(pre),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            calibrate_method=CalibrationMethod.MinMax,
        )

    try:
        run(True)
        return "per-channel"
    except Exception as e:  # noqa: BLE001 - onnxruntime's quantizer fails on some models
        run(False)
        return f"per-tensor (per-channel failed in quantize_static: {type(e).__name__}: {e})"


# ----------------------------------------------------------------------------------------
# Cold start: a new process per measurement
# ----------------------------------------------------------------------------------------

_COLD = r"""
import sys, time
t0 = time.perf_counter()
raw = open(sys.argv[2], "rb").read()
engine, path = sys.argv[1], sys.argv[3]
t0 = time.perf_counter()
import numpy as np
if engine.startswith("edgeconv"):
    import edgeconv
    t1 = time.perf_counter()
    m = edgeconv.load(path)
    t2 = time.perf_counter()
    x = np.frombuffer(raw, np.int8).reshape((1, *m.input_shape))
    y = m.run(x)
elif engine.startswith("litert"):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    t1 = time.perf_counter()
    kw = {"model_path": path, "num_threads": 1}
    if engine == "litert-builtin":
        kw["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(**kw)
    it.allocate_tensors()
    t2 = time.perf_counter()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.frombuffer(raw, np.int8).reshape(d["shape"]))
    it.invoke()
    y = it.get_tensor(it.get_output_details()[0]["index"])
else:
    import onnxruntime as ort
    t1 = time.perf_counter()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    t2 = time.perf_counter()
    i = s.get_inputs()[0]
    x = np.frombuffer(raw, np.float32).reshape([1] + [int(d) for d in i.shape[1:]])
    y = s.run(None, {i.name: x})[0]
t3 = time.perf_counter()
import json
try:
    hwm = [l for l in open("/proc/self/status").read().splitlines() if l.startswith("VmHWM:")]
    rss = int(hwm[0].split()[1]) / 1024.0
except (OSError, IndexError):
    import resource
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_s": t3 - t2,
                  "total_s": t3 - t0, "rss_mb": rss}))
"""


def _cold_once(engine: str, path: Path, sample: Path, env: dict, cpus) -> dict:
    full = {**os.environ, **env}
    full.pop("PYTHONDONTWRITEBYTECODE", None)
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", _COLD, engine, str(sample), str(path)],
        capture_output=True,
        text=True,
        env=full,
        preexec_fn=(lambda: _pin(cpus)) if os.name == "posix" else None,
        timeout=600,
    )
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise EdgeconvError(f"cold start of {engine} failed: {r.stderr.strip()[-500:]}")
    obj = json.loads(r.stdout.strip().splitlines()[-1])
    obj["process_s"] = wall
    return obj


def cold_starts(setup: Setup, engines, runs: int, cpus) -> dict:
    """Median over ``runs`` new processes of import, load, first inference."""
    sample_i8 = setup.workdir / "sample.int8.bin"
    sample_f = setup.workdir / "sample.f32.bin"
    sample_i8.write_bytes(np.ascontiguousarray(setup.x_int8[0]).tobytes())
    sample_f.write_bytes(np.ascontiguousarray(setup.x_float[0], np.float32).tobytes())
    base = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "EDGECONV_THREADS": "1"}
    # Bytecode is cached as in any installed package (this also overrides an environment's
    # PYTHONDONTWRITEBYTECODE), in a folder of the benchmark's own, warmed by a first run.
    base["PYTHONPYCACHEPREFIX"] = str(setup.workdir / "pycache")
    cases = []
    if "edgeconv" in engines:
        cases.append(("edgeconv (warm cache)", "edgeconv", setup.int8_path, sample_i8, "warm"))
        cases.append(("edgeconv (empty cache)", "edgeconv", setup.int8_path, sample_i8, "empty"))
    for e in ("litert-xnnpack", "litert-builtin"):
        if e in engines and setup.tflite_path:
            cases.append((e, e, setup.tflite_path, sample_i8, None))
    if "onnxruntime" in engines and setup.qdq_path:
        cases.append(("onnxruntime", "onnxruntime", setup.qdq_path, sample_f, None))
    results = {}
    for label, engine, path, sample, cache in cases:
        runs_out = []
        _cold_once(engine, path, sample, base, cpus)  # warm caches (bytecode, Numba, OS)
        for _ in range(runs):
            env = dict(base)
            tmp = None
            if cache == "empty":  # an empty Numba cache: everything compiles in this process
                tmp = tempfile.mkdtemp(prefix="edgeconv-cold-")
                env["NUMBA_CACHE_DIR"] = tmp
            try:
                runs_out.append(_cold_once(engine, path, sample, env, cpus))
            finally:
                if tmp:
                    shutil.rmtree(tmp, ignore_errors=True)
        results[label] = {
            k: float(np.median([r[k] for r in runs_out])) for k in runs_out[0]
        } | {"runs": runs}
    return results


# ----------------------------------------------------------------------------------------
# The interleaved run
# ----------------------------------------------------------------------------------------


def _specs(setup: Setup, args) -> list[dict]:
    ncpu = os.cpu_count() or 1
    one = [args.cpu if args.cpu is not None else ncpu - 1]
    specs = []
    variants = [(1, one)]
    if args.threads and args.threads > 1:
        variants.append((args.threads, list(range(min(args.threads, ncpu)))))
    for threads, cpus in variants:
        for e in args.engine_list:
            if threads > 1 and e == "edgeconv-numpy":
                continue
            if e.startswith("litert") and setup.tflite_path is None:
                continue
            if e == "onnxruntime" and setup.qdq_path is None:
                continue
            name = e if threads == 1 else f"{e}@{threads}"
            xs = setup.x_float if e == "onnxruntime" else setup.x_int8
            specs.append(
                {
                    "engine": name,
                    "threads": threads,
                    "cpus": cpus,
                    "int8_path": str(setup.int8_path),
                    "tflite_path": str(setup.tflite_path) if setup.tflite_path else None,
                    "qdq_path": str(setup.qdq_path) if setup.qdq_path else None,
                    "inputs1": [xs[i : i + 1] for i in range(POOL)],
                    "input_batch": xs[: args.batch],
                }
            )
    return specs


def run_benchmark(setup: Setup, args) -> dict:
    specs = _specs(setup, args)
    workers: dict[str, _Worker] = {}
    results: dict[str, dict] = {}
    try:
        for spec in specs:
            w = _Worker(spec)
            if "error" in w.info:
                results[spec["engine"]] = {"error": w.info["error"], "threads": spec["threads"]}
                w.close()
                continue
            workers[spec["engine"]] = w
            results[spec["engine"]] = {
                "threads": spec["threads"],
                "load_s": w.info["load_s"],
                "first_call_s": w.info["first_call_s"],
            }
        names = list(workers)
        lat = {n: [] for n in names}
        per_round = {n: [] for n in names}
        thr = {n: [] for n in names}
        modes = {}
        for n in names:  # warm-up round, not counted
            workers[n].call("lat", min(50, args.iters))
            workers[n].call("thr", 1)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for n in order:
                t = workers[n].call("lat", args.iters)
                lat[n].append(t)
                per_round[n].append(float(np.median(t)) / 1e3)
            for n in order:
                got = workers[n].call("thr", args.reps)
                thr[n].extend(got["secs"])
                modes[n] = got["batch_mode"]
        ref_out = workers["edgeconv"].call("outputs") if "edgeconv" in workers else None
        for n in names:
            us = np.concatenate(lat[n]) / 1e3
            res = results[n]
            res.update(
                p50_us=float(np.percentile(us, 50)),
                p90_us=float(np.percentile(us, 90)),
                p99_us=float(np.percentile(us, 99)),
                p50_round_min_us=float(min(per_round[n])),
                p50_round_max_us=float(max(per_round[n])),
                calls=int(us.size),
                batch=args.batch,
                images_per_s=float(args.batch / np.median(thr[n])),
                images_per_s_best=float(args.batch / np.min(thr[n])),
                batch_mode=modes[n],
                peak_rss_mb=float(workers[n].call("rss")),
            )
            if ref_out is not None:
                out = workers[n].call("outputs")
                if out.shape == ref_out.shape:
                    res["top1_agreement"] = float(
                        (out.argmax(1) == ref_out.argmax(1)).mean()
                    )
                    if out.dtype == ref_out.dtype:
                        res["identical_outputs"] = float((out == ref_out).all(1).mean())
    finally:
        for w in workers.values():
            w.close()
    return results


def _ratios(results: dict) -> None:
    for suffix in ("", *sorted({n[n.index("@") :] for n in results if "@" in n})):
        ref = results.get(REFERENCE + suffix)
        for name, r in results.items():
            if not name.endswith(suffix) or (suffix == "" and "@" in name) or "error" in r:
                continue
            if ref and "p50_us" in ref:
                r["p50_vs_litert"] = r["p50_us"] / ref["p50_us"]
                r["throughput_vs_litert"] = r["images_per_s"] / ref["images_per_s"]


# ----------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------


def _fmt(v, spec=".1f", none="—"):
    return none if v is None else format(v, spec)


def markdown(report: dict) -> str:
    res = report["engines"]
    b = report["config"]["batch"]
    lines = [
        f"| engine | threads | batch-1 p50 µs | p90 µs | p99 µs | p50 vs LiteRT-XNNPACK | "
        f"batch-{b} img/s, median (best) | vs LiteRT-XNNPACK | load + first call ms | "
        f"peak RSS MB | "
        f"top-1 = edgeconv |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res.items():
        if "error" in r:
            lines.append(f"| {name} | {r['threads']} | failed: {r['error'][:80]} |" + " |" * 8)
            continue
        mode = "" if r.get("batch_mode", "native") == "native" else f" ({r['batch_mode']})"
        lines.append(
            f"| {name} | {r['threads']} | {r['p50_us']:.1f} | {r['p90_us']:.1f} | "
            f"{r['p99_us']:.1f} | {_fmt(r.get('p50_vs_litert'), '.2f')}× | "
            f"{r['images_per_s']:,.0f} (best {r['images_per_s_best']:,.0f}){mode} | "
            f"{_fmt(r.get('throughput_vs_litert'), '.2f')}× | "
            f"{(r['load_s'] + r['first_call_s']) * 1e3:,.0f} | {r['peak_rss_mb']:.0f} | "
            f"{_fmt(r.get('top1_agreement', None) and r['top1_agreement'] * 100, '.1f')} % |"
        )
    cold = report.get("cold_start") or {}
    if cold:
        lines += [
            "",
            "| cold start (new process, 1 thread) | import s | load s | first inference s | "
            "total s | process wall s | peak RSS MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, c in cold.items():
            lines.append(
                f"| {label} | {c['import_s']:.3f} | {c['load_s']:.3f} | {c['first_s']:.3f} | "
                f"**{c['total_s']:.3f}** | {c['process_s']:.3f} | {c['rss_mb']:.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "python -m edgeconv.bench") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        return run(args)
    except EdgeconvError as e:
        print(f"edgeconv bench: error: {e}", file=sys.stderr)
        return 2


def build_parser(prog: str = "python -m edgeconv.bench") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Speed of edgeconv against LiteRT (XNNPACK, builtin) and onnxruntime on "
        "the same int8 model and inputs, interleaved, pinned to 1 thread.",
    )
    p.add_argument("model", help="float .onnx (quantized here) or int8 .edgeconv")
    p.add_argument("--calib", help="calibration samples for a float model (.npz/.npy/IDX)")
    p.add_argument("--calib-limit", type=int, default=200, help="calibration samples used")
    p.add_argument("--data", help="input samples (default: the shipped MNIST slice)")
    p.add_argument("--onnx", help="float ONNX for the onnxruntime engine (default: MODEL)")
    p.add_argument("--tflite", help="use this .tflite for LiteRT instead of exporting one")
    p.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset")
    p.add_argument("--threads", type=int, default=0, help="also run each engine on N threads")
    p.add_argument("--cpu", type=int, help="CPU to pin 1-thread runs to (default: the last)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    p.add_argument("--iters", type=int, default=300, help="batch-1 calls per round")
    p.add_argument("--batch", type=int, default=256, help="throughput batch size")
    p.add_argument("--reps", type=int, default=3, help="batch calls per round")
    p.add_argument("--cold", type=int, default=3, help="cold-start processes per case (0: skip)")
    p.add_argument("--workdir", help="keep the derived models here (default: a temp dir)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--markdown", help="also write the markdown table to this file")
    p.add_argument("--plot", help="write a PNG bar chart here")
    return p


def run(args) -> int:
    args.engine_list = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [e for e in args.engine_list if e not in ENGINES]
    if bad:
        raise EdgeconvError(f"unknown engine(s) {bad}; choose from {', '.join(ENGINES)}")
    t0 = time.perf_counter()
    setup = prepare(args)
    results = run_benchmark(setup, args)
    _ratios(results)
    one = [args.cpu if args.cpu is not None else (os.cpu_count() or 1) - 1]
    cold = cold_starts(setup, args.engine_list, args.cold, one) if args.cold > 0 else {}
    report = {
        "model": str(args.model),
        "engines": results,
        "cold_start": cold,
        "latency_ratio_vs_litert": results.get("edgeconv", {}).get("p50_vs_litert"),
        "throughput_ratio_vs_litert": results.get("edgeconv", {}).get("throughput_vs_litert"),
        "config": {
            "rounds": args.rounds,
            "iters": args.iters,
            "batch": args.batch,
            "reps": args.reps,
            "threads": args.threads or 1,
            "pinned_cpu": one[0],
            "cold_runs": args.cold,
        },
        "machine": _machine(),
        "notes": setup.notes,
        "seconds": time.perf_counter() - t0,
    }
    table = markdown(report)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.plot:
        from .benchplot import write_chart

        write_chart(report, args.plot)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"edgeconv bench: {args.model} ({report['machine']['cpu']}, "
              f"{report['machine']['cores']} cores, load average {report['machine']['load']})")
        print(table)
        for k, v in setup.notes.items():
            print(f"  {k}: {v}")
    if not args.workdir:
        shutil.rmtree(setup.workdir, ignore_errors=True)
    return 0


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "n/a"
    versions = {}
    for mod in ("numpy", "numba", "onnxruntime", "ai_edge_litert"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing engine is reported, not fatal
            versions[mod] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "load": load,
        "versions": versions,
    }


if __name__ == "__main__":
    sys.exit(main())
