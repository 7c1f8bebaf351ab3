"""How much tensor arena TFLite Micro needs for the same model, for comparison.

The graph is written as .tflite by edgeconv's own exporter (``formats.tflite_export``)
and loaded by the ``tflite-micro`` PyPI interpreter in a child process (TFLM prints its
allocation report on the C-level stderr, and a failed TFLM check aborts the process).
Reported: the RecordingMicroAllocator's total / head (the planned activation tensors)
/ tail (persistent structs, quantization data, kernel buffers), and the smallest
``arena_size`` (16-byte steps) with which a fresh interpreter allocates and runs. That
can exceed the recorded total, because Prepare needs temporary memory that is freed
again before the recording. Each probe runs in its own process: after a failed
allocation TFLM's Python interpreter is not reliable in the same process (and some
failures abort).
This is the x86-64 build of TFLM: the tail holds 64-bit pointers and is larger than on
a 32-bit Cortex-M; the head does not depend on the pointer size.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

from edgeconv.ir import Graph

_SCRIPT = r"""
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime

model = open(sys.argv[1], "rb").read()
it = runtime.Interpreter.from_bytes(model, arena_size=int(sys.argv[2]))
d = it.get_input_details(0)
it.set_input(np.zeros(d["shape"], d["dtype"]), 0)
it.invoke()
if sys.argv[3] == "report":
    it.print_allocations()
"""


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("tflite-micro")
    except Exception:  # noqa: BLE001 - only for the label
        return "?"


def _probe(path: Path, size: int, report: bool, timeout: float) -> tuple[bool, str]:
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _SCRIPT, str(path), str(size), "report" if report else "-"],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f} s"
    return proc.returncode == 0, proc.stdout + proc.stderr


def tflm_arena(graph: Graph, timeout: float = 120) -> dict:
    """{"arena_bytes", "head_bytes", "tail_bytes", "min_arena_size", ...} or
    {"arena_bytes": None, "reason": ...} when TFLM or the exporter is unavailable."""
    try:
        from tflite_micro.python.tflite_micro import runtime  # noqa: F401
    except Exception:  # noqa: BLE001
        return {"arena_bytes": None, "reason": "tflite-micro is not installed (pip install "
                "tflite-micro)"}  # fmt: skip
    try:
        from edgeconv.formats.tflite_export import to_bytes
    except ImportError:
        return {"arena_bytes": None, "reason": "edgeconv's .tflite exporter is not available"}
    from edgeconv.errors import EdgeconvError

    try:
        blob = to_bytes(graph, io="int8")
    except EdgeconvError as e:
        return {"arena_bytes": None, "reason": f"the model cannot be written as .tflite: {e}"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(blob)
        ok, text = _probe(path, 64 * 1024 * 1024, True, timeout)
        total = re.search(r"Arena allocation total (\d+) bytes", text)
        head = re.search(r"Arena allocation head (\d+) bytes", text)
        tail = re.search(r"Arena allocation tail (\d+) bytes", text)
        if not ok or not (total and head and tail):
            last = text.strip().splitlines()[-1:] or [""]
            return {"arena_bytes": None, "reason": f"TFLM could not run the model: {last[0]}"}
        arena = int(total.group(1))
        # smallest working arena_size: below the total TFLM cannot fit what it recorded
        lo, hi, step = arena - 16, arena, 256
        while not _probe(path, hi, False, timeout)[0]:
            lo, hi, step = hi, hi + step, step * 2
            if hi > 64 * 1024 * 1024:
                return {"arena_bytes": None, "reason": "no arena size up to 64 MiB worked"}
        while hi - lo > 16:
            mid = (lo + hi) // 2
            if _probe(path, mid, False, timeout)[0]:
                hi = mid
            else:
                lo = mid
    return {
        "arena_bytes": arena,
        "head_bytes": int(head.group(1)),
        "tail_bytes": int(tail.group(1)),
        "min_arena_size": hi,
        "tflite_bytes": len(blob),
        "host": f"tflite-micro {_version()} Python interpreter, x86-64",
    }
