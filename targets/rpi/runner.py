#!/usr/bin/env python3
"""Run the bundled int8 model. Written by `edgeconv export --target rpi*` as run.py.

    python3 run.py images/                 # every image in a folder (or files): class per line
    python3 run.py images/ --json          # one JSON object per image (class, raw int8 output)
    python3 run.py images/ --save out.npy  # also save the raw int8 outputs, in file-name order
    python3 run.py --stdin < x.npy > y.npy # .npy arrays in, raw int8 .npy outputs out, until EOF
    python3 run.py --warmup                # compile the kernels now, filling the Numba cache
    python3 run.py --info                  # backend, Numba cache, CPU features

Needs only NumPy (and Numba for speed; without it the NumPy kernels give the same bytes).
The edgeconv runtime used is the copy in this folder. Images: PNG (8-bit, non-interlaced;
decoded here), PGM/PPM, .npy; anything else through Pillow if it is installed. An image
must already have the model's input size: nothing is resized.

Caches: Numba's compiled kernels go to $NUMBA_CACHE_DIR, default $EDGECONV_CACHE_DIR/numba,
and $EDGECONV_CACHE_DIR defaults to ./cache beside this file.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import os
import struct
import sys
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
T_START = time.perf_counter()


def _use_bundle() -> None:
    """Caches beside the bundle unless told otherwise; the bundled edgeconv first."""
    os.environ.setdefault("EDGECONV_CACHE_DIR", str(HERE / "cache"))
    os.environ.setdefault("NUMBA_CACHE_DIR",
                          str(Path(os.environ["EDGECONV_CACHE_DIR"]) / "numba"))
    if str(HERE) not in sys.path[:1]:
        sys.path.insert(0, str(HERE))

IMAGE_SUFFIXES = (".png", ".pgm", ".ppm", ".pnm", ".npy", ".jpg", ".jpeg", ".bmp", ".webp")


class InputError(Exception):
    """A bad input file or stream: one line on stderr, exit code 2."""


# ---------------------------------------------------------------- image decoding
def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(raw: bytes, width: int, height: int, bpp: int, stride: int) -> bytearray:
    """Undo PNG's per-row filters (None, Sub, Up, Average, Paeth)."""
    out = bytearray(height * stride)
    prev = bytearray(stride)
    pos = 0
    for y in range(height):
        ftype = raw[pos]
        line = bytearray(raw[pos + 1 : pos + 1 + stride])
        pos += 1 + stride
        if len(line) != stride:
            raise InputError("truncated image data")
        if ftype == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif ftype == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 0xFF
        elif ftype == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                upleft = prev[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + _paeth(left, prev[i], upleft)) & 0xFF
        elif ftype != 0:
            raise InputError(f"bad PNG filter type {ftype}")
        out[y * stride : (y + 1) * stride] = line
        prev = line
    return out


