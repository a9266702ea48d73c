/* cuda_common.cuh — private plumbing shared by the CUDA backend's .cu files:
 * the checking macros (CUDA_CHECK, CUBLAS_CHECK, CUDA_CHECK_LAUNCH), the
 * backend context (device, stream, cuBLASLt handle and workspace, grow-only
 * scratch, allocation accounting), small device helpers (bf16 <-> f32, warp
 * reductions) and the declarations of every op each .cu file implements.
 *
 * Not for: anything outside kernels/cuda (the public entry points are in
 * backend_cuda.h); the op contracts themselves (core/backend.h is the
 * authority, the comments here only say which file holds what).
 */
#ifndef GML_CUDA_COMMON_CUH
#define GML_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "core/backend.h"
#include "core/status.h"

/* ---- checking macros: record the failing call, its error and file:line ----
 * On failure the CUDA "last error" is read (and so cleared) so that a later
 * CUDA_CHECK_LAUNCH does not report a stale, already-handled error. */
#define CUDA_CHECK(call)                                                                                               \
    do {                                                                                                               \
        cudaError_t cuda_e_ = (call);                                                                                  \
        if (cuda_e_ != cudaSuccess) {                                                                                  \
            (void)cudaGetLastError();                                                                                  \
            return gml_error_set(GML_ERR_BACKEND, "%s failed: %s (%s)", #call, cudaGetErrorName(cuda_e_),              \
                                 cudaGetErrorString(cuda_e_));                                                         \
        }                                                                                                              \
    } while (0)

/* Like CUDA_CHECK, but sets `st` and jumps to `label` (cleanup paths). */
#define CUDA_CHECK_GOTO(call, st, label)                                                                               \
    do {                                                                                                               \
        cudaError_t cuda_e_ = (call);                                                                                  \
        if (cuda_e_ != cudaSuccess) {                                                                                  \
            (void)cudaGetLastError();                                                                                  \
            (st) = gml_error_set(GML_ERR_BACKEND, "%s failed: %s (%s)", #call, cudaGetErrorName(cuda_e_),              \
                                 cudaGetErrorString(cuda_e_));                                                         \
            goto label;                                                                                                \
        }                                                                                                              \
    } while (0)

/* After every kernel launch: catches bad launch configurations at once (and
 * earlier asynchronous faults, which are sticky). `what` names the kernel. */
#define CUDA_CHECK_LAUNCH(what)                                                                                        \
    do {                                                                                                               \
        cudaError_t cuda_e_ = cudaGetLastError();                                                                      \
        if (cuda_e_ != cudaSuccess)                                                                                    \
            return gml_error_set(GML_ERR_BACKEND, "launch of %s failed: %s (%s)", (what), cudaGetErrorName(cuda_e_),   \
                                 cudaGetErrorString(cuda_e_));                                                         \
    } while (0)

#define CUBLAS_CHECK_GOTO(call, st, label)                                                                             \
    do {                                                                                                               \
        cublasStatus_t cublas_s_ = (call);                                                                             \
        if (cublas_s_ != CUBLAS_STATUS_SUCCESS) {                                                                      \
            (st) = gml_error_set(GML_ERR_BACKEND, "%s failed: %s (%s)", #call, cublasLtGetStatusName(cublas_s_),       \
                                 cublasLtGetStatusString(cublas_s_));                                                  \
            goto label;                                                                                                \
        }                                                                                                              \
    } while (0)

#define CUBLAS_CHECK(call)                                                                                             \
    do {                                                                                                               \
        cublasStatus_t cublas_s_ = (call);                                                                             \
        if (cublas_s_ != CUBLAS_STATUS_SUCCESS)                                                                        \
            return gml_error_set(GML_ERR_BACKEND, "%s failed: %s (%s)", #call, cublasLtGetStatusName(cublas_s_),       \
                                 cublasLtGetStatusString(cublas_s_));                                                  \
    } while (0)

/* ---- the backend context (gml_backend.ctx) ---- */

/* One live allocation made through alloc, for in_use accounting on free. */
typedef struct {
    void *ptr; /* NULL: empty slot; CUDA_ALLOC_TOMBSTONE: deleted */
    size_t bytes;
} gml_cuda_alloc_slot;

typedef struct gml_cuda_lt_cache gml_cuda_lt_cache; /* matmul.cu's heuristic cache */

/* GML_ATTENTION: auto (cuDNN for calls that fill the GPU twice over, our
 * kernels for the small ones), cudnn (cuDNN for every call it accepts), own
 * (our kernels only) */
enum { GML_ATTENTION_AUTO, GML_ATTENTION_CUDNN, GML_ATTENTION_OWN };

