/* zero.h — the optimizer step of a data-parallel group, ZeRO stage 0, 1, 2
 * or 3 (DESIGN.md: parallel/). Every dp rank ends a step with the same
 * updated parameters (stages 0-2: all of them; stage 3: its shard, which is
 * what the next step gathers from).
 *
 * Shards: the flat parameter space (registry order, padded with zeros to a
 * multiple of dp: gml_gpt_config.shard_ways) is cut into dp equal ranges;
 * dp rank r owns [r*S, (r+1)*S), S = padded / dp, so any parameter size works
 * (a parameter may straddle shards; AdamW treats each piece with that
 * parameter's weight-decay flag).
 *   stage 0: gradients all-reduced in buckets overlapped with backward
 *            (parallel/dp.h), every rank updates all.
 *   stage 1: gradients all-reduced as in 0; Adam moments for the own shard only;
 *            each rank updates its shard, then the parameters are all-gathered:
 *            the compute copy only on a bf16 backend (half the bytes of the
 *            fp32 master, and no cast of the whole model after it), so the
 *            full master is current in the own shard only until
 *            gml_zero_gather_params_host (whole-weight exports call it). The
 *            update and the gather go in 4 parts of the shard, each part's
 *            gather beside the next part's update.
 *   stage 2: the gradients are sharded too: the model is created with
 *            sharded_grads (full parameters, no full gradient buffer) and
 *            this module provides its gradient windows as in stage 3 below:
 *            each layer's gradients are reduced onto the owners of their
 *            pieces while earlier layers still compute (half the traffic of
 *            an all-reduce) and accumulated into the gradient shard; update
 *            and all-gather as in stage 1. Gradient accumulation reduces
 *            every micro-step (as stage 3).
 *   stage 3: the parameters are sharded too. The model is created with
 *            sharded_params (no full-length buffer of any kind) and this module
 *            is its parameter provider (core/gpt.h): a rank holds the fp32
 *            master of its shard (+ its act compute copy on bf16 backends),
 *            the Adam moments and the gradient shard, plus working windows.
 *            Before a layer computes, its unit's parameters are gathered into
 *            a window: each owner of a piece of the unit's flat range
 *            broadcasts it from its compute shard (contiguous shards are what
 *            checkpoints read, so a unit is gathered piece by piece, one
 *            broadcast per owner; the next unit's broadcast is started while
 *            the current layer computes, on the communication stream on GPUs).
 *            Backward accumulates a unit's gradients into an f32 window that
 *            is then reduced piece by piece onto each piece's owner (one
 *            reduce per owner, asynchronously, overlapping the next layer's
 *            backward: half the traffic of an all-reduce of the window); the
 *            owner moves its piece into the gradient shard. Gradient
 *            accumulation: every micro-step's backward reduces into the
 *            shard (the standard ZeRO-3 way: no full gradient buffer ever
 *            exists); a window starts from the shard's
 *            own piece, so the reduction adds this micro-step to the sum so
 *            far. The step updates the shard only: the next forward gathers
 *            the new values, no all-gather after the step, except that the
 *            step starts unit 0's gather (the first forward's, with nothing
 *            to hide behind) to run while the host is between steps.
 *            Traffic per micro-step: broadcasts of about 2 P act values
 *            (every unit for the forward, the embedding again for the head,
 *            the blocks again for the backward) and reduces of P f32.
 *            Windows: three for parameters (act) and three for gradients
 *            (f32): one sized for the embedding (unit 0: wte + wpe; tied wte
 *            is read and written by the head as well, so its gradient window
 *            lives from the head's backward, which runs in the training
 *            forward with the head in pieces, to the embedding's) and two
 *            alternating for the blocks and the head (double buffering: one
 *            computes while the other transfers).
 * The global gradient norm for clipping is sqrt(sum over the group of each
 * shard's sum of squares) in stages 1-3.
 *
 * Model-state bytes per rank (P parameters, padded to Pp = S*dp; a = bytes
 * of the act dtype: 4 on the CPU backend, 2 for bf16 on CUDA; E = elements
 * of unit 0 = (Vp + block_size) C, K = elements of a block = 12 C^2 + 13 C):
 *   stage 0: (4 + 4 + [a != 4] a) Pp + 8 P
 *   stage 1: (4 + 4 + [a != 4] a) Pp + 8 S
 *   stage 2: (4 + [a != 4] a) Pp + 12 S + 4 (E + 2 K) + 3 * 256
 *   stage 3: (16 + [a != 4] a) S + (a + 4) (E + 2 K) + 6 * 256
 *            (n_layer >= 2; one layer: E + K + 2 C, the head's ln_f filling
 *            the second window; 256 bytes of slack per window keep every
 *            parameter at the alignment it has in full buffers, so kernels
 *            and cuBLASLt's choices are those of stages 0-2)
 * (full master, gradients and compute copy, plus moments 8 per owned
 * element, the gradient shard 4 S in stages 2 and 3; stage 2 replaces the
 * full gradients by three f32 windows, stage 3 all full buffers by the
 * shards and the windows). On the CPU backend that is 16 P, 8 P + 8 P/dp,
 * 4 P + 12 P/dp + 4 (E + 2 K) + 768 and 16 P/dp + 8 (E + 2 K) + 1536. For
 * GPT-2 124M in bf16 at dp = 2: 1.74 GB (stage 1), 1.71 GB (2), 1.44 GB (3);
 * at dp = 4: 1.49, 1.33, 0.88 GB (stage 0: 2.24 GB at any dp).
 * gml_zero_state_bytes reports what was actually allocated (rank 0's
 * shard is a full S; the moments of a range that is all padding keep one
 * element).
 * Ownership: gml_zero_create allocates; gml_zero_destroy frees (and removes
 * itself as the model's provider). Borrows the model and the groups.
 * Groups: `dp` (MPI, host scalars such as the norm, checkpoint gathers) and
 * `dev` (the same ranks for the model's buffers: NCCL on GPU ranks, `dp`
 * itself on CPU ranks).
 */
