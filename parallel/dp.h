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
 *
 * The embedding's rows (gml_dp_reducer_set_early + the model's encoder
 * gather, core/gpt.h): the token embedding's gradient is final only after
 * the last layer of backward, so its all-reduce (wte + wpe: 158 MB of f32
 * for GPT-2) would run after backward, exposed. With an early range [0, E)
 * (unit 0: wte, wpe) the range is cut into its own buckets, all-reduced as
 * soon as the model reports it (right after the head), and the embedding's
 * backward instead gathers every rank's dX rows and tokens
 * (gml_dp_reducer_exchange_rows: rows x C act values + rows int32 per rank)
 * and adds the scatter of all of them on every rank.
 * Ownership: a reducer borrows the group and the buffer; destroy frees it
 * (and the exchange buffers it allocated on the backend).
 */
#ifndef GML_DP_H
#define GML_DP_H

#include <stddef.h>

#include <stdint.h>

#include "comm/comm.h"
#include "core/backend.h"
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

/* Cut [0, early_hi) into buckets of its own, started together when
 * gml_dp_reducer_ready is called with exactly [0, early_hi); the rest is a
 * suffix down to early_hi as before. 0: none. Between backwards. */
gml_status gml_dp_reducer_set_early(gml_dp_reducer *r, size_t early_hi);
/* gml_encoder_gather_fn (core/gpt.h), ctx the reducer: all-gathers dx
 * (rows x row_bytes) and tokens over the group into buffers it allocates on
 * the backend given here (grow-only: the first call of a shape allocates,
 * so a recording of a later call allocates nothing). On GPUs the backend's
 * stream waits for the gathers; CPU ranks block. */
gml_status gml_dp_reducer_exchange_rows(void *ctx, const void *dx, const int32_t *tokens, size_t rows,
                                        size_t row_bytes, const void **dx_all, const int32_t **tokens_all,
                                        int *ways);
void gml_dp_reducer_set_exchange_backend(gml_dp_reducer *r, gml_backend *be);

#ifdef __cplusplus
}
#endif
#endif
