/* backend_cpu.c — the CPU backend's table (struct gml_backend_i): memory
 * (64-byte aligned host memory with in_use/peak accounting), transfers,
 * f32 <-> bf16 uploads/downloads, the grow-only op workspace, and
 * create/destroy. It is the fp32 reference every other backend is compared
 * with, and what trains small models where there is no GPU.
 *
 * "Device" memory is host memory here: the memcpy_* calls are plain memcpy
 * and synchronize does nothing (every op returns when it is done).
 * Not for: the ops themselves (ops_dense.c, ops_norm.c, ops_attention.c,
 * ops_loss.c beside this file).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/dtype.h"
#include "kernels/cpu/cpu_impl.h"

#define CPU_ALIGN     64                    /* bytes; alignment of every pointer alloc returns */
#define CPU_HDR_MAGIC 0x676d6c6370756d65ULL /* "gmlcpume" */

/* Sits in the CPU_ALIGN bytes just before every pointer alloc returns. */
typedef struct {
    uint64_t magic; /* CPU_HDR_MAGIC while the block is live */
    size_t bytes;   /* the size the caller asked for */
} cpu_alloc_hdr;

_Static_assert(sizeof(cpu_alloc_hdr) <= CPU_ALIGN, "allocation header must fit in the alignment padding");

/* ------------------------------------------------------------ memory ops */

