"""Per-layer facts a deployer asks first: shapes, parameters, MACs, bytes, qparams."""

from __future__ import annotations

import numpy as np

from .ir import Graph, Op


def op_macs(graph: Graph, op: Op) -> int:
    out = graph.tensors[op.outputs[0]].shape
    if op.kind == "conv":
        w = graph.tensors[op.inputs[1]].shape
        per_output = w[1] * w[2] * (1 if op.attrs["depthwise"] else w[3])
        return int(np.prod(out[1:])) * per_output
    if op.kind == "fc":
        return int(np.prod(graph.tensors[op.inputs[1]].shape))
    return 0


def _fmt_q(graph: Graph, name: str) -> str | None:
    t = graph.tensors[name]
    if t.scale is None:
        return None
    if t.scale.size == 1:
        return f"s={float(t.scale[0]):.6g} zp={int(t.zero_point[0])}"
    return f"per-channel[{t.scale.size}] s={float(t.scale.min()):.3g}..{float(t.scale.max()):.3g}"


def layer_rows(graph: Graph) -> list[dict]:
    rows = []
    for op in graph.ops:
        consts = [graph.tensors[i] for i in op.inputs if graph.tensors[i].is_const]
        params = sum(int(t.data.size) for t in consts)
        nbytes = sum(int(t.data.nbytes) for t in consts)
        kind = op.kind
        if op.kind == "conv" and op.attrs.get("depthwise"):
            kind = "depthwise_conv"
        elif op.kind in ("pool", "act"):
            kind = f"{op.attrs.get('mode') or op.attrs.get('fn')}_{op.kind}"
        if op.attrs.get("activation", "none") != "none":
            kind += f"+{op.attrs['activation']}"
        rows.append(
            {
                "name": op.name or op.outputs[0],
                "op": kind,
                "output_shape": list(graph.tensors[op.outputs[0]].shape),
                "dtype": graph.tensors[op.outputs[0]].dtype,
                "qparams": _fmt_q(graph, op.outputs[0]),
                "params": params,
                "param_bytes": nbytes,
                "macs": op_macs(graph, op),
            }
        )
    return rows


def totals(graph: Graph) -> dict:
    rows = layer_rows(graph)
    largest = max(
        (
            int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize
            for t in graph.tensors.values()
            if not t.is_const
        ),
        default=0,
    )
    return {
        "layer_count": len(rows),
        "params": sum(r["params"] for r in rows),
        "param_bytes": sum(r["param_bytes"] for r in rows),
        "macs": sum(r["macs"] for r in rows),
        "largest_activation_bytes": largest,
    }