typedef struct {
    int device;                  /* CUDA ordinal */
    cudaStream_t stream;         /* every op runs on it */
    cublasLtHandle_t lt;         /* cuBLASLt handle */
    void *lt_workspace;          /* cuBLASLt workspace, lt_workspace_bytes */
    size_t lt_workspace_bytes;   /* bytes (32 MiB) */
    gml_cuda_lt_cache *lt_cache; /* matmul.cu's (gml_cuda_matmul_release frees it); NULL until used */
    void *scratch;               /* grow-only device scratch for partial sums etc. */
    size_t scratch_bytes;        /* bytes */
    uint64_t scratch_gen;        /* bumped at each reallocation of scratch (graph.cu) */
    void *staging;               /* grow-only host buffer for upload/download conversions */
    size_t staging_bytes;        /* bytes */
    /* open-addressing hash (linear probing) of live allocations */
    gml_cuda_alloc_slot *slots;
    size_t n_slots; /* capacity, a power of two */
    size_t n_used;  /* live + tombstones */
    size_t in_use;  /* bytes allocated through alloc, now */
    size_t peak;    /* bytes, most ever at once */
    int sm_count;                  /* multiprocessors of the device */
    int attention;                 /* GML_ATTENTION_*: where attention runs (attention_cudnn.cu) */
    struct gml_cudnn_state *cudnn; /* attention_cudnn.cu's (gml_cudnn_release frees it); NULL until used */
} gml_cuda_ctx;

static inline gml_cuda_ctx *cuda_ctx(gml_backend *be) { return (gml_cuda_ctx *)be->ctx; }

/* Makes be's device current (cheap when it already is) and returns its ctx. */
gml_status gml_cuda_enter(gml_backend *be, gml_cuda_ctx **ctx);
/* A device scratch buffer of at least `bytes`, valid until the next call of
 * this function; grows (after a stream sync) but never shrinks. Ops use it
 * for per-block partial sums; stream order makes reuse across ops safe. */
gml_status gml_cuda_scratch(gml_cuda_ctx *ctx, size_t bytes, void **out);

/* ---- launch helpers ---- */
static inline unsigned cuda_ceil_div(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }
/* Blocks for a grid-stride loop over n elements with `threads` per block. */
static inline unsigned cuda_grid_for(size_t n, unsigned threads) {
    size_t blocks = (n + threads - 1) / threads;
    if (blocks < 1) blocks = 1;
    if (blocks > 65535u * 8u) blocks = 65535u * 8u;
    return (unsigned)blocks;
}

/* ---- device helpers ---- */
typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float bf2f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 f2bf(float x) { return __float2bfloat16(x); } /* round-to-nearest-even */

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* The last step of the column-sum kernels whose blocks (32, 8) cover 256
 * columns, 8 per lane (lane x: columns (blockIdx.x * 32 + x) * 8 .. + 8), and
 * whose 8 row lanes y each summed part of a chunk of rows (blockIdx.y): the
 * lanes' sums acc are added in lane order and written to partial[blockIdx.y,
 * c] for c < C. sh: 8 x 256 floats of the block's shared memory. Used by
 * matmul.cu (bias gradients) and layernorm.cu (its parameter gradients). */
__device__ __forceinline__ void colsum8_store_partial(float (*sh)[256], const float acc[8], float *partial, int C) {
    const int tx = threadIdx.x, ty = threadIdx.y;
#pragma unroll
    for (int i = 0; i < 8; i++)
        sh[ty][tx * 8 + i] = acc[i];
    __syncthreads();
    const int j = ty * 32 + tx; /* this thread's column of the block's 256 */
    const int c = blockIdx.x * 256 + j;
    if (c < C) {
        float s = 0.0f;
        for (int k = 0; k < 8; k++)
            s += sh[k][j];
        partial[(size_t)blockIdx.y * C + c] = s;
    }
}

/* ---- ops, by file (signatures as in struct gml_backend_i) ---- */
/* elementwise.cu */
gml_status gml_cuda_cast_f32_to_act(gml_backend *be, void *dst, const float *src, size_t n);
gml_status gml_cuda_gelu_forward(gml_backend *be, void *out, const void *inp, size_t n);
gml_status gml_cuda_gelu_backward(gml_backend *be, void *dinp, const void *inp, const void *dout, size_t n);
gml_status gml_cuda_residual_forward(gml_backend *be, void *out, const void *a, const void *b, size_t n);
gml_status gml_cuda_dropout(gml_backend *be, void *out, const void *x, size_t n, uint64_t key, uint32_t threshold,
                            float scale);
