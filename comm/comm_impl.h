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
    void *compute;  /* cudaStream_t of the backend (its kernels make and use the buffers) */
    void *stream;   /* cudaStream_t of the group's own: collectives run here, beside compute */
    int device;     /* CUDA ordinal of a device group */
};

struct gml_comm_req {
    MPI_Request req;          /* MPI group */
    MPI_Comm mpi;             /* MPI group: its communicator (the roll call after a timeout) */
    void *event;              /* device group: cudaEvent_t recorded after the collective */
    gml_comm *comm;
    char what[32], group[16]; /* for messages */
    int grank, gsize;
};

/* comm_mpi.c: the limit of every wait, parallel.timeout_s (gml_comm_set_timeout) */
double gml_comm_timeout_s(void);

/* comm_nccl.c (weak in comm_mpi.c: absent in builds without CUDA/NCCL) */
/* Each op: the group's stream waits for the work queued so far on compute,
 * runs the collective, records an event; with req the event goes to *req
 * (gml_comm_wait makes compute wait for it, the host never blocks), without
 * req compute waits for it at once. */
gml_status gml_nccl_init(gml_comm *c);
void gml_nccl_destroy(gml_comm *c);
gml_status gml_nccl_allreduce(gml_comm *c, float *buf, size_t n, gml_comm_req **req);
gml_status gml_nccl_reduce(gml_comm *c, const float *send, float *recv, size_t n, int root, gml_comm_req **req);
gml_status gml_nccl_reduce_scatter(gml_comm *c, const float *send, float *recv, size_t n, gml_comm_req **req);
gml_status gml_nccl_allgather(gml_comm *c, const void *send, void *recv, size_t bytes, gml_comm_req **req);
gml_status gml_nccl_broadcast(gml_comm *c, const void *send, void *recv, size_t bytes, int root,
                              gml_comm_req **req);
gml_status gml_nccl_allgather_strided(gml_comm *c, void *buf, size_t block_bytes, size_t stride_bytes,
                                      gml_comm_req **req);
/* send (to >= 0) and / or receive (from >= 0) in one NCCL group */
gml_status gml_nccl_p2p(gml_comm *c, const void *send, int to, void *recv, int from, size_t bytes,
                        gml_comm_req **req);
gml_status gml_nccl_wait(gml_comm_req *q); /* compute waits for q's event; frees the event, not q */
gml_status gml_nccl_watch(gml_comm *c, const char *what); /* see gml_comm_watch */

#endif
