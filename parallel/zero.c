/* zero.c — ZeRO stages 0-3 over the flat parameter space. See zero.h.
 *
 * Stages 0-2 work on the model's full buffers. Stage 3 owns the shards and
 * the windows and serves the model through the provider table of
 * core/gpt.h (the z3_* functions below); the model decides when each unit
 * is needed, this file decides where the values come from.
 * Not for: the schedule of the layers (core/gpt.c), checkpoint files
 * (checkpoint/, through the shard functions at the end).
 */
#include "parallel/zero.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "parallel/dp.h"

/* Stage 3: a window of gathered parameters (act) for one unit at a time. */
typedef struct {
    int unit;            /* -1: free */
    int ready;           /* its broadcasts have been waited for */
    int nreq;            /* broadcasts in flight (one per owner of a piece) */
    gml_comm_req **reqs; /* (dp) */
    void *buf;           /* (gml_gpt_window_elems) act, + ALIGN bytes; the unit at unit_base */
} param_window;

/* Stage 3: the f32 gradient window of one unit at a time. */
typedef struct {
    int unit;          /* -1: free */
    int reducing;      /* released: its reduces are in flight (reqs); the own piece's lands in the shard */
    int nreq;          /* reduces in flight: one per owner of a piece of the unit */
    gml_comm_req **reqs; /* (dp) */
    float *buf;        /* (gml_gpt_window_elems) f32, + ALIGN bytes */
    float *base;       /* the unit's first element (unit_base) */
} grad_window;

#define N_WINDOWS 3 /* gml_gpt_unit_window: 0, 1, 2 */
#define ALIGN 256   /* the alignment of backend allocations (bytes) */

/* Where unit [lo, ...) starts in a window: at the same alignment its
 * elements have in full buffers (flat offset * elem bytes mod ALIGN), so
 * every parameter and gradient pointer is aligned exactly as in stages 0-2
 * and no kernel sees an address it would not see there. */
static void *unit_base(void *buf, size_t lo, size_t elem) { return (char *)buf + lo * elem % ALIGN; }

struct gml_zero {
    gml_gpt *model;
    gml_comm *dp, *dev; /* host scalars / model buffers */
    int stage, rank, size;
    size_t P, padded, S, lo, hi; /* own shard [lo, hi) of the P real parameters */
    size_t as;                   /* bytes per act element */
    gml_adamw *opt;
    float *gshard; /* (S) reduced gradient shard, stages 2 and 3 */
    gml_dp_reducer *red; /* stages 0 and 1: bucketed all-reduce, overlapped with backward */
    int attached;        /* the reducer is hooked into this step's last backward */
    int exchange;        /* stages 0, 1: the embedding's rows are gathered, wte/wpe reduced early */
    int gather_parts;    /* stages 1, 2: the update and the parameter gather in this many parts */
    int early_gather;    /* stage 3: the step gathers unit 0 for the next forward */
    int early_pending;   /* ... and it has not been acquired yet */
    int master_stale;    /* stages 1, 2 on a bf16 backend: the full master is current in the own shard
                          * only (the step gathers the compute copy); gml_zero_gather_params_host */

    /* stage 3 */
    float *mshard;   /* (S) f32 master weights of [rank*S, (rank+1)*S); padding 0 */
    void *cshard;    /* (S) act compute copy; == mshard on an f32 backend */
    int n_units;
    size_t *ulo, *uhi;     /* (n_units) flat range of each unit */
    unsigned char *summed; /* (n_units) the unit's piece of gshard was reduced into since zero_grads */
    param_window pw[N_WINDOWS];
    grad_window gw[N_WINDOWS];
    size_t win_elems[N_WINDOWS];
    int reductions;      /* unit reductions started in the current backward */
    int overlapped;      /* of the last backward: started before its last layer was done */
    float *host_params;  /* (padded) host, gml_zero_gather_params_host; NULL: none */
};

/* ------------------------------------------------------------------ */
/* stage 3: the parameter provider */

