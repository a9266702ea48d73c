/* test_gpt.c — the model, optimizer and weights file on the CPU backend:
 * recompute gives the same gradients, gradient accumulation equals one big
 * batch, AdamW drives the loss of a fixed batch down, the LR schedule follows
 * its closed form, weights survive a save/load, and bad weight files are
 * rejected with a message; a model with sharded_params served by a
 * parameter provider (a test one that keeps full buffers, poisons every
 * window it gets back and checks the schedule's promises) computes exactly
 * what the model with full buffers does. (Loss/gradient values themselves
 * are checked against PyTorch by tests/torch_parity.py.) */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "checkpoint/weights.h"
#include "core/backend.h"
#include "core/gpt.h"
#include "core/optim.h"
#include "core/rng.h"

static const gml_gpt_config CFG = {.n_layer = 2, .n_head = 2, .n_embd = 16, .block_size = 8, .vocab_size = 23,
                                   .padded_vocab_size = 32, .init_std = 0.02f};
enum { B = 4, T = 8 };

#define OK(call) assert_int_equal((call), GML_OK)

static void batch(uint64_t seed, int32_t *in, int32_t *tg, int n) {
    gml_rng r;
    gml_rng_init(&r, seed, 1);
    for (int i = 0; i < n; i++) {
        in[i] = (int32_t)gml_rng_below(&r, (uint64_t)CFG.vocab_size);
        tg[i] = (int32_t)gml_rng_below(&r, (uint64_t)CFG.vocab_size);
    }
}

static float *grads_of(gml_backend *be, int recompute, int micro) {
    gml_gpt *m;
    OK(gml_gpt_create(be, &CFG, B, T, recompute, &m));
    OK(gml_gpt_init_weights(m, 42));
    int32_t in[B * T], tg[B * T];
    batch(7, in, tg, B * T);
    OK(gml_gpt_zero_grads(m));
    int b = B / micro;
    for (int k = 0; k < micro; k++) {
        OK(gml_gpt_forward(m, in + k * b * T, tg + k * b * T, b, T, 1.0f / (B * T)));
        OK(gml_gpt_backward(m));
    }
    float *g = malloc(gml_gpt_num_params(m) * sizeof *g);
    OK(gml_gpt_get_grads_host(m, g));
    gml_gpt_destroy(m);
    return g;
}

static double rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static size_t num_params(gml_backend *be) {
    gml_gpt *m;
    OK(gml_gpt_create(be, &CFG, 1, 1, 0, &m));
    size_t n = gml_gpt_num_params(m);
    gml_gpt_destroy(m);
    return n;
}

static void test_recompute_same_grads(void **state) {
    gml_backend *be = *state;
    size_t P = num_params(be);
    float *a = grads_of(be, 0, 1), *b = grads_of(be, 1, 1);
    assert_memory_equal(a, b, P * sizeof *a); /* same ops in the same order: bit-identical */
    double norm = 0;
    for (size_t i = 0; i < P; i++) norm += (double)a[i] * a[i];
    assert_true(norm > 0);
    free(a);
    free(b);
}

/* head_chunks = 3 at B = 4 (pieces of 2 + 2 sequences, the head's backward
 * done in the forward) against the whole-logits head: the same losses and
 * gradients up to fp32 summation order of the wte gradient; a forward without
 * targets of more sequences than a piece is refused, one piece is kept for
 * logits_row. */
