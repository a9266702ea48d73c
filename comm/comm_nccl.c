/* comm_nccl.c — the NCCL backend of comm.h: device groups of GPU ranks,
 * bootstrapped over their MPI group (rank 0's ncclUniqueId broadcast).
 * Each collective runs on the group's own stream after an event handoff from
 * the backend's compute stream, so it overlaps whatever compute is queued
 * after it; gml_comm_wait (or, without a request, the op itself) makes the
 * compute stream wait for its completion event. The host never blocks.
 * Errors name the operation, group, rank, host and NCCL's reason.
 * Built only with the CUDA backend and NCCL (see CMakeLists.txt).
 */
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm_impl.h"

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
    cudaStream_t s;
    CUDA_TRY(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate (comm)");
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

gml_status gml_nccl_allreduce(gml_comm *c, float *buf, size_t n, gml_comm_req **req) {
    GML_CHECK(begin(c));
    NCCL_TRY(ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, (ncclComm_t)c->nccl, (cudaStream_t)c->stream),
             "allreduce", c);
    return end(c, "allreduce", req);
}

gml_status gml_nccl_reduce_scatter(gml_comm *c, const float *send, float *recv, size_t n, gml_comm_req **req) {
    GML_CHECK(begin(c));
    NCCL_TRY(ncclReduceScatter(send, recv, n, ncclFloat32, ncclSum, (ncclComm_t)c->nccl, (cudaStream_t)c->stream),
             "reduce_scatter", c);
    return end(c, "reduce_scatter", req);
}

gml_status gml_nccl_allgather(gml_comm *c, const float *send, float *recv, size_t n, gml_comm_req **req) {
    GML_CHECK(begin(c));
    /* NCCL treats send == recv + rank * n as in place */
    NCCL_TRY(ncclAllGather(send, recv, n, ncclFloat32, (ncclComm_t)c->nccl, (cudaStream_t)c->stream), "allgather",
             c);
    return end(c, "allgather", req);
}

gml_status gml_nccl_broadcast(gml_comm *c, void *buf, size_t bytes, int root, gml_comm_req **req) {
    GML_CHECK(begin(c));
    NCCL_TRY(ncclBroadcast(buf, buf, bytes, ncclUint8, root, (ncclComm_t)c->nccl, (cudaStream_t)c->stream),
             "broadcast", c);
    return end(c, "broadcast", req);
}
