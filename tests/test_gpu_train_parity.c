/* test_gpu_train_parity.c — a GPU training run tracks the CPU run: the same
 * small GPT, the same initial weights and the same batches trained for 40
 * AdamW steps on the CUDA backend (bf16 compute, fp32 master) and on the CPU
 * backend (fp32). Every step's loss must agree within LOSS_TOL relative, and
 * the loss must fall on both; once without and once with dropout (both
 * backends draw the same masks, core/dropout.h). And two GPU runs give the
 * same losses and final weights bit for bit (no atomics or other order
 * dependence in any kernel: what bit-for-bit resume will rest on), and the
 * micro-step replayed from a CUDA graph equals the one launched op by op, and
 * the matmul answers timed by kernels/cuda/matmul.cu's lt_tune give the bits
 * of cuBLASLt's first answers (GML_LT_TUNE=0). Skipped (exit 77) without a
 * CUDA device. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/backend.h"
#include "core/gpt.h"
#include "core/optim.h"
#include "core/rng.h"

/* bf16 has an 8-bit mantissa (rel. rounding 2^-9 = 2e-3 per op); through 40
 * steps of training the two runs drift apart slowly. 3% on the loss is far
 * below the loss's own fall (> 30%) and far above what bf16 noise gives. */
#define LOSS_TOL 0.03
#define STEPS 40

static const gml_gpt_config CFG = {.n_layer = 2, .n_head = 4, .n_embd = 64, .block_size = 64, .vocab_size = 50,
                                   .padded_vocab_size = 64, .init_std = 0.02f};
enum { B = 8, T = 64 };

/* params_out: (*n_out) final master weights, or NULL. micro: train through
 * gml_gpt_train_micro (recorded as a CUDA graph from its second call on)
 * instead of forward + loss_accumulate + backward launch by launch. */
static int g_head_chunks; /* gml_gpt_config.head_chunks of the next run */
static int g_n_head;      /* gml_gpt_config.n_head of the next run (0: CFG's) */
static size_t g_cudnn_calls; /* attention calls cuDNN ran in the last run */
/* kernels/cuda/attention_cudnn.cu; absent (NULL) in a build without CUDA */
extern size_t gml_cuda_cudnn_attention_calls(gml_backend *be) __attribute__((weak));

static void run_with(const char *kind, float dropout, int micro, double *losses, float **params_out, size_t *n_out) {
    gml_backend *be;
    gml_gpt *m;
    gml_adamw *opt;
    gml_gpt_config cfg = CFG;
    cfg.dropout = dropout;
    cfg.head_chunks = g_head_chunks;
    if (g_n_head) cfg.n_head = g_n_head;
    assert_int_equal(gml_backend_create(kind, 0, &be), GML_OK);
    assert_int_equal(gml_gpt_create(be, &cfg, B, T, 0, &m), GML_OK);
    assert_int_equal(gml_gpt_init_weights(m, 1), GML_OK);
    gml_adamw_config oc = {0.9, 0.95, 1e-8, 0.1, 1.0};
    assert_int_equal(gml_adamw_create(m, &oc, &opt), GML_OK);
    float *acc;
    assert_int_equal(be->iface->alloc(be, (void **)&acc, 4), GML_OK);
    /* a learnable stream: token t+1 = (3 * token t + 1) mod V with noise */
    gml_rng r;
    gml_rng_init(&r, 99, 3);
    int32_t seq[B * (T + 1)], in[B * T], tg[B * T];
    for (int step = 0; step < STEPS; step++) {
        for (int b = 0; b < B; b++) {
            int32_t x = (int32_t)gml_rng_below(&r, CFG.vocab_size);
            for (int t = 0; t <= T; t++) {
                seq[b * (T + 1) + t] = x;
                x = gml_rng_below(&r, 10) == 0 ? (int32_t)gml_rng_below(&r, CFG.vocab_size) : (3 * x + 1) % CFG.vocab_size;
            }
            for (int t = 0; t < T; t++) {
                in[b * T + t] = seq[b * (T + 1) + t];
                tg[b * T + t] = seq[b * (T + 1) + t + 1];
            }
        }
        assert_int_equal(gml_gpt_zero_grads(m), GML_OK);
        gml_gpt_set_dropout_key(m, 1000 + (uint64_t)step, 0);
        assert_int_equal(be->iface->memset_zero(be, acc, 4), GML_OK);
        if (micro) {
            assert_int_equal(gml_gpt_train_micro(m, in, tg, B, T, 1.0f / (B * T), acc), GML_OK);
        } else {
            assert_int_equal(gml_gpt_forward(m, in, tg, B, T, 1.0f / (B * T)), GML_OK);
            assert_int_equal(gml_gpt_loss_accumulate(m, acc), GML_OK);
            assert_int_equal(gml_gpt_backward(m), GML_OK);
        }
        assert_int_equal(gml_adamw_step(opt, 3e-3, NULL), GML_OK);
        float s;
        assert_int_equal(be->iface->download_f32(be, &s, acc, GML_DTYPE_F32, 1), GML_OK);
        losses[step] = s / (B * T);
    }
    if (params_out) {
        *params_out = malloc(gml_gpt_num_params(m) * sizeof **params_out);
        assert_non_null(*params_out);
        assert_int_equal(gml_gpt_get_params_host(m, *params_out), GML_OK);
        *n_out = gml_gpt_num_params(m);
    }
    be->iface->free(be, acc);
    g_cudnn_calls = gml_cuda_cudnn_attention_calls ? gml_cuda_cudnn_attention_calls(be) : 0;
    gml_adamw_destroy(opt);
    gml_gpt_destroy(m);
    gml_backend_destroy(be);
}

