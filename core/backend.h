/* backend.h — the one contract every compute backend fills (ggml's backend
 * table): memory, transfers and the ops a GPT needs, forward and backward.
 *
 * core/ calls only through gml_backend_i; kernels/cpu fills it with fp32
 * reference code (+ OpenBLAS), kernels/cuda with bf16 kernels (+ cuBLASLt).
 * Not for: model structure (core/gpt.h), optimizer policy (core/optim.h).
 *
 * Conventions for every op below:
 *  - Pointers are device pointers of this backend; calls are asynchronous on
 *    the backend's stream (CPU: synchronous). `synchronize` waits.
 *  - "act" is be->act_dtype: F32 on the CPU, BF16 on CUDA. Activations,
 *    activation gradients and the compute copy of parameters are act.
 *  - Parameter gradients are always F32 and are ACCUMULATED (+=); the caller
 *    zeroes them at the start of a step. Activation gradients are written (=)
 *    unless an op says "+=".
 *  - Statistics (mean, rstd, lse, losses, norms) are F32; token ids int32.
 *  - Shapes: B batch, T time, C channels, NH heads, hd = C/NH, N = B*T rows,
 *    V vocabulary, Vp padded vocabulary (rows of wte, columns of logits).
 *  - An op may keep a private workspace that it allocates on first use and
 *    only grows; nothing is allocated per step once sizes are stable.
 */
#ifndef GML_BACKEND_H
#define GML_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gml_backend gml_backend;

/* One tensor (or the part of one) of a multi-tensor AdamW update
 * (adamw_update_pieces). Offsets and counts are in elements. flat_off is the
 * sum of numel over the pieces before this one, so the table maps a flat
 * index of [0, total) to its piece by binary search. */
typedef struct gml_adamw_piece {
    uint64_t param_off; /* into param and param_act */
    uint64_t state_off; /* into grad, m and v */
    uint64_t numel;
    uint64_t flat_off;
    uint32_t decay; /* 1: apply weight decay */
    uint32_t reserved;
} gml_adamw_piece;

struct gml_backend_i {
    /* ---- memory; alloc'd memory is owned by the caller until free ---- */
    gml_status (*alloc)(gml_backend *be, void **ptr, size_t bytes);
    void (*free)(gml_backend *be, void *ptr);
    gml_status (*memset_zero)(gml_backend *be, void *ptr, size_t bytes);
    gml_status (*memcpy_h2d)(gml_backend *be, void *dst, const void *src, size_t bytes);
    gml_status (*memcpy_d2h)(gml_backend *be, void *dst, const void *src, size_t bytes);
    gml_status (*memcpy_d2d)(gml_backend *be, void *dst, const void *src, size_t bytes);
    gml_status (*synchronize)(gml_backend *be);
    /* bytes now allocated through alloc plus the backend's own scratch
     * (the CUDA backend's partial sums and cuDNN workspaces), and the most
     * ever at once */
    void (*mem_stats)(gml_backend *be, size_t *in_use, size_t *peak);

    /* ---- conversions ---- */
    /* host f32 (n) -> device buffer of dtype dt (F32 or BF16) */
    gml_status (*upload_f32)(gml_backend *be, void *dst, gml_dtype dt, const float *src, size_t n);
    /* device buffer of dtype dt (F32 or BF16) -> host f32 (n); synchronous */
    gml_status (*download_f32)(gml_backend *be, float *dst, const void *src, gml_dtype dt, size_t n);
    /* device f32 (n) -> device act (n) */
    gml_status (*cast_f32_to_act)(gml_backend *be, void *dst, const float *src, size_t n);

