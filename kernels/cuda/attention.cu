/* attention.cu — causal multi-head self-attention on the GPU, forward and
 * backward, flash-attention style: scores are never stored, softmax is done
 * online in f32, and the backward recomputes P = exp(s * scale - lse).
 *
 * Layout (core/backend.h): qkv (B,T,3C) bf16 holds q | k | v per position,
 * head h uses channels [h*hd, (h+1)*hd); out (B,T,C) bf16; lse (B,NH,T) f32
 * is the natural log-sum-exp of the scaled scores; scale = 1/sqrt(hd).
 *
 * Each call is first offered to cuDNN's fused attention (attention_cudnn.cu:
 * hd 64 and 128, unless GML_ATTENTION=own); what cuDNN does not take runs
 * on the kernels of this file. Both compute the same lse, so either
 * backward consumes either forward's out and lse.
 *
 * Two implementations; the host picks one per call:
 *
 * 1. Tensor-core kernels (fa_*), FlashAttention-2 structure, for hd = 64 and
 *    hd = 128 when every tensor's base is 16-byte aligned (checked per call;
 *    C = NH * hd is then a multiple of 8, so every row is aligned too). Any
 *    T >= 1: rows past T are zero-filled by cp.async and masked.
 *  - mma.sync m16n8k16 bf16 x bf16 -> f32 via inline PTX, operands fetched
 *    from shared memory with ldmatrix (.trans for the operands whose
 *    reduction index is the row index of the stored tile); tiles are staged
 *    by 16-byte cp.async, double-buffered (prefetch of tile i+1 overlaps the
 *    math on tile i), rows padded by 16 bytes so ldmatrix is conflict-free.
 *  - 4 warps per block; the block owns 64 rows of one (b, h) and each warp
 *    owns 16 of them (for hd 64: 128 and 32 in every kernel), so softmax
 *    statistics stay in registers (a thread holds 2 rows of every 16x8
 *    accumulator tile; row reductions are two shuffles within a quad). The
 *    accumulator layout of S = Q K^T equals the A operand layout of the next
 *    product, so P and dS go to the tensor cores without a shared-memory
 *    round trip (rounded to bf16 there, as FlashAttention does; row sums and
 *    the softmax itself are f32).
 *  - forward: the block owns 64 MT queries (each warp MT tiles of 16: MT = 2
 *    for hd 64, so each K/V fragment loaded from shared memory serves two
 *    query tiles; 1 for hd 128, for registers) and walks key tiles (64 keys)
 *    up to the causal diagonal; online softmax in the log2 domain; writes out
 *    and lse. Blocks are launched heaviest (last query tile) first.
 *  - backward, deterministic (no atomics, fixed summation order, so the
 *    result is bit-for-bit reproducible):
 *    fa_backward_dq_kernel: the block owns 64 MT queries (MT as in the
 *      forward; 32-key tiles); it first computes D = rowsum(dout * out) for
 *      them (written to a scratch buffer), then
 *      walks key tiles up to the diagonal: S = Q K^T, P = exp(S*scale-lse),
 *      dP = dO V^T, dS = P (dP - D), dQ += dS K; writes dq.
 *    fa_backward_dkv_kernel (launched after, reads D): the block owns 64 MT
 *      keys and walks query tiles from the diagonal to T: S^T = K Q^T,
 *      dV += P^T dO, dP^T = V dO^T, dK += dS^T Q; writes dk and dv.
 *    S and dP are thus computed twice (7 instead of 5 matmuls): the price of
 *    not accumulating dq with atomics.
 *  - tiles: hd 64: forward 128 queries x 64 keys, dq 128 queries x 32 keys,
 *    dkv 128 keys x 32 queries (each warp two 16-row tiles, so a fragment
 *    loaded from shared memory serves two products). hd 128: one tile per
 *    warp, dq walks 32-key tiles and dkv 32-query tiles (to stay below 255
 *    registers without spills). K/V fragments of dkv are re-read from
 *    shared memory (the hd 64 one-tile version kept them in registers).
 *  - measured (GPT-2 124M: B=16, T=1024, NH=12, hd=64; ncu, per layer):
 *    H100 with one tile per warp: forward 0.15 ms (~170 TFLOP/s on the
 *    causal half), dq 0.18 ms, dkv 0.24 ms (the scalar kernels took 19 ms
 *    for the same); H200 with two tiles per warp: forward 0.124 ms, dq
 *    0.161 ms, dkv 0.231 ms (one tile: 0.150, 0.176, 0.240).
 *
 * 2. Scalar fallback (attention_*_kernel): plain FMA code on f32 shared-memory
 *    tiles for every other head size up to 128 (and unaligned tensors):
 *  - a block of ATT_WARPS warps owns a tile of ATT_TILE query rows (forward
 *    and dq) or key rows (dk, dv) of one (b, h); each warp owns the tile rows
 *    r = rr * ATT_WARPS + warp, rr < ATT_RPW;
 *  - the other side is walked in tiles of 32 rows staged in shared memory as
 *    f32; lane j of a warp computes the dot products with row j of that tile;
 *  - each lane owns head dimensions d = lane + 32 i (i < ATT_MAXD) of the
 *    accumulators, so hd may be anything up to 128.
 *    Rows past T are zero-filled in shared memory and masked.
 *
 * Not for: non-causal or cross attention, dropout on P, hd > 128.
 */
#include "kernels/cuda/cuda_common.cuh"

