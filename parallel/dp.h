/* dp.h — data-parallel gradient reduction (ZeRO-0/1): every dp rank ends the
 * step with the sum over the dp group of the fp32 gradients.
 *
 * The flat gradient buffer (registry order, parallel/params.h) is cut into
 * buckets of bucket_elems counted from its end (backward produces the last
 * layers' gradients first). A reducer hooked into the model's backward
 * (gml_gpt_set_grads_ready_hook with gml_dp_reducer_ready) starts each
 * bucket's asynchronous all-reduce as soon as backward has finished every
 * parameter in it, so the reduction overlaps the backward of earlier layers
 * (on GPUs: NCCL on its own stream; on CPU ranks MPI progresses the requests
 * when they are waited for). gml_dp_reducer_finish starts what is left and
 * waits for all of it.
 * Ownership: a reducer borrows the group and the buffer; destroy frees it.
 */
#ifndef GML_DP_H
#define GML_DP_H

#include <stddef.h>

#include "comm/comm.h"
#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GML_DP_BUCKET_ELEMS ((size_t)1 << 23) /* 32 MiB of f32 per bucket */

typedef struct gml_dp_reducer gml_dp_reducer;

/* bucket_elems 0: GML_DP_BUCKET_ELEMS. */
gml_status gml_dp_reducer_create(gml_comm *c, float *grads, size_t n, size_t bucket_elems, gml_dp_reducer **out);
void gml_dp_reducer_destroy(gml_dp_reducer *r);
/* A new backward: nothing started, nothing ready. */
void gml_dp_reducer_begin(gml_dp_reducer *r);
/* gml_grads_ready_fn: [lo, hi) is final; starts every bucket that now lies
 * wholly in the final suffix, and once all have started, makes the backend's
 * stream wait for all of them (GPUs; CPU ranks block): so the hook is
 * recordable (core/gpt.h) and a recorded backward contains the whole
 * reduction. A call with a range at or above the final suffix so far begins
 * a new backward. ctx is the reducer. Works for any group size (a caller
 * with one rank need not hook it). */
gml_status gml_dp_reducer_ready(void *ctx, size_t lo, size_t hi);
/* The last backward was a replay of a recording made with this reducer
 * hooked in: its reductions ran inside the replay (the hook was not called). */
void gml_dp_reducer_replayed(gml_dp_reducer *r);
/* Start the remaining buckets and wait for all. */
gml_status gml_dp_reducer_finish(gml_dp_reducer *r);
/* Buckets started before the backward's end in the last backward (for
 * reports; after a replay, those of the recording). */
int gml_dp_reducer_overlapped(const gml_dp_reducer *r);

#ifdef __cplusplus
}
#endif
#endif
