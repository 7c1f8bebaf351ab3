/* int8 conv2d and depthwise conv2d (TFLM reference_integer_ops::ConvPerChannel /
 * DepthwiseConvPerChannel), plain and fused with a following max pool. */
#include "edgeconv_rt.h"

/* [lo, hi) of kernel taps k with 0 <= base + k*dil < size */
static void tap_range(int32_t base, int32_t dil, int32_t size, int32_t k, int32_t *lo,
                      int32_t *hi)
{
    int32_t a = 0, b;
    if (base < 0) a = (-base + dil - 1) / dil;
    if (size - 1 - base < 0) {
        b = 0;
    } else {
        b = (size - 1 - base) / dil + 1;
        if (b > k) b = k;
    }
    if (a > b) a = b;
    *lo = a;
    *hi = b;
}

/* sum of w[i] * (x[i] + off) in int32 arithmetic that wraps like TFLM's accumulator */
static uint32_t dot_offset(const int8_t *x, const int8_t *w, int32_t n, int32_t off)
{
    uint32_t acc = 0;
    for (int32_t i = 0; i < n; i++) acc += (uint32_t)((int32_t)w[i] * ((int32_t)x[i] + off));
    return acc;
}

static int8_t finish(const ec_conv_t *p, uint32_t acc, int32_t oc)
{
    return ec_output((int32_t)acc, p->mult[oc], p->shift[oc], p->out_zp, p->act_min,
                     p->act_max);
}

/* Accumulator start for a window clipped to [ky0,ky1) x [kx0,kx1): the folded bias when
 * the window is whole; otherwise the plain bias (folded bias - offset * kernel sum),
 * and the caller adds the offset tap by tap. */
static int full_window(const ec_conv_t *p, int32_t ky0, int32_t ky1, int32_t kx0, int32_t kx1)
{
    return ky0 == 0 && ky1 == p->k_h && kx0 == 0 && kx1 == p->k_w;
}

/* one conv2d output value at (oy, ox, oc) */
static int8_t conv_value(const ec_conv_t *p, const int8_t *in, int32_t iy0, int32_t ix0,
                         int32_t ky0, int32_t ky1, int32_t kx0, int32_t kx1, int32_t oc)
{
    const int32_t c = p->in_c;
    const int8_t *w = p->weights + oc * p->k_h * p->k_w * c;
    uint32_t acc = (uint32_t)p->bias[oc];
    if (full_window(p, ky0, ky1, kx0, kx1)) {
        for (int32_t ky = 0; ky < p->k_h; ky++) {
            const int8_t *xrow = in + ((iy0 + ky * p->dil_h) * p->in_w + ix0) * c;
            const int8_t *wrow = w + ky * p->k_w * c;
            if (p->dil_w == 1) {
                acc += ec_dot_s8(xrow, wrow, p->k_w * c); /* a kernel row is contiguous */
            } else {
                for (int32_t kx = 0; kx < p->k_w; kx++)
                    acc += ec_dot_s8(xrow + kx * p->dil_w * c, wrow + kx * c, c);
            }
        }
        return finish(p, acc, oc);
    }
    /* a window clipped by the padding: plain bias, offset added tap by tap */
    acc -= (uint32_t)p->in_offset * (uint32_t)p->kernel_sum[oc];
    for (int32_t ky = ky0; ky < ky1; ky++) {
        const int8_t *xrow = in + ((iy0 + ky * p->dil_h) * p->in_w + ix0) * c;
        const int8_t *wrow = w + ky * p->k_w * c;
        if (p->dil_w == 1) {
            acc += dot_offset(xrow + kx0 * c, wrow + kx0 * c, (kx1 - kx0) * c, p->in_offset);
        } else {
            for (int32_t kx = kx0; kx < kx1; kx++)
                acc += dot_offset(xrow + kx * p->dil_w * c, wrow + kx * c, c, p->in_offset);
        }
    }
    return finish(p, acc, oc);
}

/* one depthwise output value at (oy, ox, oc), oc = ic * M + m */
static int8_t depthwise_value(const ec_conv_t *p, const int8_t *in, int32_t iy0, int32_t ix0,
                              int32_t ky0, int32_t ky1, int32_t kx0, int32_t kx1, int32_t oc)
{
    const int32_t c = p->in_c, ic = oc / p->depth_multiplier;
    const int32_t off = full_window(p, ky0, ky1, kx0, kx1) ? 0 : p->in_offset;
    uint32_t acc = (uint32_t)p->bias[oc];
    if (off) acc -= (uint32_t)off * (uint32_t)p->kernel_sum[oc];
    for (int32_t ky = ky0; ky < ky1; ky++) {
        const int8_t *xrow = in + ((iy0 + ky * p->dil_h) * p->in_w + ix0) * c + ic;
        const int8_t *wrow = p->weights + ky * p->k_w * p->out_c + oc;
        for (int32_t kx = kx0; kx < kx1; kx++) {
            const int32_t xv = (int32_t)xrow[kx * p->dil_w * c] + off;
            acc += (uint32_t)((int32_t)wrow[kx * p->out_c] * xv);
        }
    }
    return finish(p, acc, oc);
}

