/* test_gpt.c — the model, optimizer and weights file on the CPU backend:
 * recompute gives the same gradients, gradient accumulation equals one big
 * batch, AdamW drives the loss of a fixed batch down, the LR schedule follows
 * its closed form, weights survive a save/load, and bad weight files are
 * rejected with a message. (Loss/gradient values themselves are checked
 * against PyTorch by tests/torch_parity.py.) */
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
        cmocka_unit_test(test_adamw_overfits_a_batch), cmocka_unit_test(test_lr_schedule),
        cmocka_unit_test(test_weights_round_trip), cmocka_unit_test(test_padding_rows_stay_zero),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
