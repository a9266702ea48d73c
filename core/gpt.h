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
 *
 * Units and parameter windows (ZeRO-3, parallel/zero.h): the parameters are
 * cut into units, one per layer and in layer order: unit 0 the embedding
 * (wte, wpe), units 1..L the blocks, unit L+1 the head (ln_f); each is one
 * flat range of the registry (gml_gpt_unit_range). Layers address their
 * parameters and gradients relative to their unit's base. Normally the bases
 * point into the full buffers above, fixed at create. A model created with
 * cfg.sharded_params allocates no full parameter, compute or gradient buffer:
 * a provider (gml_gpt_set_provider) hands it each unit's parameters in a
 * window just before a layer computes with them, and a gradient window for
 * the layer's backward, which it takes back (to reduce it away) right after.
 * Cross-layer uses: block l's last op also reads block l+1's ln1 (ln_f after
 * the last block), and the head reads and writes the tied wte of unit 0.
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
    int sharded_params;          /* 1: no full-length parameter, compute or gradient buffers; a provider
                                    supplies per-unit windows (ZeRO-3, see above); 0: full buffers */
    int sharded_grads;           /* 1 (without sharded_params): full parameter buffers, but no full
                                    gradient buffer: a provider supplies per-unit gradient windows only
                                    (ZeRO-2; its parameter functions are not called) */
    int head_chunks;             /* k > 1: the (N, Vp) logits exist for ceil(B_max / k) sequences at a
                                    time. A forward with targets runs the head piece by piece: logits,
                                    loss, and in a training forward (dscale != 0) at once the head's
                                    backward (d ln_f output, wte gradient +=), since the piece's logits
                                    gradient is overwritten by the next piece; gml_gpt_backward then
                                    starts from the stored d ln_f. A forward without targets may have
                                    at most ceil(B_max / k) sequences. With sharded_params the training
                                    forward takes unit 0's gradient window before the pieces (see the
                                    provider's schedule). 0 or 1: the whole logits, the head's backward
                                    in gml_gpt_backward. */
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

/* GPT-2 initialisation from `seed` (layout independent, see params.h): the
 * full init is computed on the host and handed to gml_gpt_set_params_host. */
gml_status gml_gpt_init_weights(gml_gpt *m, uint64_t seed);
/* Copy all master weights to/from a host f32 buffer of gml_gpt_num_params
 * elements in registry order (the compute copy is refreshed on set). With a
 * provider (sharded_params) these go to the provider: set keeps what this
 * rank holds; get and get_grads are the provider's to serve or refuse
 * (parallel/zero.h: get after gml_zero_gather_params_host). */
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
 * while earlier layers still compute. fn NULL: no hook.
 * recordable: the hook promises that what it does is device work queued
 * on the backend's stream or on streams it joins back into that stream
 * before the last call of a backward returns, and that it does the same
 * thing each time it is called with the same ranges; then
 * gml_gpt_train_micro may record a micro-step with the hook's work in it
 * and replay it later without calling the hook
 * (gml_gpt_micro_replayed says when). */
typedef gml_status (*gml_grads_ready_fn)(void *ctx, size_t lo, size_t hi);
void gml_gpt_set_grads_ready_hook(gml_gpt *m, gml_grads_ready_fn fn, void *ctx, int recordable);

/* The token lookup's gradient exchanged instead of summed (data
 * parallelism). The embedding's backward scatters rows of dX (the gradient
 * at its output) into wte and wpe, so summing over ranks the dense 39M-value
 * wte/wpe gradient can be replaced by gathering every rank's dX rows and
 * tokens and scattering all of them on every rank. With fn set, a backward
 * (a) calls the grads-ready hook for unit 0's range right after the head's
 * call (the head being wte's other user, unit 0 then holds everything but
 * this backward's token lookup part: the hook reduces that early), and not
 * again after the embedding; (b) in the embedding's backward calls fn with
 * this rank's dX (rows of row_bytes, act) and tokens (rows int32), both
 * device buffers; fn returns the same of all `ways` ranks, concatenated in
 * rank order (buffers fn owns, valid until the next call; device work on
 * the backend's stream, ordered after the hook's reduction of unit 0), and
 * the encoder's backward adds all of them into wte and wpe: the same bits on
 * every rank. fn NULL: off. Without a grads-ready hook it must be off. */
typedef gml_status (*gml_encoder_gather_fn)(void *ctx, const void *dx, const int32_t *tokens, size_t rows,
                                            size_t row_bytes, const void **dx_all, const int32_t **tokens_all,
                                            int *ways);
void gml_gpt_set_encoder_gather(gml_gpt *m, gml_encoder_gather_fn fn, void *ctx);

/* Backward of the last forward; gradients ACCUMULATE into the fp32 grads. */
gml_status gml_gpt_backward(gml_gpt *m);
gml_status gml_gpt_zero_grads(gml_gpt *m);
/* One training micro-step: gml_gpt_forward (targets and dscale != 0), then
 * gml_gpt_loss_accumulate(loss_acc), then gml_gpt_backward, with the same
 * results. Where the backend can record launches (CUDA graphs) and the model
 * runs without a parameter provider, without dropout and without a hook or
 * with a recordable one, the second call with the same (B, T, dscale,
 * loss_acc, hook) records the device work and later calls replay it as one
 * launch (the host still checks and uploads the tokens). Two recordings are
 * kept: one without a hook and one with. GML_CUDA_GRAPHS=0 in the
 * environment turns recording off. */
