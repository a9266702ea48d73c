/* comm.h — the one collective API of gml-dist (DESIGN.md: comm/).
 *
 * A gml_comm is a group of ranks (the world, or an axis of the mesh made by
 * gml_comm_split). Collectives work on buffers of the group's kind: host
 * memory for an MPI group (gml_comm_world / gml_comm_split), device memory
 * for a device group (gml_comm_device_group: NCCL on the CUDA backend's
 * stream). On an MPI group every collective can run asynchronously: pass a
 * gml_comm_req ** and wait on it with gml_comm_wait (NULL blocks until done);
 * the buffers must stay untouched until the wait returns. On a device group
 * a collective runs on the group's own stream after the work already queued
 * on the backend's stream, overlapping what is queued there later;
 * gml_comm_wait (or, with req NULL, the call itself) makes the backend's
 * stream wait for it. The host never blocks on a device group.
 * Results are deterministic for a fixed group size and count (same
 * algorithm, same summation order), which bit-identical reruns rely on.
 *
 * Errors carry the operation, the group, this rank and host
 * (GML_ERR_COMM). Ownership: gml_comm_world / gml_comm_split return groups
 * the caller frees with gml_comm_destroy (collectively, all members);
 * requests are freed by gml_comm_wait.
 * Not for: deciding who talks to whom (parallel/mesh.h builds the groups).
 */
#ifndef GML_COMM_H
#define GML_COMM_H

#include <stddef.h>

#include "core/backend.h"
#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gml_comm gml_comm;
typedef struct gml_comm_req gml_comm_req;

/* Start MPI if nobody has (thread level FUNNELED; the launcher calls it once,
 * before anything else talks to other ranks) and tell this process's rank,
 * world size, node-local rank and host name (any may be NULL). */
gml_status gml_comm_init(int *rank, int *world, int *local_rank, const char **host);
/* Finalize MPI if gml_comm_init started it. */
void gml_comm_finalize(void);
/* End every rank of the job now with `code` (an error on one rank must not
 * leave the others waiting in a collective). */
void gml_comm_abort(int code);
/* Every wait on an MPI collective gives up after `seconds` with
 * GML_ERR_COMM naming the operation and group ("a peer rank died or
 * hangs"); the caller then ends the job (gml_comm_abort). Default 300 s. */
void gml_comm_set_timeout(double seconds);

/* "rank R/W on HOST" for messages; "" when the world has one rank. */
const char *gml_comm_where(void);

/* The world as a CPU (MPI) group. */
gml_status gml_comm_world(gml_comm **out);
/* Split `parent` into groups of equal color, ordered by key (MPI_Comm_split
 * semantics); name (e.g. "dp") appears in error messages. Collective. */
gml_status gml_comm_split(gml_comm *parent, int color, int key, const char *name, gml_comm **out);
/* A group over the same ranks as `host` for buffers of backend `be`: NCCL on
 * be's stream for a CUDA backend (GML_ERR_UNSUPPORTED in builds without
 * NCCL), an MPI group otherwise. Collective over `host`. */
gml_status gml_comm_device_group(gml_comm *host, gml_backend *be, gml_comm **out);
void gml_comm_destroy(gml_comm *c);
int gml_comm_rank(const gml_comm *c);
int gml_comm_size(const gml_comm *c);

/* buf[i] = sum over the group of buf[i] (f32, in place). */
gml_status gml_comm_allreduce_sum_f32(gml_comm *c, float *buf, size_t n, gml_comm_req **req);
/* recv[i] on `root` = sum over the group of send[i] (f32). recv matters on
 * root only (elsewhere it may be NULL); recv == send is in place. The other
 * ranks' send is left as it was (MPI) or unspecified (NCCL in place). */
gml_status gml_comm_reduce_sum_f32(gml_comm *c, const float *send, float *recv, size_t n, int root,
                                   gml_comm_req **req);
/* recv (recv_n) = this rank's block of the sum of every rank's send
 * (size * recv_n); rank r gets elements [r*recv_n, (r+1)*recv_n). */
gml_status gml_comm_reduce_scatter_sum_f32(gml_comm *c, const float *send, float *recv, size_t recv_n,
                                           gml_comm_req **req);
/* recv (size * send_n) = every rank's send (send_n), in rank order. send may
 * be this rank's own block of recv (recv + rank * send_n): in place. */
gml_status gml_comm_allgather_f32(gml_comm *c, const float *send, float *recv, size_t send_n, gml_comm_req **req);
/* The same for blocks of send_bytes bytes of any type (e.g. bf16 weights). */
gml_status gml_comm_allgather_bytes(gml_comm *c, const void *send, void *recv, size_t send_bytes, gml_comm_req **req);
/* Every rank's block of block_bytes at buf + rank * stride_bytes to
 * everyone (an all-gather whose blocks need not be adjacent: a piece of each
 * rank's shard). NCCL: one broadcast per rank, grouped (they run together,
 * like an all-gather). MPI: one broadcast per rank; done when the call
 * returns (*req, if given, comes back NULL). */
gml_status gml_comm_allgather_strided(gml_comm *c, void *buf, size_t block_bytes, size_t stride_bytes,
                                      gml_comm_req **req);
/* bytes of buf from `root` to everyone. */
gml_status gml_comm_broadcast(gml_comm *c, void *buf, size_t bytes, int root, gml_comm_req **req);
/* The same out of place: root's send into every rank's recv, root's own
 * included (send matters on root only and may be NULL elsewhere; it must
 * not overlap recv unless it equals it). */
gml_status gml_comm_broadcast_from(gml_comm *c, const void *send, void *recv, size_t bytes, int root,
                                   gml_comm_req **req);
gml_status gml_comm_barrier(gml_comm *c);

/* Point to point (pipeline stages pass activations to their neighbours).
 * Ranks are the group's. send: bytes of buf to `peer`; recv: bytes into buf
 * from `peer`; each send is matched by the peer's recv of the same size, in
 * the order they are posted. MPI group: asynchronous with req, like the
 * collectives. Device group: NCCL on the group's stream; two ranks that
 * both send to each other before receiving would wait for each other
 * forever: exchanges go through sendrecv. sendrecv: `bytes` of `send` to
 * `to` and of `recv` from `from` at once (one NCCL group; MPI: done when
 * the call returns, *req, if given, comes back NULL). A peer outside the
 * group is GML_ERR_INVALID_ARG. */
gml_status gml_comm_send(gml_comm *c, const void *buf, size_t bytes, int peer, gml_comm_req **req);
gml_status gml_comm_recv(gml_comm *c, void *buf, size_t bytes, int peer, gml_comm_req **req);
gml_status gml_comm_sendrecv(gml_comm *c, const void *send, int to, void *recv, int from, size_t bytes,
                             gml_comm_req **req);
/* Device group: watch the work queued so far on the backend's stream like
 * a collective (the process ends after parallel.timeout_s if it does not
 * complete, naming `what`): for collectives inside a recording (CUDA graph)
 * that was launched there, which cannot be watched one by one. Collectives
 * started while the backend's stream is being recorded are not watched
 * themselves. MPI group: a no-op. */
gml_status gml_comm_watch(gml_comm *c, const char *what);
/* Block until *req is done, then free it and set *req = NULL (NULL: no-op). */
gml_status gml_comm_wait(gml_comm_req **req);

#ifdef __cplusplus
}
#endif
#endif