#define ATT_TILE    32                     /* rows per tile on both sides (= warp size) */
#define ATT_WARPS   8                      /* warps per block */
#define ATT_RPW     (ATT_TILE / ATT_WARPS) /* tile rows per warp */
#define ATT_MAXD    4                      /* head dims per lane: hd <= 32 * ATT_MAXD */
#define ATT_MAX_HD  (32 * ATT_MAXD)
#define ATT_NEG_BIG (-1e30f) /* "minus infinity" for running maxima */

/* ===================================================== scalar fallback */

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

/* ================================================ tensor-core kernels (fa_*) */

#define FA_THREADS 128                 /* 4 warps; each owns 16 rows of the block's 64 */
#define FA_ROWS    64                  /* rows a block owns (queries or keys) */
#define FA_LOG2E   1.4426950408889634f /* exp(x) = exp2(x * log2(e)) */

/* dynamic shared memory of the fa_* kernels (uint4: 16-byte aligned) */
extern __shared__ uint4 fa_smem[];

__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

/* 16-byte global -> shared copy; bytes = 0 writes zeros and reads nothing */
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void *src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_4(uint32_t dst, const void *src, int bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit(void) { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
/* waits until at most N of this thread's committed groups are in flight */
template <int N> __device__ __forceinline__ void cp_async_wait(void) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* four 8x8 bf16 matrices from shared memory; lane l gives the address of row
 * l % 8 of matrix l / 8, and r[i] receives this lane's part of matrix i */
__device__ __forceinline__ void ldsm_x4(uint32_t r[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t r[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

/* c (16x8 f32) += a (16x16 bf16, row) * b (16x8 bf16, col). Fragments (PTX ISA,
 * g = lane / 4, q = lane % 4): a = {(g, 2q..2q+1), (g+8, 2q..), (g, 2q+8..),
 * (g+8, 2q+8..)}; b = {(k 2q..2q+1, n g), (k 2q+8.., n g)};
 * c = {(g, 2q), (g, 2q+1), (g+8, 2q), (g+8, 2q+1)}. */
__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); /* .x (low half) = lo */
    return *reinterpret_cast<uint32_t *>(&v);
}

/* The A operand for columns [16 kk, 16 kk + 16) of a product whose left
 * factor is the 16 x 8n accumulator c: the accumulator layout of two
 * adjacent 16x8 tiles is the A layout of one 16x16 tile. */
__device__ __forceinline__ void acc_to_a(uint32_t a[4], const float c0[4], const float c1[4]) {
    a[0] = pack_bf16(c0[0], c0[1]);
    a[1] = pack_bf16(c0[2], c0[3]);
    a[2] = pack_bf16(c1[0], c1[1]);
    a[3] = pack_bf16(c1[2], c1[3]);
}

/* Per-lane element offsets of the ldmatrix row addresses in a tile of row
 * stride st (elements). For a tile X stored row-major:
 *  a:  the A operand rows m0..m0+15, cols k0..k0+15 of X        (ldsm_x4)
 *  bn: the B operand X^T, n = rows n0..n0+15, k = cols k0..k0+15 (ldsm_x4);
 *      r[0..1] is the 16x8 B tile for n0.., r[2..3] the one for n0+8..
 *  bt: the B operand X, k = rows k0..k0+15, n = cols n0..n0+15  (ldsm_x4_t);
 *      r[0..1] for n0.., r[2..3] for n0+8..
 * The address of a fragment is tile + row0 * st + col0 + offset. */
struct fa_lane_offsets {
    int a, bn, bt;
};
__device__ __forceinline__ fa_lane_offsets fa_offsets(int lane, int st) {
    fa_lane_offsets o;
    o.a = (lane & 15) * st + ((lane >> 4) << 3);
    o.bn = ((lane & 7) + ((lane >> 4) << 3)) * st + (((lane >> 3) & 1) << 3);
    o.bt = ((lane & 7) + (((lane >> 3) & 1) << 3)) * st + ((lane >> 4) << 3);
    return o;
}

/* cp.async of ROWS rows of HD bf16 (row r at src + r * stride) into a shared
 * tile of row stride HD + 8; rows >= n_valid are zero-filled. */
template <int HD, int ROWS>
__device__ __forceinline__ void fa_load_rows(bf16 *dst, const bf16 *src, size_t stride, int n_valid) {
    constexpr int CPR = HD / 8, ST = HD + 8; /* 16-byte chunks per row */
    static_assert((ROWS * CPR) % FA_THREADS == 0, "tile does not split evenly over the block");
#pragma unroll
    for (int j = 0; j < ROWS * CPR / FA_THREADS; j++) {
        const int i = (int)threadIdx.x + j * FA_THREADS, r = i / CPR, c = i % CPR;
        const bool in = r < n_valid;
        cp_async_16(smem_u32(dst + r * ST + c * 8), src + (size_t)(in ? r : 0) * stride + c * 8, in ? 16 : 0);
    }
}

/* n f32 (index i at src[i]) into shared memory; i >= n_valid become 0 */
__device__ __forceinline__ void fa_load_f32(float *dst, const float *src, int n, int n_valid) {
    for (int i = threadIdx.x; i < n; i += FA_THREADS) {
        const bool in = i < n_valid;
        cp_async_4(smem_u32(dst + i), src + (in ? i : 0), in ? 4 : 0);
    }
}

/* ------------------------------------------------------ fa forward */

/* grid (ceil(T/BM), NH, B) with BM = 64 MT, block 128, dynamic smem (bf16,
 * row stride HD+8): q_s (BM, HD) | k_s [2] (BN, HD) | v_s [2] (BN, HD).
 * Each warp owns MT tiles of 16 queries: every K and V fragment it loads
 * from shared memory serves MT tiles, so MT = 2 halves the shared-memory
 * traffic per product (what bounds MT = 1 on an H100/H200). A row's
 * arithmetic does not depend on MT: tiles past a row's diagonal that its
 * warp still walks are fully masked, which leaves m, l and o bit for bit
 * as they were (correction factor exactly 1, probabilities exactly 0). */
template <int HD, int BN, int MT>
__global__ void __launch_bounds__(FA_THREADS)
    fa_forward_kernel(bf16 *out /* (B,T,C) */, float *lse /* (B,NH,T) */, const bf16 *qkv /* (B,T,3C) */, int T, int C,
                      int NH, float scale) {
    constexpr int BM = 4 * 16 * MT, ST = HD + 8;
    constexpr int KD = HD / 16; /* 16-wide k chunks over the head dims */
    constexpr int NS = BN / 8;  /* 8-wide score tiles per key tile */
    constexpr int ND = HD / 8;  /* 8-wide output tiles over the head dims */
    bf16 *q_s = (bf16 *)fa_smem;
    bf16 *k_s = q_s + BM * ST;
    bf16 *v_s = k_s + 2 * BN * ST;

    const int tile = gridDim.x - 1 - blockIdx.x; /* heaviest tiles first */
    const int q0 = tile * BM, h = blockIdx.y, b = blockIdx.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    const int r0 = q0 + warp * 16 * MT; /* this warp's first query */
    const size_t C3 = 3 * (size_t)C;
    const bf16 *qb = qkv + (size_t)b * T * C3 + (size_t)h * HD; /* q of (b, t=0, h) */
    const bf16 *kb = qb + C;
    const bf16 *vb = qb + 2 * (size_t)C;
    const fa_lane_offsets off = fa_offsets(lane, ST);
    const float sl2 = scale * FA_LOG2E;

    const int q_end = min(T, q0 + BM);      /* queries q0 .. q_end-1 */
    const int n_kt = (q_end + BN - 1) / BN; /* key tiles holding keys < q_end */
    fa_load_rows<HD, BM>(q_s, qb + (size_t)q0 * C3, C3, T - q0);
    cp_async_commit();
    fa_load_rows<HD, BN>(k_s, kb, C3, T);
    fa_load_rows<HD, BN>(v_s, vb, C3, T);
    cp_async_commit();
    cp_async_wait<1>(); /* q */
    __syncthreads();
    uint32_t qf[MT][KD][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int kk = 0; kk < KD; kk++)
            ldsm_x4(qf[mt][kk], smem_u32(q_s + (warp * MT + mt) * 16 * ST + kk * 16 + off.a));

    float o[MT][ND][4], m[MT][2], l[MT][2]; /* rows g, g + 8 of each tile */
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        m[mt][0] = m[mt][1] = ATT_NEG_BIG;
        l[mt][0] = l[mt][1] = 0.0f;
#pragma unroll
        for (int i = 0; i < ND; i++)
            o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.0f;
    }

    for (int kt = 0; kt < n_kt; kt++) {
        const int k0 = kt * BN;
        cp_async_wait<0>(); /* tile kt */
        __syncthreads();    /* ... visible to all, and tile kt-1 consumed */
        if (kt + 1 < n_kt) {
            const int nb = (kt + 1) & 1;
            fa_load_rows<HD, BN>(k_s + nb * BN * ST, kb + (size_t)(k0 + BN) * C3, C3, T - (k0 + BN));
            fa_load_rows<HD, BN>(v_s + nb * BN * ST, vb + (size_t)(k0 + BN) * C3, C3, T - (k0 + BN));
        }
        cp_async_commit();
        if (k0 > r0 + 16 * MT - 1) continue; /* all keys after this warp's queries */
        const bf16 *ks = k_s + (kt & 1) * BN * ST, *vs = v_s + (kt & 1) * BN * ST;

        float s[MT][NS][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int i = 0; i < NS; i++)
                s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KD; kk++)
#pragma unroll
            for (int np = 0; np < NS / 2; np++) {
                uint32_t bk[4];
                ldsm_x4(bk, smem_u32(ks + np * 16 * ST + kk * 16 + off.bn));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma_bf16(s[mt][2 * np], qf[mt][kk], bk[0], bk[1]);
                    mma_bf16(s[mt][2 * np + 1], qf[mt][kk], bk[2], bk[3]);
                }
            }

#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            const int rm = r0 + 16 * mt; /* this tile's first query */
            if (k0 + BN - 1 > rm) {      /* diagonal tile: key > query is masked */
#pragma unroll
                for (int nt = 0; nt < NS; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        if (k0 + nt * 8 + 2 * tq + (e & 1) > rm + g + (e >> 1) * 8) s[mt][nt][e] = -INFINITY;
            }

            /* online softmax; m in raw score units, every row has a key <= it
             * in its first tile, so m is finite from then on */
            float mx[2] = {m[mt][0], m[mt][1]};
#pragma unroll
            for (int nt = 0; nt < NS; nt++) {
                mx[0] = fmaxf(mx[0], fmaxf(s[mt][nt][0], s[mt][nt][1]));
                mx[1] = fmaxf(mx[1], fmaxf(s[mt][nt][2], s[mt][nt][3]));
            }
            float ms[2];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
                const float corr = exp2f((m[mt][i] - mx[i]) * sl2);
                m[mt][i] = mx[i];
                ms[i] = mx[i] * sl2;
                l[mt][i] *= corr; /* this thread's partial row sum; the quad's are added at the end */
#pragma unroll
                for (int nt = 0; nt < ND; nt++) {
                    o[mt][nt][2 * i] *= corr;
                    o[mt][nt][2 * i + 1] *= corr;
                }
            }
#pragma unroll
            for (int nt = 0; nt < NS; nt++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    s[mt][nt][e] = exp2f(fmaf(s[mt][nt][e], sl2, -ms[e >> 1]));
                    l[mt][e >> 1] += s[mt][nt][e];
                }
            }
        }

        /* o += P V */
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            uint32_t pa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                acc_to_a(pa[mt], s[mt][2 * kk], s[mt][2 * kk + 1]);
#pragma unroll
            for (int dp = 0; dp < HD / 16; dp++) {
                uint32_t bv[4];
                ldsm_x4_t(bv, smem_u32(vs + kk * 16 * ST + dp * 16 + off.bt));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma_bf16(o[mt][2 * dp], pa[mt], bv[0], bv[1]);
                    mma_bf16(o[mt][2 * dp + 1], pa[mt], bv[2], bv[3]);
                }
            }
        }
    }