/* [*a, *b): the part of the flat range [lo, hi) in rank k's shard. */
static void piece(const gml_zero *z, size_t lo, size_t hi, int k, size_t *a, size_t *b) {
    size_t s = (size_t)k * z->S, e = s + z->S;
    *a = lo > s ? lo : s;
    *b = hi < e ? hi : e;
    if (*b < *a) *b = *a;
}

/* Wait for the *n requests of reqs, all of them; the first error counts. */
static gml_status wait_all(gml_comm_req **reqs, int *n) {
    gml_status st = GML_OK;
    for (int k = 0; k < *n; k++) {
        gml_status s = gml_comm_wait(&reqs[k]);
        if (st == GML_OK) st = s;
    }
    *n = 0;
    return st;
}

static gml_status wait_window(param_window *w) {
    gml_status st = wait_all(w->reqs, &w->nreq);
    w->ready = st == GML_OK;
    return st;
}

static gml_status z3_prefetch(void *ctx, int u) {
    gml_zero *z = ctx;
    param_window *w = &z->pw[gml_gpt_unit_window(z->model, u)];
    if (w->unit == u) return GML_OK;
    if (w->unit >= 0)
        return gml_error_set(GML_ERR_INTERNAL, "ZeRO-3: the parameter window for unit %d still holds unit %d", u,
                             w->unit);
    size_t lo = z->ulo[u], hi = z->uhi[u];
    w->unit = u;
    w->ready = 0;
    w->nreq = 0;
    /* every owner of a piece broadcasts it from its compute shard, in rank
     * order on every rank (the order the collectives match in) */
    for (int k = (int)(lo / z->S); k < z->size && (size_t)k * z->S < hi; k++) {
        size_t a, b;
        piece(z, lo, hi, k, &a, &b);
        if (a == b) continue;
        char *dst = (char *)unit_base(w->buf, lo, z->as) + (a - lo) * z->as;
        /* the owner's piece goes from its shard (the collective's copy, on
         * the comm stream, not one on compute) */
        const void *own = k == z->rank ? (char *)z->cshard + (a - (size_t)k * z->S) * z->as : NULL;
        GML_CHECK(gml_comm_broadcast_from(z->dev, own, dst, (b - a) * z->as, k, &w->reqs[w->nreq]));
        w->nreq++;
    }
    return GML_OK;
}

static gml_status z3_acquire(void *ctx, int u, void **base) {
    gml_zero *z = ctx;
    if (u == 0) z->early_pending = 0;
    GML_CHECK(z3_prefetch(ctx, u));
    param_window *w = &z->pw[gml_gpt_unit_window(z->model, u)];
    if (!w->ready) GML_CHECK(wait_window(w));
    *base = unit_base(w->buf, z->ulo[u], z->as);
    return GML_OK;
}

static gml_status z3_release(void *ctx, int u) {
    gml_zero *z = ctx;
    param_window *w = &z->pw[gml_gpt_unit_window(z->model, u)];
    if (w->unit != u)
        return gml_error_set(GML_ERR_INTERNAL, "ZeRO-3: release of unit %d, whose window holds unit %d", u, w->unit);
    if (!w->ready) GML_CHECK(wait_window(w)); /* a prefetch never used: it lands before the window is refilled */
    w->unit = -1;
    return GML_OK;
}

/* A released gradient window: wait for its reductions (the own piece's
 * landed in the gradient shard), free the window. */
static gml_status settle(gml_zero *z, grad_window *w) {
    if (w->unit < 0 || !w->reducing) return GML_OK;
    GML_CHECK(wait_all(w->reqs, &w->nreq));
    w->unit = -1;
    w->reducing = 0;
    return GML_OK;
}

