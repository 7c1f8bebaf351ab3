"""edgeconv: float CNN -> int8 -> exact, fast inference on edge CPUs.

    import edgeconv
    m = edgeconv.load("model.int8.edgeconv")
    y = m.run(x)          # x float (quantized on the way in) or int8

Importing this package is cheap: NumPy, ONNX and Numba load only when used.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["load", "Model", "EdgeconvError", "quantize_model", "save", "__version__"]

from .errors import EdgeconvError


def __getattr__(name: str):
    if name in ("load", "Model"):
        from . import runtime

        return getattr(runtime, name)
    if name == "quantize_model":
        from .api import quantize_model

        return quantize_model
    if name == "save":
        from .formats.native import save

        return save
    raise AttributeError(f"module 'edgeconv' has no attribute {name!r}")