#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int i = 0; i < 2; i++) {
            float li = l[mt][i];
            li += __shfl_xor_sync(0xffffffffu, li, 1);
            li += __shfl_xor_sync(0xffffffffu, li, 2);
            const int t = r0 + 16 * mt + g + 8 * i;
            if (t >= T) continue;
            const float inv = 1.0f / li;
            bf16 *orow = out + ((size_t)b * T + t) * C + (size_t)h * HD + 2 * tq;
#pragma unroll
            for (int nt = 0; nt < ND; nt++)
                *(__nv_bfloat162 *)(orow + nt * 8) =
                    __floats2bfloat162_rn(o[mt][nt][2 * i] * inv, o[mt][nt][2 * i + 1] * inv);
            if (tq == 0) lse[((size_t)b * NH + h) * T + t] = m[mt][i] * scale + logf(li);
        }
}

/* ------------------------------------------------------ fa backward: dq */

/* Also writes Dsum = rowsum(dout * out) of its queries for the dkv kernel.
 * grid (ceil(T/BM), NH, B) with BM = 64 MT, block 128, dynamic smem (bf16,
 * row stride HD+8): q_s (BM, HD) | do_s (BM, HD) | k_s [2] (BN, HD) |
 * v_s [2] (BN, HD) | d_s (BM) f32. Each warp owns MT tiles of 16 queries, so
 * each K and V fragment from shared memory serves MT tiles (as in the
 * forward). dq sums the same 16-key chunks in the same order whatever BN and
 * MT are, and tiles past a row's diagonal add exact zeros: the bits do not
 * depend on them. */
