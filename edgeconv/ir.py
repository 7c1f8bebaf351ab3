"""The graph every part of edgeconv speaks: importers write it, passes rewrite it,
the quantizer turns a float one into an int8 one, runtimes and exporters read it.

It is deliberately small (tinygrad-style): few op kinds, each parameterised.
Activations are NHWC (as TFLite and CMSIS-NN); 1-D convolutions are H=1. The
leading dimension of every activation is the batch and is never fixed: shapes
are stored with batch 1 and any batch runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import EdgeconvError

DTYPES = ("float32", "int8", "uint8", "int32", "int64")

# op kind -> (number of data inputs it takes: min, max)
OP_ARITY: dict[str, tuple[int, int]] = {
    "conv": (2, 3),  # x, w, [bias]; attrs: stride, dilation, pads, depthwise, depth_multiplier
    "fc": (2, 3),  # x [N,K], w [Cout,K], [bias]
    "pool": (1, 1),  # attrs: mode max|avg, kernel, stride, pads, count_include_pad
    "act": (1, 1),  # attrs: fn relu|relu6|clip|tanh|sigmoid
    "add": (2, 2),
    "softmax": (1, 1),  # attrs: beta, log
    "reshape": (1, 1),  # attrs: shape (without batch)
    "transpose": (1, 1),  # attrs: perm (batch stays first)
    "pad": (1, 1),  # attrs: pads (top, left, bottom, right)
    "quantize": (1, 1),  # float -> int8 at the graph edge
    "dequantize": (1, 1),
}

# fused activations an op may carry in attrs["activation"]
ACTIVATIONS = ("none", "relu", "relu6", "clip")


@dataclass
class Tensor:
    """A value in the graph: an activation (data is None) or a constant."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    data: np.ndarray | None = None
    scale: np.ndarray | None = None  # float32, one per channel of `axis` or one value
    zero_point: np.ndarray | None = None  # int32, same length as scale
    axis: int | None = None  # quantized axis for per-channel tensors

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def quantized(self) -> bool:
        return self.scale is not None

    def qparams(self) -> tuple[float, int]:
        """Per-tensor (scale, zero_point); an error if the tensor is per-channel."""
        if self.scale is None or self.zero_point is None:
            raise EdgeconvError(f"tensor {self.name!r} has no quantization parameters")
        if self.scale.size != 1:
            raise EdgeconvError(f"tensor {self.name!r} is per-channel, not per-tensor")
        return float(self.scale[0]), int(self.zero_point[0])


@dataclass
class Op:
    kind: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""


@dataclass
class Graph:
    tensors: dict[str, Tensor]
    ops: list[Op]
    inputs: list[str]
    outputs: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def tensor(self, name: str) -> Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise EdgeconvError(f"graph has no tensor named {name!r}") from None

    @property
    def is_quantized(self) -> bool:
        return any(self.tensors[o].dtype == "int8" for op in self.ops for o in op.outputs)

    def producers(self) -> dict[str, Op]:
        return {out: op for op in self.ops for out in op.outputs}

    def consumers(self) -> dict[str, list[Op]]:
        users: dict[str, list[Op]] = {}
        for op in self.ops:
            for name in op.inputs:
                users.setdefault(name, []).append(op)
        return users

    def prune(self) -> None:
        """Drop ops and tensors that no graph output depends on."""
        needed = set(self.outputs)
        kept: list[Op] = []
        for op in reversed(self.ops):
            if any(o in needed for o in op.outputs):
                kept.append(op)
                needed.update(op.inputs)
        self.ops = kept[::-1]
        needed.update(self.inputs)
        self.tensors = {k: v for k, v in self.tensors.items() if k in needed}

    def validate(self) -> None:
        """Check the invariants every consumer relies on; raise on the first broken one."""
        known = set(self.inputs) | {n for n, t in self.tensors.items() if t.is_const}
        for name in self.inputs:
            self.tensor(name)
        for op in self.ops:
            if op.kind not in OP_ARITY:
                raise EdgeconvError(f"op {op.name!r}: unknown kind {op.kind!r}")
            lo, hi = OP_ARITY[op.kind]
            if not lo <= len(op.inputs) <= hi:
                raise EdgeconvError(
                    f"op {op.name!r} ({op.kind}) takes {lo}..{hi} inputs, has {len(op.inputs)}"
                )
            for name in op.inputs:
                if name not in known:
                    raise EdgeconvError(
                        f"op {op.name!r} reads {name!r} before it is produced (not topological)"
                    )
            for name in op.outputs:
                self.tensor(name)
                known.add(name)
        for name in self.outputs:
            if name not in known:
                raise EdgeconvError(f"graph output {name!r} is never produced")


def conv_output_size(
    size: int, kernel: int, stride: int, dilation: int, pad_a: int, pad_b: int
) -> int:
    """Output length of a conv/pool window along one axis (floor mode)."""
    return (size + pad_a + pad_b - dilation * (kernel - 1) - 1) // stride + 1


def same_pads(
    size: int, kernel: int, stride: int, dilation: int, upper: bool = True
) -> tuple[int, int]:
    """(before, after) padding of ONNX SAME_UPPER / SAME_LOWER and TFLite SAME."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    small, big = total // 2, total - total // 2
    return (small, big) if upper else (big, small)
