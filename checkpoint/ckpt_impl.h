/* ckpt_impl.h — what the checkpoint/ckpt*.c files share; not for other
 * modules (their interface is ckpt.h).
 *   ckpt.c         save: host copy, the writer job, the top file, commit
 *   ckpt_read.c    open + verify, resume, info, export
 *   ckpt_dir.c     the checkpoint root: step_ listing, publish, latest, prune
 *   ckpt_writer.c  the background writer process of this rank
 */
#ifndef GML_CKPT_IMPL_H
#define GML_CKPT_IMPL_H

#include <stddef.h>

#include "checkpoint/ckpt.h"

#define GML_CKPT_STATE_FILE "state.h5"

/* ------------------------------------------------------------ ckpt.c */

/* Every rank learns whether all ranks succeeded (a failed rank's status is
 * kept; the others report that a peer failed). Collective over world. */
gml_status gml_ckpt_agree(gml_comm *world, gml_status mine, const char *what);

double gml_ckpt_now(void); /* monotonic seconds */

/* ------------------------------------------------------------ ckpt_dir.c */

/* Steps of the committed checkpoints (step_NNNNNNNN) in dir, newest first;
 * *out is malloc'd (free it), *n may be 0 (also when dir does not exist). */
gml_status gml_ckpt_list_steps(const char *dir, long long **out, int *n);
/* Leftovers of interrupted saves in dir (.tmp-* directories, latest.tmp):
 * removed. Only while no writer of this run works in dir. */
void gml_ckpt_remove_partial(const char *dir);
/* Make the complete, fsync'd temp directory `tmpdir` the checkpoint
 * dir/name: fsync tmpdir, rename it into place (an existing dir/name is
 * first renamed aside, then removed), fsync dir, point dir/latest at it
 * (write, fsync, rename, fsync dir), then remove checkpoints beyond the
 * newest keep_last (0: keep all). */
gml_status gml_ckpt_publish(const char *dir, const char *tmpdir, const char *name, int keep_last);

/* ------------------------------------------------------------ ckpt_writer.c */

/* What a finished write of this rank reports (through a pipe from the
 * background process, or directly for a synchronous save). */
typedef struct {
    long long step;
    int committed;        /* rank 0's report: the checkpoint is committed */
    int ranks;            /* rank files of the checkpoint */
    double seconds;       /* this writer's wall time, start to exit (rank 0: to the commit) */
    double bytes;         /* this rank's file; rank 0: every file of the checkpoint */
    double rank_min_gbps; /* rank 0: the slowest and fastest rank file writer */
    double rank_max_gbps;
    int slowest_rank;
    double slowest_s;
    int in_stall;         /* a synchronous save: the write was part of the caller's stall */
} gml_ckpt_report;

typedef gml_status (*gml_ckpt_job_fn)(void *arg, gml_ckpt_report *rep);

/* Run fn(arg) in a forked child of this process (one at a time: the
 * previous one must have been reaped by gml_ckpt_writer_wait). The child
 * dies with its parent (PR_SET_PDEATHSIG) and never returns: it prints its
 * error (with this rank's place) and exits 0 / 1, handing its report to
 * the parent through a pipe. fn must not call MPI. If the child dies
 * otherwise (a signal), gml_ckpt_writer_wait leaves the .failed marker of
 * dp rank mark_rank in mark_dir for it (mark_dir NULL: none), so rank 0's
 * writer stops waiting for it at once. */
gml_status gml_ckpt_writer_start(long long step, gml_ckpt_job_fn fn, void *arg, const char *mark_dir,
                                 int mark_rank);
/* A synchronous save's report, for gml_ckpt_writer_report. */
void gml_ckpt_writer_set_report(const gml_ckpt_report *rep);

#endif
