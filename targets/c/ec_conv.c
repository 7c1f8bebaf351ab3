/* int8 conv2d and depthwise conv2d (TFLM reference_integer_ops::ConvPerChannel /
 * DepthwiseConvPerChannel), plain and fused with a following max pool.
 *
 * Work is organised per output pixel: the window (which taps lie inside the image) is
 * found once, then every output channel is computed over it. A window wholly inside the
 * image starts from the folded bias (bias + in_offset * kernel_sum) and needs only
 * sum(w * x); a window clipped by the padding starts from the plain bias and adds the
 * offset tap by tap, which is TFLM's "skip the out-of-image taps". */
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

/* Where each output value of one pixel goes: dst[oc], or (pool != NULL) max-ed into the
 * pool outputs [py0,py1) x [px0,px1) after the pool's clamp. */
typedef struct {
    int8_t *dst;
    const ec_pool_t *pool;
    int32_t py0, py1, px0, px1;
} sink_t;

/* the window of one output pixel */
typedef struct {
    int32_t iy0, ix0, ky0, ky1, kx0, kx1, full;
} window_t;

static void emit(const sink_t *s, int32_t oc, int32_t c, int32_t v)
{
    if (!s->pool) {
        s->dst[oc] = (int8_t)v;
        return;
    }
    if (v < s->pool->act_min) v = s->pool->act_min;
    if (v > s->pool->act_max) v = s->pool->act_max;
    for (int32_t py = s->py0; py < s->py1; py++) {
        int8_t *row = s->dst + py * s->pool->out_w * c + oc;
        for (int32_t px = s->px0; px < s->px1; px++)
            if (v > row[px * c]) row[px * c] = (int8_t)v;
    }
}

static int32_t finish(const ec_conv_t *p, uint32_t acc, int32_t oc)
{
    return ec_output((int32_t)acc, p->mult[oc], p->shift[oc], p->out_zp, p->act_min,
                     p->act_max);
}

static void conv_pixel(const ec_conv_t *p, const int8_t *in, const window_t *win,
                       const sink_t *s)
{
    const int32_t c = p->in_c, off = p->in_offset;
    const int32_t x_row = p->dil_h * p->in_w * c, w_row = p->k_w * c;
    const int32_t rows = win->ky1 - win->ky0, span = (win->kx1 - win->kx0) * c;
    const int8_t *x0 = in + ((win->iy0 + win->ky0 * p->dil_h) * p->in_w + win->ix0 +
                             win->kx0 * p->dil_w) * c;
    const int8_t *w0 = p->weights + (win->ky0 * p->k_w + win->kx0) * c;
    for (int32_t oc = 0; oc < p->out_c; oc++) {
        const int8_t *x = x0, *w = w0 + oc * p->k_h * w_row;
        uint32_t acc = (uint32_t)p->bias[oc];
        if (p->dil_w == 1 && win->full) {
            for (int32_t r = 0; r < rows; r++, x += x_row, w += w_row)
                acc += ec_dot_s8(x, w, span); /* a kernel row is contiguous */
        } else if (p->dil_w == 1) {
            acc -= (uint32_t)off * (uint32_t)p->kernel_sum[oc];
            for (int32_t r = 0; r < rows; r++, x += x_row, w += w_row)
                acc += dot_offset(x, w, span, off);
        } else {
            const int32_t o = win->full ? 0 : off;
            acc -= (uint32_t)o * (uint32_t)p->kernel_sum[oc];
            for (int32_t r = 0; r < rows; r++, x += x_row, w += w_row)
                for (int32_t k = 0; k < win->kx1 - win->kx0; k++)
                    acc += dot_offset(x + k * p->dil_w * c, w + k * c, c, o);
        }
        emit(s, oc, p->out_c, finish(p, acc, oc));
    }
}