template <int HD, int BN, int MT, int MINB>
__global__ void __launch_bounds__(FA_THREADS, MINB)
    fa_backward_dq_kernel(bf16 *dqkv /* (B,T,3C) */, float *Dsum /* (B,NH,T) */, const bf16 *dout /* (B,T,C) */,
                          const bf16 *qkv /* (B,T,3C) */, const bf16 *out /* (B,T,C) */,
                          const float *lse /* (B,NH,T) */, int T, int C, int NH, float scale) {
    constexpr int BM = 4 * 16 * MT, ST = HD + 8, KD = HD / 16, NS = BN / 8, ND = HD / 8;
    bf16 *q_s = (bf16 *)fa_smem;
    bf16 *do_s = q_s + BM * ST;
    bf16 *k_s = do_s + BM * ST;
    bf16 *v_s = k_s + 2 * BN * ST;
    float *d_s = (float *)(v_s + 2 * BN * ST);

    const int tile = gridDim.x - 1 - blockIdx.x; /* heaviest tiles first */
    const int q0 = tile * BM, h = blockIdx.y, b = blockIdx.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    const int r0 = q0 + warp * 16 * MT; /* this warp's first query */
    const size_t C3 = 3 * (size_t)C;
    const bf16 *qb = qkv + (size_t)b * T * C3 + (size_t)h * HD;
    const bf16 *kb = qb + C;
    const bf16 *vb = qb + 2 * (size_t)C;
    const bf16 *dob = dout + (size_t)b * T * C + (size_t)h * HD;
    const float *lse_bh = lse + ((size_t)b * NH + h) * T;
    const fa_lane_offsets off = fa_offsets(lane, ST);
    const float sl2 = scale * FA_LOG2E;

    const int q_end = min(T, q0 + BM);
    const int n_kt = (q_end + BN - 1) / BN;
    fa_load_rows<HD, BM>(q_s, qb + (size_t)q0 * C3, C3, T - q0);
    fa_load_rows<HD, BM>(do_s, dob + (size_t)q0 * C, C, T - q0);
    cp_async_commit();
    fa_load_rows<HD, BN>(k_s, kb, C3, T);
    fa_load_rows<HD, BN>(v_s, vb, C3, T);
    cp_async_commit();
    cp_async_wait<1>(); /* q, dout */
    __syncthreads();

#pragma unroll
    for (int j = 0; j < MT; j++) { /* D of row threadIdx/2 + 64 j: two threads per row, HD/2 dims each */
        const int r = (threadIdx.x >> 1) + 64 * j, half = threadIdx.x & 1, t = q0 + r;
        float sum = 0.0f;
        if (t < T) {
            const bf16 *orow = out + ((size_t)b * T + t) * C + (size_t)h * HD + half * (HD / 2);
            const bf16 *drow = do_s + r * ST + half * (HD / 2);
#pragma unroll
            for (int c = 0; c < HD / 2; c += 8) {
                const uint4 ov = *(const uint4 *)(orow + c), dv = *(const uint4 *)(drow + c);
                const __nv_bfloat162 *o2 = (const __nv_bfloat162 *)&ov, *d2 = (const __nv_bfloat162 *)&dv;
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const float2 of = __bfloat1622float2(o2[i]), df = __bfloat1622float2(d2[i]);
                    sum += of.x * df.x + of.y * df.y;
                }
            }
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        if (half == 0) {
            d_s[r] = sum;
            if (t < T) Dsum[((size_t)b * NH + h) * T + t] = sum;
        }
    }
    uint32_t qf[MT][KD][4], dof[MT][KD][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int kk = 0; kk < KD; kk++) {
            ldsm_x4(qf[mt][kk], smem_u32(q_s + (warp * MT + mt) * 16 * ST + kk * 16 + off.a));
            ldsm_x4(dof[mt][kk], smem_u32(do_s + (warp * MT + mt) * 16 * ST + kk * 16 + off.a));
        }
    __syncthreads(); /* d_s is complete */

    float lse2[MT][2], Dr[MT][2]; /* rows g, g + 8 of each tile */
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int t = r0 + 16 * mt + g + 8 * i;
            lse2[mt][i] = t < T ? lse_bh[t] * FA_LOG2E : 0.0f;
            Dr[mt][i] = d_s[(warp * MT + mt) * 16 + g + 8 * i];
        }

    float dq[MT][ND][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int i = 0; i < ND; i++)
            dq[mt][i][0] = dq[mt][i][1] = dq[mt][i][2] = dq[mt][i][3] = 0.0f;

    for (int kt = 0; kt < n_kt; kt++) {
        const int k0 = kt * BN;
        cp_async_wait<0>();
        __syncthreads();
        if (kt + 1 < n_kt) {
            const int nb = (kt + 1) & 1;
            fa_load_rows<HD, BN>(k_s + nb * BN * ST, kb + (size_t)(k0 + BN) * C3, C3, T - (k0 + BN));
            fa_load_rows<HD, BN>(v_s + nb * BN * ST, vb + (size_t)(k0 + BN) * C3, C3, T - (k0 + BN));
        }
        cp_async_commit();
        if (k0 > r0 + 16 * MT - 1) continue;
        const bf16 *ks = k_s + (kt & 1) * BN * ST, *vs = v_s + (kt & 1) * BN * ST;

        float s[MT][NS][4], dp[MT][NS][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int i = 0; i < NS; i++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    s[mt][i][e] = dp[mt][i][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KD; kk++)
#pragma unroll
            for (int np = 0; np < NS / 2; np++) {
                uint32_t bk[4], bv[4];
                ldsm_x4(bk, smem_u32(ks + np * 16 * ST + kk * 16 + off.bn));
                ldsm_x4(bv, smem_u32(vs + np * 16 * ST + kk * 16 + off.bn));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma_bf16(s[mt][2 * np], qf[mt][kk], bk[0], bk[1]);
                    mma_bf16(s[mt][2 * np + 1], qf[mt][kk], bk[2], bk[3]);
                    mma_bf16(dp[mt][2 * np], dof[mt][kk], bv[0], bv[1]);
                    mma_bf16(dp[mt][2 * np + 1], dof[mt][kk], bv[2], bv[3]);
                }
            }
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            const int rm = r0 + 16 * mt;
            const bool diag = k0 + BN - 1 > rm;
#pragma unroll
            for (int nt = 0; nt < NS; nt++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float p = exp2f(fmaf(s[mt][nt][e], sl2, -lse2[mt][e >> 1]));
                    if (diag && k0 + nt * 8 + 2 * tq + (e & 1) > rm + g + (e >> 1) * 8) p = 0.0f;
                    s[mt][nt][e] = p * (dp[mt][nt][e] - Dr[mt][e >> 1]); /* dS */
                }
            }
        }

        /* dq += dS K */
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            uint32_t da[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                acc_to_a(da[mt], s[mt][2 * kk], s[mt][2 * kk + 1]);
#pragma unroll
            for (int dd = 0; dd < HD / 16; dd++) {
                uint32_t bk[4];
                ldsm_x4_t(bk, smem_u32(ks + kk * 16 * ST + dd * 16 + off.bt));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma_bf16(dq[mt][2 * dd], da[mt], bk[0], bk[1]);
                    mma_bf16(dq[mt][2 * dd + 1], da[mt], bk[2], bk[3]);
                }
            }
        }
    }