static gml_status z3_grads_acquire(void *ctx, int u, float **base) {
    gml_zero *z = ctx;
    grad_window *w = &z->gw[gml_gpt_unit_window(z->model, u)];
    if (w->unit >= 0 && !w->reducing)
        return gml_error_set(GML_ERR_INTERNAL, "ZeRO-3: the gradient window for unit %d still holds unit %d", u,
                             w->unit);
    GML_CHECK(settle(z, w));
    gml_backend *be = gml_gpt_backend(z->model);
    size_t lo = z->ulo[u], hi = z->uhi[u], a, b;
    /* zeros, except the own piece: the gradients accumulated so far, to which
     * this backward's sum over the group is added by the reduction (nothing
     * to copy until the unit's first reduction after zero_grads) */
    w->base = unit_base(w->buf, lo, 4);
    GML_CHECK(be->iface->memset_zero(be, w->base, (hi - lo) * 4));
    piece(z, lo, hi, z->rank, &a, &b);
    if (b > a && z->summed[u])
        GML_CHECK(be->iface->memcpy_d2d(be, w->base + (a - lo), z->gshard + (a - (size_t)z->rank * z->S),
                                        (b - a) * 4));
    w->unit = u;
    w->reducing = 0;
    *base = w->base;
    return GML_OK;
}

static gml_status z3_grads_release(void *ctx, int u) {
    gml_zero *z = ctx;
    grad_window *w = &z->gw[gml_gpt_unit_window(z->model, u)];
    if (w->unit != u || w->reducing)
        return gml_error_set(GML_ERR_INTERNAL, "ZeRO-3: gradients of unit %d released but not held", u);
    /* each piece is summed onto its owner only (a reduce per owner, in rank
     * order on every rank): half the traffic of an all-reduce of the window;
     * the own piece's sum goes straight into the gradient shard */
    size_t lo = z->ulo[u], hi = z->uhi[u];
    w->reducing = 1;
    for (int k = (int)(lo / z->S); k < z->size && (size_t)k * z->S < hi; k++) {
        size_t a, b;
        piece(z, lo, hi, k, &a, &b);
        if (a == b) continue;
        float *own = k == z->rank ? z->gshard + (a - (size_t)k * z->S) : NULL;
        GML_CHECK(gml_comm_reduce_sum_f32(z->dev, w->base + (a - lo), own, b - a, k, &w->reqs[w->nreq]));
        w->nreq++;
    }
    z->summed[u] = 1;
    z->reductions++;
    return GML_OK;
}

static gml_status z3_grads_finish(void *ctx) {
    gml_zero *z = ctx;
    gml_status st = GML_OK;
    for (int i = 0; i < N_WINDOWS; i++) { /* all of them; keep the first error */
        gml_status s = settle(z, &z->gw[i]);
        if (st == GML_OK) st = s;
    }
    z->overlapped = z->reductions > 0 ? z->reductions - 1 : 0; /* all but the embedding's, the last layer */
    z->reductions = 0;
    return st;
}

/* Stage 3: this rank's shard of the weights from `own` (hi - lo floats,
 * element 0 is flat element lo); the padding stays zero. */
static gml_status z3_set_shard(gml_zero *z, const float *own) {
    gml_backend *be = gml_gpt_backend(z->model);
    gml_zero_drop_params_host(z);
    if (z->early_pending) { /* the gather the step started holds the old values */
        z->early_pending = 0;
        GML_CHECK(z3_release(z, 0));
    }
    if (z->hi > z->lo) GML_CHECK(be->iface->memcpy_h2d(be, z->mshard, own, (z->hi - z->lo) * 4));
    if (z->cshard != (void *)z->mshard) GML_CHECK(be->iface->cast_f32_to_act(be, z->cshard, z->mshard, z->S));
    return GML_OK;
}

static gml_status z3_set_params_host(void *ctx, const float *host) {
    gml_zero *z = ctx;
    return z3_set_shard(z, host + z->lo);
}

static gml_status z3_get_params_host(void *ctx, float *host) {
    gml_zero *z = ctx;
    if (!z->host_params)
        return gml_error_set(GML_ERR_INVALID_ARG, "ZeRO-3 holds 1/%d of the weights on each rank ---> HINT: call "
                             "gml_zero_gather_params_host on every rank of the group first", z->size);
    memcpy(host, z->host_params, z->P * sizeof *host);
    return GML_OK;
}

