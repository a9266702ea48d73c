/* dp.h — data-parallel gradient reduction (ZeRO-0): every dp rank ends the
 * step with the sum over the dp group of the fp32 gradients.
 *
 * The flat gradient buffer (registry order, parallel/params.h) is cut into
 * buckets of bucket_elems; all buckets are started as asynchronous
 * all-reduces, then waited on. Today this runs after the last micro-step's
 * backward; starting each bucket as soon as backward has produced it
 * (overlap) is still to do.
 * Ownership: none (borrows the group and the buffer).
 */
#ifndef GML_DP_H
#define GML_DP_H

#include <stddef.h>

#include "comm/comm.h"
#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GML_DP_BUCKET_ELEMS ((size_t)1 << 22) /* 16 MiB of f32 per bucket */

/* grads (n f32, in the group's memory: host for MPI, device for NCCL) = sum
 * over the group; a no-op for a group of one. */
gml_status gml_dp_allreduce_grads(gml_comm *dp, float *grads, size_t n, size_t bucket_elems);

#ifdef __cplusplus
}
#endif
#endif
