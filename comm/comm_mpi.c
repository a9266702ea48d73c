/* comm_mpi.c — groups, and the MPI backend of comm.h (CPU ranks, host
 * buffers): MPI-3 non-blocking collectives on a communicator per group,
 * errors returned (not fatal) and turned into GML_ERR_COMM messages naming
 * the operation, group, rank and host. Device groups (gml_comm_device_group)
 * pass their collectives to comm_nccl.c.
 */
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm/comm_impl.h"
#include "kernels/cuda/backend_cuda.h"

#pragma weak gml_cuda_backend_stream /* absent in builds without CUDA */
#pragma weak gml_nccl_init
#pragma weak gml_nccl_destroy
#pragma weak gml_nccl_allreduce
#pragma weak gml_nccl_reduce
#pragma weak gml_nccl_reduce_scatter
#pragma weak gml_nccl_allgather
#pragma weak gml_nccl_broadcast
#pragma weak gml_nccl_allgather_strided
#pragma weak gml_nccl_p2p
#pragma weak gml_nccl_wait
#pragma weak gml_nccl_watch

static int g_started;     /* MPI_Init was ours */
static double g_timeout_s = 300.0;
static int g_rank, g_world = 1;
static char g_host[MPI_MAX_PROCESSOR_NAME + 1] = "localhost";
static char g_where[MPI_MAX_PROCESSOR_NAME + 64];

static gml_status mpi_fail(int rc, const char *what, const gml_comm *c, const char *file, int line) {
    char msg[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) len = snprintf(msg, sizeof msg, "MPI error %d", rc);
    msg[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING] = '\0';
    return gml_error_set_at(GML_ERR_COMM, file, line, "%s on group '%s' (rank %d of %d there; world rank %d on %s): %s",
                            what, c ? c->name : "world", c ? c->rank : g_rank, c ? c->size : g_world, g_rank, g_host,
                            msg);
}
#define MPI_TRY(call, what, c)                                                                  \
    do {                                                                                        \
        int rc_ = (call);                                                                       \
        if (rc_ != MPI_SUCCESS) return mpi_fail(rc_, (what), (c), __FILE__, __LINE__);          \
    } while (0)

gml_status gml_comm_init(int *rank, int *world, int *local_rank, const char **host) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided = 0;
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
            return gml_error_set(GML_ERR_COMM, "MPI_Init_thread failed (is this process started by mpirun/srun "
                                               "with a working MPI installation?)");
        g_started = 1;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_TRY(MPI_Comm_rank(MPI_COMM_WORLD, &g_rank), "MPI_Comm_rank", NULL);
    MPI_TRY(MPI_Comm_size(MPI_COMM_WORLD, &g_world), "MPI_Comm_size", NULL);
    int len = 0;
    if (MPI_Get_processor_name(g_host, &len) != MPI_SUCCESS) snprintf(g_host, sizeof g_host, "unknown-host");
    snprintf(g_where, sizeof g_where, "rank %d/%d on %s", g_rank, g_world, g_host);
    MPI_Comm node;
    MPI_TRY(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &node),
            "MPI_Comm_split_type(shared)", NULL);
    int lr = 0;
    MPI_Comm_rank(node, &lr);
    MPI_Comm_free(&node);
    if (rank) *rank = g_rank;
    if (world) *world = g_world;
    if (local_rank) *local_rank = lr;
    if (host) *host = g_host;
    return GML_OK;
}

void gml_comm_finalize(void) {
    int fin = 0;
    MPI_Finalized(&fin);
    if (g_started && !fin) MPI_Finalize();
}

void gml_comm_abort(int code) {
    int inited = 0, fin = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&fin);
    if (inited && !fin) MPI_Abort(MPI_COMM_WORLD, code);
}

const char *gml_comm_where(void) { return g_world > 1 ? g_where : ""; }

void gml_comm_set_timeout(double seconds) { g_timeout_s = seconds > 0 ? seconds : 300.0; }
double gml_comm_timeout_s(void) { return g_timeout_s; }

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define PROBE_TAG 0x676d6c  /* "gml": the after-timeout roll call, apart from any collective */
#define PROBE_WINDOW_S 3.0

