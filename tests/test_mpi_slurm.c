/* test_mpi_slurm.c — cluster/slurm/train.sbatch as SLURM runs it, on 2 CPU
 * ranks: the batch shell started with SLURM's job variables in a scratch
 * directory, SIGUSR1 sent to it once training is under way (what
 * `--signal=B:USR1@120` does before the time limit). The script must pass
 * the signal to the ranks, which commit a checkpoint and exit 3; the script
 * then requeues the job and exits 3. Started again (the requeued job: same
 * job id), it resumes from that checkpoint in the same run directory and is
 * preempted once more the same way. SIGTERM to every process of the job at
 * once (the time limit) also ends in a requeue, whatever mpirun's own exit
 * code. A job with bad input exits 2 and is not
 * requeued. Each rank gets its share of the node's CPUs as OpenMP threads.
 * SLURM itself is not installed where tests run: `scontrol` is a
 * script on PATH that records its arguments (the only SLURM command the
 * batch script calls); mpirun and gml-dist are the real ones. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

extern char **environ;

#include "tests/cli_util.h"

#define JOB_ID "4242"
#define RUN_DIR "runs/gml-test-" JOB_ID

static char dir[64];

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/gml_slurm_XXXXXX");
    if (!mkdtemp(dir)) return -1;
    char path[256];
    if (cli_prep_words(dir, 20000, 3) != 0) return -1;
    snprintf(path, sizeof path, "%s/run.yaml", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    /* more steps than the test waits for: only the signal ends a run */
    fprintf(f, "model: {n_layer: 1, n_head: 2, n_embd: 16, block_size: 16}\n"
               "data: {path: %s/data.h5, batch_size: 4}\n"
               "train: {steps: 10000000, device: cpu}\n"
               "eval: {every: 0, batches: 1}\n"
               "log: {every: 50, tensorboard: false}\n"
               "sample: {tokens: 0}\n",
            dir);
    fclose(f);
    snprintf(path, sizeof path, "%s/bin", dir);
    if (mkdir(path, 0755) != 0) return -1;
    snprintf(path, sizeof path, "%s/bin/scontrol", dir);
    f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "#!/bin/sh\necho \"$@\" >> %s/scontrol.log\n", dir);
    fclose(f);
    return chmod(path, 0755);
}

static int teardown(void **state) {
    (void)state;
    return cli_rm_rf(dir);
}

