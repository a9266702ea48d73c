/* test_ckpt.c — checkpoints end to end through the gml-dist binary (env
 * GML_BINARY, GML_MPIEXEC):
 *  - bit-for-bit resume: 20 steps straight vs 10 steps, a preemption signal
 *    (exit 3 after a committed checkpoint), --resume auto, 10 more: every
 *    logged loss / lr / grad norm and the final weights identical (dropout on);
 *  - damaged files: a flipped byte in a tensor and a truncated file make
 *    --resume auto fall back to the previous checkpoint, saying which tensor
 *    or file, and the run still matches; an explicit damaged PATH and a
 *    checkpoint of another model exit 2 naming file and tensor / key;
 *  - crash safety: 50 SIGKILLs at random times of runs that checkpoint every
 *    step; after each, `ckpt info` verifies the latest checkpoint, and every
 *    loss any run logged equals the uninterrupted run's;
 *  - resharding: stopped at dp=4 ZeRO-2, resumed at dp=2 ZeRO-1 and at one
 *    process, the losses continue within 1e-5 of the uninterrupted run. */
#include <hdf5.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "checkpoint/weights.h"
#include "core/backend.h"
#include "tests/cli_util.h"

#define STEPS      20
#define KILL_STEPS 600
/* a wider model for the kill test: its checkpoint writes take long enough
 * that many kills land inside them */
#define KILL_MODEL "model.n_embd=128 model.n_head=4"
#define KILLS      50

static char dir[64];

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/gml_ckpt_XXXXXX");
    if (!mkdtemp(dir)) return -1;
    char path[4096], cmd[8192];
    snprintf(path, sizeof path, "%s/text.txt", dir);
    if (cli_write_words(path, 30000, 11) != 0) return -1;
    snprintf(cmd, sizeof cmd, "%s prep --tokenizer char --out %s/data.h5 %s", cli_env("GML_BINARY"), dir, path);
    if (cli_run(cmd, NULL) != 0) return -1;
    snprintf(path, sizeof path, "%s/run.yaml", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f,
            "model: {n_layer: 2, n_head: 2, n_embd: 32, block_size: 32, dropout: 0.1}\n"
            "data: {path: %s/data.h5, batch_size: 4}\n"
            "optim: {lr: 0.003, warmup_steps: 5}\n"
            "train: {steps: %d, device: cpu}\n"
            "eval: {every: 0, batches: 2}\n"
            "log: {every: 1, tensorboard: false}\n"
            "sample: {tokens: 0}\n"
            "checkpoint: {every_steps: 5, keep_last: 3}\n",
            dir, STEPS);
    fclose(f);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    return cli_rm_rf(dir);
}

/* gml-dist DIR/run.yaml ARGS (one process), expecting exit code `want`. */
static char *gml(const char *args, int want) {
    char cmd[16384], *out;
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 %s %s/run.yaml %s", cli_env("GML_BINARY"), dir, args);
    int rc = cli_run(cmd, &out);
    if (rc != want) fail_msg("`%s` exited %d, expected %d:\n%s", cmd, rc, want, out);
    return out;
}

typedef struct {
    char loss[KILL_STEPS + 1][32], lr[KILL_STEPS + 1][32], norm[KILL_STEPS + 1][32];
    int last;
} curve;

static void read_curve(const char *out_dir, curve *c, int max_steps) {
    char path[4096];
    memset(c, 0, sizeof *c);
    snprintf(path, sizeof path, "%s/metrics.jsonl", out_dir);
    c->last = cli_train_values(path, "loss", c->loss, max_steps);
    cli_train_values(path, "lr", c->lr, max_steps);
    cli_train_values(path, "grad_norm", c->norm, max_steps);
}

