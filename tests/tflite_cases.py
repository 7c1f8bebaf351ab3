"""Random single-layer int8 graphs in edgeconv's IR, for the TFLite tests and the rounding
measurement (``tests/tflite_measure.py``).

Each builder takes a NumPy Generator and explicit choices (hypothesis draws them in the
tests, the measurement draws them from the Generator) and returns ``(graph, x)``: a
validated int8 graph with one op and a batch of int8 inputs. Output scales are chosen
from the layer's actual accumulator spread so the outputs use most of the int8 range
(a layer that saturates everything would compare nothing).
"""

from __future__ import annotations

import numpy as np

from edgeconv.ir import Graph, Op, Tensor, conv_output_size, same_pads

ACTIVATIONS = ("none", "relu", "relu6")


def _act(name: str, shape, scale: float, zp: int) -> Tensor:
    return Tensor(
        name, tuple(shape), "int8", None, np.array([scale], np.float32), np.array([zp], np.int32)
    )


def _pads(h, w, kernel, stride, dilation, padding: str):
    if padding == "VALID":
        return (0, 0, 0, 0)
    top, bottom = same_pads(h, kernel[0], stride[0], dilation[0])
    left, right = same_pads(w, kernel[1], stride[1], dilation[1])
    if padding == "SAME":
        return (top, left, bottom, right)
    return (bottom + 1, right, top, left + 1)  # "EXPLICIT": neither SAME nor VALID


def _pow2(v) -> np.ndarray:
    """Round scales to powers of two: every real multiplier is then exact, and exact ties
    (x.5 after requantization) are frequent, which is where the rounding modes differ."""
    return np.exp2(np.round(np.log2(np.asarray(v, np.float64)))).astype(np.float32)


def _out_scale(acc: np.ndarray, s_in: float, s_w: np.ndarray, spread: float = 100.0) -> float:
    """An output scale that maps the accumulators' spread to about +-spread steps."""
    real = acc.astype(np.float64) * (s_in * np.asarray(s_w, np.float64))
    width = float(np.percentile(np.abs(real), 95)) if real.size else 1.0
    return float(np.float32(max(width, 1e-6) / spread))


def conv_graph(
    rng: np.random.Generator,
    *,
    depthwise: bool = False,
    n: int = 4,
    h: int = 8,
    w: int = 8,
    cin: int = 3,
    cout_or_mult: int = 4,
    kernel=(3, 3),
    stride=(1, 1),
    dilation=(1, 1),
    padding: str = "SAME",
    per_channel: bool = True,
    activation: str = "none",
    dyadic: bool = False,
):
    kh, kw = kernel
    h = max(h, dilation[0] * (kh - 1) + 1)  # the kernel must fit (VALID)
    w = max(w, dilation[1] * (kw - 1) + 1)
    pads = _pads(h, w, kernel, stride, dilation, padding)
    oh = conv_output_size(h, kh, stride[0], dilation[0], pads[0], pads[2])
    ow = conv_output_size(w, kw, stride[1], dilation[1], pads[1], pads[3])
    if depthwise:
        cout = cin * cout_or_mult
        wq = rng.integers(-127, 128, (1, kh, kw, cout), dtype=np.int8)
        axis = 3
    else:
        cout = cout_or_mult
        wq = rng.integers(-127, 128, (cout, kh, kw, cin), dtype=np.int8)
        axis = 0
    s_in = float(np.float32(np.exp(rng.uniform(np.log(1e-3), np.log(0.1)))))
    zp_in = int(rng.integers(-128, 128))
    s_w = np.exp(rng.uniform(np.log(1e-4), np.log(2e-2), cout)).astype(np.float32)
    if not per_channel:
        s_w[:] = s_w[0]
    k = kh * kw * (1 if depthwise else cin)
    bias = rng.integers(-(2**14), 2**14, cout).astype(np.int32)
    x = rng.integers(-128, 128, (n, h, w, cin), dtype=np.int8)
    acc = rng.normal(0, 74 * 128 * np.sqrt(k) / 2, 256)  # a typical accumulator spread
    s_out = _out_scale(acc, s_in, s_w.mean())
    if dyadic:
        s_in, s_out, s_w = float(_pow2(s_in)), float(_pow2(s_out)), _pow2(s_w)
    zp_out = int(rng.integers(-128, 128))
    g = Graph({}, [], ["x"], ["y"], {})
    g.tensors["x"] = _act("x", (1, h, w, cin), s_in, zp_in)
    g.tensors["w"] = Tensor(
        "w",
        wq.shape,
        "int8",
        wq,
        s_w if per_channel else s_w[:1],
        np.zeros(cout if per_channel else 1, np.int32),
        axis if per_channel else None,
    )
    bias_scale = (np.float32(s_in) * s_w).astype(np.float32)
    g.tensors["b"] = Tensor("b", (cout,), "int32", bias, bias_scale, np.zeros(cout, np.int32), 0)
    g.tensors["y"] = _act("y", (1, oh, ow, cout), s_out, zp_out)
    attrs = dict(
        stride=tuple(stride),
        dilation=tuple(dilation),
        pads=pads,
        activation=activation,
        depthwise=depthwise,
        depth_multiplier=cout_or_mult if depthwise else 1,
    )
    g.ops.append(Op("conv", ["x", "w", "b"], ["y"], attrs, "layer"))
    g.validate()
    return g, x


