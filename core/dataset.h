/* dataset.h — the token dataset file of gml-dist (HDF5, format "gml-tokens"
 * version 1): writing one, and opening / validating / reading one.
 *
 * Layout (readable with plain h5py / h5dump):
 *   root attributes  format = "gml-tokens" (string), format_version = 1 (int32),
 *                    vocab_size (int32), tokenizer = "byte" | "char" (string)
 *   /tokenizer_vocab uint8 (vocab_size): id -> byte; only for "char"
 *   /train, /val     1-D uint16 (vocab <= 65536) or uint32 token ids, chunked,
 *                    uncompressed (so a window is one small read)
 * gml_dataset_open checks all of this up front and reports what is wrong as
 * GML_ERR_BAD_INPUT naming the file; token ids are checked against vocab_size
 * as they are read. Not for: the order in which windows are read
 * (core/loader.h), turning text into tokens (launcher/prep.c).
 *
 * Ownership: gml_dataset_open returns a handle that keeps the file open; the
 * caller frees it with gml_dataset_close. One handle is not thread-safe (the
 * serial HDF5 library is not).
 */
#ifndef GML_DATASET_H
#define GML_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "core/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GML_DATASET_FORMAT         "gml-tokens"
#define GML_DATASET_FORMAT_VERSION 1
#define GML_DATASET_MAX_VOCAB      16777216 /* ids must be exact in fp32 logits indexing */
#define GML_DATASET_CHUNK_TOKENS   (1u << 20)

typedef enum { GML_SPLIT_TRAIN = 0, GML_SPLIT_VAL = 1 } gml_split;

typedef struct gml_dataset gml_dataset;

/* Open and validate `path`: exists, is HDF5, format/version, vocab_size in
 * 1..16777216, tokenizer kind (+ /tokenizer_vocab for char), /train and /val
 * present, 1-D, uint16 or uint32, non-empty. Errors: GML_ERR_BAD_INPUT with a
 * message naming the path and the problem; *out is NULL then. */
gml_status gml_dataset_open(const char *path, gml_dataset **out);
void gml_dataset_close(gml_dataset *ds); /* NULL is fine */

int gml_dataset_vocab_size(const gml_dataset *ds);
const gml_tokenizer *gml_dataset_tokenizer(const gml_dataset *ds); /* owned by ds */
uint64_t gml_dataset_num_tokens(const gml_dataset *ds, gml_split split);
const char *gml_dataset_path(const gml_dataset *ds); /* owned by ds */
const char *gml_dataset_split_name(gml_split split); /* "train" / "val" */

/* Tokens [start, start+n) of a split into out (int32). A range outside the
 * split is GML_ERR_INVALID_ARG (a caller bug); an id >= vocab_size in the file
 * is GML_ERR_BAD_INPUT naming the path, split, offset and id. */
gml_status gml_dataset_read(gml_dataset *ds, gml_split split, uint64_t start, size_t n, int32_t *out /* (n) */);

/* Write a dataset atomically: path.tmp, fsync, rename over path, fsync of
 * the directory. train (ntrain >= 1) and val (nval >= 1) hold ids in
 * [0, tok->vocab_size). uint16 storage when vocab <= 65536, else uint32. A
 * path that cannot be created is GML_ERR_BAD_INPUT; a failed write GML_ERR_IO. */
gml_status gml_dataset_write(const char *path, const gml_tokenizer *tok, const int32_t *train, size_t ntrain,
                             const int32_t *val, size_t nval);

#ifdef __cplusplus
}
#endif
#endif
