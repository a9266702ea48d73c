/* matmul.cu — the linear layer on the GPU through cuBLASLt: forward
 * out = inp @ W^T + bias (bf16 in/out, f32 accumulate), backward dinp (bf16)
 * and dweight (f32 +=, beta = 1), dbias (f32 +=); and the MLP's GELU fused
 * into its two products through cuBLASLt epilogues.
 *
 * Epilogues used (each checked per shape through the heuristic; where none
 * is offered the op does the same work with its own kernels instead):
 *  - BIAS: the forward's bias (bf16, the output's type).
 *  - GELU_AUX_BIAS: fc forward, D = gelu(AB + bias) and the pre-activation
 *    AB + bias to the aux buffer (bf16, ld = OC, a multiple of 8).
 *  - DGELU: fc-proj backward, dinp = (dout @ W) * gelu'(aux = pre) (bf16).
 * All of them take the f32 accumulator before rounding to the output type.
 * The bias gradient is not an epilogue: cuBLASLt's BGRADB (offered for the
 * f32 dweight products) runs as a separate reduction kernel after the GEMM
 * (globalKernelBgradAB, ~2 TB/s on an H100), so dbias is a column sum of our
 * own: 128-bit loads of 8 columns per lane over chunks of rows, partial sums
 * per chunk, then gml_cuda_sum_partials adds the chunks in a fixed order.
 *
 * Algorithm choice, cached per shape, epilogue and pointer alignments (the
 * heuristic is the slow part of a call on the host): cuBLASLt's heuristic
 * ranks its answers by a model, and its first is not always the fastest
 * here (bench_lt_algos on an H200: 19.6 ms of matmuls in a GPT-2 124M step
 * with the first answers, 18.6 ms with the fastest, 18.8 ms with the
 * fastest that give the first answer's bits). A timed choice alone could
 * differ between runs, and runs must stay bit-identical. So on the
 * first call of a product (not while a graph is being recorded) lt_tune
 * times up to LT_CANDIDATES answers on the call's own operands and keeps the
 * fastest of those whose output (and aux output) is bit-identical to the
 * first answer's, by a 64-bit hash: whatever the timings say, the product
 * has the first answer's bits. An accumulating product (beta = 1: dweight)
 * has its D saved to the host first and put back before each hashed run and
 * at the end, so the call's own accumulation happens once. GML_LT_TUNE=0
 * keeps the first answer always; GML_LT_TUNE=verbose prints each choice.
 *
 * Row-major to column-major: cuBLAS sees a row-major (R, K) matrix as the
 * column-major (K, R) matrix with ld = K, i.e. its transpose. So every
 * product below is written for the transposes; the comments give the
 * row-major meaning and the column-major call.
 * Not for: attention products (attention.cu) or the classifier's loss.
 */
#include "kernels/cuda/cuda_common.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Largest power of two dividing the address, capped at 256 (what cuBLASLt's
 * heuristic assumes unless told otherwise). */
static uint32_t ptr_alignment(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && (a % al) != 0)
        al >>= 1;
    return al;
}

/* An epilogue for lt_matmul. */
typedef struct {
    cublasLtEpilogue_t epi;
    const void *bias;   /* BIAS, GELU_AUX_BIAS: the bias (m) */
    bool set_bias_type; /* else cuBLASLt's default: the output's type */
    cudaDataType_t bias_type;
    const void *aux; /* GELU_AUX*: pre-activation, written; DGELU: pre-activation, read */
    int64_t aux_ld;  /* elements */
} lt_epi;

/* ---- heuristic cache: key -> first algorithm (or none) ---- */

typedef struct {
    int32_t m, n, k, lda, ldb, ldd;
    int32_t transa, transb, d_type, epi;
    int64_t aux_ld;
    uint32_t al_a, al_b, al_d, al_bias, al_aux, bias_type; /* bias_type: UINT32_MAX = default */
} lt_key;

typedef struct {
    lt_key key;
    int found;
    cublasLtMatmulAlgo_t algo;
} lt_entry;

