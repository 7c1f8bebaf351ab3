"""A small flatbuffer reader that checks every offset it follows.

The generated Python accessors of the ``flatbuffers`` package trust the file: a
corrupt offset there reads garbage, raises a bare IndexError/struct.error deep
inside, or (a huge vector length) makes a loop run for hours. This reader bounds
every read by the file size before doing it, so a bad file gives one clear
EdgeconvError. Every loop a caller writes runs over a vector whose length was
checked against the bytes actually present, so the work is bounded by the file size.
"""

from __future__ import annotations

import struct

import numpy as np

from ..errors import EdgeconvError

_U8 = struct.Struct("<B")
_I8 = struct.Struct("<b")
_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")
_F32 = struct.Struct("<f")

SCALARS = {
    "u8": _U8,
    "bool": _U8,
    "i8": _I8,
    "u16": _U16,
    "i32": _I32,
    "u32": _U32,
    "i64": _I64,
    "u64": _U64,
    "f32": _F32,
}


class Buffer:
    """The whole file; ``read`` is the only place bytes are touched."""

    def __init__(self, data: bytes, source: str):
        self.data = bytes(data)
        self.size = len(self.data)
        self.source = source

    def fail(self, what: str) -> EdgeconvError:
        return EdgeconvError(f"{self.source}: corrupt .tflite file ({what})")

    def read(self, st: struct.Struct, pos: int, what: str):
        if pos < 0 or pos + st.size > self.size:
            raise self.fail(f"{what} at byte {pos} is outside the {self.size}-byte file")
        return st.unpack_from(self.data, pos)[0]

    def indirect(self, pos: int, what: str) -> int:
        """Follow a uoffset stored at `pos`."""
        target = pos + self.read(_U32, pos, what)
        if target >= self.size:
            raise self.fail(f"{what} points to byte {target}, past the end of the file")
        return target

    def root(self) -> Table:
        if self.size < 8:
            raise self.fail(f"only {self.size} bytes")
        return Table(self, self.indirect(0, "root offset"), "model")


class Table:
    """One flatbuffer table; fields are looked up by slot number."""

    def __init__(self, buf: Buffer, pos: int, what: str):
        self.buf = buf
        self.pos = pos
        self.what = what
        vt = pos - buf.read(_I32, pos, f"{what} vtable offset")
        self.vt_len = buf.read(_U16, vt, f"{what} vtable")
        self.obj_len = buf.read(_U16, vt + 2, f"{what} vtable")
        if self.vt_len < 4 or self.vt_len % 2 or vt + self.vt_len > buf.size:
            raise buf.fail(f"{what} has a malformed vtable")
        if pos + self.obj_len > buf.size:
            raise buf.fail(f"{what} runs past the end of the file")
        self.vt = vt

    def _field(self, slot: int) -> int | None:
        entry = 4 + 2 * slot
        if entry + 2 > self.vt_len:
            return None
        off = self.buf.read(_U16, self.vt + entry, f"{self.what} vtable")
        if off == 0:
            return None
        if off >= self.obj_len:
            raise self.buf.fail(f"{self.what} field {slot} lies outside its table")
        return self.pos + off

    def has(self, slot: int) -> bool:
        return self._field(slot) is not None

    def scalar(self, slot: int, kind: str, default=0):
        p = self._field(slot)
        if p is None:
            return default
        return self.buf.read(SCALARS[kind], p, f"{self.what} field {slot}")

    def table(self, slot: int, what: str) -> Table | None:
        p = self._field(slot)
        if p is None:
            return None
        return Table(self.buf, self.buf.indirect(p, what), what)

    def _vector(self, slot: int, elem_size: int, what: str) -> tuple[int, int] | None:
        p = self._field(slot)
        if p is None:
            return None
        start = self.buf.indirect(p, what)
        n = self.buf.read(_U32, start, f"{what} length")
        if start + 4 + n * elem_size > self.buf.size:
            raise self.buf.fail(
                f"{what} claims {n} elements, more than the {self.buf.size}-byte file holds"
            )
        return start + 4, n

    def array(self, slot: int, dtype: str, what: str) -> np.ndarray | None:
        """A vector of scalars as a fresh NumPy array (little-endian in the file)."""
        dt = np.dtype(dtype).newbyteorder("<")
        vec = self._vector(slot, dt.itemsize, what)
        if vec is None:
            return None
        start, n = vec
        return np.frombuffer(self.buf.data, dt, n, start).astype(dt.newbyteorder("="))

    def raw(self, slot: int, what: str) -> tuple[int, int] | None:
        """(file offset, length) of a [ubyte] vector, without copying it."""
        return self._vector(slot, 1, what)

    def string(self, slot: int, what: str) -> str | None:
        vec = self._vector(slot, 1, what)
        if vec is None:
            return None
        start, n = vec
        return self.buf.data[start : start + n].decode("utf-8", errors="replace")

    def tables(self, slot: int, what: str) -> list[Table]:
        vec = self._vector(slot, 4, what)
        if vec is None:
            return []
        start, n = vec
        return [
            Table(self.buf, self.buf.indirect(start + 4 * i, what), f"{what}[{i}]")
            for i in range(n)
        ]
