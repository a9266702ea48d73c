/* encoder.cu — token + position embedding on the GPU, forward and backward.
 *
 * Forward: out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:] (f32 add, bf16 out).
 * Backward: dwte rows are scattered with f32 atomicAdd (several positions may
 * hold the same token, so the order of the adds, and the last bits of dwte,
 * can vary from run to run); dwpe[t,:] += sum_b dout[b,t,:] in a fixed order.
 * Not for: the classifier (classifier.cu) or weight tying, which the caller
 * arranges by passing the same dwte to both.
 */
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

__global__ void encoder_backward_wte_kernel(float *dwte /* (Vp,C) += */, const bf16 *dout /* (B,T,C) */,
                                            const int32_t *tokens /* (B,T) */, int B, int T, int C) {
    size_t total = (size_t)B * T * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t bt = i / (size_t)C;
        int c = (int)(i - bt * (size_t)C);
        atomicAdd(&dwte[(size_t)tokens[bt] * C + c], bf2f(dout[i]));
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
    encoder_backward_wte_kernel<<<cuda_grid_for(total, ENC_THREADS), ENC_THREADS, 0, c->stream>>>(
        dwte, (const bf16 *)dout, tokens, B, T, C);
    CUDA_CHECK_LAUNCH("encoder_backward_wte_kernel");
    size_t tc = (size_t)T * C;
    encoder_backward_wpe_kernel<<<cuda_grid_for(tc, ENC_THREADS), ENC_THREADS, 0, c->stream>>>(dwpe, (const bf16 *)dout,
                                                                                               B, T, C);
    CUDA_CHECK_LAUNCH("encoder_backward_wpe_kernel");
    return GML_OK;
}