static gml_status z3_get_grads_host(void *ctx, float *host) {
    gml_zero *z = ctx;
    (void)host;
    return gml_error_set(GML_ERR_UNSUPPORTED, "ZeRO-%d keeps only each rank's gradient shard (1/%d); full "
                         "gradients are not available", z->stage, z->size);
}

static gml_status z3_zero_grads(void *ctx) {
    gml_zero *z = ctx;
    gml_backend *be = gml_gpt_backend(z->model);
    for (int i = 0; i < N_WINDOWS; i++) GML_CHECK(settle(z, &z->gw[i])); /* nothing may land in it later */
    memset(z->summed, 0, (size_t)z->n_units);
    return be->iface->memset_zero(be, z->gshard, z->S * 4);
}

/* Stage 3: parameter and gradient windows, the parameter shards, and the
 * provider for both; stage 2 (params 0): gradient windows and a provider
 * for gradients only (the model keeps its full parameters). */
static gml_status windows_create(gml_zero *z, int params) {
    gml_backend *be = gml_gpt_backend(z->model);
    z->n_units = gml_gpt_num_units(z->model);
    z->ulo = calloc((size_t)z->n_units, sizeof *z->ulo);
    z->uhi = calloc((size_t)z->n_units, sizeof *z->uhi);
    z->summed = calloc((size_t)z->n_units, 1);
    if (!z->ulo || !z->uhi || !z->summed) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    for (int u = 0; u < z->n_units; u++) gml_gpt_unit_range(z->model, u, &z->ulo[u], &z->uhi[u]);
    for (int i = 0; i < N_WINDOWS; i++) {
        z->pw[i].unit = z->gw[i].unit = -1;
        z->win_elems[i] = gml_gpt_window_elems(z->model, i);
        size_t n = z->win_elems[i] ? z->win_elems[i] : 1;
        z->gw[i].reqs = calloc((size_t)z->size, sizeof *z->gw[i].reqs);
        if (!z->gw[i].reqs) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
        GML_CHECK(be->iface->alloc(be, (void **)&z->gw[i].buf, n * 4 + ALIGN));
        if (!params) continue;
        z->pw[i].reqs = calloc((size_t)z->size, sizeof *z->pw[i].reqs);
        if (!z->pw[i].reqs) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
        GML_CHECK(be->iface->alloc(be, &z->pw[i].buf, n * z->as + ALIGN));
    }
    if (!params) {
        gml_gpt_provider g = {.ctx = z,
                              .grads_acquire = z3_grads_acquire,
                              .grads_release = z3_grads_release,
                              .grads_finish = z3_grads_finish,
                              .get_grads_host = z3_get_grads_host,
                              .zero_grads = z3_zero_grads};
        return gml_gpt_set_provider(z->model, &g);
    }
    GML_CHECK(be->iface->alloc(be, (void **)&z->mshard, z->S * 4));
    GML_CHECK(be->iface->memset_zero(be, z->mshard, z->S * 4));
    if (z->as == 4) {
        z->cshard = z->mshard;
    } else {
        GML_CHECK(be->iface->alloc(be, &z->cshard, z->S * z->as));
        GML_CHECK(be->iface->memset_zero(be, z->cshard, z->S * z->as));
    }
    gml_gpt_provider p = {
        .ctx = z,
        .prefetch = z3_prefetch,
        .acquire = z3_acquire,
        .release = z3_release,
        .grads_acquire = z3_grads_acquire,
        .grads_release = z3_grads_release,
        .grads_finish = z3_grads_finish,
        .set_params_host = z3_set_params_host,
        .get_params_host = z3_get_params_host,
        .get_grads_host = z3_get_grads_host,
        .zero_grads = z3_zero_grads,
    };
    return gml_gpt_set_provider(z->model, &p);
}

