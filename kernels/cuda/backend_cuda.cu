/* backend_cuda.cu — the CUDA backend's table (struct gml_backend_i): device
 * selection, memory (cudaMalloc, with in_use/peak accounting), transfers and
 * f32 <-> bf16 uploads/downloads, the grow-only scratch, and create/destroy.
 *
 * Activations are bf16 (act_dtype = GML_DTYPE_BF16); parameter gradients,
 * statistics and master weights are f32. Every op runs asynchronously on the
 * backend's own stream; memcpy_d2h, download_f32, upload_f32 and memcpy_h2d
 * return only once the host buffer may be reused. Not for: the ops
 * themselves (one .cu per concern beside this file).
 */
#include "kernels/cuda/backend_cuda.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "kernels/cuda/cuda_common.cuh"

#define CUDA_ALLOC_TOMBSTONE    ((void *)(uintptr_t)1)
#define CUDA_LT_WORKSPACE_BYTES ((size_t)32 << 20) /* 32 MiB */

/* ---------------------------------------------------------------- helpers */

gml_status gml_cuda_enter(gml_backend *be, gml_cuda_ctx **ctx) {
    gml_cuda_ctx *c = cuda_ctx(be);
    int cur = -1;
    CUDA_CHECK(cudaGetDevice(&cur));
    if (cur != c->device) CUDA_CHECK(cudaSetDevice(c->device));
    *ctx = c;
    return GML_OK;
}

gml_status gml_cuda_scratch(gml_cuda_ctx *ctx, size_t bytes, void **out) {
    if (bytes > ctx->scratch_bytes) {
        if (ctx->scratch) {
            /* kernels queued earlier may still read the old buffer */
            CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
            CUDA_CHECK(cudaFree(ctx->scratch));
            ctx->in_use -= ctx->scratch_bytes <= ctx->in_use ? ctx->scratch_bytes : ctx->in_use;
            ctx->scratch = NULL;
            ctx->scratch_bytes = 0;
        }
        size_t want = bytes < ((size_t)1 << 20) ? ((size_t)1 << 20) : bytes; /* at least 1 MiB */
        cudaError_t e = cudaMalloc(&ctx->scratch, want);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            ctx->scratch = NULL;
            return gml_error_set(GML_ERR_NOMEM, "cudaMalloc of %zu bytes of scratch on device %d failed: %s", want,
                                 ctx->device, cudaGetErrorString(e));
        }
        ctx->scratch_bytes = want;
        ctx->in_use += want; /* counted like alloc's buffers: the step's peak includes it */
        if (ctx->in_use > ctx->peak) ctx->peak = ctx->in_use;
        ctx->scratch_gen++; /* recorded graphs that used the old buffer are stale */
    }
    *out = ctx->scratch;
    return GML_OK;
}

/* A host buffer of at least `bytes` for conversions (plain malloc: the copies
 * that use it synchronize before returning). */
static gml_status staging(gml_cuda_ctx *ctx, size_t bytes, void **out) {
    if (bytes > ctx->staging_bytes) {
        void *p = realloc(ctx->staging, bytes);
        if (!p) return gml_error_set(GML_ERR_NOMEM, "host staging buffer of %zu bytes", bytes);
        ctx->staging = p;
        ctx->staging_bytes = bytes;
    }
    *out = ctx->staging;
    return GML_OK;
}

/* ---- allocation table: pointer -> bytes (open addressing, linear probe) ---- */

static size_t slot_hash(const void *p, size_t mask) {
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x & mask;
}

static gml_status slots_insert(gml_cuda_ctx *c, void *p, size_t bytes);

static gml_status slots_grow(gml_cuda_ctx *c) {
    size_t n = c->n_slots ? c->n_slots * 2 : 1024;
    gml_cuda_alloc_slot *old = c->slots;
    size_t old_n = c->n_slots;
    /* count live entries: if mostly tombstones, rehash at the same size */
    size_t live = 0;
    for (size_t i = 0; i < old_n; i++)
        if (old[i].ptr && old[i].ptr != CUDA_ALLOC_TOMBSTONE) live++;
    if (old_n && live * 4 < old_n) n = old_n;
    gml_cuda_alloc_slot *s = (gml_cuda_alloc_slot *)calloc(n, sizeof *s);
    if (!s) return gml_error_set(GML_ERR_NOMEM, "allocation table of %zu slots", n);
    c->slots = s;
    c->n_slots = n;
    c->n_used = 0;
    for (size_t i = 0; i < old_n; i++)
        if (old[i].ptr && old[i].ptr != CUDA_ALLOC_TOMBSTONE) (void)slots_insert(c, old[i].ptr, old[i].bytes);
    free(old);
    return GML_OK;
}