#define LT_CACHE_MAX 256 /* entries; past that the oldest are replaced in turn */

struct gml_cuda_lt_cache {
    lt_entry e[LT_CACHE_MAX];
    int n;    /* entries used */
    int next; /* the slot replaced next once full */
};

void gml_cuda_matmul_release(gml_cuda_ctx *ctx) {
    free(ctx->lt_cache);
    ctx->lt_cache = NULL;
}

static lt_entry *cache_find(gml_cuda_ctx *ctx, const lt_key *k) {
    gml_cuda_lt_cache *c = ctx->lt_cache;
    if (!c) return NULL;
    for (int i = 0; i < c->n; i++)
        if (memcmp(&c->e[i].key, k, sizeof *k) == 0) return &c->e[i];
    return NULL;
}

static void cache_put(gml_cuda_ctx *ctx, const lt_key *k, int found, const cublasLtMatmulAlgo_t *algo) {
    if (!ctx->lt_cache) {
        ctx->lt_cache = (gml_cuda_lt_cache *)calloc(1, sizeof(gml_cuda_lt_cache));
        if (!ctx->lt_cache) return; /* no cache: every call asks the heuristic */
    }
    gml_cuda_lt_cache *c = ctx->lt_cache;
    lt_entry *e;
    if (c->n < LT_CACHE_MAX) {
        e = &c->e[c->n++];
    } else {
        e = &c->e[c->next];
        c->next = (c->next + 1) % LT_CACHE_MAX;
    }
    e->key = *k;
    e->found = found;
    if (found) e->algo = *algo;
}

/* ---- lt_tune: the fastest answer with the first answer's bits ---- */

#define LT_CANDIDATES 8 /* heuristic answers asked for when tuning */
#define LT_TUNE_REPS  5 /* timed runs per answer, after one untimed */

/* *h += a mix of every 16-bit unit of p with its index. Sums of 64-bit
 * integers wrap and commute, so the result does not depend on the order in
 * which blocks add. */
__global__ void hash_units_kernel(unsigned long long *h, const uint16_t *p, size_t n) {
    unsigned long long s = 0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        unsigned long long x = ((unsigned long long)p[i] << 40) ^ (unsigned long long)i;
        x *= 0x9E3779B97F4A7C15ull; /* splitmix64's finaliser */
        x ^= x >> 31;
        x *= 0xBF58476D1CE4E5B9ull;
        x ^= x >> 29;
        s += x;
    }
    for (int o = 16; o > 0; o >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0) atomicAdd(h, s);
}

/* The hash of the product's outputs: D (bytes_d) and, for the GELU_AUX
 * epilogues, aux (bytes_aux; 0 for none). */
