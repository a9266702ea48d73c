/* zero.h — the optimizer step of a data-parallel group, ZeRO stage 0, 1 or 2
 * (DESIGN.md: parallel/). It runs after the last micro-step's backward and
 * leaves every dp rank with the same updated parameters.
 *
 * Shards: the flat parameter buffer (registry order, padded to a multiple of
 * dp by the model: gml_gpt_config.shard_ways) is cut into dp equal ranges;
 * dp rank r owns [r*S, (r+1)*S), S = padded / dp, so any parameter size works
 * (a parameter may straddle shards; AdamW treats each piece with that
 * parameter's weight-decay flag).
 *   stage 0: gradients all-reduced in buckets overlapped with backward
 *            (parallel/dp.h), every rank updates all.
 *   stage 1: gradients all-reduced as in 0; Adam moments for the own shard only;
 *            each rank updates its shard, then the parameters are all-gathered.
 *   stage 2: gradients reduce-scattered into a shard buffer (half the traffic
 *            of an all-reduce); update and all-gather as in stage 1.
 * The global gradient norm for clipping is sqrt(sum over the group of each
 * shard's sum of squares). Stage 3 (sharded parameters) is not built yet.
 *
 * Model-state bytes per rank (P parameters, fp32 everything, CPU backend):
 *   stage 0: 16 P     stage 1: 8 P + 8 P/dp     stage 2: 8 P + 12 P/dp
 * (params 4P + the full gradient buffer 4P that backward writes into, plus
 * moments 8P/dp, plus the gradient shard 4P/dp in stage 2). gml_zero_state_bytes
 * reports what was actually allocated.
 * Ownership: gml_zero_create allocates; gml_zero_destroy frees. Borrows the
 * model and the group.
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

/* The model must have been created with shard_ways == gml_comm_size(dp) (or
 * 1 when dp has one rank). dev: gml_comm_device_group(dp, backend). */
gml_status gml_zero_create(gml_gpt *m, gml_comm *dp, gml_comm *dev, int stage, size_t bucket_elems,
                           const gml_adamw_config *cfg, gml_zero **out);
void gml_zero_destroy(gml_zero *z);

/* Call before the backward of a step's last micro-batch: hooks the bucketed
 * all-reduce into it (stages 0 and 1; a no-op otherwise). */
void gml_zero_before_last_backward(gml_zero *z);
/* Buckets the last step started while backward was still running. */
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
/* Restore from full flat host tensors (P floats each, registry order):
 * every rank passes the whole state and keeps what its stage holds (the
 * compute copy is refreshed); adam_t: the optimizer's step count. Not
 * collective. */
gml_status gml_zero_restore(gml_zero *z, const float *master, const float *adam_m, const float *adam_v, int adam_t);

/* Bytes of model state this rank holds: parameters (+ compute copy), the
 * gradient buffer, Adam moments, the gradient shard. */
size_t gml_zero_state_bytes(const gml_zero *z);

#ifdef __cplusplus
}
#endif
#endif
