/* dp.c — bucketed all-reduce of the gradients over the dp group. */
#include "parallel/dp.h"

#include <stdlib.h>

gml_status gml_dp_allreduce_grads(gml_comm *dp, float *grads, size_t n, size_t bucket_elems) {
    if (gml_comm_size(dp) == 1 || n == 0) return GML_OK;
    if (bucket_elems == 0) bucket_elems = GML_DP_BUCKET_ELEMS;
    size_t nb = (n + bucket_elems - 1) / bucket_elems;
    gml_comm_req **reqs = calloc(nb, sizeof *reqs);
    if (!reqs) return gml_error_set(GML_ERR_NOMEM, "out of host memory for %zu requests", nb);
    gml_status st = GML_OK;
    size_t started = 0;
    for (; started < nb; started++) {
        size_t off = started * bucket_elems, len = n - off < bucket_elems ? n - off : bucket_elems;
        st = gml_comm_allreduce_sum_f32(dp, grads + off, len, &reqs[started]);
        if (st != GML_OK) break;
    }
    for (size_t i = 0; i < started; i++) { /* wait for all that started, keep the first error */
        gml_status w = gml_comm_wait(&reqs[i]);
        if (st == GML_OK) st = w;
    }
    free(reqs);
    return st;
}
