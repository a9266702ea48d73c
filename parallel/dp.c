/* dp.c — bucketed, backward-overlapped all-reduce of the gradients over the
 * dp group, and the exchange of the token lookup's gradient rows (see dp.h). */
#include "parallel/dp.h"

#include <stdlib.h>

struct gml_dp_reducer {
    gml_comm *c;
    float *grads;
    size_t n, bucket;
    /* buckets: the suffix [floor, n) cut from its top (k = 0 .. ns-1, started
     * in that order as backward finishes them), then with an early range the
     * early buckets [0, floor) cut from its top (k = ns .. nb-1, started
     * together when the hook reports that range) */
    size_t floor;        /* 0 without an early range */
    int nb, ns;
    size_t *blo, *bhi;   /* (nb) */
    int suffix_started;  /* suffix buckets 0 .. suffix_started-1 are in flight */
    int early_started;
    int overlapped;      /* started while backward ran */
    int recorded_overlapped; /* overlapped of the last backward that called the hook (for replays) */
    size_t ready_lo;     /* [ready_lo, n) is final */
    gml_comm_req **reqs; /* (nb) */
    /* the exchange (gml_dp_reducer_exchange_rows) */
    gml_backend *be;
    void *dx_all;
    int32_t *tok_all;
    size_t dx_cap, tok_cap; /* bytes */
};

/* Cut [lo, hi) into buckets of at most r->bucket from its top, appending
 * them at r->nb (arrays sized by the caller). */
static void cut(gml_dp_reducer *r, size_t lo, size_t hi) {
    while (hi > lo) {
        size_t b = hi - lo < r->bucket ? lo : hi - r->bucket;
        r->blo[r->nb] = b;
        r->bhi[r->nb] = hi;
        r->nb++;
        hi = b;
    }
}

static gml_status layout(gml_dp_reducer *r, size_t floor) {
    size_t most = (r->n + r->bucket - 1) / r->bucket + 2; /* two cut ranges: at most one extra piece each */
    size_t *lo = realloc(r->blo, most * sizeof *lo), *hi = lo ? realloc(r->bhi, most * sizeof *hi) : NULL;
    gml_comm_req **q = hi ? realloc(r->reqs, most * sizeof *q) : NULL;
    if (lo) r->blo = lo;
    if (hi) r->bhi = hi;
    if (q) r->reqs = q;
    if (!lo || !hi || !q) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    for (size_t k = 0; k < most; k++) r->reqs[k] = NULL;
    r->floor = floor;
    r->nb = 0;
    cut(r, floor, r->n);
    r->ns = r->nb;
    cut(r, 0, floor);
    return GML_OK;
}

static gml_status wait_all(gml_dp_reducer *r);

gml_status gml_dp_reducer_create(gml_comm *c, float *grads, size_t n, size_t bucket_elems, gml_dp_reducer **out) {
    *out = NULL;
    gml_dp_reducer *r = calloc(1, sizeof *r);
    if (!r) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    r->c = c;
    r->grads = grads;
    r->n = n;
    r->bucket = bucket_elems ? bucket_elems : GML_DP_BUCKET_ELEMS;
    gml_status st = layout(r, 0);
    if (st != GML_OK) {
        gml_dp_reducer_destroy(r);
        return st;
    }
    gml_dp_reducer_begin(r);
    *out = r;
    return GML_OK;
}

void gml_dp_reducer_destroy(gml_dp_reducer *r) {
    if (!r) return;
    if (r->reqs) (void)wait_all(r);
    if (r->dx_all) r->be->iface->free(r->be, r->dx_all);
    if (r->tok_all) r->be->iface->free(r->be, r->tok_all);
    free(r->reqs);
    free(r->blo);
    free(r->bhi);
    free(r);
}

void gml_dp_reducer_begin(gml_dp_reducer *r) {
    r->suffix_started = 0;
    r->early_started = 0;
    r->overlapped = 0;
    r->ready_lo = r->n;
}

static gml_status start(gml_dp_reducer *r, int k) {
    return gml_comm_allreduce_sum_f32(r->c, r->grads + r->blo[k], r->bhi[k] - r->blo[k], &r->reqs[k]);
}

/* Start every suffix bucket whose start is >= limit; *n_started += how many. */
static gml_status start_suffix_down_to(gml_dp_reducer *r, size_t limit, int *n_started) {
    while (r->suffix_started < r->ns && r->blo[r->suffix_started] >= limit) {
        GML_CHECK(start(r, r->suffix_started));
        r->suffix_started++;
        (*n_started)++;
    }
    return GML_OK;
}

static gml_status start_early(gml_dp_reducer *r, int *n_started) {
    if (r->early_started) return GML_OK;
    for (int k = r->ns; k < r->nb; k++) {
        GML_CHECK(start(r, k));
        (*n_started)++;
    }
    r->early_started = 1;
    return GML_OK;
}

