/* graph.cu — recorded launches (core/backend.h graph_*): stream capture of
 * the backend's stream into a CUDA graph, instantiated once and replayed as
 * one launch. Used for a training micro-step (core/gpt.c), whose several
 * hundred kernel launches otherwise leave the GPU idle between short kernels.
 *
 * A recording keeps device pointers and kernel arguments as they were; the
 * caller records only work whose buffers are fixed (the model's arenas, the
 * cuBLASLt workspace). The one buffer that can move is the grow-only scratch
 * (gml_cuda_scratch): each recording notes its generation and refuses to run
 * once it has changed (*stale).
 */
#include <cuda_runtime.h>
#include <stdlib.h>

#include "kernels/cuda/cuda_common.cuh"

typedef struct {
    cudaGraphExec_t exec;
    uint64_t scratch_gen; /* ctx->scratch_gen when recorded */
} cuda_graph;

gml_status gml_cuda_graph_begin(gml_backend *be) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    /* thread-local: other threads' CUDA calls (NCCL's proxy, a writer) are
     * not affected by this thread's recording */
    CUDA_CHECK(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
    return GML_OK;
}

gml_status gml_cuda_graph_end(gml_backend *be, void **graph) {
    *graph = NULL;
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    if (e != cudaSuccess || !g) {
        (void)cudaGetLastError(); /* an invalidated capture: the stream is usable again */
        if (g) (void)cudaGraphDestroy(g);
        return gml_error_set(GML_ERR_BACKEND, "recording launches on device %d failed: %s", c->device,
                             cudaGetErrorString(e));
    }
    cuda_graph *r = (cuda_graph *)calloc(1, sizeof *r);
    if (!r) {
        (void)cudaGraphDestroy(g);
        return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    }
    e = cudaGraphInstantiate(&r->exec, g, 0);
    (void)cudaGraphDestroy(g); /* the executable graph is independent of it */
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        free(r);
        return gml_error_set(GML_ERR_BACKEND, "instantiating a recorded graph on device %d failed: %s", c->device,
                             cudaGetErrorString(e));
    }
    r->scratch_gen = c->scratch_gen;
    *graph = r;
    return GML_OK;
}

gml_status gml_cuda_graph_launch(gml_backend *be, void *graph, int *stale) {
    gml_cuda_ctx *c = NULL;
    GML_CHECK(gml_cuda_enter(be, &c));
    cuda_graph *r = (cuda_graph *)graph;
    *stale = r->scratch_gen != c->scratch_gen;
    if (*stale) return GML_OK;
    CUDA_CHECK(cudaGraphLaunch(r->exec, c->stream));
    return GML_OK;
}

void gml_cuda_graph_free(gml_backend *be, void *graph) {
    cuda_graph *r = (cuda_graph *)graph;
    if (!r) return;
    gml_cuda_ctx *c = NULL;
    if (gml_cuda_enter(be, &c) == GML_OK) (void)cudaGraphExecDestroy(r->exec);
    free(r);
}