    /* ---- GPT ops ---- */
    /* out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:] */
    gml_status (*encoder_forward)(gml_backend *be, void *out /* (B,T,C) act */,
                                  const int32_t *tokens /* (B,T) */, const void *wte /* (Vp,C) act */,
                                  const void *wpe /* (maxT,C) act */, int B, int T, int C);
    /* dwte[tokens[b,t],:] += dout[b,t,:]; dwpe[t,:] += sum_b dout[b,t,:] */
    gml_status (*encoder_backward)(gml_backend *be, float *dwte /* (Vp,C) += */,
                                   float *dwpe /* (maxT,C) += */, const void *dout /* (B,T,C) act */,
                                   const int32_t *tokens /* (B,T) */, int B, int T, int C);
    /* out = (inp - mean) * rstd * weight + bias, eps = 1e-5; saves mean, rstd */
    gml_status (*layernorm_forward)(gml_backend *be, void *out /* (N,C) act */, float *mean /* (N) */,
                                    float *rstd /* (N) */, const void *inp /* (N,C) act */,
                                    const void *weight /* (C) act */, const void *bias /* (C) act */,
                                    int N, int C);
    gml_status (*layernorm_backward)(gml_backend *be, void *dinp /* (N,C) act += */,
                                     float *dweight /* (C) += */, float *dbias /* (C) += */,
                                     const void *dout /* (N,C) act */, const void *inp /* (N,C) act */,
                                     const void *weight /* (C) act */, const float *mean /* (N) */,
                                     const float *rstd /* (N) */, int N, int C);
    /* out = inp @ weight^T + bias (bias may be NULL) */
    gml_status (*matmul_forward)(gml_backend *be, void *out /* (N,OC) act */, const void *inp /* (N,IC) act */,
                                 const void *weight /* (OC,IC) act */, const void *bias /* (OC) act|NULL */,
                                 int N, int IC, int OC);
    /* dinp = dout @ weight (skipped if dinp NULL); dweight += dout^T @ inp;
     * dbias += column sums of dout (skipped if dbias NULL) */
    gml_status (*matmul_backward)(gml_backend *be, void *dinp /* (N,IC) act = */,
                                  float *dweight /* (OC,IC) += */, float *dbias /* (OC) += | NULL */,
                                  const void *dout /* (N,OC) act */, const void *inp /* (N,IC) act */,
                                  const void *weight /* (OC,IC) act */, int N, int IC, int OC);
    /* The MLP's first layer, linear then GELU in one op:
     *   pre = inp @ weight^T + bias (bias may be NULL);  out = gelu(pre)
     * pre is what matmul_backward_gelu needs. out is the GELU of pre's value
     * before pre is rounded to act (on an f32 backend the two are the same). */
    gml_status (*matmul_gelu_forward)(gml_backend *be, void *out /* (N,OC) act */, void *pre /* (N,OC) act */,
                                      const void *inp /* (N,IC) act */, const void *weight /* (OC,IC) act */,
                                      const void *bias /* (OC) act|NULL */, int N, int IC, int OC);
    /* Backward of a linear layer whose input was inp = gelu(pre) (the MLP's
     * second layer), with the GELU's backward folded into the dinp product:
     *   dpre = (dout @ weight) * gelu'(pre); dweight += dout^T @ inp;
     *   dbias += column sums of dout (skipped if dbias NULL)
     * dpre is the product's f32 value times gelu'(pre), rounded to act once. */
    gml_status (*matmul_backward_gelu)(gml_backend *be, void *dpre /* (N,IC) act = */,
                                       float *dweight /* (OC,IC) += */, float *dbias /* (OC) += | NULL */,
                                       const void *dout /* (N,OC) act */, const void *inp /* (N,IC) act */,
                                       const void *weight /* (OC,IC) act */, const void *pre /* (N,IC) act */,
                                       int N, int IC, int OC);
    /* GELU, tanh approximation (GPT-2):
     * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
    gml_status (*gelu_forward)(gml_backend *be, void *out /* (n) act */, const void *inp /* (n) act */,
                               size_t n);
    gml_status (*gelu_backward)(gml_backend *be, void *dinp /* (n) act = */, const void *inp /* (n) act */,
                                const void *dout /* (n) act */, size_t n);
    /* out = a + b */
    gml_status (*residual_forward)(gml_backend *be, void *out /* (n) act */, const void *a, const void *b,
                                   size_t n);
    /* A residual add and the LayerNorm that reads its result, in one op:
     * res = a + b (rounded to act), then out, mean, rstd exactly as
     * layernorm_forward(out, mean, rstd, res, weight, bias). res must not
     * alias a or b. */
    gml_status (*residual_layernorm_forward)(gml_backend *be, void *res /* (N,C) act */, void *out /* (N,C) act */,
                                             float *mean /* (N) */, float *rstd /* (N) */,
                                             const void *a /* (N,C) act */, const void *b /* (N,C) act */,
                                             const void *weight /* (C) act */, const void *bias /* (C) act */,
                                             int N, int C);
    /* Dropout (core/dropout.h): out[i] = keep(key, i) ? x[i] * scale : 0 with
     * keep(key, i) = gml_dropout_bits(key, i) >= threshold; for drop
     * probability p: threshold = gml_dropout_threshold(p), scale = 1/(1-p).
     * out may equal x. The op is linear and
     * diagonal, so the same call with the same key is its own backward. */
    gml_status (*dropout)(gml_backend *be, void *out /* (n) act */, const void *x /* (n) act */, size_t n,
                          uint64_t key, uint32_t threshold, float scale);
    /* Causal multi-head self-attention, scale 1/sqrt(hd). qkv[b,t,:] holds
     * q (C) | k (C) | v (C); head h uses channels [h*hd, (h+1)*hd) of each.
     * out[b,t,h*hd:(h+1)*hd] = softmax_causal(q k^T * scale) v.
     * lse[b,h,t] = log sum_{s<=t} exp(q_t . k_s * scale) (natural log). */
    gml_status (*attention_forward)(gml_backend *be, void *out /* (B,T,C) act */, float *lse /* (B,NH,T) */,
                                    const void *qkv /* (B,T,3C) act */, int B, int T, int C, int NH);
    gml_status (*attention_backward)(gml_backend *be, void *dqkv /* (B,T,3C) act = */,
                                     const void *dout /* (B,T,C) act */, const void *qkv /* (B,T,3C) act */,
                                     const void *out /* (B,T,C) act */, const float *lse /* (B,NH,T) */,
                                     int B, int T, int C, int NH);
    /* Fused classifier. For each row i: losses[i] = -log softmax(logits[i,:V])[targets[i]]
     * (columns V..Vp-1 are padding and ignored). If dscale != 0, logits is
     * overwritten in place by its gradient: (softmax - onehot(target)) * dscale
     * on columns < V and 0 on padding columns. If dscale == 0 logits is
     * left unchanged (evaluation). */
    gml_status (*classifier_forward_backward)(gml_backend *be, float *losses /* (N) = */,
                                              void *logits /* (N,Vp) act, in place */,
                                              const int32_t *targets /* (N) */, float dscale, int N, int V,
                                              int Vp);

    /* ---- reductions and optimizer ---- */
    /* *acc += sum_i x[i] (acc is a device scalar) */
    gml_status (*sum_accumulate)(gml_backend *be, float *acc /* (1) += */, const float *x /* (n) */, size_t n);
    /* *acc += sum_i x[i]^2 */
    gml_status (*sumsq_accumulate)(gml_backend *be, float *acc /* (1) += */, const float *x /* (n) */,
                                   size_t n);
    /* AdamW (decoupled decay), t >= 1 is the step count for bias correction:
     *   g = grad * grad_scale; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2
     *   p -= lr * ( (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) + wd * p )
     * then, if param_act is not NULL, param_act = act(p). */
    gml_status (*adamw_update)(gml_backend *be, float *param /* (n) */, void *param_act /* (n) act | NULL */,
                               const float *grad /* (n) */, float *m /* (n) */, float *v /* (n) */, size_t n,
                               float lr, float beta1, float beta2, float eps, float weight_decay,
                               float grad_scale, int t);
    /* The same update over many tensors in one call: for each piece p of the
     * table (a device buffer, n_pieces entries, in flat order), the numel
     * elements at param + p.param_off (and param_act + p.param_off) are
     * updated from grad, m, v + p.state_off, with weight decay weight_decay
     * where p.decay and 0 elsewhere. total = the sum of the pieces' numel. */
    gml_status (*adamw_update_pieces)(gml_backend *be, float *param /* f32 */, void *param_act /* act | NULL */,
                                      const float *grad, float *m, float *v,
                                      const struct gml_adamw_piece *pieces /* (n_pieces) device */, int n_pieces,
                                      size_t total, float lr, float beta1, float beta2, float eps,
                                      float weight_decay, float grad_scale, int t);

    /* ---- recorded launches (optional: NULL where a backend has none) ----
     * graph_begin: from now on the ops called on this backend are recorded
     * instead of run, until graph_end, which returns the recording in *graph
     * (owned by the caller: graph_free). In between, nothing that waits for
     * the device may be called (transfers, download_f32, synchronize). If an
     * op fails while recording, call graph_end anyway (it ends the recording
     * and reports the failure) and run the ops again unrecorded.
     * graph_launch runs a recording as one launch, with the buffers and
     * arguments it was recorded with; *stale = 1 and nothing runs when a
     * backend-private buffer it used (scratch) has been reallocated since:
     * free it and record again. */
    gml_status (*graph_begin)(gml_backend *be);
    gml_status (*graph_end)(gml_backend *be, void **graph);
    gml_status (*graph_launch)(gml_backend *be, void *graph, int *stale);
    void (*graph_free)(gml_backend *be, void *graph);

    /* ---- lifetime ---- */
    void (*destroy)(gml_backend *be);
};