def fc_graph(
    rng: np.random.Generator,
    *,
    n: int = 16,
    k: int = 32,
    cout: int = 10,
    per_channel: bool = True,
    activation: str = "none",
    dyadic: bool = False,
):
    wq = rng.integers(-127, 128, (cout, k), dtype=np.int8)
    s_in = float(np.float32(np.exp(rng.uniform(np.log(1e-3), np.log(0.1)))))
    zp_in = int(rng.integers(-128, 128))
    s_w = np.exp(rng.uniform(np.log(1e-4), np.log(2e-2), cout)).astype(np.float32)
    if not per_channel:
        s_w[:] = s_w[0]
    bias = rng.integers(-(2**14), 2**14, cout).astype(np.int32)
    x = rng.integers(-128, 128, (n, k), dtype=np.int8)
    acc = rng.normal(0, 74 * 128 * np.sqrt(k) / 2, 256)
    s_out = _out_scale(acc, s_in, s_w.mean())
    if dyadic:
        s_in, s_out, s_w = float(_pow2(s_in)), float(_pow2(s_out)), _pow2(s_w)
    g = Graph({}, [], ["x"], ["y"], {})
    g.tensors["x"] = _act("x", (1, k), s_in, zp_in)
    g.tensors["w"] = Tensor(
        "w",
        wq.shape,
        "int8",
        wq,
        s_w if per_channel else s_w[:1],
        np.zeros(cout if per_channel else 1, np.int32),
        0 if per_channel else None,
    )
    bias_scale = (np.float32(s_in) * s_w).astype(np.float32)
    g.tensors["b"] = Tensor("b", (cout,), "int32", bias, bias_scale, np.zeros(cout, np.int32), 0)
    g.tensors["y"] = _act("y", (1, cout), s_out, int(rng.integers(-128, 128)))
    g.ops.append(Op("fc", ["x", "w", "b"], ["y"], {"activation": activation}, "layer"))
    g.validate()
    return g, x


