"""Calibration methods: from a tensor's streaming histogram to the real range [lo, hi]
that its int8 scale and zero point are derived from.

Every method only picks a range; ``choose_activation_qparams`` (TFLite's rule) turns the
range into (scale, zero_point). So a method can change scales and zero points, never
the kernel arithmetic: the int8 model runs on the same kernels whatever method chose it.

- ``minmax``: the exact observed min and max (TFLite's calibrator, the default).
- ``percentile``: the p-th and (100-p)-th percentiles of the values (p configurable).
- ``mse``: the range whose int8 quantization has the least expected squared error over
  the histogram (rounding error inside the range plus clipping error outside it).
- ``entropy``: TensorRT's KL-divergence threshold search on the magnitude histogram.
"""

from __future__ import annotations

import numpy as np

from edgeconv.errors import EdgeconvError

from .observers import HistogramObserver

METHODS = ("minmax", "percentile", "mse", "entropy")
DEFAULT_PERCENTILE = 99.99


def _qparams(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised choose_activation_qparams: scale as float32, zp half away from zero."""
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    hi = np.where(hi - lo <= 0.0, 1.0, hi)
    scale = ((hi - lo) / 255.0).astype(np.float32).astype(np.float64)
    z = -128.0 - lo / scale
    zp = np.clip(np.sign(z) * np.floor(np.abs(z) + 0.5), -128, 127)
    return scale, zp


def quantization_mse(hist: HistogramObserver, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Expected squared int8 error of each candidate range [lo[i], hi[i]] over the
    histogram (values stand at their bin centres; exact zeros are always exact)."""
    lo, hi = np.atleast_1d(lo).astype(np.float64), np.atleast_1d(hi).astype(np.float64)
    scale, zp = _qparams(lo, hi)
    c = hist.centers
    counts = hist.counts.copy()
    # exact zeros cost nothing whatever the range (0 is always representable); take them
    # out of the bin that holds 0 so they do not count as that bin's centre
    zbin = int(np.floor((0.0 - hist.start) / hist.width)) if hist.width else -1
    if 0 <= zbin < hist.bins:
        counts[zbin] = max(counts[zbin] - hist.zeros, 0.0)
    keep = counts > 0
    c, counts = c[keep], counts[keep]
    out = np.empty(len(lo))
    for start in range(0, len(lo), 64):  # bound the [candidates, bins] temporaries
        s = scale[start : start + 64, None]
        z = zp[start : start + 64, None]
        q = np.clip(np.floor(np.abs(c / s) + 0.5) * np.sign(c) + z, -128, 127)
        err = (q - z) * s - c
        out[start : start + 64] = (err * err) @ counts
    return out / max(hist.n, 1)


def range_minmax(hist) -> tuple[float, float]:
    return float(hist.lo), float(hist.hi)


def _quantile(hist: HistogramObserver, q: float) -> float:
    """Value below which a fraction q of the samples lie (linear inside a bin)."""
    cdf = np.cumsum(hist.counts)
    total = cdf[-1]
    if total <= 0:
        return 0.0
    target = q * total
    i = int(np.searchsorted(cdf, target, side="left"))
    i = min(i, hist.bins - 1)
    before = cdf[i - 1] if i else 0.0
    frac = (target - before) / hist.counts[i] if hist.counts[i] else 0.0
    return float(hist.start + hist.width * (i + min(max(frac, 0.0), 1.0)))


def range_percentile(hist: HistogramObserver, percentile: float = DEFAULT_PERCENTILE):
    if not 50.0 < percentile <= 100.0:
        raise EdgeconvError(f"percentile must be in (50, 100], got {percentile}")
    if percentile == 100.0:
        return range_minmax(hist)
    p = percentile / 100.0
    lo = max(_quantile(hist, 1.0 - p), hist.lo)
    hi = min(_quantile(hist, p), hist.hi)
    return lo, hi


def range_mse(hist: HistogramObserver, steps: int = 48) -> tuple[float, float]:
    """Grid search over the clipped fraction of each side, then a finer pass around the
    best; a side that is all >= 0 (or <= 0) keeps its exact bound at 0."""
    lo0, hi0 = min(float(hist.lo), 0.0), max(float(hist.hi), 0.0)
    if hi0 - lo0 <= 0.0:
        return range_minmax(hist)
    fr = np.linspace(1.0 / steps, 1.0, steps)

    def search(lo_f, hi_f):
        lo_c = lo0 * lo_f if lo0 < 0 else np.zeros(1)
        hi_c = hi0 * hi_f if hi0 > 0 else np.zeros(1)
        lg, hg = np.meshgrid(lo_c, hi_c, indexing="ij")
        lg, hg = lg.reshape(-1), hg.reshape(-1)
        err = quantization_mse(hist, lg, hg)
        k = int(np.argmin(err))
        return lg[k], hg[k], err[k]

    lo, hi, _ = search(fr, fr)
    # refine: +-1 coarse step around the best fractions, 16 points each side
    lo_f0 = lo / lo0 if lo0 < 0 else 1.0
    hi_f0 = hi / hi0 if hi0 > 0 else 1.0
    d = 1.0 / steps

    def around(f0):
        return np.clip(np.linspace(f0 - d, f0 + d, 17), d / 4, 1.0)

    lo, hi, _ = search(around(lo_f0), around(hi_f0))
    return float(lo), float(hi)


def _kl_threshold(hist_abs: np.ndarray, levels: int) -> int:
    """TensorRT's calibration: the number of magnitude bins i whose clipped reference
    distribution P (outliers folded into bin i-1) is closest in KL divergence to its
    quantization Q onto `levels` levels. Returns i (threshold = i * bin width)."""
    nbins = len(hist_abs)
    if nbins <= levels:
        return nbins
    tail = np.concatenate([np.cumsum(hist_abs[::-1])[::-1], [0.0]])  # tail[i] = sum(h[i:])
    best_i, best_kl = nbins, np.inf
    for i in range(levels, nbins + 1):
        p = hist_abs[:i].astype(np.float64).copy()
        p[i - 1] += tail[i]
        src = hist_abs[:i]
        # merge the i bins into `levels` chunks (the last takes the remainder), then spread
        # each chunk's mass (outliers not included) evenly over the bins where P is non-zero
        edges = (np.arange(levels + 1) * i) // levels
        chunk = np.repeat(np.arange(levels), np.diff(edges))
        nz = p > 0
        mass = np.bincount(chunk, weights=src, minlength=levels)
        cnt = np.bincount(chunk, weights=nz.astype(np.float64), minlength=levels)
        q = np.where(nz, (mass / np.maximum(cnt, 1))[chunk], 0.0)
        p, q = _smooth(p), _smooth(q)
        if p is None or q is None:
            continue
        m = p > 0
        kl = float(np.sum(p[m] * np.log(p[m] / q[m])))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_i


def _smooth(d: np.ndarray, eps: float = 1e-4) -> np.ndarray | None:
    """Normalise, then give every empty bin eps taken evenly from the others (as MXNet's
    and onnxruntime's KL calibrators do), so log(p / q) is finite."""
    total = d.sum()
    if total <= 0:
        return None
    d = d / total
    zero = d == 0
    n_zero, n_nonzero = int(zero.sum()), int((~zero).sum())
    if n_nonzero == 0:
        return None
    take = eps * n_zero / n_nonzero
    if take >= 1.0 or np.any(d[~zero] <= take):
        # too little mass in some bin to give eps away: fall back to a plain floor
        return np.maximum(d, eps * 1e-3) / np.maximum(d, eps * 1e-3).sum()
    return np.where(zero, eps, d - take)


def range_entropy(hist: HistogramObserver, nbins: int = 2048) -> tuple[float, float]:
    """KL threshold on |x|: 256 levels for a one-signed tensor (the whole int8 range
    covers [0, T]), 128 per side otherwise. Exact zeros are left out of the distributions
    (0 is always exactly representable, whatever the threshold)."""
    lo, hi = float(hist.lo), float(hist.hi)
    amax = max(abs(lo), abs(hi))
    if amax <= 0.0:
        return range_minmax(hist)
    one_signed = lo >= 0.0 or hi <= 0.0
    levels = 256 if one_signed else 128
    c = hist.centers
    counts = hist.counts.copy()
    zbin = int(np.floor((0.0 - hist.start) / hist.width))
    if 0 <= zbin < hist.bins:
        counts[zbin] = max(counts[zbin] - hist.zeros, 0.0)
    width = amax / nbins
    idx = np.clip((np.abs(c) / width).astype(np.int64), 0, nbins - 1)
    h = np.bincount(idx, weights=counts, minlength=nbins)
    i = _kl_threshold(h, levels)
    t = min(i * width, amax)
    return max(lo, -t), min(hi, t)


def choose_range(
    method: str, hist: HistogramObserver, percentile: float = DEFAULT_PERCENTILE
) -> tuple[float, float]:
    if method == "minmax" or hist.width == 0.0:  # minmax, or a constant tensor
        return range_minmax(hist)
    if method == "percentile":
        return range_percentile(hist, percentile)
    if method == "mse":
        return range_mse(hist)
    if method == "entropy":
        return range_entropy(hist)
    raise EdgeconvError(f"unknown calibration method {method!r}; use one of {', '.join(METHODS)}")