static int all_started(const gml_dp_reducer *r) {
    return r->suffix_started == r->ns && (r->early_started || r->ns == r->nb);
}

/* Wait for every bucket in flight (on GPUs the compute stream waits; the
 * host does not block); keep the first error. */
static gml_status wait_all(gml_dp_reducer *r) {
    gml_status st = GML_OK;
    for (int k = 0; k < r->nb; k++) {
        gml_status w = gml_comm_wait(&r->reqs[k]); /* NULL (not started, or waited): a no-op */
        if (st == GML_OK) st = w;
    }
    return st;
}

gml_status gml_dp_reducer_ready(void *ctx, size_t lo, size_t hi) {
    gml_dp_reducer *r = ctx;
    int n_started = 0;
    if (r->floor > 0 && lo == 0 && hi == r->floor) { /* the early range */
        GML_CHECK(start_early(r, &n_started));
        r->overlapped += n_started;
    } else {
        if (r->ready_lo < r->n && lo >= r->ready_lo) { /* a new backward (a failed recording is run again) */
            (void)wait_all(r);
            gml_dp_reducer_begin(r);
        }
        if (lo < r->ready_lo) r->ready_lo = lo;
        GML_CHECK(start_suffix_down_to(r, r->ready_lo, &n_started));
        if (r->ready_lo > 0) r->overlapped += n_started; /* lo 0: the backward is done */
    }
    /* all started: join them now, inside the backward, so that a recording
     * of it is complete (gml_dp_reducer_finish then has nothing left) */
    return all_started(r) && r->nb > 0 ? wait_all(r) : GML_OK;
}

void gml_dp_reducer_replayed(gml_dp_reducer *r) {
    r->suffix_started = r->ns; /* the replay ran (and joined) them all; no requests here */
    r->early_started = 1;
    r->ready_lo = r->floor;
    r->overlapped = r->recorded_overlapped;
}

gml_status gml_dp_reducer_finish(gml_dp_reducer *r) {
    int n_started = 0;
    gml_status st = start_suffix_down_to(r, r->floor, &n_started);
    if (st == GML_OK) st = start_early(r, &n_started);
    gml_status w = wait_all(r);
    if (st == GML_OK) st = w;
    if (n_started == 0 && r->overlapped) r->recorded_overlapped = r->overlapped; /* the hook started them all */
    r->suffix_started = 0; /* overlapped stays for the report */
    r->early_started = 0;
    r->ready_lo = r->n;
    return st;
}

int gml_dp_reducer_overlapped(const gml_dp_reducer *r) { return r->overlapped; }

gml_status gml_dp_reducer_set_early(gml_dp_reducer *r, size_t hi) {
    if (hi > r->n) return gml_error_set(GML_ERR_INVALID_ARG, "early range [0, %zu) past %zu gradients", hi, r->n);
    (void)wait_all(r);
    GML_CHECK(layout(r, hi));
    gml_dp_reducer_begin(r);
    return GML_OK;
}

/* *buf (backend memory, *cap bytes) holds at least `bytes`: grow-only, so
 * the first (unrecorded) backward sizes it and a recording allocates
 * nothing. */
static gml_status grow(gml_backend *be, void **buf, size_t *cap, size_t bytes) {
    if (bytes <= *cap) return GML_OK;
    if (*buf) be->iface->free(be, *buf);
    *buf = NULL, *cap = 0;
    GML_CHECK(be->iface->alloc(be, buf, bytes));
    *cap = bytes;
    return GML_OK;
}

gml_status gml_dp_reducer_exchange_rows(void *ctx, const void *dx, const int32_t *tokens, size_t rows,
                                        size_t row_bytes, const void **dx_all, const int32_t **tokens_all,
                                        int *ways) {
    gml_dp_reducer *r = ctx;
    if (!r->be)
        return gml_error_set(GML_ERR_INVALID_ARG, "gml_dp_reducer_exchange_rows: no backend "
                             "(gml_dp_reducer_set_exchange_backend)");
    size_t w = (size_t)gml_comm_size(r->c), dx_bytes = rows * row_bytes, tok_bytes = rows * sizeof *tokens;
    GML_CHECK(grow(r->be, &r->dx_all, &r->dx_cap, w * dx_bytes));
    GML_CHECK(grow(r->be, (void **)&r->tok_all, &r->tok_cap, w * tok_bytes));
    GML_CHECK(gml_comm_allgather_bytes(r->c, dx, r->dx_all, dx_bytes, NULL));
    GML_CHECK(gml_comm_allgather_bytes(r->c, tokens, r->tok_all, tok_bytes, NULL));
    *dx_all = r->dx_all;
    *tokens_all = r->tok_all;
    *ways = (int)w;
    return GML_OK;
}

void gml_dp_reducer_set_exchange_backend(gml_dp_reducer *r, gml_backend *be) { r->be = be; }
