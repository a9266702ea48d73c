/* ckpt.h — resumable checkpoints (DESIGN.md ideas 4 and 5).
 *
 * A checkpoint is a directory DIR/step_NNNNNNNN holding state.h5: every
 * parameter and both Adam moments as global logical fp32 tensors under their
 * registry names (/params/NAME, /adam_m/NAME, /adam_v/NAME), the serialized
 * RunConfig (/config) and a CheckpointManifest (/manifest, proto/
 * checkpoint.proto: step, Adam step count, train-loader position, seed, the
 * layout that wrote it, model shape, a CRC-32C per tensor). It reads with
 * plain h5py / h5dump. There is no other random state to keep: dropout masks
 * and the data order are functions of (seed, step) and the loader position.
 *
 * Commit: rank 0 writes DIR/.tmp-step_NNNNNNNN/state.h5, fsyncs it, renames
 * the directory into place, fsyncs DIR, then replaces DIR/latest (the name
 * of the newest checkpoint) by write-fsync-rename. A crash at any point
 * leaves either the previous checkpoints or the new one, never a partial
 * one under a step_ name. Older checkpoints beyond keep_last are removed
 * after the commit. The ZeRO shards of the Adam moments are gathered to
 * every rank and rank 0 writes one file (per-rank files: to do), by default
 * in a forked writer process so training goes on (checkpoint.async).
 *
 * Load: every rank reads the file, checks the format, the model shape and
 * every tensor's CRC before touching the model, then keeps its own ZeRO
 * range of the moments: any dp size / ZeRO stage resumes any other.
 * Errors name the file and the tensor (GML_ERR_BAD_INPUT).
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
#define GML_CKPT_VERSION 1

typedef struct {
    int64_t step;                     /* optimizer steps done */
    uint64_t loader_epoch, loader_index; /* the train loader's next global sequence */
} gml_ckpt_progress;

/* Collective over mesh->world_c. Copies the state to host memory and writes
 * and commits DIR/step_<prog->step>: with async, in a background process of
 * rank 0 (after waiting for the previous one), so the caller stalls only for
 * the copy; *seconds (may be NULL): that stall. */
gml_status gml_ckpt_save(const char *dir, gml_gpt *m, gml_zero *z, const gml_mesh *mesh, const Gml__RunConfig *cfg,
                         const gml_ckpt_progress *prog, int keep_last, int async, double *seconds);
/* Rank 0: has the background writer finished? block: wait for it. An error
 * if it failed (the checkpoints committed before are intact); GML_OK while it
 * still runs or when there is none. */
gml_status gml_ckpt_writer_wait(int block);

/* Collective. spec: "none" (nothing loaded, *loaded = 0), "auto" (the
 * newest complete checkpoint of DIR that verifies; older ones are tried in
 * turn, saying so on stderr; none at all: *loaded = 0) or a PATH (a
 * checkpoint directory or its state.h5; must load). On success the model,
 * the optimizer range and *prog are restored; path_out (may be NULL) gets
 * the checkpoint used. */
gml_status gml_ckpt_resume(const char *dir, const char *spec, gml_gpt *m, gml_zero *z, const gml_mesh *mesh,
                           gml_ckpt_progress *prog, int *loaded, char *path_out, size_t cap);

/* `gml-dist ckpt info PATH`: print what a checkpoint (directory, its
 * state.h5, or a checkpoint dir's `latest`) holds and verify every tensor's
 * checksum, without a model. GML_ERR_BAD_INPUT names the file and tensor. */
gml_status gml_ckpt_info(const char *path, FILE *out);

/* `gml-dist ckpt export PATH OUT.h5`: the checkpoint's parameters, verified,
 * as a plain weights file (checkpoint/weights.h) for inference and
 * `gml-dist sample --weights OUT.h5`. */
gml_status gml_ckpt_export(const char *path, const char *out);

#ifdef __cplusplus
}
#endif
#endif