gml_status gml_gpt_train_micro(gml_gpt *m, const int32_t *inputs, const int32_t *targets, int B, int T, float dscale,
                               float *loss_acc);
/* 1 if the last gml_gpt_train_micro replayed a recording (its grads-ready
 * hook was not called: the recorded hook work ran instead). */
int gml_gpt_micro_replayed(const gml_gpt *m);
/* Device scalar += sum of the last forward's per-token losses. */
gml_status gml_gpt_loss_accumulate(gml_gpt *m, float *acc_dev);
/* Host copy of the logits of row (b, t) of the last forward without dscale:
 * V floats. */
gml_status gml_gpt_logits_row(gml_gpt *m, int b, int t, float *out);

/* Buffers for the optimizer (device pointers, registry offsets apply);
 * NULL with sharded_params (grads also with sharded_grads). */
float *gml_gpt_master(gml_gpt *m);   /* (P) f32 */
void *gml_gpt_compute(gml_gpt *m);   /* (P) act; == master on an f32 backend */
float *gml_gpt_grads(gml_gpt *m);    /* (P) f32 */

/* ---- units and the provider (ZeRO-3: parameters and gradients; ZeRO-2: gradients only) ---- */
int gml_gpt_num_units(const gml_gpt *m); /* L + 2 */
/* Flat range [lo, hi) of unit u's parameters (registry offsets). */
void gml_gpt_unit_range(const gml_gpt *m, int u, size_t *lo, size_t *hi);
/* The window unit u lives in: 0 for unit 0, 1 and 2 alternately for the
 * others (unit u >= 1: 1 + u % 2). The model never holds two units of one
 * window at once (for parameters, and separately for gradients), so a
 * provider needs three parameter windows and three gradient windows, window
 * w of gml_gpt_window_elems(m, w) elements (the largest unit it takes). */
int gml_gpt_unit_window(const gml_gpt *m, int u);
size_t gml_gpt_window_elems(const gml_gpt *m, int w);

/* What a sharded model calls instead of reading full buffers. All calls are
 * made in the same order on every rank (the model's schedule depends only on
 * its shape and on which calls are made: forward, backward), so a provider
 * may run collectives in them. Windows hold a unit's range contiguously:
 * *base addresses the unit's first element. The schedule, layer u = unit u:
 *   forward of layer u: acquire(u) (the head: also acquire(0) for wte),
 *     prefetch(u + 1) (the last block: also prefetch(0)), compute; block
 *     u's closing norm acquires u + 1 before it; release(u) after (the
 *     head: after an evaluation forward units 0 and L+1 go back, after a
 *     training forward they stay for its backward);
 *   a training forward with the head in pieces (head_chunks) runs the
 *     head's backward piece by piece: grads_acquire(0) before the pieces;
 *   backward of layer u: acquire(u) (not the embedding: it reads no
 *     parameter; the head: also 0), prefetch(u - 1) for u - 1 >= 1,
 *     grads_acquire(u) (the head: also 0, completed by the embedding),
 *     compute, release(u) (the head: also 0), grads_release(u); after the
 *     embedding, grads_finish.
 * A forward first releases whatever an earlier training forward left held. */
typedef struct {
    void *ctx;
    /* Start bringing unit u's parameters (act) into its window; may return
     * before they are there. A no-op if u is already there or on its way. */
    gml_status (*prefetch)(void *ctx, int u);
    /* Unit u's parameters, usable by device work queued from now on
     * (fetches them if prefetch was not called). */
    gml_status (*acquire)(void *ctx, int u, void **base);
    /* The work queued so far is the last to read unit u's parameters (also
     * for a prefetch never acquired): its window may be refilled. */
    gml_status (*release)(void *ctx, int u);
    /* An f32 gradient window for unit u that backward accumulates into
     * (+=); it must hold what the provider wants added to (zeros, or the
     * gradients accumulated so far). */
    gml_status (*grads_acquire)(void *ctx, int u, float **base);
    /* Unit u's gradients of this backward are queued: the provider takes
     * them (reduces them into its shard); the window may be reused. */
    gml_status (*grads_release)(void *ctx, int u);
    /* The end of a backward: whatever grads_release started is done. */
    gml_status (*grads_finish)(void *ctx);
    /* Whole-model access in registry order (gml_gpt_set_params_host,
     * gml_gpt_get_params_host, gml_gpt_get_grads_host, gml_gpt_zero_grads). */
    gml_status (*set_params_host)(void *ctx, const float *host);
    gml_status (*get_params_host)(void *ctx, float *host);
    gml_status (*get_grads_host)(void *ctx, float *host);
    gml_status (*zero_grads)(void *ctx);
} gml_gpt_provider;

/* Install (copied) or, with p NULL, remove the provider. Only for a model
 * created with sharded_params; the provider must outlive its use (remove it
 * before freeing it). A sharded model without one refuses to compute. */
gml_status gml_gpt_set_provider(gml_gpt *m, const gml_gpt_provider *p);
/* 1 if a grads-ready hook or a provider is set: then a step calls back into
 * the host between layers and must not be recorded (CUDA graphs). */
int gml_gpt_has_hooks(const gml_gpt *m);

#ifdef __cplusplus
}
#endif
#endif
