"""Post-training quantization: float IR graph + calibration samples -> int8 IR graph.

Installed as ``edgeconv.quantize`` (the repo keeps it in a top-level ``quantize/``
folder, per the design card). The scheme is TFLite's int8 scheme so every export
of the result is exact: weights int8 symmetric per output channel, activations
int8 asymmetric per tensor, bias int32 at s_in * s_w.

Calibration methods (``quantize_graph(..., method=...)``) only choose each activation's
range: minmax (TFLite's, the default), percentile, mse, entropy, or auto. The per-layer
error report is ``edgeconv.quantize.report.layer_report``.
"""

from .calibration import METHODS
from .ptq import QuantizeResult, quantize_graph

__all__ = ["METHODS", "QuantizeResult", "quantize_graph"]
