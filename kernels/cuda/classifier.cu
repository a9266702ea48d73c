/* classifier.cu — fused softmax cross-entropy on the GPU: per-row loss and,
 * when dscale != 0, the logits' gradient written in place.
 *
 * One block per row. Pass 1: each thread keeps an online (max, sum exp) over
 * its columns < V, then the block merges the pairs in shared memory (f32);
 * lse = max + log(sum), losses[i] = lse - logits[i, target]. Pass 2 (only if
 * dscale != 0): logits[i, c] = (softmax - onehot) * dscale as bf16 for c < V
 * and 0 for the padding columns V..Vp-1. A target outside [0, V) gives a
 * NaN loss (it is a caller bug; the CPU backend has no defined answer).
 * Rows of Vp % 8 == 0 bf16 at a 16-byte aligned address (GPT-2's 50304) take
 * the vectorised kernel: 128-bit loads and stores of 8 logits, and the online
 * (max, sum) updated once per 8; the row's second read mostly hits L2 (a
 * block's row is 100 KB; two blocks of 1024 threads per SM hold ~26 MB of
 * rows at once, about half of L2).
 * Not for: the final matmul that produces the logits (matmul.cu).
 */
#include "kernels/cuda/cuda_common.cuh"

#include <math.h>

#define CLS_THREADS 1024

/* merges (m2, s2) into (m, s): s is a sum of exp(x - m) */
__device__ __forceinline__ void lse_merge(float &m, float &s, float m2, float s2) {
    float mn = fmaxf(m, m2);
    s = s * expf(m - mn) + s2 * expf(m2 - mn);
    m = mn;
}

/* (m, s) of this block's CLS_THREADS threads merged, in a fixed order (the
 * same inputs give the same bits); lse is valid in every thread */
__device__ float block_lse(float m, float s) {
    __shared__ float sh_m[CLS_THREADS / 32];
    __shared__ float sh_s[CLS_THREADS / 32];
    __shared__ float sh_lse;
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        float s2 = __shfl_xor_sync(0xffffffffu, s, o);
        lse_merge(m, s, m2, s2);
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) {
        sh_m[warp] = m;
        sh_s[warp] = s;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float bm = sh_m[0], bs = sh_s[0];
        for (int w = 1; w < CLS_THREADS / 32; w++)
            lse_merge(bm, bs, sh_m[w], sh_s[w]);
        sh_lse = bm + logf(bs);
    }
    __syncthreads();
    return sh_lse;
}

/* blockDim.x = CLS_THREADS (block_lse's block size) */
__global__ void classifier_kernel(float *losses /* (N) */, bf16 *logits /* (N,Vp) in place */,
                                  const int32_t *targets /* (N) */, float dscale, int N, int V, int Vp) {
    const int row = blockIdx.x;
    bf16 *x = logits + (size_t)row * Vp;
    const int target = targets[row];
    const bool target_ok = target >= 0 && target < V;
    /* read before anyone may overwrite the row (pass 2 comes after barriers) */
    const float x_target = target_ok ? bf2f(x[target]) : 0.0f;

    float m = -1e30f, s = 0.0f;
    for (int cidx = threadIdx.x; cidx < V; cidx += blockDim.x) {
        float v = bf2f(x[cidx]);
        if (v > m) {
            s = s * expf(m - v) + 1.0f;
            m = v;
        } else {
            s += expf(v - m);
        }
    }
    const float lse = block_lse(m, s);
    if (threadIdx.x == 0) losses[row] = target_ok ? lse - x_target : __int_as_float(0x7fc00000); /* NaN */
    if (dscale == 0.0f) return;
    for (int cidx = threadIdx.x; cidx < Vp; cidx += blockDim.x) {
        float g = 0.0f;
        if (cidx < V) {
            float p = expf(bf2f(x[cidx]) - lse);
            g = (p - (cidx == target ? 1.0f : 0.0f)) * dscale;
        }
        x[cidx] = f2bf(g);
    }
}

