/* bench_lt_algos.c — how good is cuBLASLt's first heuristic answer for the
 * matmuls of one GPT-2 training step? For every product kernels/cuda/matmul.cu
 * issues (same transposes, leading dimensions, output types, epilogues and
 * workspace), ask the heuristic for up to --algos answers, time each one
 * (CUDA events, median of --reps after 3 warm-ups) and print one JSON line
 * per product: the first answer's time, the best time, the best's index and
 * its configuration (tile, stages, split-K, reduction scheme), which answers
 * give bit-identical outputs to the first (same_bits, one flag per answer:
 * the ones matmul.cu's lt_tune may choose among), whether each answer
 * repeats its own bits (repeatable), the fastest of those, and the
 * step-weighted totals. One probe not in the step: DGELU_BGRAD (the fc bias
 * gradient from the epilogue).
 *
 * Usage: bench_lt_algos [--tokens 16384] [--width 768] [--vocab-padded 50304]
 *        [--head-pieces 4] [--algos 16] [--reps 20]
 */
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CK(x)                                                                                                          \
    do {                                                                                                               \
        cudaError_t e_ = (x);                                                                                          \
        if (e_ != cudaSuccess) {                                                                                       \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));                      \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)
#define LK(x)                                                                                                          \
    do {                                                                                                               \
        cublasStatus_t s_ = (x);                                                                                       \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                             \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cublasLtGetStatusString(s_));                  \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

#define WORKSPACE_BYTES (32u << 20) /* as CUDA_LT_WORKSPACE_BYTES */

typedef struct {
    const char *name;
    int count; /* per training step */
    int transa, transb, m, n, k, lda, ldb, ldd;
    int f32_out; /* dweight: f32 D, beta 1 */
    cublasLtEpilogue_t epi;
    int aux_ld; /* GELU_AUX_BIAS / DGELU */
} product;

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static float time_algo(cublasLtHandle_t lt, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t la,
                       cublasLtMatrixLayout_t lb, cublasLtMatrixLayout_t ld, const cublasLtMatmulAlgo_t *algo,
                       const void *A, const void *B, void *D, float beta, void *ws, cudaStream_t st, int reps) {
    float alpha = 1.0f;
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    float *t = malloc((size_t)reps * sizeof *t);
    for (int r = -3; r < reps; r++) {
        CK(cudaEventRecord(e0, st));
        cublasStatus_t s = cublasLtMatmul(lt, op, &alpha, A, la, B, lb, &beta, D, ld, D, ld, algo, ws,
                                          WORKSPACE_BYTES, st);
        CK(cudaEventRecord(e1, st));
        CK(cudaEventSynchronize(e1));
        if (s != CUBLAS_STATUS_SUCCESS) { /* this answer cannot run these operands */
            free(t);
            CK(cudaEventDestroy(e0));
            CK(cudaEventDestroy(e1));
            return -1.0f;
        }
        if (r >= 0) CK(cudaEventElapsedTime(&t[r], e0, e1));
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_float);
    float med = t[reps / 2];
    free(t);
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    return med;
}

/* n bf16 values, uniform in (-1, 1), from xorshift64 (seed), copied in
 * chunks through host memory: the hashes must see real summation orders,
 * which constant operands would hide. */
static void fill_random_bf16(void *dev, size_t n, uint64_t seed) {
    const size_t chunk = (size_t)1 << 24;
    uint16_t *h = malloc(chunk * sizeof *h);
    if (!h) {
        fprintf(stderr, "bench_lt_algos: out of host memory\n");
        exit(1);
    }
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t off = 0; off < n; off += chunk) {
        size_t m = n - off < chunk ? n - off : chunk;
        for (size_t i = 0; i < m; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            float f = (float)((double)(x >> 11) * (2.0 / 9007199254740992.0) - 1.0);
            uint32_t u;
            memcpy(&u, &f, sizeof u);
            h[i] = (uint16_t)(u >> 16);
        }
        CK(cudaMemcpy((uint16_t *)dev + off, h, m * sizeof *h, cudaMemcpyHostToDevice));
    }
    free(h);
}

/* FNV-1a over the bytes of a device buffer (copied to the host). */
static uint64_t device_hash(const void *dev, size_t bytes, unsigned char *host) {
    CK(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost));
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < bytes; i++) h = (h ^ host[i]) * 1099511628211ull;
    return h;
}

