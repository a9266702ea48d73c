/* matmul.cu — the linear layer on the GPU through cuBLASLt: forward
 * out = inp @ W^T + bias (bf16 in/out, f32 accumulate), backward dinp (bf16)
 * and dweight (f32 +=, beta = 1), and dbias (f32 +=) with a deterministic
 * column-sum kernel.
 *
 * Row-major to column-major: cuBLAS sees a row-major (R, K) matrix as the
 * column-major (K, R) matrix with ld = K, i.e. its transpose. So every
 * product below is written for the transposes; the comments give the
 * row-major meaning and the column-major call.
 * Not for: attention products (attention.cu) or the classifier's loss.
 */
#include "kernels/cuda/cuda_common.cuh"

/* Largest power of two dividing the address, capped at 256 (what cuBLASLt's
 * heuristic assumes unless told otherwise). */
static uint32_t ptr_alignment(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && (a % al) != 0)
        al >>= 1;
    return al;
}

/* D (m, n) col-major, ld = ldd = alpha * op(A) op(B) + beta * D, where
 * A is stored (transa ? (k, m) : (m, k)) col-major with ld = lda and B is
 * stored (transb ? (n, k) : (k, n)) with ld = ldb. A and B are bf16; D is
 * d_type (bf16 or f32). f32 compute. bias (bf16, m) is added to each column
 * through the BIAS epilogue when not NULL; if no algorithm supports that
 * epilogue for these operands, *bias_done is set to 0 and the caller adds it. */
static gml_status lt_matmul(gml_cuda_ctx *ctx, bool transa, bool transb, int m, int n, int k, const void *A, int lda,
                            const void *B, int ldb, void *D, cudaDataType_t d_type, int ldd, float beta,
                            const void *bias, int *bias_done) {
    gml_status st = GML_OK;
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    float alpha = 1.0f;
    cublasOperation_t ta = transa ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t tb = transb ? CUBLAS_OP_T : CUBLAS_OP_N;
    size_t ws = ctx->lt_workspace_bytes;
    uint32_t al_a = ptr_alignment(A), al_b = ptr_alignment(B), al_d = ptr_alignment(D);
    if (bias_done) *bias_done = 0;

    CUBLAS_CHECK_GOTO(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F), st, done);
    CUBLAS_CHECK_GOTO(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), st, done);
    CUBLAS_CHECK_GOTO(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), st, done);
    CUBLAS_CHECK_GOTO(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, transa ? k : m, transa ? m : k, lda), st, done);
    CUBLAS_CHECK_GOTO(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, transb ? n : k, transb ? k : n, ldb), st, done);
    CUBLAS_CHECK_GOTO(cublasLtMatrixLayoutCreate(&ld, d_type, m, n, ldd), st, done);
    CUBLAS_CHECK_GOTO(cublasLtMatmulPreferenceCreate(&pref), st, done);
    CUBLAS_CHECK_GOTO(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws), st, done);
    CUBLAS_CHECK_GOTO(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a), st,
        done);
    CUBLAS_CHECK_GOTO(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b), st,
        done);
    CUBLAS_CHECK_GOTO(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof al_d), st,
        done);
    CUBLAS_CHECK_GOTO(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof al_d), st,
        done);

    if (bias) {
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        cudaDataType_t bias_type = CUDA_R_16BF;
        CUBLAS_CHECK_GOTO(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi), st,
                          done);
        CUBLAS_CHECK_GOTO(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias), st,
                          done);
        CUBLAS_CHECK_GOTO(
            cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type), st,
            done);
        if (cublasLtMatmulAlgoGetHeuristic(ctx->lt, op, la, lb, ld, ld, pref, 1, &heur, &found) !=
                CUBLAS_STATUS_SUCCESS ||
            found == 0) {
            /* fall back to a plain product; the caller adds the bias */
            cublasLtEpilogue_t none = CUBLASLT_EPILOGUE_DEFAULT;
            CUBLAS_CHECK_GOTO(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &none, sizeof none), st,
                              done);
            found = 0;
        } else if (bias_done) {
            *bias_done = 1;
        }
    }
    if (found == 0) {
        cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(ctx->lt, op, la, lb, ld, ld, pref, 1, &heur, &found);
        if (hs != CUBLAS_STATUS_SUCCESS || found == 0) {
            st = gml_error_set(GML_ERR_BACKEND,
                               "cuBLASLt found no algorithm for m=%d n=%d k=%d transa=%d transb=%d lda=%d ldb=%d "
                               "ldd=%d (alignments A %u B %u D %u bytes): %s",
                               m, n, k, (int)transa, (int)transb, lda, ldb, ldd, al_a, al_b, al_d,
                               cublasLtGetStatusString(hs));
            goto done;
        }
    }
    CUBLAS_CHECK_GOTO(cublasLtMatmul(ctx->lt, op, &alpha, A, la, B, lb, &beta, D, ld, D, ld, &heur.algo,
                                     ctx->lt_workspace, ws, ctx->stream),
                      st, done);
done:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (ld) cublasLtMatrixLayoutDestroy(ld);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (op) cublasLtMatmulDescDestroy(op);
    return st;
}