/* Train lines in the run's metrics.jsonl so far and the last one's step. */
static int train_lines(int *last_step) {
    char path[256], line[8192];
    snprintf(path, sizeof path, "%s/" RUN_DIR "/metrics.jsonl", dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        const char *s = strstr(line, "\"kind\":\"train\"") ? strstr(line, "\"step\":") : NULL;
        if (!s) continue;
        n++;
        *last_step = atoi(s + 7);
    }
    fclose(f);
    return n;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Start the batch script in dir with `args` (output to dir/job_<tag>.log);
 * with signal_after > 0, once the run has logged a train line past step
 * signal_after: SIGUSR1 to the batch shell (SLURM's --signal=B:USR1), or
 * with term_all SIGTERM to every process of the job (the time limit's
 * TERM). Returns the script's exit
 * code; a job still running after JOB_LIMIT_S (a few seconds is normal)
 * fails the test, its whole process group (mpirun, the ranks) killed. */
#define JOB_LIMIT_S 120.0
static int batch_job(const char *tag, const char *args, int signal_after, int term_all, char **log) {
    char logpath[256], script[4096], cmd[16384];
    snprintf(logpath, sizeof logpath, "%s/job_%s.log", dir, tag);
    snprintf(script, sizeof script, "%s/cluster/slurm/train.sbatch", cli_env("GML_SOURCE_DIR"));
    /* mpirun from the MPI CTest found; SLURM's job variables */
    char mpidir[4096];
    snprintf(mpidir, sizeof mpidir, "%s", cli_env("GML_MPIEXEC"));
    char *slash = strrchr(mpidir, '/');
    if (slash) *slash = '\0';
    snprintf(cmd, sizeof cmd, "cd %s && exec env PATH=%s/bin:%s:$PATH SLURM_JOB_NAME=gml-test SLURM_JOB_ID=" JOB_ID
             " SLURM_NTASKS=2 SLURM_CPUS_ON_NODE=4 GML_DIST=%s bash %s %s >%s 2>&1", dir, dir, slash ? mpidir : "/usr/bin",
             cli_env("GML_BINARY"), script, args, logpath);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0); /* the job's processes in one group: a hang is killed whole */
        /* slurmstepd starts the batch shell with default dispositions and
         * nothing blocked; a signal ignored here would stay ignored in bash
         * ("signals ignored upon entry cannot be trapped") */
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        sigemptyset(&dfl.sa_mask);
        for (int s = 1; s <= SIGRTMAX; s++)
            if (s != SIGKILL && s != SIGSTOP) sigaction(s, &dfl, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        /* a real SLURM allocation around the test run must not leak in */
        for (int again = 1; again;) {
            again = 0;
            for (char **e = environ; *e; e++) {
                if (strncmp(*e, "SLURM_", 6) != 0) continue;
                char name[256];
                size_t k = strcspn(*e, "=");
                snprintf(name, sizeof name, "%.*s", (int)(k < sizeof name ? k : sizeof name - 1), *e);
                unsetenv(name);
                again = 1;
                break;
            }
        }
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);
    double t0 = now_s();
    int signalled = signal_after <= 0, status = 0, step = 0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) break;
        if (!signalled && train_lines(&step) > 0 && step > signal_after) {
            printf("%s: %s after step %d\n", tag, term_all ? "SIGTERM to every process of the job" :
                                                   "SIGUSR1 to the batch shell", step);
            if (term_all) kill(-pid, SIGTERM);
            else kill(pid, SIGUSR1);
            signalled = 1;
        }
        if (now_s() - t0 > JOB_LIMIT_S) {
            kill(-pid, SIGKILL);
            waitpid(pid, &status, 0);
            status = -1;
            break;
        }
        nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    }
    FILE *f = fopen(logpath, "r");
    assert_non_null(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    *log = buf;
    if (status == -1) {
        int lines = train_lines(&step);
        fail_msg("%s: still running after %.0f s (train lines so far: %d, last step %d; signal %s): a hang; the "
                 "end of the job's log:\n%s", tag, JOB_LIMIT_S, lines, step,
                 signal_after <= 0 ? "not wanted" : signalled ? "sent" : "not sent yet",
                 n > 4096 ? buf + n - 4096 : buf);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Lines of the scontrol recorder's log so far; the last one in last. */
static int scontrol_calls(char *last, size_t cap) {
    char path[256], line[512];
    snprintf(path, sizeof path, "%s/scontrol.log", dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        n++;
        snprintf(last, cap, "%s", line);
    }
    fclose(f);
    return n;
}

static void test_preempted_requeued_resumed(void **state) {
    (void)state;
    char *log, args[512], last[512] = "";
    snprintf(args, sizeof args, "%s/run.yaml", dir);
    int rc = batch_job("first", args, 100, 0, &log);
    printf("first job: exit %d\n", rc);
    if (rc != 3 || !strstr(log, "exit 3 (requeue, then --resume auto)") ||
        !strstr(log, "requeueing " JOB_ID))
        fail_msg("first job: exit %d, want 3 with a checkpoint and a requeue:\n%s", rc, log);
    assert_int_equal(scontrol_calls(last, sizeof last), 1);
    assert_string_equal(last, "requeue " JOB_ID "\n");
    /* the node's 4 CPUs shared by its 2 tasks (no --cpus-per-task) */
    if (!strstr(log, "; 2 OpenMP threads per rank"))
        fail_msg("first job: want 2 OpenMP threads per rank (4 CPUs, 2 tasks):\n%s", log);
    /* how the request reached the ranks: SIGUSR1 forwarded by mpirun, or the
     * stop file where this mpirun does not forward it */
    const char *how = "signal", *ck = strstr(log, "(stop signal) -> " RUN_DIR "/ckpt/step_");
    if (!ck) how = "file", ck = strstr(log, "(stop file) -> " RUN_DIR "/ckpt/step_");
    if (!ck) fail_msg("first job: no stop checkpoint in its log:\n%s", log);
    int stopped = atoi(strstr(ck, "/ckpt/step_") + strlen("/ckpt/step_"));
    printf("first job stopped by the stop %s at step %d\n", how, stopped);
    assert_true(stopped > 100);
    char stop[256];
    snprintf(stop, sizeof stop, "%s/" RUN_DIR "/STOP", dir);
    assert_int_equal(access(stop, F_OK), -1); /* deleted: the requeued job must run on */

    /* the requeued job: same id, same run directory */
    rc = batch_job("second", args, stopped + 100, 0, &log);
    printf("second job: exit %d\n", rc);
    char want[256];
    snprintf(want, sizeof want, "resume: " RUN_DIR "/ckpt/step_%08d/state.h5 (step %d)", stopped, stopped);
    if (rc != 3 || !strstr(log, want))
        fail_msg("second job: exit %d, want 3 after '%s':\n%s", rc, want, log);
    int step = 0;
    assert_true(train_lines(&step) > 0);
    printf("second job resumed at step %d, preempted again after step %d\n", stopped, step);
    assert_int_equal(scontrol_calls(last, sizeof last), 2);
    assert_string_equal(last, "requeue " JOB_ID "\n");
}

/* The time limit reached without the early warning having ended the job (a
 * stop checkpoint slower than --signal's lead): SLURM TERMs every process
 * of the job at once, mpirun included, whose exit code then depends on the
 * Open MPI build (Debian's 4.1.4: the ranks commit and exit 3, mpirun exits
 * 1). The job must still be requeued. */
static void test_term_to_every_process_requeued(void **state) {
    (void)state;
    char *log, args[512], last[512] = "";
    int before = scontrol_calls(last, sizeof last), step = 0;
    train_lines(&step);
    snprintf(args, sizeof args, "%s/run.yaml", dir);
    int rc = batch_job("term", args, step + 100, 1, &log);
    const char *how = strstr(log, "stopped (mpirun exit ");
    printf("job TERMed whole: exit %d; %.*s; stop checkpoint %s\n", rc, how ? (int)strcspn(how, "\n") : 0,
           how ? how : "", strstr(log, "(stop signal) -> ") || strstr(log, "(stop file) -> ") ? "committed" : "not seen");
    if (rc != 3 || !how || !strstr(log, "requeueing " JOB_ID))
        fail_msg("job TERMed whole: exit %d, want 3 and a requeue:\n%s", rc, log);
    assert_int_equal(scontrol_calls(last, sizeof last), before + 1);
    assert_string_equal(last, "requeue " JOB_ID "\n");
}

static void test_bad_input_not_requeued(void **state) {
    (void)state;
    char *log, args[512], last[512] = "";
    int before = scontrol_calls(last, sizeof last);
    snprintf(args, sizeof args, "%s/run.yaml optim.lr=-1", dir);
    int rc = batch_job("bad", args, 0, 0, &log);
    printf("job with optim.lr=-1: exit %d\n", rc);
    if (rc != 2 || !strstr(log, "optim.lr")) fail_msg("exit %d, want 2 naming optim.lr:\n%s", rc, log);
    assert_int_equal(scontrol_calls(last, sizeof last), before);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_preempted_requeued_resumed),
        cmocka_unit_test(test_term_to_every_process_requeued),
        cmocka_unit_test(test_bad_input_not_requeued),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