static gml_status lt_output_hash(gml_cuda_ctx *c, unsigned long long *dev, const void *D, size_t bytes_d,
                                 const void *aux, size_t bytes_aux, unsigned long long *out) {
    CUDA_CHECK(cudaMemsetAsync(dev, 0, sizeof *dev, c->stream));
    const void *ps[2] = {D, aux};
    size_t bs[2] = {bytes_d, bytes_aux};
    for (int i = 0; i < 2; i++) {
        if (!ps[i] || bs[i] < 2) continue;
        size_t n = bs[i] / 2;
        unsigned blocks = cuda_grid_for(n, 256);
        if (blocks > 1024) blocks = 1024;
        hash_units_kernel<<<blocks, 256, 0, c->stream>>>(dev, (const uint16_t *)ps[i], n);
        CUDA_CHECK_LAUNCH("hash_units_kernel");
    }
    CUDA_CHECK(cudaMemcpyAsync(out, dev, sizeof *out, cudaMemcpyDeviceToHost, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    return GML_OK;
}

typedef struct {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, ld;
    const void *A, *B;
    void *D;
    float beta;
    size_t bytes_d;
    const void *aux_out; /* written by the epilogue, or NULL */
    size_t bytes_aux;
} lt_call;

static cublasStatus_t lt_run(gml_cuda_ctx *c, const lt_call *k, const cublasLtMatmulAlgo_t *algo) {
    const float alpha = 1.0f;
    return cublasLtMatmul(c->lt, k->op, &alpha, k->A, k->la, k->B, k->lb, &k->beta, k->D, k->ld, k->D, k->ld, algo,
                          c->lt_workspace, c->lt_workspace_bytes, c->stream);
}

/* *chosen: the index of the fastest of h[0..found) whose outputs hash as
 * h[0]'s do (0 when no other does). With beta = 0, leaves some answer's
 * product in D (and aux); with beta != 0, D as it was. The caller runs the
 * chosen one afterwards. */
static gml_status lt_tune(gml_cuda_ctx *c, const lt_call *k, const cublasLtMatmulHeuristicResult_t *h, int found,
                          bool verbose, int *chosen) {
    gml_status st = GML_OK;
    unsigned long long *dev = NULL, ref = 0, hv = 0;
    cudaEvent_t e0 = NULL, e1 = NULL;
    float best = 0.0f, first = 0.0f;
    int same = 0;
    void *saved = NULL; /* D on the host, for beta != 0 */
    *chosen = 0;
    if (k->beta != 0.0f) {
        saved = malloc(k->bytes_d);
        if (!saved) return gml_error_set(GML_ERR_NOMEM, "lt_tune: %zu bytes of host memory", k->bytes_d);
        CUDA_CHECK_GOTO(cudaMemcpyAsync(saved, k->D, k->bytes_d, cudaMemcpyDeviceToHost, c->stream), st, done);
        CUDA_CHECK_GOTO(cudaStreamSynchronize(c->stream), st, done);
    }
    CUDA_CHECK_GOTO(cudaMalloc(&dev, sizeof *dev), st, done);
    CUDA_CHECK_GOTO(cudaEventCreate(&e0), st, done);
    CUDA_CHECK_GOTO(cudaEventCreate(&e1), st, done);
    for (int i = 0; i < found; i++) {
        if (saved)
            CUDA_CHECK_GOTO(cudaMemcpyAsync(k->D, saved, k->bytes_d, cudaMemcpyHostToDevice, c->stream), st, done);
        if (lt_run(c, k, &h[i].algo) != CUBLAS_STATUS_SUCCESS) {
            if (i == 0) break; /* the caller's own call reports it */
            continue;
        }
        GML_CHECK_GOTO(lt_output_hash(c, dev, k->D, k->bytes_d, k->aux_out, k->bytes_aux, &hv), st, done);
        if (i == 0) ref = hv;
        else if (hv != ref) continue; /* other bits: never chosen */
        CUDA_CHECK_GOTO(cudaEventRecord(e0, c->stream), st, done);
        for (int r = 0; r < LT_TUNE_REPS; r++)
            (void)lt_run(c, k, &h[i].algo); /* it ran above: same call, same answer */
        CUDA_CHECK_GOTO(cudaEventRecord(e1, c->stream), st, done);
        CUDA_CHECK_GOTO(cudaEventSynchronize(e1), st, done);
        float ms = 0.0f;
        CUDA_CHECK_GOTO(cudaEventElapsedTime(&ms, e0, e1), st, done);
        same++;
        if (i == 0) first = ms;
        if (i == 0 || ms < best) {
            best = ms;
            *chosen = i;
        }
    }
    if (verbose)
        fprintf(stderr, "lt_tune: %zu-byte product: answer %d of %d (%d with the first's bits), %.4f -> %.4f ms\n",
                k->bytes_d, *chosen, found, same, first / LT_TUNE_REPS, best / LT_TUNE_REPS);
    if (saved) { /* the caller's product accumulates onto the D it gave */
        CUDA_CHECK_GOTO(cudaMemcpyAsync(k->D, saved, k->bytes_d, cudaMemcpyHostToDevice, c->stream), st, done);
        CUDA_CHECK_GOTO(cudaStreamSynchronize(c->stream), st, done);
    }
done:
    free(saved);
    if (e1) (void)cudaEventDestroy(e1);
    if (e0) (void)cudaEventDestroy(e0);
    if (dev) (void)cudaFree(dev);
    return st;
}

typedef enum { LT_TUNE_OFF, LT_TUNE_ON, LT_TUNE_VERBOSE } lt_tune_mode;

/* Tune this call's product? Not while the stream records a graph (timing
 * needs host syncs), nor with GML_LT_TUNE=0; GML_LT_TUNE=verbose also says
 * what was chosen. The variable is read at every uncached shape. */
static lt_tune_mode lt_tune_wanted(gml_cuda_ctx *c) {
    const char *e = getenv("GML_LT_TUNE");
    if (e && !strcmp(e, "0")) return LT_TUNE_OFF;
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(c->stream, &cs) != cudaSuccess) {
        (void)cudaGetLastError();
        return LT_TUNE_OFF;
    }
    if (cs != cudaStreamCaptureStatusNone) return LT_TUNE_OFF;
    return e && !strcmp(e, "verbose") ? LT_TUNE_VERBOSE : LT_TUNE_ON;
}

/* D (m, n) col-major, ld = ldd = alpha * op(A) op(B) + beta * D, where
 * A is stored (transa ? (k, m) : (m, k)) col-major with ld = lda and B is
 * stored (transb ? (n, k) : (k, n)) with ld = ldb. A and B are bf16; D is
 * d_type (bf16 or f32). f32 compute. With `epi`, the epilogue is applied; if
 * no algorithm offers it for these operands, nothing runs and *ran = false
 * (the caller does the epilogue's work itself). Without, *ran (if given) is
 * true and a missing algorithm is an error. */
static gml_status lt_matmul(gml_cuda_ctx *ctx, bool transa, bool transb, int m, int n, int k, const void *A, int lda,
                            const void *B, int ldb, void *D, cudaDataType_t d_type, int ldd, float beta,
                            const lt_epi *epi, bool *ran) {
    gml_status st = GML_OK;
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t heur[LT_CANDIDATES];
    cublasLtMatmulAlgo_t algo;
    int found = 0;
    float alpha = 1.0f;
    cublasOperation_t ta = transa ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t tb = transb ? CUBLAS_OP_T : CUBLAS_OP_N;
    size_t ws = ctx->lt_workspace_bytes;
    uint32_t al_a = ptr_alignment(A), al_b = ptr_alignment(B), al_d = ptr_alignment(D);
    lt_key key;
    memset(&key, 0, sizeof key); /* padding too: keys compare with memcmp */
    key.m = m, key.n = n, key.k = k, key.lda = lda, key.ldb = ldb, key.ldd = ldd;
    key.transa = transa, key.transb = transb, key.d_type = (int32_t)d_type;
    key.epi = epi ? (int32_t)epi->epi : (int32_t)CUBLASLT_EPILOGUE_DEFAULT;
    key.aux_ld = epi ? epi->aux_ld : 0;
    key.al_a = al_a, key.al_b = al_b, key.al_d = al_d;
    key.al_bias = epi && epi->bias ? ptr_alignment(epi->bias) : 0;
    key.al_aux = epi && epi->aux ? ptr_alignment(epi->aux) : 0;
    key.bias_type = epi && epi->set_bias_type ? (uint32_t)epi->bias_type : UINT32_MAX;
    if (ran) *ran = false;

    CUBLAS_CHECK_GOTO(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F), st, done);
    CUBLAS_CHECK_GOTO(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), st, done);
    CUBLAS_CHECK_GOTO(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), st, done);
    CUBLAS_CHECK_GOTO(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, transa ? k : m, transa ? m : k, lda), st, done);
    CUBLAS_CHECK_GOTO(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, transb ? n : k, transb ? k : n, ldb), st, done);
    CUBLAS_CHECK_GOTO(cublasLtMatrixLayoutCreate(&ld, d_type, m, n, ldd), st, done);
    if (epi) {
        CUBLAS_CHECK_GOTO(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi->epi, sizeof epi->epi),
                          st, done);
        if (epi->bias)
            CUBLAS_CHECK_GOTO(
                cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &epi->bias, sizeof epi->bias), st,
                done);
        if (epi->set_bias_type)
            CUBLAS_CHECK_GOTO(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &epi->bias_type,
                                                             sizeof epi->bias_type),
                              st, done);
        if (epi->aux) {
            CUBLAS_CHECK_GOTO(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &epi->aux,
                                                             sizeof epi->aux),
                              st, done);
            CUBLAS_CHECK_GOTO(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &epi->aux_ld,
                                                             sizeof epi->aux_ld),
                              st, done);
        }
    }

    {
        const lt_entry *hit = cache_find(ctx, &key);
        if (hit) {
            found = hit->found;
            if (found) algo = hit->algo;
        } else {
            CUBLAS_CHECK_GOTO(cublasLtMatmulPreferenceCreate(&pref), st, done);
            const struct {
                cublasLtMatmulPreferenceAttributes_t attr;
                const void *val;
                size_t bytes;
            } prefs[] = {{CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws},
                         {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a},
                         {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b},
                         {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof al_d},
                         {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof al_d}};
            for (size_t i = 0; i < sizeof prefs / sizeof prefs[0]; i++)
                CUBLAS_CHECK_GOTO(
                    cublasLtMatmulPreferenceSetAttribute(pref, prefs[i].attr, prefs[i].val, prefs[i].bytes), st, done);
            const lt_tune_mode tune = lt_tune_wanted(ctx);
            cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(ctx->lt, op, la, lb, ld, ld, pref,
                                                               tune != LT_TUNE_OFF ? LT_CANDIDATES : 1, heur, &found);
            if (hs != CUBLAS_STATUS_SUCCESS) found = 0;
            int pick = 0;
            if (found > 1) {
                const bool aux_out = epi && (epi->epi == CUBLASLT_EPILOGUE_GELU_AUX ||
                                             epi->epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS);
                const size_t el = d_type == CUDA_R_32F ? 4 : 2;
                const lt_call call = {op, la, lb, ld, A, B, D, beta, (size_t)ldd * (size_t)n * el,
                                      aux_out ? epi->aux : NULL, aux_out ? (size_t)epi->aux_ld * (size_t)n * 2 : 0};
                GML_CHECK_GOTO(lt_tune(ctx, &call, heur, found, tune == LT_TUNE_VERBOSE, &pick), st, done);
            }
            if (found) algo = heur[pick].algo;
            cache_put(ctx, &key, found, &algo);
            if (!found && !epi) {
                st = gml_error_set(GML_ERR_BACKEND,
                                   "cuBLASLt found no algorithm for m=%d n=%d k=%d transa=%d transb=%d lda=%d ldb=%d "
                                   "ldd=%d (alignments A %u B %u D %u bytes): %s",
                                   m, n, k, (int)transa, (int)transb, lda, ldb, ldd, al_a, al_b, al_d,
                                   cublasLtGetStatusString(hs));
                goto done;
            }
        }
    }
    if (!found) {
        if (!epi)
            st = gml_error_set(GML_ERR_BACKEND, "cuBLASLt found no algorithm for m=%d n=%d k=%d (cached)", m, n, k);
        goto done; /* an epilogue nobody offers: the caller does its work */
    }
    CUBLAS_CHECK_GOTO(cublasLtMatmul(ctx->lt, op, &alpha, A, la, B, lb, &beta, D, ld, D, ld, &algo, ctx->lt_workspace,
                                     ws, ctx->stream),
                      st, done);
    if (ran) *ran = true;
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

