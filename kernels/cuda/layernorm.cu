/* layernorm.cu — LayerNorm over the last dimension on the GPU, forward and
 * backward (eps = 1e-5), bf16 activations with f32 math and statistics.
 *
 * Forward: one warp per row; two passes over the row (mean, then variance of
 * x - mean) so the variance does not cancel; saves mean and rstd (f32).
 * Rows with C % 8 == 0 (and 16-byte aligned) take the vectorised per-row
 * kernels: each lane moves 8 bf16 per 128-bit load; others the scalar ones.
 * Backward: one warp per row for dinp (+=, bf16 read-modify-write); dweight
 * and dbias (f32 +=) are column sums over rows done deterministically in two
 * stages: blocks of columns x a chunk of rows write partial sums to scratch
 * (256 columns per block with 128-bit loads, 8 per lane, for the vectorised
 * rows; 32 otherwise), then gml_cuda_sum_partials adds the chunks in a fixed
 * order. (Adding the chunks in the last block of each column group instead,
 * one launch fewer, measured slower: one block reads 256 chunks x 256 columns
 * at the kernel's tail, +6-11 us a call; bench/NOTES.md.)
 * (A single kernel for dinp and the partial sums, keeping a lane's column
 * sums in registers, was measured on an H100 at 59 us per GPT-2 call against
 * 33 + 25 us for the two below: 128 registers leave 16 warps per SM and it
 * is bound by instructions and latency, the pair by bandwidth.)
 * Residual + forward: res = a + b (bf16) and the LayerNorm of res in one
 * pass over the row (the vectorised rows only; others run the residual and
 * the plain LayerNorm kernels one after the other).
 * Not for: RMSNorm or any other normalisation.
 */
#include "kernels/cuda/cuda_common.cuh"

#define LN_EPS            1e-5f
#define LN_WARPS          8  /* rows per block in the per-row kernels */
#define LN_ROWS_PER_CHUNK 64 /* rows one partial-sum block covers, at least */
#define LN_MAX_CHUNKS     512

__global__ void layernorm_forward_kernel(bf16 *out /* (N,C) */, float *mean /* (N) */, float *rstd /* (N) */,
                                         const bf16 *inp /* (N,C) */, const bf16 *weight /* (C) */,
                                         const bf16 *bias /* (C) */, int N, int C) {
    int lane = threadIdx.x & 31;
    int row = blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    if (row >= N) return; /* whole warp leaves together */
    const bf16 *x = inp + (size_t)row * C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32)
        s += bf2f(x[c]);
    float m = warp_sum(s) / (float)C;
    float v = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float d = bf2f(x[c]) - m;
        v += d * d;
    }
    v = warp_sum(v) / (float)C;
    float rs = rsqrtf(v + LN_EPS);
    bf16 *o = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32)
        o[c] = f2bf((bf2f(x[c]) - m) * rs * bf2f(weight[c]) + bf2f(bias[c]));
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = rs;
    }
}

/* dinp += rstd * (dnorm - mean(dnorm) - xhat * mean(dnorm * xhat)), dnorm = dout * weight */
__global__ void layernorm_backward_dinp_kernel(bf16 *dinp /* (N,C) += */, const bf16 *dout /* (N,C) */,
                                               const bf16 *inp /* (N,C) */, const bf16 *weight /* (C) */,
                                               const float *mean /* (N) */, const float *rstd /* (N) */, int N, int C) {
    int lane = threadIdx.x & 31;
    int row = blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    if (row >= N) return;
    const bf16 *x = inp + (size_t)row * C;
    const bf16 *dy = dout + (size_t)row * C;
    float m = mean[row], rs = rstd[row];
    float sum_dn = 0.0f, sum_dn_xhat = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float xhat = (bf2f(x[c]) - m) * rs;
        float dn = bf2f(dy[c]) * bf2f(weight[c]);
        sum_dn += dn;
        sum_dn_xhat += dn * xhat;
    }
    float mean_dn = warp_sum(sum_dn) / (float)C;
    float mean_dn_xhat = warp_sum(sum_dn_xhat) / (float)C;
    bf16 *dx = dinp + (size_t)row * C;
    for (int c = lane; c < C; c += 32) {
        float xhat = (bf2f(x[c]) - m) * rs;
        float dn = bf2f(dy[c]) * bf2f(weight[c]);
        float g = rs * (dn - mean_dn - xhat * mean_dn_xhat);
        dx[c] = f2bf(bf2f(dx[c]) + g);
    }
}

/* ---- vectorised per-row kernels: C % 8 == 0, 16-byte aligned rows ---- */

