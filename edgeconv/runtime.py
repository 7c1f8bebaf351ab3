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


def _multipliers(s_in: float, w_scale: np.ndarray, s_out: float, cout: int):
    from .kernels.requant import quantize_multipliers

    reals = np.broadcast_to(real_multipliers(s_in, w_scale, s_out), (cout,))
    return quantize_multipliers(np.ascontiguousarray(reals))


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

    def _conv_like(self, op: Op):
        g = self.g
        w, b = g.tensors[op.inputs[1]], g.tensors[op.inputs[2]]
        s_in, zp_in = self.q(op.inputs[0])
        s_out, zp_out = self.q(op.outputs[0])
        cout = b.data.shape[0]
        mult, shift = _multipliers(s_in, w.scale, s_out, cout)
        lo, hi = self.act_range(op)
        return (
            dict(
                in_zp=zp_in,
                out_zp=zp_out,
                mult=mult,
                shift=shift,
                act_min=lo,
                act_max=hi,
                rounding=self.rounding,
            ),
            w.data,
            b.data,
        )

    def plan_conv(self, op: Op):
        p, w, b = self._conv_like(op)
        a = op.attrs
        p.update(stride=tuple(a["stride"]), dilation=tuple(a["dilation"]), pads=tuple(a["pads"]))
        if a["depthwise"]:
            dm = a["depth_multiplier"]
            return lambda x: kernels.depthwise_conv2d(x, w, b, depth_multiplier=dm, **p)
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

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample input shape (as the source model declares it, without batch)."""
        return tuple(self.input.shape[1:])

    @property
    def output_names(self) -> list[str]:
        return list(self.graph.outputs)

    def _plan(self) -> list[Step]:
        if self._steps is None:
            from .kernels.requant import rounding_code

            rounding_code(self.rounding)  # validates the mode name
            planner = _Planner(self.graph, self.rounding)
            self._steps = [
                planner.step_add(op) if op.kind == "add" else planner.step(op)
                for op in self.graph.ops
            ]
        return self._steps

    def prepare_input(self, x: np.ndarray) -> np.ndarray:
        x = fit_samples(np.asarray(x), self.input_shape)
        if not self.quantized:
            return to_model_dtype(x, "float32")
        if x.dtype == np.int8:
            return x
        x = to_model_dtype(x, "float32")
        scale, zp = self.input.qparams()
        return kernels.quantize(x, scale, zp)

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every graph output, raw (int8 for an int8 model)."""
        x = self.prepare_input(x)
        if not self.quantized:
            return run_graph(self.graph, {self.graph.inputs[0]: x})
        env = {self.graph.inputs[0]: x}
        for step in self._plan():
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
    raise EdgeconvError(
        f"{p}: unknown model format (extension {suffix or 'none'}); edgeconv reads .onnx and "
        ".edgeconv files"
    )


def load_graph(path: str | os.PathLike) -> Graph:
    fmt = detect_format(path)
    if fmt == "onnx":
        from .formats.onnx_import import load_onnx

        return load_onnx(path)
    if fmt == "edgeconv":
        from .formats.native import load as load_native

        return load_native(path)
    raise EdgeconvError(f"{path}: .tflite import is not supported yet; use .onnx or .edgeconv")


def load(path: str | os.PathLike, *, rounding: str = "double") -> Model:
    """Load an .onnx (float) or .edgeconv (float or int8) model, ready to run."""
    return Model(load_graph(path), str(path), rounding)