/* Every step `b` logged equals `a` as printed (%.9g). Returns how many. */
static int same_steps(const curve *a, const curve *b, const char *what) {
    int n = 0;
    for (int s = 1; s <= b->last; s++) {
        if (!b->loss[s][0]) continue;
        if (strcmp(a->loss[s], b->loss[s]) || strcmp(a->lr[s], b->lr[s]) || strcmp(a->norm[s], b->norm[s]))
            fail_msg("%s: step %d differs: loss %s vs %s, lr %s vs %s, norm %s vs %s", what, s, b->loss[s],
                     a->loss[s], b->lr[s], a->lr[s], b->norm[s], a->norm[s]);
        n++;
    }
    return n;
}

/* Final weights of two runs, bit for bit. */
static void same_weights(const char *a, const char *b) {
    gml_backend *be;
    assert_int_equal(gml_backend_create("cpu", 0, &be), GML_OK);
    float *w[2] = {NULL, NULL};
    size_t n = 0;
    const char *files[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        gml_gpt_config c;
        gml_gpt *m;
        assert_int_equal(gml_weights_read_config(files[i], &c), GML_OK);
        assert_int_equal(gml_gpt_create(be, &c, 1, 1, 0, &m), GML_OK);
        assert_int_equal(gml_weights_load(m, files[i]), GML_OK);
        n = gml_gpt_num_params(m);
        w[i] = malloc(n * sizeof(float));
        assert_non_null(w[i]);
        assert_int_equal(gml_gpt_get_params_host(m, w[i]), GML_OK);
        gml_gpt_destroy(m);
    }
    assert_memory_equal(w[0], w[1], n * sizeof(float));
    printf("final weights of %s and %s: %zu parameters bit-identical\n", a, b, n);
    free(w[0]);
    free(w[1]);
    gml_backend_destroy(be);
}

static curve g_straight; /* the uninterrupted 20-step run */

static void test_resume_bit_for_bit(void **state) {
    (void)state;
    char args[8192], a_dir[1024], b_dir[1024], p1[2048], p2[2048];
    snprintf(a_dir, sizeof a_dir, "%s/straight", dir);
    snprintf(b_dir, sizeof b_dir, "%s/stopped", dir);
    snprintf(args, sizeof args, "train.out_dir=%s checkpoint.async=false", a_dir); /* synchronous writes here, */
    free(gml(args, 0));                                                          /* background ones below */
    snprintf(args, sizeof args, "train.out_dir=%s", b_dir);
    setenv("GML_TEST_SIGNAL_AT_STEP", "10", 1);
    char *out = gml(args, 3); /* preempted, checkpoint committed */
    unsetenv("GML_TEST_SIGNAL_AT_STEP");
    assert_non_null(strstr(out, "step 10 (stop signal)"));
    free(out);
    snprintf(args, sizeof args, "train.out_dir=%s --resume auto", b_dir);
    out = gml(args, 0);
    assert_non_null(strstr(out, "step_00000010/state.h5 (step 10)"));
    free(out);
    curve b;
    read_curve(a_dir, &g_straight, STEPS);
    read_curve(b_dir, &b, STEPS);
    assert_int_equal(g_straight.last, STEPS);
    assert_int_equal(same_steps(&g_straight, &b, "stopped at 10 + resumed"), STEPS);
    snprintf(p1, sizeof p1, "%s/model.h5", a_dir);
    snprintf(p2, sizeof p2, "%s/model.h5", b_dir);
    same_weights(p1, p2);
    printf("resume: %d steps of loss, lr and grad norm identical to the straight run\n", STEPS);
}

/* Flip one bit in the middle of dataset group/name of an HDF5 file. */
static void flip_tensor_byte(const char *file, const char *dataset) {
    hid_t f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t d = H5Dopen2(f, dataset, H5P_DEFAULT);
    assert_true(d >= 0);
    haddr_t off = H5Dget_offset(d);
    hsize_t size = H5Dget_storage_size(d);
    H5Dclose(d);
    H5Fclose(f);
    assert_true(off != HADDR_UNDEF && size > 8);
    FILE *fp = fopen(file, "r+b");
    assert_non_null(fp);
    long at = (long)(off + size / 2);
    assert_int_equal(fseek(fp, at, SEEK_SET), 0);
    int c = fgetc(fp);
    assert_true(c != EOF);
    assert_int_equal(fseek(fp, at, SEEK_SET), 0);
    fputc(c ^ 0x10, fp);
    fclose(fp);
}