struct bf16x8 {
    float v[8];
};
__device__ __forceinline__ bf16x8 load8(const bf16 *p) {
    uint4 raw = *reinterpret_cast<const uint4 *>(p);
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&raw);
    bf16x8 r;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 f = __bfloat1622float2(h[i]);
        r.v[2 * i] = f.x;
        r.v[2 * i + 1] = f.y;
    }
    return r;
}
__device__ __forceinline__ void store8(bf16 *p, const bf16x8 &x) {
    uint4 raw;
    __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&raw);
#pragma unroll
    for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(x.v[2 * i], x.v[2 * i + 1]);
    *reinterpret_cast<uint4 *>(p) = raw;
}

/* The rest of a warp's LayerNorm of row `row` (x: its C values) once the
 * mean m is known: variance, rstd, the normalised output and the saved
 * statistics. Shared by the plain and the residual-fused forward so both give
 * the same bits from the same inputs. */
__device__ __forceinline__ void ln_row_finish(bf16 *out, float *mean, float *rstd, const bf16 *x, const bf16 *weight,
                                              const bf16 *bias, int row, int C, int lane, float m) {
    float v = 0.0f;
    for (int c = lane * 8; c < C; c += 256) {
        bf16x8 a = load8(x + c);
#pragma unroll
        for (int i = 0; i < 8; i++) v += (a.v[i] - m) * (a.v[i] - m);
    }
    v = warp_sum(v) / (float)C;
    float rs = rsqrtf(v + LN_EPS);
    bf16 *o = out + (size_t)row * C;
    for (int c = lane * 8; c < C; c += 256) {
        bf16x8 a = load8(x + c), w = load8(weight + c), bb = load8(bias + c), r;
#pragma unroll
        for (int i = 0; i < 8; i++) r.v[i] = (a.v[i] - m) * rs * w.v[i] + bb.v[i];
        store8(o + c, r);
    }
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = rs;
    }
}

__global__ void layernorm_forward_vec_kernel(bf16 *out, float *mean, float *rstd, const bf16 *inp,
                                             const bf16 *weight, const bf16 *bias, int N, int C) {
    int lane = threadIdx.x & 31;
    int row = blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    if (row >= N) return;
    const bf16 *x = inp + (size_t)row * C;
    float s = 0.0f;
    for (int c = lane * 8; c < C; c += 256) {
        bf16x8 a = load8(x + c);
#pragma unroll
        for (int i = 0; i < 8; i++) s += a.v[i];
    }
    ln_row_finish(out, mean, rstd, x, weight, bias, row, C, lane, warp_sum(s) / (float)C);
}

__global__ void layernorm_backward_dinp_vec_kernel(bf16 *dinp, const bf16 *dout, const bf16 *inp,
                                                   const bf16 *weight, const float *mean, const float *rstd, int N,
                                                   int C) {
    int lane = threadIdx.x & 31;
    int row = blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    if (row >= N) return;
    const bf16 *x = inp + (size_t)row * C;
    const bf16 *dy = dout + (size_t)row * C;
    float m = mean[row], rs = rstd[row];
    float sum_dn = 0.0f, sum_dn_xhat = 0.0f;
    for (int c = lane * 8; c < C; c += 256) {
        bf16x8 a = load8(x + c), d = load8(dy + c), w = load8(weight + c);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float dn = d.v[i] * w.v[i];
            sum_dn += dn;
            sum_dn_xhat += dn * (a.v[i] - m) * rs;
        }
    }
    float mean_dn = warp_sum(sum_dn) / (float)C;
    float mean_dn_xhat = warp_sum(sum_dn_xhat) / (float)C;
    bf16 *dx = dinp + (size_t)row * C;
    for (int c = lane * 8; c < C; c += 256) {
        bf16x8 a = load8(x + c), d = load8(dy + c), w = load8(weight + c), g = load8(dx + c);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float xhat = (a.v[i] - m) * rs;
            g.v[i] += rs * (d.v[i] * w.v[i] - mean_dn - xhat * mean_dn_xhat);
        }
        store8(dx + c, g);
    }
}

/* res = a + b rounded to bf16, then the LayerNorm of res as in
 * layernorm_forward_vec_kernel: the same statistics from the same bf16
 * values, so the pair equals residual_forward then layernorm_forward. The
 * second and third passes re-read res, which this lane wrote itself. */
