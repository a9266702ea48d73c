/* zero.c — ZeRO stages 0-2 over the flat parameter buffer. See zero.h. */
#include "parallel/zero.h"

#include <math.h>
#include <stdlib.h>

#include "parallel/dp.h"

struct gml_zero {
    gml_gpt *model;
    gml_comm *dp, *dev; /* host scalars / model buffers */
    int stage, rank, size;
    size_t P, padded, S, lo, hi; /* own shard [lo, hi) of the P real parameters */
    gml_adamw *opt;
    float *gshard; /* (S) reduced gradient shard, stage 2 */
    gml_dp_reducer *red; /* stages 0 and 1: bucketed all-reduce, overlapped with backward */
    int attached;        /* the reducer is hooked into this step's last backward */
};

gml_status gml_zero_create(gml_gpt *m, gml_comm *dp, gml_comm *dev, int stage, size_t bucket_elems,
                           const gml_adamw_config *cfg, gml_zero **out) {
    *out = NULL;
    if (stage < 0 || stage > 2)
        return gml_error_set(GML_ERR_BAD_INPUT, "parallel.zero = %d: stages 0, 1 and 2 are implemented (3: to do)",
                             stage);
    gml_backend *be = gml_gpt_backend(m);
    int size = gml_comm_size(dp);
    if (gml_comm_size(dev) != size)
        return gml_error_set(GML_ERR_INVALID_ARG, "device group of %d ranks for a dp group of %d", gml_comm_size(dev),
                             size);
    size_t P = gml_gpt_num_params(m), padded = gml_gpt_padded_params(m);
    if (padded % (size_t)size != 0)
        return gml_error_set(GML_ERR_INVALID_ARG, "model buffers (%zu) are not padded to a multiple of dp = %d",
                             padded, size);
    gml_zero *z = calloc(1, sizeof *z);
    if (!z) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    z->model = m;
    z->dp = dp;
    z->dev = dev;
    z->stage = size > 1 ? stage : 0; /* one rank: nothing to shard */
    z->rank = gml_comm_rank(dp);
    z->size = size;
    z->P = P;
    z->padded = padded;
    z->S = padded / (size_t)size;
    z->lo = z->stage > 0 ? (size_t)z->rank * z->S : 0;
    z->hi = z->stage > 0 ? z->lo + z->S : P;
    if (z->lo > P) z->lo = P; /* a shard of pure padding */
    if (z->hi > P) z->hi = P;
    gml_status st = GML_OK;
    GML_CHECK_GOTO(gml_adamw_create_range(m, cfg, z->lo, z->hi, &z->opt), st, fail);
    if (z->stage == 2) GML_CHECK_GOTO(be->iface->alloc(be, (void **)&z->gshard, z->S * 4), st, fail);
    else GML_CHECK_GOTO(gml_dp_reducer_create(dev, gml_gpt_grads(m), P, bucket_elems, &z->red), st, fail);
    *out = z;
    return GML_OK;
fail:
    gml_zero_destroy(z);
    return st;
}

void gml_zero_destroy(gml_zero *z) {
    if (!z) return;
    gml_backend *be = gml_gpt_backend(z->model);
    if (z->gshard) be->iface->free(be, z->gshard);
    gml_dp_reducer_destroy(z->red);
    gml_adamw_destroy(z->opt);
    free(z);
}

