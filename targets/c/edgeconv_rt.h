/* edgeconv C runtime: int8 kernels for models exported by `edgeconv export --target ...`.
 *
 * C99, no malloc, no floating point, nothing from libc beyond <stdint.h>/<string.h>.
 * Every kernel reproduces the integer arithmetic of TFLite Micro's reference kernels
 * (and edgeconv's NumPy/Numba kernels) byte for byte. Tensors are NHWC int8, batch 1.
 *
 * The requantization rounding mode is fixed at export time in edgeconv_config.h:
 * EDGECONV_SINGLE_ROUNDING 0 = TFLM's default double rounding (SRDHM, then rounding
 * divide by a power of two), 1 = TFLITE_SINGLE_ROUNDING (one rounding, ties to +inf).
 */
#ifndef EDGECONV_RT_H
#define EDGECONV_RT_H

#include <stdint.h>
#include <string.h>

#include "edgeconv_config.h"

#ifndef EDGECONV_SINGLE_ROUNDING
#error "edgeconv_config.h must define EDGECONV_SINGLE_ROUNDING (0 or 1)"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The fixed-point helpers need an arithmetic right shift of negative values. C99 leaves
 * it implementation-defined; every compiler edgeconv targets (GCC, Clang, armcc, IAR)
 * shifts arithmetically, and this refuses to compile where that is not so. */
typedef char ec_requires_arithmetic_shift[((-1) >> 1) == -1 ? 1 : -1];

/* ---------------------------------------------------------------- op parameters */

/* conv2d (OHWI weights) and depthwise conv2d ([1, KH, KW, Cin*M] weights). */
typedef struct {
    int32_t in_h, in_w, in_c;
    int32_t out_h, out_w, out_c;
    int32_t k_h, k_w;
    int32_t stride_h, stride_w;
    int32_t dil_h, dil_w;
    int32_t pad_top, pad_left;
    int32_t depth_multiplier; /* depthwise only */
    int32_t in_offset;        /* -input zero point */
    int32_t out_zp;
    int32_t act_min, act_max;
    const int8_t *weights;
    /* bias[oc] + in_offset * kernel_sum[oc] (mod 2^32): the whole input offset term of a
     * window that lies inside the image, folded in at export time */
    const int32_t *bias;
    /* sum of the weights of output channel oc, to undo the fold for a window clipped by
     * the padding */
    const int32_t *kernel_sum;
    const int32_t *mult; /* per output channel */
    const int32_t *shift;
} ec_conv_t;

/* fully connected: out[o] = requant(bias[o] + sum_k w[o][k] * (x[k] - in_zp)). */
typedef struct {
    int32_t rows;    /* independent input rows (batch-like leading dims), usually 1 */
    int32_t in_len;  /* K */
    int32_t out_len; /* Cout */
    int32_t in_offset;
    int32_t out_zp;
    int32_t act_min, act_max;
    const int8_t *weights; /* [Cout][K] */
    const int32_t *bias;   /* bias[o] + in_offset * sum_k w[o][k] (mod 2^32), folded */
    const int32_t *mult;
    const int32_t *shift;
} ec_fc_t;

/* max / average pool over NHWC. */
typedef struct {
    int32_t in_h, in_w, c;
    int32_t out_h, out_w;
    int32_t k_h, k_w;
    int32_t stride_h, stride_w;
    int32_t pad_top, pad_left;
    int32_t act_min, act_max;
    int32_t count_include_pad; /* avg only: ONNX semantic, padded taps count as zp */
    int32_t zp;                /* avg only, with count_include_pad */
} ec_pool_t;

/* int8 softmax over the last axis, TFLM reference (gemmlowp fixed point). */
typedef struct {
    int32_t rows, depth;
    int32_t input_multiplier;
    int32_t input_left_shift;
    int32_t diff_min;
} ec_softmax_t;

/* int8 add with up to 4-D broadcasting (strides 0 on broadcast dims). */
typedef struct {
    int32_t shape[4];     /* output shape */
    int32_t a_stride[4];  /* element strides of input a (0 where broadcast) */
    int32_t b_stride[4];
    int32_t a_offset, a_mult, a_shift;
    int32_t b_offset, b_mult, b_shift;
    int32_t out_offset, out_mult, out_shift;
    int32_t left_shift;
    int32_t act_min, act_max;
} ec_add_t;

/* constant padding of an NHWC tensor with `value`. */
typedef struct {
    int32_t in_h, in_w, c;
    int32_t pad_top, pad_left, pad_bottom, pad_right;
    int32_t value;
} ec_pad_t;

/* transpose of a tensor of rank <= 6 (batch included). */
typedef struct {
    int32_t rank;
    int32_t out_shape[6];
    int32_t in_stride[6]; /* input element stride for each output axis */
} ec_transpose_t;

/* ---------------------------------------------------------------- kernels */

void ec_conv2d(const ec_conv_t *p, const int8_t *in, int8_t *out);
void ec_depthwise_conv2d(const ec_conv_t *p, const int8_t *in, int8_t *out);
/* conv2d (or depthwise) followed by a max pool, computed without the conv output:
 * each conv value is max-ed straight into the pool outputs whose window holds it. */
void ec_conv2d_maxpool(const ec_conv_t *p, const ec_pool_t *pool, const int8_t *in,
                       int8_t *out);
