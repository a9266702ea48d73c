/* ops_norm.c — the CPU's row-wise and element-wise ops: token + position
 * embedding (encoder), LayerNorm, GELU (tanh approximation) and the
 * residual add, forward and backward, all f32; and the residual add fused
 * with the LayerNorm that follows it (here simply the two composed).
 *
 * Row loops are split over OpenMP threads (static schedule) when the work is
 * large; column sums (LayerNorm's dweight / dbias) are split by column blocks
 * and summed over rows in row order, and the encoder's scatter-add is serial,
 * so every result is independent of the thread count.
 * Not for: matmuls (ops_dense.c), attention (ops_attention.c).
 */
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu_impl.h"

#define LN_EPS       1e-5f
#define LN_COL_BLOCK 64 /* columns per thread-task of dweight / dbias */

static gml_status check_nonneg(const char *op, int a, int b, int c) {
    if (a < 0 || b < 0 || c < 0)
        return gml_error_set(GML_ERR_INVALID_ARG, "%s: negative shape (%d, %d, %d)", op, a, b, c);
    return GML_OK;
}

/* ---------------------------------------------------------------- encoder */

gml_status gml_cpu_encoder_forward(gml_backend *be, void *out_, const int32_t *tokens, const void *wte_,
                                   const void *wpe_, int B, int T, int C) {
    GML_CHECK(check_nonneg("encoder_forward", B, T, C));
    float *out = out_;       /* (B, T, C) */
    const float *wte = wte_; /* (Vp, C) */
    const float *wpe = wpe_; /* (maxT, C) */
    for (int i = 0; i < B * T; i++)
        if (tokens[i] < 0)
            return gml_error_set(GML_ERR_INVALID_ARG, "encoder_forward: token id %d at row %d", (int)tokens[i], i);
#pragma omp parallel for schedule(static) if ((size_t)B * T * C >= GML_CPU_PAR_MIN)
    for (int i = 0; i < B * T; i++) {
        const int t = i % T;
        float *o = out + (size_t)i * C;
        const float *we = wte + (size_t)tokens[i] * C;
        const float *pe = wpe + (size_t)t * C;
        for (int c = 0; c < C; c++)
            o[c] = we[c] + pe[c];
    }
    return GML_OK;
}

gml_status gml_cpu_encoder_backward(gml_backend *be, float *dwte, float *dwpe, const void *dout_, const int32_t *tokens,
                                    int B, int T, int C) {
    GML_CHECK(check_nonneg("encoder_backward", B, T, C));
    const float *dout = dout_; /* (B, T, C); dwte (Vp, C) +=, dwpe (maxT, C) += */
    for (int i = 0; i < B * T; i++)
        if (tokens[i] < 0)
            return gml_error_set(GML_ERR_INVALID_ARG, "encoder_backward: token id %d at row %d", (int)tokens[i], i);
    /* serial: rows with the same token add into the same dwte row, in row order */
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const float *d = dout + ((size_t)b * T + t) * C;
            float *gw = dwte + (size_t)tokens[b * T + t] * C;
            float *gp = dwpe + (size_t)t * C;
            for (int c = 0; c < C; c++) {
                gw[c] += d[c];
                gp[c] += d[c];
            }
        }
    }
    return GML_OK;
}

/* -------------------------------------------------------------- layernorm */

gml_status gml_cpu_layernorm_forward(gml_backend *be, void *out_, float *mean, float *rstd, const void *inp_,
                                     const void *weight_, const void *bias_, int N, int C) {
    GML_CHECK(check_nonneg("layernorm_forward", N, C, 0));
    if (C == 0 && N > 0) return gml_error_set(GML_ERR_INVALID_ARG, "layernorm_forward: C = 0");
    float *out = out_;             /* (N, C) */
    const float *inp = inp_;       /* (N, C) */
    const float *weight = weight_; /* (C) */
    const float *bias = bias_;     /* (C) */
#pragma omp parallel for schedule(static) if ((size_t)N * C >= GML_CPU_PAR_MIN)
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        double s = 0.0;
        for (int c = 0; c < C; c++)
            s += x[c];
        const float m = (float)(s / C);
        double v = 0.0; /* biased variance of x - m (two passes: no cancellation) */
        for (int c = 0; c < C; c++) {
            const double d = (double)x[c] - m;
            v += d * d;
        }
        const float rs = (float)(1.0 / sqrt(v / C + (double)LN_EPS));
        float *o = out + (size_t)i * C;
        for (int c = 0; c < C; c++)
            o[c] = (x[c] - m) * rs * weight[c] + bias[c];
        mean[i] = m;
        rstd[i] = rs;
    }
    return GML_OK;
}

