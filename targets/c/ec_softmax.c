/* int8 softmax, byte-identical to TFLM reference_ops::Softmax<int8_t, int8_t>: gemmlowp
 * fixed-point exp of the max-subtracted inputs, their Q12.19 sum, a fixed-point
 * reciprocal, output quantized as (1/256, -128). All integer; int32 wrap-around is
 * written with unsigned arithmetic so that nothing is undefined behaviour. */
#include "edgeconv_rt.h"

#define SCALED_DIFF_INTEGER_BITS 5 /* exp input is Q5.26 */
#define ACCUMULATION_INTEGER_BITS 12 /* sum of exps is Q12.19 */

static int32_t add32(int32_t a, int32_t b) { return (int32_t)((uint32_t)a + (uint32_t)b); }
static int32_t sub32(int32_t a, int32_t b) { return (int32_t)((uint32_t)a - (uint32_t)b); }

/* SaturatingRoundingMultiplyByPOT with exponent e > 0 */
static int32_t sat_lshift(int32_t x, int32_t e)
{
    const int32_t thr = (int32_t)((UINT32_C(1) << (31 - e)) - 1u);
    if (x > thr) return INT32_MAX;
    if (x < -thr) return INT32_MIN;
    return (int32_t)((uint32_t)x << e);
}

static int32_t rounding_half_sum(int32_t a, int32_t b)
{
    const int64_t s = (int64_t)a + b;
    return (int32_t)(s >= 0 ? (s + 1) / 2 : (s - 1) / 2);
}

/* exp(a) for a in [-1/4, 0), Q0.31 in and out */
static int32_t exp_quarter(int32_t a)
{
    const int32_t constant_term = 1895147668; /* exp(-1/8) */
    const int32_t one_third = 715827883;
    const int32_t x = add32(a, 1 << 28);
    const int32_t x2 = ec_srdhm(x, x);
    const int32_t x3 = ec_srdhm(x2, x);
    const int32_t x4 = ec_srdhm(x2, x2);
    const int32_t x4_over_4 = ec_rdbpot(x4, 2);
    const int32_t poly =
        ec_rdbpot(add32(ec_srdhm(add32(x4_over_4, x3), one_third), x2), 1);
    return add32(constant_term, ec_srdhm(constant_term, add32(x, poly)));
}

/* gemmlowp exp_on_negative_values for a Q5.26 input <= 0; Q0.31 output */
static int32_t exp_negative(int32_t a)
{
    static const int32_t barrel[7] = {1672461947, 1302514674, 790015084, 290630308,
                                      39332535,   720401,     242};
    const int32_t frac_bits = 31 - SCALED_DIFF_INTEGER_BITS;
    const int32_t one_quarter = 1 << (frac_bits - 2);
    const int32_t mod_minus_quarter = (a & (one_quarter - 1)) - one_quarter;
    int32_t result = exp_quarter(sat_lshift(mod_minus_quarter, SCALED_DIFF_INTEGER_BITS));
    const int32_t remainder = sub32(mod_minus_quarter, a);
    for (int32_t k = 0; k < 7; k++) { /* exponents -2 .. 4, all < 5 integer bits */
        if (remainder & (1 << (frac_bits - 2 + k))) result = ec_srdhm(result, barrel[k]);
    }
    return a == 0 ? INT32_MAX : result;
}

/* 1 / (1 + a) for a in [0, 1) as Q0.31, via three Newton-Raphson steps in Q2.29 */
static int32_t one_over_one_plus(int32_t a)
{
    const int32_t half_den = rounding_half_sum(a, INT32_MAX);
    int32_t x = add32(1515870810, ec_srdhm(half_den, -1010580540)); /* 48/17 - 32/17 d */
    for (int i = 0; i < 3; i++) {
        const int32_t one_minus = sub32(1 << 29, ec_srdhm(half_den, x));
        x = add32(x, sat_lshift(ec_srdhm(x, one_minus), 2));
    }
    return sat_lshift(x, 1);
}

static int32_t clz32(uint32_t x)
{
    int32_t n = 0;
    if (x == 0) return 32;
    while (!(x & 0x80000000u)) {
        x <<= 1;
        n++;
    }
    return n;
}

static int32_t scaled_exp(const ec_softmax_t *p, int32_t diff)
{
    const int32_t rescaled =
        ec_srdhm((int32_t)((uint32_t)diff << p->input_left_shift), p->input_multiplier);
    return exp_negative(rescaled);
}

void ec_softmax(const ec_softmax_t *p, const int8_t *in, int8_t *out)
{
    const int32_t n = p->depth;
    for (int32_t r = 0; r < p->rows; r++) {
        const int8_t *x = in + r * n;
        int8_t *y = out + r * n;
        int32_t max = -128;
        for (int32_t i = 0; i < n; i++)
            if (x[i] > max) max = x[i];
        int32_t sum = 0;
        for (int32_t i = 0; i < n; i++) {
            const int32_t diff = x[i] - max;
            if (diff >= p->diff_min)
                sum += ec_rdbpot(scaled_exp(p, diff), ACCUMULATION_INTEGER_BITS);
        }
        const int32_t headroom_plus_one = clz32((uint32_t)sum);
        const int32_t bits_over_unit = ACCUMULATION_INTEGER_BITS - headroom_plus_one;
        const int32_t shifted_sum_minus_one =
            (int32_t)(((uint32_t)sum << headroom_plus_one) - 0x80000000u);
        const int32_t scale = one_over_one_plus(shifted_sum_minus_one);
        const int32_t exponent = bits_over_unit + 31 - 8;
        /* x[i] is read before y[i] is written, so in == out is fine */
        for (int32_t i = 0; i < n; i++) {
            const int32_t diff = x[i] - max;
            int32_t v = -128;
            if (diff >= p->diff_min) {
                v = ec_rdbpot(ec_srdhm(scale, scaled_exp(p, diff)), exponent) - 128;
                if (v < -128) v = -128;
                if (v > 127) v = 127;
            }
            y[i] = (int8_t)v;
        }
    }
}
