"""Lower an int8 graph to a list of C kernel calls and place every activation in one
static arena, before anything runs.

Lowering turns each IR op into a *step* (one call into the C runtime) with all its
constants derived exactly as ``edgeconv.runtime`` derives them, so the C code and the
Numba kernels compute the same bytes:

- ``reshape`` is free: its output is a second name for its input's bytes (NHWC data is
  C-ordered, so a reshape never moves anything);
- a conv whose only consumer is a max pool is fused with it (``conv_maxpool``): each
  conv value is max-ed straight into the pool outputs whose window contains it, so the
  conv output never exists and conv values no window reads are never computed;
- element-wise steps (clamp, lookup table, softmax, same-shape add) may write over their
  input when that input is read by nobody later ("in place").

Memory plan. The graph input stays in the caller's buffer and the graph output is
written straight into the caller's output buffer; every other activation lives in
one arena. Tensors that share bytes (reshape aliases, in-place chains) form a *group*;
a group is live from the step that first writes it to the last step that reads it
(inclusive, so a step's inputs and outputs never overlap unless in place). Offsets are
chosen by greedy first-fit in decreasing size (TFLM's GreedyMemoryPlanner heuristic),
also tried in two other orders, keeping the smallest arena; the result is compared
with the lower bound max_step(sum of live bytes), which it reaches on the models we
ship. Everything here is pure Python: no compiler is needed to know the RAM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeconv.errors import EdgeconvError
from edgeconv.ir import Graph, Op
from edgeconv.qmath import activation_range

IN, OUT = "input", "output"  # the two caller-owned storages


@dataclass
class Step:
    """One call into the C runtime."""

    kind: str  # conv, dwconv, conv_maxpool, dwconv_maxpool, fc, maxpool, avgpool, clamp,
    #            lookup, softmax, add, pad, transpose, copy
    name: str  # the IR op name(s) it comes from
    inputs: list[str]  # activation tensors read
    output: str  # activation tensor written
    params: dict[str, Any] = field(default_factory=dict)  # scalar C struct fields
    consts: dict[str, np.ndarray] = field(default_factory=dict)  # arrays for flash
    inplace: bool = False  # may write over inputs[0]
    macs: int = 0


@dataclass
class Buffer:
    """One group of tensors sharing storage."""

    id: int
    nbytes: int
    first: int  # first step writing it
    last: int  # last step reading it
    tensors: list[str]
    storage: str = "arena"  # "arena", IN or OUT
    offset: int = -1  # in the arena


@dataclass
class CPlan:
    graph: Graph
    rounding: str
    steps: list[Step]
    buffers: list[Buffer]
    tensor_buffer: dict[str, int]  # tensor name -> buffer id
    arena_bytes: int
    lower_bound_bytes: int
    strategy: str
    input_name: str
    output_name: str
    input_bytes: int
    output_bytes: int

    def buffer_of(self, tensor: str) -> Buffer:
        return self.buffers[self.tensor_buffer[tensor]]

    def step_peaks(self) -> list[dict]:
        """Per step: arena bytes live while it runs (its inputs, outputs and everything
        kept for later steps), and the caller's input/output buffers beside them."""
        rows = []
        for i, s in enumerate(self.steps):
            live = [b for b in self.buffers if b.storage == "arena" and b.first <= i <= b.last]
            rows.append(
                {
                    "step": i,
                    "name": s.name,
                    "kernel": s.kind,
                    "output_shape": list(self.graph.tensors[s.output].shape),
                    "arena_live_bytes": sum(b.nbytes for b in live),
                    "macs": s.macs,
                }
            )
        return rows

    @property
    def const_bytes(self) -> int:
        return sum(int(a.nbytes) for s in self.steps for a in s.consts.values())


def _nbytes(graph: Graph, name: str) -> int:
    t = graph.tensors[name]
    return int(np.prod(t.shape[1:], dtype=np.int64)) * np.dtype(t.dtype).itemsize


# ------------------------------------------------------------------------------ lowering


