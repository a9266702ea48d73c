/* classifier.cu — fused softmax cross-entropy on the GPU: per-row loss and,
 * when dscale != 0, the logits' gradient written in place.
 *
 * One block per row. Pass 1: each thread keeps an online (max, sum exp) over
 * its columns < V, then the block merges the pairs in shared memory (f32);
 * lse = max + log(sum), losses[i] = lse - logits[i, target]. Pass 2 (only if
 * dscale != 0): logits[i, c] = (softmax - onehot) * dscale as bf16 for c < V
 * and 0 for the padding columns V..Vp-1. A target outside [0, V) gives a
 * NaN loss (it is a caller bug; the CPU backend has no defined answer).
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

__global__ void classifier_kernel(float *losses /* (N) */, bf16 *logits /* (N,Vp) in place */,
                                  const int32_t *targets /* (N) */, float dscale, int N, int V, int Vp) {
    __shared__ float sh_m[CLS_THREADS / 32];
    __shared__ float sh_s[CLS_THREADS / 32];
    __shared__ float sh_lse;
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
    /* warp merge, then one value per warp through shared memory */
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        float s2 = __shfl_xor_sync(0xffffffffu, s, o);
        lse_merge(m, s, m2, s2);
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
    if (lane == 0) {
        sh_m[warp] = m;
        sh_s[warp] = s;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float bm = sh_m[0], bs = sh_s[0];
        for (int w = 1; w < nwarps; w++)
            lse_merge(bm, bs, sh_m[w], sh_s[w]);
        const float lse = bm + logf(bs);
        sh_lse = lse;
        losses[row] = target_ok ? lse - x_target : __int_as_float(0x7fc00000); /* NaN */
    }
    __syncthreads();
    if (dscale == 0.0f) return;
    const float lse = sh_lse;
    for (int cidx = threadIdx.x; cidx < Vp; cidx += blockDim.x) {
        float g = 0.0f;
        if (cidx < V) {
            float p = expf(bf2f(x[cidx]) - lse);
            g = (p - (cidx == target ? 1.0f : 0.0f)) * dscale;
        }
        x[cidx] = f2bf(g);
    }
}

gml_status gml_cuda_classifier_forward_backward(gml_backend *be, float *losses, void *logits, const int32_t *targets,
                                                float dscale, int N, int V, int Vp) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (N <= 0) return GML_OK;
    if (V <= 0 || Vp < V)
        return gml_error_set(GML_ERR_INVALID_ARG, "classifier_forward_backward: V=%d Vp=%d (need 0 < V <= Vp)", V, Vp);
    classifier_kernel<<<(unsigned)N, CLS_THREADS, 0, c->stream>>>(losses, (bf16 *)logits, targets, dscale, N, V, Vp);
    CUDA_CHECK_LAUNCH("classifier_kernel");
    return GML_OK;
}