#ifndef GML_ZERO_H
#define GML_ZERO_H

#include "comm/comm.h"
#include "core/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gml_zero gml_zero;

/* The model must have been created with shard_ways == gml_comm_size(dp),
 * sharded_params = 1 exactly when stage is 3 and sharded_grads = 1 exactly
 * when it is 2. The stage is taken as given: on a one-rank group it runs
 * its whole machinery (windows, gathers, reductions with oneself) and gives
 * stage 0's results (the launcher asks for stage 0 there; tests and
 * measurements on one GPU do not). dev: gml_comm_device_group(dp, backend).
 * Stages 2 and 3 install themselves as the model's provider; set the
 * weights after this (gml_gpt_init_weights / gml_zero_restore). */
gml_status gml_zero_create(gml_gpt *m, gml_comm *dp, gml_comm *dev, int stage, size_t bucket_elems,
                           const gml_adamw_config *cfg, gml_zero **out);
void gml_zero_destroy(gml_zero *z);

/* Call before the backward of a step's last micro-batch: hooks the bucketed
 * all-reduce into it (stages 0 and 1; a no-op otherwise). */
void gml_zero_before_last_backward(gml_zero *z);
/* How the token embedding's gradient (unit 0: wte, wpe) crosses the dp
 * group in stages 0 and 1 (parallel/dp.h): REDUCE, all-reduced with the
 * rest after the last layer of backward; GATHER, reduced early (after the
 * head) and the token lookup's part exchanged as rows (every rank's dX and
 * tokens gathered, scattered on every rank); AUTO, GATHER where the rows
 * are at most half the bytes of the dense reduce (dp x rows x C x act bytes
 * <= 4 x the unit's elements; GPT-2 124M at 16 x 1024 rows: dp <= 6).
 * rows: tokens per micro-batch per rank. GATHER with stage 2 or 3 is
 * GML_ERR_BAD_INPUT; one rank: nothing to do. */
typedef enum { GML_EMBEDDING_AUTO = 0, GML_EMBEDDING_GATHER = 1, GML_EMBEDDING_REDUCE = 2 } gml_embedding_grads;
gml_status gml_zero_set_embedding_grads(gml_zero *z, gml_embedding_grads mode, size_t rows);
int gml_zero_embedding_gathered(const gml_zero *z);

/* Reductions of the last step started while backward was still running:
 * buckets (stages 0, 1), units of its last backward (stage 3). */
int gml_zero_overlapped_buckets(const gml_zero *z);

/* Reduce the gradients (finishing what the hook started), clip, update, gather. *grad_norm: the global norm
 * before clipping (may be NULL). */
gml_status gml_zero_step(gml_zero *z, double lr, double *grad_norm);

/* The AdamW of this rank's range (its moments are the shard a checkpoint
 * saves and restores), the stage in effect and the group. */
gml_adamw *gml_zero_optimizer(gml_zero *z);
int gml_zero_stage(const gml_zero *z);
gml_comm *gml_zero_group(gml_zero *z);

/* Checkpoint access (checkpoint/ckpt.c goes through these only, so it does
 * not depend on how a stage stores the state).
 * Shard range: the part of the flat parameter space [0, P) this rank writes
 * in a checkpoint, [rank*S, (rank+1)*S) clipped to P, for every stage (stage
 * 0 ranks hold everything; each still writes only its range). */
void gml_zero_shard_range(const gml_zero *z, size_t *lo, size_t *hi);
/* Host copies of this rank's shard range of the fp32 master weights and the
 * two Adam moments, hi - lo floats each (caller's buffers). Not collective. */
gml_status gml_zero_download_shard(gml_zero *z, float *master, float *adam_m, float *adam_v);
/* Restore from host tensors of this rank's optimizer range (gml_adamw_range
 * of gml_zero_optimizer: hi - lo floats each, element 0 is flat element lo):
 * master, the fp32 weights, adam_m and adam_v, the moments; adam_t: the
 * optimizer's step count. Stage 0's range is all P weights; stages 1-3
 * hold [rank*S, (rank+1)*S) clipped to P, so a resume reads 12P/dp bytes
 * of a checkpoint per rank. Stage 3 keeps the shard; stages 1 and 2 put
 * theirs into the full master and all-gather it over `dev` (collective
 * over the group then); the compute copy is refreshed. */
gml_status gml_zero_restore(gml_zero *z, const float *master, const float *adam_m, const float *adam_v, int adam_t);

/* Whole weights for gml_gpt_get_params_host (weights files, best.h5):
 * collective over the group, every rank calls it before it. Stage 3: it
 * all-gathers the master shards into a host copy (P floats, owned here)
 * that gml_gpt_get_params_host then serves on this rank without
 * communication, until the next step, a restore, gml_gpt_set_params_host
 * or gml_zero_drop_params_host. Stages 1, 2 on a bf16 backend: it
 * all-gathers the fp32 master on the device once after a step (the step
 * gathered the compute copy only). Otherwise a no-op (every rank has the
 * full weights). */
gml_status gml_zero_gather_params_host(gml_zero *z);
void gml_zero_drop_params_host(gml_zero *z);

/* Bytes of model state this rank holds: parameters (+ compute copy), the
 * gradient buffer, Adam moments, the gradient shard; in stage 3 the shards
 * and the windows (see the formula above). */
size_t gml_zero_state_bytes(const gml_zero *z);

#ifdef __cplusplus
}
#endif
#endif
