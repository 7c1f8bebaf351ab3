"""The .edgeconv file: round trip is lossless, damage gives a clear error, and loading
never executes anything (there is no code path that could)."""

from __future__ import annotations

import numpy as np
import pytest

import edgeconv
from edgeconv.errors import EdgeconvError
from edgeconv.formats import native
from tests.conftest import EXAMPLES


@pytest.fixture(scope="module")
def int8_graph(example_data):
    model = edgeconv.load(EXAMPLES / "lenet5.onnx")
    return edgeconv.quantize_model(model, example_data["calib"][:50]).graph


def test_round_trip_is_exact(int8_graph, tmp_path, example_data):
    path = tmp_path / "m.edgeconv"
    native.save(int8_graph, path)
    back = native.load(path)
    assert [o.kind for o in back.ops] == [o.kind for o in int8_graph.ops]
    for name, t in int8_graph.tensors.items():
        u = back.tensors[name]
        assert (u.shape, u.dtype, u.axis) == (t.shape, t.dtype, t.axis)
        if t.data is not None:
            assert u.data.dtype == t.data.dtype and np.array_equal(u.data, t.data)
        if t.scale is not None:
            assert np.array_equal(u.scale, t.scale) and np.array_equal(u.zero_point, t.zero_point)
    x = example_data["x"][:20]
    a = edgeconv.Model(int8_graph).run(x)
    b = edgeconv.load(path).run(x)
    assert np.array_equal(a, b)


def test_float_graph_round_trip(tmp_path, example_data):
    model = edgeconv.load(EXAMPLES / "lenet5.onnx")
    path = tmp_path / "f.edgeconv"
    native.save(model.graph, path)
    x = example_data["x"][:8]
    assert np.array_equal(model.run(x), edgeconv.load(path).run(x))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[:5], "too short"),
        (lambda b: b"NOTMODEL" + b[8:], "wrong magic"),
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b[:40] + b"\xff" * 40 + b[80:], "not a valid .edgeconv"),
    ],
)
def test_damaged_file_gives_clear_error(int8_graph, tmp_path, damage, message):
    data = native.to_bytes(int8_graph)
    path = tmp_path / "bad.edgeconv"
    path.write_bytes(damage(data))
    with pytest.raises(EdgeconvError, match=message):
        native.load(path)


def test_newer_format_version_is_refused(int8_graph, tmp_path):
    data = bytearray(native.to_bytes(int8_graph))
    data[8:12] = (native.FORMAT_VERSION + 1).to_bytes(4, "little")
    path = tmp_path / "new.edgeconv"
    path.write_bytes(bytes(data))
    with pytest.raises(EdgeconvError, match="newer"):
        native.load(path)


def test_save_failure_leaves_old_file(int8_graph, tmp_path, monkeypatch):
    path = tmp_path / "keep.edgeconv"
    path.write_bytes(b"old contents")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        native.save(int8_graph, path)
    assert path.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.edgeconv"]