static void test_head_chunks(void **state) {
    gml_backend *be = *state;
    gml_gpt_config c = CFG;
    c.head_chunks = 3;
    gml_gpt *m[2];
    OK(gml_gpt_create(be, &CFG, B, T, 0, &m[0]));
    OK(gml_gpt_create(be, &c, B, T, 0, &m[1]));
    int32_t in[B * T], tg[B * T];
    batch(11, in, tg, B * T);
    size_t P = gml_gpt_num_params(m[0]);
    float *g[2], loss[2];
    float *acc;
    OK(be->iface->alloc(be, (void **)&acc, 4));
    for (int k = 0; k < 2; k++) {
        OK(gml_gpt_init_weights(m[k], 42));
        OK(gml_gpt_zero_grads(m[k]));
        OK(be->iface->memset_zero(be, acc, 4));
        OK(gml_gpt_forward(m[k], in, tg, B, T, 1.0f / (B * T)));
        OK(gml_gpt_loss_accumulate(m[k], acc));
        OK(gml_gpt_backward(m[k]));
        OK(be->iface->download_f32(be, &loss[k], acc, GML_DTYPE_F32, 1));
        g[k] = malloc(P * sizeof *g[k]);
        assert_non_null(g[k]);
        OK(gml_gpt_get_grads_host(m[k], g[k]));
    }
    double e = rel_err(g[1], g[0], P);
    printf("head in pieces of 2 sequences vs whole: loss %.9g vs %.9g, gradients within %.2e\n", (double)loss[1],
           (double)loss[0], e);
    assert_true(fabs((double)loss[1] - loss[0]) <= 1e-6 * fabs((double)loss[0]));
    assert_true(e < 1e-6);
    assert_int_equal(gml_gpt_forward(m[1], in, NULL, B, T, 0.0f), GML_ERR_INVALID_ARG);
    OK(gml_gpt_forward(m[1], in, NULL, 2, T, 0.0f)); /* one piece: all its logits are kept */
    float row[2][32];
    OK(gml_gpt_forward(m[0], in, NULL, 2, T, 0.0f));
    OK(gml_gpt_logits_row(m[0], 1, 3, row[0]));
    OK(gml_gpt_logits_row(m[1], 1, 3, row[1]));
    assert_memory_equal(row[0], row[1], (size_t)CFG.vocab_size * sizeof(float));
    be->iface->free(be, acc);
    for (int k = 0; k < 2; k++) {
        free(g[k]);
        gml_gpt_destroy(m[k]);
    }
}

static void test_grad_accumulation(void **state) {
    gml_backend *be = *state;
    size_t P = num_params(be);
    float *one = grads_of(be, 0, 1), *four = grads_of(be, 0, 4);
    double e = rel_err(four, one, P);
    assert_true(e < 1e-5); /* fp32 summation order only */
    free(one);
    free(four);
}

static void test_adamw_overfits_a_batch(void **state) {
    gml_backend *be = *state;
    gml_gpt *m;
    gml_adamw *opt;
    OK(gml_gpt_create(be, &CFG, B, T, 0, &m));
    OK(gml_gpt_init_weights(m, 3));
    gml_adamw_config oc = {0.9, 0.95, 1e-8, 0.0, 1.0};
    OK(gml_adamw_create(m, &oc, &opt));
    float *acc;
    OK(be->iface->alloc(be, (void **)&acc, 4));
    int32_t in[B * T], tg[B * T];
    batch(11, in, tg, B * T);
    float first = 0, last = 0;
    for (int step = 0; step < 60; step++) {
        OK(gml_gpt_zero_grads(m));
        OK(be->iface->memset_zero(be, acc, 4));
        OK(gml_gpt_forward(m, in, tg, B, T, 1.0f / (B * T)));
        OK(gml_gpt_loss_accumulate(m, acc));
        OK(gml_gpt_backward(m));
        double norm;
        OK(gml_adamw_step(opt, 1e-2, &norm));
        assert_true(isfinite(norm) && norm > 0);
        float s;
        OK(be->iface->download_f32(be, &s, acc, GML_DTYPE_F32, 1));
        if (step == 0) first = s / (B * T);
        last = s / (B * T);
    }
    /* random targets: start near ln(V) = 3.14; memorising 32 tokens goes far below */
    assert_true(fabsf(first - logf((float)CFG.vocab_size)) < 0.2f);
    assert_true(last < 0.5f * first);
    assert_int_equal(gml_adamw_t(opt), 60);
    be->iface->free(be, acc);
    gml_adamw_destroy(opt);
    gml_gpt_destroy(m);
}

/* The step in parts (gml_adamw_set_parts / begin_step / update_part, what
 * ZeRO-1/2 use to send each part while the next is updated) gives the bits
 * of the step in one go, for a range that starts and ends inside tensors,
 * with a short last part and with an empty one. */
