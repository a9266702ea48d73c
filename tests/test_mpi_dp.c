/* test_mpi_dp.c — data parallelism across CPU ranks, end to end through the
 * gml-dist binary under mpiexec (env GML_BINARY, GML_MPIEXEC): the same
 * global batch trained by 1, 2, 3 and 4 ranks (batch 12, 6, 4, 3 sequences
 * per rank; the parameter count does not divide by 3, so one shard holds
 * padding) gives the same loss at every one of 20 steps within 1e-5
 * relative, for ZeRO stages 0, 1, 2 and 3; so does ZeRO-3 with gradient
 * accumulation and dropout (every micro-step reduced into the shard), whose
 * exported weights (gathered from the shards) match one process's and whose
 * samples and best.h5 are made by all ranks together; the model state per
 * rank is what parallel/zero.h's accounting predicts (recomputed here from
 * the model's shape, not read from the code); two runs of one layout print
 * identical losses and gradient norms (ZeRO-2 on 2 ranks, ZeRO-3 on 3); the
 * same for ZeRO 0 and 1 with the embedding's token rows gathered instead of
 * its gradient all-reduced (parallel.embedding_grads=gather); a
 * layout that does not match the job is refused with exit code 2 and a
 * message, and so are ranks started with different configs (MPMD) or that
 * read different data files at the same path (per-rank working
 * directories); and a rank that dies (SIGKILL) or hangs (SIGSTOP) mid-run ends
 * the whole job instead of leaving the others waiting: the hung case through
 * parallel.timeout_s, with a message naming the operation and group. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "checkpoint/weights.h"
#include "core/gpt.h"
#include "tests/cli_util.h"

#define STEPS   20
#define REL_TOL 1e-5
/* the model of run.yaml (setup) */
#define N_LAYER 2
#define N_EMBD  32
#define BLOCK   32

static char dir[64];

/* mpiexec for np ranks: oversubscribed, unbound, one OpenMP thread each. */
static void mpi_cmd(char *cmd, size_t cap, int np, const char *args) {
    snprintf(cmd, cap, "%s --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -x OMP_WAIT_POLICY=passive -np %d %s %s",
             cli_env("GML_MPIEXEC"), np, cli_env("GML_BINARY"), args);
}

/* The value after "key": on every train line of metrics.jsonl, as text
 * (for bit-identity) and as numbers. */
static int train_values(const char *jsonl, const char *key, double *v, char text[][32]) {
    FILE *f = fopen(jsonl, "r");
    assert_non_null(f);
    char line[8192], pat[40];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strstr(line, "\"kind\":\"train\"")) continue;
        const char *p = strstr(line, pat);
        assert_non_null(p);
        p += strlen(pat);
        assert_true(n < STEPS);
        v[n] = strtod(p, NULL);
        size_t k = strcspn(p, ",}");
        snprintf(text[n], 32, "%.*s", (int)(k < 31 ? k : 31), p);
        n++;
    }
    fclose(f);
    return n;
}

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/gml_mpi_dp_XXXXXX");
    if (!mkdtemp(dir)) return -1;
    char path[256];
    if (cli_prep_words(dir, 20000, 7) != 0) return -1;
    snprintf(path, sizeof path, "%s/run.yaml", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f,
            "model: {n_layer: %d, n_head: 2, n_embd: %d, block_size: %d}\n"
            "data: {path: %s/data.h5}\n"
            "optim: {lr: 0.003, warmup_steps: 5, grad_clip: 1.0}\n"
            "train: {steps: %d, device: cpu}\n"
            "eval: {every: 10, batches: 2}\n"
            "log: {every: 1, tensorboard: false}\n"
            "sample: {tokens: 0}\n",
            N_LAYER, N_EMBD, BLOCK, dir, STEPS);
    fclose(f);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return cli_rm_rf(dir);
}

/* "model: N parameters" and "model state B bytes" from rank 0's output */
static size_t after(const char *out, const char *key) {
    const char *p = strstr(out, key);
    if (!p) fail_msg("'%s' not in the output:\n%s", key, out);
    return (size_t)strtoull(p + strlen(key), NULL, 10);
}

/* Model-state bytes of rank 0 by parallel/zero.h's accounting (fp32, CPU:
 * 4 bytes per element of everything), from the model's shape: P parameters,
 * Vp padded vocabulary, and the test model's C, block_size, n_layer. */
