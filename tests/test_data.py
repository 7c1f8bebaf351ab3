"""Data inputs as users have them: .npz (x/y or images/labels), .npy, MNIST IDX
(raw or .gz), reshaped to the model's input when the element count matches."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from edgeconv.data import fit_samples, load_dataset, to_model_dtype
from edgeconv.errors import EdgeconvError


def _idx(arr: np.ndarray) -> bytes:
    return (
        struct.pack(">BBBB", 0, 0, 0x08, arr.ndim)
        + struct.pack(f">{arr.ndim}I", *arr.shape)
        + arr.astype(np.uint8).tobytes()
    )


@pytest.fixture
def images():
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), rng.integers(0, 10, 7)


def test_npz_both_key_styles(tmp_path, images):
    x, y = images
    np.savez(tmp_path / "a.npz", x=x, y=y)
    np.savez(tmp_path / "b.npz", images=x, labels=y)
    for name in ("a.npz", "b.npz"):
        gx, gy = load_dataset(tmp_path / name)
        assert np.array_equal(gx, x) and np.array_equal(gy, y)


def test_npy_has_no_labels(tmp_path, images):
    np.save(tmp_path / "x.npy", images[0])
    gx, gy = load_dataset(tmp_path / "x.npy")
    assert gy is None and np.array_equal(gx, images[0])


@pytest.mark.parametrize("gz", [True, False])
def test_idx_finds_sibling_labels(tmp_path, images, gz):
    x, y = images
    suffix = ".gz" if gz else ""
    write = (
        (lambda p, b: p.write_bytes(gzip.compress(b))) if gz else (lambda p, b: p.write_bytes(b))
    )
    write(tmp_path / f"t-images-idx3-ubyte{suffix}", _idx(x))
    write(tmp_path / f"t-labels-idx1-ubyte{suffix}", _idx(y.astype(np.uint8)))
    gx, gy = load_dataset(tmp_path / f"t-images-idx3-ubyte{suffix}")
    assert np.array_equal(gx, x) and np.array_equal(gy, y)


def test_idx_truncated(tmp_path, images):
    (tmp_path / "t.idx").write_bytes(_idx(images[0])[:-10])
    with pytest.raises(EdgeconvError, match="truncated IDX"):
        load_dataset(tmp_path / "t.idx")


def test_mismatched_labels(tmp_path, images):
    np.savez(tmp_path / "a.npz", x=images[0], y=images[1][:3])
    with pytest.raises(EdgeconvError, match="3 labels for 7 samples"):
        load_dataset(tmp_path / "a.npz")


def test_npz_wrong_keys(tmp_path, images):
    np.savez(tmp_path / "a.npz", pixels=images[0])
    with pytest.raises(EdgeconvError, match="expected 'x'"):
        load_dataset(tmp_path / "a.npz")


def test_pickled_npy_is_refused(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(EdgeconvError, match="not a readable .npy"):
        load_dataset(tmp_path / "o.npy")


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "x.csv").write_text("1,2,3")
    with pytest.raises(EdgeconvError, match="unknown data format"):
        load_dataset(tmp_path / "x.csv")
    with pytest.raises(EdgeconvError, match="not found"):
        load_dataset(tmp_path / "nope.npz")


def test_fit_samples_reshapes_by_element_count():
    x = np.zeros((5, 28, 28), np.uint8)
    assert fit_samples(x, (1, 28, 28)).shape == (5, 1, 28, 28)
    assert fit_samples(np.zeros((28, 28)), (1, 28, 28)).shape == (1, 1, 28, 28)
    assert fit_samples(np.zeros((5, 784)), (1, 28, 28)).shape == (5, 1, 28, 28)
    with pytest.raises(EdgeconvError, match=r"expects \[N, 1, 28, 28\]"):
        fit_samples(np.zeros((5, 27, 28)), (1, 28, 28))


def test_integer_pixels_become_float_unless_model_takes_ints():
    x = np.arange(4, dtype=np.uint8)
    assert to_model_dtype(x, "float32").dtype == np.float32
    assert to_model_dtype(x, "uint8").dtype == np.uint8
    with pytest.raises(EdgeconvError, match="NaN"):
        to_model_dtype(np.array([np.nan]), "float32")