static void describe(const cublasLtMatmulAlgo_t *a, char *buf, size_t n) {
    uint32_t tile = 0, stages = 0, red = 0, splitk = 0, cta = 0;
    uint16_t id = 0;
    size_t w;
    int algo_id = 0;
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_ID, &algo_id, sizeof algo_id, &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof stages, &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk, &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof red, &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &id, sizeof id, &w);
    cublasLtMatmulAlgoConfigGetAttribute(a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &cta, sizeof cta, &w);
    snprintf(buf, n, "{\"algo\":%d,\"tile\":%u,\"stages\":%u,\"splitk\":%u,\"red\":%u,\"cluster\":%u,\"swizzle\":%u}",
             algo_id, tile, stages, splitk, red, (unsigned)id, cta);
}

int main(int argc, char **argv) {
    int N = 16384, C = 768, Vp = 50304, pieces = 4, n_algos = 16, reps = 20;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i];
        int v = atoi(argv[i + 1]);
        if (!strcmp(k, "--tokens")) N = v;
        else if (!strcmp(k, "--width")) C = v;
        else if (!strcmp(k, "--vocab-padded")) Vp = v;
        else if (!strcmp(k, "--head-pieces")) pieces = v;
        else if (!strcmp(k, "--algos")) n_algos = v;
        else if (!strcmp(k, "--reps")) reps = v;
        else {
            fprintf(stderr, "bench_lt_algos: unknown flag %s\n", k);
            return 2;
        }
    }
    if (N <= 0 || C <= 0 || Vp <= 0 || pieces <= 0 || N % pieces || n_algos <= 0 || reps <= 0) {
        fprintf(stderr, "bench_lt_algos: sizes must be positive and --tokens divisible by --head-pieces\n");
        return 2;
    }
    const int Nh = N / pieces, C3 = 3 * C, C4 = 4 * C;
    /* matmul.cu: forward (T, N, m = OC, n = N, k = IC), dinp (N, N, m = IC,
     * n = N, k = OC), dweight (N, T, m = IC, n = OC, k = N, f32 += ). */