__device__ __forceinline__ void unpack8(uint4 raw, float *f) {
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&raw);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __bfloat1622float2(h[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}

/* classifier_kernel's contract for Vp % 8 == 0 and 16-byte aligned rows;
 * blockDim.x = CLS_THREADS. Thread t owns the 8-column groups t, t + 1024,
 * ... of the row; the group holding column V-1 may be partly padding. */
__global__ void classifier_vec_kernel(float *losses /* (N) */, bf16 *logits /* (N,Vp) in place */,
                                      const int32_t *targets /* (N) */, float dscale, int N, int V, int Vp) {
    const int row = blockIdx.x;
    bf16 *x = logits + (size_t)row * Vp;
    uint4 *xv = reinterpret_cast<uint4 *>(x);
    const int target = targets[row];
    const bool target_ok = target >= 0 && target < V;
    const float x_target = target_ok ? bf2f(x[target]) : 0.0f; /* read before pass 2 overwrites the row */
    const int groups = Vp / 8;

    float m = -1e30f, s = 0.0f;
    for (int gi = threadIdx.x; gi < groups; gi += CLS_THREADS) {
        float f[8];
        unpack8(xv[gi], f);
        const int c0 = gi * 8;
        const int nv = min(8, V - c0); /* real columns in this group (<= 0: padding only) */
        if (nv == 8) {
            float m8 = f[0];
#pragma unroll
            for (int i = 1; i < 8; i++)
                m8 = fmaxf(m8, f[i]);
            const float mn = fmaxf(m, m8);
            float t = 0.0f;
#pragma unroll
            for (int i = 0; i < 8; i++)
                t += expf(f[i] - mn);
            s = s * expf(m - mn) + t;
            m = mn;
        } else {
            for (int i = 0; i < nv; i++)
                lse_merge(m, s, f[i], 1.0f);
        }
    }
    const float lse = block_lse(m, s);
    if (threadIdx.x == 0) losses[row] = target_ok ? lse - x_target : __int_as_float(0x7fc00000); /* NaN */
    if (dscale == 0.0f) return;
    for (int gi = threadIdx.x; gi < groups; gi += CLS_THREADS) {
        float f[8];
        unpack8(xv[gi], f);
        const int c0 = gi * 8;
        uint4 raw;
        __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&raw);
#pragma unroll
        for (int i = 0; i < 8; i += 2) {
            float g[2];
#pragma unroll
            for (int j = 0; j < 2; j++) {
                const int col = c0 + i + j;
                g[j] = col < V ? (expf(f[i + j] - lse) - (col == target ? 1.0f : 0.0f)) * dscale : 0.0f;
            }
            h[i / 2] = __floats2bfloat162_rn(g[0], g[1]);
        }
        xv[gi] = raw;
    }
}

gml_status gml_cuda_classifier_forward_backward(gml_backend *be, float *losses, void *logits, const int32_t *targets,
                                                float dscale, int N, int V, int Vp) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (N <= 0) return GML_OK;
    if (V <= 0 || Vp < V)
        return gml_error_set(GML_ERR_INVALID_ARG, "classifier_forward_backward: V=%d Vp=%d (need 0 < V <= Vp)", V, Vp);
    if (Vp % 8 == 0 && ((uintptr_t)logits & 15u) == 0) {
        classifier_vec_kernel<<<(unsigned)N, CLS_THREADS, 0, c->stream>>>(losses, (bf16 *)logits, targets, dscale,
                                                                              N, V, Vp);
        CUDA_CHECK_LAUNCH("classifier_vec_kernel");
        return GML_OK;
    }
    classifier_kernel<<<(unsigned)N, CLS_THREADS, 0, c->stream>>>(losses, (bf16 *)logits, targets, dscale, N, V, Vp);
    CUDA_CHECK_LAUNCH("classifier_kernel");
    return GML_OK;
}
