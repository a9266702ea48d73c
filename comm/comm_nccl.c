/* comm_nccl.c — the NCCL backend of comm.h: device groups of GPU ranks,
 * bootstrapped over their MPI group (rank 0's ncclUniqueId broadcast), with
 * every collective enqueued on the backend's stream, so it is ordered after
 * the kernels that wrote its input and before those that read its output;
 * the host never waits for it (requests complete at once). Errors name the
 * operation, group, rank, host and NCCL's reason.
 * Built only with the CUDA backend (CMake adds it with NCCL).
 */
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <stdio.h>
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

gml_status gml_nccl_init(gml_comm *c) {
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (c->rank == 0) NCCL_TRY(ncclGetUniqueId(&id), "ncclGetUniqueId", c);
    if (MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, c->mpi) != MPI_SUCCESS)
        return gml_error_set(GML_ERR_COMM, "broadcasting the NCCL id over group '%s' failed", c->name);
    if (cudaSetDevice(c->device) != cudaSuccess)
        return gml_error_set(GML_ERR_BACKEND, "cudaSetDevice(%d) failed", c->device);
    ncclComm_t comm;
    NCCL_TRY(ncclCommInitRank(&comm, c->size, id, c->rank), "ncclCommInitRank", c);
    c->nccl = comm;
    return GML_OK;
}

void gml_nccl_destroy(gml_comm *c) {
    if (c->nccl) ncclCommDestroy((ncclComm_t)c->nccl);
    c->nccl = NULL;
}

gml_status gml_nccl_allreduce(gml_comm *c, float *buf, size_t n) {
    NCCL_TRY(ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, (ncclComm_t)c->nccl, (cudaStream_t)c->stream),
             "allreduce", c);
    return GML_OK;
}

gml_status gml_nccl_reduce_scatter(gml_comm *c, const float *send, float *recv, size_t n) {
    NCCL_TRY(ncclReduceScatter(send, recv, n, ncclFloat32, ncclSum, (ncclComm_t)c->nccl, (cudaStream_t)c->stream),
             "reduce_scatter", c);
    return GML_OK;
}

gml_status gml_nccl_allgather(gml_comm *c, const float *send, float *recv, size_t n) {
    /* NCCL treats send == recv + rank * n as in place */
    NCCL_TRY(ncclAllGather(send, recv, n, ncclFloat32, (ncclComm_t)c->nccl, (cudaStream_t)c->stream), "allgather",
             c);
    return GML_OK;
}

gml_status gml_nccl_broadcast(gml_comm *c, void *buf, size_t bytes, int root) {
    NCCL_TRY(ncclBroadcast(buf, buf, bytes, ncclUint8, root, (ncclComm_t)c->nccl, (cudaStream_t)c->stream),
             "broadcast", c);
    return GML_OK;
}
