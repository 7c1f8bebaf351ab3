"""Float32 execution of an IR graph in NumPy.

It scores float models, feeds calibration (every intermediate tensor is
observable), and is the float side of the per-layer error report. Written for
clarity; LeNet-sized batches run in milliseconds through im2col + matmul.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import EdgeconvError
from .ir import Graph, Op


def _pad_nhwc(x: np.ndarray, pads, value: float) -> np.ndarray:
    top, left, bottom, right = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def _windows(x: np.ndarray, kernel, stride, dilation) -> np.ndarray:
    """[N, OH, OW, C, KH, KW] view of the sliding windows of an NHWC tensor."""
    kh, kw = kernel
    dh, dw = dilation
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    v = sliding_window_view(x, span, axis=(1, 2))
    return v[:, :: stride[0], :: stride[1], :, ::dh, ::dw]


def _activation(y: np.ndarray, attrs: dict) -> np.ndarray:
    fn = attrs.get("activation", "none")
    if fn == "relu":
        return np.maximum(y, 0)
    if fn == "relu6":
        return np.clip(y, 0, 6)
    if fn == "clip":
        lo, hi = attrs["clip"]
        return np.clip(y, lo, hi)
    return y


def conv(op: Op, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    a = op.attrs
    win = _windows(_pad_nhwc(x, a["pads"], 0.0), w.shape[1:3], a["stride"], a["dilation"])
    if a["depthwise"]:
        m = a["depth_multiplier"]
        win = np.repeat(win, m, axis=3)  # output channel ic*m + j reads input channel ic
        y = np.einsum("nhwckl,klc->nhwc", win, w[0], optimize=True)
    else:
        n, oh, ow = win.shape[:3]
        cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(n * oh * ow, -1)
        y = (cols @ w.reshape(w.shape[0], -1).T).reshape(n, oh, ow, -1)
    if b is not None:
        y = y + b
    return _activation(y.astype(np.float32), a)


def pool(op: Op, x: np.ndarray) -> np.ndarray:
    a = op.attrs
    if a["mode"] == "max":
        win = _windows(_pad_nhwc(x, a["pads"], -np.inf), a["kernel"], a["stride"], (1, 1))
        y = win.max(axis=(4, 5))
    else:
        win = _windows(_pad_nhwc(x, a["pads"], 0.0), a["kernel"], a["stride"], (1, 1))
        if a.get("count_include_pad"):
            count = a["kernel"][0] * a["kernel"][1]
        else:
            ones = _pad_nhwc(np.ones((1,) + x.shape[1:3] + (1,), np.float32), a["pads"], 0.0)
            count = _windows(ones, a["kernel"], a["stride"], (1, 1)).sum(axis=(4, 5))
        y = win.sum(axis=(4, 5)) / count
    return _activation(y.astype(np.float32), a)


def softmax(op: Op, x: np.ndarray) -> np.ndarray:
    z = x * op.attrs.get("beta", 1.0)
    z = z - z.max(axis=-1, keepdims=True)
    if op.attrs.get("log"):
        return (z - np.log(np.exp(z).sum(axis=-1, keepdims=True))).astype(np.float32)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def act(op: Op, x: np.ndarray) -> np.ndarray:
    fn = op.attrs["fn"]
    if fn == "tanh":
        return np.tanh(x)
    if fn == "sigmoid":
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
    return _activation(x, {"activation": fn, "clip": (op.attrs.get("lo"), op.attrs.get("hi"))})


def run_op(op: Op, args: list[np.ndarray | None]) -> np.ndarray:
    k = op.kind
    if k == "conv":
        return conv(op, args[0], args[1], args[2] if len(args) > 2 else None)
    if k == "fc":
        y = args[0] @ args[1].T
        if len(args) > 2:
            y = y + args[2]
        return _activation(y.astype(np.float32), op.attrs)
    if k == "pool":
        return pool(op, args[0])
    if k == "act":
        return act(op, args[0])
    if k == "add":
        return _activation(args[0] + args[1], op.attrs)
    if k == "softmax":
        return softmax(op, args[0])
    if k == "reshape":
        return args[0].reshape((args[0].shape[0],) + tuple(op.attrs["shape"]))
    if k == "transpose":
        return np.ascontiguousarray(args[0].transpose(op.attrs["perm"]))
    if k == "pad":
        return _pad_nhwc(args[0], op.attrs["pads"], 0.0)
    raise EdgeconvError(f"op {op.name!r}: kind {k!r} cannot run in a float graph")


def run_graph(
    graph: Graph,
    feeds: dict[str, np.ndarray],
    observe: Callable[[str, np.ndarray], None] | None = None,
) -> dict[str, np.ndarray]:
    """Run the float graph; `observe(name, value)` sees every activation as it is made."""
    values: dict[str, np.ndarray] = {}
    for name in graph.inputs:
        values[name] = np.asarray(feeds[name], np.float32)
        if observe:
            observe(name, values[name])
    for op in graph.ops:
        args = [values[i] if i in values else graph.tensors[i].data for i in op.inputs]
        out = run_op(op, args)
        values[op.outputs[0]] = out
        if observe:
            observe(op.outputs[0], out)
    return {name: values[name] for name in graph.outputs}