/* After a wait on group `mpi` timed out: who is missing? Every member whose
 * wait timed out sends its rank to all others and listens PROBE_WINDOW_S for
 * theirs; the members not heard from died, hang, or are stuck elsewhere.
 * Writes them as "1, 3" into out ("none" if all answered). */
static void roll_call(MPI_Comm mpi, int rank, int size, char *out, size_t cap) {
    char *heard = calloc((size_t)size, 1);
    MPI_Request *sends = calloc((size_t)size, sizeof *sends);
    snprintf(out, cap, "unknown (out of host memory)");
    if (!heard || !sends) goto done;
    heard[rank] = 1;
    for (int r = 0; r < size; r++) {
        sends[r] = MPI_REQUEST_NULL;
        if (r != rank) (void)MPI_Isend(&rank, 1, MPI_INT, r, PROBE_TAG, mpi, &sends[r]);
    }
    int missing = size - 1;
    for (double t0 = mono_s(); missing > 0 && mono_s() - t0 < PROBE_WINDOW_S;) {
        int flag = 0;
        MPI_Status stt;
        if (MPI_Iprobe(MPI_ANY_SOURCE, PROBE_TAG, mpi, &flag, &stt) == MPI_SUCCESS && flag) {
            int who = -1;
            (void)MPI_Recv(&who, 1, MPI_INT, stt.MPI_SOURCE, PROBE_TAG, mpi, MPI_STATUS_IGNORE);
            if (stt.MPI_SOURCE >= 0 && stt.MPI_SOURCE < size && !heard[stt.MPI_SOURCE]) {
                heard[stt.MPI_SOURCE] = 1;
                missing--;
            }
        } else {
            struct timespec nap = {0, 1000000};
            nanosleep(&nap, NULL);
        }
    }
    for (int r = 0; r < size; r++)
        if (sends[r] != MPI_REQUEST_NULL) (void)MPI_Request_free(&sends[r]); /* the job is ending */
    size_t len = 0;
    out[0] = '\0';
    for (int r = 0; r < size && len + 16 < cap; r++)
        if (!heard[r]) len += (size_t)snprintf(out + len, cap - len, "%s%d", len ? ", " : "", r);
    if (!len) snprintf(out, cap, "none");
done:
    free(heard);
    free(sends);
}

/* MPI_Wait with a deadline: MPI_Test, spinning briefly, then napping 50 us
 * between tests. On timeout the request is left (the job is about to end)
 * and a roll call names the members that did not answer. */
static gml_status wait_deadline(MPI_Request *r, MPI_Comm mpi, const char *what, const char *group, int grank,
                                int gsize) {
    double t0 = mono_s();
    for (long spins = 0;; spins++) {
        int done = 0;
        int rc = MPI_Test(r, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) {
            char msg[MPI_MAX_ERROR_STRING + 1];
            int len = 0;
            if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) len = snprintf(msg, sizeof msg, "MPI error %d", rc);
            msg[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING] = '\0';
            return gml_error_set(GML_ERR_COMM, "%s on group '%s' (rank %d of %d there; world rank %d on %s): %s",
                                 what, group, grank, gsize, g_rank, g_host, msg);
        }
        if (done) return GML_OK;
        if (spins > 2000) {
            if (mono_s() - t0 > g_timeout_s) {
                char missing[256];
                roll_call(mpi, grank, gsize, missing, sizeof missing);
                return gml_error_set(GML_ERR_COMM, "%s on group '%s' did not complete within %.0f s (rank %d of %d "
                                     "there; world rank %d on %s); no answer from rank(s) %s of '%s' (dead, hung "
                                     "or stuck elsewhere) ---> HINT: parallel.timeout_s sets the limit",
                                     what, group, g_timeout_s, grank, gsize, g_rank, g_host, missing, group);
            }
            struct timespec nap = {0, 50000};
            nanosleep(&nap, NULL);
        }
    }
}