#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int t = r0 + 16 * mt + g + 8 * i;
            if (t >= T) continue;
            bf16 *drow = dqkv + ((size_t)b * T + t) * C3 + (size_t)h * HD + 2 * tq;
#pragma unroll
            for (int nt = 0; nt < ND; nt++)
                *(__nv_bfloat162 *)(drow + nt * 8) =
                    __floats2bfloat162_rn(dq[mt][nt][2 * i] * scale, dq[mt][nt][2 * i + 1] * scale);
        }
}

/* ------------------------------------------------------ fa backward: dk, dv */

/* grid (ceil(T/BN), NH, B) with BN = 64 MT: a block owns BN keys, a warp MT
 * tiles of 16 of them (so each Q and dO fragment from shared memory serves
 * MT key tiles); block 128; the warp's K and V fragments are re-read from
 * shared memory at each use. Dynamic smem (bf16,
 * row stride HD+8): k_s (BN, HD) | v_s (BN, HD) | q_s [2] (BM, HD) |
 * do_s [2] (BM, HD) | lse_s [2] (BM) f32 | d_s [2] (BM) f32. dk and dv add
 * the same 16-query chunks in the same order whatever BM and MT are, and
 * query chunks before a key add exact zeros: the bits do not depend on them. */
template <int HD, int BM, int MT, int MINB>
__global__ void __launch_bounds__(FA_THREADS, MINB)
    fa_backward_dkv_kernel(bf16 *dqkv /* (B,T,3C) */, const bf16 *dout /* (B,T,C) */, const bf16 *qkv /* (B,T,3C) */,
                           const float *lse /* (B,NH,T) */, const float *Dsum /* (B,NH,T) */, int T, int C, int NH,
                           float scale) {
    constexpr int BN = 4 * 16 * MT, ST = HD + 8, KD = HD / 16, NS = BM / 8, ND = HD / 8;
    static_assert(BN % BM == 0, "a key tile must start a query tile");
    bf16 *k_s = (bf16 *)fa_smem;
    bf16 *v_s = k_s + BN * ST;
    bf16 *q_s = v_s + BN * ST;
    bf16 *do_s = q_s + 2 * BM * ST;
    float *lse_s = (float *)(do_s + 2 * BM * ST);
    float *d_s = lse_s + 2 * BM;

    const int k0 = blockIdx.x * BN, h = blockIdx.y, b = blockIdx.z; /* first tiles do the most work */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    const int kr0 = k0 + warp * 16 * MT; /* this warp's first key */
    const size_t C3 = 3 * (size_t)C;
    const bf16 *qb = qkv + (size_t)b * T * C3 + (size_t)h * HD;
    const bf16 *kb = qb + C;
    const bf16 *vb = qb + 2 * (size_t)C;
    const bf16 *dob = dout + (size_t)b * T * C + (size_t)h * HD;
    const float *lse_bh = lse + ((size_t)b * NH + h) * T;
    const float *D_bh = Dsum + ((size_t)b * NH + h) * T;
    const fa_lane_offsets off = fa_offsets(lane, ST);
    const float sl2 = scale * FA_LOG2E;

    const int qt0 = k0 / BM, n_qt = (T + BM - 1) / BM; /* query tiles qt0 .. n_qt-1 see these keys */
    fa_load_rows<HD, BN>(k_s, kb + (size_t)k0 * C3, C3, T - k0);
    fa_load_rows<HD, BN>(v_s, vb + (size_t)k0 * C3, C3, T - k0);
    cp_async_commit();
    {
        const int q0 = qt0 * BM;
        fa_load_rows<HD, BM>(q_s, qb + (size_t)q0 * C3, C3, T - q0);
        fa_load_rows<HD, BM>(do_s, dob + (size_t)q0 * C, C, T - q0);
        fa_load_f32(lse_s, lse_bh + q0, BM, T - q0);
        fa_load_f32(d_s, D_bh + q0, BM, T - q0);
    }
    cp_async_commit();
    cp_async_wait<1>(); /* k, v */
    __syncthreads();

    float dk[MT][ND][4], dv[MT][ND][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int i = 0; i < ND; i++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                dk[mt][i][e] = dv[mt][i][e] = 0.0f;

    for (int qt = qt0; qt < n_qt; qt++) {
        const int q0 = qt * BM, buf = (qt - qt0) & 1;
        cp_async_wait<0>();
        __syncthreads();
        if (qt + 1 < n_qt) {
            const int nb = buf ^ 1, q1 = q0 + BM;
            fa_load_rows<HD, BM>(q_s + nb * BM * ST, qb + (size_t)q1 * C3, C3, T - q1);
            fa_load_rows<HD, BM>(do_s + nb * BM * ST, dob + (size_t)q1 * C, C, T - q1);
            fa_load_f32(lse_s + nb * BM, lse_bh + q1, BM, T - q1);
            fa_load_f32(d_s + nb * BM, D_bh + q1, BM, T - q1);
        }
        cp_async_commit();
        if (q0 + BM - 1 < kr0 || kr0 >= T) continue; /* no query of the tile sees this warp's keys */
        const bf16 *qs = q_s + buf * BM * ST, *dos = do_s + buf * BM * ST;
        const float *ls = lse_s + buf * BM, *ds = d_s + buf * BM;

        /* S^T = K Q^T (rows: keys kr0 + 16 mt + g (+8), columns: queries) */
        float s[MT][NS][4], dp[MT][NS][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int i = 0; i < NS; i++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    s[mt][i][e] = dp[mt][i][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KD; kk++) {
            uint32_t ka[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                ldsm_x4(ka[mt], smem_u32(k_s + (warp * MT + mt) * 16 * ST + kk * 16 + off.a));
#pragma unroll
            for (int np = 0; np < NS / 2; np++) {
                uint32_t bq[4];
                ldsm_x4(bq, smem_u32(qs + np * 16 * ST + kk * 16 + off.bn));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma_bf16(s[mt][2 * np], ka[mt], bq[0], bq[1]);
                    mma_bf16(s[mt][2 * np + 1], ka[mt], bq[2], bq[3]);
                }
            }
        }
        /* P^T; masked: query < key (causal) and query >= T (padding) */
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            const int km = kr0 + 16 * mt;
            const bool need_mask = q0 < km + 16 || q0 + BM > T;
#pragma unroll
            for (int nt = 0; nt < NS; nt++) {
                const int c = nt * 8 + 2 * tq;
                const float2 l2 = *(const float2 *)(ls + c);
                const float lc[2] = {l2.x * FA_LOG2E, l2.y * FA_LOG2E};
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float p = exp2f(fmaf(s[mt][nt][e], sl2, -lc[e & 1]));
                    const int t = q0 + c + (e & 1), key = km + g + (e >> 1) * 8;
                    if (need_mask && (t < key || t >= T)) p = 0.0f;
                    s[mt][nt][e] = p;
                }
            }
        }
        /* dV += P^T dO */
#pragma unroll
        for (int kk = 0; kk < BM / 16; kk++) {
            uint32_t pa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                acc_to_a(pa[mt], s[mt][2 * kk], s[mt][2 * kk + 1]);
#pragma unroll
            for (int dd = 0; dd < HD / 16; dd++) {
                uint32_t bo[4];
                ldsm_x4_t(bo, smem_u32(dos + kk * 16 * ST + dd * 16 + off.bt));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma_bf16(dv[mt][2 * dd], pa[mt], bo[0], bo[1]);
                    mma_bf16(dv[mt][2 * dd + 1], pa[mt], bo[2], bo[3]);
                }
            }
        }
        /* dP^T = V dO^T */
#pragma unroll
        for (int kk = 0; kk < KD; kk++) {
            uint32_t va[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                ldsm_x4(va[mt], smem_u32(v_s + (warp * MT + mt) * 16 * ST + kk * 16 + off.a));
#pragma unroll
            for (int np = 0; np < NS / 2; np++) {
                uint32_t bo[4];
                ldsm_x4(bo, smem_u32(dos + np * 16 * ST + kk * 16 + off.bn));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma_bf16(dp[mt][2 * np], va[mt], bo[0], bo[1]);
                    mma_bf16(dp[mt][2 * np + 1], va[mt], bo[2], bo[3]);
                }
            }
        }
        /* dS^T = P^T (dP^T - D) */
#pragma unroll
        for (int nt = 0; nt < NS; nt++) {
            const float2 d2 = *(const float2 *)(ds + nt * 8 + 2 * tq);
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    s[mt][nt][e] *= dp[mt][nt][e] - ((e & 1) ? d2.y : d2.x);
        }
        /* dK += dS^T Q */
#pragma unroll
        for (int kk = 0; kk < BM / 16; kk++) {
            uint32_t da[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                acc_to_a(da[mt], s[mt][2 * kk], s[mt][2 * kk + 1]);
#pragma unroll
            for (int dd = 0; dd < HD / 16; dd++) {
                uint32_t bq[4];
                ldsm_x4_t(bq, smem_u32(qs + kk * 16 * ST + dd * 16 + off.bt));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma_bf16(dk[mt][2 * dd], da[mt], bq[0], bq[1]);
                    mma_bf16(dk[mt][2 * dd + 1], da[mt], bq[2], bq[3]);
                }
            }
        }
    }