static void copy_dir(const char *from, const char *to) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "rm -rf %s && cp -r %s %s", to, from, to);
    assert_int_equal(system(cmd), 0);
}

static void test_damaged_checkpoints(void **state) {
    (void)state;
    char src[1024], ck[1024], file[4096], args[8192], *out;
    snprintf(src, sizeof src, "%s/straight/ckpt", dir); /* steps 10, 15, 20 kept */
    snprintf(ck, sizeof ck, "%s/damaged", dir);
    copy_dir(src, ck);
    /* a flipped byte in the newest: named, and auto falls back to step 15 */
    snprintf(file, sizeof file, "%s/step_00000020/state.h5", ck);
    flip_tensor_byte(file, "adam_m/blocks.1.mlp.fc.weight");
    snprintf(args, sizeof args, "ckpt info %s", ck);
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "%s %s", cli_env("GML_BINARY"), args);
    assert_int_equal(cli_run(cmd, &out), 2);
    assert_non_null(strstr(out, "adam_m/blocks.1.mlp.fc.weight' fails its checksum"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s ckpt export %s %s/exported.h5", cli_env("GML_BINARY"), ck, dir);
    assert_int_equal(cli_run(cmd, &out), 2); /* export verifies too */
    assert_non_null(strstr(out, "fails its checksum"));
    free(out);
    snprintf(args, sizeof args, "checkpoint.dir=%s train.out_dir=%s/after_flip --resume auto", ck, dir);
    out = gml(args, 0);
    printf("%s", strstr(out, "gml-dist: warning") ? strstr(out, "gml-dist: warning") : out);
    assert_non_null(strstr(out, "adam_m/blocks.1.mlp.fc.weight' fails its checksum"));
    assert_non_null(strstr(out, "falling back to the previous one"));
    assert_non_null(strstr(out, "step_00000015/state.h5 (step 15)"));
    free(out);
    curve c;
    snprintf(file, sizeof file, "%s/after_flip", dir);
    read_curve(file, &c, STEPS);
    assert_int_equal(same_steps(&g_straight, &c, "resumed from 15 after a flipped byte"), 5);
    /* an explicit damaged path: exit 2 naming file and tensor */
    copy_dir(src, ck);
    snprintf(file, sizeof file, "%s/step_00000020/state.h5", ck);
    flip_tensor_byte(file, "params/wte.weight");
    snprintf(args, sizeof args, "train.out_dir=%s/explicit --resume %s/step_00000020", dir, ck);
    out = gml(args, 2);
    assert_non_null(strstr(out, "params/wte.weight' fails its checksum"));
    assert_non_null(strstr(out, "step_00000020/state.h5"));
    free(out);
    /* truncated newest: falls back, says the file is not complete */
    copy_dir(src, ck);
    snprintf(file, sizeof file, "%s/step_00000020/state.h5", ck);
    FILE *fp = fopen(file, "r+b");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fclose(fp);
    assert_int_equal(truncate(file, size / 2), 0);
    snprintf(args, sizeof args, "checkpoint.dir=%s train.out_dir=%s/after_trunc --resume auto", ck, dir);
    out = gml(args, 0);
    assert_non_null(strstr(out, "step 20 is unusable"));
    assert_non_null(strstr(out, "step_00000015/state.h5 (step 15)"));
    free(out);
    /* a checkpoint of another model: a config error, no fallback */
    snprintf(args, sizeof args, "checkpoint.dir=%s model.n_embd=64 train.out_dir=%s/other --resume auto", src, dir);
    out = gml(args, 2);
    assert_non_null(strstr(out, "holds another model: n_embd = 32 there, 64 in this run's config"));
    free(out);
    /* a missing file */
    snprintf(args, sizeof args, "train.out_dir=%s/missing --resume %s/nope", dir, dir);
    out = gml(args, 2);
    assert_non_null(strstr(out, "cannot be read"));
    free(out);
}

static double rand01(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return (double)((*s >> 8) & 0xffffff) / 16777216.0;
}

static void test_sigkill_at_random_points(void **state) {
    (void)state;
    char ck[1024], args[8192], cmd[16384], straight[1024];
    snprintf(ck, sizeof ck, "%s/kill_ckpt", dir);
    snprintf(straight, sizeof straight, "%s/kill_straight", dir);
    snprintf(args, sizeof args, KILL_MODEL " train.steps=%d checkpoint.every_steps=1 checkpoint.keep_last=2 "
             "train.out_dir=%s", KILL_STEPS, straight);
    free(gml(args, 0));
    static curve ref, got;
    read_curve(straight, &ref, KILL_STEPS);
    assert_int_equal(ref.last, KILL_STEPS);
    unsigned seed = 2026;
    int delivered = 0, verified = 0, compared = 0, resumed = 0, fell_back = 0;
    for (int k = 0; k < KILLS; k++) {
        char out_dir[2048];
        snprintf(out_dir, sizeof out_dir, "%s/kill_%02d", dir, k);
        snprintf(cmd, sizeof cmd,
                 "OMP_NUM_THREADS=1 exec %s %s/run.yaml " KILL_MODEL " train.steps=%d checkpoint.every_steps=1 "
                 "checkpoint.keep_last=2 checkpoint.dir=%s train.out_dir=%s --resume auto > %s.log 2>&1",
                 cli_env("GML_BINARY"), dir, KILL_STEPS, ck, out_dir, out_dir);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
            _exit(127);
        }
        double wait = 0.3 + 0.4 * rand01(&seed); /* startup takes ~0.3 s */
        struct timespec ts = {(time_t)wait, (long)(1e9 * (wait - (double)(time_t)wait))};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (WIFSIGNALED(status)) delivered++;
        else assert_int_equal(WEXITSTATUS(status), 0); /* finished before the kill */
        /* whatever `latest` names is complete and verifies */
        char info[4096], *out;
        snprintf(info, sizeof info, "%s ckpt info %s", cli_env("GML_BINARY"), ck);
        if (access(ck, F_OK) == 0) {
            char latest[4096];
            snprintf(latest, sizeof latest, "%s/latest", ck);
            if (access(latest, F_OK) == 0) {
                int rc = cli_run(info, &out);
                if (rc != 0) fail_msg("after kill %d the latest checkpoint does not verify:\n%s", k, out);
                free(out);
                verified++;
            }
        }
        /* what this run resumed from */
        char path[4096];
        snprintf(path, sizeof path, "%s.log", out_dir);
        FILE *lf = fopen(path, "r");
        if (lf) {
            char line[4096];
            while (fgets(line, sizeof line, lf)) {
                resumed += strncmp(line, "resume: ", 8) == 0 && strstr(line, "(step ") != NULL;
                fell_back += strstr(line, "is unusable") != NULL;
            }
            fclose(lf);
        }
        /* every complete line this run logged matches the straight run */
        snprintf(path, sizeof path, "%s/metrics.jsonl", out_dir);
        if (access(path, F_OK) == 0) {
            FILE *f = fopen(path, "r");
            char line[8192];
            int torn = 0;
            while (fgets(line, sizeof line, f)) torn = line[strlen(line) - 1] != '\n';
            fclose(f);
            if (!torn) {
                read_curve(out_dir, &got, KILL_STEPS);
                compared += same_steps(&ref, &got, "a killed run");
            }
        }
    }
    /* then run to the end */
    char final_dir[2048];
    snprintf(final_dir, sizeof final_dir, "%s/kill_final", dir);
    snprintf(args, sizeof args,
             KILL_MODEL " train.steps=%d checkpoint.every_steps=1 checkpoint.keep_last=2 checkpoint.dir=%s "
             "train.out_dir=%s --resume auto", KILL_STEPS, ck, final_dir);
    char *out = gml(args, 0);
    free(out);
    read_curve(final_dir, &got, KILL_STEPS);
    compared += same_steps(&ref, &got, "the final resumed run");
    printf("crash safety: %d SIGKILLs delivered of %d; after them %d latest checkpoints verified by `ckpt info`; "
           "%d resumes from a checkpoint, %d fell back past a damaged one; %d logged losses (of every run) all "
           "equal to the uninterrupted run's\n",
           delivered, KILLS, verified, resumed, fell_back, compared);
    assert_true(delivered >= KILLS / 2);
}

