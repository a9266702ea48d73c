/* rankfile.h — one rank's part of a checkpoint and its commit marker.
 * Internal to checkpoint/ (ckpt.h describes the whole format and protocol).
 *
 * A rank file DIR/rank_RRRRR.h5 holds dp rank R's shard range [lo, hi) of
 * the flat parameter space: for each group (params, adam_m, adam_v) and each
 * parameter that intersects the range, a 1-D f32 dataset /GROUP/NAME with
 * the piece [offset, offset + count) of that parameter's row-major elements
 * (attribute `offset`). Root attributes: format "gml-checkpoint-rank",
 * format_version, step, save_id, dp_rank, dp_size, lo, hi. Files use the
 * HDF5 1.10 object formats, whose metadata carry checksums; the data carry
 * a CRC-32C per piece, kept in the manifest.
 *
 * Markers: when a writer has written and fsync'd its rank file it leaves
 * DIR/rank_RRRRR.done, the serialized RankFile (proto/checkpoint.proto:
 * pieces, CRCs, file size), made by write + fsync + rename + fsync(DIR), so
 * a marker is either absent or complete. A writer that fails leaves
 * DIR/rank_RRRRR.failed with its message instead (best effort).
 */
#ifndef GML_CKPT_RANKFILE_H
#define GML_CKPT_RANKFILE_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "parallel/params.h"
#include "proto/checkpoint.pb-c.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GML_RANKFILE_FORMAT "gml-checkpoint-rank"

/* The three tensor groups of a checkpoint, in file and manifest order. */
extern const char *const gml_ckpt_groups[3]; /* "params", "adam_m", "adam_v" */

/* "rank_RRRRR.h5" */
void gml_rankfile_name(int rank, char *buf, size_t cap);

/* A rank file's description as written: msg is a RankFile whose strings and
 * pieces point into this struct and into the registry passed to
 * gml_rankfile_write (which must outlive it). Free with
 * gml_rankfile_entry_free. */
typedef struct {
    Gml__RankFile msg;
    Gml__TensorPiece *pieces;
    Gml__TensorPiece **ptrs;
    char file[32];
} gml_rankfile_entry;
void gml_rankfile_entry_free(gml_rankfile_entry *e);

/* Write dir/rank_RRRRR.h5 from this rank's shard: t[k] holds elements
 * [lo, hi) of group k's flat tensor. Computes each piece's CRC-32C, fsyncs
 * the file and fills *out (its size in msg.bytes). GML_ERR_IO names the file
 * and tensor. */
gml_status gml_rankfile_write(const char *dir, int rank, int ranks, int64_t step, uint64_t save_id,
                              const gml_param_registry *reg, size_t lo, size_t hi, const float *const t[3],
                              gml_rankfile_entry *out);

/* Open the rank file `rf` of the checkpoint whose top file is `ckpt`
 * (directory `dir`), checking that it exists, has the size the manifest
 * says, opens, and belongs to this save (format, step, save_id, range).
 * path (cap bytes) gets its path for messages. GML_ERR_BAD_INPUT names the
 * file and what is wrong. */
gml_status gml_rankfile_open(const char *ckpt, const char *dir, const Gml__RankFile *rf, int64_t step,
                             uint64_t save_id, hid_t *out, char *path, size_t cap);

/* Read piece pc of open file f (path for messages) into dst (pc->count
 * floats) and verify its CRC-32C. The dataset may have any shape with
 * pc->count elements (format_version 1 stores whole tensors). */
gml_status gml_rankfile_read_piece(hid_t f, const char *ckpt, const char *path, const Gml__TensorPiece *pc,
                                   float *dst);

/* Where piece pc's data lie in open file f: when its dataset is a
 * contiguous, allocated little-endian f32 array of pc->count elements on a
 * little-endian host (what gml_rankfile_write makes), *at gets its byte
 * offset in the file, for gml_rankfile_pread_piece; otherwise *at = -1 (a
 * layout for gml_rankfile_read_piece). Errors as gml_rankfile_read_piece's
 * (missing tensor, wrong element count). Not thread-safe (HDF5). */
gml_status gml_rankfile_locate_piece(hid_t f, const char *ckpt, const char *path, const Gml__TensorPiece *pc,
                                     int64_t *at);
/* The outcome of gml_rankfile_pread_piece: code, errno for IOERR, the CRC
 * read for CRC. */
enum { GML_PIECE_OK = 0, GML_PIECE_CRC, GML_PIECE_SHORT, GML_PIECE_IOERR, GML_PIECE_NOMEM };
typedef struct {
    int code;
    int err;
    uint32_t crc;
} gml_piece_result;
/* Read piece pc (pc->count floats at byte `at` of descriptor fd, as located
 * above) into dst and verify its CRC-32C, without HDF5: thread-safe, and it
 * sets no error message (gml_rankfile_piece_error makes it, naming file and
 * tensor, on the calling thread). */
gml_piece_result gml_rankfile_pread_piece(int fd, const Gml__TensorPiece *pc, int64_t at, float *dst);
gml_status gml_rankfile_piece_error(const char *ckpt, const char *path, const Gml__TensorPiece *pc,
                                    gml_piece_result r);

/* Leave the .done marker for e (dir is the checkpoint's temp directory). */
gml_status gml_rankfile_mark_done(const char *dir, const gml_rankfile_entry *e);
/* Leave the .failed marker with msg (best effort; never fails). */
void gml_rankfile_mark_failed(const char *dir, int rank, const char *msg);
/* Wait until ranks 1..ranks-1 have left .done markers in dir; out[r] gets
 * rank r's unpacked RankFile (free with gml__rank_file__free_unpacked;
 * out[0] is left NULL). A .failed marker ends the wait with that rank's
 * message; after timeout_s the error names the ranks still missing. */
gml_status gml_rankfile_wait(const char *dir, int ranks, int64_t step, double timeout_s, Gml__RankFile **out);
/* Remove the markers of ranks 0..ranks-1 from dir. */
void gml_rankfile_unmark(const char *dir, int ranks);

#ifdef __cplusplus
}
#endif
#endif
