/* int8 fully connected (TFLM reference_integer_ops::FullyConnected, integer multiplier). */
#include "edgeconv_rt.h"

void ec_fully_connected(const ec_fc_t *p, const int8_t *in, int8_t *out)
{
    const int32_t k = p->in_len;
    for (int32_t r = 0; r < p->rows; r++) {
        const int8_t *x = in + r * k;
        int8_t *y = out + r * p->out_len;
        for (int32_t o = 0; o < p->out_len; o++) {
            /* the input offset term is folded into bias (sum_k w * (x + off)) */
            const uint32_t acc = (uint32_t)p->bias[o] + ec_dot_s8(x, p->weights + o * k, k);
            y[o] = ec_output((int32_t)acc, p->mult[o], p->shift[o], p->out_zp, p->act_min,
                             p->act_max);
        }
    }
}
