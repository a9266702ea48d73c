/* optimizer.cu — what the optimizer needs on the GPU: the AdamW update
 * (f32 master weights, optional bf16 copy) and the sum / sum-of-squares
 * reductions used for losses and gradient norms; and the second stage of
 * the column sums of matmul.cu and layernorm.cu (gml_cuda_sum_partials).
 *
 * Reductions are deterministic: a fixed grid of blocks writes one partial
 * sum each to scratch, then one block adds the partials in a fixed order and
 * adds the result to the device scalar. AdamW bias corrections are computed
 * on the host in double and passed to the kernel. The multi-tensor AdamW
 * (adamw_update_pieces) runs every piece of a parameter table in one launch:
 * each block takes a fixed chunk of the flat index space, finds the piece of
 * its first element by binary search in the (device) table and walks on from
 * there; the arithmetic per element is adamw_kernel's.
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

template <bool SQUARE> __device__ __forceinline__ float term(float v) { return SQUARE ? v * v : v; }
template <bool SQUARE> __device__ __forceinline__ float term4(float4 v) {
    return ((term<SQUARE>(v.x) + term<SQUARE>(v.y)) + term<SQUARE>(v.z)) + term<SQUARE>(v.w);
}

/* One partial sum per block over a fixed share of x: with x 16-byte aligned,
 * 128-bit loads, two in flight per thread (a scalar loop was latency-bound:
 * 200 us for GPT-2's 124M gradients on an H200, 2.5 TB/s), and the n % 4
 * tail in the first threads; else one float at a time. */
template <bool SQUARE>
__global__ void reduce_partial_kernel(float *partial /* (gridDim.x) */, const float *x /* (n) */, size_t n) {
    const size_t tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x, stride = (size_t)gridDim.x * blockDim.x;
    float s0 = 0.0f, s1 = 0.0f;
    if (((uintptr_t)x & 15u) == 0) {
        const float4 *x4 = reinterpret_cast<const float4 *>(x);
        const size_t n4 = n / 4;
        size_t i = tid;
        for (; i + stride < n4; i += 2 * stride) {
            float4 a = x4[i], b = x4[i + stride];
            s0 += term4<SQUARE>(a);
            s1 += term4<SQUARE>(b);
        }
        if (i < n4) s0 += term4<SQUARE>(x4[i]);
        if (tid < n - n4 * 4) s1 += term<SQUARE>(x[n4 * 4 + tid]);
    } else {
        for (size_t i = tid; i < n; i += stride)
            s0 += term<SQUARE>(x[i]);
    }
    float s = block_sum(s0 + s1);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void reduce_final_kernel(float *acc /* (1) += */, const float *partial, int nparts) {
    float s = 0.0f;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x)
        s += partial[i];
    s = block_sum(s);
    if (threadIdx.x == 0) *acc += s;
}

/* Second stage of the deterministic column sums (matmul.cu's bias
 * gradients, layernorm.cu's dweight / dbias): out[c] += sum_k part[k, c]
 * over the chunks k in a fixed order (lane y adds k = y, y + 32, ..., then
 * the 32 lanes are added in order). Block (32, 32) takes 32 columns;
 * blockIdx.y picks (out0, part0) or (out1, part1). */
#define SP_COLS  32
#define SP_LANES 32

__global__ void sum_partials_kernel(float *out0, const float *part0, float *out1, const float *part1, int chunks,
                                    int C) {
    __shared__ float sh[SP_LANES][SP_COLS + 1];
    float *out = blockIdx.y ? out1 : out0;          /* (C) += */
    const float *part = blockIdx.y ? part1 : part0; /* (chunks, C) */
    const int c = blockIdx.x * SP_COLS + threadIdx.x;
    float s = 0.0f;
    if (c < C)
#pragma unroll 4
        for (int k = threadIdx.y; k < chunks; k += SP_LANES)
            s += part[(size_t)k * C + c];
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float t = 0.0f;
        for (int k = 0; k < SP_LANES; k++)
            t += sh[k][threadIdx.x];
        out[c] += t;
    }
}

