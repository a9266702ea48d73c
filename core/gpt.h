/* gpt.h — a GPT-2 style decoder (pre-LN, GELU, tied embeddings) built from
 * layers with explicit forward and backward (DESIGN.md idea 2).
 *
 * The model is a list of layers: the embedding, n_layer transformer blocks,
 * and the head (final layernorm, tied lm-head, fused softmax cross-entropy).
 * A pipeline stage will be a slice of that list. Every layer runs through the
 * backend table only (core/backend.h), so the same code drives the CPU and the
 * CUDA backend.
 *
 * Memory: gml_gpt_create sets up every buffer once — parameters (fp32 master,
 * act-dtype compute copy, fp32 gradients), activations for (B_max, T_max) and
 * backward scratch — in a handful of backend allocations; nothing is
 * allocated per step. The model owns them; gml_gpt_destroy frees them.
 * Optimizer moments live in core/optim.h.
 */
#ifndef GML_GPT_H
#define GML_GPT_H

#include <stddef.h>
#include <stdint.h>

#include "core/backend.h"
#include "parallel/params.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int n_layer, n_head, n_embd; /* L, NH, C */
    int block_size;              /* max T */
    int vocab_size;              /* V */
    int padded_vocab_size;       /* Vp >= V (rows of wte; extra rows stay 0) */
    float init_std;              /* 0.02 for GPT-2; residual projections use std/sqrt(2L) */
    float dropout;               /* drop probability in [0, 1) on the embedding output and on both
                                    residual branches (attention and MLP projections), applied in
                                    training forwards only (targets and dscale != 0); 0: off */
    int shard_ways;              /* the flat master / grads / compute buffers are padded with zeros to a
                                    multiple of this (the dp size, so ZeRO shards are equal); 0 or 1: none */
} gml_gpt_config;

typedef struct gml_gpt gml_gpt;

/* Create the model on `be` for micro-batches up to (B_max, T_max). recompute:
 * keep no GELU outputs, recompute them in backward (activation checkpointing
 * of the MLP). *out is owned by the caller: gml_gpt_destroy. Parameters are
 * uninitialised until gml_gpt_init_weights or gml_gpt_set_params_host. */
gml_status gml_gpt_create(gml_backend *be, const gml_gpt_config *cfg, int B_max, int T_max, int recompute,
                          gml_gpt **out);
void gml_gpt_destroy(gml_gpt *m);

const gml_param_registry *gml_gpt_params(const gml_gpt *m);
const gml_gpt_config *gml_gpt_get_config(const gml_gpt *m);
size_t gml_gpt_num_params(const gml_gpt *m);
/* Length of the flat buffers: num_params rounded up to cfg.shard_ways; the
 * padding is zero and never updated. */
size_t gml_gpt_padded_params(const gml_gpt *m);
gml_backend *gml_gpt_backend(const gml_gpt *m);
int gml_gpt_max_T(const gml_gpt *m); /* T_max given at create */
/* FLOPs of one training token (forward + backward): 6 N + 12 L T C. */
double gml_gpt_flops_per_token(const gml_gpt *m, int T);

/* GPT-2 initialisation from `seed` (layout independent, see params.h). */
gml_status gml_gpt_init_weights(gml_gpt *m, uint64_t seed);
/* Copy all master weights to/from a host f32 buffer of gml_gpt_num_params
 * elements in registry order (the compute copy is refreshed on set). */
gml_status gml_gpt_set_params_host(gml_gpt *m, const float *host);
gml_status gml_gpt_get_params_host(gml_gpt *m, float *host);
gml_status gml_gpt_get_grads_host(gml_gpt *m, float *host);

/* Forward a micro-batch of token ids (host int32, (B,T), B <= B_max,
 * T <= T_max). With targets (host (B,T)), the per-token losses are computed;
 * if dscale != 0 the logits are replaced by their gradient scaled by dscale,
 * ready for gml_gpt_backward (use 1/(B*T*grad_accum) for a mean loss). With
 * targets NULL only logits are computed (sampling). */
gml_status gml_gpt_forward(gml_gpt *m, const int32_t *inputs, const int32_t *targets, int B, int T, float dscale);
/* Key of the dropout masks of the next training forward (and its backward).
 * The caller derives it from (seed, step, micro-step) so that a run, and a
 * resumed run, draw the same masks; first_row: the index of this
 * micro-batch's first sequence in the global batch (its dp rank * B), so all
 * layouts draw the same mask per global element; see core/dropout.h. */
void gml_gpt_set_dropout_key(gml_gpt *m, uint64_t key, uint64_t first_row);
/* Called during gml_gpt_backward each time a layer's backward is done, with
 * the flat range [lo, hi) of that layer's parameters, whose gradients are
 * then final for this backward (the tied wte belongs to the embedding, the
 * last layer). The data-parallel reducer starts its all-reduces from here
 * while earlier layers still compute. fn NULL: no hook. */
typedef gml_status (*gml_grads_ready_fn)(void *ctx, size_t lo, size_t hi);
void gml_gpt_set_grads_ready_hook(gml_gpt *m, gml_grads_ready_fn fn, void *ctx);

/* Backward of the last forward; gradients ACCUMULATE into the fp32 grads. */
gml_status gml_gpt_backward(gml_gpt *m);
gml_status gml_gpt_zero_grads(gml_gpt *m);
/* One training micro-step: gml_gpt_forward (targets and dscale != 0), then
 * gml_gpt_loss_accumulate(loss_acc), then gml_gpt_backward, with the same
 * results. Where the backend can record launches (CUDA graphs) and the model
 * runs without a grads-ready hook and without dropout, the second call with
 * the same (B, T, dscale, loss_acc) records the device work and later calls
 * replay it as one launch (the host still checks and uploads the tokens).
 * GML_CUDA_GRAPHS=0 in the environment turns recording off. */
gml_status gml_gpt_train_micro(gml_gpt *m, const int32_t *inputs, const int32_t *targets, int B, int T, float dscale,
                               float *loss_acc);
/* Device scalar += sum of the last forward's per-token losses. */
gml_status gml_gpt_loss_accumulate(gml_gpt *m, float *acc_dev);
/* Host copy of the logits of row (b, t) of the last forward without dscale:
 * V floats. */
gml_status gml_gpt_logits_row(gml_gpt *m, int b, int t, float *out);

/* Buffers for the optimizer (device pointers, registry offsets apply). */
float *gml_gpt_master(gml_gpt *m);   /* (P) f32 */
void *gml_gpt_compute(gml_gpt *m);   /* (P) act; == master on an f32 backend */
float *gml_gpt_grads(gml_gpt *m);    /* (P) f32 */

#ifdef __cplusplus
}
#endif
#endif
