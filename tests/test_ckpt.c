/* test_ckpt.c — checkpoints end to end through the gml-dist binary (env
 * GML_BINARY, GML_MPIEXEC):
 *  - bit-for-bit resume: 20 steps straight vs 10 steps, a preemption signal
 *    (exit 3 after a committed checkpoint), --resume auto, 10 more: every
 *    logged loss / lr / grad norm and the final weights identical (dropout on);
 *  - damaged files: a flipped byte in a tensor and a truncated file make
 *    --resume auto fall back to the previous checkpoint, saying which tensor
 *    or file, and the run still matches; an explicit damaged PATH and a
 *    checkpoint of another model exit 2 naming file and tensor / key;
 *  - format_version 1 (one state.h5, real datasets; made here from a
 *    version 2 checkpoint) still resumes bit for bit, same content digest;
 *  - rank files: a dp=2 save is one file per rank plus state.h5 whose
 *    tensors are virtual datasets over both; a missing, bit-flipped or
 *    truncated rank file, or a state.h5 of another checkpoint, is named by
 *    `ckpt info` and an explicit --resume (exit 2) and skipped by --resume
 *    auto, which then matches the uninterrupted dp=2 run bit for bit;
 *  - writer faults on dp rank 1 (fails, hangs past the commit timeout, is
 *    killed): the run stops with the cause, the step is never committed,
 *    --resume auto goes on from the previous one;
 *  - crash safety: 50 SIGKILLs at random times of one-process runs and 16
 *    of dp=2 runs (rank 0 or 1, or its background writer while it writes),
 *    all checkpointing every step; after each, `ckpt info` verifies the
 *    latest checkpoint, no process is left behind, and every loss any run
 *    logged equals the uninterrupted run's;
 *  - resharding: stopped at dp=4 ZeRO-3, resumed at dp=2 ZeRO-1, at one
 *    process and at dp=2 ZeRO-2, whose own checkpoint one process and dp=4
 *    (ranges cutting its pieces) resume: the losses continue within
 *    1e-5 of the uninterrupted run. */
#include <dirent.h>
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "checkpoint/h5util.h"
#include "checkpoint/weights.h"
#include "core/backend.h"
#include "core/crc32c.h"
#include "proto/checkpoint.pb-c.h"
#include "tests/cli_util.h"

#define STEPS      20
#define KILL_STEPS 600
/* a wider model for the kill test: its checkpoint writes take long enough
 * that many kills land inside them */
#define KILL_MODEL "model.n_embd=128 model.n_head=4"
#define KILLS      50
#define MP_KILLS   16  /* of dp=2 runs */
#define MP_STEPS   300
/* how a dp=2 run is called everywhere here */
#define DP2 "data.batch_size=2 parallel.zero=1"

static char dir[64];

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/gml_ckpt_XXXXXX");
    if (!mkdtemp(dir)) return -1;
    char path[4096];
    if (cli_prep_words(dir, 30000, 11) != 0) return -1;
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

/* mpiexec -np NP gml-dist DIR/run.yaml ARGS with `env` ("A=1 B=2" or "")
 * set for every rank; returns the exit code, *out (may be NULL) the output. */
static int gml_mpi(int np, const char *env, const char *args, char **out) {
    char cmd[16384], xs[1024] = "";
    size_t n = 0;
    for (const char *p = env; p && *p;) { /* -x NAME for each NAME=VALUE */
        while (*p == ' ') p++;
        const char *eq = strchr(p, '=');
        if (!eq) break;
        n += (size_t)snprintf(xs + n, sizeof xs - n, " -x %.*s", (int)(eq - p), p);
        p = strchr(eq, ' ');
    }
    snprintf(cmd, sizeof cmd, "%s %s --oversubscribe --bind-to none -x OMP_NUM_THREADS=1%s -np %d %s %s/run.yaml %s",
             env, cli_env("GML_MPIEXEC"), xs, np, cli_env("GML_BINARY"), dir, args);
    return cli_run(cmd, out);
}

/* `gml-dist ckpt info PATH`: its exit code; *out gets the output. */
static int ckpt_info(const char *path, char **out) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s ckpt info %s", cli_env("GML_BINARY"), path);
    return cli_run(cmd, out);
}

/* out must contain want, else fail showing it */
static void expect(const char *out, const char *want, const char *what) {
    if (!strstr(out, want)) fail_msg("%s: no '%s' in:\n%s", what, want, out);
}

/* From a run's output: the parameter count ("model: P parameters") and what
 * its resume line says rank 0 read ("resume: ... (step N): B bytes"). */
static void resume_bytes(const char *out, const char *what, double *params, double *bytes) {
    const char *m = strstr(out, "model: "), *r = strstr(out, "resume: ");
    const char *b = r ? strstr(r, "): ") : NULL;
    if (!m || sscanf(m, "model: %lf parameters", params) != 1) fail_msg("%s: no 'model: P parameters'\n%s", what, out);
    if (!b || sscanf(b, "): %lf bytes", bytes) != 1) fail_msg("%s: no 'resume: ... B bytes'\n%s", what, out);
}