/* encoder.cu */
gml_status gml_cuda_encoder_forward(gml_backend *be, void *out, const int32_t *tokens, const void *wte, const void *wpe,
                                    int B, int T, int C);
gml_status gml_cuda_encoder_backward(gml_backend *be, float *dwte, float *dwpe, const void *dout, const int32_t *tokens,
                                     int B, int T, int C);
/* layernorm.cu */
gml_status gml_cuda_layernorm_forward(gml_backend *be, void *out, float *mean, float *rstd, const void *inp,
                                      const void *weight, const void *bias, int N, int C);
gml_status gml_cuda_layernorm_backward(gml_backend *be, void *dinp, float *dweight, float *dbias, const void *dout,
                                       const void *inp, const void *weight, const float *mean, const float *rstd, int N,
                                       int C);
gml_status gml_cuda_residual_layernorm_forward(gml_backend *be, void *res, void *out, float *mean, float *rstd,
                                               const void *a, const void *b, const void *weight, const void *bias,
                                               int N, int C);
/* matmul.cu */
gml_status gml_cuda_matmul_forward(gml_backend *be, void *out, const void *inp, const void *weight, const void *bias,
                                   int N, int IC, int OC);
gml_status gml_cuda_matmul_backward(gml_backend *be, void *dinp, float *dweight, float *dbias, const void *dout,
                                    const void *inp, const void *weight, int N, int IC, int OC);
gml_status gml_cuda_matmul_gelu_forward(gml_backend *be, void *out, void *pre, const void *inp, const void *weight,
                                        const void *bias, int N, int IC, int OC);
gml_status gml_cuda_matmul_backward_gelu(gml_backend *be, void *dpre, float *dweight, float *dbias, const void *dout,
                                         const void *inp, const void *weight, const void *pre, int N, int IC, int OC);
/* frees what matmul.cu keeps in the context (the heuristic cache) */
void gml_cuda_matmul_release(gml_cuda_ctx *ctx);
/* attention.cu */
gml_status gml_cuda_attention_forward(gml_backend *be, void *out, float *lse, const void *qkv, int B, int T, int C,
                                      int NH);
gml_status gml_cuda_attention_backward(gml_backend *be, void *dqkv, const void *dout, const void *qkv, const void *out,
                                       const float *lse, int B, int T, int C, int NH);
/* attention_cudnn.cu: forward and backward through cuDNN's fused attention;
 * *done = 0 (nothing launched) when this build has no cuDNN,
 * GML_ATTENTION=own, or cuDNN declines the shape: the caller then runs
 * attention.cu's kernels. Both use the scratch buffer. */
gml_status gml_cudnn_attention_forward(gml_cuda_ctx *c, void *out, float *lse, const void *qkv, int B, int T, int C,
                                       int NH, float scale, int *done);
gml_status gml_cudnn_attention_backward(gml_cuda_ctx *c, void *dqkv, const void *dout, const void *qkv,
                                        const void *out, const float *lse, int B, int T, int C, int NH, float scale,
                                        int *done);
void gml_cudnn_release(gml_cuda_ctx *c);
/* classifier.cu */
gml_status gml_cuda_classifier_forward_backward(gml_backend *be, float *losses, void *logits, const int32_t *targets,
                                                float dscale, int N, int V, int Vp);
/* optimizer.cu */
gml_status gml_cuda_sum_accumulate(gml_backend *be, float *acc, const float *x, size_t n);
gml_status gml_cuda_sumsq_accumulate(gml_backend *be, float *acc, const float *x, size_t n);
gml_status gml_cuda_adamw_update(gml_backend *be, float *param, void *param_act, const float *grad, float *m, float *v,
                                 size_t n, float lr, float beta1, float beta2, float eps, float weight_decay,
                                 float grad_scale, int t);
/* out0[c] += sum_k part0[k * C + c] for k < chunks, in a fixed order; the
 * same for (out1, part1) when out1 is not NULL (one launch) */
gml_status gml_cuda_sum_partials(gml_cuda_ctx *c, float *out0, const float *part0, float *out1, const float *part1,
                                 int chunks, int C);
gml_status gml_cuda_adamw_update_pieces(gml_backend *be, float *param, void *param_act, const float *grad, float *m,
                                        float *v, const gml_adamw_piece *pieces, int n_pieces, size_t total, float lr,
                                        float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                                        int t);
/* graph.cu: recorded launches (core/backend.h, graph_*) */
gml_status gml_cuda_graph_begin(gml_backend *be);
gml_status gml_cuda_graph_end(gml_backend *be, void **graph);
gml_status gml_cuda_graph_launch(gml_backend *be, void *graph, int *stale);
void gml_cuda_graph_free(gml_backend *be, void *graph);

#endif