static size_t predicted_state(size_t P, size_t Vp, int dp, int zero) {
    size_t padded = (P + (size_t)dp - 1) / (size_t)dp * (size_t)dp, S = padded / (size_t)dp;
    size_t C = N_EMBD;
    if (dp == 1 || zero == 0) return 4 * padded + 4 * padded + 8 * P; /* params, grads, moments */
    if (zero == 1) return 4 * padded + 4 * padded + 8 * S;
    /* windows for the embedding (wte + wpe) and two for blocks (ln1, qkv,
     * proj, ln2, fc, fc proj: 12 C^2 + 13 C), each with 256 bytes of
     * alignment slack */
    size_t E = (Vp + BLOCK) * C, K = 2 * C + (3 * C * C + 3 * C) + (C * C + C) + 2 * C + (4 * C * C + 4 * C) +
                                     (4 * C * C + C);
    assert_true(N_LAYER >= 2); /* else the second block window holds ln_f only */
    /* stage 2: params, moments, gradient shard, gradient windows (4 bytes) */
    if (zero == 2) return 4 * padded + 8 * S + 4 * S + 4 * (E + 2 * K) + 3 * 256;
    /* stage 3: master, moments, gradient shard; windows of parameters and of
     * gradients (4 + 4 bytes) */
    return 4 * S + 8 * S + 4 * S + 8 * (E + 2 * K) + 6 * 256;
}

#define GLOBAL_BATCH 12

/* Train with np ranks, batch GLOBAL_BATCH/np per rank (or per_rank if > 0),
 * ZeRO stage zero and any extra overrides, into DIR/out_<tag>; returns rank
 * 0's model-state bytes. */
static size_t train_with(int np, int per_rank, int zero, const char *extra, const char *tag, double *loss,
                         char loss_txt[][32], double *norm, char norm_txt[][32]) {
    char args[1024], cmd[4096], path[256], *out;
    /* 0.01 MiB buckets: ~11 per step, so most start during backward */
    snprintf(args, sizeof args, "%s/run.yaml data.batch_size=%d parallel.zero=%d parallel.bucket_mib=0.01 "
             "train.out_dir=%s/out_%s %s", dir, per_rank > 0 ? per_rank : GLOBAL_BATCH / np, zero, dir, tag, extra);
    mpi_cmd(cmd, sizeof cmd, np, args);
    int rc = cli_run(cmd, &out);
    if (rc != 0) fail_msg("%d ranks: exit %d:\n%s", np, rc, out);
    size_t P = after(out, "model: "), state = after(out, "model state "), Vp = after(out, "(padded ");
    if (np == 3) assert_true(P % 3 != 0); /* a shard holds padding */
    size_t want = predicted_state(P, Vp, np, zero);
    printf("dp=%d zero=%d: model state %zu bytes on rank 0 (predicted %zu; P = %zu)\n", np, zero, state, want, P);
    assert_int_equal(state, want);
    if (np > 1) assert_non_null(strstr(out, "peak memory per rank (MiB): "));
    if (np > 1 && zero < 2) { /* the reduction overlapped backward */
        /* auto picks the dense reduce for this model: its dX rows are more
         * bytes than its embedding (parallel/zero.h) */
        const char *how = strstr(extra, "embedding_grads=gather") ? "token rows gathered" : "all-reduced after backward";
        if (!strstr(out, how)) fail_msg("dp=%d zero=%d: no '%s' in the output:\n%s", np, zero, how, out);
        size_t ov = after(out, "dp overlap: ");
        printf("dp=%d zero=%d: %zu buckets started during backward\n", np, zero, ov);
        assert_true(ov >= 5);
    }
    if (np > 1 && zero >= 2) { /* every layer's but the embedding's (the last) */
        size_t ov = after(out, "dp overlap: ");
        printf("dp=%d zero=%d: %zu layer gradient reductions started during backward\n", np, zero, ov);
        assert_int_equal(ov, N_LAYER + 1);
    }
    free(out);
    snprintf(path, sizeof path, "%s/out_%s/metrics.jsonl", dir, tag);
    assert_int_equal(train_values(path, "loss", loss, loss_txt), STEPS);
    assert_int_equal(train_values(path, "grad_norm", norm, norm_txt), STEPS);
    return state;
}

static size_t train(int np, int zero, const char *tag, double *loss, char loss_txt[][32], double *norm,
                    char norm_txt[][32]) {
    return train_with(np, 0, zero, "", tag, loss, loss_txt, norm, norm_txt);
}