/* Column sums of dout (N, OC) over chunks of rows, for OC % 8 == 0 and
 * 16-byte aligned rows: block (32, 8) covers 256 columns (8 per lane, one
 * 128-bit load) and row lane y takes the chunk's rows y, y + 8, ...; the 8
 * row lanes are then added in order. partial: (gridDim.y, OC). */
__global__ void colsum_vec_partial_kernel(float *partial, const bf16 *dout /* (N,OC) */, int N, int OC,
                                          int rows_per_chunk) {
    __shared__ float sh[8][256];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c0 = (blockIdx.x * 32 + tx) * 8;
    const int r0 = blockIdx.y * rows_per_chunk, r1 = min(N, r0 + rows_per_chunk);
    float acc[8];
#pragma unroll
    for (int i = 0; i < 8; i++)
        acc[i] = 0.0f;
    if (c0 < OC) {
#pragma unroll 4
        for (int r = r0 + ty; r < r1; r += 8) {
            uint4 raw = *reinterpret_cast<const uint4 *>(dout + (size_t)r * OC + c0);
            const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&raw);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float2 f = __bfloat1622float2(h[i]);
                acc[2 * i] += f.x;
                acc[2 * i + 1] += f.y;
            }
        }
    }
    colsum8_store_partial(sh, acc, partial, OC);
}