void ec_depthwise_conv2d_maxpool(const ec_conv_t *p, const ec_pool_t *pool, const int8_t *in,
                                 int8_t *out);
void ec_fully_connected(const ec_fc_t *p, const int8_t *in, int8_t *out);
void ec_max_pool(const ec_pool_t *p, const int8_t *in, int8_t *out);
void ec_avg_pool(const ec_pool_t *p, const int8_t *in, int8_t *out);
void ec_softmax(const ec_softmax_t *p, const int8_t *in, int8_t *out); /* in == out allowed */
void ec_add(const ec_add_t *p, const int8_t *a, const int8_t *b, int8_t *out);
/* element-wise clamp (ReLU/ReLU6/Clip on int8); in == out allowed */
void ec_clamp(const int8_t *in, int8_t *out, int32_t n, int32_t lo, int32_t hi);
/* 256-entry lookup (tanh, logistic) indexed by x + 128; in == out allowed */
void ec_lookup(const int8_t *in, int8_t *out, int32_t n, const int8_t *table);
void ec_pad(const ec_pad_t *p, const int8_t *in, int8_t *out);
void ec_transpose(const ec_transpose_t *p, const int8_t *in, int8_t *out);
/* index of the largest value (first one on ties) */
int32_t ec_argmax(const int8_t *x, int32_t n);

/* ---------------------------------------------------------------- dot product */

#if defined(__ARM_FEATURE_DSP) && !defined(EDGECONV_NO_DSP)
#include <arm_acle.h>
#define EC_USE_DSP 1
#else
#define EC_USE_DSP 0
#endif

#if defined(__GNUC__)
#define EC_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define EC_ALWAYS_INLINE static inline
#endif

/* sum of x[i] * w[i] modulo 2^32 (how TFLM's int32 accumulator wraps) */
EC_ALWAYS_INLINE uint32_t ec_dot_s8(const int8_t *x, const int8_t *w, int32_t n)
{
    uint32_t acc = 0;
#if EC_USE_DSP
    /* Cortex-M4/M7/M33: 4 MACs per 2 SMLAD; SXTB16 sign-extends bytes 0,2 (and, after
     * a rotate by 8, bytes 1,3) into halfword pairs. */
    int32_t sacc = 0;
    for (; n >= 4; n -= 4, x += 4, w += 4) {
        uint32_t xv, wv;
        memcpy(&xv, x, 4);
        memcpy(&wv, w, 4);
        const uint32_t xr = (xv >> 8) | (xv << 24), wr = (wv >> 8) | (wv << 24); /* ROR 8 */
        sacc = __smlad(__sxtb16((int32_t)xv), __sxtb16((int32_t)wv), sacc);
        sacc = __smlad(__sxtb16((int32_t)xr), __sxtb16((int32_t)wr), sacc);
    }
    acc = (uint32_t)sacc;
#else
    for (; n >= 4; n -= 4, x += 4, w += 4)
        acc += (uint32_t)((int32_t)x[0] * w[0] + (int32_t)x[1] * w[1] +
                          (int32_t)x[2] * w[2] + (int32_t)x[3] * w[3]);
#endif
    for (; n > 0; n--) acc += (uint32_t)((int32_t)*x++ * *w++);
    return acc;
}

/* ---------------------------------------------------------------- requantization */

/* gemmlowp SaturatingRoundingDoublingHighMul: (a*b + 2^30) >> 31 with the one
 * saturating case. The nudge-then-truncating-divide of the reference equals this
 * floor form for both signs. */
static inline int32_t ec_srdhm(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    return (int32_t)(((int64_t)a * b + ((int64_t)1 << 30)) >> 31);
}

/* gemmlowp RoundingDivideByPOT: x / 2^e rounding half away from zero, e in [0, 31]. */
static inline int32_t ec_rdbpot(int32_t x, int32_t e)
{
    const int32_t mask = (int32_t)((UINT32_C(1) << e) - 1u);
    const int32_t rem = x & mask;
    const int32_t thr = (mask >> 1) + (x < 0);
    return (x >> e) + (rem > thr);
}

/* TFLite MultiplyByQuantizedMultiplier; shift in [-31, 30]. int32 wrap-around where the
 * C++ code would overflow is made explicit with unsigned arithmetic (no UB). */
static inline int32_t ec_requantize(int32_t acc, int32_t mult, int32_t shift)
{
#if EDGECONV_SINGLE_ROUNDING
    const int32_t total = 31 - shift;
    return (int32_t)(((int64_t)acc * mult + ((int64_t)1 << (total - 1))) >> total);
#else
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    return ec_rdbpot(ec_srdhm((int32_t)((uint32_t)acc << left), mult), right);
#endif
}

/* accumulator -> requantize -> + zero point -> clamp -> int8 */
static inline int8_t ec_output(int32_t acc, int32_t mult, int32_t shift, int32_t zp,
                               int32_t lo, int32_t hi)
{
    int32_t v = (int32_t)((uint32_t)ec_requantize(acc, mult, shift) + (uint32_t)zp);
    if (v < lo) v = lo;
    if (v > hi) v = hi;
    return (int8_t)v;
}

#ifdef __cplusplus
}
#endif
#endif /* EDGECONV_RT_H */
