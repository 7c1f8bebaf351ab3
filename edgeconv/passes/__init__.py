"""Small graph rewrites, one job each, run after import so that every later stage
sees one canonical graph: BN merged into convs, activations fused into the op
before them, layout transposes before a Flatten folded into the FC weights.

Each pass mutates the graph in place and returns it.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Op

NHWC_TO_NCHW = (0, 3, 1, 2)
FUSABLE_ACTIVATIONS = ("relu", "relu6", "clip")


def _single_consumer(graph: Graph, tensor: str) -> Op | None:
    users = graph.consumers().get(tensor, [])
    if len(users) != 1 or tensor in graph.outputs:
        return None
    return users[0]


def fold_batchnorm(graph: Graph) -> Graph:
    """Merge a BatchNormalization (imported as a 1x1 depthwise 'batchnorm' conv) into the
    conv that feeds it, scaling that conv's output channels."""
    for bn in [op for op in graph.ops if op.attrs.get("batchnorm")]:
        producer = graph.producers().get(bn.inputs[0])
        if (
            producer is None
            or producer.kind != "conv"
            or producer.attrs.get("batchnorm")
            or producer.attrs.get("activation", "none") != "none"
            or _single_consumer(graph, bn.inputs[0]) is not bn
        ):
            continue
        gain = graph.tensors[bn.inputs[1]].data.reshape(-1)
        shift = graph.tensors[bn.inputs[2]].data.reshape(-1)
        w = graph.tensors[producer.inputs[1]]
        axis = 3 if producer.attrs["depthwise"] else 0
        shape = [1] * 4
        shape[axis] = -1
        w.data = (w.data * gain.reshape(shape)).astype(np.float32)
        if len(producer.inputs) == 3:
            b = graph.tensors[producer.inputs[2]]
            b.data = (b.data * gain + shift).astype(np.float32)
        else:
            name = f"{producer.outputs[0]}_bias"
            graph.tensors[name] = type(w)(name, shift.shape, "float32", shift.astype(np.float32))
            producer.inputs.append(name)
        old = producer.outputs[0]
        producer.outputs[0] = bn.outputs[0]
        graph.ops.remove(bn)
        for name in (old, *bn.inputs[1:]):
            graph.tensors.pop(name, None)
    return graph


def fuse_activation(graph: Graph) -> Graph:
    """Fold ReLU / ReLU6 / Clip into the conv, fc, pool or add before it (TFLite's
    fused_activation_function): in int8 it becomes a clamp, costing nothing."""
    for act in [
        op for op in graph.ops if op.kind == "act" and op.attrs["fn"] in FUSABLE_ACTIVATIONS
    ]:
        producer = graph.producers().get(act.inputs[0])
        if (
            producer is None
            or producer.kind not in ("conv", "fc", "pool", "add")
            or producer.attrs.get("activation", "none") != "none"
            or _single_consumer(graph, act.inputs[0]) is not act
        ):
            continue
        producer.attrs["activation"] = act.attrs["fn"]
        if act.attrs["fn"] == "clip":
            producer.attrs["clip"] = (act.attrs["lo"], act.attrs["hi"])
        old = producer.outputs[0]
        producer.outputs[0] = act.outputs[0]
        graph.ops.remove(act)
        graph.tensors.pop(old, None)
    return graph


def fold_transpose_into_fc(graph: Graph) -> Graph:
    """NHWC->NCHW transpose, then flatten, then FC: permute the FC weight columns instead,
    so the flatten reads NHWC memory directly and no data moves at run time."""
    for tr in [
        op for op in graph.ops if op.kind == "transpose" and op.attrs["perm"] == NHWC_TO_NCHW
    ]:
        flat = _single_consumer(graph, tr.outputs[0])
        if flat is None or flat.kind != "reshape" or len(flat.attrs["shape"]) != 1:
            continue
        users = graph.consumers().get(flat.outputs[0], [])
        if (
            not users
            or flat.outputs[0] in graph.outputs
            or any(u.kind != "fc" or u.inputs[0] != flat.outputs[0] for u in users)
        ):
            continue
        _, h, w, c = graph.tensors[tr.inputs[0]].shape
        for fc in users:
            wt = graph.tensors[fc.inputs[1]]
            m = wt.data.shape[0]
            wt.data = np.ascontiguousarray(
                wt.data.reshape(m, c, h, w).transpose(0, 2, 3, 1).reshape(m, -1)
            )
        graph.tensors.pop(tr.outputs[0], None)
        flat.inputs[0] = tr.inputs[0]
        graph.ops.remove(tr)
    return graph


def drop_noop_reshapes(graph: Graph) -> Graph:
    """Remove reshapes that do not change the shape, and merge reshape chains."""
    for op in list(graph.ops):
        if op.kind != "reshape":
            continue
        src = graph.tensors[op.inputs[0]]
        producer = graph.producers().get(op.inputs[0])
        if (
            producer is not None
            and producer.kind == "reshape"
            and _single_consumer(graph, op.inputs[0]) is op
        ):
            op.inputs[0] = producer.inputs[0]
            graph.ops.remove(producer)
            graph.tensors.pop(src.name, None)
            src = graph.tensors[op.inputs[0]]
        if (
            tuple(src.shape) == tuple(graph.tensors[op.outputs[0]].shape)
            and op.outputs[0] not in graph.outputs
        ):
            for user in graph.consumers().get(op.outputs[0], []):
                user.inputs = [src.name if i == op.outputs[0] else i for i in user.inputs]
            graph.tensors.pop(op.outputs[0], None)
            graph.ops.remove(op)
    return graph


def simplify(graph: Graph) -> Graph:
    """The standard clean-up after import, in dependency order."""
    for rewrite in (fold_batchnorm, fuse_activation, fold_transpose_into_fc, drop_noop_reshapes):
        rewrite(graph)
    graph.prune()
    graph.validate()
    return graph