gml_status gml_cuda_sum_partials(gml_cuda_ctx *c, float *out0, const float *part0, float *out1, const float *part1,
                                 int chunks, int C) {
    if (chunks <= 0 || C <= 0) return GML_OK;
    dim3 grid(cuda_ceil_div((size_t)C, SP_COLS), out1 ? 2u : 1u);
    sum_partials_kernel<<<grid, dim3(SP_COLS, SP_LANES), 0, c->stream>>>(out0, part0, out1, part1, chunks, C);
    CUDA_CHECK_LAUNCH("sum_partials_kernel");
    return GML_OK;
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

/* The update of one element, on values: p -= lr * ((m / bc1) / (sqrt(v /
 * bc2) + eps) + wd * p), bc1 = 1 - b1^t, bc2 = 1 - b2^t. Every path below
 * goes through it, so scalar and vector paths give the same bits. */
__device__ __forceinline__ void adamw_math(float g, float &m, float &v, float &p, float lr, float beta1, float beta2,
                                           float eps, float wd, float bc1, float bc2) {
    m = beta1 * m + (1.0f - beta1) * g;
    v = beta2 * v + (1.0f - beta2) * g * g;
    float mhat = m / bc1, vhat = v / bc2;
    p -= lr * (mhat / (sqrtf(vhat) + eps) + wd * p);
}

__device__ __forceinline__ void adamw_element(float *param, bf16 *param_act, const float *grad, float *m, float *v,
                                              size_t i, size_t j, float lr, float beta1, float beta2, float eps,
                                              float wd, float grad_scale, float bc1, float bc2) {
    /* i: index into param / param_act; j: into grad / m / v */
    float mi = m[j], vi = v[j], p = param[i];
    adamw_math(grad[j] * grad_scale, mi, vi, p, lr, beta1, beta2, eps, wd, bc1, bc2);
    m[j] = mi;
    v[j] = vi;
    param[i] = p;
    if (param_act) param_act[i] = f2bf(p);
}

/* Four consecutive elements with 128-bit loads and stores (param_act: one
 * 64-bit store); the caller checked the alignments. */
__device__ __forceinline__ void adamw_element4(float *param, bf16 *param_act, const float *grad, float *m, float *v,
                                               size_t i, size_t j, float lr, float beta1, float beta2, float eps,
                                               float wd, float grad_scale, float bc1, float bc2) {
    float4 g = *reinterpret_cast<const float4 *>(grad + j);
    float4 mm = *reinterpret_cast<const float4 *>(m + j), vv = *reinterpret_cast<const float4 *>(v + j);
    float4 p = *reinterpret_cast<const float4 *>(param + i);
    adamw_math(g.x * grad_scale, mm.x, vv.x, p.x, lr, beta1, beta2, eps, wd, bc1, bc2);
    adamw_math(g.y * grad_scale, mm.y, vv.y, p.y, lr, beta1, beta2, eps, wd, bc1, bc2);
    adamw_math(g.z * grad_scale, mm.z, vv.z, p.z, lr, beta1, beta2, eps, wd, bc1, bc2);
    adamw_math(g.w * grad_scale, mm.w, vv.w, p.w, lr, beta1, beta2, eps, wd, bc1, bc2);
    *reinterpret_cast<float4 *>(m + j) = mm;
    *reinterpret_cast<float4 *>(v + j) = vv;
    *reinterpret_cast<float4 *>(param + i) = p;
    if (param_act) {
        __nv_bfloat162 lo = __floats2bfloat162_rn(p.x, p.y), hi = __floats2bfloat162_rn(p.z, p.w);
        uint2 raw;
        raw.x = *reinterpret_cast<uint32_t *>(&lo);
        raw.y = *reinterpret_cast<uint32_t *>(&hi);
        *reinterpret_cast<uint2 *>(param_act + i) = raw;
    }
}

__global__ void adamw_kernel(float *param, bf16 *param_act /* or NULL */, const float *grad, float *m, float *v,
                             size_t n, float lr, float beta1, float beta2, float eps, float wd, float grad_scale,
                             float bc1, float bc2) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        adamw_element(param, param_act, grad, m, v, i, i, lr, beta1, beta2, eps, wd, grad_scale, bc1, bc2);
}

#define ADAMW_THREADS 256
#define ADAMW_CHUNK   (ADAMW_THREADS * 8) /* flat elements per block */

