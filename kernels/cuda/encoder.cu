/* encoder.cu — token + position embedding on the GPU, forward and backward.
 *
 * Forward: out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:] (f32 add, bf16 out).
 * Backward, deterministic (same bits every run, which bit-for-bit resume
 * needs): the positions are stably sorted by token with CUB's radix sort
 * (keys = tokens, values = positions); the sorted positions are summed in
 * cells of ENC_CELL (one block each, positions ascending), runs of equal
 * tokens that cross cells through per-cell partial sums added in cell order
 * by a second kernel; dwpe[t,:] += sum_b dout[b,t,:] in a fixed order.
 * Scratch: 4 N int32, 2 C floats per cell, plus CUB's temporary storage.
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

/* The sorted positions are cut into cells of ENC_CELL. A run of equal tokens
 * that lies within one cell is summed (positions ascending) and added to its
 * dwte row by that cell's block alone. A run that crosses cells leaves one
 * partial sum per cell it touches: slot 0 holds the sum of the segment that
 * starts the cell, slot 1 the one that ends it (the same segment in a cell
 * that one run fills). Cells bound the work of a block, so one frequent token
 * (the space of character-level text, "the" of English) no longer
 * serialises thousands of rows in one block; the grouping is fixed by the
 * sorted order, so the sums are the same bits every run. grid: cells. */
#define ENC_CELL 32

__global__ void encoder_backward_wte_cells_kernel(float *dwte /* (Vp,C) += */, float *partial /* (cells,2,C) */,
                                                  const bf16 *dout /* (N,C) */, const int32_t *stok /* (N) */,
                                                  const int32_t *spos /* (N) */, int N, int C) {
    const int lo = blockIdx.x * ENC_CELL, hi = min(N, lo + ENC_CELL);
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float s = 0.0f;
        int seg = lo; /* first sorted index of the current segment */
        for (int i = lo; i < hi; i++) {
            s += bf2f(dout[(size_t)spos[i] * C + c]);
            const int tok = stok[i];
            if (i + 1 < hi && stok[i + 1] == tok) continue;
            const bool starts = seg == 0 || stok[seg - 1] != tok, ends = i + 1 == N || stok[i + 1] != tok;
            if (starts && ends) {
                dwte[(size_t)tok * C + c] += s;
            } else { /* crosses the cell's start or end (or both) */
                if (seg == lo) partial[((size_t)blockIdx.x * 2 + 0) * C + c] = s;
                if (i + 1 == hi) partial[((size_t)blockIdx.x * 2 + 1) * C + c] = s;
            }
            s = 0.0f;
            seg = i + 1;
        }
    }
}

/* grid N: block i works only if sorted index i starts a run that crosses
 * cells; it adds the run's partial sums, cell by cell in order, to its row. */
__global__ void encoder_backward_wte_runs_kernel(float *dwte /* (Vp,C) += */, const float *partial /* (cells,2,C) */,
                                                 const int32_t *stok /* (N) sorted */, int N, int C) {
    const int i = blockIdx.x;
    const int tok = stok[i];
    if (i > 0 && stok[i - 1] == tok) return;
    int a = i, b = N; /* the run's end: the first index in [i, N) whose token is larger */
    while (a < b) {
        int mid = a + (b - a) / 2;
        if (stok[mid] <= tok) a = mid + 1;
        else b = mid;
    }
    const int ks = i / ENC_CELL, ke = (a - 1) / ENC_CELL;
    if (ks == ke) return; /* summed whole by its cell */
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float s = partial[((size_t)ks * 2 + 1) * C + c];
        for (int k = ks + 1; k <= ke; k++) s += partial[((size_t)k * 2 + 0) * C + c];
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
    const int cells = (N + ENC_CELL - 1) / ENC_CELL;
    size_t ints = (size_t)4 * N, head = (ints * sizeof(int32_t) + 255) & ~(size_t)255;
    size_t part = ((size_t)cells * 2 * C * sizeof(float) + 255) & ~(size_t)255;
    void *scratch = NULL;
    GML_CHECK(gml_cuda_scratch(c, head + part + sort_bytes, &scratch));
    int32_t *pos = (int32_t *)scratch, *stok = pos + N, *spos = stok + N;
    float *partial = (float *)((char *)scratch + head);
    void *sort_tmp = (char *)scratch + head + part;
    iota_kernel<<<cuda_grid_for((size_t)N, ENC_THREADS), ENC_THREADS, 0, c->stream>>>(pos, N);
    CUDA_CHECK_LAUNCH("iota_kernel");
    /* tokens are < 2^31 (non-negative int32): sort on bits [0, 31) */
    cudaError_t e = cub::DeviceRadixSort::SortPairs(sort_tmp, sort_bytes, tokens, stok, pos, spos, N, 0, 31,
                                                    c->stream);
    if (e != cudaSuccess)
        return gml_error_set(GML_ERR_BACKEND, "cub::DeviceRadixSort::SortPairs of %d tokens failed: %s", N,
                             cudaGetErrorString(e));
    encoder_backward_wte_cells_kernel<<<(unsigned)cells, ENC_THREADS, 0, c->stream>>>(dwte, partial, (const bf16 *)dout,
                                                                                      stok, spos, N, C);
    CUDA_CHECK_LAUNCH("encoder_backward_wte_cells_kernel");
    encoder_backward_wte_runs_kernel<<<(unsigned)N, ENC_THREADS, 0, c->stream>>>(dwte, partial, stok, N, C);
    CUDA_CHECK_LAUNCH("encoder_backward_wte_runs_kernel");
    size_t tc = (size_t)T * C;
    encoder_backward_wpe_kernel<<<cuda_grid_for(tc, ENC_THREADS), ENC_THREADS, 0, c->stream>>>(dwpe, (const bf16 *)dout,
                                                                                               B, T, C);
    CUDA_CHECK_LAUNCH("encoder_backward_wpe_kernel");
    return GML_OK;
}
