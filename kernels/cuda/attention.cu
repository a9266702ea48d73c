/* attention.cu — causal multi-head self-attention on the GPU, forward and
 * backward, flash-attention style: scores are never stored, softmax is done
 * online in f32, and the backward recomputes P = exp(s * scale - lse).
 *
 * Layout (core/backend.h): qkv (B,T,3C) bf16 holds q | k | v per position,
 * head h uses channels [h*hd, (h+1)*hd); out (B,T,C) bf16; lse (B,NH,T) f32
 * is the natural log-sum-exp of the scaled scores; scale = 1/sqrt(hd).
 *
 * Scheme (simple scalar FMA code, shared-memory tiles; correctness first):
 *  - a block of ATT_WARPS warps owns a tile of ATT_TILE query rows (forward
 *    and dq) or key rows (dk, dv) of one (b, h); each warp owns the tile rows
 *    r = rr * ATT_WARPS + warp, rr < ATT_RPW;
 *  - the other side is walked in tiles of 32 rows staged in shared memory as
 *    f32; lane j of a warp computes the dot products with row j of that tile;
 *  - each lane owns head dimensions d = lane + 32 i (i < ATT_MAXD) of the
 *    accumulators, so hd may be anything up to 128.
 * Any T works: rows past T are zero-filled in shared memory and masked.
 * Not for: non-causal or cross attention, dropout, hd > 128.
 */
#include "kernels/cuda/cuda_common.cuh"

#define ATT_TILE    32                     /* rows per tile on both sides (= warp size) */
#define ATT_WARPS   8                      /* warps per block */
#define ATT_RPW     (ATT_TILE / ATT_WARPS) /* tile rows per warp */
#define ATT_MAXD    4                      /* head dims per lane: hd <= 32 * ATT_MAXD */
#define ATT_MAX_HD  (32 * ATT_MAXD)
#define ATT_NEG_BIG (-1e30f) /* "minus infinity" for running maxima */

/* ---------------------------------------------------------------- forward */

/* grid (ceil(T/32), NH, B), block 256, dynamic smem:
 * q_s (32, hd) | k_s (32, hd+1) | v_s (32, hd), f32 */