static void run(const char *kind, float dropout, double *losses, float **params_out, size_t *n_out) {
    run_with(kind, dropout, 0, losses, params_out, n_out);
}

static void curves_track(float dropout) {
    double cpu[STEPS], gpu[STEPS], worst = 0;
    printf("dropout %.2f\n", (double)dropout);
    run("cpu", dropout, cpu, NULL, NULL);
    run("cuda", dropout, gpu, NULL, NULL);
    for (int i = 0; i < STEPS; i++) {
        double e = fabs(gpu[i] - cpu[i]) / cpu[i];
        if (e > worst) worst = e;
        if (i % 5 == 0 || i == STEPS - 1) printf("step %2d  cpu %.5f  gpu %.5f  rel %.2e\n", i + 1, cpu[i], gpu[i], e);
        assert_true(isfinite(gpu[i]));
        assert_true(e <= LOSS_TOL);
    }
    printf("worst relative loss difference over %d steps: %.3e (bound %.2f)\n", STEPS, worst, LOSS_TOL);
    assert_true(cpu[STEPS - 1] < 0.7 * cpu[0]);
    assert_true(gpu[STEPS - 1] < 0.7 * gpu[0]);
}

static void test_gpu_runs_bit_identical(void **state) {
    (void)state;
    double a[STEPS], b[STEPS];
    float *pa, *pb;
    size_t n = 0, nb = 0;
    run("cuda", 0.1f, a, &pa, &n);
    run("cuda", 0.1f, b, &pb, &nb);
    assert_memory_equal(a, b, sizeof a);
    assert_int_equal(n, nb);
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) differ += memcmp(&pa[i], &pb[i], sizeof(float)) != 0;
    printf("two GPU runs of %d steps: losses identical, %zu of %zu weights differ\n", STEPS, differ, n);
    assert_int_equal(differ, 0);
    free(pa);
    free(pb);
}

/* Two runs' STEPS losses and final weights (na, nb of them) are equal bit
 * for bit; a differing loss is reported with the step and both values.
 * Frees both weight arrays. */
static void assert_runs_identical(const double *la, const double *lb, float *pa, float *pb, size_t na, size_t nb,
                                  const char *a, const char *b) {
    assert_int_equal(na, nb);
    for (int s = 0; s < STEPS; s++) {
        if (memcmp(&la[s], &lb[s], sizeof la[s]) != 0) fail_msg("step %d: loss %.9g %s, %.9g %s", s, la[s], a, lb[s], b);
    }
    assert_memory_equal(pa, pb, na * sizeof *pa);
    free(pa);
    free(pb);
}

/* The recorded micro-step (CUDA graph, replayed from the third step on) does
 * exactly the work of the launch-by-launch one: same losses and weights, bit
 * for bit, over every step. */
static void test_graph_replay_bit_identical(void **state) {
    (void)state;
    double la[STEPS], lb[STEPS];
    float *pa = NULL, *pb = NULL;
    size_t na = 0, nb = 0;
    run_with("cuda", 0.0f, 0, la, &pa, &na);
    run_with("cuda", 0.0f, 1, lb, &pb, &nb);
    assert_runs_identical(la, lb, pa, pb, na, nb, "launch by launch", "replayed");
}

/* Sets (val) or unsets (NULL) the environment variable var; returns its old
 * value for env_restore (NULL: it was unset). */