/* The same for any OC: block (32, 8), 32 columns x 8 row lanes. */
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

#define MM_ROWS_PER_CHUNK 64
#define MM_MAX_CHUNKS     512

/* dbias (OC) += column sums of dout (N, OC) */
static gml_status colsum_accumulate(gml_cuda_ctx *c, float *dbias, const void *dout, int N, int OC) {
    int chunks = (int)cuda_ceil_div((size_t)N, MM_ROWS_PER_CHUNK);
    if (chunks > MM_MAX_CHUNKS) chunks = MM_MAX_CHUNKS;
    int rows_per_chunk = (int)cuda_ceil_div((size_t)N, (size_t)chunks);
    void *scratch = NULL;
    GML_CHECK(gml_cuda_scratch(c, (size_t)chunks * OC * sizeof(float), &scratch));
    float *partial = (float *)scratch; /* (chunks, OC) */
    if (OC % 8 == 0 && ((uintptr_t)dout & 15u) == 0) {
        dim3 grid(cuda_ceil_div((size_t)OC, 256), (unsigned)chunks);
        colsum_vec_partial_kernel<<<grid, dim3(32, 8), 0, c->stream>>>(partial, (const bf16 *)dout, N, OC,
                                                                       rows_per_chunk);
        CUDA_CHECK_LAUNCH("colsum_vec_partial_kernel");
    } else {
        dim3 grid(cuda_ceil_div((size_t)OC, 32), (unsigned)chunks);
        colsum_partial_kernel<<<grid, dim3(32, 8), 0, c->stream>>>(partial, (const bf16 *)dout, N, OC, rows_per_chunk);
        CUDA_CHECK_LAUNCH("colsum_partial_kernel");
    }
    return gml_cuda_sum_partials(c, dbias, partial, NULL, NULL, chunks, OC);
}

