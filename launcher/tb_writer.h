/* tb_writer.h — TensorBoard event files: scalars as TFRecord-framed Event
 * protobufs (proto/tensorboard.proto) that TensorBoard's own loader reads.
 *
 * One writer owns one file DIR/events.out.tfevents.<unix s>.<host>.<pid>.gml;
 * its first record is an Event with file_version "brain.Event:2". Each record
 * is: uint64 length (LE), uint32 masked CRC-32C of those 8 bytes, the Event
 * bytes, uint32 masked CRC-32C of the Event bytes. Writes go through stdio;
 * gml_tb_flush pushes them to the OS. Not thread-safe (one writer per
 * thread). Not for: histograms, images, graphs; reading files back (tests do
 * that with protobuf-c and with TensorBoard itself).
 */
#ifndef GML_TB_WRITER_H
#define GML_TB_WRITER_H

#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gml_tb_writer gml_tb_writer;

/* Create `dir` (with parents) and a new event file in it; writes the
 * file_version record. On success *out is a writer the caller frees with
 * gml_tb_close; on failure *out is NULL. */
gml_status gml_tb_open(const char *dir, gml_tb_writer **out);

/* Append one scalar: `tag` (non-empty, e.g. "train/loss"), `step` (x axis),
 * `wall_time` (unix seconds), `value`. NaN / Inf are written as they are. */
gml_status gml_tb_scalar(gml_tb_writer *w, const char *tag, int64_t step, double wall_time, float value);

/* Push buffered records to the OS (fflush; no fsync). */
gml_status gml_tb_flush(gml_tb_writer *w);

/* Flush, close and free. NULL is ok. The writer is freed even when the final
 * flush or close fails (that failure is returned). */
gml_status gml_tb_close(gml_tb_writer *w);

/* The event file's path. Owned by the writer; valid until gml_tb_close. */
const char *gml_tb_path(const gml_tb_writer *w);

#ifdef __cplusplus
}
#endif
#endif
