/* tokenizer.h — the tokenizers of gml-dist: bytes (vocab 256) and characters
 * (the distinct bytes of a corpus, vocab <= 256).
 *
 * A token id is an index into id_to_byte; text is handled as raw bytes, so
 * multi-byte UTF-8 characters become several tokens (the char tokenizer is a
 * "distinct byte" tokenizer). The tokenizer is a plain value: no allocation,
 * nothing to free. It is stored in the token dataset (core/dataset.h) so a run
 * decodes samples with the tokenizer the data was made with.
 * Not for: subword (BPE) tokenization, reading files (launcher/prep.c).
 */
#ifndef GML_TOKENIZER_H
#define GML_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { GML_TOKENIZER_BYTE = 0, GML_TOKENIZER_CHAR = 1 } gml_tokenizer_kind;

typedef struct {
    gml_tokenizer_kind kind;
    int vocab_size;          /* byte: 256; char: number of distinct bytes of the corpus */
    uint8_t id_to_byte[256]; /* (vocab_size) id -> byte */
    int16_t byte_to_id[256]; /* byte -> id; -1: byte not in the vocabulary */
} gml_tokenizer;

/* The identity tokenizer: id b <-> byte b, vocab 256. */
void gml_tokenizer_init_byte(gml_tokenizer *tok);

/* One id per distinct byte of text[0..n), ids in increasing byte order.
 * n == 0 gives an empty vocabulary (vocab_size 0). */
void gml_tokenizer_init_char(gml_tokenizer *tok, const uint8_t *text, size_t n);

/* Char tokenizer from its id -> byte table (as stored in a dataset): vocab
 * bytes, all distinct, 1 <= vocab <= 256. GML_ERR_INVALID_ARG otherwise (the
 * dataset reader checks before calling). */
gml_status gml_tokenizer_init_from_vocab(gml_tokenizer *tok, const uint8_t *id_to_byte, int vocab);

/* ids[i] = id of text[i] for i in [0, n). A byte outside the vocabulary ->
 * GML_ERR_BAD_INPUT naming the byte and its offset (ids then undefined). */
gml_status gml_tokenizer_encode(const gml_tokenizer *tok, const uint8_t *text, size_t n, int32_t *ids /* (n) */);

/* Bytes of ids[0..n) into out: at most cap-1 bytes, then a NUL (cap >= 1).
 * Returns the number of bytes written (without the NUL). Ids outside
 * [0, vocab_size) are skipped. */
size_t gml_tokenizer_decode(const gml_tokenizer *tok, const int32_t *ids, size_t n, char *out, size_t cap);

/* "byte" or "char" — the name stored in datasets and accepted by prep. */
const char *gml_tokenizer_kind_name(gml_tokenizer_kind kind);

#ifdef __cplusplus
}
#endif
#endif
