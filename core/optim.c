/* optim.c — AdamW, the LR schedule and global-norm clipping.
 *
 * The optimizer's range [lo, hi) is cut into pieces at the registry's
 * tensors (adjacent tensors with the same decay flag merged) once, at
 * create; the table lives on the device and every step updates all pieces
 * in one adamw_update_pieces call. */
#include "core/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct gml_adamw {
    gml_gpt *model;
    gml_adamw_config cfg;
    size_t lo, hi;           /* the flat range it updates */
    float *param;            /* f32 master weights: param[i - param_lo] is flat element i */
    void *param_act;         /* their act compute copy, same indexing; NULL: none (f32 backend) */
    size_t param_lo;         /* 0 for the model's full buffers, lo for shard buffers */
    float *m, *v;            /* (hi - lo) f32 */
    float *scalar;           /* (1) f32 device scratch */
    gml_adamw_piece *pieces; /* (n_pieces) device: the range cut at tensors, see build_pieces */
    int n_pieces;
    int t;
    /* gml_adamw_set_parts: part j = range elements [j part_len, (j+1) part_len) */
    int parts;
    size_t part_len;
    gml_adamw_piece **part_pieces; /* (parts) device tables; NULL for an empty part */
    int *part_n;
    /* gml_adamw_begin_step: the step the parts belong to */
    float step_lr, step_scale;
};

/* The part of each parameter inside [lo, hi), in registry (flat) order,
 * adjacent parts with the same decay flag merged: *out (malloc'd, caller
 * frees) and *n. Registry offsets are contiguous, so a merged piece is one
 * flat run of the range. */
static gml_status build_pieces(const gml_param_registry *reg, size_t lo, size_t hi, size_t param_lo,
                               gml_adamw_piece **out, int *n) {
    *out = NULL;
    *n = 0;
    gml_adamw_piece *t = malloc((size_t)(reg->n > 0 ? reg->n : 1) * sizeof *t);
    if (!t) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    int k = 0;
    size_t flat = 0;
    for (int i = 0; i < reg->n; i++) {
        const gml_param_spec *p = &reg->specs[i];
        size_t a = p->offset > lo ? p->offset : lo;
        size_t b = p->offset + p->numel < hi ? p->offset + p->numel : hi;
        if (a >= b) continue;
        uint32_t decay = p->decay ? 1u : 0u;
        gml_adamw_piece *prev = k > 0 ? &t[k - 1] : NULL;
        if (prev && prev->decay == decay && prev->param_off + prev->numel == a - param_lo) {
            prev->numel += b - a;
        } else {
            t[k++] = (gml_adamw_piece){
                .param_off = a - param_lo, .state_off = a - lo, .numel = b - a, .flat_off = flat, .decay = decay};
        }
        flat += b - a;
    }
    *out = t;
    *n = k;
    return GML_OK;
}

static void free_parts(gml_adamw *o);

/* The piece table of flat range [lo, hi) on the device: *dev (room for at
 * least one piece), *n pieces. */
static gml_status upload_pieces(gml_adamw *o, size_t lo, size_t hi, gml_adamw_piece **dev, int *n) {
    gml_backend *be = gml_gpt_backend(o->model);
    gml_adamw_piece *host = NULL;
    GML_CHECK(build_pieces(gml_gpt_params(o->model), lo, hi, o->param_lo, &host, n));
    size_t bytes = (size_t)(*n > 0 ? *n : 1) * sizeof *host;
    gml_status st = be->iface->alloc(be, (void **)dev, bytes);
    if (st == GML_OK && *n > 0) st = be->iface->memcpy_h2d(be, *dev, host, bytes);
    free(host);
    return st;
}

double gml_lr_at(const gml_lr_schedule *s, int step) {
    if (s->warmup_steps > 0 && step < s->warmup_steps) return s->lr * (double)(step + 1) / s->warmup_steps;
    if (s->kind == GML_SCHED_CONSTANT) return s->lr;
    double min_lr = s->lr * s->min_lr_ratio;
    int span = s->total_steps - s->warmup_steps;
    if (span <= 0) return s->lr;
    double frac = (double)(step - s->warmup_steps) / span;
    if (frac > 1.0) frac = 1.0;
    if (frac < 0.0) frac = 0.0;
    double coeff = s->kind == GML_SCHED_COSINE ? 0.5 * (1.0 + cos(3.14159265358979323846 * frac)) : 1.0 - frac;
    return min_lr + coeff * (s->lr - min_lr);
}

