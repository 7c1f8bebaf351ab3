"""int8 kernels as a library: NHWC int8 arrays in, int8 arrays out.

Two backends expose the same functions with the same signatures:
``reference`` (plain NumPy, written to be read against the spec, the test oracle)
and ``fast`` (Numba-compiled). ``EDGECONV_BACKEND=numpy|numba`` forces one;
otherwise Numba is used when it imports. Numba is imported only when a kernel is
first called, so ``import edgeconv`` stays cheap.

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
__all__ = [*_BACKEND_KERNELS, *_NONLINEAR_KERNELS, "backend_name", "get_backend"]

_backend: ModuleType | None = None


def _numba_usable() -> bool:
    try:
        import numba  # noqa: F401
    except Exception:
        return False
    return True


def backend_name() -> str:
    """'numba' or 'numpy': the backend the kernels run on in this process."""
    return get_backend().BACKEND_NAME


def get_backend() -> ModuleType:
    """Choose the backend once per process (env var first, then what imports)."""
    global _backend
    if _backend is None:
        wanted = os.environ.get("EDGECONV_BACKEND", "").strip().lower()
        if wanted not in ("", "numba", "numpy"):
            from ..errors import EdgeconvError

            raise EdgeconvError(f"EDGECONV_BACKEND={wanted!r}: use 'numba' or 'numpy'")
        if wanted == "numpy" or (wanted == "" and not _numba_usable()):
            from . import reference as module
        else:
            from . import fast as module
        _backend = module
    return _backend


def __getattr__(name: str):
    if name in _BACKEND_KERNELS:
        return getattr(get_backend(), name)
    if name in _NONLINEAR_KERNELS:
        from . import nonlinear

        return getattr(nonlinear, name)
    raise AttributeError(f"module 'edgeconv.kernels' has no attribute {name!r}")