static gml_status slots_insert(gml_cuda_ctx *c, void *p, size_t bytes) {
    if ((c->n_used + 1) * 2 > c->n_slots) GML_CHECK(slots_grow(c));
    size_t mask = c->n_slots - 1;
    for (size_t i = slot_hash(p, mask);; i = (i + 1) & mask) {
        if (!c->slots[i].ptr || c->slots[i].ptr == CUDA_ALLOC_TOMBSTONE) {
            if (!c->slots[i].ptr) c->n_used++;
            c->slots[i].ptr = p;
            c->slots[i].bytes = bytes;
            return GML_OK;
        }
    }
}

/* Removes p; returns its size, or 0 if it was not allocated here. */
static size_t slots_remove(gml_cuda_ctx *c, void *p) {
    if (!c->n_slots) return 0;
    size_t mask = c->n_slots - 1;
    for (size_t i = slot_hash(p, mask), probes = 0; probes < c->n_slots; i = (i + 1) & mask, probes++) {
        if (!c->slots[i].ptr) return 0;
        if (c->slots[i].ptr == p) {
            size_t b = c->slots[i].bytes;
            c->slots[i].ptr = CUDA_ALLOC_TOMBSTONE;
            c->slots[i].bytes = 0;
            return b;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ memory ops */

static gml_status cuda_alloc(gml_backend *be, void **ptr, size_t bytes) {
    gml_cuda_ctx *c = NULL;
    *ptr = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (bytes == 0) bytes = 1; /* a valid, freeable pointer */
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return gml_error_set(GML_ERR_NOMEM,
                             "cudaMalloc of %zu bytes on device %d failed: %s (%zu bytes in use through "
                             "this backend) ---> HINT: lower the micro-batch size or sequence length",
                             bytes, c->device, cudaGetErrorString(e), c->in_use);
    }
    gml_status st = slots_insert(c, p, bytes);
    if (st != GML_OK) {
        cudaFree(p);
        return st;
    }
    c->in_use += bytes;
    if (c->in_use > c->peak) c->peak = c->in_use;
    *ptr = p;
    return GML_OK;
}

static void cuda_free(gml_backend *be, void *ptr) {
    if (!ptr) return;
    gml_cuda_ctx *c = cuda_ctx(be);
    int cur = -1;
    if (cudaGetDevice(&cur) == cudaSuccess && cur != c->device) (void)cudaSetDevice(c->device);
    size_t b = slots_remove(c, ptr);
    c->in_use -= b <= c->in_use ? b : c->in_use;
    /* cudaFree waits for queued work that may still use ptr */
    if (cudaFree(ptr) != cudaSuccess) (void)cudaGetLastError();
}

static gml_status cuda_memset_zero(gml_backend *be, void *ptr, size_t bytes) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (bytes == 0) return GML_OK;
    CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, c->stream));
    return GML_OK;
}

/* Copies of at least this many bytes pin their host side for the copy
 * (cudaHostRegister): pageable memory goes through the driver's small
 * staging buffer at ~1.5 GB/s on the H200 host, pinned memory at PCIe/C2C
 * speed. A checkpoint's shard copy is what the training loop stalls on; a
 * resume and the initial weights cross the other way (6.2 GB of master
 * weights and 12.5 GB of moments for GPT-2 1.5B). */
#define PIN_BYTES ((size_t)64 << 20)

/* A blocking copy between device memory and the host buffer `host`, which is
 * registered only for the copy, so a process forked later (the checkpoint
 * writer) sees ordinary memory; memory that is already pinned or cannot be
 * registered takes the pageable path. */
static gml_status copy_host(gml_cuda_ctx *c, void *dst, const void *src, size_t bytes, void *host,
                            cudaMemcpyKind kind) {
    int pinned = bytes >= PIN_BYTES && cudaHostRegister(host, bytes, cudaHostRegisterDefault) == cudaSuccess;
    if (!pinned) (void)cudaGetLastError(); /* not fatal: the pageable path below works */
    cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (pinned) (void)cudaHostUnregister(host);
    CUDA_CHECK(e);
    return GML_OK;
}

/* Host -> device; returns once `src` may be reused. */
static gml_status cuda_memcpy_h2d(gml_backend *be, void *dst, const void *src, size_t bytes) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (bytes == 0) return GML_OK;
    return copy_host(c, dst, src, bytes, (void *)src, cudaMemcpyHostToDevice);
}

static gml_status cuda_memcpy_d2h(gml_backend *be, void *dst, const void *src, size_t bytes) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (bytes == 0) return GML_OK;
    return copy_host(c, dst, src, bytes, dst, cudaMemcpyDeviceToHost);
}