class _Lowering:
    def __init__(self, graph: Graph, rounding: str, fuse: bool):
        from edgeconv.runtime import _Planner  # the runtime's constant derivation

        self.g = graph
        self.rounding = rounding
        self.fuse = fuse
        self.rt = _Planner(graph, rounding)
        self.steps: list[Step] = []
        self.alias: dict[str, str] = {}  # reshape output -> its input

    def q(self, name: str) -> tuple[float, int]:
        return self.g.tensor(name).qparams()

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.g.tensors[name].shape)

    def fail(self, op: Op, why: str) -> EdgeconvError:
        return EdgeconvError(f"C export: op {op.name or op.outputs[0]!r} ({op.kind}): {why}")

    def nhwc(self, op: Op, name: str) -> tuple[int, int, int]:
        shp = self.shape(name)
        if len(shp) != 4 or shp[0] != 1:
            raise self.fail(op, f"expects an NHWC tensor with batch 1, {name!r} is {list(shp)}")
        return shp[1], shp[2], shp[3]

    # ---- ops
    def run(self) -> list[Step]:
        g = self.g
        for name in g.inputs + g.outputs:
            if g.tensors[name].dtype != "int8":
                raise EdgeconvError(
                    f"C export needs an int8 model; {name!r} is {g.tensors[name].dtype} "
                    "(run `edgeconv quantize` first)"
                )
        consumers = g.consumers()
        fused_pools: set[int] = set()
        for op in g.ops:
            if id(op) in fused_pools:
                continue
            for out in op.outputs:
                if g.tensors[out].dtype != "int8":
                    raise self.fail(op, f"output {out!r} is {g.tensors[out].dtype}, not int8")
            if op.kind == "conv" and self.fuse:
                users = consumers.get(op.outputs[0], [])
                nxt = users[0] if len(users) == 1 else None
                if (
                    nxt is not None
                    and nxt.kind == "pool"
                    and nxt.attrs["mode"] == "max"
                    and op.outputs[0] not in g.outputs
                ):
                    self.steps.append(self.conv(op, pool=nxt))
                    fused_pools.add(id(nxt))
                    continue
            handler = getattr(self, f"op_{op.kind}", None)
            if handler is None:
                raise self.fail(op, "no C kernel for this op kind")
            step = handler(op)
            if step is not None:
                self.steps.append(step)
        return self.steps

    def op_reshape(self, op: Op) -> None:
        self.alias[op.outputs[0]] = op.inputs[0]
        return None

    def conv_params(self, op: Op) -> tuple[dict, dict]:
        from edgeconv.runtime import _multipliers

        g = self.g
        a = op.attrs
        x, y = op.inputs[0], op.outputs[0]
        w = g.tensors[op.inputs[1]]
        depthwise = bool(a.get("depthwise"))
        h, wd, c = self.nhwc(op, x)
        oh, ow, oc = self.nhwc(op, y)
        cout = w.shape[3] if depthwise else w.shape[0]
        if cout != oc:
            raise self.fail(op, f"weights give {cout} output channels, output has {oc}")
        s_in, zp_in = self.q(x)
        s_out, zp_out = self.q(y)
        mult, shift = _multipliers(s_in, w.scale, s_out, cout)
        lo, hi = self.rt.act_range(op)
        wq = np.ascontiguousarray(w.data, dtype=np.int8)
        ksum = (
            wq.astype(np.int64).sum(axis=(0, 1, 2))
            if depthwise
            else wq.astype(np.int64).reshape(cout, -1).sum(axis=1)
        )
        consts = {
            "weights": wq,
            "bias": _fold_bias(self.bias(op, cout), -zp_in, ksum),
            "kernel_sum": ksum.astype(np.int32),
            "mult": np.ascontiguousarray(mult, dtype=np.int32),
            "shift": np.ascontiguousarray(shift, dtype=np.int32),
        }
        stride, dil, pads = tuple(a["stride"]), tuple(a["dilation"]), tuple(a["pads"])
        params = dict(
            in_h=h, in_w=wd, in_c=c, out_h=oh, out_w=ow, out_c=oc,
            k_h=int(w.shape[1]), k_w=int(w.shape[2]),
            stride_h=stride[0], stride_w=stride[1], dil_h=dil[0], dil_w=dil[1],
            pad_top=pads[0], pad_left=pads[1],
            depth_multiplier=int(a.get("depth_multiplier", 1)) if depthwise else 1,
            in_offset=-zp_in, out_zp=zp_out, act_min=lo, act_max=hi,
        )  # fmt: skip
        per_out = w.shape[1] * w.shape[2] * (1 if depthwise else c)
        return params, consts | {"_macs": oh * ow * oc * per_out}

    def bias(self, op: Op, cout: int) -> np.ndarray:
        if len(op.inputs) > 2:
            b = np.asarray(self.g.tensors[op.inputs[2]].data)
            if b.shape != (cout,):
                raise self.fail(op, f"bias has shape {list(b.shape)}, expected [{cout}]")
            return b.astype(np.int64)
        return np.zeros(cout, dtype=np.int64)

    def pool_params(self, op: Op) -> dict:
        a = op.attrs
        h, w, c = self.nhwc(op, op.inputs[0])
        oh, ow, oc = self.nhwc(op, op.outputs[0])
        if self.q(op.inputs[0]) != self.q(op.outputs[0]):
            raise self.fail(op, "pool input and output must share scale and zero point")
        lo, hi = self.rt.act_range(op)
        k, s, p = tuple(a["kernel"]), tuple(a["stride"]), tuple(a["pads"])
        return dict(
            in_h=h, in_w=w, c=c, out_h=oh, out_w=ow, k_h=k[0], k_w=k[1],
            stride_h=s[0], stride_w=s[1], pad_top=p[0], pad_left=p[1],
            act_min=lo, act_max=hi,
            count_include_pad=int(bool(a.get("count_include_pad"))),
            zp=self.q(op.inputs[0])[1],
        )  # fmt: skip

    def conv(self, op: Op, pool: Op | None = None) -> Step:
        params, consts = self.conv_params(op)
        macs = consts.pop("_macs")
        kind = "dwconv" if op.attrs.get("depthwise") else "conv"
        if pool is None:
            return Step(kind, op.name, [op.inputs[0]], op.outputs[0], params, consts, macs=macs)
        pp = self.pool_params(pool)
        conv_out_macs_per_value = macs // max(
            params["out_h"] * params["out_w"] * params["out_c"], 1
        )
        # MACs actually done: only conv rows/columns some pool window reads
        rows = _covered(params["out_h"], pp["pad_top"], pp["k_h"], pp["stride_h"], pp["out_h"])
        cols = _covered(params["out_w"], pp["pad_left"], pp["k_w"], pp["stride_w"], pp["out_w"])
        step = Step(
            f"{kind}_maxpool",
            f"{op.name} + {pool.name}",
            [op.inputs[0]],
            pool.outputs[0],
            params,
            consts,
            macs=rows * cols * params["out_c"] * conv_out_macs_per_value,
        )
        step.params["pool"] = pp
        return step

    def op_conv(self, op: Op) -> Step:
        return self.conv(op)

    def op_fc(self, op: Op) -> Step:
        from edgeconv.runtime import _multipliers

        g = self.g
        x, y = op.inputs[0], op.outputs[0]
        w = g.tensors[op.inputs[1]]
        xs, ys = self.shape(x), self.shape(y)
        cout, k = int(w.shape[0]), int(w.shape[1])
        if xs[-1] != k or ys[-1] != cout:
            raise self.fail(op, f"shapes {list(xs)} x {list(w.shape)} -> {list(ys)} disagree")
        rows = int(np.prod(xs[:-1], dtype=np.int64))
        s_in, zp_in = self.q(x)
        s_out, zp_out = self.q(y)
        mult, shift = _multipliers(s_in, w.scale, s_out, cout)
        lo, hi = self.rt.act_range(op)
        wq = np.ascontiguousarray(w.data, dtype=np.int8)
        consts = {
            "weights": wq,
            "bias": _fold_bias(self.bias(op, cout), -zp_in, wq.astype(np.int64).sum(axis=1)),
            "mult": np.ascontiguousarray(mult, dtype=np.int32),
            "shift": np.ascontiguousarray(shift, dtype=np.int32),
        }
        params = dict(
            rows=rows, in_len=k, out_len=cout, in_offset=-zp_in, out_zp=zp_out,
            act_min=lo, act_max=hi,
        )  # fmt: skip
        return Step("fc", op.name, [x], y, params, consts, macs=rows * cout * k)

    def op_pool(self, op: Op) -> Step:
        pp = self.pool_params(op)
        if op.attrs["mode"] == "avg" and not pp["count_include_pad"]:
            for axis, n, k, s, p in (
                ("height", pp["in_h"], pp["k_h"], pp["stride_h"], pp["pad_top"]),
                ("width", pp["in_w"], pp["k_w"], pp["stride_w"], pp["pad_left"]),
            ):
                out_n = pp["out_h"] if axis == "height" else pp["out_w"]
                for o in range(out_n):
                    start = o * s - p
                    if min(start + k, n) - max(start, 0) <= 0:
                        raise self.fail(op, f"an avg-pool window along {axis} has no input pixel")
        kind = "maxpool" if op.attrs["mode"] == "max" else "avgpool"
        return Step(kind, op.name, [op.inputs[0]], op.outputs[0], pp)

    def op_act(self, op: Op) -> Step:
        from edgeconv import kernels

        fn = op.attrs["fn"]
        x, y = op.inputs[0], op.outputs[0]
        s_in, zp_in = self.q(x)
        n = _nbytes(self.g, y)
        if fn in ("relu", "relu6", "clip"):
            lo, hi = activation_range(fn, s_in, zp_in, (op.attrs.get("lo"), op.attrs.get("hi")))
            return Step("clamp", op.name, [x], y, dict(n=n, lo=lo, hi=hi), inplace=True)
        if fn in ("tanh", "sigmoid"):
            prep = kernels.prepare_tanh if fn == "tanh" else kernels.prepare_logistic
            table = np.ascontiguousarray(prep(s_in, zp_in).table, dtype=np.int8)
            return Step("lookup", op.name, [x], y, dict(n=n), {"table": table}, inplace=True)
        raise self.fail(op, f"activation {fn!r} has no C kernel")

    def op_softmax(self, op: Op) -> Step:
        from edgeconv import kernels

        if op.attrs.get("log"):
            raise self.fail(op, "log-softmax has no C kernel (use softmax or argmax)")
        x, y = op.inputs[0], op.outputs[0]
        shp = self.shape(x)
        depth = shp[-1]
        if depth >= 512:
            raise self.fail(
                op, f"softmax over {depth} values: TFLM's int8 softmax supports fewer than 512"
            )
        p = kernels.prepare_softmax(self.q(x)[0], float(op.attrs.get("beta", 1.0)))
        params = dict(
            rows=int(np.prod(shp[1:-1], dtype=np.int64)), depth=depth,
            input_multiplier=p.input_multiplier, input_left_shift=p.input_left_shift,
            diff_min=p.diff_min,
        )  # fmt: skip
        return Step("softmax", op.name, [x], y, params, inplace=True)

    def op_add(self, op: Op) -> Step:
        from edgeconv import kernels

        a, b = op.inputs
        y = op.outputs[0]
        sa, za = self.q(a)
        sb, zb = self.q(b)
        so, zo = self.q(y)
        p = kernels.prepare_add(sa, za, sb, zb, so, zo)
        lo, hi = self.rt.act_range(op)
        out_shape = self.shape(y)
        if len(out_shape) > 4:
            raise self.fail(op, f"add of rank {len(out_shape)} tensors (C kernel: up to 4)")
        try:
            bshape = np.broadcast_shapes(self.shape(a), self.shape(b))
        except ValueError:
            raise self.fail(op, "input shapes do not broadcast") from None
        if tuple(bshape) != out_shape:
            raise self.fail(op, f"output shape {list(out_shape)} != broadcast {list(bshape)}")
        params = dict(
            shape=_pad4(out_shape),
            a_stride=_bcast_strides(self.shape(a), out_shape),
            b_stride=_bcast_strides(self.shape(b), out_shape),
            a_offset=p.input1_offset, a_mult=p.input1_multiplier, a_shift=p.input1_shift,
            b_offset=p.input2_offset, b_mult=p.input2_multiplier, b_shift=p.input2_shift,
            out_offset=p.output_offset, out_mult=p.output_multiplier, out_shift=p.output_shift,
            left_shift=p.left_shift, act_min=lo, act_max=hi,
        )  # fmt: skip
        inplace = self.shape(a) == out_shape
        return Step("add", op.name, [a, b], y, params, inplace=inplace)

    def op_pad(self, op: Op) -> Step:
        h, w, c = self.nhwc(op, op.inputs[0])
        top, left, bottom, right = (int(v) for v in op.attrs["pads"])
        params = dict(
            in_h=h, in_w=w, c=c, pad_top=top, pad_left=left, pad_bottom=bottom,
            pad_right=right, value=self.q(op.inputs[0])[1],
        )  # fmt: skip
        return Step("pad", op.name, [op.inputs[0]], op.outputs[0], params)

    def op_transpose(self, op: Op) -> Step:
        perm = [int(p) for p in op.attrs["perm"]]
        in_shape = self.shape(op.inputs[0])
        if len(in_shape) > 6 or sorted(perm) != list(range(len(in_shape))):
            raise self.fail(op, f"perm {perm} for a rank-{len(in_shape)} tensor")
        strides = [int(np.prod(in_shape[d + 1 :], dtype=np.int64)) for d in range(len(in_shape))]
        params = dict(
            rank=len(perm),
            out_shape=[in_shape[p] for p in perm],
            in_stride=[strides[p] for p in perm],
        )
        return Step("transpose", op.name, [op.inputs[0]], op.outputs[0], params)