/* Stop at dp=4 ZeRO-2 after 10 steps; resume at dp=2 ZeRO-1 and at 1 process. */
static void test_reshard(void **state) {
    (void)state;
    char cmd[8192], *out;
    const char *mpi = cli_env("GML_MPIEXEC"), *bin = cli_env("GML_BINARY");
    const char *common = "checkpoint.every_steps=0 log.every=1";
    /* the uninterrupted reference: one process, global batch 8 */
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 %s %s/run.yaml %s data.batch_size=8 train.out_dir=%s/rs_ref", bin,
             dir, common, dir);
    assert_int_equal(cli_run(cmd, NULL), 0);
    snprintf(cmd, sizeof cmd,
             "GML_TEST_SIGNAL_AT_STEP=10 %s --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -x "
             "GML_TEST_SIGNAL_AT_STEP -np 4 %s %s/run.yaml %s data.batch_size=2 parallel.zero=2 "
             "checkpoint.dir=%s/rs_ckpt train.out_dir=%s/rs_dp4",
             mpi, bin, dir, common, dir, dir);
    int rc = cli_run(cmd, &out);
    if (rc != 3) fail_msg("dp=4 stop: exit %d\n%s", rc, out);
    free(out);
    char tdir[2][2048];
    snprintf(cmd, sizeof cmd,
             "%s --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -np 2 %s %s/run.yaml %s data.batch_size=4 "
             "parallel.zero=1 checkpoint.dir=%s/rs_ckpt train.out_dir=%s/rs_dp2 --resume auto",
             mpi, bin, dir, common, dir, dir);
    snprintf(tdir[0], sizeof tdir[0], "%s/rs_dp2", dir);
    rc = cli_run(cmd, &out);
    if (rc != 0) fail_msg("resume at dp=2: exit %d\n%s", rc, out);
    free(out);
    snprintf(cmd, sizeof cmd,
             "OMP_NUM_THREADS=1 %s %s/run.yaml %s data.batch_size=8 checkpoint.dir=%s/rs_ckpt train.out_dir=%s/rs_dp1 "
             "--resume auto", bin, dir, common, dir, dir);
    snprintf(tdir[1], sizeof tdir[1], "%s/rs_dp1", dir);
    rc = cli_run(cmd, &out);
    if (rc != 0) fail_msg("resume at 1 process: exit %d\n%s", rc, out);
    free(out);
    static curve ref, c;
    char rdir[2048];
    snprintf(rdir, sizeof rdir, "%s/rs_ref", dir);
    read_curve(rdir, &ref, STEPS);
    for (int i = 0; i < 2; i++) {
        read_curve(tdir[i], &c, STEPS);
        double worst = 0;
        for (int s = 11; s <= STEPS; s++) {
            assert_true(c.loss[s][0] != '\0');
            double a = strtod(ref.loss[s], NULL), b = strtod(c.loss[s], NULL), e = fabs(a - b) / fabs(a);
            if (e > worst) worst = e;
            if (!(e <= 1e-5)) fail_msg("%s step %d: loss %.9g vs %.9g", tdir[i], s, b, a);
        }
        printf("resharded dp=4 zero=2 -> %s: steps 11-%d within %.2e of the uninterrupted run (bound 1e-5)\n",
               i ? "1 process" : "dp=2 zero=1", STEPS, worst);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_bit_for_bit),
        cmocka_unit_test(test_damaged_checkpoints),
        cmocka_unit_test(test_sigkill_at_random_points),
        cmocka_unit_test(test_reshard),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