def decode_png(data: bytes):
    """8-bit (and 1/2/4-bit grey or palette) non-interlaced PNG -> uint8 [H, W, C]."""
    import numpy as np

    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise InputError("not a PNG file")
    pos, idat, palette, head = 8, [], None, None
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if ctype == b"IHDR":
            head = struct.unpack(">IIBBBBB", body)
        elif ctype == b"PLTE":
            palette = np.frombuffer(body, np.uint8).reshape(-1, 3)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
    if head is None or not idat:
        raise InputError("PNG without IHDR or IDAT")
    width, height, depth, color, _, _, interlace = head
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(color)
    if channels is None or interlace or depth not in (1, 2, 4, 8) or (depth < 8 and color not in
                                                                       (0, 3)):
        raise InputError(
            f"PNG colour type {color}, {depth}-bit{', interlaced' if interlace else ''} is not "
            "decoded here (install Pillow, or save 8-bit non-interlaced)"
        )
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as e:
        raise InputError(f"corrupt PNG data ({e})") from None
    stride = (width * channels * depth + 7) // 8
    rows = np.frombuffer(_unfilter(raw, width, height, max(1, channels * depth // 8), stride),
                         np.uint8).reshape(height, stride)
    if depth < 8:
        bits = np.unpackbits(rows, axis=1)[:, : width * depth].reshape(height, width, depth)
        weights = (1 << np.arange(depth - 1, -1, -1)).astype(np.uint8)
        rows = (bits * weights).sum(axis=2).astype(np.uint8)
        if color == 0:
            rows = (rows.astype(np.uint16) * 255 // ((1 << depth) - 1)).astype(np.uint8)
    img = rows.reshape(height, width, channels)
    if color == 3:
        if palette is None:
            raise InputError("palette PNG without PLTE")
        img = palette[img[:, :, 0]]
    return img


def decode_pnm(data: bytes):
    """Binary PGM (P5) / PPM (P6), maxval <= 255 -> uint8 [H, W, C]."""
    import numpy as np

    fields, pos = [], 2
    while len(fields) < 3:
        while data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end : end + 1].isspace():
            end += 1
        fields.append(int(data[pos:end]))
        pos = end
    width, height, maxval = fields
    if maxval > 255:
        raise InputError("16-bit PGM/PPM is not supported")
    channels = 1 if data[:2] == b"P5" else 3
    n = width * height * channels
    pixels = np.frombuffer(data[pos + 1 : pos + 1 + n], np.uint8)
    if pixels.size != n:
        raise InputError("truncated PGM/PPM")
    return pixels.reshape(height, width, channels)


def read_image(path: Path):
    import numpy as np

    data = path.read_bytes()
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        try:
            return decode_png(data)
        except InputError:
            pass  # maybe Pillow can
    elif data[:2] in (b"P5", b"P6"):
        return decode_pnm(data)
    elif data[:6] == b"\x93NUMPY":
        return read_npy(io.BytesIO(data))
    try:
        from PIL import Image
    except ImportError:
        raise InputError(f"{path}: cannot decode this image without Pillow") from None
    with Image.open(path) as im:
        return np.asarray(im)


def to_sample(img, shape: tuple[int, ...], source: str):
    """An image [H, W] / [H, W, C] as one sample of the model's declared input shape:
    (C, H, W), (H, W, C) or (H, W). Colour becomes grey (integer BT.601 luma) for a
    one-channel model; grey is repeated for a three-channel one. No resizing."""
    import numpy as np

    img = np.asarray(img)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise InputError(f"{source}: expected an image, got an array of shape {list(img.shape)}")
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[1:] == img.shape[:2]:
        layout, want_c = "chw", shape[0]
    elif len(shape) == 3 and shape[:2] == img.shape[:2]:
        layout, want_c = "hwc", shape[2]
    elif len(shape) == 2 and shape == img.shape[:2]:
        layout, want_c = "hw", 1
    else:
        raise InputError(
            f"{source}: image is {img.shape[1]}x{img.shape[0]}, the model takes input "
            f"{list(shape)} (images are not resized)"
        )
    c = img.shape[2]
    if c in (2, 4):  # drop alpha
        img, c = img[:, :, : c - 1], c - 1
    if want_c == 1 and c == 3:
        rgb = img.astype(np.uint32)
        img = ((299 * rgb[..., 0] + 587 * rgb[..., 1] + 114 * rgb[..., 2] + 500) // 1000)
        img = img.astype(np.uint8)[:, :, None]
    elif want_c == 3 and c == 1:
        img = np.repeat(img, 3, axis=2)
    elif want_c != img.shape[2]:
        raise InputError(f"{source}: {c} channels, the model takes {want_c}")
    if layout == "chw":
        return np.ascontiguousarray(img.transpose(2, 0, 1))
    return img[:, :, 0] if layout == "hw" else img


# ---------------------------------------------------------------- .npy stream
def _read_exactly(stream, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_npy(stream):
    """One .npy array from a (non-seekable) stream, or None at a clean end of stream.
    Plain numeric dtypes only: nothing is unpickled."""
    import numpy as np

    magic = _read_exactly(stream, 8)
    if not magic:
        return None
    if len(magic) < 8 or magic[:6] != b"\x93NUMPY":
        raise InputError("stdin: expected .npy data (b'\\x93NUMPY' header)")
    size = 2 if magic[6] == 1 else 4
    raw_len = _read_exactly(stream, size)
    if len(raw_len) != size:
        raise InputError("stdin: truncated .npy header")
    hlen = struct.unpack("<H" if size == 2 else "<I", raw_len)[0]
    try:
        header = ast.literal_eval(_read_exactly(stream, hlen).decode("latin1"))
        dtype = np.dtype(header["descr"])
        shape = tuple(int(d) for d in header["shape"])
        fortran = bool(header["fortran_order"])
    except (ValueError, SyntaxError, KeyError, TypeError, MemoryError) as e:
        raise InputError(f"stdin: bad .npy header ({type(e).__name__}: {e})") from None
    if dtype.hasobject or dtype.kind not in "biuf":
        raise InputError(f"stdin: dtype {dtype} is not a plain number type")
    count = 1
    for d in shape:
        count *= d
    body = _read_exactly(stream, count * dtype.itemsize)
    if len(body) != count * dtype.itemsize:
        raise InputError("stdin: truncated .npy array")
    arr = np.frombuffer(body, dtype).reshape(shape, order="F" if fortran else "C")
    return arr.astype(dtype.newbyteorder("="), copy=False)


def npy_bytes(arr) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


# ---------------------------------------------------------------- commands
def list_inputs(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"{p}: no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    return files


def cmd_images(model, args) -> int:
    import numpy as np

    files = list_inputs(args.inputs)
    outs = []
    for start in range(0, len(files), args.batch):
        chunk = files[start : start + args.batch]
        x = np.stack([to_sample(read_image(f), model.input_shape, str(f)) for f in chunk])
        y = model.run(x)
        outs.append(y)
        flat = y.reshape(len(chunk), -1)
        for f, row in zip(chunk, flat, strict=True):
            cls = int(np.argmax(row))
            if args.json:
                print(json.dumps({"file": str(f), "class": cls, "output": row.tolist()}))
            else:
                print(f"{f}\t{cls}")
    if args.save:
        data = npy_bytes(np.concatenate(outs))
        tmp = Path(str(args.save) + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, args.save)
    return 0


def cmd_stdin(model) -> int:
    src, dst = sys.stdin.buffer, sys.stdout.buffer
    while True:
        x = read_npy(src)
        if x is None:
            return 0
        dst.write(npy_bytes(model.run(x)))
        dst.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run the bundled edgeconv int8 model.")
    p.add_argument("inputs", nargs="*", help="image files or folders of images")
    p.add_argument("--model", default=str(HERE / "model.edgeconv"))
    p.add_argument("--stdin", action="store_true", help=".npy arrays on stdin -> .npy on stdout")
    p.add_argument("--warmup", action="store_true", help="compile now; fills the Numba cache")
    p.add_argument("--info", action="store_true", help="backend, caches, CPU features")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.add_argument("--save", help="write the raw int8 outputs of all images to this .npy")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--timing", action="store_true",
                   help="print start-up timings (JSON) on stderr")
    args = p.parse_args(argv)
    _use_bundle()
    modes = bool(args.inputs) + args.stdin + args.warmup + args.info
    if modes != 1:
        p.error("give image files/folders, or exactly one of --stdin, --warmup, --info")

    t0 = time.perf_counter()
    import edgeconv
    import edgeconv.runtime  # with NumPy; Numba comes with the first kernel
    from edgeconv import kernels
    from edgeconv.errors import EdgeconvError

    if args.info:
        from edgeconv.sysinfo import info, info_text

        obj = info()
        obj["edgeconv_path"] = str(Path(edgeconv.__file__).parent)
        text = info_text(obj) + f"\nruntime: {obj['edgeconv_path']}"
        print(json.dumps(obj) if args.json else text)
        return 0
    try:
        t1 = time.perf_counter()
        model = edgeconv.load(args.model)
        t2 = time.perf_counter()
        if args.warmup:
            from edgeconv.sysinfo import warmup

            obj = warmup(model)
            cache = obj["numba_cache"]
            print(json.dumps(obj) if args.json else (
                f"warm-up on the {obj['backend']} backend: first run "
                f"{obj['first_run_seconds']:.2f} s, then {obj['second_run_seconds'] * 1e3:.1f} ms"
                + (f"; numba cache {obj['numba_cache_dir']} ({cache['bytes'] // 1024} KiB)"
                   if cache else f" ({obj['backend_reason']})")))
            return 0
        kernels.get_backend()
        t3 = time.perf_counter()
        rc = cmd_stdin(model) if args.stdin else cmd_images(model, args)
        if args.timing:
            timing = {
                "script_to_main_s": t0 - T_START,
                "import_s": t1 - t0,  # edgeconv + NumPy
                "load_s": t2 - t1,  # parse the model file
                "backend_s": t3 - t2,  # probe verdict + import Numba
                "run_s": time.perf_counter() - t3,  # read inputs, first (compiling) run
                "backend": kernels.backend_name(),
            }
            print(json.dumps(timing), file=sys.stderr)
        return rc
    except (InputError, EdgeconvError, OSError) as e:
        print(f"run.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
