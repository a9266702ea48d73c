/* comm_nccl.c — the NCCL backend of comm.h: device groups of GPU ranks,
 * bootstrapped over their MPI group (rank 0's ncclUniqueId broadcast).
 * Each collective runs on the group's own stream after an event handoff from
 * the backend's compute stream, so it overlaps whatever compute is queued
 * after it; gml_comm_wait (or, without a request, the op itself) makes the
 * compute stream wait for its completion event. The host never blocks.
 * Errors name the operation, group, rank, host and NCCL's reason.
 *
 * Watchdog: the host never waits on NCCL, so a collective that never
 * completes (a peer died or hangs) would stall the next host read of a
 * device value forever. Every collective leaves a second event with a
 * watchdog thread, which polls the events; one not done after
 * parallel.timeout_s (gml_comm_timeout_s) gets a message naming the
 * operation, group, sequence number, rank and host on stderr, and the
 * process exits with code 1, which makes mpirun / srun end the job.
 * (The thread cannot make MPI calls at thread level FUNNELED, so unlike
 * the MPI path it does not name the peer that is missing.)
 * Built only with the CUDA backend and NCCL (see CMakeLists.txt).
 */
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "comm/comm_impl.h"

/* ------------------------------------------------------------ watchdog */

#define WATCH_MAX 4096 /* collectives in flight at once; beyond it new ones go unwatched */

typedef struct {
    cudaEvent_t ev;
    double t0;
    unsigned long long seq;
    char what[32], group[16];
    int rank, size;
} watch;

static struct {
    pthread_mutex_t mu;
    pthread_once_t once;
    int started, device;
    watch w[WATCH_MAX];
    int n;
    unsigned long long seq;
} g_wd = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_ONCE_INIT, 0, 0, {{0}}, 0, 0};

static double wd_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *wd_main(void *arg) {
    (void)arg;
    if (cudaSetDevice(g_wd.device) != cudaSuccess) return NULL;
    for (;;) {
        struct timespec nap = {0, 100 * 1000 * 1000};
        nanosleep(&nap, NULL);
        double limit = gml_comm_timeout_s(), now = wd_now();
        pthread_mutex_lock(&g_wd.mu);
        for (int i = 0; i < g_wd.n;) {
            watch *w = &g_wd.w[i];
            cudaError_t q = cudaEventQuery(w->ev);
            if (q == cudaErrorNotReady && now - w->t0 <= limit) {
                i++;
                continue;
            }
            if (q == cudaErrorNotReady) {
                const char *where = gml_comm_where();
                fprintf(stderr, "gml-dist: %s%serror: NCCL %s #%llu on group '%s' (rank %d of %d there) did not "
                                "complete within %.0f s: a peer rank died or hangs ---> HINT: parallel.timeout_s "
                                "sets the limit\n",
                        where, where[0] ? ": " : "", w->what, w->seq, w->group, w->rank, w->size, limit);
                fflush(stdout);
                fflush(stderr);
                _exit(1); /* MPI_Abort is not ours to call from this thread; mpirun ends the job */
            }
            (void)cudaEventDestroy(w->ev); /* done (or failed: the op's own error path reports it) */
            g_wd.w[i] = g_wd.w[--g_wd.n];
        }
        pthread_mutex_unlock(&g_wd.mu);
    }
    return NULL;
}

static void wd_start(void) {
    pthread_t t;
    pthread_attr_t a;
    if (pthread_attr_init(&a) != 0) return;
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &a, wd_main, NULL) == 0) g_wd.started = 1;
    pthread_attr_destroy(&a);
}

/* Watch the work just queued on `stream` (a collective on c->stream, or a
 * replayed recording on the compute stream). Best effort: a failure here
 * leaves the op unwatched, never fails it. Not while `stream` is being
 * recorded: an event recorded there is part of the recording, not one the
 * host can poll (the replay is watched instead: gml_comm_watch). */
static void wd_watch(gml_comm *c, void *stream, const char *what) {
    enum cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing((cudaStream_t)stream, &cap) != cudaSuccess || cap != cudaStreamCaptureStatusNone) return;
    cudaEvent_t ev;
    if (cudaEventCreateWithFlags(&ev, cudaEventDisableTiming) != cudaSuccess) return;
    if (cudaEventRecord(ev, (cudaStream_t)stream) != cudaSuccess) {
        cudaEventDestroy(ev);
        return;
    }
    pthread_mutex_lock(&g_wd.mu);
    g_wd.device = c->device;
    g_wd.seq++;
    if (g_wd.n < WATCH_MAX) {
        watch *w = &g_wd.w[g_wd.n++];
        w->ev = ev;
        w->t0 = wd_now();
        w->seq = g_wd.seq;
        snprintf(w->what, sizeof w->what, "%s", what);
        snprintf(w->group, sizeof w->group, "%s", c->name);
        w->rank = c->rank;
        w->size = c->size;
        ev = NULL;
    }
    pthread_mutex_unlock(&g_wd.mu);
    if (ev) cudaEventDestroy(ev);
    pthread_once(&g_wd.once, wd_start);
}

