"""Whole-model int8 execution: one compiled call per batch, no Python between layers.

At load time a chain of int8 ops (conv, depthwise conv, fully connected, pools, clamps,
reshape, transpose, pad) is turned into a *segment plan*, and the plan into the Python
source of a small module of ``@njit(cache=True)`` functions in which every shape, stride,
offset and quantization constant is a literal (per-layer specialisation). The source is
written once to a content-addressed file in the cache directory, so Numba's on-disk cache
works for it like for any module; ``edgeconv warmup MODEL`` fills that cache.

What the plan does, each change byte-identical to ``reference``:

- weights are packed once into the layout of the microkernel (``microkernel.py``), 16
  output channels per block, zero-padded so no remainder loop exists;
- the input zero point (and, for the VNNI path, the +128 that makes activations uint8)
  is folded into the bias: ``bias - (zp + 128) * sum(w)`` (modulo 2^32, like the C int32);
- activations live in preallocated per-thread buffers whose borders are filled with the
  zero point once, so convolution padding costs nothing per image;
- a ReLU/ReLU6/clip after a layer becomes part of that layer's clamp, and a non-overlapping
  max pool after a convolution is fused into it: the microkernel computes the window's
  pixels together and keeps their lane-wise maximum, which is requantized once. That
  equals requantize-then-pool because requantization is non-decreasing in the accumulator
  when the multiplier is >= 0, the shift <= 0 and the accumulator cannot wrap; the planner
  checks those bounds per layer and otherwise requantizes every pixel before the maximum;
- a batch runs image by image inside one compiled call (activations stay in L1), split
  over threads with ``prange`` when more than one thread is asked for.

Ops outside that set (softmax, tanh, logistic, add) end a segment and run on the per-op
kernels in between, so any int8 graph still runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit

from ..errors import EdgeconvError
from .microkernel import GROUP_BYTES, LANES, POOL_MAX_ACC, POOL_MAX_OUT, host_isa
from .requant import SHIFT_MAX, SHIFT_MIN

__all__ = ["build_segments", "cache_dir", "compiled_steps", "CompiledSegment", "retarget_asm"]

_MR = 4  # output pixels per microkernel tile along a row (unfused convolutions)
_MAX_FUSED_WINDOW = 16  # pool windows up to this many pixels are fused into the conv
_MAX_STATIC_GROUPS = 256  # reductions up to this many groups become straight-line code
_SLACK = 64  # bytes after every buffer: a group may read up to GS-1 bytes past a run
_SUPPORTED = ("conv", "fc", "pool", "act", "reshape", "transpose", "pad")
_INT_MODES = {"double": 0, "single": 1, "double-up": 2}  # codes of _rq_int


@dataclass(frozen=True)
class Options:
    """Switches that turn single optimisations off, to measure each (benchmarks/ablation.py);
    the defaults are what edgeconv runs. ``EDGECONV_ENGINE_OPTIONS`` may name any of
    ``nofuse``, ``split``, ``unspecialised``, ``fresh``, ``nopair``, ``nostatic``."""

    fuse: bool = True  # clamps and non-overlapping max pools fused into the layer before
    whole: bool = True  # a whole chain in one compiled call (else one call per op)
    specialise: bool = True  # shapes/offsets/constants as literals (else read at run time)
    prealloc: bool = True  # buffers allocated and their borders filled once (else per call)
    pair: bool = True  # layers with <= 8 output channels: two pixels per 16-lane vector
    static: bool = True  # group offsets as constants: the reduction is straight-line code

    @classmethod
    def from_env(cls) -> Options:
        names = {n.strip() for n in os.environ.get("EDGECONV_ENGINE_OPTIONS", "").split(",")}
        known = {"nofuse", "split", "unspecialised", "fresh", "nopair", "nostatic", ""}
        if names - known:
            raise EdgeconvError(f"EDGECONV_ENGINE_OPTIONS: unknown {sorted(names - known)}")
        return cls(
            fuse="nofuse" not in names,
            whole="split" not in names,
            specialise="unspecialised" not in names,
            prealloc="fresh" not in names,
            pair="nopair" not in names,
            static="nostatic" not in names,
        )

# ----------------------------------------------------------------------------------------
# Requantization helpers called from the generated code
# ----------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _w32(v):
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


@njit(cache=True, inline="always")
def _rq_int(acc, mult, shift, mode):
    """MultiplyByQuantizedMultiplier on one int32 accumulator, in int64, for the integer
    rounding modes: 0 double (TFLM), 1 single, 2 double-up (SRDHM, then ties toward +inf)."""
    a = np.int64(acc)
    q = np.int64(mult)
    s = np.int64(shift)
    if mode == 1:
        total = 31 - s
        return _w32((a * q + (np.int64(1) << (total - 1))) >> total)
    a = _w32(a << max(s, 0))
    right = max(-s, 0)
    # SRDHM: floor((a*q + 2^30) / 2^31); only INT32_MIN * INT32_MIN exceeds INT32_MAX
    high = min((a * q + (np.int64(1) << 30)) >> 31, np.int64(2147483647))
    if mode == 2:
        return (high + ((np.int64(1) << right) >> 1)) >> right
    mask = (np.int64(1) << right) - 1  # RoundingDivideByPOT: ties away from zero
    return (high >> right) + np.int64((high & mask) > (mask >> 1) + np.int64(high < 0))


@njit(cache=True, inline="always")
def rq_store(acc, a_off, n, p32, m_off, s_off, out_zp, lo, hi, mode, dst, d_off, b8):
    """dst[d_off+i] = clamp(requant(acc[a_off+i]) + out_zp) + b8 for i < n."""
    for i in range(n):
        v = _w32(_rq_int(acc[a_off + i], p32[m_off + i], p32[s_off + i], mode) + out_zp)
        dst[d_off + i] = min(max(v, lo), hi) + b8


# ----------------------------------------------------------------------------------------
# Plan
# ----------------------------------------------------------------------------------------


def compose_clamp(first: tuple[int, int], then: tuple[int, int]) -> tuple[int, int]:
    """The single clamp equal to clamping to ``first`` and then to ``then``."""
    (a, b), (c, d) = first, then
    if b < c:
        return c, c
    if d < a:
        return d, d
    return max(a, c), min(b, d)


def _dims3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Per-sample shape (batch dropped) as (H, W, C); lower ranks get leading 1s."""
    s = tuple(int(v) for v in shape[1:])
    if len(s) > 3:
        raise _Unsupported(f"rank {len(shape)} activation")
    return (1,) * (3 - len(s)) + s  # type: ignore[return-value]


