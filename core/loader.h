/* loader.h — the training / evaluation data loader: windows of T+1 tokens
 * read straight from a token dataset (core/dataset.h) in an order that is a
 * function of (seed, epoch, position) only.
 *
 * Order. Epoch e draws from rng stream (seed, GML_LOADER_STREAM + e): first an
 * offset o_e in [0, min(T, ntok - T)), then (shuffle=1) a Fisher-Yates
 * permutation of the n_e = (ntok - 1 - o_e) / T windows; window j starts at
 * token o_e + j*T and holds T+1 tokens (inputs = first T, targets = last T).
 * shuffle=0 uses o_e = 0 and the windows in file order (evaluation). The
 * visiting order of all epochs, concatenated, is one stream of global
 * sequences; a global step takes the next B*world of them and rank r keeps
 * [r*B, (r+1)*B). A batch that runs past the end of an epoch continues in the
 * next, so every window of an epoch is used exactly once.
 *
 * Position. (epoch, index) names the next global sequence, the same on every
 * rank; seek(epoch, index) then next() returns exactly what an uninterrupted
 * loader would have (resume, also after a change of world size).
 * Read-ahead. gml_loader_prefetch reads the batch the next call of next()
 * returns, on the calling thread: the trainer calls it right after queueing a
 * micro-step on the GPU, so the file reads overlap the GPU's work instead of
 * leaving it idle between steps; next() then only copies. The position is
 * not moved by a read-ahead (a checkpoint saves the batch as not yet used);
 * seek and reset drop it.
 * Not for: tokenization, the file format, reading on another thread.
 *
 * Ownership: the loader borrows `ds` (must outlive it); free the loader with
 * gml_loader_destroy. Memory: one uint32 per window of the split (the
 * permutation), one window, and (after the first read-ahead) one batch.
 */
#ifndef GML_LOADER_H
#define GML_LOADER_H

#include <stdint.h>

#include "core/dataset.h"
#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Base of the rng stream ids of the loader ("LOAD" in the high bytes); epoch
 * e uses stream GML_LOADER_STREAM + e. */
#define GML_LOADER_STREAM 0x4c4f414400000000ULL

typedef struct gml_loader gml_loader;

/* B sequences of T tokens (+1 target shift) per call for this rank. Fails
 * with GML_ERR_BAD_INPUT (naming the split, its token count and T+1) when the
 * split has fewer than T+1 tokens; GML_ERR_INVALID_ARG for B, T < 1 or rank
 * outside [0, world). */
gml_status gml_loader_create(gml_dataset *ds, gml_split split, int B, int T, uint64_t seed, int shuffle, int rank,
                             int world, gml_loader **out);

/* Fills this rank's next batch and advances the position by B*world. */
gml_status gml_loader_next(gml_loader *ld, int32_t *inputs /* (B,T) */, int32_t *targets /* (B,T) */);

/* Read the next batch ahead (see above); a no-op when it already is. */
gml_status gml_loader_prefetch(gml_loader *ld);

/* index: the next global sequence within `epoch` (always < that epoch's
 * number of windows). */
void gml_loader_position(const gml_loader *ld, uint64_t *epoch, uint64_t *index);

/* Continue at (epoch, index) as returned by gml_loader_position. index equal
 * to the epoch's window count means (epoch+1, 0); larger is GML_ERR_BAD_INPUT
 * (a position saved with another dataset or T). */
gml_status gml_loader_seek(gml_loader *ld, uint64_t epoch, uint64_t index);

gml_status gml_loader_reset(gml_loader *ld); /* back to epoch 0, index 0 */
void gml_loader_destroy(gml_loader *ld);     /* NULL is fine */

/* Windows in `epoch` (depends on the epoch's offset when shuffling). */
uint64_t gml_loader_epoch_windows(const gml_loader *ld, uint64_t epoch);

#ifdef __cplusplus
}
#endif
#endif
