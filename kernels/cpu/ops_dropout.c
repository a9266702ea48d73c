/* ops_dropout.c — the CPU backend's dropout (f32): the mask of core/dropout.h
 * applied element by element. Each element's mask bit depends only on (key,
 * index), so the result is independent of the thread count.
 * Not for: drawing keys (the training loop and core/gpt.c do that).
 */
#include "core/dropout.h"
#include "kernels/cpu/cpu_impl.h"

gml_status gml_cpu_dropout(gml_backend *be, void *out_, const void *x_, size_t n, uint64_t key, uint32_t threshold,
                           float scale) {
    (void)be;
    float *out = out_;      /* (n) */
    const float *x = x_;    /* (n) */
    const long long nn = (long long)n;
#pragma omp parallel for schedule(static) if (n >= GML_CPU_PAR_MIN)
    for (long long i = 0; i < nn; i++)
        out[i] = gml_dropout_bits(key, (uint64_t)i) >= threshold ? x[i] * scale : 0.0f;
    return GML_OK;
}