struct gml_backend {
    const struct gml_backend_i *iface;
    gml_dtype act_dtype;        /* F32 (cpu) or BF16 (cuda) */
    char name[16];              /* "cpu" or "cuda" */
    char device_name[128];      /* e.g. "NVIDIA H200" or the CPU model */
    double peak_flops;          /* datasheet dense bf16 FLOP/s for MFU; 0 if unknown */
    int device_index;           /* CUDA device ordinal; -1 on CPU */
    char pci_bus_id[32];        /* the GPU's PCI bus id ("0000:00:06.0", core/power.h opens NVML by it); "" on CPU */
    void *ctx;                  /* backend-private state */
};

/* Create a backend. kind: "cpu", "cuda" or "auto" (cuda if this build has it
 * and a device is present, else cpu). device_index: CUDA ordinal (ignored on
 * CPU). *out is owned by the caller: free with gml_backend_destroy.
 * Returns GML_ERR_NO_DEVICE for "cuda" when there is no usable GPU or the
 * build has no CUDA backend. */
gml_status gml_backend_create(const char *kind, int device_index, gml_backend **out);
void gml_backend_destroy(gml_backend *be);
/* Number of CUDA devices usable by this build (0 if none or no CUDA backend). */
int gml_backend_cuda_device_count(void);

/* Constructors the backends provide (kernels/cpu, kernels/cuda). */
gml_status gml_backend_cpu_create(gml_backend **out);

#ifdef __cplusplus
}
#endif
#endif
