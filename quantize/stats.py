"""What one streaming calibration pass keeps: a histogram per activation and, for bias
correction, each conv/fc layer's mean input window. Nothing grows with the sample count."""

from __future__ import annotations

import numpy as np

from edgeconv.ir import Graph

from .observers import HistogramObserver

DEFAULT_BINS = 4096


def window_sums(op, x: np.ndarray, kernel: tuple[int, int]) -> np.ndarray:
    """Sum over batch and output positions of each conv input window element,
    [KH, KW, C] (zero padding included as the zeros it is), and the window count."""
    a = op.attrs
    top, left, bottom, right = a["pads"]
    sh, sw = a["stride"]
    dh, dw = a["dilation"]
    kh, kw = kernel
    n, h, w, c = x.shape
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0))) if any(a["pads"]) else x
    out = np.empty((kh, kw, c), np.float64)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            sl = xp[:, r0 : r0 + (oh - 1) * sh + 1 : sh, c0 : c0 + (ow - 1) * sw + 1 : sw, :]
            out[i, j] = sl.sum(axis=(0, 1, 2), dtype=np.float64)
    return out, n * oh * ow


class CalibrationStats:
    def __init__(self, graph: Graph, bins: int = DEFAULT_BINS, layer_means: bool = False):
        self.graph = graph
        self.bins = bins
        self.hists: dict[str, HistogramObserver] = {}
        self.samples = 0
        # input tensor name -> the conv/fc ops that read it (for the mean input windows)
        self._readers: dict[str, list] = {}
        self._sums: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}
        if layer_means:
            for op in graph.ops:
                if op.kind in ("conv", "fc"):
                    self._readers.setdefault(op.inputs[0], []).append(op)

    def observe(self, name: str, value: np.ndarray) -> None:
        if name == self.graph.inputs[0]:
            self.samples += int(value.shape[0])
        h = self.hists.get(name)
        if h is None:
            h = self.hists[name] = HistogramObserver(self.bins)
        h.update(name, value)
        for op in self._readers.get(name, ()):
            key = op.outputs[0]
            if op.kind == "fc":
                s, cnt = value.reshape(value.shape[0], -1).sum(axis=0, dtype=np.float64), len(value)
            else:
                w = self.graph.tensors[op.inputs[1]].data
                s, cnt = window_sums(op, value, w.shape[1:3])
            self._sums[key] = self._sums.get(key, 0.0) + s
            self._counts[key] = self._counts.get(key, 0) + cnt

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {name: h.range() for name, h in self.hists.items()}

    def input_means(self) -> dict[str, np.ndarray]:
        """Layer output name -> mean input window ([KH, KW, C] for conv, [K] for fc)."""
        return {k: self._sums[k] / max(self._counts[k], 1) for k in self._sums}