__global__ void attention_forward_kernel(bf16 *out /* (B,T,C) */, float *lse /* (B,NH,T) */,
                                         const bf16 *qkv /* (B,T,3C) */, int T, int C, int NH, float scale) {
    extern __shared__ float smem[];
    const int hd = C / NH, kst = hd + 1;
    float *q_s = smem;
    float *k_s = q_s + ATT_TILE * hd;
    float *v_s = k_s + ATT_TILE * kst;
    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * ATT_TILE;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const size_t C3 = 3 * (size_t)C;
    const bf16 *qb = qkv + (size_t)b * T * C3 + (size_t)h * hd; /* q of (b, t=0, h) */
    const bf16 *kb = qb + C;
    const bf16 *vb = qb + 2 * (size_t)C;

    for (int i = threadIdx.x; i < ATT_TILE * hd; i += blockDim.x) {
        int r = i / hd, d = i - r * hd, t = q0 + r;
        q_s[i] = t < T ? bf2f(qb[(size_t)t * C3 + d]) : 0.0f;
    }

    float m[ATT_RPW], l[ATT_RPW], acc[ATT_RPW][ATT_MAXD];
#pragma unroll
    for (int rr = 0; rr < ATT_RPW; rr++) {
        m[rr] = ATT_NEG_BIG;
        l[rr] = 0.0f;
#pragma unroll
        for (int i = 0; i < ATT_MAXD; i++)
            acc[rr][i] = 0.0f;
    }

    const int q_last = min(T, q0 + ATT_TILE) - 1; /* last query row of this tile */
    for (int k0 = 0; k0 <= q_last; k0 += ATT_TILE) {
        __syncthreads(); /* the previous tile is consumed (and q_s is loaded) */
        for (int i = threadIdx.x; i < ATT_TILE * hd; i += blockDim.x) {
            int r = i / hd, d = i - r * hd, s = k0 + r;
            bool in = s < T;
            k_s[r * kst + d] = in ? bf2f(kb[(size_t)s * C3 + d]) : 0.0f;
            v_s[r * hd + d] = in ? bf2f(vb[(size_t)s * C3 + d]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int rr = 0; rr < ATT_RPW; rr++) {
            const int r = rr * ATT_WARPS + warp, t = q0 + r;
            if (t >= T || k0 > t) continue; /* uniform across the warp */
            const int s = k0 + lane;
            const bool valid = s <= t;
            const float *qr = q_s + r * hd, *kr = k_s + lane * kst;
            float sc = 0.0f;
            for (int d = 0; d < hd; d++)
                sc += qr[d] * kr[d];
            sc = valid ? sc * scale : ATT_NEG_BIG;
            const float m_new = fmaxf(m[rr], warp_max(sc)); /* key k0 <= t is valid: finite */
            const float corr = expf(m[rr] - m_new);
            const float p = valid ? expf(sc - m_new) : 0.0f;
            l[rr] = l[rr] * corr + warp_sum(p);
            m[rr] = m_new;
#pragma unroll
            for (int i = 0; i < ATT_MAXD; i++)
                acc[rr][i] *= corr;
            const int jmax = min(ATT_TILE, t - k0 + 1); /* keys k0 .. t of this tile */
            for (int j = 0; j < jmax; j++) {
                const float pj = __shfl_sync(0xffffffffu, p, j);
                const float *vr = v_s + j * hd;
#pragma unroll
                for (int i = 0; i < ATT_MAXD; i++) {
                    const int d = lane + 32 * i;
                    if (d < hd) acc[rr][i] += pj * vr[d];
                }
            }
        }
    }

#pragma unroll
    for (int rr = 0; rr < ATT_RPW; rr++) {
        const int r = rr * ATT_WARPS + warp, t = q0 + r;
        if (t >= T) continue;
        const float inv = 1.0f / l[rr];
        bf16 *o = out + ((size_t)b * T + t) * C + (size_t)h * hd;
#pragma unroll
        for (int i = 0; i < ATT_MAXD; i++) {
            const int d = lane + 32 * i;
            if (d < hd) o[d] = f2bf(acc[rr][i] * inv);
        }
        if (lane == 0) lse[((size_t)b * NH + h) * T + t] = m[rr] + logf(l[rr]);
    }
}

/* --------------------------------------------------------------- backward */

/* Dsum[b,h,t] = sum_d dout[b,t,h*hd+d] * out[b,t,h*hd+d]; one warp per (b,h,t). */
__global__ void attention_backward_d_kernel(float *Dsum /* (B,NH,T) */, const bf16 *dout /* (B,T,C) */,
                                            const bf16 *out /* (B,T,C) */, int B, int T, int C, int NH) {
    const int hd = C / NH, lane = threadIdx.x & 31;
    const size_t row = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= (size_t)B * NH * T) return;
    const int t = (int)(row % (size_t)T);
    const size_t bh = row / (size_t)T;
    const int h = (int)(bh % (size_t)NH), b = (int)(bh / (size_t)NH);
    const size_t off = ((size_t)b * T + t) * C + (size_t)h * hd;
    float s = 0.0f;
    for (int d = lane; d < hd; d += 32)
        s += bf2f(dout[off + d]) * bf2f(out[off + d]);
    s = warp_sum(s);
    if (lane == 0) Dsum[row] = s;
}

/* dq = scale * sum_s dS_ts k_s over s <= t, dS = P (dP - D), dP = dout_t . v_s.
 * grid (ceil(T/32), NH, B), block 256, dynamic smem:
 * q_s (32, hd) | do_s (32, hd) | k_s (32, hd+1) | v_s (32, hd+1), f32 */
