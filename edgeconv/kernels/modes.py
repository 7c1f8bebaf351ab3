"""The names of the requantization rounding modes and runtime profiles.

Kept free of NumPy so the CLI can build its --rounding choices without importing it.
``requant`` re-exports everything here.
"""

from __future__ import annotations

# Requantization rounding modes; the kernels branch on the index (rounding_code).
#   double     gemmlowp SRDHM, then RoundingDivideByPOT (ties away from zero): TFLM, TFLite
#              reference kernels, CMSIS-NN default (spec 3.4 A)
#   single     one rounding of acc*mult, ties toward +inf: TFLITE_SINGLE_ROUNDING, CMSIS-NN
#              single rounding (spec 3.4 B)
#   double-up  SRDHM, then a rounding right shift with ties toward +inf: TFLite's optimized
#              (ruy) kernels on x86-64, measured (README, section TFLite)
#   fp32       float32(acc) * float32 scale, ties to even: XNNPACK's QS8 kernels (spec 3.4 D)
#   fp64       double(acc) * double scale, ties away from zero: LiteRT's reference
#              FULLY_CONNECTED (spec 3.4 D)
# The two float modes take the real multiplier (``scale=``), not mult/shift.
ROUNDING_MODES = ("double", "single", "double-up", "fp32", "fp64")
FLOAT_MODES = ("fp32", "fp64")

# Float -> int8 input quantization: "divide" rounds x / scale half away from zero (TFLM,
# TFLite reference); "reciprocal" rounds x * (1 / scale) half to even (TFLite's optimized
# kernel and XNNPACK, measured). Both in float32.
QUANTIZE_METHODS = ("divide", "reciprocal")

# Named per-runtime choices: op -> mode, for runtimes that do not use one rounding for
# every op (all measured against ai-edge-litert on x86-64; README, section TFLite).
# - "depthwise_blocks" is the mode of the output channels in full blocks of 8; the rest
#   use "depthwise" (TFLite's optimized depthwise kernel).
# - "declined": the profile a layer falls back to when the delegate does not take it.
#   XNNPACK declines a layer with a weight or bias scale that is not a normal float32
#   number (std::isnormal) and TFLite then runs its own optimized kernel.
ROUNDING_PROFILES: dict[str, dict[str, str]] = {
    "tflite-ref": {"conv": "double", "depthwise": "double", "fc": "fp64"},
    "tflite-opt": {
        "conv": "double-up",
        "depthwise": "double",
        "depthwise_blocks": "double-up",
        "fc": "double-up",
        "quantize": "reciprocal",
    },
    "xnnpack": {
        "conv": "fp32",
        "depthwise": "fp32",
        "fc": "fp32",
        "quantize": "reciprocal",
        "declined": "tflite-opt",
    },
}
# What --rounding accepts: a mode, or a runtime profile.
ROUNDING_CHOICES = ROUNDING_MODES + tuple(ROUNDING_PROFILES)
