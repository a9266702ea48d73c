/* optimizer.cu — what the optimizer needs on the GPU: the AdamW update
 * (f32 master weights, optional bf16 copy) and the sum / sum-of-squares
 * reductions used for losses and gradient norms.
 *
 * Reductions are deterministic: a fixed grid of blocks writes one partial
 * sum each to scratch, then one block adds the partials in a fixed order and
 * adds the result to the device scalar. AdamW bias corrections are computed
 * on the host in double and passed to the kernel.
 * Not for: optimizer policy (learning-rate schedule, which tensors decay:
 * core/optim.h) or cross-rank reductions (comm/).
 */
#include "kernels/cuda/cuda_common.cuh"

#include <math.h>

#define RED_THREADS    256
#define RED_MAX_BLOCKS 1024

/* block-wide sum of v (blockDim.x = RED_THREADS); the result is valid in thread 0 */
__device__ float block_sum(float v) {
    __shared__ float sh[RED_THREADS / 32];
    v = warp_sum(v);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    float s = 0.0f;
    if (threadIdx.x == 0)
        for (int w = 0; w < (int)(blockDim.x >> 5); w++)
            s += sh[w];
    return s;
}

template <bool SQUARE>
__global__ void reduce_partial_kernel(float *partial /* (gridDim.x) */, const float *x /* (n) */, size_t n) {
    float s = 0.0f;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = x[i];
        s += SQUARE ? v * v : v;
    }
    s = block_sum(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void reduce_final_kernel(float *acc /* (1) += */, const float *partial, int nparts) {
    float s = 0.0f;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x)
        s += partial[i];
    s = block_sum(s);
    if (threadIdx.x == 0) *acc += s;
}

template <bool SQUARE> static gml_status reduce_accumulate(gml_backend *be, float *acc, const float *x, size_t n) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (n == 0) return GML_OK;
    unsigned blocks = cuda_ceil_div(n, RED_THREADS * 4);
    if (blocks > RED_MAX_BLOCKS) blocks = RED_MAX_BLOCKS;
    if (blocks < 1) blocks = 1;
    void *scratch = NULL;
    GML_CHECK(gml_cuda_scratch(c, blocks * sizeof(float), &scratch));
    float *partial = (float *)scratch; /* (blocks) */
    reduce_partial_kernel<SQUARE><<<blocks, RED_THREADS, 0, c->stream>>>(partial, x, n);
    CUDA_CHECK_LAUNCH("reduce_partial_kernel");
    reduce_final_kernel<<<1, RED_THREADS, 0, c->stream>>>(acc, partial, (int)blocks);
    CUDA_CHECK_LAUNCH("reduce_final_kernel");
    return GML_OK;
}

gml_status gml_cuda_sum_accumulate(gml_backend *be, float *acc, const float *x, size_t n) {
    return reduce_accumulate<false>(be, acc, x, n);
}

gml_status gml_cuda_sumsq_accumulate(gml_backend *be, float *acc, const float *x, size_t n) {
    return reduce_accumulate<true>(be, acc, x, n);
}

/* p -= lr * ((m / bc1) / (sqrt(v / bc2) + eps) + wd * p), bc1 = 1 - b1^t, bc2 = 1 - b2^t */
__global__ void adamw_kernel(float *param, bf16 *param_act /* or NULL */, const float *grad, float *m, float *v,
                             size_t n, float lr, float beta1, float beta2, float eps, float wd, float grad_scale,
                             float bc1, float bc2) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float g = grad[i] * grad_scale;
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        float p = param[i];
        float mhat = mi / bc1, vhat = vi / bc2;
        p -= lr * (mhat / (sqrtf(vhat) + eps) + wd * p);
        m[i] = mi;
        v[i] = vi;
        param[i] = p;
        if (param_act) param_act[i] = f2bf(p);
    }
}

gml_status gml_cuda_adamw_update(gml_backend *be, float *param, void *param_act, const float *grad, float *m, float *v,
                                 size_t n, float lr, float beta1, float beta2, float eps, float weight_decay,
                                 float grad_scale, int t) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (t < 1) return gml_error_set(GML_ERR_INVALID_ARG, "adamw_update: step t = %d, must be >= 1", t);
    if (n == 0) return GML_OK;
    const float bc1 = (float)(1.0 - pow((double)beta1, (double)t));
    const float bc2 = (float)(1.0 - pow((double)beta2, (double)t));
    adamw_kernel<<<cuda_grid_for(n, 256), 256, 0, c->stream>>>(param, (bf16 *)param_act, grad, m, v, n, lr, beta1,
                                                               beta2, eps, weight_decay, grad_scale, bc1, bc2);
    CUDA_CHECK_LAUNCH("adamw_kernel");
    return GML_OK;
}
