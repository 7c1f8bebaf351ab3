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


def case_model_params() -> list:
    """One pytest param per model file in ../shared/cases (a single skipped param when
    the folder is absent), for tests that run every public model."""
    files = []
    if CASES.is_dir():
        files = sorted(p for p in CASES.iterdir() if p.suffix in (".onnx", ".tflite"))
    if not files:
        reason = f"{CASES} not present (the shared data folder is not beside this checkout)"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-cases")]
    return [pytest.param(p, id=p.name) for p in files]


@pytest.fixture(scope="session")
def int8_case(example_data):
    """Callable: a ../shared/cases model file -> (int8 Model, 1,000 test inputs), cached.

    Float models are quantized on data of their domain (the cases README): MNIST models
    on the shipped 200 calibration images and tested on the shipped 1,000 test digits,
    the one-input sine regressor on x in [0, 2*pi]. int8 models are used as they are.
    Skips, with edgeconv's own reason, for a model edgeconv cannot import."""
    import edgeconv
    from edgeconv.errors import EdgeconvError

    cache: dict = {}

    def domain(model):
        n = int(np.prod(model.input_shape))
        if n == 28 * 28:
            return example_data["calib"], example_data["x"]
        if n == 1:
            grid = np.linspace(0, 2 * np.pi, 1000, dtype=np.float32).reshape(-1, 1)
            return grid[::5], grid
        return None, None

    def get(path: Path):
        if path not in cache:
            try:
                model = edgeconv.load(path)
                calib, x = domain(model)
                if x is None:
                    raise EdgeconvError(f"no test data for input shape {model.input_shape}")
                if not model.quantized:
                    graph = edgeconv.quantize_model(model, calib).graph
                    model = edgeconv.Model(graph, path.name)
                cache[path] = (model, x)
            except (EdgeconvError, ImportError) as e:
                cache[path] = e
        if isinstance(cache[path], Exception):
            pytest.skip(f"edgeconv cannot import {path.name}: {cache[path]}")
        return cache[path]

    return get
