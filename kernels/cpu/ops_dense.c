/* ops_dense.c — the fully connected layer on the CPU, forward and backward:
 * out = inp @ weight^T + bias and its gradients, through OpenBLAS sgemm
 * (row-major, f32), and the MLP's GELU fused into them (matmul_gelu_forward,
 * matmul_backward_gelu), which here are the plain ops composed: the f32
 * reference the CUDA backend's cuBLASLt epilogues are compared with.
 *
 * The bias is added by pre-filling out and running sgemm with beta = 1; the
 * bias gradient is a column sum over rows done in row order (deterministic),
 * split over OpenMP threads by column blocks. Not for: batched or strided
 * matmuls (attention does its own small products in ops_attention.c).
 */
#include <cblas.h>
#include <string.h>

#include "kernels/cpu/cpu_impl.h"

#define DENSE_COL_BLOCK 64 /* columns per thread-task of the bias column sums */

static gml_status check_dims(const char *op, int N, int IC, int OC) {
    if (N < 0 || IC < 0 || OC < 0)
        return gml_error_set(GML_ERR_INVALID_ARG, "%s: negative shape N=%d IC=%d OC=%d", op, N, IC, OC);
    return GML_OK;
}

gml_status gml_cpu_matmul_forward(gml_backend *be, void *out_, const void *inp_, const void *weight_, const void *bias_,
                                  int N, int IC, int OC) {
    GML_CHECK(check_dims("matmul_forward", N, IC, OC));
    float *out = out_;             /* (N, OC) */
    const float *inp = inp_;       /* (N, IC) */
    const float *weight = weight_; /* (OC, IC) */
    const float *bias = bias_;     /* (OC) or NULL */
    if (N == 0 || OC == 0) return GML_OK;
    float beta = 0.0f;
    if (bias) {
        for (int i = 0; i < N; i++)
            memcpy(out + (size_t)i * OC, bias, (size_t)OC * sizeof(float));
        beta = 1.0f;
    } else if (IC == 0) {
        memset(out, 0, (size_t)N * OC * sizeof(float));
    }
    if (IC == 0) return GML_OK; /* an empty product: out = bias (or 0) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, inp, IC, weight, IC, beta, out, OC);
    return GML_OK;
}

gml_status gml_cpu_matmul_backward(gml_backend *be, void *dinp_, float *dweight, float *dbias, const void *dout_,
                                   const void *inp_, const void *weight_, int N, int IC, int OC) {
    GML_CHECK(check_dims("matmul_backward", N, IC, OC));
    float *dinp = dinp_;           /* (N, IC) = , or NULL */
    const float *dout = dout_;     /* (N, OC) */
    const float *inp = inp_;       /* (N, IC) */
    const float *weight = weight_; /* (OC, IC) */
    /* dweight (OC, IC) +=, dbias (OC) += or NULL */

    if (dinp && N > 0 && IC > 0) {
        if (OC == 0)
            memset(dinp, 0, (size_t)N * IC * sizeof(float));
        else /* dinp = dout @ weight */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IC, OC, 1.0f, dout, OC, weight, IC, 0.0f, dinp,
                        IC);
    }
    if (N == 0 || OC == 0) return GML_OK;
    if (IC > 0) /* dweight += dout^T @ inp */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, N, 1.0f, dout, OC, inp, IC, 1.0f, dweight, IC);
    if (dbias) {
        const int nblk = (OC + DENSE_COL_BLOCK - 1) / DENSE_COL_BLOCK;
#pragma omp parallel for schedule(static) if ((size_t)N * OC >= GML_CPU_PAR_MIN)
        for (int blk = 0; blk < nblk; blk++) {
            const int o0 = blk * DENSE_COL_BLOCK;
            const int o1 = o0 + DENSE_COL_BLOCK < OC ? o0 + DENSE_COL_BLOCK : OC;
            float acc[DENSE_COL_BLOCK] = {0};
            for (int i = 0; i < N; i++) {
                const float *row = dout + (size_t)i * OC;
                for (int o = o0; o < o1; o++)
                    acc[o - o0] += row[o];
            }
            for (int o = o0; o < o1; o++)
                dbias[o] += acc[o - o0];
        }
    }
    return GML_OK;
}

gml_status gml_cpu_matmul_gelu_forward(gml_backend *be, void *out, void *pre, const void *inp, const void *weight,
                                       const void *bias, int N, int IC, int OC) {
    /* out (N, OC) = gelu(pre), pre (N, OC) = inp @ weight^T + bias */
    GML_CHECK(gml_cpu_matmul_forward(be, pre, inp, weight, bias, N, IC, OC));
    return gml_cpu_gelu_forward(be, out, pre, (size_t)N * (size_t)OC);
}

gml_status gml_cpu_matmul_backward_gelu(gml_backend *be, void *dpre, float *dweight, float *dbias, const void *dout,
                                        const void *inp, const void *weight, const void *pre, int N, int IC, int OC) {
    if (!dpre) return gml_error_set(GML_ERR_INVALID_ARG, "matmul_backward_gelu: dpre is NULL");
    /* dpre (N, IC) = dout @ weight, then scaled in place by gelu'(pre) */
    GML_CHECK(gml_cpu_matmul_backward(be, dpre, dweight, dbias, dout, inp, weight, N, IC, OC));
    return gml_cpu_gelu_backward(be, dpre, pre, dpre, (size_t)N * (size_t)IC);
}