static void windows_destroy(gml_zero *z) {
    gml_backend *be = gml_gpt_backend(z->model);
    if (z->stage >= 2) gml_gpt_set_provider(z->model, NULL);
    for (int i = 0; i < N_WINDOWS; i++) {
        if (z->pw[i].reqs) (void)wait_window(&z->pw[i]); /* nothing may still write into freed memory */
        (void)wait_all(z->gw[i].reqs, &z->gw[i].nreq);
        free(z->gw[i].reqs);
        free(z->pw[i].reqs);
        if (z->pw[i].buf) be->iface->free(be, z->pw[i].buf);
        if (z->gw[i].buf) be->iface->free(be, z->gw[i].buf);
    }
    if (z->cshard && z->cshard != (void *)z->mshard) be->iface->free(be, z->cshard);
    if (z->mshard) be->iface->free(be, z->mshard);
    free(z->ulo);
    free(z->uhi);
    free(z->summed);
    free(z->host_params);
}

/* ------------------------------------------------------------------ */
/* lifetime */

static int gather_parts_wanted(void); /* the step's, below */

gml_status gml_zero_create(gml_gpt *m, gml_comm *dp, gml_comm *dev, int stage, size_t bucket_elems,
                           const gml_adamw_config *cfg, gml_zero **out) {
    *out = NULL;
    if (stage < 0 || stage > 3)
        return gml_error_set(GML_ERR_BAD_INPUT, "parallel.zero = %d: the stages are 0, 1, 2 and 3", stage);
    gml_backend *be = gml_gpt_backend(m);
    int size = gml_comm_size(dp);
    if (gml_comm_size(dev) != size)
        return gml_error_set(GML_ERR_INVALID_ARG, "device group of %d ranks for a dp group of %d", gml_comm_size(dev),
                             size);
    size_t P = gml_gpt_num_params(m), padded = gml_gpt_padded_params(m);
    if (padded % (size_t)size != 0)
        return gml_error_set(GML_ERR_INVALID_ARG, "model buffers (%zu) are not padded to a multiple of dp = %d",
                             padded, size);
    int sharded = gml_gpt_get_config(m)->sharded_params != 0, sharded_g = gml_gpt_get_config(m)->sharded_grads != 0;
    if (sharded != (stage == 3) || sharded_g != (stage == 2))
        return gml_error_set(GML_ERR_INVALID_ARG, "ZeRO stage %d needs a model created with sharded_params = %d, "
                             "sharded_grads = %d (it has %d, %d)", stage, stage == 3, stage == 2, sharded, sharded_g);
    gml_zero *z = calloc(1, sizeof *z);
    if (!z) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    z->model = m;
    z->dp = dp;
    z->dev = dev;
    z->stage = stage;
    z->rank = gml_comm_rank(dp);
    z->size = size;
    z->P = P;
    z->padded = padded;
    z->S = padded / (size_t)size;
    z->as = gml_dtype_size(be->act_dtype);
    z->gather_parts = gather_parts_wanted();
    const char *early = getenv("GML_ZERO3_EARLY_GATHER");
    z->early_gather = !(early && strcmp(early, "0") == 0);
    z->lo = z->stage > 0 ? (size_t)z->rank * z->S : 0;
    z->hi = z->stage > 0 ? z->lo + z->S : P;
    if (z->lo > P) z->lo = P; /* a shard of pure padding */
    if (z->hi > P) z->hi = P;
    gml_status st = GML_OK;
    if (z->stage == 3) {
        GML_CHECK_GOTO(windows_create(z, 1), st, fail);
        GML_CHECK_GOTO(gml_adamw_create_shard(m, cfg, z->lo, z->hi, z->mshard,
                                              z->cshard != (void *)z->mshard ? z->cshard : NULL, &z->opt),
                       st, fail);
    } else {
        if (z->stage == 2) GML_CHECK_GOTO(windows_create(z, 0), st, fail);
        GML_CHECK_GOTO(gml_adamw_create_range(m, cfg, z->lo, z->hi, &z->opt), st, fail);
    }
    if (z->stage >= 2) {
        GML_CHECK_GOTO(be->iface->alloc(be, (void **)&z->gshard, z->S * 4), st, fail);
        GML_CHECK_GOTO(be->iface->memset_zero(be, z->gshard, z->S * 4), st, fail);
    } else {
        GML_CHECK_GOTO(gml_dp_reducer_create(dev, gml_gpt_grads(m), P, bucket_elems, &z->red), st, fail);
    }
    *out = z;
    return GML_OK;
fail:
    gml_zero_destroy(z);
    return st;
}

