/* int8 element-wise and data-movement ops: clamp, table lookup, add, pad, transpose,
 * argmax. */
#include "edgeconv_rt.h"

void ec_clamp(const int8_t *in, int8_t *out, int32_t n, int32_t lo, int32_t hi)
{
    for (int32_t i = 0; i < n; i++) {
        int32_t v = in[i];
        if (v < lo) v = lo;
        if (v > hi) v = hi;
        out[i] = (int8_t)v;
    }
}

void ec_lookup(const int8_t *in, int8_t *out, int32_t n, const int8_t *table)
{
    for (int32_t i = 0; i < n; i++) out[i] = table[(int32_t)in[i] + 128];
}

/* TFLM reference_integer_ops::AddFunc: both inputs rescaled to a common scale with
 * 2^left_shift headroom, summed, rescaled to the output. */
static int32_t add_one(const ec_add_t *p, int32_t a, int32_t b)
{
    const int32_t sa = (int32_t)((uint32_t)(a + p->a_offset) << p->left_shift);
    const int32_t sb = (int32_t)((uint32_t)(b + p->b_offset) << p->left_shift);
    const int32_t ra = ec_rdbpot(ec_srdhm(sa, p->a_mult), -p->a_shift);
    const int32_t rb = ec_rdbpot(ec_srdhm(sb, p->b_mult), -p->b_shift);
    int32_t v = ec_rdbpot(ec_srdhm(ra + rb, p->out_mult), -p->out_shift) + p->out_offset;
    if (v < p->act_min) v = p->act_min;
    if (v > p->act_max) v = p->act_max;
    return v;
}

void ec_add(const ec_add_t *p, const int8_t *a, const int8_t *b, int8_t *out)
{
    int32_t i = 0;
    for (int32_t d0 = 0; d0 < p->shape[0]; d0++)
        for (int32_t d1 = 0; d1 < p->shape[1]; d1++)
            for (int32_t d2 = 0; d2 < p->shape[2]; d2++)
                for (int32_t d3 = 0; d3 < p->shape[3]; d3++) {
                    const int32_t ia = d0 * p->a_stride[0] + d1 * p->a_stride[1] +
                                       d2 * p->a_stride[2] + d3 * p->a_stride[3];
                    const int32_t ib = d0 * p->b_stride[0] + d1 * p->b_stride[1] +
                                       d2 * p->b_stride[2] + d3 * p->b_stride[3];
                    out[i++] = (int8_t)add_one(p, a[ia], b[ib]);
                }
}

void ec_pad(const ec_pad_t *p, const int8_t *in, int8_t *out)
{
    const int32_t c = p->c;
    const int32_t ow = p->pad_left + p->in_w + p->pad_right;
    const int32_t oh = p->pad_top + p->in_h + p->pad_bottom;
    for (int32_t y = 0; y < oh; y++) {
        int8_t *row = out + y * ow * c;
        const int32_t iy = y - p->pad_top;
        if (iy < 0 || iy >= p->in_h) {
            memset(row, (int8_t)p->value, (size_t)(ow * c));
            continue;
        }
        memset(row, (int8_t)p->value, (size_t)(p->pad_left * c));
        memcpy(row + p->pad_left * c, in + iy * p->in_w * c, (size_t)(p->in_w * c));
        memset(row + (p->pad_left + p->in_w) * c, (int8_t)p->value, (size_t)(p->pad_right * c));
    }
}

void ec_transpose(const ec_transpose_t *p, const int8_t *in, int8_t *out)
{
    int32_t idx[6] = {0, 0, 0, 0, 0, 0};
    int32_t total = 1, src = 0;
    for (int32_t d = 0; d < p->rank; d++) total *= p->out_shape[d];
    for (int32_t i = 0; i < total; i++) {
        out[i] = in[src];
        /* odometer increment of the output index, tracking the input offset */
        for (int32_t d = p->rank - 1; d >= 0; d--) {
            idx[d]++;
            src += p->in_stride[d];
            if (idx[d] < p->out_shape[d]) break;
            src -= idx[d] * p->in_stride[d];
            idx[d] = 0;
        }
    }
}

int32_t ec_argmax(const int8_t *x, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}
