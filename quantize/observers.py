"""Calibration observers: they watch activations stream past and keep O(1) state per
tensor, so calibrating on 10 samples or 100,000 costs the same memory."""

from __future__ import annotations

import numpy as np

from edgeconv.errors import EdgeconvError


class MinMaxObserver:
    """Global min / max over every sample seen (TFLite's calibrator: no moving average)."""

    def __init__(self) -> None:
        self.lo = np.inf
        self.hi = -np.inf

    def update(self, name: str, value: np.ndarray) -> None:
        if not np.all(np.isfinite(value)):
            raise EdgeconvError(
                f"calibration produced NaN or inf in tensor {name!r}: check the calibration "
                "data and the model's weights"
            )
        if value.size:
            self.lo = min(self.lo, float(value.min()))
            self.hi = max(self.hi, float(value.max()))

    def range(self) -> tuple[float, float]:
        return self.lo, self.hi


class HistogramObserver:
    """Streaming histogram of one tensor, with its exact min, max and count of exact zeros.

    The histogram has a fixed number of bins whatever the number of samples. Its range
    starts at the first batch's [min, max] and, when a later value falls outside, the bin
    width is multiplied by a power of two and old bins are merged into the new ones exactly
    (each old bin lies wholly inside one new bin), so no count is ever smeared or lost.
    """

    def __init__(self, bins: int = 2048) -> None:
        if bins < 16:
            raise ValueError("a histogram observer needs at least 16 bins")
        self.bins = int(bins)
        self.counts = np.zeros(self.bins, np.float64)
        self.start = 0.0  # left edge of bin 0
        self.width = 0.0  # 0 until the first value arrives
        self.lo = np.inf
        self.hi = -np.inf
        self.n = 0
        self.zeros = 0

    @property
    def edges(self) -> np.ndarray:
        return self.start + self.width * np.arange(self.bins + 1, dtype=np.float64)

    @property
    def centers(self) -> np.ndarray:
        return self.start + self.width * (np.arange(self.bins, dtype=np.float64) + 0.5)

    def update(self, name: str, value: np.ndarray) -> None:
        v = np.asarray(value).reshape(-1)
        if not v.size:
            return
        vmin, vmax = float(v.min()), float(v.max())
        if not (np.isfinite(vmin) and np.isfinite(vmax)):
            raise EdgeconvError(
                f"calibration produced NaN or inf in tensor {name!r}: check the calibration "
                "data and the model's weights"
            )
        constant = self.lo  # while the grid is not set, every earlier value equals lo
        self.lo, self.hi = min(self.lo, vmin), max(self.hi, vmax)
        self.n += int(v.size)
        self.zeros += int(np.count_nonzero(v == 0))
        if self.width == 0.0:
            if self.hi == self.lo:  # constant so far: no grid yet, the value is lo
                return
            # the first spread of values fixes the grid (a little headroom so the next
            # batches rarely force a regrid); a constant seen before lands in its bin
            self.width = (self.hi - self.lo) * 1.0001 / self.bins
            self.start = self.lo
            pending = self.n - int(v.size)
            if pending:
                self.counts[self._index(np.array([constant]))[0]] += pending
        self._cover(vmin, vmax)
        self.counts += np.bincount(self._index(v), minlength=self.bins)

    def _index(self, v: np.ndarray) -> np.ndarray:
        idx = np.floor((v.astype(np.float64) - self.start) / self.width).astype(np.int64)
        return np.clip(idx, 0, self.bins - 1, out=idx)

    def _cover(self, vmin: float, vmax: float) -> None:
        end = self.start + self.width * self.bins
        if vmin >= self.start and vmax < end:
            return
        lo, hi = min(vmin, self.start), max(vmax, end)
        factor = 1
        while self.width * factor * self.bins <= (hi - lo) * 1.0001:
            factor *= 2
        new_width = self.width * factor
        # shift the origin by a whole number of old bins so old bins nest in new ones;
        # centre the old range's slack so both sides have room to grow
        slack = new_width * self.bins - (hi - lo)
        shift_bins = int(np.ceil((self.start - (lo - slack / 2)) / self.width))
        shift_bins = max(shift_bins, int(np.ceil((self.start - lo) / self.width)))
        new_start = self.start - shift_bins * self.width
        if new_start + new_width * self.bins <= hi:  # rounding pushed the end below hi
            factor *= 2
            new_width *= 2
        old = self.counts
        if factor >= 2**40:  # the old grid is far narrower than one new bin: it all lands
            centre = self.start + self.width * self.bins / 2  # in the bin of its centre
            self.start, self.width = new_start, new_width
            self.counts = np.zeros(self.bins, np.float64)
            self.counts[self._index(np.array([centre]))[0]] = old.sum()
            return
        target = (np.arange(self.bins) + shift_bins) // factor
        self.counts = np.bincount(target, weights=old, minlength=self.bins)[: self.bins]
        self.start, self.width = new_start, new_width

    def range(self) -> tuple[float, float]:
        return self.lo, self.hi
