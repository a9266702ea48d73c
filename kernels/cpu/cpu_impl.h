/* cpu_impl.h — private to kernels/cpu: the CPU backend's context and the op
 * functions that backend_cpu.c puts into its struct gml_backend_i table.
 *
 * Every op follows core/backend.h to the letter; on the CPU "act" is f32, so
 * every void * activation below is a float * (f32). Ops are synchronous and
 * deterministic: OpenMP loops use static schedules and each thread writes
 * disjoint outputs, and every reduction runs in a fixed order.
 * Not for: anyone outside kernels/cpu (use core/backend.h).
 */
#ifndef GML_KERNELS_CPU_IMPL_H
#define GML_KERNELS_CPU_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Below this many elements (or rows x columns) an op runs on one thread:
 * starting the OpenMP team would cost more than the work. */
#define GML_CPU_PAR_MIN 16384

typedef struct {
    size_t in_use;      /* bytes now allocated through alloc */
    size_t peak;        /* most bytes ever allocated at once */
    float *work;        /* grow-only scratch for ops (attention forward) */
    size_t work_floats; /* elements of work */
} gml_cpu_ctx;

static inline gml_cpu_ctx *gml_cpu_ctx_of(gml_backend *be) { return (gml_cpu_ctx *)be->ctx; }

/* A scratch buffer of at least n floats owned by the backend (grow-only; the
 * previous contents are lost when it grows). Not for use by two ops at once. */
gml_status gml_cpu_workspace(gml_backend *be, size_t n, float **out);

/* ---- ops_norm.c ---- */
gml_status gml_cpu_encoder_forward(gml_backend *be, void *out, const int32_t *tokens, const void *wte, const void *wpe,
                                   int B, int T, int C);
gml_status gml_cpu_encoder_backward(gml_backend *be, float *dwte, float *dwpe, const void *dout, const int32_t *tokens,
                                    int B, int T, int C);
gml_status gml_cpu_layernorm_forward(gml_backend *be, void *out, float *mean, float *rstd, const void *inp,
                                     const void *weight, const void *bias, int N, int C);
gml_status gml_cpu_layernorm_backward(gml_backend *be, void *dinp, float *dweight, float *dbias, const void *dout,
                                      const void *inp, const void *weight, const float *mean, const float *rstd, int N,
                                      int C);
gml_status gml_cpu_gelu_forward(gml_backend *be, void *out, const void *inp, size_t n);
gml_status gml_cpu_gelu_backward(gml_backend *be, void *dinp, const void *inp, const void *dout, size_t n);
gml_status gml_cpu_residual_forward(gml_backend *be, void *out, const void *a, const void *b, size_t n);
gml_status gml_cpu_residual_layernorm_forward(gml_backend *be, void *res, void *out, float *mean, float *rstd,
                                              const void *a, const void *b, const void *weight, const void *bias, int N,
                                              int C);
gml_status gml_cpu_dropout(gml_backend *be, void *out, const void *x, size_t n, uint64_t key, uint32_t threshold,
                           float scale);

/* ---- ops_dense.c ---- */
gml_status gml_cpu_matmul_forward(gml_backend *be, void *out, const void *inp, const void *weight, const void *bias,
                                  int N, int IC, int OC);
gml_status gml_cpu_matmul_backward(gml_backend *be, void *dinp, float *dweight, float *dbias, const void *dout,
                                   const void *inp, const void *weight, int N, int IC, int OC);
gml_status gml_cpu_matmul_gelu_forward(gml_backend *be, void *out, void *pre, const void *inp, const void *weight,
                                       const void *bias, int N, int IC, int OC);
gml_status gml_cpu_matmul_backward_gelu(gml_backend *be, void *dpre, float *dweight, float *dbias, const void *dout,
                                        const void *inp, const void *weight, const void *pre, int N, int IC, int OC);

/* ---- ops_attention.c ---- */
gml_status gml_cpu_attention_forward(gml_backend *be, void *out, float *lse, const void *qkv, int B, int T, int C,
                                     int NH);
gml_status gml_cpu_attention_backward(gml_backend *be, void *dqkv, const void *dout, const void *qkv, const void *out,
                                      const float *lse, int B, int T, int C, int NH);

/* ---- ops_loss.c ---- */
gml_status gml_cpu_classifier_forward_backward(gml_backend *be, float *losses, void *logits, const int32_t *targets,
                                               float dscale, int N, int V, int Vp);
gml_status gml_cpu_sum_accumulate(gml_backend *be, float *acc, const float *x, size_t n);
gml_status gml_cpu_sumsq_accumulate(gml_backend *be, float *acc, const float *x, size_t n);
gml_status gml_cpu_adamw_update(gml_backend *be, float *param, void *param_act, const float *grad, float *m, float *v,
                                size_t n, float lr, float beta1, float beta2, float eps, float weight_decay,
                                float grad_scale, int t);
gml_status gml_cpu_adamw_update_pieces(gml_backend *be, float *param, void *param_act, const float *grad, float *m,
                                       float *v, const gml_adamw_piece *pieces, int n_pieces, size_t total, float lr,
                                       float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                                       int t);

#ifdef __cplusplus
}
#endif
#endif