static gml_status wrap(MPI_Comm mpi, const char *name, gml_comm **out) {
    gml_comm *c = calloc(1, sizeof *c);
    if (!c) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    c->mpi = mpi;
    snprintf(c->name, sizeof c->name, "%s", name);
    MPI_Comm_set_errhandler(mpi, MPI_ERRORS_RETURN);
    MPI_Comm_rank(mpi, &c->rank);
    MPI_Comm_size(mpi, &c->size);
    *out = c;
    return GML_OK;
}

gml_status gml_comm_world(gml_comm **out) {
    MPI_Comm dup;
    MPI_TRY(MPI_Comm_dup(MPI_COMM_WORLD, &dup), "MPI_Comm_dup(world)", NULL);
    return wrap(dup, "world", out);
}

gml_status gml_comm_split(gml_comm *parent, int color, int key, const char *name, gml_comm **out) {
    MPI_Comm sub;
    MPI_TRY(MPI_Comm_split(parent->mpi, color, key, &sub), "MPI_Comm_split", parent);
    return wrap(sub, name, out);
}

gml_status gml_comm_device_group(gml_comm *host, gml_backend *be, gml_comm **out) {
    *out = NULL;
    if (!be || be->device_index < 0) return gml_comm_split(host, 0, host->rank, host->name, out); /* CPU: MPI */
    if (!gml_nccl_init || !gml_cuda_backend_stream)
        return gml_error_set(GML_ERR_UNSUPPORTED, "a device group over '%s' needs NCCL, which this build lacks",
                             host->name);
    MPI_Comm dup;
    MPI_TRY(MPI_Comm_dup(host->mpi, &dup), "MPI_Comm_dup", host);
    gml_comm *c = NULL;
    GML_CHECK(wrap(dup, host->name, &c));
    c->device = be->device_index;
    c->compute = gml_cuda_backend_stream(be);
    gml_status st = gml_nccl_init(c);
    if (st != GML_OK) {
        gml_comm_destroy(c);
        return st;
    }
    *out = c;
    return GML_OK;
}

void gml_comm_destroy(gml_comm *c) {
    if (!c) return;
    if (c->nccl && gml_nccl_destroy) gml_nccl_destroy(c);
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Comm_free(&c->mpi);
    free(c);
}

int gml_comm_rank(const gml_comm *c) { return c->rank; }
int gml_comm_size(const gml_comm *c) { return c->size; }

/* MPI counts are int: larger requests are refused rather than truncated. */
static gml_status count_ok(size_t n, const char *what, const gml_comm *c) {
    if (n > (size_t)INT_MAX)
        return gml_error_set(GML_ERR_UNSUPPORTED, "%s on group '%s': %zu elements exceed MPI's int count", what,
                             c->name, n);
    return GML_OK;
}

/* Wait for r now (req NULL) or hand it out as *req. */
static gml_status finish(gml_comm *c, MPI_Request r, const char *what, gml_comm_req **req) {
    if (!req) return wait_deadline(&r, c->mpi, what, c->name, c->rank, c->size);
    gml_comm_req *q = calloc(1, sizeof *q);
    if (!q) {
        MPI_Wait(&r, MPI_STATUS_IGNORE);
        return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    }
    q->req = r;
    q->mpi = c->mpi;
    snprintf(q->what, sizeof q->what, "%s", what);
    snprintf(q->group, sizeof q->group, "%s", c->name);
    q->grank = c->rank;
    q->gsize = c->size;
    *req = q;
    return GML_OK;
}

gml_status gml_comm_allreduce_sum_f32(gml_comm *c, float *buf, size_t n, gml_comm_req **req) {
    if (c->nccl) return gml_nccl_allreduce(c, buf, n, req);
    GML_CHECK(count_ok(n, "allreduce", c));
    MPI_Request r;
    MPI_TRY(MPI_Iallreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, c->mpi, &r), "allreduce", c);
    return finish(c, r, "allreduce", req);
}

