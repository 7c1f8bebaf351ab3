"""Load a model, plan it once, run it many times.

Planning (TFLM's "prepare") derives every per-layer constant — multipliers and
shifts, activation clamps, softmax/tanh tables — when the model is loaded;
`run()` only calls kernels. A float graph runs on the NumPy float executor, an
int8 graph on the int8 kernels of the selected backend.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import kernels
from .data import fit_samples, to_model_dtype
from .errors import EdgeconvError
from .float_runtime import run_graph
from .ir import Graph, Op
from .qmath import activation_range, real_multipliers

Step = Callable[[dict[str, np.ndarray]], None]


def _multipliers(s_in: float, w_scale: np.ndarray, s_out: float, cout: int, mode: str = "double"):
    from .kernels.requant import quantize_multipliers

    reals = np.broadcast_to(real_multipliers(s_in, w_scale, s_out), (cout,))
    return quantize_multipliers(np.ascontiguousarray(reals), mode)


class _Planner:
    """Turns each int8 op into a closure over its precomputed constants."""

    def __init__(self, graph: Graph, rounding: str):
        self.g = graph
        self.rounding = rounding

    def q(self, name: str) -> tuple[float, int]:
        return self.g.tensor(name).qparams()

    def act_range(self, op: Op) -> tuple[int, int]:
        s, zp = self.q(op.outputs[0])
        return activation_range(op.attrs.get("activation", "none"), s, zp, op.attrs.get("clip"))

    def step(self, op: Op) -> Step:
        planner = getattr(self, f"plan_{op.kind}", None)
        if planner is None:
            raise EdgeconvError(f"op {op.name!r}: kind {op.kind!r} has no int8 kernel")
        fn = planner(op)
        src, dst = op.inputs[0], op.outputs[0]
        return lambda env: env.__setitem__(dst, fn(env[src]))

    def _conv_like(self, op: Op, part: str | None = None):
        from .kernels.requant import mode_for, real_scales

        g = self.g
        w, b = g.tensors[op.inputs[1]], g.tensors[op.inputs[2]]
        s_in, zp_in = self.q(op.inputs[0])
        s_out, zp_out = self.q(op.outputs[0])
        cout = b.data.shape[0]
        part = part or ("fc" if op.kind == "fc" else "conv")
        bias_scale = b.scale if b.scale is not None else 1.0
        layer_scales = np.concatenate([np.ravel(w.scale), np.ravel(bias_scale)])
        mode = mode_for(self.rounding, part, layer_scales)  # a profile picks a mode per op
        mult, shift = _multipliers(s_in, w.scale, s_out, cout, mode)
        scale = np.broadcast_to(real_scales(s_in, w.scale, s_out, mode), (cout,)).copy()
        lo, hi = self.act_range(op)
        return (
            dict(
                in_zp=zp_in,
                out_zp=zp_out,
                mult=mult,
                shift=shift,
                act_min=lo,
                act_max=hi,
                rounding=mode,
                scale=scale,
            ),
            w.data,
            b.data,
        )

    def plan_conv(self, op: Op):
        a = op.attrs
        p, w, b = self._conv_like(op, "depthwise" if a["depthwise"] else "conv")
        geometry = dict(stride=tuple(a["stride"]), dilation=tuple(a["dilation"]))
        p.update(geometry, pads=tuple(a["pads"]))
        if a["depthwise"]:
            dm = a["depth_multiplier"]
            blocks = self._conv_like(op, "depthwise_blocks")[0]
            split = (b.shape[0] // 8) * 8
            if blocks["rounding"] == p["rounding"] or split == 0:
                return lambda x: kernels.depthwise_conv2d(x, w, b, depth_multiplier=dm, **p)
            blocks.update(geometry, pads=tuple(a["pads"]))

            def mixed(x):  # channels in full blocks of 8 round one way, the rest another
                y = kernels.depthwise_conv2d(x, w, b, depth_multiplier=dm, **p)
                z = kernels.depthwise_conv2d(x, w, b, depth_multiplier=dm, **blocks)
                y[..., :split] = z[..., :split]
                return y

            return mixed
        return lambda x: kernels.conv2d(x, w, b, **p)

    def plan_fc(self, op: Op):
        p, w, b = self._conv_like(op)
        return lambda x: kernels.fully_connected(x, w, b, **p)

    def plan_pool(self, op: Op):
        a = op.attrs
        lo, hi = self.act_range(op)
        common = dict(
            kernel=tuple(a["kernel"]),
            stride=tuple(a["stride"]),
            pads=tuple(a["pads"]),
            act_min=lo,
            act_max=hi,
        )
        if a["mode"] == "max":
            return lambda x: kernels.max_pool2d(x, **common)
        zp = self.q(op.inputs[0])[1]
        cip = bool(a.get("count_include_pad"))
        return lambda x: kernels.avg_pool2d(x, count_include_pad=cip, zp=zp, **common)

    def plan_act(self, op: Op):
        fn = op.attrs["fn"]
        s_in, zp_in = self.q(op.inputs[0])
        if fn in ("relu", "relu6", "clip"):  # output shares input qparams: a clamp
            clip = (op.attrs.get("lo"), op.attrs.get("hi"))
            lo, hi = activation_range(fn, s_in, zp_in, clip)
            return lambda x: np.clip(x, lo, hi).astype(np.int8)
        if fn == "tanh":
            p = kernels.prepare_tanh(s_in, zp_in)
            return lambda x: kernels.tanh(x, p)
        if fn == "sigmoid":
            p = kernels.prepare_logistic(s_in, zp_in)
            return lambda x: kernels.logistic(x, p)
        raise EdgeconvError(f"op {op.name!r}: activation {fn!r} has no int8 kernel")

    def plan_softmax(self, op: Op):
        s_in, _ = self.q(op.inputs[0])
        if op.attrs.get("log"):
            p = kernels.prepare_log_softmax(s_in)
            return lambda x: kernels.log_softmax(x, p)
        p = kernels.prepare_softmax(s_in, float(op.attrs.get("beta", 1.0)))
        return lambda x: kernels.softmax(x, p)

    def plan_reshape(self, op: Op):
        shape = tuple(op.attrs["shape"])
        return lambda x: x.reshape((x.shape[0], *shape))

    def plan_transpose(self, op: Op):
        perm = tuple(op.attrs["perm"])
        return lambda x: np.ascontiguousarray(x.transpose(perm))

    def plan_quantize(self, op: Op):
        """int8 <-> uint8 requantization (TFLite QUANTIZE between integer types, TFLM's
        Requantize: double rounding); float edges are handled by prepare_input/run."""
        from .kernels.requant import quantize_multiplier

        src, dst = self.g.tensor(op.inputs[0]), self.g.tensor(op.outputs[0])
        ranges = {"int8": (-128, 127), "uint8": (0, 255)}
        if src.dtype not in ranges or dst.dtype not in ranges:
            raise EdgeconvError(
                f"op {op.name!r}: quantize from {src.dtype} to {dst.dtype} has no integer kernel"
            )
        s_in, zp_in = src.qparams()
        s_out, zp_out = dst.qparams()
        mult, shift = quantize_multiplier(float(real_multipliers(s_in, 1.0, s_out)))
        lo, hi = ranges[dst.dtype]
        out_dtype = np.dtype(dst.dtype)

        def requant(x):
            v = kernels.requantize(x.astype(np.int32) - zp_in, mult, shift, "double")
            return np.clip(v.astype(np.int64) + zp_out, lo, hi).astype(out_dtype)

        return requant

    def plan_pad(self, op: Op):
        pads, zp = tuple(op.attrs["pads"]), self.q(op.inputs[0])[1]
        return lambda x: kernels.pad(x, pads, zp)

    def step_add(self, op: Op) -> Step:
        sa, za = self.q(op.inputs[0])
        sb, zb = self.q(op.inputs[1])
        so, zo = self.q(op.outputs[0])
        p = kernels.prepare_add(sa, za, sb, zb, so, zo)
        lo, hi = self.act_range(op)
        a, b, dst = op.inputs[0], op.inputs[1], op.outputs[0]
        return lambda env: env.__setitem__(dst, kernels.add(env[a], env[b], p, lo, hi))


class Model:
    """A loaded model: `run(x)` takes float samples (quantized on the way in for an int8
    model) or the model's own integer dtype, batched on the first axis."""

    def __init__(self, graph: Graph, path: str = "", rounding: str = "double"):
        graph.validate()
        if len(graph.inputs) != 1:
            raise EdgeconvError(f"{path}: models with {len(graph.inputs)} inputs are not supported")
        self.graph = graph
        self.path = path
        self.rounding = rounding
        self.input = graph.tensor(graph.inputs[0])
        self.quantized = graph.is_quantized
        self._steps: list[Step] | None = None
        self._run_plan: list[Step] | None = None
        # threads for batches on the compiled engine (prange); EDGECONV_THREADS, default 1
        self.threads = max(1, int(os.environ.get("EDGECONV_THREADS", "1") or 1))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample input shape (as the source model declares it, without batch)."""
        return tuple(self.input.shape[1:])

    @property
    def output_names(self) -> list[str]:
        return list(self.graph.outputs)

    def _plan(self) -> list[Step]:
        if self._steps is None:
            from .kernels.requant import check_rounding

            check_rounding(self.rounding)  # validates the mode or profile name
            planner = _Planner(self.graph, self.rounding)
            self._steps = [
                planner.step_add(op) if op.kind == "add" else planner.step(op)
                for op in self.graph.ops
            ]
        return self._steps

    def _run_steps(self) -> list[Step]:
        """What run() executes: on the Numba backend, chains of ops compiled into one call
        each (kernels/compiled.py; EDGECONV_ENGINE=ops turns it off), else the per-op steps."""
        if self._run_plan is None:
            steps = self._plan()
            if kernels.backend_name() == "numba" and os.environ.get("EDGECONV_ENGINE") != "ops":
                from .kernels.compiled import compiled_steps

                steps = compiled_steps(self, steps)
            self._run_plan = steps
        return self._run_plan

    def prepare_input(self, x: np.ndarray) -> np.ndarray:
        x = fit_samples(np.asarray(x), self.input_shape)
        if not self.quantized:
            return to_model_dtype(x, "float32")
        if x.dtype == np.int8 and self.input.dtype == "int8":  # raw int8: the hot path
            return x
        from .kernels.requant import mode_for

        method = mode_for(self.rounding, "quantize")  # as the chosen runtime quantizes
        if self.input.dtype == "uint8":  # a uint8-I/O model (e.g. imported from .tflite)
            if x.dtype == np.uint8:
                return x
            scale, zp = self.input.qparams()
            q = kernels.quantize(to_model_dtype(x, "float32"), scale, zp - 128, method)
            return (q.astype(np.int16) + 128).astype(np.uint8)
        if x.dtype == np.int8:
            return x
        x = to_model_dtype(x, "float32")
        scale, zp = self.input.qparams()
        return kernels.quantize(x, scale, zp, method)

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every graph output, raw (int8 for an int8 model)."""
        x = self.prepare_input(x)
        if not self.quantized:
            return run_graph(self.graph, {self.graph.inputs[0]: x})
        env = {self.graph.inputs[0]: x}
        for step in self._run_steps():
            step(env)
        return {name: env[name] for name in self.graph.outputs}

    def trace(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every activation of one run by tensor name, raw (int8 for an int8 model):
        what the per-layer quantization report compares with the float model."""
        x = self.prepare_input(x)
        env: dict[str, np.ndarray] = {}

        def keep(name: str, value: np.ndarray) -> None:
            env[name] = value

        if not self.quantized:
            run_graph(self.graph, {self.graph.inputs[0]: x}, keep)
            return env
        env[self.graph.inputs[0]] = x
        for step in self._plan():
            step(env)
        return env

    def run_op(self, index: int, env: dict[str, np.ndarray]) -> np.ndarray:
        """Run op `index` of an int8 model alone on the raw inputs in `env` (tensor name
        -> array); its output is stored in `env` and returned."""
        if not self.quantized:
            raise EdgeconvError("run_op runs one op of an int8 model")
        self._plan()[index](env)
        return env[self.graph.ops[index].outputs[0]]

    def run(self, x: np.ndarray, *, dequantize: bool = False) -> np.ndarray:
        """The first output: raw int8 for an int8 model unless `dequantize=True`."""
        name = self.graph.outputs[0]
        y = self.run_all(x)[name]
        if dequantize and self.quantized:
            scale, zp = self.graph.tensor(name).qparams()
            if y.dtype == np.uint8:
                y, zp = (y.astype(np.int16) - 128).astype(np.int8), zp - 128
            return kernels.dequantize(y, scale, zp)
        return y

    def predict(
        self, x: np.ndarray, batch: int = 256, progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Class index per sample (argmax of the first output), in batches."""
        x = fit_samples(np.asarray(x), self.input_shape)
        out = []
        for start in range(0, len(x), batch):
            chunk = x[start : start + batch]
            y = self.run(chunk)
            out.append(np.argmax(y.reshape(len(chunk), -1), axis=1))
            if progress:
                progress(len(chunk))
        return np.concatenate(out) if out else np.zeros(0, np.int64)


def detect_format(path: str | os.PathLike) -> str:
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".onnx", ".edgeconv", ".tflite"):
        return suffix[1:]
    if not p.exists():
        raise EdgeconvError(f"model not found: {p}")
    with open(p, "rb") as f:
        head = f.read(8)
    if head == b"EDGECONV":
        return "edgeconv"
    if head[4:8] == b"TFL3":
        return "tflite"
    raise EdgeconvError(
        f"{p}: unknown model format (extension {suffix or 'none'}); edgeconv reads .onnx, "
        ".tflite and .edgeconv files"
    )


def load_graph(path: str | os.PathLike) -> Graph:
    fmt = detect_format(path)
    if fmt == "onnx":
        from .formats.onnx_import import load_onnx

        try:
            return load_onnx(path)
        except ModuleNotFoundError as e:  # onnx is not installed on 32-bit ARM (no wheels)
            if (e.name or "").split(".")[0] not in ("onnx", "google"):
                raise
            raise EdgeconvError(
                f"{path}: reading .onnx needs the onnx package (pip install onnx), which has "
                "no wheels for 32-bit ARM; quantize on another machine and copy the "
                ".edgeconv file"
            ) from None
    if fmt == "edgeconv":
        from .formats.native import load as load_native

        return load_native(path)
    from .formats.tflite_import import load_tflite

    return load_tflite(path)


def load(path: str | os.PathLike, *, rounding: str = "double") -> Model:
    """Load an .onnx (float), .tflite or .edgeconv (float or int8) model, ready to run.
    `rounding` is a requantization mode or a runtime profile (kernels.requant)."""
    return Model(load_graph(path), str(path), rounding)
