/* ckpt.h — resumable checkpoints (DESIGN.md ideas 4 and 5).
 *
 * Format (format_version 2). A checkpoint is a directory
 * DIR/step_NNNNNNNN holding
 *   rank_RRRRR.h5  one per dp rank: its shard range [lo, hi) of the flat
 *                  parameter space (gml_zero_shard_range), as 1-D pieces
 *                  /GROUP/NAME of every parameter the range intersects, for
 *                  GROUP = params (fp32 master weights), adam_m, adam_v
 *                  (checkpoint/rankfile.h);
 *   state.h5       the top file: /params/NAME, /adam_m/NAME, /adam_v/NAME as
 *                  HDF5 virtual datasets with each tensor's global logical
 *                  shape (its registry shape), mapped onto the pieces in the
 *                  rank files by relative file name (checkpoint/vds.h); the
 *                  serialized RunConfig (/config); the CheckpointManifest
 *                  (/manifest, proto/checkpoint.proto: step, Adam step count,
 *                  train-loader position, seed, the layout that wrote it,
 *                  model shape, every tensor's name and shape, every rank
 *                  file with its size and its pieces with a CRC-32C each, a
 *                  save id shared with the rank files); root attributes
 *                  format, format_version, step and the CRC-32C of the
 *                  manifest and config bytes.
 * Plain h5py / h5dump (HDF5 >= 1.10, serial) read f["params/NAME"] from any
 * working directory; the directory may be renamed or moved whole. There is
 * no other random state to keep: dropout masks and the data order are
 * functions of (seed, step) and the loader position. format_version 1 (one
 * state.h5 with real datasets, written by rank 0 alone) is still read.
 *
 * Save protocol (no MPI in the writers; `rank` means dp rank, world = dp):
 *  1. every rank waits for its previous writer (one checkpoint in flight),
 *     and all agree (a failed writer of any rank fails this save everywhere);
 *  2. every rank copies its shard of master weights and moments to host
 *     memory (gml_zero_download_shard) — the training stall;
 *  3. rank 0 removes leftovers of interrupted saves (DIR/.tmp-*) and
 *     creates DIR/.tmp-step_N; all agree; rank 0's save id is broadcast;
 *  4. every rank forks its writer (checkpoint.async; else runs it inline),
 *     which writes .tmp-step_N/rank_RRRRR.h5 computing a CRC-32C per piece,
 *     fsyncs it, then leaves the marker rank_RRRRR.done (its RankFile:
 *     pieces, CRCs, size) by write + fsync + rename + fsync of the
 *     directory, and exits. A failing writer leaves rank_RRRRR.failed with
 *     its message, prints it and exits 1;
 *  5. rank 0's writer, after its own file, waits for every other rank's
 *     .done (a .failed ends the wait with that rank's message; after
 *     600 s + 4 x its own write time, or GML_CKPT_COMMIT_TIMEOUT_S, the
 *     error names the ranks still missing), writes and fsyncs state.h5,
 *     removes the markers, fsyncs the temp directory, renames it to step_N
 *     (replacing an older step_N of the same number by renaming it aside
 *     first), fsyncs DIR, then replaces DIR/latest (write, fsync, rename,
 *     fsync DIR) and prunes beyond keep_last (renamed to .tmp-old-* first).
 * So a step_ directory exists only complete and on disk; `latest` moves
 * last. A SIGKILL anywhere leaves at most a .tmp-* directory (removed by the
 * next save). Writers die with their rank (PR_SET_PDEATHSIG), so a killed
 * job never commits afterwards. A writer's failure surfaces on its own rank
 * at the next gml_ckpt_writer_wait (the step loop polls every step; the next
 * save and the end of the run block on it), and rank 0 never commits a
 * checkpoint one of whose writers failed.
 *
 * Load: every rank opens state.h5, checks the format, the manifest's CRC,
 * the model shape and the tensor list, then reads every piece from the rank
 * files directly (no VDS needed): each file must exist, have the size the
 * manifest says and carry the same step and save id; each piece's CRC is
 * verified and the pieces must tile every tensor exactly. A rank reads the
 * master weights and the Adam moments only where they meet its optimizer
 * range (the ranges of all ranks cover every piece, so every piece is still
 * verified by some rank, and all agree on the outcome). Then each rank
 * restores its range (gml_zero_restore; ZeRO-1/2 all-gather the weights on
 * the device): any dp size / ZeRO stage resumes any other. Errors name the
 * file (the rank file where it is one) and the tensor (GML_ERR_BAD_INPUT).
 */