void gml_zero_destroy(gml_zero *z) {
    if (!z) return;
    gml_backend *be = gml_gpt_backend(z->model);
    windows_destroy(z);
    if (z->gshard) be->iface->free(be, z->gshard);
    gml_dp_reducer_destroy(z->red);
    gml_adamw_destroy(z->opt);
    free(z);
}

/* ------------------------------------------------------------------ */
/* the step */

/* Stages 1, 2: AdamW on the own shard, then every rank's shard to every
 * rank: the compute copy on a bf16 backend (AdamW wrote the shard's; half
 * the bytes of the f32 master, and no cast of the whole model after it; the
 * full master is brought up to date only by gml_zero_gather_params_host),
 * the master itself on an f32 one. In GATHER_PARTS parts of the shard: part
 * j of every shard is sent while AdamW updates part j + 1 (the comm stream
 * runs beside the compute stream), so only the last part's gather is left
 * after AdamW. GML_ZERO_GATHER_PARTS=1..GATHER_PARTS in the environment,
 * read by gml_zero_create, sets the number (measurements: 1 = the gather
 * after the whole update). */
#define GATHER_PARTS 4

static int gather_parts_wanted(void) {
    const char *e = getenv("GML_ZERO_GATHER_PARTS");
    int n = e ? atoi(e) : GATHER_PARTS;
    return n >= 1 && n <= GATHER_PARTS ? n : GATHER_PARTS;
}

static gml_status update_and_gather(gml_zero *z, double lr, const float *g, double norm) {
    float *master = gml_gpt_master(z->model);
    void *compute = gml_gpt_compute(z->model);
    char *base = (char *)compute;
    size_t es = z->as;
    if (compute == (void *)master) es = 4;
    else z->master_stale = 1;
    const int parts = z->gather_parts;
    size_t part = (z->S + (size_t)parts - 1) / (size_t)parts;
    GML_CHECK(gml_adamw_set_parts(z->opt, parts, part));
    GML_CHECK(gml_adamw_begin_step(z->opt, lr, norm));
    gml_comm_req *reqs[GATHER_PARTS] = {NULL};
    gml_status st = GML_OK;
    for (int j = 0; j < parts && st == GML_OK; j++) {
        size_t a = (size_t)j * part, b = a + part < z->S ? a + part : z->S;
        st = gml_adamw_update_part(z->opt, g, j);
        /* rank k's part j sits at k * S + a: a strided all-gather, in place */
        if (st == GML_OK && b > a)
            st = gml_comm_allgather_strided(z->dev, base + a * es, (b - a) * es, z->S * es, &reqs[j]);
    }
    int n = parts;
    gml_status w = wait_all(reqs, &n);
    return st != GML_OK ? st : w;
}