gml_status gml_zero_step(gml_zero *z, double lr, double *grad_norm) {
    float *grads = gml_gpt_grads(z->model);
    const float *g; /* the gradients of [lo, hi), summed over the group */
    if (z->stage == 2) {
        GML_CHECK(gml_comm_reduce_scatter_sum_f32(z->dev, grads, z->gshard, z->S, NULL));
        g = z->gshard;
    } else {
        if (!z->attached) gml_dp_reducer_begin(z->red);
        gml_gpt_set_grads_ready_hook(z->model, NULL, NULL);
        z->attached = 0;
        GML_CHECK(gml_dp_reducer_finish(z->red));
        g = grads + z->lo;
    }
    double sumsq = 0.0;
    GML_CHECK(gml_adamw_range_sumsq(z->opt, g, &sumsq));
    if (z->stage > 0) { /* each rank holds a shard: the norm is over all of them */
        float s = (float)sumsq;
        GML_CHECK(gml_comm_allreduce_sum_f32(z->dp, &s, 1, NULL));
        sumsq = (double)s;
    }
    double norm = sqrt(sumsq);
    if (grad_norm) *grad_norm = norm;
    GML_CHECK(gml_adamw_step_range(z->opt, lr, g, norm));
    if (z->stage > 0) {
        float *master = gml_gpt_master(z->model);
        /* in place: this rank's block of the padded buffer is its shard */
        GML_CHECK(gml_comm_allgather_f32(z->dev, master + (size_t)z->rank * z->S, master, z->S, NULL));
        gml_backend *be = gml_gpt_backend(z->model);
        void *compute = gml_gpt_compute(z->model);
        if (compute != (void *)master) GML_CHECK(be->iface->cast_f32_to_act(be, compute, master, z->P));
    }
    return GML_OK;
}

void gml_zero_before_last_backward(gml_zero *z) {
    if (!z->red || z->size == 1) return;
    gml_dp_reducer_begin(z->red);
    gml_gpt_set_grads_ready_hook(z->model, gml_dp_reducer_ready, z->red);
    z->attached = 1;
}

int gml_zero_overlapped_buckets(const gml_zero *z) { return z->red ? gml_dp_reducer_overlapped(z->red) : 0; }

gml_adamw *gml_zero_optimizer(gml_zero *z) { return z->opt; }
int gml_zero_stage(const gml_zero *z) { return z->stage; }
gml_comm *gml_zero_group(gml_zero *z) { return z->dp; }

void gml_zero_shard_range(const gml_zero *z, size_t *lo, size_t *hi) {
    size_t a = (size_t)z->rank * z->S, b = a + z->S;
    *lo = a < z->P ? a : z->P;
    *hi = b < z->P ? b : z->P;
}

gml_status gml_zero_download_shard(gml_zero *z, float *master, float *adam_m, float *adam_v) {
    gml_backend *be = gml_gpt_backend(z->model);
    size_t lo, hi, olo, ohi;
    gml_zero_shard_range(z, &lo, &hi);
    if (hi == lo) return GML_OK;
    gml_adamw_range(z->opt, &olo, &ohi); /* the optimizer's range covers the shard range */
    if (lo < olo || hi > ohi)
        return gml_error_set(GML_ERR_INTERNAL, "shard [%zu, %zu) outside the optimizer range [%zu, %zu)", lo, hi, olo,
                             ohi);
    GML_CHECK(be->iface->memcpy_d2h(be, master, gml_gpt_master(z->model) + lo, (hi - lo) * 4));
    GML_CHECK(be->iface->memcpy_d2h(be, adam_m, gml_adamw_m(z->opt) + (lo - olo), (hi - lo) * 4));
    return be->iface->memcpy_d2h(be, adam_v, gml_adamw_v(z->opt) + (lo - olo), (hi - lo) * 4);
}

gml_status gml_zero_restore(gml_zero *z, const float *master, const float *adam_m, const float *adam_v, int adam_t) {
    gml_backend *be = gml_gpt_backend(z->model);
    size_t lo, hi;
    gml_adamw_range(z->opt, &lo, &hi);
    GML_CHECK(gml_gpt_set_params_host(z->model, master));
    if (hi > lo) {
        GML_CHECK(be->iface->memcpy_h2d(be, gml_adamw_m(z->opt), adam_m + lo, (hi - lo) * 4));
        GML_CHECK(be->iface->memcpy_h2d(be, gml_adamw_v(z->opt), adam_v + lo, (hi - lo) * 4));
    }
    gml_adamw_set_t(z->opt, adam_t);
    return GML_OK;
}

size_t gml_zero_state_bytes(const gml_zero *z) {
    gml_backend *be = gml_gpt_backend(z->model);
    size_t as = gml_dtype_size(be->act_dtype);
    size_t params = z->padded * 4 + (as != 4 ? z->padded * as : 0);
    size_t grads = z->padded * 4;
    size_t moments = 2 * (z->hi > z->lo ? z->hi - z->lo : 1) * 4;
    size_t shard = z->gshard ? z->S * 4 : 0;
    return params + grads + moments + shard;
}
