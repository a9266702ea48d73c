/* elementwise.cu — the CUDA backend's element-by-element ops: f32 -> bf16
 * cast, GELU (tanh approximation) forward and backward, residual add,
 * dropout (mask from core/dropout.h, bit-identical to the CPU backend's).
 *
 * Grid-stride loops over n elements (any n, size_t); math in f32, results
 * rounded to bf16 (round-to-nearest-even). Not for: reductions
 * (optimizer.cu, layernorm.cu) or anything that needs neighbours.
 */
#include "core/dropout.h"
#include "kernels/cuda/cuda_common.cuh"

#define EW_THREADS 256

__global__ void cast_f32_to_bf16_kernel(bf16 *dst /* (n) */, const float *src /* (n) */, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = f2bf(src[i]);
}

/* GPT-2 GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
#define GELU_SCALE 0.7978845608028654f /* sqrt(2/pi) */

__global__ void gelu_forward_kernel(bf16 *out, const bf16 *inp, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float x = bf2f(inp[i]);
        float u = GELU_SCALE * (x + 0.044715f * x * x * x);
        out[i] = f2bf(0.5f * x * (1.0f + tanhf(u)));
    }
}

/* d/dx gelu = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) du/dx,
 * du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2) */
__global__ void gelu_backward_kernel(bf16 *dinp, const bf16 *inp, const bf16 *dout, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float x = bf2f(inp[i]);
        float u = GELU_SCALE * (x + 0.044715f * x * x * x);
        float th = tanhf(u);
        float du = GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        float g = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du;
        dinp[i] = f2bf(g * bf2f(dout[i]));
    }
}

__global__ void residual_forward_kernel(bf16 *out, const bf16 *a, const bf16 *b, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = f2bf(bf2f(a[i]) + bf2f(b[i]));
}

__global__ void dropout_kernel(bf16 *out, const bf16 *x, size_t n, uint64_t key, uint32_t threshold, float scale) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = gml_dropout_bits(key, i) >= threshold ? f2bf(bf2f(x[i]) * scale) : f2bf(0.0f);
}

gml_status gml_cuda_cast_f32_to_act(gml_backend *be, void *dst, const float *src, size_t n) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (n == 0) return GML_OK;
    cast_f32_to_bf16_kernel<<<cuda_grid_for(n, EW_THREADS), EW_THREADS, 0, c->stream>>>((bf16 *)dst, src, n);
    CUDA_CHECK_LAUNCH("cast_f32_to_bf16_kernel");
    return GML_OK;
}

gml_status gml_cuda_gelu_forward(gml_backend *be, void *out, const void *inp, size_t n) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (n == 0) return GML_OK;
    gelu_forward_kernel<<<cuda_grid_for(n, EW_THREADS), EW_THREADS, 0, c->stream>>>((bf16 *)out, (const bf16 *)inp, n);
    CUDA_CHECK_LAUNCH("gelu_forward_kernel");
    return GML_OK;
}

gml_status gml_cuda_gelu_backward(gml_backend *be, void *dinp, const void *inp, const void *dout, size_t n) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (n == 0) return GML_OK;
    gelu_backward_kernel<<<cuda_grid_for(n, EW_THREADS), EW_THREADS, 0, c->stream>>>((bf16 *)dinp, (const bf16 *)inp,
                                                                                     (const bf16 *)dout, n);
    CUDA_CHECK_LAUNCH("gelu_backward_kernel");
    return GML_OK;
}

gml_status gml_cuda_residual_forward(gml_backend *be, void *out, const void *a, const void *b, size_t n) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (n == 0) return GML_OK;
    residual_forward_kernel<<<cuda_grid_for(n, EW_THREADS), EW_THREADS, 0, c->stream>>>((bf16 *)out, (const bf16 *)a,
                                                                                        (const bf16 *)b, n);
    CUDA_CHECK_LAUNCH("residual_forward_kernel");
    return GML_OK;
}

gml_status gml_cuda_dropout(gml_backend *be, void *out, const void *x, size_t n, uint64_t key, uint32_t threshold,
                            float scale) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (n == 0) return GML_OK;
    dropout_kernel<<<cuda_grid_for(n, EW_THREADS), EW_THREADS, 0, c->stream>>>((bf16 *)out, (const bf16 *)x, n, key,
                                                                               threshold, scale);
    CUDA_CHECK_LAUNCH("dropout_kernel");
    return GML_OK;
}