gml_status gml_sched_parse(const char *name, gml_sched_kind *out) {
    if (strcmp(name, "cosine") == 0) *out = GML_SCHED_COSINE;
    else if (strcmp(name, "linear") == 0) *out = GML_SCHED_LINEAR;
    else if (strcmp(name, "constant") == 0) *out = GML_SCHED_CONSTANT;
    else return gml_error_set(GML_ERR_BAD_INPUT, "unknown schedule '%s' (accepted: cosine, linear, constant)", name);
    return GML_OK;
}

gml_status gml_adamw_create(gml_gpt *model, const gml_adamw_config *cfg, gml_adamw **out) {
    return gml_adamw_create_range(model, cfg, 0, gml_gpt_num_params(model), out);
}

static gml_status create(gml_gpt *model, const gml_adamw_config *cfg, size_t lo, size_t hi, float *param,
                         void *param_act, size_t param_lo, gml_adamw **out) {
    *out = NULL;
    gml_backend *be = gml_gpt_backend(model);
    if (lo > hi || hi > gml_gpt_num_params(model))
        return gml_error_set(GML_ERR_INVALID_ARG, "optimizer range [%zu, %zu) outside the %zu parameters", lo, hi,
                             gml_gpt_num_params(model));
    if (!param)
        return gml_error_set(GML_ERR_INVALID_ARG, "optimizer without master weights (a sharded model's optimizer "
                             "is made by parallel/zero.c with gml_adamw_create_shard)");
    size_t P = hi > lo ? hi - lo : 1; /* keep one element so the buffers exist */
    gml_status st = GML_OK;
    gml_adamw *o = calloc(1, sizeof *o);
    if (!o) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    o->model = model;
    o->cfg = *cfg;
    o->lo = lo;
    o->hi = hi;
    o->param = param;
    o->param_act = param_act;
    o->param_lo = param_lo;
    GML_CHECK_GOTO(be->iface->alloc(be, (void **)&o->m, P * 4), st, fail);
    GML_CHECK_GOTO(be->iface->alloc(be, (void **)&o->v, P * 4), st, fail);
    GML_CHECK_GOTO(be->iface->alloc(be, (void **)&o->scalar, 4), st, fail);
    GML_CHECK_GOTO(be->iface->memset_zero(be, o->m, P * 4), st, fail);
    GML_CHECK_GOTO(be->iface->memset_zero(be, o->v, P * 4), st, fail);
    GML_CHECK_GOTO(upload_pieces(o, lo, hi, &o->pieces, &o->n_pieces), st, fail);
    *out = o;
    return GML_OK;
fail:
    gml_adamw_destroy(o);
    return st;
}

gml_status gml_adamw_create_range(gml_gpt *model, const gml_adamw_config *cfg, size_t lo, size_t hi,
                                  gml_adamw **out) {
    float *master = gml_gpt_master(model);
    void *compute = gml_gpt_compute(model);
    return create(model, cfg, lo, hi, master, compute != (void *)master ? compute : NULL, 0, out);
}

gml_status gml_adamw_create_shard(gml_gpt *model, const gml_adamw_config *cfg, size_t lo, size_t hi, float *param,
                                  void *param_act, gml_adamw **out) {
    return create(model, cfg, lo, hi, param, param_act, lo, out);
}

void gml_adamw_destroy(gml_adamw *o) {
    if (!o) return;
    free_parts(o);
    gml_backend *be = gml_gpt_backend(o->model);
    if (o->m) be->iface->free(be, o->m);
    if (o->v) be->iface->free(be, o->v);
    if (o->scalar) be->iface->free(be, o->scalar);
    if (o->pieces) be->iface->free(be, o->pieces);
    free(o);
}

int gml_adamw_t(const gml_adamw *o) { return o->t; }
void gml_adamw_set_t(gml_adamw *o, int t) { o->t = t; }
void gml_adamw_range(const gml_adamw *o, size_t *lo, size_t *hi) {
    *lo = o->lo;
    *hi = o->hi;
}
float *gml_adamw_m(gml_adamw *o) { return o->m; }
float *gml_adamw_v(gml_adamw *o) { return o->v; }

gml_status gml_grad_norm(gml_gpt *m, float *scratch_dev, double *norm) {
    gml_backend *be = gml_gpt_backend(m);
    float sumsq = 0.0f;
    GML_CHECK(be->iface->memset_zero(be, scratch_dev, 4));
    GML_CHECK(be->iface->sumsq_accumulate(be, scratch_dev, gml_gpt_grads(m), gml_gpt_num_params(m)));
    GML_CHECK(be->iface->download_f32(be, &sumsq, scratch_dev, GML_DTYPE_F32, 1));
    *norm = sqrt((double)sumsq);
    return GML_OK;
}