gml_status gml_zero_step(gml_zero *z, double lr, double *grad_norm) {
    const float *g; /* the gradients of [lo, hi), summed over the group */
    if (z->stage >= 2) {
        g = z->gshard; /* reduced unit by unit during backward (z3_grads_release) */
        gml_zero_drop_params_host(z);
    } else {
        if (z->size > 1) {
            if (!z->attached) gml_dp_reducer_begin(z->red);
            int replayed = z->attached && gml_gpt_micro_replayed(z->model);
            gml_gpt_set_grads_ready_hook(z->model, NULL, NULL, 0);
            gml_gpt_set_encoder_gather(z->model, NULL, NULL);
            z->attached = 0;
            if (replayed) { /* the recorded backward ran the reductions; the host still watches them */
                gml_dp_reducer_replayed(z->red);
                GML_CHECK(gml_comm_watch(z->dev, "allreduce (recorded micro-step)"));
            }
            GML_CHECK(gml_dp_reducer_finish(z->red));
        }
        g = gml_gpt_grads(z->model) + z->lo;
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
    if (z->stage == 1 || z->stage == 2) return update_and_gather(z, lr, g, norm);
    GML_CHECK(gml_adamw_step_range(z->opt, lr, g, norm));
    /* stage 3: the next forward starts with unit 0 (wte, wpe) and has nothing
     * to hide its gather behind; start it now, behind the host's work between
     * steps (the window stays filled until that forward acquires it;
     * z3_set_params_host drops it). GML_ZERO3_EARLY_GATHER=0, read by
     * gml_zero_create, leaves it to the forward (measurements). */
    if (z->stage != 3 || !z->early_gather || z->pw[gml_gpt_unit_window(z->model, 0)].unit >= 0) return GML_OK;
    z->early_pending = 1;
    return z3_prefetch(z, 0);
}

void gml_zero_before_last_backward(gml_zero *z) {
    if (!z->red || z->size == 1) return;
    gml_dp_reducer_begin(z->red);
    gml_gpt_set_grads_ready_hook(z->model, gml_dp_reducer_ready, z->red, 1);
    if (z->exchange) gml_gpt_set_encoder_gather(z->model, gml_dp_reducer_exchange_rows, z->red);
    z->attached = 1;
}

gml_status gml_zero_set_embedding_grads(gml_zero *z, gml_embedding_grads mode, size_t rows) {
    size_t lo0, hi0;
    gml_gpt_unit_range(z->model, 0, &lo0, &hi0);
    if (mode == GML_EMBEDDING_GATHER && z->size > 1 && !z->red)
        return gml_error_set(GML_ERR_BAD_INPUT, "parallel.embedding_grads = gather needs parallel.zero 0 or 1 (ZeRO "
                             "stage %d reduces the gradients after backward or layer by layer)", z->stage);
    if (!z->red) return GML_OK; /* stages 2, 3 */
    size_t row_bytes = (size_t)gml_gpt_get_config(z->model)->n_embd * z->as;
    /* gathered bytes per rank (dp - 1) rows row_bytes against the all-reduce's
     * 2 (dp - 1) / dp * 4 E: gather where that is at most half */
    int worth = (double)z->size * (double)rows * (double)row_bytes <= 4.0 * (double)(hi0 - lo0);
    z->exchange = z->size > 1 && lo0 == 0 &&
                  (mode == GML_EMBEDDING_GATHER || (mode == GML_EMBEDDING_AUTO && worth));
    GML_CHECK(gml_dp_reducer_set_early(z->red, z->exchange ? hi0 : 0));
    gml_dp_reducer_set_exchange_backend(z->red, gml_gpt_backend(z->model));
    return GML_OK;
}

int gml_zero_embedding_gathered(const gml_zero *z) { return z->exchange; }

int gml_zero_overlapped_buckets(const gml_zero *z) {
    if (z->stage >= 2) return z->overlapped;
    return z->red ? gml_dp_reducer_overlapped(z->red) : 0;
}

gml_adamw *gml_zero_optimizer(gml_zero *z) { return z->opt; }
int gml_zero_stage(const gml_zero *z) { return z->stage; }
gml_comm *gml_zero_group(gml_zero *z) { return z->dp; }

/* ------------------------------------------------------------------ */
/* checkpoints and whole weights */

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
    const float *src = z->stage == 3 ? z->mshard + (lo - (size_t)z->rank * z->S) : gml_gpt_master(z->model) + lo;
    GML_CHECK(be->iface->memcpy_d2h(be, master, src, (hi - lo) * 4));
    GML_CHECK(be->iface->memcpy_d2h(be, adam_m, gml_adamw_m(z->opt) + (lo - olo), (hi - lo) * 4));
    return be->iface->memcpy_d2h(be, adam_v, gml_adamw_v(z->opt) + (lo - olo), (hi - lo) * 4);
}

