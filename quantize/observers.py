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