gml_status gml_adamw_range_sumsq(gml_adamw *o, const float *g, double *sumsq) {
    gml_backend *be = gml_gpt_backend(o->model);
    float s = 0.0f;
    GML_CHECK(be->iface->memset_zero(be, o->scalar, 4));
    if (o->hi > o->lo) GML_CHECK(be->iface->sumsq_accumulate(be, o->scalar, g, o->hi - o->lo));
    GML_CHECK(be->iface->download_f32(be, &s, o->scalar, GML_DTYPE_F32, 1));
    *sumsq = (double)s;
    return GML_OK;
}

gml_status gml_adamw_begin_step(gml_adamw *o, double lr, double norm) {
    if (!isfinite(norm))
        return gml_error_set(GML_ERR_NUMERIC, "gradient norm is %g at optimizer step %d ---> HINT: lower optim.lr",
                             norm, o->t + 1);
    double scale = 1.0;
    if (o->cfg.grad_clip > 0.0 && norm > o->cfg.grad_clip) scale = o->cfg.grad_clip / (norm + 1e-6);
    o->t++;
    o->step_lr = (float)lr;
    o->step_scale = (float)scale;
    return GML_OK;
}

/* Elements [a, a + n) of the range through a piece table of them (state
 * offsets relative to a). */
static gml_status update(gml_adamw *o, const float *g, size_t a, size_t n, const gml_adamw_piece *pieces, int n_pieces) {
    gml_backend *be = gml_gpt_backend(o->model);
    if (n == 0) return GML_OK;
    return be->iface->adamw_update_pieces(be, o->param, o->param_act, g + a, o->m + a, o->v + a, pieces, n_pieces, n,
                                          o->step_lr, (float)o->cfg.beta1, (float)o->cfg.beta2, (float)o->cfg.eps,
                                          (float)o->cfg.weight_decay, o->step_scale, o->t);
}

gml_status gml_adamw_step_range(gml_adamw *o, double lr, const float *g, double norm) {
    GML_CHECK(gml_adamw_begin_step(o, lr, norm));
    return update(o, g, 0, o->hi - o->lo, o->pieces, o->n_pieces);
}

static void free_parts(gml_adamw *o) {
    gml_backend *be = gml_gpt_backend(o->model);
    for (int j = 0; j < o->parts && o->part_pieces; j++)
        if (o->part_pieces[j]) be->iface->free(be, o->part_pieces[j]);
    free(o->part_pieces);
    free(o->part_n);
    o->part_pieces = NULL;
    o->part_n = NULL;
    o->parts = 0;
}

gml_status gml_adamw_set_parts(gml_adamw *o, int parts, size_t part_len) {
    if (parts < 1 || part_len < 1)
        return gml_error_set(GML_ERR_INVALID_ARG, "gml_adamw_set_parts: %d parts of %zu", parts, part_len);
    if (o->parts == parts && o->part_len == part_len) return GML_OK;
    free_parts(o);
    o->part_pieces = calloc((size_t)parts, sizeof *o->part_pieces);
    o->part_n = calloc((size_t)parts, sizeof *o->part_n);
    if (!o->part_pieces || !o->part_n) {
        free_parts(o);
        return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    }
    o->parts = parts;
    o->part_len = part_len;
    size_t n = o->hi - o->lo;
    for (int j = 0; j < parts; j++) {
        size_t a = (size_t)j * part_len, b = a + part_len < n ? a + part_len : n;
        if (a >= b) continue;
        gml_status st = upload_pieces(o, o->lo + a, o->lo + b, &o->part_pieces[j], &o->part_n[j]);
        if (st != GML_OK) {
            free_parts(o);
            return st;
        }
    }
    return GML_OK;
}

gml_status gml_adamw_update_part(gml_adamw *o, const float *g, int j) {
    if (j < 0 || j >= o->parts)
        return gml_error_set(GML_ERR_INVALID_ARG, "gml_adamw_update_part: part %d of %d", j, o->parts);
    size_t n = o->hi - o->lo, a = (size_t)j * o->part_len;
    if (a >= n) return GML_OK;
    size_t b = a + o->part_len < n ? a + o->part_len : n;
    return update(o, g, a, b - a, o->part_pieces[j], o->part_n[j]);
}

gml_status gml_adamw_step(gml_adamw *o, double lr, double *grad_norm) {
    if (o->lo != 0 || o->hi != gml_gpt_num_params(o->model) || o->param_lo != 0 || !gml_gpt_grads(o->model))
        return gml_error_set(GML_ERR_INVALID_ARG, "gml_adamw_step on a range or shard optimizer: use "
                             "gml_adamw_step_range");
    double norm = 0.0;
    GML_CHECK(gml_grad_norm(o->model, o->scalar, &norm));
    if (grad_norm) *grad_norm = norm;
    return gml_adamw_step_range(o, lr, gml_gpt_grads(o->model), norm);
}