__global__ void residual_layernorm_forward_vec_kernel(bf16 *res, bf16 *out, float *mean, float *rstd, const bf16 *a,
                                                      const bf16 *b, const bf16 *weight, const bf16 *bias, int N,
                                                      int C) {
    int lane = threadIdx.x & 31;
    int row = blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    if (row >= N) return;
    const bf16 *ra = a + (size_t)row * C, *rb = b + (size_t)row * C;
    bf16 *x = res + (size_t)row * C;
    float s = 0.0f;
    for (int c = lane * 8; c < C; c += 256) {
        bf16x8 u = load8(ra + c), w = load8(rb + c), r;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            r.v[i] = bf2f(f2bf(u.v[i] + w.v[i])); /* the value stored */
            s += r.v[i];
        }
        store8(x + c, r);
    }
    ln_row_finish(out, mean, rstd, x, weight, bias, row, C, lane, warp_sum(s) / (float)C);
}

/* 16-byte aligned rows of C bf16 for every pointer given (NULL ignored). */
static bool ln_vec_ok(int C, const void *a, const void *b, const void *c2, const void *d, const void *e) {
    if (C % 8 != 0) return false;
    const void *ps[5] = {a, b, c2, d, e};
    for (int i = 0; i < 5; i++)
        if (ps[i] && ((uintptr_t)ps[i] & 15u) != 0) return false;
    return true;
}

/* Partial sums over a chunk of rows of dout * xhat (for dweight) and dout
 * (for dbias), for the vectorised rows: block (32, 8) takes 256 columns (8
 * per lane) of the chunk blockIdx.y, row lane y its rows y, y + 8, ...; the
 * lanes are added in order into partial_dw / partial_db (gridDim.y, C). */
__global__ void layernorm_backward_params_vec_kernel(float *partial_dw, float *partial_db, const bf16 *dout,
                                                     const bf16 *inp, const float *mean, const float *rstd, int N,
                                                     int C, int rows_per_chunk) {
    __shared__ float sh_w[8][256], sh_b[8][256];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c0 = (blockIdx.x * 32 + tx) * 8;
    const int r0 = blockIdx.y * rows_per_chunk, r1 = min(N, r0 + rows_per_chunk);
    float aw[8], ab[8];
#pragma unroll
    for (int i = 0; i < 8; i++) aw[i] = ab[i] = 0.0f;
    if (c0 < C) {
#pragma unroll 2
        for (int r = r0 + ty; r < r1; r += 8) {
            const float m = mean[r], rs = rstd[r];
            bf16x8 d = load8(dout + (size_t)r * C + c0), x = load8(inp + (size_t)r * C + c0);
#pragma unroll
            for (int i = 0; i < 8; i++) {
                aw[i] += d.v[i] * ((x.v[i] - m) * rs);
                ab[i] += d.v[i];
            }
        }
    }
    colsum8_store_partial(sh_w, aw, partial_dw, C);
    colsum8_store_partial(sh_b, ab, partial_db, C);
}

/* The same for any row: block (32, 8): 32 columns x 8 row lanes; blockIdx.y
 * picks a chunk of rows. partial_dw/partial_db: (gridDim.y, C). */
__global__ void layernorm_backward_params_partial_kernel(float *partial_dw, float *partial_db,
                                                         const bf16 *dout /* (N,C) */, const bf16 *inp /* (N,C) */,
                                                         const float *mean, const float *rstd, int N, int C,
                                                         int rows_per_chunk) {
    __shared__ float sh_dw[8][33];
    __shared__ float sh_db[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int r0 = blockIdx.y * rows_per_chunk;
    int r1 = min(N, r0 + rows_per_chunk);
    float dw = 0.0f, db = 0.0f;
    if (c < C) {
        for (int r = r0 + threadIdx.y; r < r1; r += 8) {
            float dy = bf2f(dout[(size_t)r * C + c]);
            float xhat = (bf2f(inp[(size_t)r * C + c]) - mean[r]) * rstd[r];
            dw += dy * xhat;
            db += dy;
        }
    }
    sh_dw[threadIdx.y][threadIdx.x] = dw;
    sh_db[threadIdx.y][threadIdx.x] = db;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float sw = 0.0f, sb = 0.0f;
        for (int k = 0; k < 8; k++) {
            sw += sh_dw[k][threadIdx.x];
            sb += sh_db[k][threadIdx.x];
        }
        partial_dw[(size_t)blockIdx.y * C + c] = sw;
        partial_db[(size_t)blockIdx.y * C + c] = sb;
    }
}

