"""edgeconv's own model file (`.edgeconv`): a JSON graph followed by raw arrays.

Loading it parses JSON and copies bytes into NumPy arrays of declared dtype and
shape; nothing is unpickled or executed. Layout:

    b"EDGECONV" | u32 format version | u64 header length | JSON header | pad | data

Every array's offset is 64-byte aligned within the data section.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from ..errors import EdgeconvError
from ..fileio import atomic_write, read_bytes
from ..ir import DTYPES, Graph, Op, Tensor

MAGIC = b"EDGECONV"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sIQ")
_ALIGN = 64


def _jsonable(value):
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _tupled(value):
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value


def to_bytes(graph: Graph) -> bytes:
    blob = bytearray()
    tensors = []
    for t in graph.tensors.values():
        entry = {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}
        if t.scale is not None:
            entry["scale"] = [float(s) for s in np.asarray(t.scale, np.float32)]
            entry["zero_point"] = [int(z) for z in np.asarray(t.zero_point)]
            entry["axis"] = t.axis
        if t.data is not None:
            blob.extend(b"\0" * (-len(blob) % _ALIGN))
            raw = np.ascontiguousarray(t.data, dtype=t.dtype).astype(f"<{t.data.dtype.str[1:]}")
            entry["data"] = {"offset": len(blob), "nbytes": raw.nbytes, "shape": list(raw.shape)}
            blob.extend(raw.tobytes())
        tensors.append(entry)
    header = {
        "format": "edgeconv",
        "format_version": FORMAT_VERSION,
        "inputs": graph.inputs,
        "outputs": graph.outputs,
        "meta": _jsonable(graph.meta),
        "tensors": tensors,
        "ops": [
            {
                "kind": o.kind,
                "name": o.name,
                "inputs": o.inputs,
                "outputs": o.outputs,
                "attrs": _jsonable(o.attrs),
            }
            for o in graph.ops
        ],
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    start = _PREFIX.size + len(head)
    pad = -start % _ALIGN
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(head) + pad) + head + b" " * pad + bytes(blob)


def save(graph: Graph, path: str | os.PathLike) -> None:
    atomic_write(path, to_bytes(graph))


def from_bytes(data: bytes, source: str = "model") -> Graph:
    def bad(why: str) -> EdgeconvError:
        return EdgeconvError(f"{source}: not a valid .edgeconv file ({why})")

    if len(data) < _PREFIX.size:
        raise bad("file is too short")
    magic, version, head_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise bad("wrong magic bytes")
    if version > FORMAT_VERSION:
        raise EdgeconvError(
            f"{source}: .edgeconv format version {version} is newer than this edgeconv "
            f"reads ({FORMAT_VERSION}); upgrade edgeconv"
        )
    body = _PREFIX.size + head_len
    if body > len(data):
        raise bad("truncated header")
    try:
        header = json.loads(data[_PREFIX.size : body].decode())
        blob = memoryview(data)[body:]
        tensors: dict[str, Tensor] = {}
        for e in header["tensors"]:
            if e["dtype"] not in DTYPES:
                raise bad(f"tensor {e['name']!r} has unknown dtype {e['dtype']!r}")
            arr = None
            if "data" in e:
                d = e["data"]
                off, n = int(d["offset"]), int(d["nbytes"])
                if off < 0 or off + n > len(blob):
                    raise bad(f"tensor {e['name']!r} data lies outside the file (truncated?)")
                arr = np.frombuffer(
                    blob[off : off + n], dtype=np.dtype(e["dtype"]).newbyteorder("<")
                )
                arr = arr.astype(e["dtype"]).reshape(d["shape"])
            scale = zp = None
            if "scale" in e:
                scale = np.asarray(e["scale"], np.float32)
                zp = np.asarray(e["zero_point"], np.int32)
            tensors[e["name"]] = Tensor(
                e["name"], tuple(e["shape"]), e["dtype"], arr, scale, zp, e.get("axis")
            )
        ops = [
            Op(
                o["kind"],
                list(o["inputs"]),
                list(o["outputs"]),
                {k: _tupled(v) for k, v in o["attrs"].items()},
                o.get("name", ""),
            )
            for o in header["ops"]
        ]
        graph = Graph(
            tensors,
            ops,
            list(header["inputs"]),
            list(header["outputs"]),
            dict(header.get("meta", {})),
        )
    except EdgeconvError:
        raise
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
        raise bad(f"{type(e).__name__}: {e}") from None
    graph.validate()
    return graph


def load(path: str | os.PathLike) -> Graph:
    return from_bytes(read_bytes(path, "model"), str(path))