/* `r` (the `role` of operation `what`: a peer, a root) is one of c's ranks. */
static gml_status rank_ok(const gml_comm *c, int r, const char *what, const char *role) {
    if (r < 0 || r >= c->size)
        return gml_error_set(GML_ERR_INVALID_ARG, "%s on group '%s': %s %d is not one of its %d rank(s)", what,
                             c->name, role, r, c->size);
    return GML_OK;
}

/* A rooted operation's root is in the group and has the buffer only it
 * needs (`which`: "send" or "receive"). */
static gml_status root_ok(const gml_comm *c, const char *op, int root, const void *buf, const char *which) {
    GML_CHECK(rank_ok(c, root, op, "root"));
    if (c->rank == root && !buf)
        return gml_error_set(GML_ERR_INVALID_ARG, "%s: root %d of group '%s' has no %s buffer", op, root, c->name,
                             which);
    return GML_OK;
}

gml_status gml_comm_reduce_sum_f32(gml_comm *c, const float *send, float *recv, size_t n, int root,
                                   gml_comm_req **req) {
    GML_CHECK(root_ok(c, "reduce", root, recv, "receive"));
    if (c->nccl) return gml_nccl_reduce(c, send, recv, n, root, req);
    GML_CHECK(count_ok(n, "reduce", c));
    MPI_Request r;
    const void *s = c->rank == root && send == recv ? MPI_IN_PLACE : (const void *)send;
    MPI_TRY(MPI_Ireduce(s, c->rank == root ? recv : NULL, (int)n, MPI_FLOAT, MPI_SUM, root, c->mpi, &r), "reduce",
            c);
    return finish(c, r, "reduce", req);
}

gml_status gml_comm_reduce_scatter_sum_f32(gml_comm *c, const float *send, float *recv, size_t recv_n,
                                           gml_comm_req **req) {
    if (c->nccl) return gml_nccl_reduce_scatter(c, send, recv, recv_n, req);
    GML_CHECK(count_ok(recv_n, "reduce_scatter", c));
    MPI_Request r;
    MPI_TRY(MPI_Ireduce_scatter_block(send, recv, (int)recv_n, MPI_FLOAT, MPI_SUM, c->mpi, &r), "reduce_scatter", c);
    return finish(c, r, "reduce_scatter", req);
}

gml_status gml_comm_allgather_f32(gml_comm *c, const float *send, float *recv, size_t send_n, gml_comm_req **req) {
    if (c->nccl) return gml_nccl_allgather(c, send, recv, send_n * 4, req);
    GML_CHECK(count_ok(send_n, "allgather", c));
    MPI_Request r;
    /* send at this rank's block of recv: in place */
    const void *s = send == recv + (size_t)c->rank * send_n ? MPI_IN_PLACE : (const void *)send;
    MPI_TRY(MPI_Iallgather(s, (int)send_n, MPI_FLOAT, recv, (int)send_n, MPI_FLOAT, c->mpi, &r), "allgather", c);
    return finish(c, r, "allgather", req);
}

gml_status gml_comm_allgather_bytes(gml_comm *c, const void *send, void *recv, size_t send_bytes, gml_comm_req **req) {
    if (c->nccl) return gml_nccl_allgather(c, send, recv, send_bytes, req);
    GML_CHECK(count_ok(send_bytes, "allgather", c));
    MPI_Request r;
    const void *s = send == (const char *)recv + (size_t)c->rank * send_bytes ? MPI_IN_PLACE : send;
    MPI_TRY(MPI_Iallgather(s, (int)send_bytes, MPI_BYTE, recv, (int)send_bytes, MPI_BYTE, c->mpi, &r), "allgather",
            c);
    return finish(c, r, "allgather", req);
}

gml_status gml_comm_allgather_strided(gml_comm *c, void *buf, size_t block_bytes, size_t stride_bytes,
                                      gml_comm_req **req) {
    if (c->nccl) return gml_nccl_allgather_strided(c, buf, block_bytes, stride_bytes, req);
    if (req) *req = NULL;
    GML_CHECK(count_ok(block_bytes, "allgather_strided", c));
    for (int r = 0; r < c->size; r++) { /* in rank order on every rank */
        MPI_Request q;
        MPI_TRY(MPI_Ibcast((char *)buf + (size_t)r * stride_bytes, (int)block_bytes, MPI_BYTE, r, c->mpi, &q),
                "allgather_strided", c);
        GML_CHECK(finish(c, q, "allgather_strided", NULL));
    }
    return GML_OK;
}