static gml_status nccl_fail(ncclResult_t r, const char *what, const gml_comm *c, const char *file, int line) {
    return gml_error_set_at(GML_ERR_COMM, file, line, "NCCL %s on group '%s' (rank %d of %d, %s): %s", what,
                            c->name, c->rank, c->size, gml_comm_where()[0] ? gml_comm_where() : "single rank",
                            ncclGetErrorString(r));
}
#define NCCL_TRY(call, what, c)                                                                      \
    do {                                                                                             \
        ncclResult_t r_ = (call);                                                                    \
        if (r_ != ncclSuccess) return nccl_fail(r_, (what), (c), __FILE__, __LINE__);               \
    } while (0)
#define CUDA_TRY(call, what)                                                                         \
    do {                                                                                             \
        cudaError_t e_ = (call);                                                                     \
        if (e_ != cudaSuccess)                                                                       \
            return gml_error_set(GML_ERR_BACKEND, "%s failed: %s", (what), cudaGetErrorString(e_)); \
    } while (0)

gml_status gml_nccl_init(gml_comm *c) {
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (c->rank == 0) NCCL_TRY(ncclGetUniqueId(&id), "ncclGetUniqueId", c);
    if (MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, c->mpi) != MPI_SUCCESS)
        return gml_error_set(GML_ERR_COMM, "broadcasting the NCCL id over group '%s' failed", c->name);
    CUDA_TRY(cudaSetDevice(c->device), "cudaSetDevice");
    /* the highest priority: a bucket's all-reduce gets SMs as soon as it is
     * queued instead of after the backward kernels already waiting */
    int lo = 0, hi = 0;
    CUDA_TRY(cudaDeviceGetStreamPriorityRange(&lo, &hi), "cudaDeviceGetStreamPriorityRange");
    const char *np = getenv("GML_NCCL_STREAM_PRIORITY"); /* "0": normal priority (for measurements) */
    cudaStream_t s;
    CUDA_TRY(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, np && !strcmp(np, "0") ? lo : hi),
             "cudaStreamCreate (comm)");
    c->stream = s;
    ncclComm_t comm;
    NCCL_TRY(ncclCommInitRank(&comm, c->size, id, c->rank), "ncclCommInitRank", c);
    c->nccl = comm;
    return GML_OK;
}

void gml_nccl_destroy(gml_comm *c) {
    if (c->nccl) ncclCommDestroy((ncclComm_t)c->nccl);
    if (c->stream) cudaStreamDestroy((cudaStream_t)c->stream);
    c->nccl = NULL;
    c->stream = NULL;
}

/* compute -> comm stream handoff before a collective */
static gml_status begin(gml_comm *c) {
    cudaEvent_t ev;
    CUDA_TRY(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "cudaEventCreate");
    cudaError_t e = cudaEventRecord(ev, (cudaStream_t)c->compute);
    if (e == cudaSuccess) e = cudaStreamWaitEvent((cudaStream_t)c->stream, ev, 0);
    cudaEventDestroy(ev); /* released once it has fired */
    CUDA_TRY(e, "stream handoff before a collective");
    return GML_OK;
}

/* completion event after it: to *req, or waited for by compute now */
static gml_status end(gml_comm *c, const char *what, gml_comm_req **req) {
    wd_watch(c, c->stream, what);
    cudaEvent_t ev;
    CUDA_TRY(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "cudaEventCreate");
    CUDA_TRY(cudaEventRecord(ev, (cudaStream_t)c->stream), "cudaEventRecord after a collective");
    if (!req) {
        cudaError_t e = cudaStreamWaitEvent((cudaStream_t)c->compute, ev, 0);
        cudaEventDestroy(ev);
        CUDA_TRY(e, "cudaStreamWaitEvent after a collective");
        return GML_OK;
    }
    gml_comm_req *q = calloc(1, sizeof *q);
    if (!q) {
        cudaStreamWaitEvent((cudaStream_t)c->compute, ev, 0);
        cudaEventDestroy(ev);
        return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    }
    q->event = ev;
    q->comm = c;
    snprintf(q->what, sizeof q->what, "%s", what);
    snprintf(q->group, sizeof q->group, "%s", c->name);
    *req = q;
    return GML_OK;
}

