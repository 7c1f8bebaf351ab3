"""The facts of the TFLite flatbuffer format (schema v3) that edgeconv reads and writes.

Field numbers ("slots") and enum values are those of TensorFlow's
``tensorflow/compiler/mlir/lite/schema/schema.fbs``; ``tests/test_tflite_format.py``
checks every one of them against the generated ``tflite`` package, so a typo here
cannot survive. The reader (``tflite_import``) and the writer (``tflite_export``) both
use only this table, so they cannot disagree with each other either.
"""

from __future__ import annotations

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3

# enum TensorType
TENSOR_TYPES = {
    "float32": 0,
    "float16": 1,
    "int32": 2,
    "uint8": 3,
    "int64": 4,
    "string": 5,
    "bool": 6,
    "int16": 7,
    "complex64": 8,
    "int8": 9,
    "float64": 10,
    "complex128": 11,
    "uint64": 12,
    "resource": 13,
    "variant": 14,
    "uint32": 15,
    "uint16": 16,
    "int4": 17,
    "bfloat16": 18,
}
TENSOR_TYPE_NAMES = {v: k for k, v in TENSOR_TYPES.items()}

# enum ActivationFunctionType
ACT_NONE, ACT_RELU, ACT_RELU_N1_TO_1, ACT_RELU6, ACT_TANH, ACT_SIGN_BIT = range(6)
ACTIVATION_NAMES = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT")

# enum Padding
PADDING_SAME, PADDING_VALID = 0, 1

# enum BuiltinOperator, in code order (code = index)
BUILTIN_OPERATORS = tuple(
    """
    ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE
    EMBEDDING_LOOKUP FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D
    LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU
    RELU_N1_TO_1 RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH
    CONCAT_EMBEDDINGS SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD
    UNIDIRECTIONAL_SEQUENCE_RNN GATHER BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN
    SUB DIV SQUEEZE UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE BIDIRECTIONAL_SEQUENCE_RNN
    EXP TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM
    ARG_MAX MINIMUM LESS NEG PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN
    TRANSPOSE_CONV SPARSE_TO_DENSE TILE EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT SHAPE
    POW ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND
    LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD
    RANGE RESIZE_NEAREST_NEIGHBOR LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V
    UNIQUE CEIL REVERSE_V2 ADD_N GATHER_ND COS WHERE RANK ELU REVERSE_SEQUENCE MATRIX_DIAG
    QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE NON_MAX_SUPPRESSION_V4
    NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM BATCH_MATMUL
    PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D IMAG REAL
    COMPLEX_ABS HASHTABLE HASHTABLE_FIND HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL
    CONV_3D_TRANSPOSE VAR_HANDLE READ_VARIABLE ASSIGN_VARIABLE BROADCAST_ARGS
    RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM MULTINOMIAL GELU DYNAMIC_UPDATE_SLICE
    RELU_0_TO_1 UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_SUM ATAN2
    UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR RIGHT_SHIFT STABLEHLO_LOGISTIC
    STABLEHLO_ADD STABLEHLO_DIVIDE STABLEHLO_MULTIPLY STABLEHLO_MAXIMUM STABLEHLO_RESHAPE
    STABLEHLO_CLAMP STABLEHLO_CONCATENATE STABLEHLO_BROADCAST_IN_DIM STABLEHLO_CONVOLUTION
    STABLEHLO_SLICE STABLEHLO_CUSTOM_CALL STABLEHLO_REDUCE STABLEHLO_ABS STABLEHLO_AND
    STABLEHLO_COSINE STABLEHLO_EXPONENTIAL STABLEHLO_FLOOR STABLEHLO_LOG STABLEHLO_MINIMUM
    STABLEHLO_NEGATE STABLEHLO_OR STABLEHLO_POWER STABLEHLO_REMAINDER STABLEHLO_RSQRT
    STABLEHLO_SELECT STABLEHLO_SUBTRACT STABLEHLO_TANH STABLEHLO_SCATTER STABLEHLO_COMPARE
    STABLEHLO_CONVERT STABLEHLO_DYNAMIC_SLICE STABLEHLO_DYNAMIC_UPDATE_SLICE STABLEHLO_PAD
    STABLEHLO_IOTA STABLEHLO_DOT_GENERAL STABLEHLO_REDUCE_WINDOW STABLEHLO_SORT
    STABLEHLO_WHILE STABLEHLO_GATHER STABLEHLO_TRANSPOSE DILATE STABLEHLO_RNG_BIT_GENERATOR
    REDUCE_WINDOW STABLEHLO_COMPOSITE STABLEHLO_SHIFT_LEFT STABLEHLO_CBRT
    """.split()
)
OP = {name: code for code, name in enumerate(BUILTIN_OPERATORS)}


