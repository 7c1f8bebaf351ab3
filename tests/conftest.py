"""Shared fixtures: the shipped example, the public cases in ../shared (skipped with a
reason when absent), and small MNIST slices."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SHARED = REPO.parent / "shared"
CASES = SHARED / "cases"
MNIST = SHARED / "data" / "mnist"


def shared_file(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not present (the shared data folder is not beside this checkout)")
    return path


def read_idx(path: Path, offset: int) -> np.ndarray:
    return np.frombuffer(gzip.open(path).read(), np.uint8, offset=offset)


@pytest.fixture(scope="session")
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    """All 10,000 MNIST test images (uint8 [N,28,28]) and labels."""
    x = read_idx(shared_file(MNIST / "t10k-images-idx3-ubyte.gz"), 16).reshape(-1, 28, 28)
    y = read_idx(shared_file(MNIST / "t10k-labels-idx1-ubyte.gz"), 8)
    return x, y


@pytest.fixture(scope="session")
def mnist_calib() -> np.ndarray:
    """200 MNIST training images (never test images) for calibration."""
    x = read_idx(shared_file(MNIST / "train10k-images-idx3-ubyte.gz"), 16).reshape(-1, 28, 28)
    return x[:200]


@pytest.fixture(scope="session")
def example_data() -> dict[str, np.ndarray]:
    """The shipped example slices (always present in the repo)."""
    test = np.load(EXAMPLES / "mnist_test_1k.npz")
    calib = np.load(EXAMPLES / "mnist_calib_200.npz")
    return {"x": test["x"], "y": test["y"], "calib": calib["x"]}