static void test_adamw_in_parts(void **state) {
    gml_backend *be = *state;
    size_t P = num_params(be), lo = 7, hi = P - 5, n = hi - lo;
    const int cuts[2][2] = {{3, 0}, {5, 1}}; /* parts; 1: part_len so large that the last part is empty */
    for (int c = 0; c < 2; c++) {
        gml_gpt *ma, *mb;
        gml_adamw *oa, *ob;
        OK(gml_gpt_create(be, &CFG, B, T, 0, &ma));
        OK(gml_gpt_create(be, &CFG, B, T, 0, &mb));
        OK(gml_gpt_init_weights(ma, 8));
        OK(gml_gpt_init_weights(mb, 8));
        gml_adamw_config oc = {0.9, 0.95, 1e-8, 0.1, 0.5}; /* clipping on */
        OK(gml_adamw_create_range(ma, &oc, lo, hi, &oa));
        OK(gml_adamw_create_range(mb, &oc, lo, hi, &ob));
        int parts = cuts[c][0];
        size_t len = cuts[c][1] ? (n + parts - 2) / (parts - 1) : (n + parts - 1) / parts;
        OK(gml_adamw_set_parts(ob, parts, len));
        int32_t in[B * T], tg[B * T];
        for (int step = 0; step < 3; step++) {
            batch(20 + (uint64_t)step, in, tg, B * T);
            gml_gpt *ms[2] = {ma, mb};
            for (int k = 0; k < 2; k++) {
                OK(gml_gpt_zero_grads(ms[k]));
                OK(gml_gpt_forward(ms[k], in, tg, B, T, 1.0f / (B * T)));
                OK(gml_gpt_backward(ms[k]));
            }
            OK(gml_adamw_step_range(oa, 1e-2, gml_gpt_grads(ma) + lo, 0.7));
            OK(gml_adamw_begin_step(ob, 1e-2, 0.7));
            for (int j = parts - 1; j >= 0; j--) OK(gml_adamw_update_part(ob, gml_gpt_grads(mb) + lo, j)); /* any order */
            float *wa = malloc(P * 4), *wb = malloc(P * 4);
            OK(gml_gpt_get_params_host(ma, wa));
            OK(gml_gpt_get_params_host(mb, wb));
            assert_memory_equal(wa, wb, P * 4);
            free(wa);
            free(wb);
        }
        assert_int_equal(gml_adamw_t(ob), 3);
        gml_error_clear();
        assert_int_equal(gml_adamw_update_part(ob, gml_gpt_grads(mb) + lo, parts), GML_ERR_INVALID_ARG);
        gml_adamw_destroy(oa);
        gml_adamw_destroy(ob);
        gml_gpt_destroy(ma);
        gml_gpt_destroy(mb);
    }
}

static void test_lr_schedule(void **state) {
    (void)state;
    gml_lr_schedule s = {GML_SCHED_COSINE, 1e-3, 0.1, 10, 110};
    assert_true(fabs(gml_lr_at(&s, 0) - 1e-4) < 1e-12);   /* (0+1)/10 of peak */
    assert_true(fabs(gml_lr_at(&s, 9) - 1e-3) < 1e-12);   /* end of warmup */
    assert_true(fabs(gml_lr_at(&s, 10) - 1e-3) < 1e-12);  /* cosine starts at peak */
    assert_true(fabs(gml_lr_at(&s, 60) - 5.5e-4) < 1e-12); /* halfway: (1e-3 + 1e-4) / 2 */
    assert_true(fabs(gml_lr_at(&s, 110) - 1e-4) < 1e-12); /* floor */
    s.kind = GML_SCHED_LINEAR;
    assert_true(fabs(gml_lr_at(&s, 35) - (1e-3 - 0.25 * 9e-4)) < 1e-12);
    s.kind = GML_SCHED_CONSTANT;
    assert_true(fabs(gml_lr_at(&s, 80) - 1e-3) < 1e-12);
    gml_sched_kind k;
    gml_error_clear();
    assert_int_equal(gml_sched_parse("cosin", &k), GML_ERR_BAD_INPUT);
    assert_non_null(strstr(gml_error_message(), "cosine"));
}

static void test_weights_round_trip(void **state) {
    gml_backend *be = *state;
    gml_gpt *a, *b;
    OK(gml_gpt_create(be, &CFG, 1, T, 0, &a));
    OK(gml_gpt_create(be, &CFG, 1, T, 0, &b));
    OK(gml_gpt_init_weights(a, 5));
    OK(gml_gpt_init_weights(b, 6));
    char dir[] = "/tmp/gml_weightsXXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/w.h5", dir);
    OK(gml_weights_save(a, path, 0));
    OK(gml_weights_load(b, path));
    size_t P = gml_gpt_num_params(a);
    float *wa = malloc(P * 4), *wb = malloc(P * 4);
    OK(gml_gpt_get_params_host(a, wa));
    OK(gml_gpt_get_params_host(b, wb));
    assert_memory_equal(wa, wb, P * 4);
    gml_gpt_config c2 = CFG;
    c2.n_embd = 32;
    gml_gpt *c;
    OK(gml_gpt_create(be, &c2, 1, T, 0, &c));
    gml_error_clear();
    assert_int_equal(gml_weights_load(c, path), GML_ERR_BAD_INPUT);
    assert_non_null(strstr(gml_error_message(), "n_embd"));
    /* a file that is not HDF5 */
    char bad[256];
    snprintf(bad, sizeof bad, "%s/bad.h5", dir);
    FILE *f = fopen(bad, "w");
    fputs("not hdf5", f);
    fclose(f);
    gml_error_clear();
    assert_int_equal(gml_weights_load(b, bad), GML_ERR_BAD_INPUT);
    assert_non_null(strstr(gml_error_message(), bad));
    gml_error_clear();
    assert_int_equal(gml_weights_load(b, "/nonexistent/w.h5"), GML_ERR_BAD_INPUT);
    unlink(bad);
    unlink(path);
    rmdir(dir);
    free(wa);
    free(wb);
    gml_gpt_destroy(a);
    gml_gpt_destroy(b);
    gml_gpt_destroy(c);
}