def _wrap32(v: np.ndarray) -> np.ndarray:
    return ((v + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _fold_bias(bias: np.ndarray, in_offset: int, kernel_sum: np.ndarray) -> np.ndarray:
    """bias + in_offset * sum(w) as the int32 the C accumulator starts from: then a whole
    window needs only sum(w * x). Modulo 2^32, like the accumulator itself."""
    return _wrap32(bias.astype(np.int64) + in_offset * kernel_sum.astype(np.int64)).astype(np.int32)


def _covered(n: int, pad: int, k: int, stride: int, n_out: int) -> int:
    """How many of n conv positions some pool window (of n_out) contains."""
    hit = np.zeros(n, dtype=bool)
    for o in range(n_out):
        hit[max(o * stride - pad, 0) : max(o * stride - pad + k, 0)] = True
    return int(hit.sum())


def _pad4(shape: tuple[int, ...]) -> list[int]:
    return [1] * (4 - len(shape)) + list(shape)


def _bcast_strides(shape: tuple[int, ...], out: tuple[int, ...]) -> list[int]:
    s = _pad4(shape)
    o = _pad4(out)
    strides, acc = [0] * 4, 1
    for d in range(3, -1, -1):
        strides[d] = 0 if (s[d] == 1 and o[d] != 1) else acc
        acc *= s[d]
    return strides


# ------------------------------------------------------------------------------ placement


def _place(buffers: list[Buffer], order: list[Buffer]) -> int:
    """First fit: each buffer at the lowest offset clear of every placed buffer it is
    live together with. Returns the arena size."""
    placed: list[Buffer] = []
    for b in order:
        clashes = sorted(
            (p.offset, p.offset + p.nbytes)
            for p in placed
            if p.first <= b.last and b.first <= p.last and p.nbytes
        )
        offset = 0
        for lo, hi in clashes:
            if offset + b.nbytes <= lo:
                break
            offset = max(offset, hi)
        b.offset = offset
        placed.append(b)
    return max((b.offset + b.nbytes for b in buffers), default=0)


def _lower_bound(buffers: list[Buffer], n_steps: int) -> int:
    return max(
        (sum(b.nbytes for b in buffers if b.first <= i <= b.last) for i in range(n_steps)),
        default=0,
    )


C_ROUNDING_MODES = ("double", "single")


def plan_c(graph: Graph, rounding: str = "double", *, fuse: bool = True) -> CPlan:
    """Lower `graph` (int8) to C steps and place every activation; raises EdgeconvError
    for anything the C runtime cannot run."""
    from edgeconv.kernels.requant import rounding_code

    if rounding not in C_ROUNDING_MODES:
        raise EdgeconvError(
            f"the C runtime implements rounding modes {', '.join(C_ROUNDING_MODES)}; "
            f"--rounding {rounding} (a TFLite/XNNPACK interpreter mode) cannot be exported to C"
        )
    rounding_code(rounding)
    graph.validate()
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise EdgeconvError(
            f"C export supports one input and one output; the model has "
            f"{len(graph.inputs)} and {len(graph.outputs)}"
        )
    low = _Lowering(graph, rounding, fuse)
    steps = low.run()
    inp, out = graph.inputs[0], graph.outputs[0]

    def root(name: str) -> str:
        while name in low.alias:
            name = low.alias[name]
        return name

    if root(out) == inp or not steps:
        # the output is the input's bytes (a pure reshape model): copy them
        steps.append(Step("copy", "copy", [root(out)], out, dict(n=_nbytes(graph, out))))
        low.alias.pop(out, None)

    # union-find over tensors: reshape aliases first, in-place merges below
    parent: dict[str, str] = {}

    def find(t: str) -> str:
        parent.setdefault(t, t)
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra

    for a, b in low.alias.items():
        union(b, a)

    n = len(steps)
    produced: dict[str, int] = {}
    last_read: dict[str, int] = {}
    for i, s in enumerate(steps):
        produced[s.output] = i
        for t in s.inputs:
            last_read[t] = i
    for t in [inp]:
        produced[t] = -1
    last_read[out] = n  # the caller reads the output after the last step

    def group_members(r: str) -> list[str]:
        return [t for t in parent if find(t) == r]

    for t in list(produced) + list(last_read):
        find(t)

    def group_last(r: str) -> int:
        return max(last_read.get(t, produced.get(t, -1)) for t in group_members(r))

    # in-place: the output joins its input's group when nobody reads that group later
    for i, s in enumerate(steps):
        if not s.inplace:
            continue
        src = find(s.inputs[0])
        if src == find(inp) or group_last(src) != i:
            continue
        if _nbytes(graph, s.inputs[0]) != _nbytes(graph, s.output):
            continue
        if len(s.inputs) > 1 and find(s.inputs[1]) == src:
            continue
        union(s.output, s.inputs[0])

    groups: dict[str, list[str]] = {}
    for t in parent:
        groups.setdefault(find(t), []).append(t)
    buffers: list[Buffer] = []
    tensor_buffer: dict[str, int] = {}
    for members in groups.values():
        first = min(produced.get(t, n) for t in members)
        last = max(last_read.get(t, produced.get(t, -1)) for t in members)
        nbytes = max(_nbytes(graph, t) for t in members)
        storage = "arena"
        if inp in members:
            storage = IN
        elif out in members:
            storage = OUT
        b = Buffer(len(buffers), nbytes, first, last, sorted(members), storage)
        buffers.append(b)
        for t in members:
            tensor_buffer[t] = b.id

    arena = [b for b in buffers if b.storage == "arena"]
    orders = {
        "greedy by size": sorted(arena, key=lambda b: (-b.nbytes, b.first, b.id)),
        "greedy by lifetime x size": sorted(
            arena, key=lambda b: (-(b.last - b.first + 1) * b.nbytes, b.first, b.id)
        ),
        "in schedule order": sorted(arena, key=lambda b: (b.first, -b.nbytes, b.id)),
    }
    best, best_size = None, None
    for label, order in orders.items():
        size = _place(arena, order)
        if best_size is None or size < best_size:
            best, best_size = label, size
            offsets = {b.id: b.offset for b in arena}
    for b in arena:
        b.offset = offsets[b.id]
    _check_plan(arena)
    return CPlan(
        graph=graph,
        rounding=rounding,
        steps=steps,
        buffers=buffers,
        tensor_buffer=tensor_buffer,
        arena_bytes=int(best_size or 0),
        lower_bound_bytes=_lower_bound(arena, n),
        strategy=best or "empty",
        input_name=inp,
        output_name=out,
        input_bytes=_nbytes(graph, inp),
        output_bytes=_nbytes(graph, out),
    )


def _check_plan(arena: list[Buffer]) -> None:
    """No two buffers that are live at the same step may share a byte."""
    for i, a in enumerate(arena):
        for b in arena[i + 1 :]:
            if a.first <= b.last and b.first <= a.last and a.nbytes and b.nbytes:
                if a.offset < b.offset + b.nbytes and b.offset < a.offset + a.nbytes:
                    raise AssertionError(f"memory plan overlaps buffers {a} and {b}")