def pool_graph(
    rng: np.random.Generator,
    *,
    mode: str = "max",
    n: int = 4,
    h: int = 8,
    w: int = 8,
    c: int = 3,
    kernel=(2, 2),
    stride=(2, 2),
    padding: str = "VALID",
    activation: str = "none",
):
    h, w = max(h, kernel[0]), max(w, kernel[1])
    pads = _pads(h, w, kernel, stride, (1, 1), padding)
    oh = conv_output_size(h, kernel[0], stride[0], 1, pads[0], pads[2])
    ow = conv_output_size(w, kernel[1], stride[1], 1, pads[1], pads[3])
    s = float(np.float32(np.exp(rng.uniform(np.log(1e-3), np.log(0.1)))))
    zp = int(rng.integers(-128, 128))
    g = Graph({}, [], ["x"], ["y"], {})
    g.tensors["x"] = _act("x", (1, h, w, c), s, zp)
    g.tensors["y"] = _act("y", (1, oh, ow, c), s, zp)
    attrs = dict(
        mode=mode,
        kernel=tuple(kernel),
        stride=tuple(stride),
        pads=pads,
        activation=activation,
        count_include_pad=padding == "EXPLICIT",
    )
    g.ops.append(Op("pool", ["x"], ["y"], attrs, "layer"))
    g.validate()
    return g, rng.integers(-128, 128, (n, h, w, c), dtype=np.int8)


def add_graph(rng: np.random.Generator, *, n: int = 4, hw: int = 6, c: int = 4, activation="none"):
    """a + transpose(a) (one model input; the two operands hold different values and share
    their quantization, as TRANSPOSE keeps it), into an output of its own scale."""
    g = Graph({}, [], ["a"], ["y"], {})
    s_in, s_out = np.exp(rng.uniform(np.log(1e-3), np.log(0.1), 2)).astype(np.float32)
    s_out = max(s_out, np.float32(2 * s_in / 2**19))
    zp_in, zp_out = (int(z) for z in rng.integers(-128, 128, 2))
    shape = (1, hw, hw, c)
    g.tensors["a"] = _act("a", shape, float(s_in), zp_in)
    g.tensors["b"] = _act("b", shape, float(s_in), zp_in)
    g.tensors["y"] = _act("y", shape, float(s_out), zp_out)
    g.ops.append(Op("transpose", ["a"], ["b"], {"perm": (0, 2, 1, 3)}, "swap"))
    g.ops.append(Op("add", ["a", "b"], ["y"], {"activation": activation}, "layer"))
    g.validate()
    return g, rng.integers(-128, 128, (n, hw, hw, c), dtype=np.int8)


def unary_graph(rng: np.random.Generator, *, kind: str = "softmax", n: int = 16, size: int = 10):
    s_in = float(np.float32(np.exp(rng.uniform(np.log(1e-2), np.log(0.5)))))
    zp_in = int(rng.integers(-128, 128))
    fixed = {
        "softmax": (1 / 256, -128),
        "tanh": (1 / 128, 0),
        "sigmoid": (1 / 256, -128),
        "log_softmax": (16 / 256, 127),
    }[kind]
    g = Graph({}, [], ["x"], ["y"], {})
    g.tensors["x"] = _act("x", (1, size), s_in, zp_in)
    g.tensors["y"] = _act("y", (1, size), *fixed)
    if kind in ("softmax", "log_softmax"):
        op = Op("softmax", ["x"], ["y"], {"beta": 1.0, "log": kind == "log_softmax"}, "layer")
    else:
        op = Op("act", ["x"], ["y"], {"fn": kind}, "layer")
    g.ops.append(op)
    g.validate()
    return g, rng.integers(-128, 128, (n, size), dtype=np.int8)


def identity_graph(rng: np.random.Generator, *, size: int = 64):
    """One reshape: exported with io="float" it measures the input QUANTIZE alone."""
    s = float(np.float32(np.exp(rng.uniform(np.log(1e-3), np.log(0.1)))))
    zp = int(rng.integers(-128, 128))
    g = Graph({}, [], ["x"], ["y"], {})
    g.tensors["x"] = _act("x", (1, size), s, zp)
    g.tensors["y"] = _act("y", (1, size // 4, 4), s, zp)
    g.ops.append(Op("reshape", ["x"], ["y"], {"shape": (size // 4, 4)}, "layer"))
    g.validate()
    # real inputs: on the quantization grid, exactly half-way between steps, and in between
    steps = rng.integers(-128, 128, (32, size)) - zp
    frac = rng.choice([0.0, 0.5, -0.5, 0.25, 0.4999, 0.5001], (32, size))
    return g, ((steps + frac) * s).astype(np.float32)