static void test_padding_rows_stay_zero(void **state) {
    gml_backend *be = *state;
    gml_gpt *m;
    gml_adamw *opt;
    OK(gml_gpt_create(be, &CFG, B, T, 0, &m));
    OK(gml_gpt_init_weights(m, 9));
    gml_adamw_config oc = {0.9, 0.95, 1e-8, 0.1, 1.0};
    OK(gml_adamw_create(m, &oc, &opt));
    int32_t in[B * T], tg[B * T];
    batch(2, in, tg, B * T);
    for (int s = 0; s < 3; s++) {
        OK(gml_gpt_zero_grads(m));
        OK(gml_gpt_forward(m, in, tg, B, T, 1.0f / (B * T)));
        OK(gml_gpt_backward(m));
        OK(gml_adamw_step(opt, 1e-2, NULL));
    }
    size_t P = gml_gpt_num_params(m);
    float *w = malloc(P * 4);
    OK(gml_gpt_get_params_host(m, w));
    const gml_param_registry *reg = gml_gpt_params(m);
    const gml_param_spec *wte = &reg->specs[gml_params_find(reg, "wte.weight")];
    for (size_t i = (size_t)CFG.vocab_size * CFG.n_embd; i < wte->numel; i++) assert_true(w[wte->offset + i] == 0.0f);
    free(w);
    gml_adamw_destroy(opt);
    gml_gpt_destroy(m);
}

/* ---- a parameter provider over private full buffers (host memory: the CPU
 * backend computes on host pointers) ---- */
typedef struct {
    gml_gpt *m;
    size_t P;
    float *master, *grads; /* (P) */
    float *pwin[3], *gwin[3];
    int pw_unit[3], gw_unit[3]; /* -1: free */
    int fetching[3];            /* prefetched, not yet acquired */
    int prefetches, acquires, grad_units, finishes;
} test_prov;

static size_t unit_n(test_prov *t, int u, size_t *lo) {
    size_t hi;
    gml_gpt_unit_range(t->m, u, lo, &hi);
    return hi - *lo;
}

static void poison(float *w, size_t n) {
    for (size_t i = 0; i < n; i++) w[i] = NAN;
}

static gml_status tp_prefetch(void *ctx, int u) {
    test_prov *t = ctx;
    int w = gml_gpt_unit_window(t->m, u);
    if (t->pw_unit[w] == u) return GML_OK;
    assert_int_equal(t->pw_unit[w], -1); /* the model never holds two units of one window */
    size_t lo, n = unit_n(t, u, &lo);
    assert_true(n <= gml_gpt_window_elems(t->m, w));
    memcpy(t->pwin[w], t->master + lo, n * sizeof(float));
    t->pw_unit[w] = u;
    t->fetching[w] = 1;
    t->prefetches++;
    return GML_OK;
}

static gml_status tp_acquire(void *ctx, int u, void **base) {
    test_prov *t = ctx;
    int w = gml_gpt_unit_window(t->m, u);
    if (t->pw_unit[w] != u) {
        tp_prefetch(ctx, u);
        t->prefetches--; /* not one */
    }
    t->fetching[w] = 0;
    t->acquires++;
    *base = t->pwin[w];
    return GML_OK;
}

static gml_status tp_release(void *ctx, int u) {
    test_prov *t = ctx;
    int w = gml_gpt_unit_window(t->m, u);
    assert_int_equal(t->pw_unit[w], u);
    poison(t->pwin[w], gml_gpt_window_elems(t->m, w)); /* a use after release shows as NaN */
    t->pw_unit[w] = -1;
    t->fetching[w] = 0;
    return GML_OK;
}

