/* dp.c — bucketed, backward-overlapped all-reduce of the gradients over the
 * dp group (see dp.h). */
#include "parallel/dp.h"

#include <stdlib.h>

struct gml_dp_reducer {
    gml_comm *c;
    float *grads;
    size_t n, bucket;
    int nb;              /* buckets; bucket k = [max(0, n - (k+1) B), n - k B) */
    int started;         /* buckets 0..started-1 are in flight */
    int overlapped;      /* of those, started from the hook */
    int recorded_overlapped; /* overlapped of the last backward that called the hook (for replays) */
    size_t ready_lo;     /* [ready_lo, n) is final */
    gml_comm_req **reqs; /* (nb) */
};

static gml_status wait_started(gml_dp_reducer *r);

gml_status gml_dp_reducer_create(gml_comm *c, float *grads, size_t n, size_t bucket_elems, gml_dp_reducer **out) {
    *out = NULL;
    gml_dp_reducer *r = calloc(1, sizeof *r);
    if (!r) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    r->c = c;
    r->grads = grads;
    r->n = n;
    r->bucket = bucket_elems ? bucket_elems : GML_DP_BUCKET_ELEMS;
    r->nb = n ? (int)((n + r->bucket - 1) / r->bucket) : 0;
    r->reqs = calloc(r->nb ? (size_t)r->nb : 1, sizeof *r->reqs);
    if (!r->reqs) {
        free(r);
        return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    }
    gml_dp_reducer_begin(r);
    *out = r;
    return GML_OK;
}

void gml_dp_reducer_destroy(gml_dp_reducer *r) {
    if (!r) return;
    (void)wait_started(r);
    free(r->reqs);
    free(r);
}

void gml_dp_reducer_begin(gml_dp_reducer *r) {
    r->started = 0;
    r->overlapped = 0;
    r->ready_lo = r->n;
}

static size_t bucket_lo(const gml_dp_reducer *r, int k) {
    size_t top = (size_t)(k + 1) * r->bucket;
    return top >= r->n ? 0 : r->n - top;
}

/* Start every bucket whose start is >= limit. */
static gml_status start_down_to(gml_dp_reducer *r, size_t limit) {
    while (r->started < r->nb && bucket_lo(r, r->started) >= limit) {
        int k = r->started;
        size_t lo = bucket_lo(r, k), hi = r->n - (size_t)k * r->bucket;
        GML_CHECK(gml_comm_allreduce_sum_f32(r->c, r->grads + lo, hi - lo, &r->reqs[k]));
        r->started++;
    }
    return GML_OK;
}

/* Wait for every started bucket (on GPUs the compute stream waits; the
 * host does not block); keep the first error. */
static gml_status wait_started(gml_dp_reducer *r) {
    gml_status st = GML_OK;
    for (int k = 0; k < r->started; k++) {
        gml_status w = gml_comm_wait(&r->reqs[k]); /* NULL (already waited): a no-op */
        if (st == GML_OK) st = w;
    }
    return st;
}

gml_status gml_dp_reducer_ready(void *ctx, size_t lo, size_t hi) {
    gml_dp_reducer *r = ctx;
    (void)hi;
    if (r->ready_lo < r->n && lo >= r->ready_lo) { /* a new backward (a failed recording is run again) */
        (void)wait_started(r);
        gml_dp_reducer_begin(r);
    }
    if (lo < r->ready_lo) r->ready_lo = lo;
    int before = r->started;
    GML_CHECK(start_down_to(r, r->ready_lo));
    if (r->ready_lo > 0) r->overlapped += r->started - before; /* lo 0: the backward is done */
    /* all started: join them now, inside the backward, so that a recording
     * of it is complete (gml_dp_reducer_finish then has nothing left) */
    return r->started == r->nb && r->nb > 0 ? wait_started(r) : GML_OK;
}

void gml_dp_reducer_replayed(gml_dp_reducer *r) {
    r->started = r->nb; /* the replay ran (and joined) them all; no requests here */
    r->ready_lo = 0;
    r->overlapped = r->recorded_overlapped;
}

gml_status gml_dp_reducer_finish(gml_dp_reducer *r) {
    gml_status st = start_down_to(r, 0);
    gml_status w = wait_started(r);
    if (st == GML_OK) st = w;
    if (r->ready_lo == 0 && r->overlapped) r->recorded_overlapped = r->overlapped;
    r->started = 0;
    r->ready_lo = r->n;
    return st;
}

int gml_dp_reducer_overlapped(const gml_dp_reducer *r) { return r->overlapped; }
