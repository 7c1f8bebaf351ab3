/* int8 max and average pooling over NHWC (TFLM reference_integer_ops pooling.h). */
#include "edgeconv_rt.h"

static int32_t clamp_lo(int32_t v, int32_t lo) { return v < lo ? lo : v; }
static int32_t clamp_hi(int32_t v, int32_t hi) { return v > hi ? hi : v; }

void ec_max_pool(const ec_pool_t *p, const int8_t *in, int8_t *out)
{
    const int32_t c = p->c;
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        const int32_t y0 = oy * p->stride_h - p->pad_top;
        const int32_t ya = clamp_lo(y0, 0), yb = clamp_hi(y0 + p->k_h, p->in_h);
        for (int32_t ox = 0; ox < p->out_w; ox++) {
            const int32_t x0 = ox * p->stride_w - p->pad_left;
            const int32_t xa = clamp_lo(x0, 0), xb = clamp_hi(x0 + p->k_w, p->in_w);
            int8_t *dst = out + (oy * p->out_w + ox) * c;
            for (int32_t ch = 0; ch < c; ch++) {
                int32_t best = -128; /* TFLM starts here: an all-padding window gives -128 */
                for (int32_t y = ya; y < yb; y++)
                    for (int32_t x = xa; x < xb; x++) {
                        const int32_t v = in[(y * p->in_w + x) * c + ch];
                        if (v > best) best = v;
                    }
                dst[ch] = (int8_t)clamp_hi(clamp_lo(best, p->act_min), p->act_max);
            }
        }
    }
}

void ec_avg_pool(const ec_pool_t *p, const int8_t *in, int8_t *out)
{
    const int32_t c = p->c;
    for (int32_t oy = 0; oy < p->out_h; oy++) {
        const int32_t y0 = oy * p->stride_h - p->pad_top;
        const int32_t ya = clamp_lo(y0, 0), yb = clamp_hi(y0 + p->k_h, p->in_h);
        for (int32_t ox = 0; ox < p->out_w; ox++) {
            const int32_t x0 = ox * p->stride_w - p->pad_left;
            const int32_t xa = clamp_lo(x0, 0), xb = clamp_hi(x0 + p->k_w, p->in_w);
            int32_t n = (yb - ya) * (xb - xa); /* padded taps are excluded (TFLM) */
            int8_t *dst = out + (oy * p->out_w + ox) * c;
            for (int32_t ch = 0; ch < c; ch++) {
                int32_t acc = 0, cnt = n;
                for (int32_t y = ya; y < yb; y++)
                    for (int32_t x = xa; x < xb; x++) acc += in[(y * p->in_w + x) * c + ch];
                if (p->count_include_pad) { /* ONNX: padded taps are the value zp */
                    cnt = p->k_h * p->k_w;
                    acc += (cnt - n) * p->zp;
                }
                /* C division truncates toward zero: this rounds half away from zero */
                acc = acc > 0 ? (acc + cnt / 2) / cnt : (acc - cnt / 2) / cnt;
                dst[ch] = (int8_t)clamp_hi(clamp_lo(acc, p->act_min), p->act_max);
            }
        }
    }
}
