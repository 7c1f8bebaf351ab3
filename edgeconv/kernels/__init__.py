"""int8 kernels as a library: NHWC int8 arrays in, int8 arrays out.

Two backends expose the same functions with the same signatures:
``reference`` (plain NumPy, written to be read against the spec, the test oracle)
and ``fast`` (Numba-compiled). ``EDGECONV_BACKEND=numpy|numba`` forces one;
otherwise Numba is used when it is installed and a one-time probe in a child process
(``probe``) shows it can compile and run a kernel here; if not, the NumPy backend takes
over (byte-identical, slower) and says so once on stderr. Numba is imported only when a
kernel is first called, so ``import edgeconv`` stays cheap.

Kernels whose arithmetic is per-row fixed point with no hot loop (softmax,
log-softmax, tanh/logistic, add) live in ``nonlinear`` and serve both backends.
"""

from __future__ import annotations

import os
from types import ModuleType

_BACKEND_KERNELS = (
    "conv2d",
    "depthwise_conv2d",
    "fully_connected",
    "max_pool2d",
    "avg_pool2d",
    "requantize",
    "quantize",
    "dequantize",
    "argmax",
    "pad",
)
_NONLINEAR_KERNELS = (
    "softmax",
    "log_softmax",
    "tanh",
    "logistic",
    "add",
    "prepare_softmax",
    "prepare_log_softmax",
    "prepare_tanh",
    "prepare_logistic",
    "prepare_add",
)
__all__ = [
    *_BACKEND_KERNELS,
    *_NONLINEAR_KERNELS,
    "backend_choice",
    "backend_name",
    "backend_reason",
    "get_backend",
]

_backend: ModuleType | None = None
_backend_reason = ""


def backend_choice() -> tuple[str, str]:
    """('numba'|'numpy', why) for this process, without importing Numba.

    EDGECONV_BACKEND wins; otherwise Numba if installed and the cached (or, the first
    time, freshly run) subprocess probe says it works."""
    wanted = os.environ.get("EDGECONV_BACKEND", "").strip().lower()
    if wanted not in ("", "numba", "numpy"):
        from ..errors import EdgeconvError

        raise EdgeconvError(f"EDGECONV_BACKEND={wanted!r}: use 'numba' or 'numpy'")
    if wanted:
        return wanted, f"EDGECONV_BACKEND={wanted}"
    from .probe import numba_verdict

    verdict = numba_verdict()
    return ("numba" if verdict["usable"] else "numpy"), verdict["reason"]


def _say_fallback(reason: str) -> None:
    import sys

    print(
        f"edgeconv: using the NumPy backend (byte-identical, slower): {reason}. "
        "Set EDGECONV_BACKEND=numpy to choose it explicitly.",
        file=sys.stderr,
    )


def backend_name() -> str:
    """'numba' or 'numpy': the backend the kernels run on in this process."""
    return get_backend().BACKEND_NAME


def backend_reason() -> str:
    """Why this process runs on its backend (after the first kernel call)."""
    get_backend()
    return _backend_reason


def get_backend() -> ModuleType:
    """Choose the backend once per process (env var, else installed and probed Numba)."""
    global _backend, _backend_reason
    if _backend is None:
        name, reason = backend_choice()
        forced = reason.startswith("EDGECONV_BACKEND")
        module = None
        if name == "numba":
            try:
                from . import fast as module
            except Exception as e:  # e.g. no writable place for Numba's cache
                if forced:
                    raise
                reason = f"importing the Numba kernels failed ({type(e).__name__}: {e})"
        if module is None:
            from . import reference as module

            if not forced:
                _say_fallback(reason)
        _backend, _backend_reason = module, reason
    return _backend


def __getattr__(name: str):
    if name in _BACKEND_KERNELS:
        return getattr(get_backend(), name)
    if name in _NONLINEAR_KERNELS:
        from . import nonlinear

        return getattr(nonlinear, name)
    raise AttributeError(f"module 'edgeconv.kernels' has no attribute {name!r}")