/* row-major out (N,OC) = inp (N,IC) @ W^T (+ bias); column-major:
 * out^T (OC,N) = op_T(Wcm (IC,OC), ld IC) (OC,IC) * inp^T (IC,N), ld IC */
static gml_status forward_product(gml_cuda_ctx *c, void *out, const void *inp, const void *weight, const void *bias,
                                  int N, int IC, int OC) {
    bool ran = false;
    if (bias) {
        lt_epi e = {CUBLASLT_EPILOGUE_BIAS, bias, true, CUDA_R_16BF, NULL, 0};
        GML_CHECK(lt_matmul(c, true, false, OC, N, IC, weight, IC, inp, IC, out, CUDA_R_16BF, OC, 0.0f, &e, &ran));
    }
    if (ran) return GML_OK;
    GML_CHECK(lt_matmul(c, true, false, OC, N, IC, weight, IC, inp, IC, out, CUDA_R_16BF, OC, 0.0f, NULL, NULL));
    if (bias) {
        size_t total = (size_t)N * OC;
        add_bias_kernel<<<cuda_grid_for(total, 256), 256, 0, c->stream>>>((bf16 *)out, (const bf16 *)bias, N, OC);
        CUDA_CHECK_LAUNCH("add_bias_kernel");
    }
    return GML_OK;
}