/* Block b updates the flat indices [b * ADAMW_CHUNK, ...) of the pieces. */
__global__ void adamw_pieces_kernel(float *param, bf16 *param_act /* or NULL */, const float *grad, float *m, float *v,
                                    const gml_adamw_piece *pieces /* (n_pieces) */, int n_pieces, size_t total,
                                    float lr, float beta1, float beta2, float eps, float wd, float grad_scale,
                                    float bc1, float bc2) {
    const size_t first = (size_t)blockIdx.x * ADAMW_CHUNK;
    if (first >= total) return;
    const size_t end = min(total, first + (size_t)ADAMW_CHUNK);
    int lo = 0, hi = n_pieces - 1; /* the last piece with flat_off <= first */
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (pieces[mid].flat_off <= first)
            lo = mid;
        else
            hi = mid - 1;
    }
    int k = lo;
    size_t p_flat = pieces[k].flat_off, p_end = p_flat + pieces[k].numel;
    size_t p_param = pieces[k].param_off, p_state = pieces[k].state_off;
    float p_wd = pieces[k].decay ? wd : 0.0f;
    { /* the block's chunk inside one piece, 16-byte aligned everywhere: 128-bit accesses */
        const size_t i0 = p_param + (first - p_flat), j0 = p_state + (first - p_flat);
        const bool vec = end <= p_end && (end - first) % 4 == 0 && ((uintptr_t)(param + i0) & 15u) == 0 &&
                         ((uintptr_t)(grad + j0) & 15u) == 0 && ((uintptr_t)(m + j0) & 15u) == 0 &&
                         ((uintptr_t)(v + j0) & 15u) == 0 && (!param_act || ((uintptr_t)(param_act + i0) & 7u) == 0);
        if (vec) {
            for (size_t e = 4 * (size_t)threadIdx.x; e < end - first; e += 4 * ADAMW_THREADS)
                adamw_element4(param, param_act, grad, m, v, i0 + e, j0 + e, lr, beta1, beta2, eps, p_wd, grad_scale,
                               bc1, bc2);
            return;
        }
    }
    for (size_t f = first + threadIdx.x; f < end; f += ADAMW_THREADS) {
        while (f >= p_end) { /* flat indices only grow: move on to the piece holding f */
            k++;
            p_flat = pieces[k].flat_off, p_end = p_flat + pieces[k].numel;
            p_param = pieces[k].param_off, p_state = pieces[k].state_off;
            p_wd = pieces[k].decay ? wd : 0.0f;
        }
        const size_t e = f - p_flat;
        adamw_element(param, param_act, grad, m, v, p_param + e, p_state + e, lr, beta1, beta2, eps, p_wd, grad_scale,
                      bc1, bc2);
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

gml_status gml_cuda_adamw_update_pieces(gml_backend *be, float *param, void *param_act, const float *grad, float *m,
                                        float *v, const gml_adamw_piece *pieces, int n_pieces, size_t total, float lr,
                                        float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                                        int t) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (t < 1) return gml_error_set(GML_ERR_INVALID_ARG, "adamw_update_pieces: step t = %d, must be >= 1", t);
    if (n_pieces < 0) return gml_error_set(GML_ERR_INVALID_ARG, "adamw_update_pieces: %d pieces", n_pieces);
    if (total == 0) return GML_OK;
    if (n_pieces == 0)
        return gml_error_set(GML_ERR_INVALID_ARG, "adamw_update_pieces: no pieces for %zu elements", total);
    const float bc1 = (float)(1.0 - pow((double)beta1, (double)t));
    const float bc2 = (float)(1.0 - pow((double)beta2, (double)t));
    const size_t blocks = (total + ADAMW_CHUNK - 1) / ADAMW_CHUNK;
    if (blocks > 0x7fffffffu)
        return gml_error_set(GML_ERR_INVALID_ARG, "adamw_update_pieces: %zu elements are too many", total);
    adamw_pieces_kernel<<<(unsigned)blocks, ADAMW_THREADS, 0, c->stream>>>(param, (bf16 *)param_act, grad, m, v, pieces,
                                                                           n_pieces, total, lr, beta1, beta2, eps,
                                                                           weight_decay, grad_scale, bc1, bc2);
    CUDA_CHECK_LAUNCH("adamw_pieces_kernel");
    return GML_OK;
}
