/* backend_cuda.h — entry points of the CUDA backend (the .cu files beside it).
 *
 * Only core/backend.c calls these, through weak references, so a build
 * without nvcc links without them and gml_backend_create("cuda") reports
 * GML_ERR_NO_DEVICE. The backend returned is owned by the caller and freed
 * with gml_backend_destroy.
 */
#ifndef GML_BACKEND_CUDA_H
#define GML_BACKEND_CUDA_H

#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of CUDA devices visible (0 when the driver or devices are missing). */
int gml_cuda_device_count(void);
/* bf16 backend on device `device_index` with its own stream, cuBLASLt handle
 * and workspace. */
gml_status gml_backend_cuda_create(int device_index, gml_backend **out);
/* The cudaStream_t every op of a CUDA backend runs on (NULL for others):
 * comm/'s NCCL backend enqueues collectives on it, so they are ordered with
 * the compute that produces and consumes their buffers. */
void *gml_cuda_backend_stream(gml_backend *be);
/* How many attention calls of this CUDA backend cuDNN has run so far
 * (kernels/cuda/attention_cudnn.cu; 0 without cuDNN or with
 * GML_ATTENTION=own): for tests and diagnostics. */
size_t gml_cuda_cudnn_attention_calls(gml_backend *be);

#ifdef __cplusplus
}
#endif
#endif