/* dweight (OC,IC) += dout^T @ inp, and dbias (OC) += column sums of dout when
 * dbias is not NULL. Row-major dweight (OC,IC) += dout^T (OC,N) @ inp (N,IC);
 * column-major: dweight^T (IC,OC) += inp^T (IC,N), ld IC * op_T(dout^T stored
 * (OC,N), ld OC) (N,OC). */
static gml_status dweight_product(gml_cuda_ctx *c, float *dweight, float *dbias, const void *dout, const void *inp,
                                  int N, int IC, int OC) {
    GML_CHECK(lt_matmul(c, false, true, IC, OC, N, inp, IC, dout, OC, dweight, CUDA_R_32F, IC, 1.0f, NULL, NULL));
    if (dbias) GML_CHECK(colsum_accumulate(c, dbias, dout, N, OC));
    return GML_OK;
}

gml_status gml_cuda_matmul_forward(gml_backend *be, void *out, const void *inp, const void *weight, const void *bias,
                                   int N, int IC, int OC) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (N <= 0 || OC <= 0) return GML_OK;
    if (IC <= 0) return gml_error_set(GML_ERR_INVALID_ARG, "matmul_forward: IC = %d", IC);
    return forward_product(c, out, inp, weight, bias, N, IC, OC);
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
    return dweight_product(c, dweight, dbias, dout, inp, N, IC, OC);
}

gml_status gml_cuda_matmul_gelu_forward(gml_backend *be, void *out, void *pre, const void *inp, const void *weight,
                                        const void *bias, int N, int IC, int OC) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (N <= 0 || OC <= 0) return GML_OK;
    if (IC <= 0) return gml_error_set(GML_ERR_INVALID_ARG, "matmul_gelu_forward: IC = %d", IC);
    /* out^T (OC,N) = gelu(W inp^T + bias), aux pre^T (OC,N) with ld OC */
    bool ran = false;
    if (OC % 8 == 0) { /* the aux ld must be a multiple of 8 */
        lt_epi e = {bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX,
                    bias,
                    bias != NULL,
                    CUDA_R_16BF,
                    pre,
                    (int64_t)OC};
        GML_CHECK(lt_matmul(c, true, false, OC, N, IC, weight, IC, inp, IC, out, CUDA_R_16BF, OC, 0.0f, &e, &ran));
    }
    if (ran) return GML_OK;
    GML_CHECK(forward_product(c, pre, inp, weight, bias, N, IC, OC));
    return gml_cuda_gelu_forward(be, out, pre, (size_t)N * (size_t)OC);
}

gml_status gml_cuda_matmul_backward_gelu(gml_backend *be, void *dpre, float *dweight, float *dbias, const void *dout,
                                         const void *inp, const void *weight, const void *pre, int N, int IC, int OC) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (!dpre) return gml_error_set(GML_ERR_INVALID_ARG, "matmul_backward_gelu: dpre is NULL");
    if (N <= 0 || IC <= 0 || OC <= 0) return GML_OK;
    /* dpre^T (IC,N) = dgelu(Wcm (IC,OC) * dout^T (OC,N)), aux pre^T (IC,N) with ld IC */
    bool ran = false;
    if (IC % 8 == 0) {
        lt_epi e = {CUBLASLT_EPILOGUE_DGELU, NULL, false, CUDA_R_16BF, pre, (int64_t)IC};
        GML_CHECK(lt_matmul(c, false, false, IC, N, OC, weight, IC, dout, OC, dpre, CUDA_R_16BF, IC, 0.0f, &e, &ran));
    }
    if (!ran) {
        GML_CHECK(lt_matmul(c, false, false, IC, N, OC, weight, IC, dout, OC, dpre, CUDA_R_16BF, IC, 0.0f, NULL, NULL));
        GML_CHECK(gml_cuda_gelu_backward(be, dpre, pre, dpre, (size_t)N * (size_t)IC)); /* in place */
    }
    return dweight_product(c, dweight, dbias, dout, inp, N, IC, OC);
}
