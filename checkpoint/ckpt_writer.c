/* ckpt_writer.c — this rank's background checkpoint writer: a forked child
 * that writes from the (copy-on-write) host copy while the step loop goes
 * on, its exit status, and its report (through a pipe). One at a time.
 * Not for: what the writer writes (ckpt.c). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint/ckpt_impl.h"
#include "checkpoint/rankfile.h"
#include "comm/comm.h"

static pid_t g_pid = -1;      /* the running writer, -1: none */
static int g_fd = -1;         /* read end of its report pipe */
static long long g_step;      /* the step it writes */
static gml_ckpt_report g_rep; /* the last finished write's report */
static int g_have_rep;
static char g_mark_dir[4400]; /* where to leave a .failed marker for a writer that died */
static int g_mark_rank = -1;

gml_status gml_ckpt_writer_start(long long step, gml_ckpt_job_fn fn, void *arg, const char *mark_dir,
                                 int mark_rank) {
    if (g_pid >= 0)
        return gml_error_set(GML_ERR_INTERNAL, "a checkpoint writer (step %lld) still runs", g_step);
    int fds[2];
    if (pipe(fds) != 0) return gml_error_set(GML_ERR_IO, "cannot make a pipe for the checkpoint writer: %s",
                                             strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return gml_error_set(GML_ERR_IO, "cannot fork the checkpoint writer: %s", strerror(errno));
    }
    if (pid == 0) { /* the writer: no MPI, no return */
        close(fds[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(3); /* the parent is already gone */
        gml_ckpt_report rep;
        memset(&rep, 0, sizeof rep);
        rep.step = step;
        gml_status st = fn(arg, &rep);
        if (st != GML_OK) {
            const char *where = gml_comm_where();
            fprintf(stderr, "gml-dist: %s%serror: checkpoint of step %lld: %s\n", where, where[0] ? ": " : "", step,
                    gml_error_message());
        }
        ssize_t w = st == GML_OK ? write(fds[1], &rep, sizeof rep) : 0;
        (void)w; /* a lost report loses a log line, not the checkpoint */
        fflush(stdout);
        fflush(stderr);
        _exit(st == GML_OK ? 0 : 1);
    }
    close(fds[1]);
    g_pid = pid;
    g_fd = fds[0];
    g_step = step;
    snprintf(g_mark_dir, sizeof g_mark_dir, "%s", mark_dir ? mark_dir : "");
    g_mark_rank = mark_rank;
    return GML_OK;
}

void gml_ckpt_writer_set_report(const gml_ckpt_report *rep) {
    g_rep = *rep;
    g_have_rep = 1;
}

gml_status gml_ckpt_writer_wait(int block) {
    if (g_pid < 0) return GML_OK;
    int status = 0;
    pid_t r;
    do r = waitpid(g_pid, &status, block ? 0 : WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0) return GML_OK; /* still writing */
    g_pid = -1;
    gml_ckpt_report rep;
    ssize_t got = read(g_fd, &rep, sizeof rep); /* the child has exited: data or EOF, no wait */
    close(g_fd);
    g_fd = -1;
    if (r < 0)
        return gml_error_set(GML_ERR_IO, "lost the checkpoint writer of step %lld: %s", g_step, strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        if (got == (ssize_t)sizeof rep) gml_ckpt_writer_set_report(&rep);
        return GML_OK;
    }
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 1) && g_mark_dir[0] && g_mark_rank >= 0) {
        /* it died without leaving its marker: leave it for rank 0's writer, which waits for it */
        char msg[128];
        snprintf(msg, sizeof msg, "the writer process died (%s %d)", WIFEXITED(status) ? "exit" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        gml_rankfile_mark_failed(g_mark_dir, g_mark_rank, msg);
    }
    return gml_error_set(GML_ERR_IO, "writing the checkpoint of step %lld failed in the background (%s %d; its "
                         "message is above); the previous checkpoints are intact",
                         g_step, WIFEXITED(status) ? "exit" : "signal",
                         WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

int gml_ckpt_writer_report(char *line, size_t cap) {
    if (!g_have_rep) return 0;
    g_have_rep = 0;
    const gml_ckpt_report *r = &g_rep;
    const char *when = r->in_stall ? "within the stall" : "after the stall";
    double gbps = r->seconds > 0 ? r->bytes / 1e9 / r->seconds : 0.0;
    if (!r->committed)
        snprintf(line, cap, "step %lld: this rank's file, %.1f MB in %.2f s (%.2f GB/s)", r->step, r->bytes / 1e6,
                 r->seconds, gbps);
    else if (r->ranks <= 1)
        snprintf(line, cap, "step %lld committed: %.1f MB in %.2f s %s (%.2f GB/s)", r->step, r->bytes / 1e6,
                 r->seconds, when, gbps);
    else
        snprintf(line, cap, "step %lld committed: %d rank files, %.1f MB in %.2f s %s (%.2f GB/s total; per rank "
                 "%.2f-%.2f GB/s, slowest dp rank %d in %.2f s)", r->step, r->ranks, r->bytes / 1e6, r->seconds, when,
                 gbps, r->rank_min_gbps, r->rank_max_gbps, r->slowest_rank, r->slowest_s);
    return 1;
}
