/* backend.c — choosing and creating a backend by name.
 *
 * The CUDA backend is linked in only when the build found nvcc; its entry
 * points are weak references here, so core/ needs no #ifdef and a CPU-only
 * build still links. Not for: any op (kernels/cpu, kernels/cuda).
 */
#include "core/backend.h"

#include <string.h>

#include "kernels/cuda/backend_cuda.h"

#pragma weak gml_cuda_device_count
#pragma weak gml_backend_cuda_create

int gml_backend_cuda_device_count(void) {
    if (!gml_cuda_device_count) return 0;
    return gml_cuda_device_count();
}

gml_status gml_backend_create(const char *kind, int device_index, gml_backend **out) {
    *out = NULL;
    if (strcmp(kind, "cpu") == 0) return gml_backend_cpu_create(out);
    if (strcmp(kind, "cuda") == 0 || strcmp(kind, "auto") == 0) {
        int n = gml_backend_cuda_device_count();
        if (n > 0 && device_index >= 0 && device_index < n && gml_backend_cuda_create)
            return gml_backend_cuda_create(device_index, out);
        if (n > 0 && device_index >= n) /* auto too: never put extra ranks on the CPU behind the user's back */
            return gml_error_set(GML_ERR_BAD_INPUT,
                                 "CUDA device %d asked for (the node-local rank), but this host has %d: more ranks "
                                 "than GPUs on one host ---> HINT: start at most %d rank%s per host, or set "
                                 "train.device=cpu",
                                 device_index, n, n, n == 1 ? "" : "s");
        if (strcmp(kind, "auto") == 0) return gml_backend_cpu_create(out);
        if (!gml_backend_cuda_create)
            return gml_error_set(GML_ERR_NO_DEVICE,
                                 "device 'cuda' asked for, but this build has no CUDA backend "
                                 "---> HINT: rebuild where nvcc is found, or set device: cpu");
        return gml_error_set(GML_ERR_NO_DEVICE,
                             "device 'cuda' asked for, but CUDA device %d is not there (%d visible) "
                             "---> HINT: set device: cpu or auto",
                             device_index, n);
    }
    return gml_error_set(GML_ERR_BAD_INPUT, "unknown backend '%s' (accepted: cpu, cuda, auto)", kind);
}

void gml_backend_destroy(gml_backend *be) {
    if (be && be->iface && be->iface->destroy) be->iface->destroy(be);
}