__global__ void attention_backward_dq_kernel(bf16 *dqkv /* (B,T,3C) */, const bf16 *dout /* (B,T,C) */,
                                             const bf16 *qkv /* (B,T,3C) */, const float *lse /* (B,NH,T) */,
                                             const float *Dsum /* (B,NH,T) */, int T, int C, int NH, float scale) {
    extern __shared__ float smem[];
    const int hd = C / NH, kst = hd + 1;
    float *q_s = smem;
    float *do_s = q_s + ATT_TILE * hd;
    float *k_s = do_s + ATT_TILE * hd;
    float *v_s = k_s + ATT_TILE * kst;
    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * ATT_TILE;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const size_t C3 = 3 * (size_t)C;
    const bf16 *qb = qkv + (size_t)b * T * C3 + (size_t)h * hd;
    const bf16 *kb = qb + C;
    const bf16 *vb = qb + 2 * (size_t)C;
    const bf16 *dob = dout + (size_t)b * T * C + (size_t)h * hd;
    const float *lse_bh = lse + ((size_t)b * NH + h) * T;
    const float *D_bh = Dsum + ((size_t)b * NH + h) * T;

    for (int i = threadIdx.x; i < ATT_TILE * hd; i += blockDim.x) {
        int r = i / hd, d = i - r * hd, t = q0 + r;
        bool in = t < T;
        q_s[i] = in ? bf2f(qb[(size_t)t * C3 + d]) : 0.0f;
        do_s[i] = in ? bf2f(dob[(size_t)t * C + d]) : 0.0f;
    }
    float lse_r[ATT_RPW], D_r[ATT_RPW], acc[ATT_RPW][ATT_MAXD];
#pragma unroll
    for (int rr = 0; rr < ATT_RPW; rr++) {
        const int t = q0 + rr * ATT_WARPS + warp;
        lse_r[rr] = t < T ? lse_bh[t] : 0.0f;
        D_r[rr] = t < T ? D_bh[t] : 0.0f;
#pragma unroll
        for (int i = 0; i < ATT_MAXD; i++)
            acc[rr][i] = 0.0f;
    }

    const int q_last = min(T, q0 + ATT_TILE) - 1;
    for (int k0 = 0; k0 <= q_last; k0 += ATT_TILE) {
        __syncthreads();
        for (int i = threadIdx.x; i < ATT_TILE * hd; i += blockDim.x) {
            int r = i / hd, d = i - r * hd, s = k0 + r;
            bool in = s < T;
            k_s[r * kst + d] = in ? bf2f(kb[(size_t)s * C3 + d]) : 0.0f;
            v_s[r * kst + d] = in ? bf2f(vb[(size_t)s * C3 + d]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int rr = 0; rr < ATT_RPW; rr++) {
            const int r = rr * ATT_WARPS + warp, t = q0 + r;
            if (t >= T || k0 > t) continue;
            const int s = k0 + lane;
            const bool valid = s <= t;
            const float *qr = q_s + r * hd, *dor = do_s + r * hd;
            const float *kr = k_s + lane * kst, *vr = v_s + lane * kst;
            float sc = 0.0f, dp = 0.0f;
            for (int d = 0; d < hd; d++) {
                sc += qr[d] * kr[d];
                dp += dor[d] * vr[d];
            }
            const float p = valid ? expf(sc * scale - lse_r[rr]) : 0.0f;
            const float ds = p * (dp - D_r[rr]);
            const int jmax = min(ATT_TILE, t - k0 + 1);
            for (int j = 0; j < jmax; j++) {
                const float dsj = __shfl_sync(0xffffffffu, ds, j);
                const float *kj = k_s + j * kst;
#pragma unroll
                for (int i = 0; i < ATT_MAXD; i++) {
                    const int d = lane + 32 * i;
                    if (d < hd) acc[rr][i] += dsj * kj[d];
                }
            }
        }
    }

#pragma unroll
    for (int rr = 0; rr < ATT_RPW; rr++) {
        const int t = q0 + rr * ATT_WARPS + warp;
        if (t >= T) continue;
        bf16 *dq = dqkv + ((size_t)b * T + t) * C3 + (size_t)h * hd;
#pragma unroll
        for (int i = 0; i < ATT_MAXD; i++) {
            const int d = lane + 32 * i;
            if (d < hd) dq[d] = f2bf(acc[rr][i] * scale);
        }
    }
}

/* dk_s = scale * sum_t dS_ts q_t, dv_s = sum_t P_ts dout_t over t >= s.
 * grid (ceil(T/32), NH, B): a block owns 32 keys; block 256, dynamic smem:
 * k_s (32, hd) | v_s (32, hd) | q_s (32, hd+1) | do_s (32, hd+1) | lse_s (32) | D_s (32), f32 */
__global__ void attention_backward_dkv_kernel(bf16 *dqkv /* (B,T,3C) */, const bf16 *dout /* (B,T,C) */,
                                              const bf16 *qkv /* (B,T,3C) */, const float *lse /* (B,NH,T) */,
                                              const float *Dsum /* (B,NH,T) */, int T, int C, int NH, float scale) {
    extern __shared__ float smem[];
    const int hd = C / NH, qst = hd + 1;
    float *k_s = smem;
    float *v_s = k_s + ATT_TILE * hd;
    float *q_s = v_s + ATT_TILE * hd;
    float *do_s = q_s + ATT_TILE * qst;
    float *lse_s = do_s + ATT_TILE * qst;
    float *D_s = lse_s + ATT_TILE;
    const int b = blockIdx.z, h = blockIdx.y, s0 = blockIdx.x * ATT_TILE;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const size_t C3 = 3 * (size_t)C;
    const bf16 *qb = qkv + (size_t)b * T * C3 + (size_t)h * hd;
    const bf16 *kb = qb + C;
    const bf16 *vb = qb + 2 * (size_t)C;
    const bf16 *dob = dout + (size_t)b * T * C + (size_t)h * hd;
    const float *lse_bh = lse + ((size_t)b * NH + h) * T;
    const float *D_bh = Dsum + ((size_t)b * NH + h) * T;

    for (int i = threadIdx.x; i < ATT_TILE * hd; i += blockDim.x) {
        int r = i / hd, d = i - r * hd, s = s0 + r;
        bool in = s < T;
        k_s[i] = in ? bf2f(kb[(size_t)s * C3 + d]) : 0.0f;
        v_s[i] = in ? bf2f(vb[(size_t)s * C3 + d]) : 0.0f;
    }
    float dk[ATT_RPW][ATT_MAXD], dv[ATT_RPW][ATT_MAXD];
#pragma unroll
    for (int rr = 0; rr < ATT_RPW; rr++)
#pragma unroll
        for (int i = 0; i < ATT_MAXD; i++)
            dk[rr][i] = dv[rr][i] = 0.0f;

    /* queries t >= s0 can see keys of this tile */
    for (int q0 = s0; q0 < T; q0 += ATT_TILE) {
        __syncthreads();
        for (int i = threadIdx.x; i < ATT_TILE * hd; i += blockDim.x) {
            int r = i / hd, d = i - r * hd, t = q0 + r;
            bool in = t < T;
            q_s[r * qst + d] = in ? bf2f(qb[(size_t)t * C3 + d]) : 0.0f;
            do_s[r * qst + d] = in ? bf2f(dob[(size_t)t * C + d]) : 0.0f;
        }
        if (threadIdx.x < ATT_TILE) {
            int t = q0 + threadIdx.x;
            lse_s[threadIdx.x] = t < T ? lse_bh[t] : 0.0f;
            D_s[threadIdx.x] = t < T ? D_bh[t] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int rr = 0; rr < ATT_RPW; rr++) {
            const int r = rr * ATT_WARPS + warp, s = s0 + r;
            if (s >= T || q0 + ATT_TILE - 1 < s) continue; /* uniform: no query of this tile sees s */
            const int t = q0 + lane;
            const bool valid = t < T && t >= s;
            const float *kr = k_s + r * hd, *vr = v_s + r * hd;
            const float *qt = q_s + lane * qst, *dot = do_s + lane * qst;
            float sc = 0.0f, dp = 0.0f;
            for (int d = 0; d < hd; d++) {
                sc += qt[d] * kr[d];
                dp += dot[d] * vr[d];
            }
            const float p = valid ? expf(sc * scale - lse_s[lane]) : 0.0f;
            const float ds = p * (dp - D_s[lane]);
            const int jmin = max(0, s - q0), jmax = min(ATT_TILE, T - q0); /* queries s .. T-1 */
            for (int j = jmin; j < jmax; j++) {
                const float pj = __shfl_sync(0xffffffffu, p, j);
                const float dsj = __shfl_sync(0xffffffffu, ds, j);
                const float *qj = q_s + j * qst, *doj = do_s + j * qst;
#pragma unroll
                for (int i = 0; i < ATT_MAXD; i++) {
                    const int d = lane + 32 * i;
                    if (d < hd) {
                        dv[rr][i] += pj * doj[d];
                        dk[rr][i] += dsj * qj[d];
                    }
                }
            }
        }
    }

#pragma unroll
    for (int rr = 0; rr < ATT_RPW; rr++) {
        const int s = s0 + rr * ATT_WARPS + warp;
        if (s >= T) continue;
        bf16 *dkr = dqkv + ((size_t)b * T + s) * C3 + C + (size_t)h * hd;
        bf16 *dvr = dkr + C;
#pragma unroll
        for (int i = 0; i < ATT_MAXD; i++) {
            const int d = lane + 32 * i;
            if (d < hd) {
                dkr[d] = f2bf(dk[rr][i] * scale);
                dvr[d] = f2bf(dv[rr][i]);
            }
        }
    }
}

/* ---------------------------------------------------------------- host */

static gml_status check_shape(const char *op, int B, int T, int C, int NH) {
    if (B <= 0 || T <= 0 || C <= 0 || NH <= 0 || C % NH != 0)
        return gml_error_set(GML_ERR_INVALID_ARG, "%s: bad shape B=%d T=%d C=%d NH=%d (C must be a multiple of NH)", op,
                             B, T, C, NH);
    if (C / NH > ATT_MAX_HD)
        return gml_error_set(GML_ERR_UNSUPPORTED, "%s: head size %d > %d is not supported by the CUDA kernels", op,
                             C / NH, ATT_MAX_HD);
    if (B > 65535 || NH > 65535) return gml_error_set(GML_ERR_UNSUPPORTED, "%s: B=%d or NH=%d above 65535", op, B, NH);
    return GML_OK;
}

/* Allows `bytes` of dynamic shared memory for `kernel` (needed above 48 KiB). */
template <typename K> static gml_status allow_smem(K kernel, size_t bytes, const char *name) {
    if (bytes <= 48 * 1024) return GML_OK;
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return gml_error_set(GML_ERR_BACKEND, "cudaFuncSetAttribute(%s, MaxDynamicSharedMemorySize, %zu) failed: %s",
                             name, bytes, cudaGetErrorString(e));
    }
    return GML_OK;
}