/* out[n, oc] += bias[oc] (fallback when the epilogue is not available) */
__global__ void add_bias_kernel(bf16 *out /* (N,OC) */, const bf16 *bias /* (OC) */, int N, int OC) {
    size_t total = (size_t)N * OC;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        out[i] = f2bf(bf2f(out[i]) + bf2f(bias[i % (size_t)OC]));
}

/* Column sums of dout (N, OC) over a chunk of rows: block (32, 8), 32
 * columns x 8 row lanes; partial: (gridDim.y, OC). */
__global__ void colsum_partial_kernel(float *partial, const bf16 *dout /* (N,OC) */, int N, int OC,
                                      int rows_per_chunk) {
    __shared__ float sh[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int r0 = blockIdx.y * rows_per_chunk;
    int r1 = min(N, r0 + rows_per_chunk);
    float s = 0.0f;
    if (c < OC)
        for (int r = r0 + threadIdx.y; r < r1; r += 8)
            s += bf2f(dout[(size_t)r * OC + c]);
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < OC) {
        float t = 0.0f;
        for (int k = 0; k < 8; k++)
            t += sh[k][threadIdx.x];
        partial[(size_t)blockIdx.y * OC + c] = t;
    }
}

__global__ void colsum_final_kernel(float *dbias /* (OC) += */, const float *partial, int chunks, int OC) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= OC) return;
    float s = 0.0f;
    for (int k = 0; k < chunks; k++)
        s += partial[(size_t)k * OC + c];
    dbias[c] += s;
}

#define MM_ROWS_PER_CHUNK 64
#define MM_MAX_CHUNKS     512

gml_status gml_cuda_matmul_forward(gml_backend *be, void *out, const void *inp, const void *weight, const void *bias,
                                   int N, int IC, int OC) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (N <= 0 || OC <= 0) return GML_OK;
    if (IC <= 0) return gml_error_set(GML_ERR_INVALID_ARG, "matmul_forward: IC = %d", IC);
    /* row-major out (N,OC) = inp (N,IC) @ W^T; column-major:
     * out^T (OC,N) = op_T(Wcm (IC,OC), ld IC) (OC,IC) * inp^T (IC,N), ld IC */
    int bias_done = 0;
    GML_CHECK(lt_matmul(c, true, false, OC, N, IC, weight, IC, inp, IC, out, CUDA_R_16BF, OC, 0.0f, bias, &bias_done));
    if (bias && !bias_done) {
        size_t total = (size_t)N * OC;
        add_bias_kernel<<<cuda_grid_for(total, 256), 256, 0, c->stream>>>((bf16 *)out, (const bf16 *)bias, N, OC);
        CUDA_CHECK_LAUNCH("add_bias_kernel");
    }
    return GML_OK;
}

gml_status gml_cuda_matmul_backward(gml_backend *be, void *dinp, float *dweight, float *dbias, const void *dout,
                                    const void *inp, const void *weight, int N, int IC, int OC) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (N <= 0 || IC <= 0 || OC <= 0) return GML_OK;
    if (dinp) {
        /* row-major dinp (N,IC) = dout (N,OC) @ W (OC,IC); column-major:
         * dinp^T (IC,N) = Wcm (IC,OC), ld IC * dout^T (OC,N), ld OC */
        GML_CHECK(lt_matmul(c, false, false, IC, N, OC, weight, IC, dout, OC, dinp, CUDA_R_16BF, IC, 0.0f, NULL, NULL));
    }
    /* row-major dweight (OC,IC) += dout^T (OC,N) @ inp (N,IC); column-major:
     * dweight^T (IC,OC) += inp^T (IC,N), ld IC * op_T(dout^T stored (OC,N), ld OC) (N,OC) */
    GML_CHECK(lt_matmul(c, false, true, IC, OC, N, inp, IC, dout, OC, dweight, CUDA_R_32F, IC, 1.0f, NULL, NULL));
    if (dbias) {
        int chunks = (int)cuda_ceil_div((size_t)N, MM_ROWS_PER_CHUNK);
        if (chunks > MM_MAX_CHUNKS) chunks = MM_MAX_CHUNKS;
        int rows_per_chunk = (int)cuda_ceil_div((size_t)N, (size_t)chunks);
        void *scratch = NULL;
        GML_CHECK(gml_cuda_scratch(c, (size_t)chunks * OC * sizeof(float), &scratch));
        float *partial = (float *)scratch; /* (chunks, OC) */
        dim3 grid(cuda_ceil_div((size_t)OC, 32), (unsigned)chunks);
        colsum_partial_kernel<<<grid, dim3(32, 8), 0, c->stream>>>(partial, (const bf16 *)dout, N, OC, rows_per_chunk);
        CUDA_CHECK_LAUNCH("colsum_partial_kernel");
        colsum_final_kernel<<<cuda_ceil_div((size_t)OC, 256), 256, 0, c->stream>>>(dbias, partial, chunks, OC);
        CUDA_CHECK_LAUNCH("colsum_final_kernel");
    }
    return GML_OK;
}