static gml_status tp_grads_acquire(void *ctx, int u, float **base) {
    test_prov *t = ctx;
    int w = gml_gpt_unit_window(t->m, u);
    assert_int_equal(t->gw_unit[w], -1);
    size_t lo, n = unit_n(t, u, &lo);
    memcpy(t->gwin[w], t->grads + lo, n * sizeof(float)); /* the sum so far: backward adds to it */
    t->gw_unit[w] = u;
    *base = t->gwin[w];
    return GML_OK;
}

static gml_status tp_grads_release(void *ctx, int u) {
    test_prov *t = ctx;
    int w = gml_gpt_unit_window(t->m, u);
    assert_int_equal(t->gw_unit[w], u);
    size_t lo, n = unit_n(t, u, &lo);
    memcpy(t->grads + lo, t->gwin[w], n * sizeof(float));
    poison(t->gwin[w], gml_gpt_window_elems(t->m, w));
    t->gw_unit[w] = -1;
    t->grad_units++;
    return GML_OK;
}

static gml_status tp_grads_finish(void *ctx) {
    test_prov *t = ctx;
    for (int w = 0; w < 3; w++) assert_int_equal(t->gw_unit[w], -1);
    t->finishes++;
    return GML_OK;
}

static gml_status tp_set(void *ctx, const float *host) {
    test_prov *t = ctx;
    memcpy(t->master, host, t->P * sizeof(float));
    return GML_OK;
}

static gml_status tp_get(void *ctx, float *host) {
    test_prov *t = ctx;
    memcpy(host, t->master, t->P * sizeof(float));
    return GML_OK;
}

static gml_status tp_get_grads(void *ctx, float *host) {
    test_prov *t = ctx;
    memcpy(host, t->grads, t->P * sizeof(float));
    return GML_OK;
}

static gml_status tp_zero_grads(void *ctx) {
    test_prov *t = ctx;
    memset(t->grads, 0, t->P * sizeof(float));
    return GML_OK;
}

/* One run of: a training micro-step, an evaluation forward (logits of one
 * row), two accumulated training micro-steps; losses, logits and gradients
 * out. */
static void provider_run(gml_gpt *m, float *loss3, float *logits, float *grads) {
    gml_backend *be = gml_gpt_backend(m);
    int32_t in[B * T], tg[B * T];
    batch(21, in, tg, B * T);
    float *acc;
    OK(be->iface->alloc(be, (void **)&acc, 4));
    OK(gml_gpt_zero_grads(m));
    for (int k = 0; k < 3; k++) {
        OK(be->iface->memset_zero(be, acc, 4));
        gml_gpt_set_dropout_key(m, 1234u + (uint64_t)k, 0);
        OK(gml_gpt_forward(m, in, tg, B, T, 1.0f / (B * T)));
        OK(gml_gpt_loss_accumulate(m, acc));
        OK(gml_gpt_backward(m));
        OK(be->iface->download_f32(be, &loss3[k], acc, GML_DTYPE_F32, 1));
        if (k == 0) { /* 2 sequences: what a forward without targets may have with the head in pieces */
            OK(gml_gpt_forward(m, in, NULL, 2, T, 0.0f));
            OK(gml_gpt_logits_row(m, 1, T - 1, logits));
        }
    }
    OK(gml_gpt_get_grads_host(m, grads));
    be->iface->free(be, acc);
}