static gml_status cuda_memcpy_d2d(gml_backend *be, void *dst, const void *src, size_t bytes) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    if (bytes == 0) return GML_OK;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
    return GML_OK;
}

static gml_status cuda_synchronize(gml_backend *be) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    return GML_OK;
}

static void cuda_mem_stats(gml_backend *be, size_t *in_use, size_t *peak) {
    gml_cuda_ctx *c = cuda_ctx(be);
    if (in_use) *in_use = c->in_use;
    if (peak) *peak = c->peak;
}

/* ------------------------------------------------------------ conversions */

static gml_status check_float_dtype(gml_dtype dt, const char *op) {
    if (dt != GML_DTYPE_F32 && dt != GML_DTYPE_BF16)
        return gml_error_set(GML_ERR_INVALID_ARG, "%s: dtype %s is not f32 or bf16", op, gml_dtype_name(dt));
    return GML_OK;
}

static gml_status cuda_upload_f32(gml_backend *be, void *dst, gml_dtype dt, const float *src, size_t n) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    GML_CHECK(check_float_dtype(dt, "upload_f32"));
    if (n == 0) return GML_OK;
    if (dt == GML_DTYPE_F32) return cuda_memcpy_h2d(be, dst, src, n * sizeof(float));
    void *h = NULL;
    GML_CHECK(staging(c, n * sizeof(uint16_t), &h));
    uint16_t *hb = (uint16_t *)h;
    for (size_t i = 0; i < n; i++)
        hb[i] = gml_f32_to_bf16(src[i]);
    return cuda_memcpy_h2d(be, dst, hb, n * sizeof(uint16_t));
}

static gml_status cuda_download_f32(gml_backend *be, float *dst, const void *src, gml_dtype dt, size_t n) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    GML_CHECK(check_float_dtype(dt, "download_f32"));
    if (n == 0) return GML_OK;
    if (dt == GML_DTYPE_F32) return cuda_memcpy_d2h(be, dst, src, n * sizeof(float));
    void *h = NULL;
    GML_CHECK(staging(c, n * sizeof(uint16_t), &h));
    GML_CHECK(cuda_memcpy_d2h(be, h, src, n * sizeof(uint16_t)));
    const uint16_t *hb = (const uint16_t *)h;
    for (size_t i = 0; i < n; i++)
        dst[i] = gml_bf16_to_f32(hb[i]);
    return GML_OK;
}

/* ------------------------------------------------------------ lifetime */

static void cuda_destroy(gml_backend *be) {
    if (!be) return;
    gml_cuda_ctx *c = cuda_ctx(be);
    if (c) {
        (void)cudaSetDevice(c->device);
        if (c->stream) (void)cudaStreamSynchronize(c->stream);
        if (c->scratch) (void)cudaFree(c->scratch);
        if (c->lt_workspace) (void)cudaFree(c->lt_workspace);
        gml_cuda_matmul_release(c);
        gml_cudnn_release(c);
        if (c->lt) (void)cublasLtDestroy(c->lt);
        if (c->stream) (void)cudaStreamDestroy(c->stream);
        (void)cudaGetLastError();
        free(c->staging);
        free(c->slots);
        free(c);
    }
    free(be);
}

static const struct gml_backend_i cuda_iface = {
    /* .alloc = */ cuda_alloc,
    /* .free = */ cuda_free,
    /* .memset_zero = */ cuda_memset_zero,
    /* .memcpy_h2d = */ cuda_memcpy_h2d,
    /* .memcpy_d2h = */ cuda_memcpy_d2h,
    /* .memcpy_d2d = */ cuda_memcpy_d2d,
    /* .synchronize = */ cuda_synchronize,
    /* .mem_stats = */ cuda_mem_stats,
    /* .upload_f32 = */ cuda_upload_f32,
    /* .download_f32 = */ cuda_download_f32,
    /* .cast_f32_to_act = */ gml_cuda_cast_f32_to_act,
    /* .encoder_forward = */ gml_cuda_encoder_forward,
    /* .encoder_backward = */ gml_cuda_encoder_backward,
    /* .layernorm_forward = */ gml_cuda_layernorm_forward,
    /* .layernorm_backward = */ gml_cuda_layernorm_backward,
    /* .matmul_forward = */ gml_cuda_matmul_forward,
    /* .matmul_backward = */ gml_cuda_matmul_backward,
    /* .matmul_gelu_forward = */ gml_cuda_matmul_gelu_forward,
    /* .matmul_backward_gelu = */ gml_cuda_matmul_backward_gelu,
    /* .gelu_forward = */ gml_cuda_gelu_forward,
    /* .gelu_backward = */ gml_cuda_gelu_backward,
    /* .residual_forward = */ gml_cuda_residual_forward,
    /* .residual_layernorm_forward = */ gml_cuda_residual_layernorm_forward,
    /* .dropout = */ gml_cuda_dropout,
    /* .attention_forward = */ gml_cuda_attention_forward,
    /* .attention_backward = */ gml_cuda_attention_backward,
    /* .classifier_forward_backward = */ gml_cuda_classifier_forward_backward,
    /* .sum_accumulate = */ gml_cuda_sum_accumulate,
    /* .sumsq_accumulate = */ gml_cuda_sumsq_accumulate,
    /* .adamw_update = */ gml_cuda_adamw_update,
    /* .adamw_update_pieces = */ gml_cuda_adamw_update_pieces,
    /* .graph_begin = */ gml_cuda_graph_begin,
    /* .graph_end = */ gml_cuda_graph_end,
    /* .graph_launch = */ gml_cuda_graph_launch,
    /* .graph_free = */ gml_cuda_graph_free,
    /* .destroy = */ cuda_destroy,
};