gml_status gml_cuda_layernorm_forward(gml_backend *be, void *out, float *mean, float *rstd, const void *inp,
                                      const void *weight, const void *bias, int N, int C) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (N <= 0 || C <= 0) return GML_OK;
    if (ln_vec_ok(C, out, inp, weight, bias, NULL)) {
        layernorm_forward_vec_kernel<<<cuda_ceil_div((size_t)N, LN_WARPS), LN_WARPS * 32, 0, c->stream>>>(
            (bf16 *)out, mean, rstd, (const bf16 *)inp, (const bf16 *)weight, (const bf16 *)bias, N, C);
        CUDA_CHECK_LAUNCH("layernorm_forward_vec_kernel");
        return GML_OK;
    }
    layernorm_forward_kernel<<<cuda_ceil_div((size_t)N, LN_WARPS), LN_WARPS * 32, 0, c->stream>>>(
        (bf16 *)out, mean, rstd, (const bf16 *)inp, (const bf16 *)weight, (const bf16 *)bias, N, C);
    CUDA_CHECK_LAUNCH("layernorm_forward_kernel");
    return GML_OK;
}

gml_status gml_cuda_layernorm_backward(gml_backend *be, void *dinp, float *dweight, float *dbias, const void *dout,
                                       const void *inp, const void *weight, const float *mean, const float *rstd, int N,
                                       int C) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (N <= 0 || C <= 0) return GML_OK;
    const bool vec = ln_vec_ok(C, dinp, dout, inp, weight, NULL);
    if (vec) {
        layernorm_backward_dinp_vec_kernel<<<cuda_ceil_div((size_t)N, LN_WARPS), LN_WARPS * 32, 0, c->stream>>>(
            (bf16 *)dinp, (const bf16 *)dout, (const bf16 *)inp, (const bf16 *)weight, mean, rstd, N, C);
        CUDA_CHECK_LAUNCH("layernorm_backward_dinp_vec_kernel");
    } else {
        layernorm_backward_dinp_kernel<<<cuda_ceil_div((size_t)N, LN_WARPS), LN_WARPS * 32, 0, c->stream>>>(
            (bf16 *)dinp, (const bf16 *)dout, (const bf16 *)inp, (const bf16 *)weight, mean, rstd, N, C);
        CUDA_CHECK_LAUNCH("layernorm_backward_dinp_kernel");
    }

    int chunks = (int)cuda_ceil_div((size_t)N, LN_ROWS_PER_CHUNK);
    if (chunks > LN_MAX_CHUNKS) chunks = LN_MAX_CHUNKS;
    int rows_per_chunk = (int)cuda_ceil_div((size_t)N, (size_t)chunks);
    void *scratch = NULL;
    GML_CHECK(gml_cuda_scratch(c, 2 * (size_t)chunks * C * sizeof(float), &scratch));
    float *partial_dw = (float *)scratch;                /* (chunks, C) */
    float *partial_db = partial_dw + (size_t)chunks * C; /* (chunks, C) */
    if (vec) {
        dim3 grid(cuda_ceil_div((size_t)C, 256), (unsigned)chunks);
        layernorm_backward_params_vec_kernel<<<grid, dim3(32, 8), 0, c->stream>>>(
            partial_dw, partial_db, (const bf16 *)dout, (const bf16 *)inp, mean, rstd, N, C, rows_per_chunk);
        CUDA_CHECK_LAUNCH("layernorm_backward_params_vec_kernel");
    } else {
        dim3 grid(cuda_ceil_div((size_t)C, 32), (unsigned)chunks);
        layernorm_backward_params_partial_kernel<<<grid, dim3(32, 8), 0, c->stream>>>(
            partial_dw, partial_db, (const bf16 *)dout, (const bf16 *)inp, mean, rstd, N, C, rows_per_chunk);
        CUDA_CHECK_LAUNCH("layernorm_backward_params_partial_kernel");
    }
    return gml_cuda_sum_partials(c, dweight, partial_dw, dbias, partial_db, chunks, C);
}

gml_status gml_cuda_residual_layernorm_forward(gml_backend *be, void *res, void *out, float *mean, float *rstd,
                                               const void *a, const void *b, const void *weight, const void *bias,
                                               int N, int C) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (N <= 0 || C <= 0) return GML_OK;
    if (ln_vec_ok(C, res, out, a, b, NULL) && ln_vec_ok(C, weight, bias, NULL, NULL, NULL)) {
        residual_layernorm_forward_vec_kernel<<<cuda_ceil_div((size_t)N, LN_WARPS), LN_WARPS * 32, 0, c->stream>>>(
            (bf16 *)res, (bf16 *)out, mean, rstd, (const bf16 *)a, (const bf16 *)b, (const bf16 *)weight,
            (const bf16 *)bias, N, C);
        CUDA_CHECK_LAUNCH("residual_layernorm_forward_vec_kernel");
        return GML_OK;
    }
    GML_CHECK(gml_cuda_residual_forward(be, res, a, b, (size_t)N * (size_t)C));
    return gml_cuda_layernorm_forward(be, out, mean, rstd, res, weight, bias, N, C);
}