static gml_status cpu_alloc(gml_backend *be, void **ptr, size_t bytes) {
    gml_cpu_ctx *c = gml_cpu_ctx_of(be);
    *ptr = NULL;
    size_t body = (bytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN;
    if (body < bytes || body > SIZE_MAX - CPU_ALIGN)
        return gml_error_set(GML_ERR_NOMEM, "CPU backend: allocation of %zu bytes is too large", bytes);
    char *base = aligned_alloc(CPU_ALIGN, CPU_ALIGN + body);
    if (!base)
        return gml_error_set(GML_ERR_NOMEM,
                             "CPU backend: allocation of %zu bytes failed (%zu bytes in use through this "
                             "backend) ---> HINT: lower the micro-batch size or sequence length",
                             bytes, c->in_use);
    cpu_alloc_hdr *h = (cpu_alloc_hdr *)base;
    h->magic = CPU_HDR_MAGIC;
    h->bytes = bytes;
    c->in_use += bytes;
    if (c->in_use > c->peak) c->peak = c->in_use;
    *ptr = base + CPU_ALIGN;
    return GML_OK;
}

static void cpu_free(gml_backend *be, void *ptr) {
    if (!ptr) return;
    gml_cpu_ctx *c = gml_cpu_ctx_of(be);
    char *base = (char *)ptr - CPU_ALIGN;
    cpu_alloc_hdr *h = (cpu_alloc_hdr *)base;
    if (h->magic != CPU_HDR_MAGIC) return; /* not ours, or freed twice: leave it alone */
    h->magic = 0;
    c->in_use -= h->bytes <= c->in_use ? h->bytes : c->in_use;
    free(base);
}

static gml_status cpu_memset_zero(gml_backend *be, void *ptr, size_t bytes) {
    if (bytes) memset(ptr, 0, bytes);
    return GML_OK;
}

static gml_status cpu_memcpy(gml_backend *be, void *dst, const void *src, size_t bytes) {
    if (bytes && dst != src) memmove(dst, src, bytes);
    return GML_OK;
}

static gml_status cpu_synchronize(gml_backend *be) { return GML_OK; }

static void cpu_mem_stats(gml_backend *be, size_t *in_use, size_t *peak) {
    gml_cpu_ctx *c = gml_cpu_ctx_of(be);
    if (in_use) *in_use = c->in_use;
    if (peak) *peak = c->peak;
}

gml_status gml_cpu_workspace(gml_backend *be, size_t n, float **out) {
    gml_cpu_ctx *c = gml_cpu_ctx_of(be);
    if (n > c->work_floats) {
        if (n > SIZE_MAX / sizeof(float))
            return gml_error_set(GML_ERR_NOMEM, "CPU backend: workspace of %zu floats is too large", n);
        float *p = realloc(c->work, n * sizeof(float));
        if (!p) return gml_error_set(GML_ERR_NOMEM, "CPU backend: workspace of %zu bytes", n * sizeof(float));
        c->work = p;
        c->work_floats = n;
    }
    *out = c->work;
    return GML_OK;
}

/* ------------------------------------------------------------ conversions */

static gml_status cpu_upload_f32(gml_backend *be, void *dst, gml_dtype dt, const float *src, size_t n) {
    if (dt == GML_DTYPE_F32) return cpu_memcpy(be, dst, src, n * sizeof(float));
    if (dt == GML_DTYPE_BF16) {
        uint16_t *d = dst; /* (n) bf16 */
        for (size_t i = 0; i < n; i++)
            d[i] = gml_f32_to_bf16(src[i]);
        return GML_OK;
    }
    return gml_error_set(GML_ERR_INVALID_ARG, "upload_f32: dtype %s is not f32 or bf16", gml_dtype_name(dt));
}

static gml_status cpu_download_f32(gml_backend *be, float *dst, const void *src, gml_dtype dt, size_t n) {
    if (dt == GML_DTYPE_F32) return cpu_memcpy(be, dst, src, n * sizeof(float));
    if (dt == GML_DTYPE_BF16) {
        const uint16_t *s = src; /* (n) bf16 */
        for (size_t i = 0; i < n; i++)
            dst[i] = gml_bf16_to_f32(s[i]);
        return GML_OK;
    }
    return gml_error_set(GML_ERR_INVALID_ARG, "download_f32: dtype %s is not f32 or bf16", gml_dtype_name(dt));
}

/* act is f32 here: a copy */
static gml_status cpu_cast_f32_to_act(gml_backend *be, void *dst, const float *src, size_t n) {
    return cpu_memcpy(be, dst, src, n * sizeof(float));
}

/* ------------------------------------------------------------ lifetime */

static void cpu_destroy(gml_backend *be) {
    if (!be) return;
    gml_cpu_ctx *c = gml_cpu_ctx_of(be);
    if (c) {
        free(c->work);
        free(c);
    }
    free(be);
}

static const struct gml_backend_i cpu_iface = {
    .alloc = cpu_alloc,
    .free = cpu_free,
    .memset_zero = cpu_memset_zero,
    .memcpy_h2d = cpu_memcpy,
    .memcpy_d2h = cpu_memcpy,
    .memcpy_d2d = cpu_memcpy,
    .synchronize = cpu_synchronize,
    .mem_stats = cpu_mem_stats,
    .upload_f32 = cpu_upload_f32,
    .download_f32 = cpu_download_f32,
    .cast_f32_to_act = cpu_cast_f32_to_act,
    .encoder_forward = gml_cpu_encoder_forward,
    .encoder_backward = gml_cpu_encoder_backward,
    .layernorm_forward = gml_cpu_layernorm_forward,
    .layernorm_backward = gml_cpu_layernorm_backward,
    .matmul_forward = gml_cpu_matmul_forward,
    .matmul_backward = gml_cpu_matmul_backward,
    .matmul_gelu_forward = gml_cpu_matmul_gelu_forward,
    .matmul_backward_gelu = gml_cpu_matmul_backward_gelu,
    .gelu_forward = gml_cpu_gelu_forward,
    .gelu_backward = gml_cpu_gelu_backward,
    .residual_forward = gml_cpu_residual_forward,
    .residual_layernorm_forward = gml_cpu_residual_layernorm_forward,
    .dropout = gml_cpu_dropout,
    .attention_forward = gml_cpu_attention_forward,
    .attention_backward = gml_cpu_attention_backward,
    .classifier_forward_backward = gml_cpu_classifier_forward_backward,
    .sum_accumulate = gml_cpu_sum_accumulate,
    .sumsq_accumulate = gml_cpu_sumsq_accumulate,
    .adamw_update = gml_cpu_adamw_update,
    .adamw_update_pieces = gml_cpu_adamw_update_pieces,
    /* graph_*: NULL, ops run as they are called (nothing to record) */
    .destroy = cpu_destroy,
};

/* The "model name" line of /proc/cpuinfo into name (size cap); "cpu" if
 * there is none (non-Linux, containers that hide it). */
static void cpu_model_name(char *name, size_t cap) {
    snprintf(name, cap, "cpu");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        char *colon = strchr(line, ':');
        if (!colon) continue;
        char *s = colon + 1;
        while (*s == ' ' || *s == '\t')
            s++;
        size_t len = strcspn(s, "\r\n");
        while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
            len--;
        if (len > 0) snprintf(name, cap, "%.*s", (int)len, s);
        break;
    }
    fclose(f);
}

gml_status gml_backend_cpu_create(gml_backend **out) {
    *out = NULL;
    gml_backend *be = calloc(1, sizeof *be);
    gml_cpu_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return gml_error_set(GML_ERR_NOMEM, "CPU backend struct");
    }
    be->iface = &cpu_iface;
    be->ctx = c;
    be->act_dtype = GML_DTYPE_F32;
    snprintf(be->name, sizeof be->name, "cpu");
    cpu_model_name(be->device_name, sizeof be->device_name);
    be->peak_flops = 0.0;
    be->device_index = -1;
    *out = be;
    return GML_OK;
}