static void sharded_params_with_provider(gml_backend *be, int head_chunks) {
    gml_gpt_config c = CFG;
    c.n_layer = 3; /* an odd count: the head shares a window with block 1 */
    c.dropout = 0.1f;
    c.head_chunks = head_chunks;
    printf("head_chunks %d\n", head_chunks);
    gml_gpt *full, *sh;
    OK(gml_gpt_create(be, &c, B, T, 1, &full));
    c.sharded_params = 1;
    OK(gml_gpt_create(be, &c, B, T, 1, &sh));
    assert_null(gml_gpt_master(sh));
    assert_null(gml_gpt_grads(sh));
    assert_int_equal(gml_gpt_has_hooks(full), 0);
    gml_error_clear();
    int32_t in[T] = {0};
    assert_int_equal(gml_gpt_forward(sh, in, NULL, 1, T, 0.0f), GML_ERR_INVALID_ARG); /* no provider yet */
    assert_non_null(strstr(gml_error_message(), "provider"));
    assert_int_equal(gml_gpt_set_provider(full, &(gml_gpt_provider){0}), GML_ERR_INVALID_ARG);
    assert_int_equal(gml_gpt_set_provider(sh, &(gml_gpt_provider){0}), GML_ERR_INVALID_ARG); /* empty table */

    size_t P = gml_gpt_num_params(sh);
    assert_int_equal(gml_gpt_num_units(sh), c.n_layer + 2);
    size_t covered = 0;
    for (int u = 0; u < gml_gpt_num_units(sh); u++) { /* units tile [0, P) in order */
        size_t lo, hi;
        gml_gpt_unit_range(sh, u, &lo, &hi);
        assert_int_equal(lo, covered);
        covered = hi;
    }
    assert_int_equal(covered, P);
    test_prov t = {.m = sh, .P = P};
    t.master = malloc(P * 4);
    t.grads = calloc(P, 4);
    for (int w = 0; w < 3; w++) {
        t.pwin[w] = malloc(gml_gpt_window_elems(sh, w) * 4);
        t.gwin[w] = malloc(gml_gpt_window_elems(sh, w) * 4);
        t.pw_unit[w] = t.gw_unit[w] = -1;
    }
    gml_gpt_provider p = {&t,         tp_prefetch, tp_acquire, tp_release, tp_grads_acquire, tp_grads_release,
                          tp_grads_finish, tp_set, tp_get, tp_get_grads, tp_zero_grads};
    OK(gml_gpt_set_provider(sh, &p));
    assert_int_equal(gml_gpt_has_hooks(sh), 1);
    OK(gml_gpt_init_weights(full, 77));
    OK(gml_gpt_init_weights(sh, 77)); /* through the provider */

    float la[3], lb[3], ra[CFG.vocab_size], rb[CFG.vocab_size];
    float *ga = malloc(P * 4), *gb = malloc(P * 4), *wa = malloc(P * 4), *wb = malloc(P * 4);
    provider_run(full, la, ra, ga);
    provider_run(sh, lb, rb, gb);
    assert_memory_equal(la, lb, sizeof la); /* the same ops on the same values: bit-identical */
    assert_memory_equal(ra, rb, sizeof ra);
    assert_memory_equal(ga, gb, P * 4);
    OK(gml_gpt_get_params_host(full, wa));
    OK(gml_gpt_get_params_host(sh, wb));
    assert_memory_equal(wa, wb, P * 4);
    int U = c.n_layer + 2;
    /* each of 3 training forwards and 1 evaluation forward prefetches units
     * 1..U-1 and unit 0 (for the head) once; each of 3 backwards the L
     * blocks (the head starts the last one) */
    printf("provider: %d prefetches, %d acquires, %d unit gradients handed over, %d backwards\n", t.prefetches,
           t.acquires, t.grad_units, t.finishes);
    assert_int_equal(t.prefetches, 4 * U + 3 * c.n_layer);
    assert_int_equal(t.grad_units, 3 * U);
    assert_int_equal(t.finishes, 3);
    for (int w = 0; w < 3; w++) { /* nothing left held after a backward */
        assert_int_equal(t.pw_unit[w], -1);
        assert_int_equal(t.gw_unit[w], -1);
    }
    OK(gml_gpt_set_provider(sh, NULL));
    for (int w = 0; w < 3; w++) {
        free(t.pwin[w]);
        free(t.gwin[w]);
    }
    free(t.master);
    free(t.grads);
    free(ga);
    free(gb);
    free(wa);
    free(wb);
    gml_gpt_destroy(full);
    gml_gpt_destroy(sh);
}

/* ZeRO-3's model, fed by a provider, against full buffers: the whole head,
 * and the head in pieces (its backward in the training forward, into unit
 * 0's gradient window). */
static void test_sharded_params_with_provider(void **state) {
    sharded_params_with_provider(*state, 0);
    sharded_params_with_provider(*state, 2);
}

static int setup(void **state) {
    gml_backend *be;
    if (gml_backend_create("cpu", 0, &be) != GML_OK) return -1;
    *state = be;
    return 0;
}

static int teardown(void **state) {
    gml_backend_destroy(*state);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recompute_same_grads), cmocka_unit_test(test_grad_accumulation),
        cmocka_unit_test(test_adamw_overfits_a_batch), cmocka_unit_test(test_adamw_in_parts),
        cmocka_unit_test(test_lr_schedule),
        cmocka_unit_test(test_weights_round_trip), cmocka_unit_test(test_padding_rows_stay_zero),
        cmocka_unit_test(test_sharded_params_with_provider), cmocka_unit_test(test_head_chunks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