class _Unsupported(Exception):
    """An op or parameter the compiled engine does not take (the per-op path runs it)."""


@dataclass
class Buf:
    """Where a tensor lives: the input array, the output array, or a scratch region."""

    kind: str  # "x" | "out" | "scratch"
    dims: tuple[int, int, int]
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    fill: int = 0  # int8 value of the border (the zero point)
    off: int = 0  # scratch offset
    alias: bool = False  # shares another buffer's bytes (a reshape): nothing to prefill

    @property
    def hp(self) -> int:
        return self.dims[0] + self.pads[0] + self.pads[2]

    @property
    def wp(self) -> int:
        return self.dims[1] + self.pads[1] + self.pads[3]

    @property
    def size(self) -> int:
        return self.hp * self.wp * self.dims[2]

    @property
    def dense(self) -> bool:
        return self.pads == (0, 0, 0, 0)

    @property
    def array(self) -> str:
        return {"x": "x", "out": "out", "scratch": "buf"}[self.kind]

    def base(self) -> str:
        return {"x": "xo", "out": "oo"}.get(self.kind, str(self.off))

    def index(self, y: str, x: str, c: str = "0") -> str:
        """Code for the flat index of interior element (y, x, c)."""
        t, left = self.pads[0], self.pads[1]
        return f"({self.base()} + (({y} + {t}) * {self.wp} + {x} + {left}) * {self.dims[2]} + {c})"


@dataclass
class Stage:
    kind: str  # copy | conv | dwconv | fc | maxpool | avgpool
    op: object
    src: str  # tensor names
    dst: str
    clamp: tuple[int, int] = (-128, 127)
    pool: object = None  # fused max pool op
    perm: tuple[int, int, int] | None = None  # copy: output axis i reads input axis perm[i]
    inner: tuple[int, int] = (0, 0)  # copy: destination offset (pad op)
    p: dict = field(default_factory=dict)


@dataclass
class SegmentPlan:
    isa: str
    src: str
    dst: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    stages: list[Stage]
    bufs: dict[str, Buf]
    scratch_size: int
    w8: np.ndarray
    p32: np.ndarray
    tab: np.ndarray
    acc_size: int
    pix_size: int
    source: str = ""
    consts: np.ndarray | None = None  # unspecialised code reads its constants from here
    options: Options = field(default_factory=Options)


class _Blobs:
    """Packed constants: int8 weights, int32 parameters, int32 group-offset tables."""

    def __init__(self):
        self.w8: list[np.ndarray] = []
        self.p32: list[np.ndarray] = []
        self.tab: list[np.ndarray] = []
        self.sizes = {"w8": 0, "p32": 0, "tab": 0}

    def add(self, kind: str, arr: np.ndarray, align: int = 16) -> int:
        parts = getattr(self, kind)
        off = self.sizes[kind]
        arr = np.ascontiguousarray(arr).reshape(-1)
        parts.append(arr)
        pad = (-arr.size) % align
        if pad:
            parts.append(np.zeros(pad, arr.dtype))
        self.sizes[kind] = off + arr.size + pad
        return off

    def arrays(self):
        def cat(parts, dtype):
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(LANES, dtype)

        return (
            cat(self.w8, np.int8),
            np.concatenate([cat(self.p32, np.int32), np.zeros(LANES, np.int32)]),
            cat(self.tab, np.int32),
        )