static char *env_set(const char *var, const char *val) {
    const char *old = getenv(var);
    char *saved = old ? strdup(old) : NULL;
    if (val) assert_int_equal(setenv(var, val, 1), 0);
    else assert_int_equal(unsetenv(var), 0);
    return saved;
}
static void env_restore(const char *var, char *saved) {
    if (saved) assert_int_equal(setenv(var, saved, 1), 0);
    else assert_int_equal(unsetenv(var), 0);
    free(saved);
}

/* Timed matmul answers change nothing: a run with lt_tune's choices and a
 * run with the heuristic's first answers (GML_LT_TUNE=0) have the same
 * losses and weights, bit for bit. */
static void test_tuned_matmuls_bit_identical(void **state) {
    (void)state;
    double la[STEPS], lb[STEPS];
    float *pa = NULL, *pb = NULL;
    size_t na = 0, nb = 0;
    char *saved = env_set("GML_LT_TUNE", NULL);
    run_with("cuda", 0.0f, 1, la, &pa, &na);
    assert_int_equal(setenv("GML_LT_TUNE", "0", 1), 0);
    run_with("cuda", 0.0f, 1, lb, &pb, &nb);
    env_restore("GML_LT_TUNE", saved);
    assert_runs_identical(la, lb, pa, pb, na, nb, "tuned", "with the first answers");
    printf("tuned matmuls vs the heuristic's first answers: %d losses and %zu weights identical\n", STEPS, na);
}

/* One head of 64 channels (hd 64) with GML_ATTENTION=cudnn: attention,
 * forward and backward, goes through cuDNN's fused attention
 * (kernels/cuda/attention_cudnn.cu) where this build has cuDNN (the default,
 * auto, leaves calls this small to our kernels). It tracks the CPU run, and
 * the micro-step replayed from CUDA graphs (cuDNN's kernels recorded in
 * them) equals the launch-by-launch run bit for bit. */
static void test_cudnn_attention_track_and_replay(void **state) {
    (void)state;
    char *saved = env_set("GML_ATTENTION", "cudnn");
    g_n_head = 1;
    curves_track(0.0f);
    double la[STEPS], lb[STEPS];
    float *pa = NULL, *pb = NULL;
    size_t na = 0, nb = 0;
    run_with("cuda", 0.0f, 0, la, &pa, &na);
    const size_t calls_launched = g_cudnn_calls;
    run_with("cuda", 0.0f, 1, lb, &pb, &nb);
    const size_t calls_replayed = g_cudnn_calls;
    g_n_head = 0;
    env_restore("GML_ATTENTION", saved);
    printf("hd 64: cuDNN ran %zu attention calls launch by launch, %zu recording or outside graphs\n",
           calls_launched, calls_replayed);
#ifdef GML_HAVE_CUDNN
    assert_true(calls_launched >= STEPS);
    assert_true(calls_replayed >= 1);
#endif
    assert_runs_identical(la, lb, pa, pb, na, nb, "launch by launch", "replayed");
}

/* The head in pieces (head_chunks = 3: 3 + 3 + 2 sequences, its backward
 * inside the forward; what training uses) tracks the whole head on the GPU:
 * the only difference is the bf16 rounding of the wte gradient's sum. */
static void test_head_chunks_track(void **state) {
    (void)state;
    double la[STEPS], lb[STEPS];
    run_with("cuda", 0.0f, 1, la, NULL, NULL);
    g_head_chunks = 3;
    run_with("cuda", 0.0f, 1, lb, NULL, NULL);
    g_head_chunks = 0;
    double worst = 0;
    for (int s = 0; s < STEPS; s++) {
        double e = fabs(la[s] - lb[s]) / fabs(la[s]);
        if (e > worst) worst = e;
    }
    printf("head in 3 pieces vs whole on the GPU: worst relative loss difference over %d steps %.2e (bound 1e-3)\n",
           STEPS, worst);
    assert_true(worst < 1e-3);
}

static void test_loss_curves_track(void **state) {
    (void)state;
    curves_track(0.0f);
}

static void test_loss_curves_track_dropout(void **state) {
    (void)state;
    curves_track(0.1f);
}

int main(void) {
    if (gml_backend_cuda_device_count() == 0) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_loss_curves_track),
                                       cmocka_unit_test(test_loss_curves_track_dropout),
                                       cmocka_unit_test(test_gpu_runs_bit_identical),
                                       cmocka_unit_test(test_graph_replay_bit_identical),
                                       cmocka_unit_test(test_tuned_matmuls_bit_identical),
                                       cmocka_unit_test(test_head_chunks_track),
                                       cmocka_unit_test(test_cudnn_attention_track_and_replay)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