/* depthwise: output channel oc = ic * M + m reads input channel ic only */
static void depthwise_pixel(const ec_conv_t *p, const int8_t *in, const window_t *win,
                            const sink_t *s)
{
    const int32_t c = p->in_c, oc_n = p->out_c;
    const int32_t o = win->full ? 0 : p->in_offset;
    for (int32_t oc = 0; oc < oc_n; oc++) {
        const int32_t ic = oc / p->depth_multiplier;
        uint32_t acc = (uint32_t)p->bias[oc] - (uint32_t)o * (uint32_t)p->kernel_sum[oc];
        for (int32_t ky = win->ky0; ky < win->ky1; ky++) {
            const int8_t *xrow = in + ((win->iy0 + ky * p->dil_h) * p->in_w + win->ix0) * c + ic;
            const int8_t *wrow = p->weights + ky * p->k_w * oc_n + oc;
            for (int32_t kx = win->kx0; kx < win->kx1; kx++) {
                const int32_t xv = (int32_t)xrow[kx * p->dil_w * c] + o;
                acc += (uint32_t)((int32_t)wrow[kx * oc_n] * xv);
            }
        }
        emit(s, oc, oc_n, finish(p, acc, oc));
    }
}

static void window(const ec_conv_t *p, int32_t oy, int32_t ox, window_t *win)
{
    win->iy0 = oy * p->stride_h - p->pad_top;
    win->ix0 = ox * p->stride_w - p->pad_left;
    tap_range(win->iy0, p->dil_h, p->in_h, p->k_h, &win->ky0, &win->ky1);
    tap_range(win->ix0, p->dil_w, p->in_w, p->k_w, &win->kx0, &win->kx1);
    win->full = win->ky0 == 0 && win->ky1 == p->k_h && win->kx0 == 0 && win->kx1 == p->k_w;
}

static void conv_all(const ec_conv_t *p, const int8_t *in, int8_t *out, int depthwise)
{
    window_t win;
    sink_t s = {0, 0, 0, 0, 0, 0};
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        for (int32_t ox = 0; ox < p->out_w; ox++) {
            window(p, oy, ox, &win);
            s.dst = out + (oy * p->out_w + ox) * p->out_c;
            if (depthwise)
                depthwise_pixel(p, in, &win, &s);
            else
                conv_pixel(p, in, &win, &s);
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
 * values some window reads are computed, and each once even if windows overlap. */
static void conv_maxpool(const ec_conv_t *p, const ec_pool_t *q, const int8_t *in,
                         int8_t *out, int depthwise)
{
    window_t win;
    sink_t s = {0, 0, 0, 0, 0, 0};
    s.dst = out;
    s.pool = q;
    memset(out, (int8_t)q->act_min, (size_t)q->out_h * (size_t)q->out_w * (size_t)p->out_c);
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        pool_range(oy, q->pad_top, q->k_h, q->stride_h, q->out_h, &s.py0, &s.py1);
        if (s.py0 == s.py1) continue;
        for (int32_t ox = 0; ox < p->out_w; ox++) {
            pool_range(ox, q->pad_left, q->k_w, q->stride_w, q->out_w, &s.px0, &s.px1);
            if (s.px0 == s.px1) continue;
            window(p, oy, ox, &win);
            if (depthwise)
                depthwise_pixel(p, in, &win, &s);
            else
                conv_pixel(p, in, &win, &s);
        }
    }
}

void ec_conv2d(const ec_conv_t *p, const int8_t *in, int8_t *out)
{
    conv_all(p, in, out, 0);
}

void ec_depthwise_conv2d(const ec_conv_t *p, const int8_t *in, int8_t *out)
{
    conv_all(p, in, out, 1);
}

void ec_conv2d_maxpool(const ec_conv_t *p, const ec_pool_t *pool, const int8_t *in,
                       int8_t *out)
{
    conv_maxpool(p, pool, in, out, 0);
}

void ec_depthwise_conv2d_maxpool(const ec_conv_t *p, const ec_pool_t *pool, const int8_t *in,
                                 int8_t *out)
{
    conv_maxpool(p, pool, in, out, 1);
}