def _lanes(v: np.ndarray, n: int, pair: bool = False) -> np.ndarray:
    """Per-channel int32 values padded to whole 16-lane blocks (pair: channels 0-7 twice)."""
    out = np.zeros(-(-n // LANES) * LANES, np.int32)
    out[: v.size] = v
    if pair:
        out[LANES // 2 :] = out[: LANES // 2]
    return out


def _folded_bias(bias: np.ndarray, sums: np.ndarray, in_zp: int, offset: int) -> np.ndarray:
    v = bias.astype(np.int64) - (np.int64(in_zp) + offset) * sums
    return (((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)).astype(np.int32)


def _monotone(bias, w_abs_sum, mult, shift) -> bool:
    """Is requantize(acc) + zp, clamped, non-decreasing over every reachable accumulator?

    |x - in_zp| <= 255, so |acc| <= |bias| + 255 * sum|w| with no int32 wrap when that
    stays below 2^31 - 256; then with mult >= 0 and shift <= 0 every requantization step
    (SRDHM, rounding shift, single-rounding shift) is non-decreasing and |result| <= |acc|
    + 1, so adding the output zero point cannot wrap either.
    """
    bound = np.abs(bias.astype(np.int64)) + 255 * w_abs_sum
    return bool(np.all(mult >= 0) and np.all(shift <= 0) and np.all(bound < (1 << 31) - 256))


class _Planner:
    def __init__(self, graph, rounding: str, isa: str, options: Options = Options()):
        from ..runtime import _Planner as RuntimePlanner

        self.options = options

        self.g = graph
        self.rt = RuntimePlanner(graph, rounding)
        self.isa = isa
        self.gs = GROUP_BYTES[isa]
        self.offset = 128 if isa == "vnni512" else 0  # activations stored as int8 + offset
        self.blobs = _Blobs()
        self.acc_size = LANES * _MR
        self.pix_size = _MR

    # ---- parameters (derived exactly as the per-op runtime derives them)
    def dims(self, name: str) -> tuple[int, int, int]:
        return _dims3(self.g.tensor(name).shape)

    def conv_params(self, op):
        if len(op.inputs) < 3:
            raise _Unsupported("conv/fc without a bias tensor")
        if op.kind == "fc":
            part = "fc"
        else:
            part = "depthwise" if op.attrs.get("depthwise") else "conv"
        p, w, b = self.rt._conv_like(op, part)
        if p["rounding"] not in _INT_MODES:
            raise _Unsupported(f"rounding {p['rounding']!r}")
        if part == "depthwise" and w.shape[-1] >= 8:  # a profile may round blocks of 8 apart
            if self.rt._conv_like(op, "depthwise_blocks")[0]["rounding"] != p["rounding"]:
                raise _Unsupported("mixed depthwise rounding")
        shift = np.asarray(p["shift"], np.int64)
        if shift.min() < SHIFT_MIN or shift.max() > SHIFT_MAX:
            raise _Unsupported("shift out of range")
        if not -128 <= p["in_zp"] <= 127 or not -128 <= p["out_zp"] <= 127:
            raise _Unsupported("zero point out of range")
        if w.dtype != np.int8 or b.dtype != np.int32:
            raise _Unsupported("weights must be int8 and bias int32")
        return p, w, b

    def act_clamp(self, op) -> tuple[int, int]:
        fn = op.attrs["fn"]
        if fn not in ("relu", "relu6", "clip"):
            raise _Unsupported(f"activation {fn}")
        from ..qmath import activation_range

        s_in, zp_in = self.rt.q(op.inputs[0])
        return activation_range(fn, s_in, zp_in, (op.attrs.get("lo"), op.attrs.get("hi")))

    # ---- ops -> stages (fusion)
    def stages(self, ops) -> list[Stage]:
        out: list[Stage] = []
        for op in ops:
            prev = out[-1] if out else None
            k = op.kind
            if k == "act":
                lohi = self.act_clamp(op)
                fusable = ("conv", "dwconv", "fc", "maxpool", "copy")
                if self.options.fuse and prev is not None and prev.kind in fusable:
                    prev.clamp = compose_clamp(prev.clamp, lohi)
                    prev.dst = op.outputs[0]
                    continue
                out.append(Stage("copy", op, op.inputs[0], op.outputs[0], clamp=lohi))
            elif k == "conv":
                p, w, b = self.conv_params(op)
                kind = "dwconv" if op.attrs.get("depthwise") else "conv"
                clamp = (p["act_min"], p["act_max"])
                st = Stage(kind, op, op.inputs[0], op.outputs[0], clamp=clamp)
                st.p = dict(params=p, w=w, b=b)
                out.append(st)
            elif k == "fc":
                p, w, b = self.conv_params(op)
                clamp = (p["act_min"], p["act_max"])
                st = Stage("fc", op, op.inputs[0], op.outputs[0], clamp=clamp)
                st.p = dict(params=p, w=w, b=b)
                out.append(st)
            elif k == "pool":
                lohi = self.rt.act_range(op)
                mode = op.attrs["mode"]
                after_conv = prev is not None and prev.kind == "conv" and prev.pool is None
                if self.options.fuse and mode == "max" and after_conv:
                    if self._fusable_pool(op):
                        prev.pool = op
                        prev.clamp = compose_clamp(prev.clamp, lohi)
                        prev.dst = op.outputs[0]
                        continue
                kind = "maxpool" if mode == "max" else "avgpool"
                if kind == "avgpool":
                    self._check_avgpool(op)
                out.append(Stage(kind, op, op.inputs[0], op.outputs[0], clamp=lohi))
            elif k == "reshape":
                out.append(Stage("copy", op, op.inputs[0], op.outputs[0]))
            elif k == "transpose":
                out.append(Stage("copy", op, op.inputs[0], op.outputs[0], perm=self._perm3(op)))
            elif k == "pad":
                pads = tuple(op.attrs["pads"])
                if min(pads) < 0:
                    raise _Unsupported("negative pads")
                st = Stage("copy", op, op.inputs[0], op.outputs[0], inner=(pads[0], pads[1]))
                out.append(st)
            else:
                raise _Unsupported(k)
        return out

    def _fusable_pool(self, op) -> bool:
        a = op.attrs
        kh, kw = a["kernel"]
        return (
            tuple(a["stride"]) == (kh, kw)
            and tuple(a["pads"]) == (0, 0, 0, 0)
            and kh * kw <= _MAX_FUSED_WINDOW
        )

    def _check_avgpool(self, op):
        a = op.attrs
        if a.get("count_include_pad"):
            return
        h, w, _ = self.dims(op.inputs[0])
        (kh, kw), (sh, sw), pads = a["kernel"], a["stride"], a["pads"]
        oh, ow, _ = self.dims(op.outputs[0])
        for size, k, s, p, o in ((h, kh, sh, pads[0], oh), (w, kw, sw, pads[1], ow)):
            for i in range(o):
                y0 = i * s - p
                if min(k, size - y0) - max(0, -y0) <= 0:
                    raise _Unsupported("avg pool window without input pixels")

    def _perm3(self, op) -> tuple[int, int, int]:
        perm = tuple(op.attrs["perm"])
        r = len(perm)
        if perm[0] != 0 or r > 4:
            raise _Unsupported("transpose that moves the batch axis")
        lead = 3 - (r - 1)
        # axes of the 3-D view: leading 1-axes map to themselves
        return tuple(list(range(lead)) + [lead + p - 1 for p in perm[1:]])  # type: ignore

    # ---- placement
    def place(self, stages: list[Stage], src: str, dst: str) -> tuple[dict[str, Buf], int]:
        need: dict[str, tuple[tuple[int, int, int, int], int]] = {}
        for st in stages:
            if st.kind in ("conv", "dwconv"):
                zp = st.p["params"]["in_zp"]
                need[st.src] = (tuple(st.op.attrs["pads"]), zp)
        bufs: dict[str, Buf] = {src: Buf("x", self.dims(src))}
        size = 0

        def scratch(name, st):
            nonlocal size
            pads, fill = need.get(name, ((0, 0, 0, 0), 0))
            if st.op is not None and st.op.kind == "pad":  # the padded area holds the zp
                fill = self.rt.q(st.op.inputs[0])[1]
            b = Buf("scratch", self._dims(name), pads, fill, size)
            size += -(-(b.size + _SLACK) // 64) * 64
            return b

        # The first reader of the input must read a scratch copy (u8 conversion, padding).
        first = stages[0]
        if first.kind != "copy":
            st = Stage("copy", None, src, src + "#in")
            need[src + "#in"] = need.pop(src, ((0, 0, 0, 0), 0))
            first.src = src + "#in"
            stages.insert(0, st)
            self._dims_alias = {src + "#in": self.dims(src)}
        for st in stages:
            if st.dst == dst:
                bufs[st.dst] = Buf("out", self._dims(st.dst))
            elif (
                st.kind == "copy"
                and st.op is not None
                and st.op.kind == "reshape"
                and bufs[st.src].kind == "scratch"
                and bufs[st.src].dense
                and st.dst not in need
                and st.clamp == (-128, 127)
            ):
                b = bufs[st.src]
                bufs[st.dst] = Buf("scratch", self.dims(st.dst), off=b.off, alias=True)
                st.kind = "alias"
            else:
                bufs[st.dst] = scratch(st.dst, st)
        return bufs, size

    def _dims(self, name: str):
        alias = getattr(self, "_dims_alias", {})
        return alias[name] if name in alias else self.dims(name)


# ----------------------------------------------------------------------------------------
# Code generation
# ----------------------------------------------------------------------------------------


class _Code:
    def __init__(self, planner: _Planner, bufs: dict[str, Buf]):
        self.pl = planner
        self.bufs = bufs
        self.lines: list[str] = []
        self.tiles: dict[tuple, str] = {}  # tile parameters -> name in the generated module

    def emit(self, depth: int, line: str):
        # Op names from the model file reach comments here: a control character (a newline
        # above all) could end the comment and smuggle code into the generated module.
        line = "".join(ch if ch >= " " and ch != "\x7f" else "?" for ch in line)
        self.lines.append("    " * depth + line)

    def load(self, buf: Buf, idx: str) -> str:
        """Code for the int8 value at buf[idx], as an int32."""
        if buf.kind == "scratch" and self.pl.offset:
            return f"(np.int32({buf.array}[{idx}]) - {self.pl.offset})"
        return f"np.int32({buf.array}[{idx}])"

    def b8(self, buf: Buf) -> int:
        return self.pl.offset if buf.kind == "scratch" else 0

    def store(self, d: int, buf: Buf, idx: str, value: str):
        self.emit(d, f"{buf.array}[{idx}] = {value} + {self.b8(buf)}")

    def tile(self, mr: int, pool: int, mode: int, nstore: int, pair: bool = False,
             offsets: tuple[int, ...] | None = None) -> str:
        key = (mr, pool, mode, nstore, pair, offsets)
        if key not in self.tiles:
            self.tiles[key] = f"_t{len(self.tiles)}"
        return self.tiles[key]

    def tile_calls(self, d: int, st: Stage, consts, dst: Buf, mr: int, pool: int, cout: int,
                   d_expr: str, d_step: int, src_pix: str = "pix"):
        """Emit the block loop over 16-channel blocks: full blocks, then the remainder."""
        w_off, wblk, t_off, groups, b_off, m_off, s_off = consts
        pair = st.p.get("pair", False) and mr % 2 == 0  # weights packed for pairs
        offsets = st.p.get("offsets")  # constants for straight-line reductions, or None
        p = st.p["params"]
        mode = _INT_MODES[p["rounding"]]
        lo, hi = st.clamp
        full, rest = divmod(cout, LANES)
        tail = f"tab, {t_off}, {groups}, {p['out_zp']}, {lo}, {hi}, {self.b8(dst)})"
        calls = []
        if full == 1:
            calls.append(("0", LANES, None))
        elif full > 1:
            calls.append(("nb", LANES, f"range({full})"))
        if rest:
            calls.append((str(full), rest, None))
        for nb, nstore, loop in calls:
            ind = d
            if loop:
                self.emit(d, f"for nb in {loop}:")
                ind = d + 1
            name = self.tile(mr, pool, mode, nstore, pair, offsets)
            self.emit(ind, f"{name}({dst.array}, {d_expr.replace('CB', f'{nb} * 16')}, {d_step}, "
                           f"buf, {src_pix}, 0, w8, {w_off} + {nb} * {wblk}, p32, "
                           f"{b_off} + {nb} * 16, {m_off} + {nb} * 16, {s_off} + {nb} * 16, "
                           + tail)

    # ---- stages
    def stage(self, st: Stage):
        getattr(self, f"gen_{st.kind}")(st)

    def gen_alias(self, st: Stage):
        self.emit(1, f"# {st.op.kind} {st.op.name}: same bytes, new shape")

    def gen_copy(self, st: Stage):
        src, dst = self.bufs[st.src], self.bufs[st.dst]
        lo, hi = st.clamp
        h, w, c = src.dims
        label = st.op.kind if st.op is not None else "input"
        self.emit(1, f"# {label}: {src.dims} -> {dst.dims}")
        if st.op is not None and st.op.kind == "reshape":
            # reshape: the same element order, read densely
            assert src.dense
            H, W, C = dst.dims
            self.emit(1, "i = 0")
            self.emit(1, f"for yy in range({H}):")
            self.emit(2, f"for xx in range({W}):")
            self.emit(3, f"d = {dst.index('yy', 'xx')}")
            self.emit(3, f"for cc in range({C}):")
            v = self.load(src, f"{src.base()} + i")
            self.store(4, dst, "d + cc", f"min(max({v}, {lo}), {hi})")
            self.emit(4, "i += 1")
            return
        perm = st.perm or (0, 1, 2)
        names = ("yy", "xx", "cc")
        H, W, C = (src.dims[p] for p in perm)
        sidx = [None, None, None]
        for out_axis, in_axis in enumerate(perm):
            sidx[in_axis] = names[out_axis]
        dy, dx = st.inner
        if st.op is not None and st.op.kind == "pad" and dst.kind == "out":
            # the output array is not prefilled like scratch: write the padding too
            zp = self.pl.rt.q(st.op.inputs[0])[1]
            oh, ow, oc = dst.dims
            self.emit(1, f"for i in range({oh * ow * oc}):")
            self.emit(2, f"out[oo + i] = {zp}")
        self.emit(1, f"for yy in range({H}):")
        self.emit(2, f"for xx in range({W}):")
        self.emit(3, f"for cc in range({C}):")
        v = self.load(src, src.index(sidx[0], sidx[1], sidx[2]))
        d = dst.index(f"yy + {dy}", f"xx + {dx}", "cc")
        self.store(4, dst, d, f"min(max({v}, {lo}), {hi})")

    def _pack_runs(self, w_runs: np.ndarray, run_offsets: list[int], cout: int,
                   pair: bool = False):
        """w_runs [cout, nruns, L] -> (w8 offset, block stride, tab offset, groups)."""
        gs = self.pl.gs
        _, nruns, length = w_runs.shape
        groups = -(-length // gs)
        nb = -(-cout // LANES)
        packed = np.zeros((nb * LANES, nruns, groups * gs), np.int8)
        packed[:cout, :, :length] = w_runs
        if pair:  # channels 0-7 again in lanes 8-15: the second pixel of each vector
            packed[LANES // 2 :] = packed[: LANES // 2]
        # [nb, lanes, runs, groups, gs] -> [nb, runs, groups, lanes, gs]
        packed = packed.reshape(nb, LANES, nruns, groups, gs).transpose(0, 2, 3, 1, 4)
        w_off = self.pl.blobs.add("w8", packed, align=64)
        tab = np.array([r + g * gs for r in run_offsets for g in range(groups)], np.int32)
        t_off = self.pl.blobs.add("tab", tab)
        self._last_offsets = None
        if self.pl.options.static and tab.size <= _MAX_STATIC_GROUPS:
            self._last_offsets = tuple(int(v) for v in tab)
        return w_off, nruns * groups * LANES * gs, t_off, nruns * groups, int(tab.max()) + gs

    def _requant_consts(self, st: Stage, sums: np.ndarray, cout: int):
        p, b = st.p["params"], st.p["b"]
        pair = st.p.get("pair", False)
        bias = _folded_bias(b, sums, p["in_zp"], self.pl.offset)
        add = self.pl.blobs.add
        return (
            add("p32", _lanes(bias, cout, pair)),
            add("p32", _lanes(np.asarray(p["mult"], np.int32), cout, pair)),
            add("p32", _lanes(np.asarray(p["shift"], np.int32), cout, pair)),
        )

    def _rq_args(self, st: Stage, m_off: int, s_off: int, dst: Buf) -> str:  # depthwise
        p = st.p["params"]
        lo, hi = st.clamp
        mode = _INT_MODES[p["rounding"]]
        return f"p32, {m_off} + cb, {s_off} + cb, {p['out_zp']}, {lo}, {hi}, {mode}, {dst.array}"

    def gen_conv(self, st: Stage):
        op, src, dst = st.op, self.bufs[st.src], self.bufs[st.dst]
        w = st.p["w"]
        a = op.attrs
        cout, kh, kw, cin = w.shape
        (sh, sw), (dh, dw) = a["stride"], a["dilation"]
        _, ow_full, _ = self.pl.dims(op.outputs[0])
        oh_full = self.pl.dims(op.outputs[0])[0]
        assert src.dims[2] == cin and src.pads == tuple(a["pads"])
        wp = src.wp
        row = wp * cin
        if dw == 1:
            runs = w.reshape(cout, kh, 1, kw * cin).reshape(cout, kh, kw * cin)
            offs = [ky * dh * row for ky in range(kh)]
        else:
            runs = w.reshape(cout, kh * kw, cin)
            offs = [ky * dh * row + kx * dw * cin for ky in range(kh) for kx in range(kw)]
        st.p["pair"] = self.pl.options.pair and cout <= LANES // 2
        w_off, wblk, t_off, groups, reach = self._pack_runs(runs, offs, cout, st.p["pair"])
        st.p["offsets"] = self._last_offsets
        sums = w.reshape(cout, -1).astype(np.int64).sum(1)
        b_off, m_off, s_off = self._requant_consts(st, sums, cout)
        # every byte a tile reads must lie inside the source buffer (+ slack)
        last = ((oh_full - 1) * sh * wp + (ow_full - 1) * sw) * cin
        assert last + reach <= src.size + _SLACK, "conv reads past its buffer"
        self.emit(1, f"# conv {op.name}: {src.dims} -> {(oh_full, ow_full, cout)}"
                  f" k{kh}x{kw} s{sh}x{sw} d{dh}x{dw}, {groups} groups x {self.pl.gs} B")
        consts = (w_off, wblk, t_off, groups, b_off, m_off, s_off)
        if st.pool is not None:
            self._gen_conv_pool(st, src, dst, consts, cout, cin)
            return
        self.emit(1, f"for oy in range({oh_full}):")
        self.emit(2, f"rb = {src.off} + oy * {sh * row}")
        main = ow_full - ow_full % _MR
        chunks = []
        if main:
            chunks.append((f"range(0, {main}, {_MR})", _MR))
        if ow_full % _MR:
            chunks.append((f"range({main}, {main + 1})", ow_full % _MR))
        for rng, mr in chunks:
            self.emit(2, f"for ox in {rng}:")
            for m in range(mr):
                self.emit(3, f"pix[{m}] = rb + (ox + {m}) * {sw * cin}")
            self.tile_calls(3, st, consts, dst, mr, 0, cout, dst.index("oy", "ox", "CB"),
                            dst.dims[2])

    def _gen_conv_pool(self, st, src, dst, consts, cout, cin):
        op, pool = st.op, st.pool
        (sh, sw) = op.attrs["stride"]
        (pkh, pkw) = pool.attrs["kernel"]
        poh, pow_, _ = self.pl.dims(pool.outputs[0])
        wp = src.wp
        mr = pkh * pkw
        p, b = st.p["params"], st.p["b"]
        w_abs = np.abs(st.p["w"].reshape(cout, -1).astype(np.int64)).sum(1)
        mono = _monotone(b, w_abs, np.asarray(p["mult"]), np.asarray(p["shift"]))
        self.pl.pix_size = max(self.pl.pix_size, mr)
        self.emit(1, f"# + max pool {pool.name} {pkh}x{pkw}: requantize "
                     f"{'once per window (monotone)' if mono else 'per pixel, then max'}")
        self.emit(1, f"for py in range({poh}):")
        self.emit(2, f"for px in range({pow_}):")
        self.emit(3, f"b0 = {src.off} + (py * {pkh * sh * wp} + px * {pkw * sw}) * {cin}")
        m = 0
        for dy in range(pkh):
            for dx in range(pkw):
                self.emit(3, f"pix[{m}] = b0 + {(dy * sh * wp + dx * sw) * cin}")
                m += 1
        pool_mode = POOL_MAX_ACC if mono else POOL_MAX_OUT
        self.tile_calls(3, st, consts, dst, mr, pool_mode, cout, dst.index("py", "px", "CB"), 0)

    def gen_fc(self, st: Stage):
        op, src, dst = st.op, self.bufs[st.src], self.bufs[st.dst]
        w = st.p["w"]
        cout, k = w.shape
        assert src.dense and src.size == k, "fc input must be a dense vector"
        w_off, wblk, t_off, groups, reach = self._pack_runs(w.reshape(cout, 1, k), [0], cout)
        st.p["offsets"] = self._last_offsets
        assert reach <= src.size + _SLACK
        sums = w.astype(np.int64).sum(1)
        b_off, m_off, s_off = self._requant_consts(st, sums, cout)
        self.emit(1, f"# fc {op.name}: {k} -> {cout}")
        self.emit(1, f"pix[0] = {src.off}")
        consts = (w_off, wblk, t_off, groups, b_off, m_off, s_off)
        self.tile_calls(1, st, consts, dst, 1, 0, cout, dst.index("0", "0", "CB"), 0)

    def gen_dwconv(self, st: Stage):
        op, src, dst = st.op, self.bufs[st.src], self.bufs[st.dst]
        w = st.p["w"]  # [1, KH, KW, Cout]
        a = op.attrs
        _, kh, kw, cout = w.shape
        mult_d = int(a["depth_multiplier"])
        (sh, sw), (dh, dw) = a["stride"], a["dilation"]
        oh, ow, _ = self.pl.dims(op.outputs[0])
        cin = src.dims[2]
        assert cin * mult_d == cout
        w_off = self.pl.blobs.add("w8", w.reshape(-1), align=64)
        sums = w.reshape(-1, cout).astype(np.int64).sum(0)
        b_off, m_off, s_off = self._requant_consts(st, sums, cout)
        self.pl.acc_size = max(self.pl.acc_size, -(-cout // LANES) * LANES)
        wp = src.wp
        self.emit(1, f"# depthwise conv {op.name}: {src.dims} -> {(oh, ow, cout)} x{mult_d}")
        self.emit(1, f"for oy in range({oh}):")
        self.emit(2, f"for ox in range({ow}):")
        self.emit(3, f"for c in range({cout}):")
        self.emit(4, f"acc[c] = p32[{b_off} + c]")
        self.emit(3, f"for ky in range({kh}):")
        self.emit(4, f"for kx in range({kw}):")
        self.emit(5, f"s = {src.off} + ((oy * {sh} + ky * {dh}) * {wp} + ox * {sw} + kx * {dw}) "
                     f"* {cin}")
        self.emit(5, f"wo = {w_off} + (ky * {kw} + kx) * {cout}")
        if mult_d == 1:
            self.emit(5, f"for c in range({cout}):")
            self.emit(6, "acc[c] = np.int32(acc[c] + np.int32(buf[s + c]) * np.int32(w8[wo + c]))")
        else:
            self.emit(5, f"for ic in range({cin}):")
            self.emit(6, "xv = np.int32(buf[s + ic])")
            self.emit(6, f"for m in range({mult_d}):")
            self.emit(7, f"o = ic * {mult_d} + m")
            self.emit(7, "acc[o] = np.int32(acc[o] + xv * np.int32(w8[wo + o]))")
        self.emit(3, "cb = 0")
        d = dst.index("oy", "ox", "0")
        self.emit(3, f"_rq(acc, 0, {cout}, {self._rq_args(st, m_off, s_off, dst)}, {d}, "
                     f"{self.b8(dst)})")

    def _pool_loops(self, st: Stage):
        op, src = st.op, self.bufs[st.src]
        a = op.attrs
        (kh, kw), (sh, sw), pads = a["kernel"], a["stride"], a["pads"]
        oh, ow, c = self.pl.dims(op.outputs[0])
        h, w, _ = src.dims
        self.emit(1, f"for oy in range({oh}):")
        self.emit(2, f"y0 = oy * {sh} - {pads[0]}")
        self.emit(2, "ky0 = max(0, -y0)")
        self.emit(2, f"ky1 = min({kh}, {h} - y0)")
        self.emit(2, f"for ox in range({ow}):")
        self.emit(3, f"x0 = ox * {sw} - {pads[1]}")
        self.emit(3, "kx0 = max(0, -x0)")
        self.emit(3, f"kx1 = min({kw}, {w} - x0)")
        return kh, kw, c

    def gen_maxpool(self, st: Stage):
        src, dst = self.bufs[st.src], self.bufs[st.dst]
        lo, hi = st.clamp
        self.emit(1, f"# max pool {st.op.name}")
        kh, kw, c = self._pool_loops(st)
        self.emit(3, f"for ch in range({c}):")
        self.emit(4, "best = np.int32(-128)")  # TFLM starts from the int8 minimum
        self.emit(4, "for ky in range(ky0, ky1):")
        self.emit(5, "for kx in range(kx0, kx1):")
        self.emit(6, f"best = max(best, {self.load(src, src.index('y0 + ky', 'x0 + kx', 'ch'))})")
        self.store(4, dst, dst.index("oy", "ox", "ch"), f"min(max(best, {lo}), {hi})")

    def gen_avgpool(self, st: Stage):
        src, dst = self.bufs[st.src], self.bufs[st.dst]
        a = st.op.attrs
        lo, hi = st.clamp
        zp = int(self.pl.rt.q(st.op.inputs[0])[1])
        include = bool(a.get("count_include_pad"))
        self.emit(1, f"# avg pool {st.op.name}")
        kh, kw, c = self._pool_loops(st)
        self.emit(3, "count = max(0, ky1 - ky0) * max(0, kx1 - kx0)")
        self.emit(3, f"for ch in range({c}):")
        self.emit(4, "tot = np.int64(0)")
        self.emit(4, "for ky in range(ky0, ky1):")
        self.emit(5, "for kx in range(kx0, kx1):")
        self.emit(6, f"tot += {self.load(src, src.index('y0 + ky', 'x0 + kx', 'ch'))}")
        self.emit(4, "nn = count")
        if include:
            self.emit(4, f"tot += ({kh * kw} - count) * {zp}")
            self.emit(4, f"nn = {kh * kw}")
        self.emit(4, "half = nn // 2")
        self.emit(4, "if tot > 0:")
        self.emit(5, "r = (tot + half) // nn")
        self.emit(4, "else:")
        self.emit(5, "r = -((half - tot) // nn)")
        self.store(4, dst, dst.index("oy", "ox", "ch"), f"min(max(r, {lo}), {hi})")


_HEADER = '''"""Generated by edgeconv.kernels.compiled (codegen {codegen}) -- do not edit.

{summary}
"""
import numpy as np
from numba import njit, prange

from edgeconv.kernels.compiled import rq_store as _rq
from edgeconv.kernels.microkernel import tile as _tile

'''


def _codegen_version() -> str:
    """Hash of the code generator's own source: a change makes new files, never stale caches."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in ("compiled.py", "microkernel.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def _despecialise(lines: list[str]) -> tuple[list[str], np.ndarray]:
    """Every integer literal of the layer code read from an array at run time instead:
    the same loops without the compile-time shapes (for measuring what they bring)."""
    import re

    consts: list[int] = []

    def load(m):
        consts.append(int(m.group(0)))
        return f"kk[{len(consts) - 1}]"

    pattern = re.compile(r"(?<![\w.\[])\d+(?![\w.])")
    out = [ln if ln.lstrip().startswith("#") else pattern.sub(load, ln) for ln in lines]
    return out, np.array(consts or [0], np.int64)


def _generate(plan: SegmentPlan, code: _Code, x_size: int, out_size: int) -> str:
    kk = ""
    body = code.lines
    if not plan.options.specialise:
        body, plan.consts = _despecialise(body)
        kk = ", kk"
    lines = [_HEADER.format(codegen=_codegen_version(), summary=f"isa {plan.isa}")]
    for (mr, pool, mode, nstore, pair, offsets), name in code.tiles.items():
        lines.append(f"{name} = _tile({plan.isa!r}, {mr}, {pool}, {mode}, {nstore}, {pair}, "
                     f"{offsets!r})")
    lines.append("")
    lines.append("")
    lines.append("@njit(cache=True)")
    lines.append(f"def image(x, xo, out, oo, buf, w8, p32, tab, acc, pix{kk}):")
    lines.extend(body)
    lines.append("")
    lines.append("")
    for par in (False, True):
        lines.append("@njit(cache=True, parallel=True)" if par else "@njit(cache=True)")
        lines.append(f"def {'run_par' if par else 'run'}(x, out, buf, w8, p32, tab{kk}):")
        lines.append("    xf = x.reshape(-1)")
        lines.append("    of = out.reshape(-1)")
        lines.append("    n = x.shape[0]")
        if par:
            lines.append("    nt = buf.shape[0]")
            lines.append("    for t in prange(nt):")
            ind = "        "
            lines.append(f"{ind}bt = buf[t]")
            lines.append(f"{ind}lo = n * t // nt")
            lines.append(f"{ind}hi = n * (t + 1) // nt")
        else:
            ind = "    "
            lines.append(f"{ind}bt = buf[0]")
            lines.append(f"{ind}lo = 0")
            lines.append(f"{ind}hi = n")
        lines.append(f"{ind}acc = np.empty({plan.acc_size}, np.int32)")
        lines.append(f"{ind}pix = np.empty({plan.pix_size}, np.int64)")
        lines.append(f"{ind}for i in range(lo, hi):")
        lines.append(f"{ind}    image(xf, i * {x_size}, of, i * {out_size}, bt, w8, p32, tab, "
                     f"acc, pix{kk})")
        lines.append("")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------------------
# Source files and the module cache
# ----------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where generated kernel sources live (Numba caches them beside, in __pycache__):
    ``EDGECONV_CACHE_DIR``, else ``$XDG_CACHE_HOME/edgeconv``, else ``~/.cache/edgeconv``."""
    env = os.environ.get("EDGECONV_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgeconv"


_modules: dict[str, object] = {}
_lock = threading.Lock()


def _writable_dir() -> Path:
    d = cache_dir() / "kernels"
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return d
    except OSError:
        d = Path(tempfile.gettempdir()) / f"edgeconv-{os.getuid() if hasattr(os, 'getuid') else 0}"
        d.mkdir(parents=True, exist_ok=True)
        return d


_KEEP_FILES = 256  # generated modules kept in the cache folder (oldest go first)


def _prune(folder: Path, keep: Path) -> None:
    """Bound the cache: past _KEEP_FILES generated modules, delete the oldest half (and
    their Numba cache entries). Files in use by other processes stay importable (POSIX)."""
    try:
        files = sorted(folder.glob("edgeconv_gen_*.py"), key=lambda f: f.stat().st_mtime)
        if len(files) <= _KEEP_FILES:
            return
        for f in files[: len(files) - _KEEP_FILES // 2]:
            if f == keep:
                continue
            for entry in (folder / "__pycache__").glob(f"{f.stem}.*"):
                entry.unlink(missing_ok=True)
            f.unlink(missing_ok=True)
    except OSError:
        pass


def load_source(source: str):
    """Import generated source from a content-addressed file (written once, so its mtime,
    and with it Numba's cache index, stays valid)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:24]
    name = f"edgeconv_gen_{digest}"
    with _lock:
        if name in _modules:
            return _modules[name]
        for attempt in range(3):  # another process may prune the file between our steps
            try:
                module = _import_file(name, source)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        _modules[name] = module
        return module


def _same_file(path: Path, source: str) -> bool:
    try:
        return path.read_text() == source
    except OSError:
        return False


def _import_file(name: str, source: str):
    path = cache_dir() / "kernels" / f"{name}.py"
    if not _same_file(path, source):
        path = _writable_dir() / f"{name}.py"
        if not _same_file(path, source):
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(source)
            os.replace(tmp, path)
            _prune(path.parent, keep=path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------


class CompiledSegment:
    """A chain of ops compiled into one call: ``run(x_int8) -> y_int8`` for a batch."""

    def __init__(self, plan: SegmentPlan):
        self.plan = plan
        self.src, self.dst = plan.src, plan.dst
        self.module = load_source(plan.source)
        self.dtype = np.uint8 if plan.isa == "vnni512" else np.int8
        self._scratch = self._new_scratch(1)
        self._in_shape = plan.in_shape
        self._out_shape = plan.out_shape
        self._in_size = int(np.prod(plan.in_shape))
        self._extra = () if plan.consts is None else (plan.consts,)

    def _new_scratch(self, threads: int) -> np.ndarray:
        plan = self.plan
        buf = np.zeros((threads, plan.scratch_size + _SLACK), self.dtype)
        off = 128 if plan.isa == "vnni512" else 0
        for b in plan.bufs.values():
            if b.kind == "scratch" and not b.alias:
                buf[:, b.off : b.off + b.size] = np.array(b.fill + off).astype(self.dtype)
        return buf

    def warmup(self, threads: int = 1) -> None:
        x = np.zeros((max(threads, 1), *self._in_shape), np.int8)
        self.run(x, threads)

    def run(self, x: np.ndarray, threads: int = 1) -> np.ndarray:
        """x: int8 [N, *input shape] (C-contiguous or not); returns int8 [N, *output shape]."""
        n = x.shape[0] if x.ndim else 0
        if x.dtype != np.int8 or x.ndim == 0 or x.size != n * self._in_size:
            raise EdgeconvError(
                f"compiled segment {self.src!r}: expected int8 [N, {self._in_shape}], "
                f"got {x.dtype} {list(x.shape)}"
            )
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        out = np.empty((n, *self._out_shape), np.int8)
        p = self.plan
        if threads > 1 and n > 1:
            t = min(threads, n)
            if self._scratch.shape[0] < t or not p.options.prealloc:
                self._scratch = self._new_scratch(t)
            self.module.run_par(x, out, self._scratch[:t], p.w8, p.p32, p.tab, *self._extra)
        else:
            if not p.options.prealloc:
                self._scratch = self._new_scratch(1)
            self.module.run(x, out, self._scratch, p.w8, p.p32, p.tab, *self._extra)
        return out


def _chains(graph) -> list[list]:
    """Split graph.ops into runs where each op reads only the previous op's output (which
    nothing else reads and which is not a graph output)."""
    users = graph.consumers()
    outputs = set(graph.outputs)
    runs: list[list] = []
    for op in graph.ops:
        prev = runs[-1][-1] if runs and runs[-1] else None
        chained = (
            prev is not None
            and op.kind in _SUPPORTED
            and prev.kind in _SUPPORTED
            and op.inputs[0] == prev.outputs[0]
            and len(users.get(prev.outputs[0], [])) == 1
            and prev.outputs[0] not in outputs
        )
        if chained:
            runs[-1].append(op)
        else:
            runs.append([op])
    return runs


def plan_segment(graph, ops, rounding: str, isa: str, options: Options = Options()) -> SegmentPlan:
    planner = _Planner(graph, rounding, isa, options)
    src, dst = ops[0].inputs[0], ops[-1].outputs[0]
    for name in (src, dst):
        t = graph.tensor(name)
        if t.dtype != "int8":
            raise _Unsupported(f"{name} is {t.dtype}")
    stages = planner.stages(ops)
    if not stages:
        raise _Unsupported("empty segment")
    bufs, size = planner.place(stages, src, dst)
    code = _Code(planner, bufs)
    for st in stages:
        code.stage(st)
    w8, p32, tab = planner.blobs.arrays()
    in_shape = tuple(int(v) for v in graph.tensor(src).shape[1:])
    out_shape = tuple(int(v) for v in graph.tensor(dst).shape[1:])
    plan = SegmentPlan(
        isa, src, dst, in_shape, out_shape, stages, bufs, size, w8, p32, tab,
        planner.acc_size, planner.pix_size,
    )
    plan.options = options
    plan.source = _generate(plan, code, int(np.prod(in_shape)), int(np.prod(out_shape)))
    return plan


def build_segments(
    graph, rounding: str = "double", isa: str | None = None, options: Options | None = None
) -> list:
    """graph.ops as a list of CompiledSegment (for the chains the engine takes) and op
    indices (for the rest, to run on the per-op kernels)."""
    isa = isa or host_isa()
    options = options or Options.from_env()
    index = {id(op): i for i, op in enumerate(graph.ops)}
    items: list = []
    runs = _chains(graph)
    if not options.whole:
        runs = [[op] for run in runs for op in run]
    for run in runs:
        if run[0].kind not in _SUPPORTED:
            items.extend(index[id(op)] for op in run)
            continue
        try:
            plan = plan_segment(graph, run, rounding, isa, options)
            seg = CompiledSegment(plan)
        except _Unsupported:
            items.extend(index[id(op)] for op in run)
            continue
        except Exception as e:  # noqa: BLE001 - never worse than the per-op kernels
            import warnings

            warnings.warn(
                f"edgeconv: could not build the compiled engine for {run[0].name!r}..."
                f"{run[-1].name!r} ({type(e).__name__}: {str(e)[:200]}); running op by op",
                RuntimeWarning,
                stacklevel=2,
            )
            items.extend(index[id(op)] for op in run)
            continue
        seg.op_indices = [index[id(op)] for op in run]
        items.append(seg)
    return items


def compiled_steps(model, steps: list) -> list:
    """The runtime's per-op ``steps`` with every compiled chain replaced by one step."""
    out = []
    for item in build_segments(model.graph, model.rounding):
        if isinstance(item, CompiledSegment):
            out.append(_segment_step(model, item, [steps[i] for i in item.op_indices]))
        else:
            out.append(steps[item])
    return out


def _segment_step(model, seg: CompiledSegment, per_op: list):
    """One step for a compiled chain. Should Numba/LLVM fail to build the generated module
    (an old Numba on some board), the chain runs on the per-op kernels from then on, with a
    warning: slower, never wrong."""
    src, dst = seg.src, seg.dst

    def step(env):
        if step.fell_back:
            for s in per_op:
                s(env)
            return
        try:
            env[dst] = seg.run(env[src], model.threads)
        except EdgeconvError:
            raise
        except Exception as e:  # noqa: BLE001 - any compile failure: take the per-op path
            import warnings

            warnings.warn(
                f"edgeconv: the compiled engine failed for {seg.src!r} -> {seg.dst!r} "
                f"({type(e).__name__}: {str(e)[:200]}); running it op by op instead",
                RuntimeWarning,
                stacklevel=2,
            )
            step.fell_back = True
            for s in per_op:
                s(env)

    step.segment = seg
    step.fell_back = False
    return step


def retarget_asm(llvm_ir: str, triple: str, cpu: str, features: str = "") -> str:
    """Assembly of LLVM IR (as Numba emitted it for this host) for another target, e.g.
    ``aarch64-unknown-linux-gnu`` / ``cortex-a72``: how the generated code looks on a Pi."""
    import re

    import llvmlite.binding as ll

    ll.initialize_all_targets()
    ll.initialize_all_asmprinters()
    text = re.sub(r"^target (datalayout|triple) = .*$", "", llvm_ir, flags=re.M)
    # x86-only intrinsics the optimizer introduced (the runtime's atomic refcount decrement):
    # replace with the generic atomic they stand for, so the IR is valid for any target
    count = iter(range(1 << 30))

    def generic_atomic(m):
        ind, res, ptr_, n = m.groups()
        k = next(count)
        return (f"{ind}%ec.old.{k} = atomicrmw sub ptr {ptr_}, i64 {n} seq_cst\n"
                f"{ind}%ec.z.{k} = icmp eq i64 %ec.old.{k}, {n}\n"
                f"{ind}{res} = zext i1 %ec.z.{k} to i8")

    text = re.sub(
        r"^(\s*)(%[\w.]+) = (?:tail )?call i8 @llvm\.x86\.atomic\.sub\.cc\.i64\("
        r"ptr (?:nonnull )?(%[\w.]+), i64 (\d+), i32 \d+\)",
        generic_atomic,
        text,
        flags=re.M,
    )
    text = re.sub(r"^declare .*@llvm\.x86\..*$", "", text, flags=re.M)
    text = re.sub(r'"(target-cpu|target-features|tune-cpu|prefer-vector-width)"="[^"]*"', "", text)
    mod = ll.parse_assembly(text)
    target = ll.Target.from_triple(triple)
    tm = target.create_target_machine(cpu=cpu, features=features, opt=3)
    mod.triple = triple
    mod.data_layout = str(tm.target_data)
    mod.verify()
    pto = ll.create_pipeline_tuning_options(speed_level=3)
    pb = ll.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return tm.emit_assembly(mod)