#define FWD(nm, cnt, IC, OC, NN, E, AUX) {nm, cnt, 1, 0, OC, NN, IC, IC, IC, OC, 0, E, AUX}
#define DIN(nm, cnt, IC, OC, NN, E, AUX) {nm, cnt, 0, 0, IC, NN, OC, IC, OC, IC, 0, E, AUX}
#define DW(nm, cnt, IC, OC, NN)          {nm, cnt, 0, 1, IC, OC, NN, IC, OC, IC, 1, CUBLASLT_EPILOGUE_DEFAULT, 0}
    const product prods[] = {
        FWD("fwd_qkv", 12, C, C3, N, CUBLASLT_EPILOGUE_BIAS, 0),
        FWD("fwd_attproj", 12, C, C, N, CUBLASLT_EPILOGUE_BIAS, 0),
        FWD("fwd_fc_gelu", 12, C, C4, N, CUBLASLT_EPILOGUE_GELU_AUX_BIAS, C4),
        FWD("fwd_fcproj", 12, C4, C, N, CUBLASLT_EPILOGUE_BIAS, 0),
        FWD("fwd_head_piece", pieces, C, Vp, Nh, CUBLASLT_EPILOGUE_DEFAULT, 0),
        FWD("fwd_head_whole", 0, C, Vp, N, CUBLASLT_EPILOGUE_DEFAULT, 0),
        DIN("dinp_qkv", 12, C, C3, N, CUBLASLT_EPILOGUE_DEFAULT, 0),
        DIN("dinp_attproj", 12, C, C, N, CUBLASLT_EPILOGUE_DEFAULT, 0),
        DIN("dinp_fc", 12, C, C4, N, CUBLASLT_EPILOGUE_DEFAULT, 0),
        DIN("dinp_fcproj_dgelu", 12, C4, C, N, CUBLASLT_EPILOGUE_DGELU, C4),
        /* a probe, not in the step: DGELU with the fc bias gradient (f32) from the epilogue */
        DIN("dinp_fcproj_dgelu_bgrad", 0, C4, C, N, CUBLASLT_EPILOGUE_DGELU_BGRAD, C4), /* H200, CUDA 13: none */
        DIN("dinp_head_piece", pieces, C, Vp, Nh, CUBLASLT_EPILOGUE_DEFAULT, 0),
        DIN("dinp_head_whole", 0, C, Vp, N, CUBLASLT_EPILOGUE_DEFAULT, 0),
        DW("dw_qkv", 12, C, C3, N),
        DW("dw_attproj", 12, C, C, N),
        DW("dw_fc", 12, C, C4, N),
        DW("dw_fcproj", 12, C4, C, N),
        DW("dw_head_piece", pieces, C, Vp, Nh),
        DW("dw_head_whole", 0, C, Vp, N),
    };
    const int np = (int)(sizeof prods / sizeof prods[0]);

    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    cublasLtHandle_t lt;
    LK(cublasLtCreate(&lt));
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    /* operand buffers big enough for every product above; big: D's */
    size_t big = (size_t)Vp * N * 2 + (size_t)C4 * N * 4;
    void *A, *B, *D, *aux, *bias, *biasf, *ws;
    CK(cudaMalloc(&A, (size_t)Vp * C4 * 2));
    CK(cudaMalloc(&B, (size_t)N * (Vp > C4 ? Vp : C4) * 2));
    CK(cudaMalloc(&D, big));
    CK(cudaMalloc(&aux, (size_t)N * C4 * 2));
    CK(cudaMalloc(&bias, (size_t)Vp * 2));
    CK(cudaMalloc(&biasf, (size_t)Vp * 4));
    CK(cudaMalloc(&ws, WORKSPACE_BYTES));
    fill_random_bf16(A, (size_t)Vp * C4, 1);
    fill_random_bf16(B, (size_t)N * (Vp > C4 ? Vp : C4), 2);
    CK(cudaMemset(D, 0, big));
    fill_random_bf16(aux, (size_t)N * C4, 3);
    CK(cudaMemset(bias, 0, (size_t)Vp * 2));

    unsigned char *host = malloc(big);
    if (!host) {
        fprintf(stderr, "bench_lt_algos: out of host memory\n");
        return 1;
    }
    double tot_first = 0, tot_best = 0, tot_nosplit = 0, tot_same = 0;
    for (int p = 0; p < np; p++) {
        const product *q = &prods[p];
        cublasLtMatmulDesc_t op;
        cublasLtMatrixLayout_t la, lb, ld;
        cublasLtMatmulPreference_t pref;
        cublasOperation_t ta = q->transa ? CUBLAS_OP_T : CUBLAS_OP_N, tb = q->transb ? CUBLAS_OP_T : CUBLAS_OP_N;
        cudaDataType_t dt = q->f32_out ? CUDA_R_32F : CUDA_R_16BF;
        LK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
        LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
        LK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, q->transa ? q->k : q->m, q->transa ? q->m : q->k, q->lda));
        LK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, q->transb ? q->n : q->k, q->transb ? q->k : q->n, q->ldb));
        LK(cublasLtMatrixLayoutCreate(&ld, dt, q->m, q->n, q->ldd));
        if (q->epi != CUBLASLT_EPILOGUE_DEFAULT) {
            LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &q->epi, sizeof q->epi));
            if (q->epi == CUBLASLT_EPILOGUE_BIAS || q->epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS) {
                cudaDataType_t bt = CUDA_R_16BF;
                LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
                LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
            }
            if (q->epi == CUBLASLT_EPILOGUE_DGELU_BGRAD) { /* written: the column sums of the output */
                cudaDataType_t bt = CUDA_R_32F;
                LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &biasf, sizeof biasf));
                LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
            }
            if (q->aux_ld) {
                int64_t ald = q->aux_ld;
                LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof aux));
                LK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ald, sizeof ald));
            }
        }
        LK(cublasLtMatmulPreferenceCreate(&pref));
        size_t wsb = WORKSPACE_BYTES;
        LK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
        cublasLtMatmulHeuristicResult_t *h = calloc((size_t)n_algos, sizeof *h);
        int found = 0;
        cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, ld, ld, pref, n_algos, h, &found);
        if (hs != CUBLAS_STATUS_SUCCESS) { /* e.g. an epilogue not offered for this layout: 0 answers */
            fprintf(stderr, "bench_lt_algos: %s: no answer (%s)\n", q->name, cublasLtGetStatusString(hs));
            found = 0;
        }
        float beta = q->f32_out ? 1.0f : 0.0f;
        float first = -1, best = -1, nosplit = -1, same_best = -1;
        int best_i = -1;
        char same[64] = "", repeat[64] = "";
        uint64_t ref = 0;
        size_t bytes_d = (size_t)q->ldd * q->n * (q->f32_out ? 4 : 2);
        size_t bytes_aux = q->epi == CUBLASLT_EPILOGUE_GELU_AUX_BIAS ? (size_t)q->aux_ld * q->n * 2 : 0;
        size_t bytes_bgrad = q->epi == CUBLASLT_EPILOGUE_DGELU_BGRAD ? (size_t)q->m * 4 : 0;
        char desc0[256] = "", descb[256] = "";
        for (int i = 0; i < found; i++) {
            float t = time_algo(lt, op, la, lb, ld, &h[i].algo, A, B, D, beta, ws, st, reps);
            if (t < 0) {
                if (i < 63) same[i] = '-';
                continue;
            }
            int same_bits = 0;
            if (q->count > 0 || bytes_bgrad) { /* two runs from D = 0, their outputs hashed */
                float one = 1.0f, zero = 0.0f;
                uint64_t hv = 0, hv2 = 0;
                for (int run = 0; run < 2; run++) {
                    CK(cudaMemset(D, 0, bytes_d));
                    LK(cublasLtMatmul(lt, op, &one, A, la, B, lb, &zero, D, ld, D, ld, &h[i].algo, ws, WORKSPACE_BYTES,
                                      st));
                    CK(cudaStreamSynchronize(st));
                    uint64_t x = device_hash(D, bytes_d, host) ^ (bytes_aux ? device_hash(aux, bytes_aux, host) : 0) ^
                                 (bytes_bgrad ? device_hash(biasf, bytes_bgrad, host) * 3 : 0);
                    if (run == 0) hv = x;
                    else hv2 = x;
                }
                if (i < 63) repeat[i] = hv == hv2 ? '1' : '0';
                if (i == 0) ref = hv;
                same_bits = hv == ref;
                if (i < 63) same[i] = same_bits ? '1' : '0';
                if (same_bits && (same_best < 0 || t < same_best)) same_best = t;
            }
            uint32_t sk = 1;
            size_t w;
            cublasLtMatmulAlgoConfigGetAttribute(&h[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &sk, sizeof sk, &w);
            if (i == 0) {
                first = t;
                describe(&h[i].algo, desc0, sizeof desc0);
            }
            if (sk <= 1 && (nosplit < 0 || t < nosplit)) nosplit = t;
            if (best < 0 || t < best) {
                best = t;
                best_i = i;
                describe(&h[i].algo, descb, sizeof descb);
            }
        }
        double gflop = 2.0 * q->m * (double)q->n * q->k * 1e-9;
        printf("{\"product\":\"%s\",\"count\":%d,\"m\":%d,\"n\":%d,\"k\":%d,\"answers\":%d,\"first_ms\":%.4f,"
               "\"first_tflops\":%.0f,\"best_ms\":%.4f,\"best_index\":%d,\"best_nosplit_ms\":%.4f,"
               "\"same_bits\":\"%s\",\"repeatable\":\"%s\",\"best_same_bits_ms\":%.4f,\"first_cfg\":%s,"
               "\"best_cfg\":%s}\n",
               q->name, q->count, q->m, q->n, q->k, found, first, first > 0 ? gflop / first : 0, best, best_i, nosplit,
               same, repeat, same_best, desc0[0] ? desc0 : "null", descb[0] ? descb : "null");
        fflush(stdout);
        if (first > 0) tot_first += q->count * first;
        if (best > 0) tot_best += q->count * best;
        if (nosplit > 0) tot_nosplit += q->count * nosplit;
        if (same_best > 0) tot_same += q->count * same_best;
        free(h);
        cublasLtMatmulPreferenceDestroy(pref);
        cublasLtMatrixLayoutDestroy(ld);
        cublasLtMatrixLayoutDestroy(lb);
        cublasLtMatrixLayoutDestroy(la);
        cublasLtMatmulDescDestroy(op);
    }
    printf("{\"bench\":\"lt_algos\",\"device\":\"%s\",\"sms\":%d,\"tokens\":%d,\"head_pieces\":%d,"
           "\"step_ms_first\":%.3f,\"step_ms_best\":%.3f,\"step_ms_best_nosplit\":%.3f,\"step_ms_tuned\":%.3f}\n",
           prop.name, prop.multiProcessorCount, N, pieces, tot_first, tot_best, tot_nosplit, tot_same);
    free(host);
    cudaFree(A);
    cudaFree(B);
    cudaFree(D);
    cudaFree(aux);
    cudaFree(bias);
    cudaFree(biasf);
    cudaFree(ws);
    cudaStreamDestroy(st);
    cublasLtDestroy(lt);
    return 0;
}