extern "C" int gml_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

/* Datasheet dense bf16 FLOP/s by product name; 0 when unknown. */
static double peak_bf16_flops(const char *name) {
    if (strstr(name, "H100") || strstr(name, "H200")) return 989e12;
    if (strstr(name, "A100")) return 312e12;
    return 0.0;
}

extern "C" gml_status gml_backend_cuda_create(int device_index, gml_backend **out) {
    gml_status st = GML_OK;
    gml_backend *be = NULL;
    gml_cuda_ctx *c = NULL;
    cudaDeviceProp prop;
    *out = NULL;

    int n = gml_cuda_device_count();
    if (device_index < 0 || device_index >= n)
        return gml_error_set(GML_ERR_NO_DEVICE, "CUDA device %d asked for, %d visible", device_index, n);

    be = (gml_backend *)calloc(1, sizeof *be);
    c = (gml_cuda_ctx *)calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return gml_error_set(GML_ERR_NOMEM, "CUDA backend struct");
    }
    be->iface = &cuda_iface;
    be->ctx = c;
    be->act_dtype = GML_DTYPE_BF16;
    be->device_index = device_index;
    snprintf(be->name, sizeof be->name, "cuda");
    c->device = device_index;

    CUDA_CHECK_GOTO(cudaSetDevice(device_index), st, fail);
    CUDA_CHECK_GOTO(cudaGetDeviceProperties(&prop, device_index), st, fail);
    if (prop.major < 8) {
        st = gml_error_set(GML_ERR_UNSUPPORTED,
                           "CUDA device %d (%s) has compute capability %d.%d; this backend needs bf16 "
                           "tensor cores (8.0 or newer)",
                           device_index, prop.name, prop.major, prop.minor);
        goto fail;
    }
    for (size_t i = 0; i + 1 < sizeof be->device_name && prop.name[i]; i++)
        be->device_name[i] = prop.name[i];
    be->peak_flops = peak_bf16_flops(prop.name);
    CUDA_CHECK_GOTO(cudaDeviceGetPCIBusId(be->pci_bus_id, (int)sizeof be->pci_bus_id, device_index), st, fail);
    c->sm_count = prop.multiProcessorCount;
    {
        const char *att = getenv("GML_ATTENTION"); /* attention_cudnn.cu: auto (default), cudnn or own */
        if (!att || !*att || !strcmp(att, "auto")) c->attention = GML_ATTENTION_AUTO;
        else if (!strcmp(att, "cudnn")) c->attention = GML_ATTENTION_CUDNN;
        else if (!strcmp(att, "own")) c->attention = GML_ATTENTION_OWN;
        else {
            st = gml_error_set(GML_ERR_BAD_INPUT, "GML_ATTENTION=%s: expected auto, cudnn or own", att);
            goto fail;
        }
    }

    CUDA_CHECK_GOTO(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), st, fail);
    CUBLAS_CHECK_GOTO(cublasLtCreate(&c->lt), st, fail);
    c->lt_workspace_bytes = CUDA_LT_WORKSPACE_BYTES;
    CUDA_CHECK_GOTO(cudaMalloc(&c->lt_workspace, c->lt_workspace_bytes), st, fail);
    *out = be;
    return GML_OK;
fail:
    cuda_destroy(be);
    return st;
}

extern "C" void *gml_cuda_backend_stream(gml_backend *be) {
    return be && be->device_index >= 0 ? (void *)cuda_ctx(be)->stream : NULL;
}