/* Worst relative loss difference of l against ref over STEPS; fails past REL_TOL. */
static double loss_diff(const double *l, const double *ref, const char *what) {
    double worst = 0;
    for (int i = 0; i < STEPS; i++) {
        double e = fabs(l[i] - ref[i]) / fabs(ref[i]);
        if (e > worst) worst = e;
        if (!(e <= REL_TOL)) fail_msg("%s step %d: loss %.9g vs %.9g (rel %.2e)", what, i + 1, l[i], ref[i], e);
    }
    return worst;
}

static void test_dp_matches_one_process(void **state) {
    (void)state;
    double l1[STEPS], l[STEPS], n1[STEPS], n[STEPS];
    char t1[STEPS][32], t[STEPS][32], u1[STEPS][32], u[STEPS][32];
    train(1, 0, "np1", l1, t1, n1, u1);
    for (int zero = 0; zero <= 3; zero++) {
        size_t prev = 0;
        for (int np = 2; np <= 4; np++) {
            char tag[16], what[32];
            snprintf(tag, sizeof tag, "np%d_z%d", np, zero);
            size_t state = train(np, zero, tag, l, t, n, u);
            /* more ranks, less state each (stage 3 of this 2-layer model only
             * saves from dp = 3 on: its two block windows are 90% of it) */
            if (zero > 0 && prev) assert_true(state < prev);
            prev = state;
            snprintf(what, sizeof what, "dp=%d zero=%d", np, zero);
            double worst = loss_diff(l, l1, what);
            printf("dp=%d zero=%d vs 1 process: worst relative loss difference over %d steps %.2e (bound %.0e); "
                   "loss %.6f -> %.6f\n", np, zero, STEPS, worst, REL_TOL, l[0], l[STEPS - 1]);
        }
    }
    assert_true(l1[STEPS - 1] < l1[0]); /* it trains */
}

/* Weights of DIR/out_<tag>/<file> (a weights file) into a host array of *P. */
static float *weights_of(const char *tag, const char *file, size_t *P) {
    char path[256];
    snprintf(path, sizeof path, "%s/out_%s/%s", dir, tag, file);
    return cli_weights_of(path, P);
}

/* ZeRO-3 with 2 micro-steps per step and dropout: one process with batch 6
 * against 2 ranks x 3 and 3 ranks x 2 (the same 12 sequences per step, the
 * same masks per global element); the weights model.h5 exports (gathered
 * from the shards) match, and samples and best.h5 come out. */
static void test_zero3_accumulation_and_exports(void **state) {
    (void)state;
    double l1[STEPS], l[STEPS], n1[STEPS], n[STEPS];
    char t1[STEPS][32], t[STEPS][32], u1[STEPS][32], u[STEPS][32];
    const char *extra = "train.grad_accum=2 model.dropout=0.1 eval.save_best=true sample.tokens=12 sample.every=10";
    train_with(1, 6, 0, extra, "acc1", l1, t1, n1, u1);
    size_t P1, P;
    float *w1 = weights_of("acc1", "model.h5", &P1);
    for (int np = 2; np <= 3; np++) {
        char tag[16], what[48], path[256];
        snprintf(tag, sizeof tag, "acc%d_z3", np);
        train_with(np, 6 / np, 3, extra, tag, l, t, n, u);
        snprintf(what, sizeof what, "accum 2, dropout, dp=%d zero=3", np);
        double worst = loss_diff(l, l1, what);
        float *w = weights_of(tag, "model.h5", &P);
        assert_int_equal(P, P1);
        double num = 0, den = 0;
        for (size_t i = 0; i < P; i++) {
            num += ((double)w[i] - w1[i]) * ((double)w[i] - w1[i]);
            den += (double)w1[i] * w1[i];
        }
        double werr = sqrt(num / den);
        printf("%s vs 1 process: worst relative loss difference %.2e; exported weights differ by %.2e (relative "
               "L2)\n", what, worst, werr);
        assert_true(werr < 1e-5);
        free(w);
        free(weights_of(tag, "best.h5", &P)); /* written, and a loadable weights file */
        snprintf(path, sizeof path, "%s/out_%s/metrics.jsonl", dir, tag);
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        char line[8192];
        int samples = 0;
        while (fgets(line, sizeof line, f)) samples += strstr(line, "\"kind\":\"sample\"") != NULL;
        fclose(f);
        assert_int_equal(samples, 2); /* steps 10 and 20, generated by all ranks together */
    }
    free(w1);
}