gml_status gml_cpu_layernorm_backward(gml_backend *be, void *dinp_, float *dweight, float *dbias, const void *dout_,
                                      const void *inp_, const void *weight_, const float *mean, const float *rstd,
                                      int N, int C) {
    GML_CHECK(check_nonneg("layernorm_backward", N, C, 0));
    if (N == 0 || C == 0) return GML_OK;
    float *dinp = dinp_;           /* (N, C) += */
    const float *dout = dout_;     /* (N, C) */
    const float *inp = inp_;       /* (N, C) */
    const float *weight = weight_; /* (C); dweight, dbias (C) += */
    const int par = (size_t)N * C >= GML_CPU_PAR_MIN;

    /* dinp += rstd * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat)), dnorm = dout * weight */
#pragma omp parallel for schedule(static) if (par)
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        const float *dy = dout + (size_t)i * C;
        const float m = mean[i], rs = rstd[i];
        double sum_dn = 0.0, sum_dn_xhat = 0.0;
        for (int c = 0; c < C; c++) {
            const float xhat = (x[c] - m) * rs;
            const float dn = dy[c] * weight[c];
            sum_dn += dn;
            sum_dn_xhat += (double)dn * xhat;
        }
        const float mean_dn = (float)(sum_dn / C), mean_dn_xhat = (float)(sum_dn_xhat / C);
        float *dx = dinp + (size_t)i * C;
        for (int c = 0; c < C; c++) {
            const float xhat = (x[c] - m) * rs;
            const float dn = dy[c] * weight[c];
            dx[c] += rs * (dn - mean_dn - xhat * mean_dn_xhat);
        }
    }

    /* dweight += sum_rows dout * xhat; dbias += sum_rows dout (row order) */
    const int nblk = (C + LN_COL_BLOCK - 1) / LN_COL_BLOCK;
#pragma omp parallel for schedule(static) if (par)
    for (int blk = 0; blk < nblk; blk++) {
        const int c0 = blk * LN_COL_BLOCK;
        const int c1 = c0 + LN_COL_BLOCK < C ? c0 + LN_COL_BLOCK : C;
        float dw[LN_COL_BLOCK] = {0}, db[LN_COL_BLOCK] = {0};
        for (int i = 0; i < N; i++) {
            const float *x = inp + (size_t)i * C;
            const float *dy = dout + (size_t)i * C;
            const float m = mean[i], rs = rstd[i];
            for (int c = c0; c < c1; c++) {
                dw[c - c0] += dy[c] * ((x[c] - m) * rs);
                db[c - c0] += dy[c];
            }
        }
        for (int c = c0; c < c1; c++) {
            dweight[c] += dw[c - c0];
            dbias[c] += db[c - c0];
        }
    }
    return GML_OK;
}

/* ------------------------------------------------------------------- gelu */

#define GELU_SCALE 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_CUBE  0.044715f

gml_status gml_cpu_gelu_forward(gml_backend *be, void *out_, const void *inp_, size_t n) {
    float *out = out_;       /* (n) */
    const float *inp = inp_; /* (n) */
    const long long nn = (long long)n;
#pragma omp parallel for schedule(static) if (n >= GML_CPU_PAR_MIN)
    for (long long i = 0; i < nn; i++) {
        const float x = inp[i];
        const float u = GELU_SCALE * (x + GELU_CUBE * x * x * x);
        out[i] = x / (1.0f + expf(-2.0f * u)); /* 0.5 (1 + tanh u) = sigmoid(2u): one expf, no tanhf */
    }
    return GML_OK;
}

/* d/dx [0.5 x (1 + tanh u)], u = s (x + a x^3):
 *   0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) s (1 + 3 a x^2)
 * With q = sigmoid(2u) = 0.5 (1 + tanh u), 1 - tanh^2 u = 4 q (1 - q):
 *   q + 2 x q (1 - q) s (1 + 3 a x^2)   (glibc's tanhf costs 2x expf here) */
gml_status gml_cpu_gelu_backward(gml_backend *be, void *dinp_, const void *inp_, const void *dout_, size_t n) {
    float *dinp = dinp_;       /* (n) = */
    const float *inp = inp_;   /* (n) */
    const float *dout = dout_; /* (n) */
    const long long nn = (long long)n;
#pragma omp parallel for schedule(static) if (n >= GML_CPU_PAR_MIN)
    for (long long i = 0; i < nn; i++) {
        const float x = inp[i];
        const float u = GELU_SCALE * (x + GELU_CUBE * x * x * x);
        const float q = 1.0f / (1.0f + expf(-2.0f * u));
        const float du = GELU_SCALE * (1.0f + 3.0f * GELU_CUBE * x * x);
        const float g = q + 2.0f * x * q * (1.0f - q) * du;
        dinp[i] = g * dout[i];
    }
    return GML_OK;
}

/* --------------------------------------------------------------- residual */

gml_status gml_cpu_residual_forward(gml_backend *be, void *out_, const void *a_, const void *b_, size_t n) {
    float *out = out_;            /* (n) */
    const float *a = a_, *b = b_; /* (n) each */
    const long long nn = (long long)n;
#pragma omp parallel for schedule(static) if (n >= GML_CPU_PAR_MIN)
    for (long long i = 0; i < nn; i++)
        out[i] = a[i] + b[i];
    return GML_OK;
}

/* ------------------------------------------------------ residual + layernorm */

gml_status gml_cpu_residual_layernorm_forward(gml_backend *be, void *res, void *out, float *mean, float *rstd,
                                              const void *a, const void *b, const void *weight, const void *bias, int N,
                                              int C) {
    GML_CHECK(check_nonneg("residual_layernorm_forward", N, C, 0));
    GML_CHECK(gml_cpu_residual_forward(be, res, a, b, (size_t)N * (size_t)C));
    return gml_cpu_layernorm_forward(be, out, mean, rstd, res, weight, bias, N, C);
}