#ifndef GML_CKPT_H
#define GML_CKPT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/gpt.h"
#include "parallel/mesh.h"
#include "parallel/zero.h"
#include "proto/runconfig.pb-c.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GML_CKPT_FORMAT  "gml-checkpoint"
#define GML_CKPT_VERSION 2 /* 1: one state.h5 written by rank 0 (still read) */

typedef struct {
    int64_t step;                     /* optimizer steps done */
    uint64_t loader_epoch, loader_index; /* the train loader's next global sequence */
} gml_ckpt_progress;

typedef struct {
    double stall_s; /* seconds the caller stalled in gml_ckpt_save, all of the below included */
    double wait_s;  /* seconds of it waiting for the previous checkpoint's writers */
    double copy_s;  /* seconds of it copying this rank's shard to host memory */
    double bytes;   /* this rank's shard (master weights and two moments), bytes */
} gml_ckpt_save_stats;

/* Collective over mesh->world_c (which must be the dp group: tp = pp = 1).
 * Steps 1-4 of the protocol above, then (async = 0) the write and commit
 * too. stats may be NULL. */
gml_status gml_ckpt_save(const char *dir, gml_gpt *m, gml_zero *z, const gml_mesh *mesh, const Gml__RunConfig *cfg,
                         const gml_ckpt_progress *prog, int keep_last, int async, gml_ckpt_save_stats *stats);
/* This rank: has its background writer finished? block: wait for it. An
 * error if it failed (rank 0: the checkpoint was not committed; the ones
 * committed before are intact); GML_OK while it still runs or when there is
 * none. Every rank must block on it before exiting (a rank's exit kills its
 * writer). */
gml_status gml_ckpt_writer_wait(int block);
/* After a write of this rank finished (reaped by gml_ckpt_writer_wait, or
 * a synchronous save): one line on it, once, returning 1; else 0. On rank 0
 * it describes the commit: the files, bytes, time after the stall and GB/s,
 * total and per rank. */
int gml_ckpt_writer_report(char *line, size_t cap);

/* Collective. spec: "none" (nothing loaded, *loaded = 0), "auto" (the
 * newest complete checkpoint of DIR that verifies; older ones are tried in
 * turn, saying so on stderr; none at all: *loaded = 0) or a PATH (a
 * checkpoint directory or its state.h5; must load). On success the model,
 * the optimizer range and *prog are restored; path_out (may be NULL) gets
 * the checkpoint used, bytes_read (may be NULL) what this rank read of it:
 * the pieces of the weights and moments that meet its optimizer range
 * (12P bytes at ZeRO-0; 12P/dp plus boundary pieces at ZeRO-1/2/3, every
 * piece still verified by the rank that reads it). */
gml_status gml_ckpt_resume(const char *dir, const char *spec, gml_gpt *m, gml_zero *z, const gml_mesh *mesh,
                           gml_ckpt_progress *prog, int *loaded, char *path_out, size_t cap, double *bytes_read);

/* `gml-dist ckpt info PATH`: print what a checkpoint (directory, its
 * state.h5, or a checkpoint root: its `latest`) holds, list its rank files,
 * verify every piece's checksum and that every tensor read through the
 * virtual datasets of state.h5 equals its pieces, without a model.
 * GML_ERR_BAD_INPUT names the file and tensor. The content digest printed is
 * the CRC-32C of all tensors' bytes in manifest order: equal for equal
 * state, whatever layout wrote it. */
gml_status gml_ckpt_info(const char *path, FILE *out);

/* `gml-dist ckpt export PATH OUT.h5`: the checkpoint's parameters, verified,
 * as a plain weights file (checkpoint/weights.h) for inference and
 * `gml-dist sample --weights OUT.h5`. */
gml_status gml_ckpt_export(const char *path, const char *out);

#ifdef __cplusplus
}
#endif
#endif