static void test_same_layout_bit_identical(void **state) {
    (void)state;
    double a[STEPS], b[STEPS], na[STEPS], nb[STEPS];
    char ta[STEPS][32], tb[STEPS][32], ua[STEPS][32], ub[STEPS][32];
    static const int layouts[2][2] = {{2, 2}, {3, 3}}; /* (dp, zero) */
    for (int k = 0; k < 2; k++) {
        int np = layouts[k][0], zero = layouts[k][1];
        char tag[16];
        snprintf(tag, sizeof tag, "rep%d_a", k);
        train(np, zero, tag, a, ta, na, ua);
        snprintf(tag, sizeof tag, "rep%d_b", k);
        train(np, zero, tag, b, tb, nb, ub);
        for (int i = 0; i < STEPS; i++) {
            assert_string_equal(ta[i], tb[i]);
            assert_string_equal(ua[i], ub[i]);
        }
        printf("dp=%d zero=%d twice: %d losses and grad norms identical as printed (%%.9g)\n", np, zero, STEPS);
    }
}

/* ZeRO 0 and 1 with the embedding's rows gathered instead of its gradient
 * summed (parallel/dp.h): the same losses as one process, and the same bits
 * twice; with ZeRO-2 the option is refused (exit 2). */
static void test_embedding_rows_gathered(void **state) {
    (void)state;
    double l1[STEPS], l[STEPS], n1[STEPS], n[STEPS];
    char t1[STEPS][32], t[STEPS][32], u1[STEPS][32], u[STEPS][32];
    const char *gather = "parallel.embedding_grads=gather";
    train_with(1, 0, 0, gather, "g_np1", l1, t1, n1, u1); /* one rank: nothing to exchange */
    for (int zero = 0; zero <= 1; zero++)
        for (int np = 2; np <= 4; np++) {
            char tag[16], what[48];
            snprintf(tag, sizeof tag, "g_np%d_z%d", np, zero);
            train_with(np, 0, zero, gather, tag, l, t, n, u);
            snprintf(what, sizeof what, "dp=%d zero=%d, rows gathered", np, zero);
            double worst = loss_diff(l, l1, what);
            printf("%s vs 1 process: worst relative loss difference over %d steps %.2e (bound %.0e)\n", what, STEPS,
                   worst, REL_TOL);
        }
    char a[STEPS][32], ua[STEPS][32];
    train_with(3, 0, 1, gather, "g_np3_z1_a", l, a, n, ua);
    train_with(3, 0, 1, gather, "g_np3_z1_b", l, t, n, u);
    for (int i = 0; i < STEPS; i++) {
        assert_string_equal(a[i], t[i]);
        assert_string_equal(ua[i], u[i]);
    }
    printf("dp=3 zero=1, rows gathered, twice: %d losses and grad norms identical\n", STEPS);

    char args[1024], cmd[4096], *out;
    snprintf(args, sizeof args, "%s/run.yaml data.batch_size=6 parallel.zero=2 %s train.out_dir=%s/out_g_bad", dir,
             gather, dir);
    mpi_cmd(cmd, sizeof cmd, 2, args);
    int rc = cli_run(cmd, &out);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "parallel.embedding_grads = gather needs parallel.zero 0 or 1"));
    free(out);
}

static void test_layout_mismatch_is_bad_input(void **state) {
    (void)state;
    char args[1024], cmd[4096], *out;
    snprintf(args, sizeof args, "%s/run.yaml parallel.dp=3 train.out_dir=%s/out_bad", dir, dir);
    mpi_cmd(cmd, sizeof cmd, 2, args);
    int rc = cli_run(cmd, &out);
    printf("%s", out);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "3 x 1 x 1 = 3, but the job has 2 rank(s)"));
    assert_non_null(strstr(out, "rank 0/2 on ")); /* errors name rank and host */
    free(out);
}

