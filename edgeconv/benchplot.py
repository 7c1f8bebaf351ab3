"""The bar chart of ``edgeconv bench --plot``: matplotlib when it is installed, otherwise
a PNG drawn here (zlib + a 3x5 bitmap font), so the benchmark needs no plotting library.

Two panels: batch-1 p50 latency per image (shorter is better) and batch-B throughput
(longer is better), one bar per engine, the value printed beside each bar.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

_FONT = {
    "0": ["###", "#.#", "#.#", "#.#", "###"],
    "1": [".#.", "##.", ".#.", ".#.", "###"],
    "2": ["###", "..#", "###", "#..", "###"],
    "3": ["###", "..#", ".##", "..#", "###"],
    "4": ["#.#", "#.#", "###", "..#", "..#"],
    "5": ["###", "#..", "###", "..#", "###"],
    "6": ["###", "#..", "###", "#.#", "###"],
    "7": ["###", "..#", ".#.", ".#.", ".#."],
    "8": ["###", "#.#", "###", "#.#", "###"],
    "9": ["###", "#.#", "###", "..#", "###"],
    "a": [".#.", "#.#", "###", "#.#", "#.#"],
    "b": ["##.", "#.#", "##.", "#.#", "##."],
    "c": [".##", "#..", "#..", "#..", ".##"],
    "d": ["##.", "#.#", "#.#", "#.#", "##."],
    "e": ["###", "#..", "##.", "#..", "###"],
    "f": ["###", "#..", "##.", "#..", "#.."],
    "g": [".##", "#..", "#.#", "#.#", ".##"],
    "h": ["#.#", "#.#", "###", "#.#", "#.#"],
    "i": ["###", ".#.", ".#.", ".#.", "###"],
    "j": ["..#", "..#", "..#", "#.#", ".#."],
    "k": ["#.#", "#.#", "##.", "#.#", "#.#"],
    "l": ["#..", "#..", "#..", "#..", "###"],
    "m": ["#...#", "##.##", "#.#.#", "#...#", "#...#"],
    "n": ["#..#", "##.#", "#.##", "#..#", "#..#"],
    "o": [".#.", "#.#", "#.#", "#.#", ".#."],
    "p": ["##.", "#.#", "##.", "#..", "#.."],
    "q": [".#.", "#.#", "#.#", "##.", ".##"],
    "r": ["##.", "#.#", "##.", "#.#", "#.#"],
    "s": [".##", "#..", ".#.", "..#", "##."],
    "t": ["###", ".#.", ".#.", ".#.", ".#."],
    "u": ["#.#", "#.#", "#.#", "#.#", "###"],
    "v": ["#.#", "#.#", "#.#", "#.#", ".#."],
    "w": ["#...#", "#...#", "#.#.#", "##.##", "#...#"],
    "x": ["#.#", "#.#", ".#.", "#.#", "#.#"],
    "y": ["#.#", "#.#", ".#.", ".#.", ".#."],
    "z": ["###", "..#", ".#.", "#..", "###"],
    " ": ["..", "..", "..", "..", ".."],
    ".": [".", ".", ".", ".", "#"],
    ",": ["..", "..", "..", ".#", "#."],
    "-": ["...", "...", "###", "...", "..."],
    "+": ["...", ".#.", "###", ".#.", "..."],
    "/": ["..#", "..#", ".#.", "#..", "#.."],
    ":": [".", "#", ".", "#", "."],
    "(": [".#", "#.", "#.", "#.", ".#"],
    ")": ["#.", ".#", ".#", ".#", "#."],
    "%": ["#.#", "..#", ".#.", "#..", "#.#"],
    "@": [".##", "#.#", "#.#", "#..", ".##"],
    "=": ["...", "###", "...", "###", "..."],
    "_": ["...", "...", "...", "...", "###"],
}


class _Canvas:
    def __init__(self, w: int, h: int):
        self.w, self.h = w, h
        self.px = bytearray(b"\xff" * (w * h * 3))

    def rect(self, x0, y0, x1, y1, rgb):
        x0, x1 = max(0, int(x0)), min(self.w, int(x1))
        y0, y1 = max(0, int(y0)), min(self.h, int(y1))
        row = bytes(rgb) * max(0, x1 - x0)
        for y in range(y0, y1):
            i = (y * self.w + x0) * 3
            self.px[i : i + len(row)] = row

    def text(self, x, y, s, scale=2, rgb=(0, 0, 0)) -> int:
        for ch in s.lower():
            glyph = _FONT.get(ch, _FONT[" "])
            for gy, line in enumerate(glyph):
                for gx, bit in enumerate(line):
                    if bit == "#":
                        self.rect(x + gx * scale, y + gy * scale,
                                  x + (gx + 1) * scale, y + (gy + 1) * scale, rgb)
            x += (len(glyph[0]) + 1) * scale
        return x

    @staticmethod
    def text_width(s, scale=2) -> int:
        return sum((len(_FONT.get(c, _FONT[" "])[0]) + 1) * scale for c in s.lower())

    def png(self) -> bytes:
        raw = b"".join(
            b"\x00" + bytes(self.px[y * self.w * 3 : (y + 1) * self.w * 3]) for y in range(self.h)
        )

        def chunk(tag, data):
            body = tag + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        head = struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head)
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _panels(report: dict):
    rows = [(n, r) for n, r in report["engines"].items() if "p50_us" in r]
    b = report["config"]["batch"]
    lat = [(n, r["p50_us"]) for n, r in rows]
    thr = [(n, r["images_per_s"]) for n, r in rows]
    return [
        ("batch-1 latency p50 per image (us), shorter is better", lat, "{:.1f}"),
        (f"batch-{b} throughput (images/s), longer is better", thr, "{:,.0f}"),
    ]


def _colour(name: str):
    if name.startswith("edgeconv-numpy"):
        return (150, 190, 230)
    if name.startswith("edgeconv"):
        return (31, 119, 180)
    if name.startswith("litert"):
        return (255, 127, 14)
    return (44, 160, 44)


def write_chart(report: dict, path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        Path(path).write_bytes(_draw(report))
        return
    panels = _panels(report)
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.5 * max(len(p[1]) for p in panels) + 1.5))
    for ax, (title, bars, fmt) in zip(axes, panels, strict=True):
        names = [n for n, _ in bars][::-1]
        vals = [v for _, v in bars][::-1]
        ax.barh(names, vals, color=[tuple(c / 255 for c in _colour(n)) for n in names])
        for i, v in enumerate(vals):
            ax.text(v, i, " " + fmt.format(v), va="center")
        ax.set_title(title)
    fig.suptitle(Path(report["model"]).name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _draw(report: dict) -> bytes:
    panels = _panels(report)
    s = 2
    label_w = max(_Canvas.text_width(n, s) for _, bars, _ in panels for n, _ in bars) + 16
    bar_h, gap, panel_w, value_w = 22, 8, 420, 110
    n = max(len(bars) for _, bars, _ in panels)
    panel_h = 30 + n * (bar_h + gap)
    w = 20 + len(panels) * (label_w + panel_w + value_w) + 20
    h = 40 + panel_h + 20
    c = _Canvas(w, h)
    c.text(20, 10, Path(report["model"]).name + f"  ({report['machine']['cpu'][:40]})", s)
    x0 = 20
    for title, bars, fmt in panels:
        c.text(x0, 36, title, s)
        top = max(v for _, v in bars) or 1.0
        for i, (name, v) in enumerate(bars):
            y = 36 + 24 + i * (bar_h + gap)
            c.text(x0, y + 6, name, s)
            bx = x0 + label_w
            length = int(panel_w * v / top)
            c.rect(bx, y, bx + max(length, 1), y + bar_h, _colour(name))
            c.text(bx + length + 6, y + 6, fmt.format(v), s)
        x0 += label_w + panel_w + value_w
    return c.png()