typedef int8_t (*value_fn)(const ec_conv_t *, const int8_t *, int32_t, int32_t, int32_t,
                           int32_t, int32_t, int32_t, int32_t);

static void conv_all(const ec_conv_t *p, const int8_t *in, int8_t *out, value_fn value)
{
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        int32_t ky0, ky1;
        tap_range(iy0, p->dil_h, p->in_h, p->k_h, &ky0, &ky1);
        for (int32_t ox = 0; ox < p->out_w; ox++) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            int32_t kx0, kx1;
            tap_range(ix0, p->dil_w, p->in_w, p->k_w, &kx0, &kx1);
            int8_t *dst = out + (oy * p->out_w + ox) * p->out_c;
            for (int32_t oc = 0; oc < p->out_c; oc++)
                dst[oc] = value(p, in, iy0, ix0, ky0, ky1, kx0, kx1, oc);
        }
    }
}

/* pool outputs [lo, hi) along one axis whose window contains conv position v */
static void pool_range(int32_t v, int32_t pad, int32_t k, int32_t stride, int32_t n,
                       int32_t *lo, int32_t *hi)
{
    /* window o covers o*stride - pad .. o*stride - pad + k - 1 */
    const int32_t first = v + pad - k + 1; /* o*stride >= first */
    int32_t a = first <= 0 ? 0 : (first + stride - 1) / stride;
    int32_t b = (v + pad) / stride + 1; /* o*stride <= v + pad, v + pad >= 0 */
    if (b > n) b = n;
    if (a > b) a = b;
    *lo = a;
    *hi = b;
}

/* Max pool of clamp(v) over a window equals clamp(max(-128, taps)) of TFLM, because the
 * clamp is monotone; so every pool output starts at clamp(-128) = act_min. Only conv
 * values some window reads are computed. */
static void conv_maxpool(const ec_conv_t *p, const ec_pool_t *q, const int8_t *in,
                         int8_t *out, value_fn value)
{
    const int32_t c = p->out_c;
    const int32_t lo = q->act_min, hi = q->act_max;
    memset(out, (int8_t)lo, (size_t)q->out_h * (size_t)q->out_w * (size_t)c);
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        int32_t py0, py1;
        pool_range(oy, q->pad_top, q->k_h, q->stride_h, q->out_h, &py0, &py1);
        if (py0 == py1) continue;
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        int32_t ky0, ky1;
        tap_range(iy0, p->dil_h, p->in_h, p->k_h, &ky0, &ky1);
        for (int32_t ox = 0; ox < p->out_w; ox++) {
            int32_t px0, px1;
            pool_range(ox, q->pad_left, q->k_w, q->stride_w, q->out_w, &px0, &px1);
            if (px0 == px1) continue;
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            int32_t kx0, kx1;
            tap_range(ix0, p->dil_w, p->in_w, p->k_w, &kx0, &kx1);
            for (int32_t oc = 0; oc < c; oc++) {
                int32_t v = value(p, in, iy0, ix0, ky0, ky1, kx0, kx1, oc);
                if (v < lo) v = lo;
                if (v > hi) v = hi;
                for (int32_t py = py0; py < py1; py++) {
                    int8_t *row = out + py * q->out_w * c + oc;
                    for (int32_t px = px0; px < px1; px++)
                        if (v > row[px * c]) row[px * c] = (int8_t)v;
                }
            }
        }
    }
}

void ec_conv2d(const ec_conv_t *p, const int8_t *in, int8_t *out)
{
    conv_all(p, in, out, conv_value);
}

void ec_depthwise_conv2d(const ec_conv_t *p, const int8_t *in, int8_t *out)
{
    conv_all(p, in, out, depthwise_value);
}

void ec_conv2d_maxpool(const ec_conv_t *p, const ec_pool_t *pool, const int8_t *in,
                       int8_t *out)
{
    conv_maxpool(p, pool, in, out, conv_value);
}

void ec_depthwise_conv2d_maxpool(const ec_conv_t *p, const ec_pool_t *pool, const int8_t *in,
                                 int8_t *out)
{
    conv_maxpool(p, pool, in, out, depthwise_value);
}
