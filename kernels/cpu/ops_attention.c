/* ops_attention.c — causal multi-head self-attention on the CPU, forward and
 * backward, f32, following core/backend.h: qkv (B,T,3C) holds q | k | v per
 * position, head h uses channels [h*hd, (h+1)*hd), scale = 1/sqrt(hd), and
 * lse (B,NH,T) is the natural log-sum-exp of the scaled scores over s <= t.
 *
 * One (b, h) pair is one task of an OpenMP static loop; a task writes only
 * its own head's channels of out / lse / dqkv, so results do not depend on
 * the thread count. Inner loops run over the head dimension (contiguous).
 * Forward keeps the T scores of one query row in a per-thread slice of the
 * backend workspace (nthreads x T floats, grow-only). Backward recomputes
 * P = exp(score - lse) and needs no scratch:
 *   D_t = dout_t . out_t,  dP_ts = dout_t . v_s,  dS_ts = P_ts (dP_ts - D_t)
 *   dq_t = scale sum_s dS_ts k_s,  dk_s = scale sum_t dS_ts q_t,  dv_s = sum_t P_ts dout_t
 * Not for: non-causal or cross attention, dropout, the qkv projection
 * (ops_dense.c).
 */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "kernels/cpu/cpu_impl.h"

static gml_status check_shape(const char *op, int B, int T, int C, int NH) {
    if (B < 0 || T < 0 || C <= 0 || NH <= 0 || C % NH != 0)
        return gml_error_set(GML_ERR_INVALID_ARG, "%s: bad shape B=%d T=%d C=%d NH=%d (C must be a multiple of NH)", op,
                             B, T, C, NH);
    return GML_OK;
}

/* The simd reductions below split the sum over vector lanes in an order
 * fixed at compile time: results still do not depend on thread count or run. */
static inline float dot(const float *restrict a, const float *restrict b, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

gml_status gml_cpu_attention_forward(gml_backend *be, void *out_, float *lse, const void *qkv_, int B, int T, int C,
                                     int NH) {
    GML_CHECK(check_shape("attention_forward", B, T, C, NH));
    if (B == 0 || T == 0) return GML_OK;
    float *out = out_;       /* (B, T, C) */
    const float *qkv = qkv_; /* (B, T, 3C); lse (B, NH, T) */
    const int hd = C / NH;
    const size_t C3 = 3 * (size_t)C;
    const float scale = 1.0f / sqrtf((float)hd);
    const int nthreads = omp_get_max_threads();
    float *work = NULL; /* (nthreads, T) scores of one query row */
    GML_CHECK(gml_cpu_workspace(be, (size_t)nthreads * T, &work));
    const int nbh = B * NH;
    const int par = (size_t)B * T * T * C >= GML_CPU_PAR_MIN;

#pragma omp parallel for schedule(static) if (par)
    for (int bh = 0; bh < nbh; bh++) {
        const int b = bh / NH, h = bh % NH;
        float *sc = work + (size_t)omp_get_thread_num() * T; /* (T) */
        const float *base = qkv + (size_t)b * T * C3 + (size_t)h * hd;
        for (int t = 0; t < T; t++) {
            const float *q = base + (size_t)t * C3;
            float mx = -INFINITY;
            for (int s = 0; s <= t; s++) {
                const float *k = base + (size_t)s * C3 + C;
                sc[s] = dot(q, k, hd) * scale;
                if (sc[s] > mx) mx = sc[s];
            }
            double sum = 0.0;
            for (int s = 0; s <= t; s++) {
                sc[s] = expf(sc[s] - mx);
                sum += sc[s];
            }
            const float inv = (float)(1.0 / sum);
            float *restrict o = out + ((size_t)b * T + t) * C + (size_t)h * hd;
            memset(o, 0, (size_t)hd * sizeof(float));
            for (int s = 0; s <= t; s++) {
                const float p = sc[s] * inv;
                const float *restrict v = base + (size_t)s * C3 + 2 * (size_t)C;
#pragma omp simd
                for (int d = 0; d < hd; d++)
                    o[d] += p * v[d];
            }
            lse[(size_t)bh * T + t] = mx + (float)log(sum);
        }
    }
    return GML_OK;
}

gml_status gml_cpu_attention_backward(gml_backend *be, void *dqkv_, const void *dout_, const void *qkv_,
                                      const void *out_, const float *lse, int B, int T, int C, int NH) {
    GML_CHECK(check_shape("attention_backward", B, T, C, NH));
    if (B == 0 || T == 0) return GML_OK;
    float *dqkv = dqkv_;       /* (B, T, 3C) = */
    const float *dout = dout_; /* (B, T, C) */
    const float *qkv = qkv_;   /* (B, T, 3C) */
    const float *out = out_;   /* (B, T, C); lse (B, NH, T) */
    const int hd = C / NH;
    const size_t C3 = 3 * (size_t)C;
    const float scale = 1.0f / sqrtf((float)hd);
    const int nbh = B * NH;
    const int par = (size_t)B * T * T * C >= GML_CPU_PAR_MIN;

#pragma omp parallel for schedule(static) if (par)
    for (int bh = 0; bh < nbh; bh++) {
        const int b = bh / NH, h = bh % NH;
        const float *base = qkv + (size_t)b * T * C3 + (size_t)h * hd;
        float *dbase = dqkv + (size_t)b * T * C3 + (size_t)h * hd;
        const float *lse_bh = lse + (size_t)bh * T;
        /* this head's dk and dv are sums over queries: start from zero */
        for (int s = 0; s < T; s++) {
            memset(dbase + (size_t)s * C3 + C, 0, (size_t)hd * sizeof(float));
            memset(dbase + (size_t)s * C3 + 2 * (size_t)C, 0, (size_t)hd * sizeof(float));
        }
        for (int t = 0; t < T; t++) {
            const float *q = base + (size_t)t * C3;
            const float *dyt = dout + ((size_t)b * T + t) * C + (size_t)h * hd;
            const float *yt = out + ((size_t)b * T + t) * C + (size_t)h * hd;
            float *dq = dbase + (size_t)t * C3;
            const float D = dot(dyt, yt, hd);
            const float l = lse_bh[t];
            memset(dq, 0, (size_t)hd * sizeof(float));
            for (int s = 0; s <= t; s++) {
                const float *k = base + (size_t)s * C3 + C;
                const float *v = base + (size_t)s * C3 + 2 * (size_t)C;
                float *dk = dbase + (size_t)s * C3 + C;
                float *dv = dbase + (size_t)s * C3 + 2 * (size_t)C;
                const float p = expf(dot(q, k, hd) * scale - l);
                const float dp = dot(dyt, v, hd);
                const float ds = p * (dp - D);
                const float ds_scaled = ds * scale;
#pragma omp simd
                for (int d = 0; d < hd; d++) {
                    dq[d] += ds * k[d];
                    dk[d] += ds_scaled * q[d];
                    dv[d] += p * dyt[d];
                }
            }
            for (int d = 0; d < hd; d++)
                dq[d] *= scale;
        }
    }
    return GML_OK;
}
