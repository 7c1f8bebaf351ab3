"""The per-layer quantization report: how far each int8 activation is from the float
model's, layer by layer, and which layer loses the most.

For every activation of the int8 model the float model also makes (matched by tensor
name) it accumulates, over batches (so memory does not grow with the sample count):

- SQNR (dB) of the dequantized int8 values against the float values, end to end (the
  error the int8 model has accumulated up to that tensor), and *alone*: the op run by
  itself on its float inputs quantized with their own parameters, which is the error the
  layer adds by itself. The worst layer is the one with the lowest SQNR alone.
- cosine similarity and max absolute error (end to end), scale and zero point, and the
  clipping fraction: float values beyond the int8 range by more than half a step.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field

import numpy as np

from edgeconv.float_runtime import run_graph
from edgeconv.ir import Graph

HIST_BINS = 128  # two int8 levels per bin


@dataclass
class _Acc:
    n: int = 0
    ff: float = 0.0  # sum f^2
    qq: float = 0.0  # sum d^2
    fq: float = 0.0  # sum f d
    ee: float = 0.0  # sum (f - d)^2, end to end
    ee_alone: float = 0.0  # sum (f - d_alone)^2
    max_err: float = 0.0
    clipped: int = 0
    below: int = 0
    above: int = 0
    hist_f: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, np.int64))
    hist_q: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, np.int64))


def _db(signal: float, noise: float) -> float:
    if noise <= 0.0:
        return float("inf")
    if signal <= 0.0:
        return float("-inf")
    return float(10.0 * np.log10(signal / noise))


@dataclass
class QuantReport:
    rows: list[dict]
    n: int
    worst: dict | None
    histograms: dict[str, dict] = field(default_factory=dict)

    def as_dict(self) -> dict:
        def clean(v):
            if isinstance(v, float) and not np.isfinite(v):
                return None if np.isnan(v) else ("inf" if v > 0 else "-inf")
            return v

        rows = [{k: clean(v) for k, v in r.items()} for r in self.rows]
        worst = None if self.worst is None else {k: clean(v) for k, v in self.worst.items()}
        return {"n": self.n, "layers": rows, "worst_layer": worst}

    def text(self) -> str:
        head = (
            f"{'#':>3} {'op':<8} {'tensor':<28} {'scale':>10} {'zp':>5} {'clip %':>7} "
            f"{'SQNR dB':>8} {'alone dB':>8} {'cosine':>8} {'max|err|':>10}"
        )
        lines = [head, "-" * len(head)]
        for r in self.rows:
            t = r["tensor"] if len(r["tensor"]) <= 28 else "..." + r["tensor"][-25:]
            lines.append(
                f"{r['index']:>3} {r['op']:<8} {t:<28} {r['scale']:>10.4g} "
                f"{r['zero_point']:>5} {r['clip_fraction'] * 100:>7.3f} "
                f"{_fmt_db(r['sqnr_db']):>8} {_fmt_db(r['sqnr_alone_db']):>8} "
                f"{r['cosine']:>8.5f} {r['max_abs_error']:>10.4g}"
            )
        if self.worst is not None:
            w = self.worst
            lines.append(
                f"worst layer: {w['name'] or w['tensor']} ({w['op']}, output {w['tensor']}): "
                f"SQNR alone {_fmt_db(w['sqnr_alone_db'])} dB, end to end "
                f"{_fmt_db(w['sqnr_db'])} dB, clipping {w['clip_fraction'] * 100:.3f} %"
            )
        lines.append(f"({self.n} samples)")
        return "\n".join(lines)

    def html(self, title: str = "edgeconv quantization report") -> str:
        from .png import histogram_png

        cols = [
            ("#", "index"),
            ("op", "op"),
            ("layer", "name"),
            ("tensor", "tensor"),
            ("method", "method"),
            ("scale", "scale"),
            ("zero point", "zero_point"),
            ("clip %", "clip_fraction"),
            ("SQNR dB", "sqnr_db"),
            ("SQNR alone dB", "sqnr_alone_db"),
            ("cosine", "cosine"),
            ("max |err|", "max_abs_error"),
        ]

        def cell(key, v):
            if key == "clip_fraction":
                return f"{v * 100:.3f}"
            if key in ("sqnr_db", "sqnr_alone_db"):
                return _fmt_db(v)
            if key == "cosine":
                return f"{v:.5f}"
            if isinstance(v, float):
                return f"{v:.5g}"
            return html.escape(str(v if v is not None else ""))

        worst_t = None if self.worst is None else self.worst["tensor"]
        out = [
            "<!DOCTYPE html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(title)}</title><style>",
            "body{font-family:sans-serif;margin:2em;color:#222}"
            "table{border-collapse:collapse;font-size:14px}"
            "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
            "td:nth-child(2),td:nth-child(3),td:nth-child(4),td:nth-child(5){text-align:left}"
            "tr.worst{background:#fde2e2}.fig{display:inline-block;margin:10px;"
            "vertical-align:top;font-size:13px}.k{display:inline-block;width:12px;height:12px}",
            "</style></head><body>",
            f"<h1>{html.escape(title)}</h1>",
            f"<p>{self.n} samples. SQNR end to end: dequantized int8 activation against the "
            "float model's; SQNR alone: the op run by itself on its float inputs quantized. "
            "Clip: float values beyond the int8 range by more than half a step.</p>",
        ]
        if self.worst is not None:
            w = self.worst
            out.append(
                f"<p><b>Worst layer:</b> {html.escape(w['name'] or w['tensor'])} ({w['op']}, "
                f"output {html.escape(w['tensor'])}), SQNR alone "
                f"{_fmt_db(w['sqnr_alone_db'])} dB.</p>"
            )
        out.append("<table><tr>" + "".join(f"<th>{h}</th>" for h, _ in cols) + "</tr>")
        for r in self.rows:
            cls = " class='worst'" if r["tensor"] == worst_t else ""
            out.append(
                f"<tr{cls}>" + "".join(f"<td>{cell(k, r.get(k))}</td>" for _, k in cols) + "</tr>"
            )
        out.append("</table><h2>Histograms</h2><p>")
        for rgb, label in (
            ((120, 160, 215), "float values"),
            ((220, 110, 20), "dequantized int8 values"),
            ((200, 30, 30), "float values outside the int8 range"),
        ):
            out.append(f"<span class='k' style='background:rgb{rgb}'></span> {label} &nbsp; ")
        out.append("(log scale of counts)</p>")
        for r in self.rows:
            h = self.histograms.get(r["tensor"])
            if h is None:
                continue
            png = histogram_png(h["float"], h["int8"], h["below"], h["above"])
            b64 = base64.b64encode(png).decode("ascii")
            out.append(
                f"<div class='fig'><img alt='histogram of {html.escape(r['tensor'])}' "
                f"src='data:image/png;base64,{b64}'><br>#{r['index']} {r['op']} "
                f"{html.escape(r['tensor'])}<br>range [{h['lo']:.4g}, {h['hi']:.4g}], "
                f"SQNR {_fmt_db(r['sqnr_db'])} dB</div>"
            )
        out.append(
            "<script type='application/json' id='report-data'>"
            + html.escape(json.dumps(self.as_dict()), quote=False)
            + "</script></body></html>"
        )
        return "\n".join(out)


def _fmt_db(v: float) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.2f}"


def _method(op, name: str, methods: dict, default: str) -> str:
    """How the tensor got its parameters: its calibration method, or fixed / shared."""
    from .ptq import _fixed_qparams, _shares_qparams

    if op is not None and _fixed_qparams(op) is not None:
        return "fixed"
    if op is not None and _shares_qparams(op):
        return "shared"
    return methods.get(name, default)


def layer_report(float_graph: Graph, int8_model, x: np.ndarray, batch: int = 256) -> QuantReport:
    """Compare an int8 model (edgeconv.Model) with its float graph on samples `x`
    (shaped as the model's input; float values, as the float model takes them)."""
    from edgeconv import kernels
    from edgeconv.data import fit_samples

    g = int8_model.graph
    x = fit_samples(np.asarray(x), int8_model.input_shape)
    ops = list(enumerate(g.ops))
    tensors = [(None, g.inputs[0])] + [(i, op.outputs[0]) for i, op in ops]
    acc: dict[str, _Acc] = {}
    qp = {name: g.tensor(name).qparams() for _, name in tensors}
    for start in range(0, len(x), batch):
        chunk = np.asarray(x[start : start + batch], np.float32)
        fvals: dict[str, np.ndarray] = {}
        run_graph(float_graph, {float_graph.inputs[0]: chunk}, fvals.__setitem__)
        qvals = int8_model.trace(chunk)
        for i, name in tensors:
            if name not in fvals or name not in qvals:
                continue
            f = fvals[name].astype(np.float64).reshape(-1)
            s, zp = qp[name]
            raw = qvals[name].reshape(-1)
            d = (raw.astype(np.float64) - zp) * s
            if i is None:
                alone = d
            else:
                op = g.ops[i]
                env = {  # the op's activation inputs: float values quantized as the op expects
                    n: kernels.quantize(fvals[n].astype(np.float32), *g.tensor(n).qparams())
                    for n in op.inputs
                    if n in fvals
                }
                alone = (int8_model.run_op(i, env).reshape(-1).astype(np.float64) - zp) * s
            a = acc.setdefault(name, _Acc())
            err = f - d
            a.n += f.size
            a.ff += float(f @ f)
            a.qq += float(d @ d)
            a.fq += float(f @ d)
            a.ee += float(err @ err)
            ea = f - alone
            a.ee_alone += float(ea @ ea)
            a.max_err = max(a.max_err, float(np.abs(err).max(initial=0.0)))
            level = np.floor(f / s + 0.5) + zp + 128  # the int8 level each float value rounds to
            lo_mask, hi_mask = level < 0, level > 255
            a.below += int(lo_mask.sum())
            a.above += int(hi_mask.sum())
            inside = level[~(lo_mask | hi_mask)].astype(np.int64)
            a.hist_f += np.bincount(inside // 2, minlength=HIST_BINS)[:HIST_BINS]
            a.hist_q += np.bincount((raw.astype(np.int64) + 128) // 2, minlength=HIST_BINS)
    methods = g.meta.get("quantization", {}).get("methods", {})
    default_method = g.meta.get("quantization", {}).get("calibration", "")
    rows, hists = [], {}
    for i, name in tensors:
        a = acc.get(name)
        if a is None:
            continue
        s, zp = qp[name]
        op = g.ops[i] if i is not None else None
        denom = np.sqrt(a.ff) * np.sqrt(a.qq)
        cosine = float(a.fq / denom) if denom > 0 else (1.0 if a.ff == a.qq else 0.0)
        rows.append(
            {
                "index": -1 if i is None else i,
                "op": "input" if op is None else op.kind,
                "name": "" if op is None else op.name,
                "tensor": name,
                "method": _method(op, name, methods, default_method),
                "scale": float(s),
                "zero_point": int(zp),
                "clip_fraction": (a.below + a.above) / max(a.n, 1),
                "sqnr_db": _db(a.ff, a.ee),
                "sqnr_alone_db": _db(a.ff, a.ee_alone),
                "cosine": cosine,
                "max_abs_error": a.max_err,
                "values": a.n,
            }
        )
        hists[name] = {
            "float": a.hist_f,
            "int8": a.hist_q,
            "below": a.below,
            "above": a.above,
            "lo": (-128 - zp) * s,
            "hi": (127 - zp) * s,
        }
    worst = min(rows, key=lambda r: r["sqnr_alone_db"]) if rows else None
    return QuantReport(rows, int(len(x)), worst, hists)