gml_status gml_zero_restore(gml_zero *z, const float *master, const float *adam_m, const float *adam_v, int adam_t) {
    gml_backend *be = gml_gpt_backend(z->model);
    size_t lo, hi;
    gml_adamw_range(z->opt, &lo, &hi); /* stages 1-3: [z->lo, z->hi); stage 0: [0, P) */
    if (z->stage == 3) {
        GML_CHECK(z3_set_shard(z, master));
    } else if (z->stage == 0) {
        GML_CHECK(gml_gpt_set_params_host(z->model, master)); /* the range is everything */
    } else { /* 1, 2: the own range into the full master, then every rank's range to every rank */
        float *full = gml_gpt_master(z->model);
        void *compute = gml_gpt_compute(z->model);
        if (hi > lo) GML_CHECK(be->iface->memcpy_h2d(be, full + lo, master, (hi - lo) * 4));
        z->master_stale = 1; /* current in the own range only: the gather below brings the rest */
        GML_CHECK(gml_zero_gather_params_host(z));
        if (compute != (void *)full) GML_CHECK(be->iface->cast_f32_to_act(be, compute, full, z->P));
    }
    z->master_stale = 0;
    if (hi > lo) {
        GML_CHECK(be->iface->memcpy_h2d(be, gml_adamw_m(z->opt), adam_m, (hi - lo) * 4));
        GML_CHECK(be->iface->memcpy_h2d(be, gml_adamw_v(z->opt), adam_v, (hi - lo) * 4));
    }
    gml_adamw_set_t(z->opt, adam_t);
    return GML_OK;
}

gml_status gml_zero_gather_params_host(gml_zero *z) {
    if (z->stage == 1 || z->stage == 2) { /* bring the full master up to date, on the device */
        if (!z->master_stale) return GML_OK;
        float *master = gml_gpt_master(z->model);
        GML_CHECK(gml_comm_allgather_f32(z->dev, master + (size_t)z->rank * z->S, master, z->S, NULL));
        z->master_stale = 0;
        return GML_OK;
    }
    if (z->stage != 3) return GML_OK;
    gml_backend *be = gml_gpt_backend(z->model);
    if (!z->host_params) {
        z->host_params = malloc(z->padded * sizeof *z->host_params);
        if (!z->host_params)
            return gml_error_set(GML_ERR_NOMEM, "out of host memory for a copy of %zu parameters", z->padded);
    }
    float *own = z->host_params + (size_t)z->rank * z->S; /* in place: the own block of the padded copy */
    gml_status st = be->iface->memcpy_d2h(be, own, z->mshard, z->S * 4);
    if (st == GML_OK) st = gml_comm_allgather_f32(z->dp, own, z->host_params, z->S, NULL);
    if (st != GML_OK) gml_zero_drop_params_host(z);
    return st;
}

void gml_zero_drop_params_host(gml_zero *z) {
    free(z->host_params);
    z->host_params = NULL;
}

size_t gml_zero_state_bytes(const gml_zero *z) {
    size_t moments = 2 * (z->hi > z->lo ? z->hi - z->lo : 1) * 4;
    size_t shard = z->gshard ? z->S * 4 : 0;
    if (z->stage == 3) {
        size_t windows = 0;
        for (int i = 0; i < N_WINDOWS; i++) windows += (z->win_elems[i] ? z->win_elems[i] : 1) * (z->as + 4) + 2 * ALIGN;
        return z->S * 4 + (z->as != 4 ? z->S * z->as : 0) + moments + shard + windows;
    }
    size_t params = z->padded * 4 + (z->as != 4 ? z->padded * z->as : 0);
    size_t grads = z->padded * 4;
    if (z->stage == 2) { /* gradient windows instead of the full buffer */
        grads = 0;
        for (int i = 0; i < N_WINDOWS; i++) grads += (z->win_elems[i] ? z->win_elems[i] : 1) * 4 + ALIGN;
    }
    return params + grads + moments + shard;
}