def op_name(code: int) -> str:
    if 0 <= code < len(BUILTIN_OPERATORS):
        return BUILTIN_OPERATORS[code]
    return f"builtin operator #{code} (newer than this schema)"


# union BuiltinOptions: the member type codes edgeconv writes or reads
OPTIONS = {
    "Conv2DOptions": 1,
    "DepthwiseConv2DOptions": 2,
    "Pool2DOptions": 5,
    "FullyConnectedOptions": 8,
    "SoftmaxOptions": 9,
    "AddOptions": 11,
    "ReshapeOptions": 17,
    "PadOptions": 22,
    "TransposeOptions": 26,
    "SqueezeOptions": 30,
    "LogSoftmaxOptions": 36,
    "DequantizeOptions": 38,
    "PadV2Options": 43,
    "QuantizeOptions": 89,
}


class Slots:
    """Field numbers of the tables, as in schema.fbs (a union takes two: _type, value)."""

    class Model:
        version, operator_codes, subgraphs, description, buffers = 0, 1, 2, 3, 4
        metadata_buffer, metadata, signature_defs = 5, 6, 7
        count = 8

    class OperatorCode:
        deprecated_builtin_code, custom_code, version, builtin_code = 0, 1, 2, 3
        count = 4

    class SubGraph:
        tensors, inputs, outputs, operators, name = 0, 1, 2, 3, 4
        count = 5

    class Tensor:
        shape, type, buffer, name, quantization, is_variable, sparsity = 0, 1, 2, 3, 4, 5, 6
        shape_signature, has_rank, variant_tensors = 7, 8, 9
        count = 8  # what the writer uses (shape .. shape_signature)

    class Buffer:
        data, offset, size = 0, 1, 2
        count = 3

    class Quantization:
        min, max, scale, zero_point, details_type, details, quantized_dimension = range(7)
        count = 7

    class Operator:
        opcode_index, inputs, outputs, builtin_options_type, builtin_options = 0, 1, 2, 3, 4
        custom_options, custom_options_format, mutating_variable_inputs = 5, 6, 7
        intermediates, large_custom_options_offset, large_custom_options_size = 8, 9, 10
        builtin_options_2_type, builtin_options_2 = 11, 12
        count = 5

    class Metadata:
        name, buffer = 0, 1
        count = 2

    class Conv2DOptions:
        padding, stride_w, stride_h, fused_activation_function = 0, 1, 2, 3
        dilation_w_factor, dilation_h_factor = 4, 5
        count = 6

    class DepthwiseConv2DOptions:
        padding, stride_w, stride_h, depth_multiplier, fused_activation_function = 0, 1, 2, 3, 4
        dilation_w_factor, dilation_h_factor = 5, 6
        count = 7

    class FullyConnectedOptions:
        fused_activation_function, weights_format, keep_num_dims = 0, 1, 2
        asymmetric_quantize_inputs = 3
        count = 3

    class Pool2DOptions:
        padding, stride_w, stride_h, filter_width, filter_height = 0, 1, 2, 3, 4
        fused_activation_function = 5
        count = 6

    class ReshapeOptions:
        new_shape = 0
        count = 1

    class SoftmaxOptions:
        beta = 0
        count = 1

    class AddOptions:
        fused_activation_function = 0
        count = 1

    class SqueezeOptions:
        squeeze_dims = 0
        count = 1