/* Ranks that read different things: each must be refused before training. */
static void test_ranks_must_agree(void **state) {
    (void)state;
    char cmd[8192], *out;
    const char *mpi = cli_env("GML_MPIEXEC"), *bin = cli_env("GML_BINARY");
    const char *opts = "--oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -x OMP_WAIT_POLICY=passive";
    /* one config file, different overrides: rank 1 would start from other weights */
    snprintf(cmd, sizeof cmd, "%s %s -np 1 %s %s/run.yaml train.out_dir=%s/out_agree : -np 1 %s %s/run.yaml "
             "train.seed=2 train.out_dir=%s/out_agree", mpi, opts, bin, dir, dir, bin, dir, dir);
    int rc = cli_run(cmd, &out);
    printf("different train.seed on rank 1: exit %d\n", rc);
    if (rc != 2 || !strstr(out, "is not the same on every rank of this job: rank 1 differs from rank 0") ||
        !strstr(out, "the configuration ("))
        fail_msg("exit %d (want 2 and the ranks named):\n%s", rc, out);
    free(out);
    /* the same relative data path read from two working directories whose
     * files differ (node-local copies): equal configs, different data */
    char a[128], b[128];
    snprintf(a, sizeof a, "%s/host_a", dir);
    snprintf(b, sizeof b, "%s/host_b", dir);
    for (int k = 0; k < 2; k++) {
        const char *d = k ? b : a;
        snprintf(cmd, sizeof cmd, "mkdir -p %s", d);
        assert_int_equal(cli_run(cmd, NULL), 0);
        assert_int_equal(cli_prep_words(d, 20000, 7 + k), 0);
    }
    snprintf(cmd, sizeof cmd, "%s %s -np 1 -wdir %s %s %s/run.yaml data.path=data.h5 train.out_dir=%s/out_agree : "
             "-np 1 -wdir %s %s %s/run.yaml data.path=data.h5 train.out_dir=%s/out_agree", mpi, opts, a, bin, dir,
             dir, b, bin, dir, dir);
    rc = cli_run(cmd, &out);
    printf("data.h5 differs between the ranks' working directories: exit %d\n", rc);
    if (rc != 2 || !strstr(out, "the data file data.h5 (") || !strstr(out, "rank 1 differs from rank 0"))
        fail_msg("exit %d (want 2 and the data file named):\n%s", rc, out);
    free(out);
}

/* Run a 2-rank job whose rank 1 gets `fault` (KILL or STOP) after step 5,
 * under `timeout` so that a hang fails the test instead of stalling it. */
static int faulty_job(const char *fault, double *secs, char **out) {
    char args[1024], inner[4096], cmd[8192];
    snprintf(args, sizeof args, "%s/run.yaml train.steps=100000 data.batch_size=4 parallel.timeout_s=3 "
             "train.out_dir=%s/out_fault", dir, dir);
    mpi_cmd(inner, sizeof inner, 2, args);
    snprintf(cmd, sizeof cmd, "GML_TEST_FAULT=1,5,%s timeout 120 %s", fault, inner);
    /* pass the hook to the ranks */
    char *at = strstr(cmd, " -np ");
    assert_non_null(at);
    char fixed[8192];
    snprintf(fixed, sizeof fixed, "%.*s -x GML_TEST_FAULT%s", (int)(at - cmd), cmd, at);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int rc = cli_run(fixed, out);
    clock_gettime(CLOCK_MONOTONIC, &b);
    *secs = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    return rc;
}

static void test_dead_rank_ends_job(void **state) {
    (void)state;
    double secs;
    char *out;
    int rc = faulty_job("KILL", &secs, &out);
    printf("rank 1 SIGKILLed after step 5: the job ended in %.1f s with exit %d\n", secs, rc);
    if (rc == 0 || rc == 124) fail_msg("exit %d (124: stopped by the test's timeout: a hang)\n%s", rc, out);
    free(out);
}

static void test_hung_rank_times_out(void **state) {
    (void)state;
    double secs;
    char *out;
    int rc = faulty_job("STOP", &secs, &out);
    const char *msg = strstr(out, "did not complete within 3 s");
    printf("rank 1 SIGSTOPped after step 5: the job ended in %.1f s with exit %d: %.260s\n", secs, rc,
           msg ? msg : "(no timeout message)");
    if (rc == 0 || rc == 124) fail_msg("exit %d (124: stopped by the test's timeout: a hang)\n%s", rc, out);
    assert_non_null(msg);
    assert_non_null(strstr(out, "no answer from rank(s) 1 of '")); /* the roll call names the stopped rank */
    assert_non_null(strstr(out, "on group '"));
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dp_matches_one_process),
        cmocka_unit_test(test_zero3_accumulation_and_exports),
        cmocka_unit_test(test_same_layout_bit_identical),
        cmocka_unit_test(test_embedding_rows_gathered),
        cmocka_unit_test(test_layout_mismatch_is_bad_input),
        cmocka_unit_test(test_ranks_must_agree),
        cmocka_unit_test(test_dead_rank_ends_job),
        cmocka_unit_test(test_hung_rank_times_out),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