gml_status gml_nccl_wait(gml_comm_req *q) {
    cudaError_t e = cudaStreamWaitEvent((cudaStream_t)q->comm->compute, (cudaEvent_t)q->event, 0);
    cudaEventDestroy((cudaEvent_t)q->event);
    q->event = NULL; /* gml_comm_wait frees q */
    CUDA_TRY(e, "cudaStreamWaitEvent for a collective");
    return GML_OK;
}

gml_status gml_nccl_watch(gml_comm *c, const char *what) {
    wd_watch(c, c->compute, what);
    return GML_OK;
}

gml_status gml_nccl_allreduce(gml_comm *c, float *buf, size_t n, gml_comm_req **req) {
    GML_CHECK(begin(c));
    NCCL_TRY(ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, (ncclComm_t)c->nccl, (cudaStream_t)c->stream),
             "allreduce", c);
    return end(c, "allreduce", req);
}

gml_status gml_nccl_reduce(gml_comm *c, const float *send, float *recv, size_t n, int root, gml_comm_req **req) {
    GML_CHECK(begin(c));
    /* recv is used on root only; NCCL wants a pointer everywhere */
    void *r = c->rank == root ? (void *)recv : (void *)send;
    NCCL_TRY(ncclReduce(send, r, n, ncclFloat32, ncclSum, root, (ncclComm_t)c->nccl, (cudaStream_t)c->stream),
             "reduce", c);
    return end(c, "reduce", req);
}

gml_status gml_nccl_reduce_scatter(gml_comm *c, const float *send, float *recv, size_t n, gml_comm_req **req) {
    GML_CHECK(begin(c));
    NCCL_TRY(ncclReduceScatter(send, recv, n, ncclFloat32, ncclSum, (ncclComm_t)c->nccl, (cudaStream_t)c->stream),
             "reduce_scatter", c);
    return end(c, "reduce_scatter", req);
}

gml_status gml_nccl_allgather(gml_comm *c, const void *send, void *recv, size_t bytes, gml_comm_req **req) {
    GML_CHECK(begin(c));
    /* NCCL treats send == recv + rank * bytes as in place */
    NCCL_TRY(ncclAllGather(send, recv, bytes, ncclUint8, (ncclComm_t)c->nccl, (cudaStream_t)c->stream), "allgather",
             c);
    return end(c, "allgather", req);
}

gml_status gml_nccl_broadcast(gml_comm *c, const void *send, void *recv, size_t bytes, int root,
                              gml_comm_req **req) {
    GML_CHECK(begin(c));
    /* send is used on root only; NCCL wants a pointer everywhere */
    const void *s = c->rank == root ? send : recv;
    NCCL_TRY(ncclBroadcast(s, recv, bytes, ncclUint8, root, (ncclComm_t)c->nccl, (cudaStream_t)c->stream),
             "broadcast", c);
    return end(c, "broadcast", req);
}

gml_status gml_nccl_allgather_strided(gml_comm *c, void *buf, size_t block_bytes, size_t stride_bytes,
                                      gml_comm_req **req) {
    GML_CHECK(begin(c));
    NCCL_TRY(ncclGroupStart(), "allgather_strided (group start)", c);
    for (int r = 0; r < c->size; r++) {
        char *p = (char *)buf + (size_t)r * stride_bytes;
        ncclResult_t e = ncclBroadcast(p, p, block_bytes, ncclUint8, r, (ncclComm_t)c->nccl, (cudaStream_t)c->stream);
        if (e != ncclSuccess) {
            (void)ncclGroupEnd();
            return nccl_fail(e, "allgather_strided (broadcast)", c, __FILE__, __LINE__);
        }
    }
    NCCL_TRY(ncclGroupEnd(), "allgather_strided", c);
    return end(c, "allgather_strided", req);
}

gml_status gml_nccl_p2p(gml_comm *c, const void *send, int to, void *recv, int from, size_t bytes,
                        gml_comm_req **req) {
    const char *what = to >= 0 && from >= 0 ? "sendrecv" : to >= 0 ? "send" : "recv";
    GML_CHECK(begin(c));
    NCCL_TRY(ncclGroupStart(), what, c);
    ncclResult_t e = ncclSuccess;
    if (to >= 0) e = ncclSend(send, bytes, ncclUint8, to, (ncclComm_t)c->nccl, (cudaStream_t)c->stream);
    if (e == ncclSuccess && from >= 0)
        e = ncclRecv(recv, bytes, ncclUint8, from, (ncclComm_t)c->nccl, (cudaStream_t)c->stream);
    ncclResult_t g = ncclGroupEnd();
    if (e == ncclSuccess) e = g;
    if (e != ncclSuccess) return nccl_fail(e, what, c, __FILE__, __LINE__);
    return end(c, what, req);
}