/* The name `latest` of checkpoint root ck points at ("" if none). */
static void latest_of(const char *ck, char *name, size_t cap) {
    char path[4096];
    snprintf(path, sizeof path, "%s/latest", ck);
    name[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    if (!fgets(name, (int)cap, f)) name[0] = '\0';
    fclose(f);
    name[strcspn(name, "\n")] = '\0';
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

/* same_steps of the run in DIR/tag against ref (its STEPS steps). */
static int run_matching(const curve *ref, const char *tag, const char *what) {
    char path[4096];
    curve c;
    snprintf(path, sizeof path, "%s/%s", dir, tag);
    read_curve(path, &c, STEPS);
    return same_steps(ref, &c, what);
}

/* The steps a killed run logged completely (its metrics.jsonl ends with a
 * newline) that match ref; 0 when the file is missing or torn. got: scratch. */
static int compare_if_complete(const char *out_dir, const curve *ref, curve *got, int max_steps, const char *what) {
    char path[4096], line[8192];
    snprintf(path, sizeof path, "%s/metrics.jsonl", out_dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int torn = 0;
    while (fgets(line, sizeof line, f)) torn = line[strlen(line) - 1] != '\n';
    fclose(f);
    if (torn) return 0;
    read_curve(out_dir, got, max_steps);
    return same_steps(ref, got, what);
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

/* Resume the run in run_dir, stopped with a checkpoint at step `at`, to the
 * end: every step's loss, lr and norm must be the straight run's. */
static void resume_to_end(const char *run_dir, int at, const char *what) {
    char args[8192], want[64];
    snprintf(args, sizeof args, "train.out_dir=%s --resume auto", run_dir);
    char *out = gml(args, 0);
    snprintf(want, sizeof want, "step_%08d/state.h5 (step %d)", at, at);
    if (!strstr(out, want)) fail_msg("%s: no '%s' in:\n%s", what, want, out);
    free(out);
    curve c;
    read_curve(run_dir, &c, STEPS);
    assert_int_equal(same_steps(&g_straight, &c, what), STEPS);
}

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
    read_curve(a_dir, &g_straight, STEPS);
    assert_int_equal(g_straight.last, STEPS);
    resume_to_end(b_dir, 10, "stopped at 10 + resumed");
    snprintf(p1, sizeof p1, "%s/model.h5", a_dir);
    snprintf(p2, sizeof p2, "%s/model.h5", b_dir);
    same_weights(p1, p2);
    printf("resume: %d steps of loss, lr and grad norm identical to the straight run\n", STEPS);
}

/* The stop file (what train.sbatch writes where mpirun does not forward
 * SIGUSR1): present before the run, it stops it after step 1 with a
 * checkpoint and exit 3 and is deleted; the resumed run then goes to the end
 * on the straight run's curve. */
static void test_stop_file(void **state) {
    (void)state;
    char args[8192], c_dir[1024], stop[1100];
    snprintf(c_dir, sizeof c_dir, "%s/stop_file", dir);
    assert_int_equal(mkdir(c_dir, 0755), 0);
    snprintf(stop, sizeof stop, "%s/STOP", c_dir);
    FILE *f = fopen(stop, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(args, sizeof args, "train.out_dir=%s", c_dir);
    char *out = gml(args, 3);
    if (!strstr(out, "step 1 (stop file)")) fail_msg("want a checkpoint at step 1 for the stop file:\n%s", out);
    free(out);
    assert_int_equal(access(stop, F_OK), -1); /* deleted once the checkpoint was committed */
    resume_to_end(c_dir, 1, "stop file at 1 + resumed");
    printf("stop file: checkpoint at step 1, file deleted, resumed run identical to the straight run\n");
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
    snprintf(file, sizeof file, "%s/step_00000020/rank_00000.h5", ck);
    flip_tensor_byte(file, "adam_m/blocks.1.mlp.fc.weight");
    snprintf(args, sizeof args, "ckpt info %s", ck);
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "%s %s", cli_env("GML_BINARY"), args);
    assert_int_equal(cli_run(cmd, &out), 2);
    expect(out, "tensor 'adam_m/blocks.1.mlp.fc.weight' fails its checksum in '", "ckpt info, flipped byte");
    expect(out, "step_00000020/rank_00000.h5' (elements ", "ckpt info, flipped byte");
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
    assert_int_equal(run_matching(&g_straight, "after_flip", "resumed from 15 after a flipped byte"), 5);
    /* an explicit damaged path: exit 2 naming file and tensor */
    copy_dir(src, ck);
    snprintf(file, sizeof file, "%s/step_00000020/rank_00000.h5", ck);
    flip_tensor_byte(file, "params/wte.weight");
    snprintf(args, sizeof args, "train.out_dir=%s/explicit --resume %s/step_00000020", dir, ck);
    out = gml(args, 2);
    expect(out, "params/wte.weight' fails its checksum", "explicit damaged path");
    expect(out, "step_00000020/state.h5", "explicit damaged path");
    expect(out, "step_00000020/rank_00000.h5", "explicit damaged path");
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

/* /proc: the parent of pid and its state letter (R, S, D, T, Z...); -1 if gone. */
static pid_t proc_parent(pid_t pid, char *state) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* after the command name */
    char st = 0;
    int ppid = -1;
    if (!p || sscanf(p + 1, " %c %d", &st, &ppid) != 2) return -1;
    if (state) *state = st;
    return (pid_t)ppid;
}

/* A live child of `parent`; with rank >= 0 only one whose environment says
 * it is that MPI rank. 0 if none. */
static pid_t find_child(pid_t parent, int rank) {
    DIR *d = opendir("/proc");
    assert_non_null(d);
    struct dirent *e;
    pid_t found = 0;
    while (!found && (e = readdir(d))) {
        pid_t pid = (pid_t)atoi(e->d_name);
        char st = 0;
        if (pid <= 0 || proc_parent(pid, &st) != parent || st == 'Z' || st == 'X') continue;
        if (rank < 0) { /* a writer: a fork of gml-dist (not, say, a singleton's orted) */
            char path[64], comm[64] = "";
            snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
            FILE *f = fopen(path, "r");
            if (f && fgets(comm, sizeof comm, f) && strncmp(comm, "gml-dist", 8) == 0) found = pid;
            if (f) fclose(f);
            continue;
        }
        char path[64], env[65536], want[64];
        snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(env, 1, sizeof env - 1, f);
        fclose(f);
        env[n] = '\0';
        snprintf(want, sizeof want, "OMPI_COMM_WORLD_RANK=%d", rank);
        for (size_t i = 0; i < n; i += strlen(env + i) + 1)
            if (strcmp(env + i, want) == 0) found = pid;
    }
    closedir(d);
    return found;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)(1e9 * (s - (double)(time_t)s))};
    nanosleep(&ts, NULL);
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
    int delivered = 0, verified = 0, compared = 0, resumed = 0, fell_back = 0, in_write = 0;
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
        in_write += find_child(pid, -1) != 0; /* its background writer was writing */
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
        compared += compare_if_complete(out_dir, &ref, &got, KILL_STEPS, "a killed run");
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
    printf("crash safety: %d SIGKILLs delivered of %d (%d while a checkpoint writer ran); after them %d latest "
           "checkpoints verified by `ckpt info`; %d resumes from a checkpoint, %d fell back past a damaged one; %d "
           "logged losses (of every run) all equal to the uninterrupted run's\n",
           delivered, KILLS, in_write, verified, resumed, fell_back, compared);
    assert_true(delivered >= KILLS / 2);
}

/* A format_version 1 checkpoint as the previous gml-dist wrote it (one
 * state.h5, real datasets, a CRC per whole tensor, no rank files), made from
 * version 2 checkpoint src (read through its virtual datasets) in dst. */
static void write_v1(const char *src, const char *dst) {
    hid_t in = H5Fopen(src, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(in >= 0);
    uint8_t *mb = NULL, *cb = NULL;
    size_t mn = 0, cn = 0;
    assert_int_equal(gml_h5_read_bytes(in, "manifest", &mb, &mn), 0);
    assert_int_equal(gml_h5_read_bytes(in, "config", &cb, &cn), 0);
    Gml__CheckpointManifest *man = gml__checkpoint_manifest__unpack(NULL, mn, mb);
    assert_non_null(man);
    hid_t out = H5Fcreate(dst, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(out >= 0);
    for (size_t i = 0; i < man->n_tensors; i++) {
        Gml__TensorEntry *e = man->tensors[i];
        char name[256];
        snprintf(name, sizeof name, "%s/%s", e->group, e->name);
        hid_t d = H5Dopen2(in, name, H5P_DEFAULT);
        assert_true(d >= 0);
        hid_t sp = H5Dget_space(d);
        size_t n = (size_t)H5Sget_simple_extent_npoints(sp);
        float *buf = malloc(n * sizeof *buf);
        assert_non_null(buf);
        assert_true(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
        e->has_crc32c = 1, e->crc32c = gml_crc32c(buf, n * sizeof(float));
        if (H5Lexists(out, e->group, H5P_DEFAULT) <= 0)
            H5Gclose(H5Gcreate2(out, e->group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
        hid_t od = H5Dcreate2(out, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        assert_true(od >= 0 && H5Dwrite(od, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
        H5Dclose(od);
        H5Sclose(sp);
        H5Dclose(d);
        free(buf);
    }
    man->format_version = 1;
    size_t nrf = man->n_rank_files; /* version 1 has no rank files */
    man->n_rank_files = 0;
    man->has_save_id = 0;
    size_t n = gml__checkpoint_manifest__get_packed_size(man);
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    gml__checkpoint_manifest__pack(man, buf);
    assert_true(gml_h5_write_str_attr(out, "format", "gml-checkpoint") >= 0);
    assert_true(gml_h5_write_int_attr(out, "format_version", 1) >= 0);
    assert_true(gml_h5_write_u64_attr(out, "step", (uint64_t)man->step) >= 0);
    assert_true(gml_h5_write_bytes(out, "manifest", buf, n) >= 0);
    assert_true(gml_h5_write_bytes(out, "config", cb, cn) >= 0);
    H5Fclose(out);
    H5Fclose(in);
    man->n_rank_files = nrf;
    gml__checkpoint_manifest__free_unpacked(man, NULL);
    free(buf);
    free(mb);
    free(cb);
}

static void test_format_v1(void **state) {
    (void)state;
    char src[2048], ck[1024], path[4096], args[8192], *out;
    snprintf(ck, sizeof ck, "%s/v1", dir);
    snprintf(path, sizeof path, "mkdir -p %s/step_00000015", ck);
    assert_int_equal(system(path), 0);
    snprintf(src, sizeof src, "%s/straight/ckpt/step_00000015/state.h5", dir);
    snprintf(path, sizeof path, "%s/step_00000015/state.h5", ck);
    write_v1(src, path);
    char *o2;
    assert_int_equal(ckpt_info(src, &o2), 0);
    assert_int_equal(ckpt_info(path, &out), 0);
    expect(out, "format: gml-checkpoint v1", "ckpt info of a version 1 checkpoint");
    const char *d1 = strstr(out, "content digest "), *d2 = strstr(o2, "content digest ");
    assert_non_null(d1);
    assert_non_null(d2);
    assert_memory_equal(d1, d2, 23); /* same content, same digest */
    free(o2);
    free(out);
    snprintf(args, sizeof args, "checkpoint.dir=%s train.out_dir=%s/from_v1 --resume auto", ck, dir);
    out = gml(args, 0);
    expect(out, "step_00000015/state.h5 (step 15)", "resume from version 1");
    free(out);
    assert_int_equal(run_matching(&g_straight, "from_v1", "resumed from a version 1 checkpoint"), 5);
    printf("format_version 1: same content digest as the version 2 original, 5 resumed steps bit-identical\n");
}

static curve g_dp2; /* the uninterrupted dp=2 run, checkpoints at 5 .. 20 */

/* The virtual datasets of state.h5: every params tensor is virtual with
 * relative sources; returns how many map onto more than one rank file. */
static int vds_straddling(const char *state_h5) {
    hid_t f = H5Fopen(state_h5, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t g = H5Gopen2(f, "params", H5P_DEFAULT);
    assert_true(g >= 0);
    hsize_t n = 0;
    assert_true(H5Gget_num_objs(g, &n) >= 0 && n > 0);
    int straddling = 0;
    for (hsize_t i = 0; i < n; i++) {
        char name[256];
        assert_true(H5Gget_objname_by_idx(g, i, name, sizeof name) > 0);
        hid_t d = H5Dopen2(g, name, H5P_DEFAULT);
        hid_t dcpl = H5Dget_create_plist(d);
        assert_int_equal(H5Pget_layout(dcpl), H5D_VIRTUAL);
        size_t cnt = 0;
        assert_true(H5Pget_virtual_count(dcpl, &cnt) >= 0 && cnt >= 1);
        char first[64] = "", file[64];
        int files = 0;
        for (size_t k = 0; k < cnt; k++) {
            assert_true(H5Pget_virtual_filename(dcpl, k, file, sizeof file) > 0);
            assert_true(strncmp(file, "rank_", 5) == 0 && !strchr(file, '/')); /* relative */
            if (strcmp(file, first) != 0) files++, snprintf(first, sizeof first, "%s", file);
        }
        straddling += files > 1;
        H5Pclose(dcpl);
        H5Dclose(d);
    }
    H5Gclose(g);
    H5Fclose(f);
    return straddling;
}

/* The entries of a checkpoint directory, sorted, space-separated. */
static void list_dir(const char *path, char *out, size_t cap) {
    struct dirent **ents;
    int n = scandir(path, &ents, NULL, alphasort);
    assert_true(n >= 0);
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (ents[i]->d_name[0] != '.')
            len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? " " : "", ents[i]->d_name);
        free(ents[i]);
    }
    free(ents);
}

static void test_rank_files(void **state) {
    (void)state;
    char args[8192], src[1024], ck[1024], file[4096], names[1024], *out;
    /* the uninterrupted dp=2 run */
    snprintf(args, sizeof args, DP2 " train.out_dir=%s/dp2", dir);
    int rc = gml_mpi(2, "", args, &out);
    if (rc != 0) fail_msg("dp=2 run: exit %d\n%s", rc, out);
    expect(out, "checkpoint written: step 20 committed: 2 rank files", "dp=2 run");
    free(out);
    snprintf(file, sizeof file, "%s/dp2", dir);
    read_curve(file, &g_dp2, STEPS);
    assert_int_equal(g_dp2.last, STEPS);
    snprintf(src, sizeof src, "%s/dp2/ckpt", dir); /* steps 10, 15, 20 */
    snprintf(file, sizeof file, "%s/step_00000020", src);
    list_dir(file, names, sizeof names);
    assert_string_equal(names, "rank_00000.h5 rank_00001.h5 state.h5"); /* no markers left */
    snprintf(file, sizeof file, "%s/step_00000020/state.h5", src);
    int straddling = vds_straddling(file);
    assert_true(straddling >= 1);
    assert_int_equal(ckpt_info(src, &out), 0);
    expect(out, "rank files: 2", "ckpt info dp=2");
    expect(out, "rank_00001.h5: dp rank 1, elements [", "ckpt info dp=2");
    unsigned long long lo0 = 0, hi0 = 0; /* rank 0's shard: what it reads of the moments at dp=2 */
    const char *r0 = strstr(out, "rank_00000.h5: dp rank 0, elements [");
    assert_non_null(r0);
    assert_int_equal(sscanf(r0, "rank_00000.h5: dp rank 0, elements [%llu, %llu)", &lo0, &hi0), 2);
    assert_true(hi0 > lo0);
    expect(out, "virtual datasets equal to the rank files", "ckpt info dp=2");
    free(out);
    printf("dp=2 save: %s, %d parameter(s) straddling both rank files; ckpt info verified the VDS\n", names,
           straddling);

    /* a missing rank file: named; auto falls back and matches the dp=2 run */
    snprintf(ck, sizeof ck, "%s/rf_damaged", dir);
    copy_dir(src, ck);
    snprintf(file, sizeof file, "%s/step_00000020/rank_00001.h5", ck);
    assert_int_equal(unlink(file), 0);
    assert_int_equal(ckpt_info(ck, &out), 2);
    expect(out, "step_00000020/rank_00001.h5' (dp rank 1's shard) is missing", "ckpt info, missing rank file");
    free(out);
    snprintf(args, sizeof args, DP2 " checkpoint.dir=%s train.out_dir=%s/rf_missing --resume auto", ck, dir);
    rc = gml_mpi(2, "", args, &out);
    if (rc != 0) fail_msg("resume past a missing rank file: exit %d\n%s", rc, out);
    printf("%s", strstr(out, "gml-dist: warning") ? strstr(out, "gml-dist: warning") : out);
    expect(out, "checkpoint step 20 is unusable", "auto past a missing rank file");
    expect(out, "rank_00001.h5' (dp rank 1's shard) is missing; falling back to the previous one",
           "auto past a missing rank file");
    expect(out, "step_00000015/state.h5 (step 15)", "auto past a missing rank file");
    /* at dp=2 ZeRO-1 rank 0 read the weights and the moments of its range only (the pieces of a dp=2
     * checkpoint match the ranges: nothing more) */
    double P = 0, got = 0;
    resume_bytes(out, "dp=2 resume", &P, &got);
    if (got != 12.0 * (double)(hi0 - lo0))
        fail_msg("dp=2 resume: rank 0 read %.0f bytes; 12 x its %llu-element range is %.0f (P = %.0f)", got,
                 hi0 - lo0, 12.0 * (double)(hi0 - lo0), P);
    printf("dp=2 resume: rank 0 read %.0f bytes of the checkpoint's %.0f\n", got, 12.0 * P);
    free(out);
    assert_int_equal(run_matching(&g_dp2, "rf_missing", "dp=2 resumed past a missing rank file"), 5);

    /* a flipped byte in rank 1's file: named with the tensor */
    copy_dir(src, ck);
    snprintf(file, sizeof file, "%s/step_00000020/rank_00001.h5", ck);
    flip_tensor_byte(file, "adam_v/blocks.1.mlp.fc.weight");
    assert_int_equal(ckpt_info(ck, &out), 2);
    expect(out, "tensor 'adam_v/blocks.1.mlp.fc.weight' fails its checksum in '", "ckpt info, flipped rank file");
    expect(out, "step_00000020/rank_00001.h5' (elements 0-4096; stored ", "ckpt info, flipped rank file");
    free(out);
    snprintf(args, sizeof args, "train.out_dir=%s/rf_explicit --resume %s/step_00000020", dir, ck);
    out = gml(args, 2); /* at one process: the explicit path must load */
    expect(out, "adam_v/blocks.1.mlp.fc.weight' fails its checksum in '", "explicit resume, flipped rank file");
    expect(out, "rank_00001.h5", "explicit resume, flipped rank file");
    free(out);
    /* at dp=2 only rank 1 reads that piece of the moments: the job still refuses it, on every rank */
    snprintf(args, sizeof args, DP2 " train.out_dir=%s/rf_explicit2 --resume %s/step_00000020", dir, ck);
    rc = gml_mpi(2, "", args, &out);
    if (rc != 2) fail_msg("dp=2 explicit resume of a flipped moment: exit %d, expected 2\n%s", rc, out);
    expect(out, "adam_v/blocks.1.mlp.fc.weight' fails its checksum in '", "dp=2 resume, flipped rank file");
    expect(out, "(on dp rank 1)", "dp=2 resume, flipped rank file");
    free(out);

    /* a truncated rank file: its size is checked against the manifest */
    copy_dir(src, ck);
    snprintf(file, sizeof file, "%s/step_00000020/rank_00000.h5", ck);
    struct stat sb;
    assert_int_equal(stat(file, &sb), 0);
    assert_int_equal(truncate(file, sb.st_size / 2), 0);
    assert_int_equal(ckpt_info(ck, &out), 2);
    expect(out, "rank_00000.h5' is ", "ckpt info, truncated rank file");
    expect(out, "(truncated or replaced)", "ckpt info, truncated rank file");
    free(out);
    snprintf(args, sizeof args, "checkpoint.dir=%s train.out_dir=%s/rf_trunc --resume auto", ck, dir);
    out = gml(args, 0); /* one process resumes the dp=2 checkpoint */
    expect(out, "checkpoint step 20 is unusable", "auto past a truncated rank file");
    expect(out, "(truncated or replaced); falling back to the previous one", "auto past a truncated rank file");
    expect(out, "step_00000015/state.h5 (step 15)", "auto past a truncated rank file");
    resume_bytes(out, "one-process resume", &P, &got); /* one process keeps every moment: all of it */
    if (got != 12.0 * P) fail_msg("one-process resume read %.0f bytes, 12P = %.0f", got, 12.0 * P);
    free(out);

    /* the top file of another checkpoint over these rank files */
    copy_dir(src, ck);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cp %s/step_00000015/state.h5 %s/step_00000020/state.h5", ck, ck);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(ckpt_info(ck, &out), 2);
    expect(out, "rank_00000.h5' belongs to another checkpoint (step 20", "ckpt info, state.h5 of step 15");
    free(out);
    /* rank 0's file given as the checkpoint */
    snprintf(args, sizeof args, "train.out_dir=%s/rf_rankfile --resume %s/step_00000015/rank_00000.h5", dir, ck);
    out = gml(args, 2);
    expect(out, "is one rank's file of a checkpoint: give the checkpoint directory or its state.h5",
           "a rank file as the checkpoint");
    free(out);
}

/* A dp=2 run whose dp rank 1 writer misbehaves at step 10 (fault: fail,
 * hang, kill); returns its output. Step 10 must never be committed. */
static char *faulty_run(const char *fault, const char *extra_env, const char *ck) {
    char env[512], args[8192], *out, name[64];
    snprintf(env, sizeof env, "GML_TEST_CKPT_WRITER=1,10,%s %s", fault, extra_env);
    char rm[2048];
    snprintf(rm, sizeof rm, "rm -rf %s", ck);
    assert_int_equal(system(rm), 0);
    snprintf(args, sizeof args, DP2 " checkpoint.dir=%s train.out_dir=%s/wf_%s", ck, dir, fault);
    int rc = gml_mpi(2, env, args, &out);
    if (rc == 0 || rc == 3) fail_msg("writer fault '%s': exit %d, expected an error\n%s", fault, rc, out);
    latest_of(ck, name, sizeof name);
    if (strcmp(name, "step_00000005") != 0) fail_msg("writer fault '%s': latest is '%s'\n%s", fault, name, out);
    char path[4096];
    snprintf(path, sizeof path, "%s/step_00000010", ck);
    assert_int_equal(access(path, F_OK), -1);
    char *info;
    if (ckpt_info(ck, &info) != 0) fail_msg("writer fault '%s': the latest checkpoint does not verify\n%s", fault, info);
    free(info);
    return out;
}

static void test_writer_faults(void **state) {
    (void)state;
    char ck[1024], args[8192], *out;
    snprintf(ck, sizeof ck, "%s/wf_ckpt", dir);
    out = faulty_run("fail", "", ck);
    expect(out, "gml-dist: rank 1/2 on ", "failing writer");
    expect(out, "error: checkpoint of step 10: ", "failing writer");
    expect(out, "the checkpoint writer of dp rank 1 failed: ", "failing writer"); /* rank 0's writer */
    expect(out, "injected writer failure (GML_TEST_CKPT_WRITER)", "failing writer");
    free(out);
    /* the run goes on from step 5, as the uninterrupted one */
    snprintf(args, sizeof args, DP2 " checkpoint.dir=%s train.out_dir=%s/wf_after --resume auto", ck, dir);
    int rc = gml_mpi(2, "", args, &out);
    if (rc != 0) fail_msg("resume after a failed writer: exit %d\n%s", rc, out);
    expect(out, "step_00000005/state.h5 (step 5)", "resume after a failed writer");
    free(out);
    assert_int_equal(run_matching(&g_dp2, "wf_after", "dp=2 resumed after a failed writer"), 15);
    out = faulty_run("hang", "GML_CKPT_COMMIT_TIMEOUT_S=2", ck);
    expect(out, "no commit marker from dp rank(s) 1 of 2 after 2 s", "hanging writer");
    expect(out, "(step 10 not committed)", "hanging writer");
    free(out);
    out = faulty_run("kill", "", ck);
    expect(out, "writing the checkpoint of step 10 failed in the background (signal 9", "killed writer");
    free(out);
    printf("writer faults of dp rank 1 (fail, hang past the commit timeout, SIGKILL): each stopped the run, step 10 "
           "never committed, latest step 5 verifies\n");
}



/* dp=2 runs checkpointing every step, SIGKILLed at random: rank 1, rank 1's
 * writer while it writes, rank 0, rank 0's writer, in turn. */
static void test_sigkill_dp2(void **state) {
    (void)state;
    char ck[1024], args[8192], straight[1024], out_dir[2048], cmd[16384];
    snprintf(ck, sizeof ck, "%s/mpkill_ckpt", dir);
    snprintf(straight, sizeof straight, "%s/mpkill_straight", dir);
    snprintf(args, sizeof args, KILL_MODEL " " DP2 " train.steps=%d checkpoint.every_steps=1 "
             "checkpoint.keep_last=2 train.out_dir=%s", MP_STEPS, straight);
    char *out;
    int rc = gml_mpi(2, "", args, &out);
    if (rc != 0) fail_msg("dp=2 reference: exit %d\n%s", rc, out);
    free(out);
    static curve ref, got;
    read_curve(straight, &ref, MP_STEPS);
    assert_int_equal(ref.last, MP_STEPS);
    unsigned seed = 77;
    int killed[4] = {0, 0, 0, 0}, in_writer = 0, finished = 0, verified = 0, compared = 0, resumed = 0;
    double worst_end = 0.0;
    static const char *kinds[4] = {"rank 1's writer", "rank 1", "rank 0's writer", "rank 0"};
    for (int k = 0; k < MP_KILLS; k++) {
        int kind = k % 4, rank = kind < 2 ? 1 : 0, writer = kind % 2 == 0;
        snprintf(out_dir, sizeof out_dir, "%s/mpkill_%02d", dir, k);
        snprintf(cmd, sizeof cmd,
                 "exec %s --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -np 2 %s %s/run.yaml " KILL_MODEL " " DP2
                 " train.steps=%d checkpoint.every_steps=1 checkpoint.keep_last=2 checkpoint.dir=%s train.out_dir=%s "
                 "--resume auto > %s.log 2>&1",
                 cli_env("GML_MPIEXEC"), cli_env("GML_BINARY"), dir, MP_STEPS, ck, out_dir, out_dir);
        pid_t job = fork();
        assert_true(job >= 0);
        if (job == 0) {
            setpgid(0, 0); /* the job's own process group, to clean up a hang */
            execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
            _exit(127);
        }
        /* wait until it trains (some rank has a writer), then a random moment */
        int training = 0;
        for (int i = 0; i < 400 && !training; i++) { /* 8 s at most */
            pid_t r0 = find_child(job, 0), r1 = find_child(job, 1);
            training = (r0 && find_child(r0, -1)) || (r1 && find_child(r1, -1));
            if (!training) sleep_s(0.02);
        }
        sleep_s(0.4 * rand01(&seed));
        pid_t r = find_child(job, rank), victim = 0;
        for (int i = 0; r && writer && i < 200 && !victim; i++) { /* a writer of that rank, caught writing: */
            victim = find_child(r, -1);                          /* stopped, it cannot finish before the kill */
            char st = 0;
            if (victim && (kill(victim, SIGSTOP) != 0 || (sleep_s(0.002), proc_parent(victim, &st)) != r || st != 'T'))
                victim = 0;
            if (!victim) sleep_s(0.005);
        }
        int was_writing = r && !writer && find_child(r, -1) != 0;
        if (!victim) victim = r, writer = 0;
        if (victim && kill(victim, SIGKILL) == 0) {
            killed[writer ? (rank ? 0 : 2) : (rank ? 1 : 3)]++;
            in_writer += was_writing;
        }
        /* the job ends by itself within a minute, leaving nothing behind */
        int status = 0;
        pid_t w = 0;
        double t_kill = now_s();
        for (int i = 0; i < 600 && (w = waitpid(job, &status, WNOHANG)) == 0; i++) sleep_s(0.1);
        if (now_s() - t_kill > worst_end) worst_end = now_s() - t_kill;
        if (w == 0) {
            kill(-job, SIGKILL);
            waitpid(job, &status, 0);
            fail_msg("dp=2 kill %d (%s): the job did not end within 60 s", k, kinds[kind]);
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) { /* ran to the end before the kill: start over, */
            finished++;                                        /* or the next runs would have nothing to do */
            char rm[2048];
            snprintf(rm, sizeof rm, "rm -rf %s", ck);
            assert_int_equal(system(rm), 0);
        }
        for (int i = 0; i < 100 && kill(-job, 0) == 0; i++) sleep_s(0.05);
        if (kill(-job, 0) == 0) {
            kill(-job, SIGKILL);
            fail_msg("dp=2 kill %d (%s): processes left behind", k, kinds[kind]);
        }
        /* whatever `latest` names is complete and verifies */
        char latest[4096];
        snprintf(latest, sizeof latest, "%s/latest", ck);
        if (access(latest, F_OK) == 0) {
            rc = ckpt_info(ck, &out);
            if (rc != 0) fail_msg("after dp=2 kill %d (%s) the latest checkpoint does not verify:\n%s", k, kinds[kind],
                                  out);
            free(out);
            verified++;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s.log", out_dir);
        FILE *lf = fopen(path, "r");
        if (lf) {
            char line[4096];
            while (fgets(line, sizeof line, lf))
                resumed += strncmp(line, "resume: ", 8) == 0 && strstr(line, "(step ") != NULL;
            fclose(lf);
        }
        compared += compare_if_complete(out_dir, &ref, &got, MP_STEPS, "a killed dp=2 run");
    }
    snprintf(out_dir, sizeof out_dir, "%s/mpkill_final", dir);
    snprintf(args, sizeof args, KILL_MODEL " " DP2 " train.steps=%d checkpoint.every_steps=1 checkpoint.keep_last=2 "
             "checkpoint.dir=%s train.out_dir=%s --resume auto", MP_STEPS, ck, out_dir);
    rc = gml_mpi(2, "", args, &out);
    if (rc != 0) fail_msg("final dp=2 run: exit %d\n%s", rc, out);
    free(out);
    read_curve(out_dir, &got, MP_STEPS);
    compared += same_steps(&ref, &got, "the final resumed dp=2 run");
    printf("dp=2 crash safety: SIGKILLs of %s %d, %s %d, %s %d, %s %d (%d of the rank kills while its writer ran); "
           "every job ended within %.1f s of its kill, nothing left behind; %d runs finished first; %d latest "
           "checkpoints verified, %d resumes, %d logged losses all equal to the uninterrupted dp=2 run's\n",
           kinds[0], killed[0], kinds[1], killed[1], kinds[2], killed[2], kinds[3], killed[3], in_writer, worst_end,
           finished, verified, resumed, compared);
    assert_true(killed[0] + killed[2] >= MP_KILLS / 4); /* writers were hit while writing */
    assert_true(killed[0] + killed[1] + killed[2] + killed[3] >= MP_KILLS / 2);
}

/* Stop at dp=4 ZeRO-3 after 10 steps; resume at dp=2 ZeRO-1, at 1 process and
 * at dp=2 ZeRO-2, which stops at 15 for one process to resume. */
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
             "GML_TEST_SIGNAL_AT_STEP -np 4 %s %s/run.yaml %s data.batch_size=2 parallel.zero=3 "
             "checkpoint.dir=%s/rs_ckpt train.out_dir=%s/rs_dp4",
             mpi, bin, dir, common, dir, dir);
    int rc = cli_run(cmd, &out);
    if (rc != 3) fail_msg("dp=4 stop: exit %d\n%s", rc, out);
    free(out);
    char tdir[5][2048], args[8192];
    static const char *what[5] = {"dp=4 zero=3 -> dp=2 zero=1", "dp=4 zero=3 -> 1 process",
                                  "dp=4 zero=3 -> dp=2 zero=2", "dp=2 zero=2 -> 1 process",
                                  "dp=2 zero=2 -> dp=4 zero=1"};
    static const int first[5] = {11, 11, 11, 16, 16}, last[5] = {STEPS, STEPS, 15, STEPS, STEPS};
    snprintf(tdir[0], sizeof tdir[0], "%s/rs_dp2", dir);
    snprintf(args, sizeof args, "%s data.batch_size=4 parallel.zero=1 checkpoint.dir=%s/rs_ckpt train.out_dir=%s "
             "--resume auto", common, dir, tdir[0]);
    rc = gml_mpi(2, "", args, &out);
    if (rc != 0) fail_msg("resume at dp=2: exit %d\n%s", rc, out);
    free(out);
    snprintf(cmd, sizeof cmd,
             "OMP_NUM_THREADS=1 %s %s/run.yaml %s data.batch_size=8 checkpoint.dir=%s/rs_ckpt train.out_dir=%s/rs_dp1 "
             "--resume auto", bin, dir, common, dir, dir);
    snprintf(tdir[1], sizeof tdir[1], "%s/rs_dp1", dir);
    rc = cli_run(cmd, &out);
    if (rc != 0) fail_msg("resume at 1 process: exit %d\n%s", rc, out);
    free(out);
    /* ZeRO-2 at dp=2 reads the dp=4 ZeRO-3 checkpoint and writes one at step 15 (stopped), which one
     * process resumes */
    snprintf(tdir[2], sizeof tdir[2], "%s/rs_z3", dir);
    snprintf(args, sizeof args, "%s data.batch_size=4 parallel.zero=2 checkpoint.dir=%s/rs_ckpt3 train.out_dir=%s "
             "--resume %s/rs_ckpt/step_00000010", common, dir, tdir[2], dir);
    rc = gml_mpi(2, "GML_TEST_SIGNAL_AT_STEP=15", args, &out);
    if (rc != 3) fail_msg("dp=2 zero=2 resume and stop at 15: exit %d\n%s", rc, out);
    free(out);
    char ck3[2048];
    snprintf(ck3, sizeof ck3, "%s/rs_ckpt3", dir);
    assert_int_equal(ckpt_info(ck3, &out), 0);
    expect(out, "layout: 2 rank(s), dp 2 tp 1 pp 1, zero 2", "the dp=2 ZeRO-2 checkpoint");
    free(out);
    snprintf(tdir[3], sizeof tdir[3], "%s/rs_z3_dp1", dir);
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 %s %s/run.yaml %s data.batch_size=8 checkpoint.dir=%s "
             "train.out_dir=%s --resume auto", bin, dir, common, ck3, tdir[3]);
    rc = cli_run(cmd, &out);
    if (rc != 0) fail_msg("dp=2 ZeRO-2 checkpoint at 1 process: exit %d\n%s", rc, out);
    expect(out, "step_00000015/state.h5 (step 15)", "dp=2 ZeRO-2 checkpoint at 1 process");
    free(out);
    /* and at dp=4: each rank's moment range is half of one dp=2 piece, read whole, verified and cut */
    snprintf(tdir[4], sizeof tdir[4], "%s/rs_z3_dp4", dir);
    snprintf(args, sizeof args, "%s data.batch_size=2 parallel.zero=1 checkpoint.dir=%s train.out_dir=%s "
             "--resume auto", common, ck3, tdir[4]);
    rc = gml_mpi(4, "", args, &out);
    if (rc != 0) fail_msg("dp=2 ZeRO-2 checkpoint at dp=4: exit %d\n%s", rc, out);
    expect(out, "step_00000015/state.h5 (step 15)", "dp=2 ZeRO-2 checkpoint at dp=4");
    free(out);
    static curve ref, c;
    char rdir[2048];
    snprintf(rdir, sizeof rdir, "%s/rs_ref", dir);
    read_curve(rdir, &ref, STEPS);
    for (int i = 0; i < 5; i++) {
        read_curve(tdir[i], &c, STEPS);
        double worst = 0;
        for (int s = first[i]; s <= last[i]; s++) {
            assert_true(c.loss[s][0] != '\0');
            double a = strtod(ref.loss[s], NULL), b = strtod(c.loss[s], NULL), e = fabs(a - b) / fabs(a);
            if (e > worst) worst = e;
            if (!(e <= 1e-5)) fail_msg("%s step %d: loss %.9g vs %.9g", tdir[i], s, b, a);
        }
        printf("resharded %s: steps %d-%d within %.2e of the uninterrupted run (bound 1e-5)\n", what[i], first[i],
               last[i], worst);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_bit_for_bit),
        cmocka_unit_test(test_stop_file),
        cmocka_unit_test(test_damaged_checkpoints),
        cmocka_unit_test(test_format_v1),
        cmocka_unit_test(test_rank_files),
        cmocka_unit_test(test_writer_faults),
        cmocka_unit_test(test_sigkill_at_random_points),
        cmocka_unit_test(test_sigkill_dp2),
        cmocka_unit_test(test_reshard),
    };
    /* GML_TEST_FILTER=test_sigkill_dp2 (a glob) runs just those; the tests
     * after test_resume_bit_for_bit need it too */
    if (getenv("GML_TEST_FILTER")) cmocka_set_test_filter(getenv("GML_TEST_FILTER"));
    return cmocka_run_group_tests(tests, setup, teardown);
}
