/* encoder.cu — token + position embedding on the GPU, forward and backward.
 *
 * Forward: out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:] (f32 add, bf16 out).
 * Backward, deterministic (same bits every run, which bit-for-bit resume
 * needs): the positions are stably sorted by token with CUB's radix sort
 * (keys = tokens, values = positions), then one block per run of equal
 * tokens sums dout over its positions in increasing order into that dwte
 * row; dwpe[t,:] += sum_b dout[b,t,:] in a fixed order. Scratch: 4 N int32
 * plus CUB's temporary storage.
 * Not for: the classifier (classifier.cu) or weight tying, which the caller
 * arranges by passing the same dwte to both.
 */
#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/cuda_common.cuh"

#define ENC_THREADS 256

__global__ void encoder_forward_kernel(bf16 *out /* (B,T,C) */, const int32_t *tokens /* (B,T) */,
                                       const bf16 *wte /* (Vp,C) */, const bf16 *wpe /* (maxT,C) */, int B, int T,
                                       int C) {
    size_t total = (size_t)B * T * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t bt = i / (size_t)C;
        int c = (int)(i - bt * (size_t)C);
        int t = (int)(bt % (size_t)T);
        int tok = tokens[bt];
        out[i] = f2bf(bf2f(wte[(size_t)tok * C + c]) + bf2f(wpe[(size_t)t * C + c]));
    }
}

__global__ void iota_kernel(int32_t *v, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) v[i] = i;
}

/* grid N: block i works only if sorted index i starts a run of equal tokens;
 * it adds dout of the run's positions (ascending) into that token's row. */
__global__ void encoder_backward_wte_kernel(float *dwte /* (Vp,C) += */, const bf16 *dout /* (N,C) */,
                                            const int32_t *stok /* (N) sorted tokens */,
                                            const int32_t *spos /* (N) their positions */, int N, int C) {
    const int i = blockIdx.x;
    const int tok = stok[i];
    if (i > 0 && stok[i - 1] == tok) return;
    int end = i + 1;
    while (end < N && stok[end] == tok) end++;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float s = 0.0f;
        for (int j = i; j < end; j++) s += bf2f(dout[(size_t)spos[j] * C + c]);
        dwte[(size_t)tok * C + c] += s;
    }
}

/* one thread per (t, c): sums over b in order */
__global__ void encoder_backward_wpe_kernel(float *dwpe /* (maxT,C) += */, const bf16 *dout /* (B,T,C) */, int B, int T,
                                            int C) {
    size_t total = (size_t)T * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int b = 0; b < B; b++)
            s += bf2f(dout[(size_t)b * T * C + i]);
        dwpe[i] += s;
    }
}

gml_status gml_cuda_encoder_forward(gml_backend *be, void *out, const int32_t *tokens, const void *wte, const void *wpe,
                                    int B, int T, int C) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    size_t total = (size_t)B * T * C;
    if (total == 0) return GML_OK;
    encoder_forward_kernel<<<cuda_grid_for(total, ENC_THREADS), ENC_THREADS, 0, c->stream>>>(
        (bf16 *)out, tokens, (const bf16 *)wte, (const bf16 *)wpe, B, T, C);
    CUDA_CHECK_LAUNCH("encoder_forward_kernel");
    return GML_OK;
}

gml_status gml_cuda_encoder_backward(gml_backend *be, float *dwte, float *dwpe, const void *dout, const int32_t *tokens,
                                     int B, int T, int C) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    size_t total = (size_t)B * T * C;
    if (total == 0) return GML_OK;
    const int N = B * T;
    size_t sort_bytes = 0;
    if (cub::DeviceRadixSort::SortPairs(NULL, sort_bytes, (const int32_t *)NULL, (int32_t *)NULL,
                                        (const int32_t *)NULL, (int32_t *)NULL, N, 0, 31, c->stream) != cudaSuccess)
        return gml_error_set(GML_ERR_BACKEND, "cub::DeviceRadixSort::SortPairs size query failed for %d items", N);
    size_t ints = (size_t)4 * N, head = (ints * sizeof(int32_t) + 255) & ~(size_t)255;
    void *scratch = NULL;
    GML_CHECK(gml_cuda_scratch(c, head + sort_bytes, &scratch));
    int32_t *pos = (int32_t *)scratch, *stok = pos + N, *spos = stok + N;
    void *sort_tmp = (char *)scratch + head;
    iota_kernel<<<cuda_grid_for((size_t)N, ENC_THREADS), ENC_THREADS, 0, c->stream>>>(pos, N);
    CUDA_CHECK_LAUNCH("iota_kernel");
    /* tokens are < 2^31 (non-negative int32): sort on bits [0, 31) */
    cudaError_t e = cub::DeviceRadixSort::SortPairs(sort_tmp, sort_bytes, tokens, stok, pos, spos, N, 0, 31,
                                                    c->stream);
    if (e != cudaSuccess)
        return gml_error_set(GML_ERR_BACKEND, "cub::DeviceRadixSort::SortPairs of %d tokens failed: %s", N,
                             cudaGetErrorString(e));
    encoder_backward_wte_kernel<<<(unsigned)N, ENC_THREADS, 0, c->stream>>>(dwte, (const bf16 *)dout, stok, spos, N,
                                                                            C);
    CUDA_CHECK_LAUNCH("encoder_backward_wte_kernel");
    size_t tc = (size_t)T * C;
    encoder_backward_wpe_kernel<<<cuda_grid_for(tc, ENC_THREADS), ENC_THREADS, 0, c->stream>>>(dwpe, (const bf16 *)dout,
                                                                                               B, T, C);
    CUDA_CHECK_LAUNCH("encoder_backward_wpe_kernel");
    return GML_OK;
}