#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int s_ = kr0 + 16 * mt + g + 8 * i;
            if (s_ >= T) continue;
            bf16 *dkr = dqkv + ((size_t)b * T + s_) * C3 + C + (size_t)h * HD + 2 * tq;
            bf16 *dvr = dkr + C;
#pragma unroll
            for (int nt = 0; nt < ND; nt++) {
                *(__nv_bfloat162 *)(dkr + nt * 8) =
                    __floats2bfloat162_rn(dk[mt][nt][2 * i] * scale, dk[mt][nt][2 * i + 1] * scale);
                *(__nv_bfloat162 *)(dvr + nt * 8) = __floats2bfloat162_rn(dv[mt][nt][2 * i], dv[mt][nt][2 * i + 1]);
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

static bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* The tensor-core kernels take hd 64 and 128 with 16-byte aligned rows
 * (C = NH * hd is then a multiple of 8, so only the base pointers matter). */
static bool fa_supported(int hd) { return hd == 64 || hd == 128; }

/* Tile shapes and occupancy per head size (see the file comment). For hd
 * 64 every kernel gives each warp two 16-row tiles (forward 251, dq 241, dkv
 * 255 registers with 8 bytes spilled: 2 blocks per SM), dq and dkv with
 * 32-row tiles on the other side to fit. hd 128 keeps one tile per warp. */
template <int HD> struct fa_cfg {
    static constexpr int FWD_BN = 64;                 /* keys per tile, forward */
    static constexpr int FWD_MT = HD <= 64 ? 2 : 1;   /* 16-query tiles per warp, forward */
    static constexpr int FWD_BM = 64 * FWD_MT;        /* queries per block, forward */
    static constexpr int DQ_MT = HD <= 64 ? 2 : 1;    /* 16-query tiles per warp, dq */
    static constexpr int DQ_BM = 64 * DQ_MT;          /* queries per block, dq */
    static constexpr int DQ_BN = 32;                  /* keys per tile, dq */
    static constexpr int DKV_MT = HD <= 64 ? 2 : 1;   /* 16-key tiles per warp, dkv */
    static constexpr int DKV_BN = 64 * DKV_MT;        /* keys per block, dkv */
    static constexpr int DKV_BM = 32;                 /* queries per tile, dkv */
    static constexpr int DQ_MINB = DQ_MT == 2 ? 2 : 1; /* __launch_bounds__ min blocks per SM */
    static constexpr int DKV_MINB = 1;
    static constexpr size_t TILE = (size_t)(HD + 8) * sizeof(bf16); /* bytes per staged row */
    static constexpr size_t FWD_SMEM = (FWD_BM + 4 * FWD_BN) * TILE;
    static constexpr size_t DQ_SMEM = (2 * DQ_BM + 4 * DQ_BN) * TILE + DQ_BM * sizeof(float);
    static constexpr size_t DKV_SMEM = (2 * DKV_BN + 4 * DKV_BM) * TILE + 4 * DKV_BM * sizeof(float);
};

template <int HD>
static gml_status fa_forward(cudaStream_t st, bf16 *out, float *lse, const bf16 *qkv, int B, int T, int C, int NH,
                             float scale) {
    typedef fa_cfg<HD> cfg;
    auto kernel = fa_forward_kernel<HD, cfg::FWD_BN, cfg::FWD_MT>;
    GML_CHECK(allow_smem(kernel, cfg::FWD_SMEM, "fa_forward_kernel"));
    dim3 grid(cuda_ceil_div((size_t)T, cfg::FWD_BM), (unsigned)NH, (unsigned)B);
    kernel<<<grid, FA_THREADS, cfg::FWD_SMEM, st>>>(out, lse, qkv, T, C, NH, scale);
    CUDA_CHECK_LAUNCH("fa_forward_kernel");
    return GML_OK;
}

template <int HD>
static gml_status fa_backward(cudaStream_t st, bf16 *dqkv, float *Dsum, const bf16 *dout, const bf16 *qkv,
                              const bf16 *out, const float *lse, int B, int T, int C, int NH, float scale) {
    typedef fa_cfg<HD> cfg;
    dim3 grid_dkv(cuda_ceil_div((size_t)T, cfg::DKV_BN), (unsigned)NH, (unsigned)B);
    dim3 grid_dq(cuda_ceil_div((size_t)T, cfg::DQ_BM), (unsigned)NH, (unsigned)B);
    auto dq = fa_backward_dq_kernel<HD, cfg::DQ_BN, cfg::DQ_MT, cfg::DQ_MINB>;
    GML_CHECK(allow_smem(dq, cfg::DQ_SMEM, "fa_backward_dq_kernel"));
    dq<<<grid_dq, FA_THREADS, cfg::DQ_SMEM, st>>>(dqkv, Dsum, dout, qkv, out, lse, T, C, NH, scale);
    CUDA_CHECK_LAUNCH("fa_backward_dq_kernel");
    auto dkv = fa_backward_dkv_kernel<HD, cfg::DKV_BM, cfg::DKV_MT, cfg::DKV_MINB>;
    GML_CHECK(allow_smem(dkv, cfg::DKV_SMEM, "fa_backward_dkv_kernel"));
    dkv<<<grid_dkv, FA_THREADS, cfg::DKV_SMEM, st>>>(dqkv, dout, qkv, lse, Dsum, T, C, NH, scale);
    CUDA_CHECK_LAUNCH("fa_backward_dkv_kernel");
    return GML_OK;
}

gml_status gml_cuda_attention_forward(gml_backend *be, void *out, float *lse, const void *qkv, int B, int T, int C,
                                      int NH) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    GML_CHECK(check_shape("attention_forward", B, T, C, NH));
    const int hd = C / NH;
    const float scale = 1.0f / sqrtf((float)hd);
    int done = 0;
    GML_CHECK(gml_cudnn_attention_forward(c, out, lse, qkv, B, T, C, NH, scale, &done));
    if (done) return GML_OK;
    if (fa_supported(hd) && aligned16(out) && aligned16(qkv)) {
        if (hd == 64) return fa_forward<64>(c->stream, (bf16 *)out, lse, (const bf16 *)qkv, B, T, C, NH, scale);
        return fa_forward<128>(c->stream, (bf16 *)out, lse, (const bf16 *)qkv, B, T, C, NH, scale);
    }

    /* scalar fallback */
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
    int done = 0;
    GML_CHECK(gml_cudnn_attention_backward(c, dqkv, dout, qkv, out, lse, B, T, C, NH, scale, &done));
    if (done) return GML_OK;
    void *scratch = NULL;
    GML_CHECK(gml_cuda_scratch(c, rows * sizeof(float), &scratch));
    float *Dsum = (float *)scratch; /* (B,NH,T) */

    if (fa_supported(hd) && aligned16(dqkv) && aligned16(dout) && aligned16(qkv) && aligned16(out)) {
        if (hd == 64)
            return fa_backward<64>(c->stream, (bf16 *)dqkv, Dsum, (const bf16 *)dout, (const bf16 *)qkv,
                                   (const bf16 *)out, lse, B, T, C, NH, scale);
        return fa_backward<128>(c->stream, (bf16 *)dqkv, Dsum, (const bf16 *)dout, (const bf16 *)qkv, (const bf16 *)out,
                                lse, B, T, C, NH, scale);
    }

    /* scalar fallback */
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