gml_status gml_cuda_attention_forward(gml_backend *be, void *out, float *lse, const void *qkv, int B, int T, int C,
                                      int NH) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    GML_CHECK(check_shape("attention_forward", B, T, C, NH));
    const int hd = C / NH;
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t smem = (size_t)(ATT_TILE * hd + ATT_TILE * (hd + 1) + ATT_TILE * hd) * sizeof(float);
    GML_CHECK(allow_smem(attention_forward_kernel, smem, "attention_forward_kernel"));
    dim3 grid(cuda_ceil_div((size_t)T, ATT_TILE), (unsigned)NH, (unsigned)B);
    attention_forward_kernel<<<grid, ATT_WARPS * 32, smem, c->stream>>>((bf16 *)out, lse, (const bf16 *)qkv, T, C, NH,
                                                                        scale);
    CUDA_CHECK_LAUNCH("attention_forward_kernel");
    return GML_OK;
}

gml_status gml_cuda_attention_backward(gml_backend *be, void *dqkv, const void *dout, const void *qkv, const void *out,
                                       const float *lse, int B, int T, int C, int NH) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    GML_CHECK(check_shape("attention_backward", B, T, C, NH));
    const int hd = C / NH;
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t rows = (size_t)B * NH * T;
    void *scratch = NULL;
    GML_CHECK(gml_cuda_scratch(c, rows * sizeof(float), &scratch));
    float *Dsum = (float *)scratch; /* (B,NH,T) */

    attention_backward_d_kernel<<<cuda_ceil_div(rows, 8), 256, 0, c->stream>>>(Dsum, (const bf16 *)dout,
                                                                               (const bf16 *)out, B, T, C, NH);
    CUDA_CHECK_LAUNCH("attention_backward_d_kernel");

    dim3 grid(cuda_ceil_div((size_t)T, ATT_TILE), (unsigned)NH, (unsigned)B);
    const size_t smem_dq = (size_t)(2 * ATT_TILE * hd + 2 * ATT_TILE * (hd + 1)) * sizeof(float);
    GML_CHECK(allow_smem(attention_backward_dq_kernel, smem_dq, "attention_backward_dq_kernel"));
    attention_backward_dq_kernel<<<grid, ATT_WARPS * 32, smem_dq, c->stream>>>(
        (bf16 *)dqkv, (const bf16 *)dout, (const bf16 *)qkv, lse, Dsum, T, C, NH, scale);
    CUDA_CHECK_LAUNCH("attention_backward_dq_kernel");

    const size_t smem_dkv = (size_t)(2 * ATT_TILE * hd + 2 * ATT_TILE * (hd + 1) + 2 * ATT_TILE) * sizeof(float);
    GML_CHECK(allow_smem(attention_backward_dkv_kernel, smem_dkv, "attention_backward_dkv_kernel"));
    attention_backward_dkv_kernel<<<grid, ATT_WARPS * 32, smem_dkv, c->stream>>>(
        (bf16 *)dqkv, (const bf16 *)dout, (const bf16 *)qkv, lse, Dsum, T, C, NH, scale);
    CUDA_CHECK_LAUNCH("attention_backward_dkv_kernel");
    return GML_OK;
}