gml_status gml_comm_broadcast(gml_comm *c, void *buf, size_t bytes, int root, gml_comm_req **req) {
    return gml_comm_broadcast_from(c, buf, buf, bytes, root, req);
}

gml_status gml_comm_broadcast_from(gml_comm *c, const void *send, void *recv, size_t bytes, int root,
                                   gml_comm_req **req) {
    GML_CHECK(root_ok(c, "broadcast", root, send, "send"));
    if (c->nccl) return gml_nccl_broadcast(c, send, recv, bytes, root, req);
    GML_CHECK(count_ok(bytes, "broadcast", c));
    if (c->rank == root && send != recv) memcpy(recv, send, bytes); /* MPI groups move host memory */
    MPI_Request r;
    MPI_TRY(MPI_Ibcast(recv, (int)bytes, MPI_BYTE, root, c->mpi, &r), "broadcast", c);
    return finish(c, r, "broadcast", req);
}

gml_status gml_comm_barrier(gml_comm *c) {
    MPI_Request r;
    MPI_TRY(MPI_Ibarrier(c->mpi, &r), "barrier", c);
    return wait_deadline(&r, c->mpi, "barrier", c->name, c->rank, c->size);
}

#define P2P_TAG 7 /* point to point only; collectives have their own matching */

gml_status gml_comm_send(gml_comm *c, const void *buf, size_t bytes, int peer, gml_comm_req **req) {
    GML_CHECK(rank_ok(c, peer, "send", "peer"));
    if (c->nccl) return gml_nccl_p2p(c, buf, peer, NULL, -1, bytes, req);
    GML_CHECK(count_ok(bytes, "send", c));
    MPI_Request r;
    MPI_TRY(MPI_Isend(buf, (int)bytes, MPI_BYTE, peer, P2P_TAG, c->mpi, &r), "send", c);
    return finish(c, r, "send", req);
}

gml_status gml_comm_recv(gml_comm *c, void *buf, size_t bytes, int peer, gml_comm_req **req) {
    GML_CHECK(rank_ok(c, peer, "recv", "peer"));
    if (c->nccl) return gml_nccl_p2p(c, NULL, -1, buf, peer, bytes, req);
    GML_CHECK(count_ok(bytes, "recv", c));
    MPI_Request r;
    MPI_TRY(MPI_Irecv(buf, (int)bytes, MPI_BYTE, peer, P2P_TAG, c->mpi, &r), "recv", c);
    return finish(c, r, "recv", req);
}

gml_status gml_comm_sendrecv(gml_comm *c, const void *send, int to, void *recv, int from, size_t bytes,
                             gml_comm_req **req) {
    GML_CHECK(rank_ok(c, to, "sendrecv", "peer"));
    GML_CHECK(rank_ok(c, from, "sendrecv", "peer"));
    if (c->nccl) return gml_nccl_p2p(c, send, to, recv, from, bytes, req);
    if (req) *req = NULL;
    gml_comm_req *rq = NULL;
    GML_CHECK(gml_comm_recv(c, recv, bytes, from, &rq)); /* posted first: a send to oneself finds it */
    gml_status st = gml_comm_send(c, send, bytes, to, NULL);
    gml_status w = gml_comm_wait(&rq);
    return st != GML_OK ? st : w;
}

gml_status gml_comm_watch(gml_comm *c, const char *what) {
    return c->nccl ? gml_nccl_watch(c, what) : GML_OK;
}

gml_status gml_comm_wait(gml_comm_req **req) {
    if (!req || !*req) return GML_OK;
    gml_comm_req *q = *req;
    *req = NULL;
    gml_status st = q->event && gml_nccl_wait ? gml_nccl_wait(q)
                                             : wait_deadline(&q->req, q->mpi, q->what, q->group, q->grank, q->gsize);
    free(q);
    return st;
}
