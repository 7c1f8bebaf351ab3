"""A minimal PNG writer (8-bit RGB, no interlace) and the histogram plots of the HTML
report. Self-written on purpose: the report must work where only NumPy is installed,
and a plotting library is a large dependency for a few bar charts."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def encode_png(rgb: np.ndarray) -> bytes:
    """[H, W, 3] uint8 -> PNG file bytes."""
    rgb = np.ascontiguousarray(rgb, np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("encode_png takes an [H, W, 3] uint8 array")
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit truecolour
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 9))
        + chunk(b"IEND", b"")
    )


FLOAT_RGB = (120, 160, 215)  # filled columns: the float values
INT8_RGB = (220, 110, 20)  # line: the dequantized int8 values
CLIP_RGB = (200, 30, 30)  # edge columns: float values outside the int8 range


def histogram_png(
    float_counts: np.ndarray,
    int8_counts: np.ndarray,
    below: float = 0.0,
    above: float = 0.0,
    width: int = 360,
    height: int = 120,
) -> bytes:
    """Float histogram as filled columns, dequantized histogram as a line, both on a
    log(1 + count) scale over the same bins; red columns at the edges show the float
    values below / above the int8 range. Returns PNG bytes."""
    f = np.asarray(float_counts, np.float64)
    q = np.asarray(int8_counts, np.float64)
    nb = len(f)
    margin = 6  # columns for the out-of-range markers on each side
    plot_w = width - 2 * margin
    img = np.full((height, width, 3), 255, np.uint8)
    top = np.log1p(max(f.max(initial=0), q.max(initial=0), below, above, 1.0))
    col = np.minimum((np.arange(plot_w) * nb) // plot_w, nb - 1)  # bin of each pixel column

    def bar_height(c: np.ndarray) -> np.ndarray:
        return np.round(np.log1p(c) / top * (height - 2)).astype(int)

    fh, qh = bar_height(f[col]), bar_height(q[col])
    rows = np.arange(height)[:, None]
    filled = rows >= (height - 1 - fh)[None, :]
    img[:, margin : margin + plot_w][filled] = FLOAT_RGB
    for x in range(plot_w):
        y = height - 1 - qh[x]
        if qh[x] > 0:
            img[max(y - 1, 0) : y + 1, margin + x] = INT8_RGB
    for count, x0 in ((below, 0), (above, width - margin + 1)):
        if count > 0:
            bh = int(bar_height(np.array([count]))[0])
            img[height - 1 - bh :, x0 : x0 + margin - 1] = CLIP_RGB
    img[height - 1, :] = (60, 60, 60)  # baseline
    return encode_png(img)
