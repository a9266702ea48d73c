/* comm_impl.h — inside comm/: the group struct the backends share and the
 * NCCL backend's entry points. comm_mpi.c owns groups and the MPI path and
 * hands device groups to comm_nccl.c (present only in CUDA builds; weak
 * references keep CPU-only builds linking). Not a public header. */
#ifndef GML_COMM_IMPL_H
#define GML_COMM_IMPL_H

#include <mpi.h>

#include "comm/comm.h"

struct gml_comm {
    MPI_Comm mpi;   /* host group; for a device group: the group it was made from (bootstrap) */
    char name[16];
    int rank, size;
    void *nccl;     /* ncclComm_t for a device group, else NULL */
    void *stream;   /* cudaStream_t the device group's collectives run on */
    int device;     /* CUDA ordinal of a device group */
};

/* comm_nccl.c (weak in comm_mpi.c: absent in builds without CUDA/NCCL) */
gml_status gml_nccl_init(gml_comm *c);
void gml_nccl_destroy(gml_comm *c);
gml_status gml_nccl_allreduce(gml_comm *c, float *buf, size_t n);
gml_status gml_nccl_reduce_scatter(gml_comm *c, const float *send, float *recv, size_t n);
gml_status gml_nccl_allgather(gml_comm *c, const float *send, float *recv, size_t n);
gml_status gml_nccl_broadcast(gml_comm *c, void *buf, size_t bytes, int root);

#endif
