/* tokenizer.c — byte and char tokenizers: tables, encode, decode.
 * See tokenizer.h. Not for: file I/O or the dataset format. */
#include "core/tokenizer.h"

#include <string.h>

void gml_tokenizer_init_byte(gml_tokenizer *tok) {
    memset(tok, 0, sizeof *tok);
    tok->kind = GML_TOKENIZER_BYTE;
    tok->vocab_size = 256;
    for (int b = 0; b < 256; b++) {
        tok->id_to_byte[b] = (uint8_t)b;
        tok->byte_to_id[b] = (int16_t)b;
    }
}

void gml_tokenizer_init_char(gml_tokenizer *tok, const uint8_t *text, size_t n) {
    uint8_t seen[256] = {0};
    for (size_t i = 0; i < n; i++)
        seen[text[i]] = 1;
    memset(tok, 0, sizeof *tok);
    tok->kind = GML_TOKENIZER_CHAR;
    int id = 0;
    for (int b = 0; b < 256; b++) {
        tok->byte_to_id[b] = -1;
        if (seen[b]) {
            tok->id_to_byte[id] = (uint8_t)b;
            tok->byte_to_id[b] = (int16_t)id;
            id++;
        }
    }
    tok->vocab_size = id;
}

gml_status gml_tokenizer_init_from_vocab(gml_tokenizer *tok, const uint8_t *id_to_byte, int vocab) {
    if (vocab < 1 || vocab > 256)
        return gml_error_set(GML_ERR_INVALID_ARG, "char tokenizer: vocab size %d, expected 1..256", vocab);
    memset(tok, 0, sizeof *tok);
    tok->kind = GML_TOKENIZER_CHAR;
    tok->vocab_size = vocab;
    for (int b = 0; b < 256; b++)
        tok->byte_to_id[b] = -1;
    for (int id = 0; id < vocab; id++) {
        uint8_t b = id_to_byte[id];
        if (tok->byte_to_id[b] >= 0)
            return gml_error_set(GML_ERR_INVALID_ARG, "char tokenizer: byte 0x%02x appears twice (ids %d and %d)", b,
                                 tok->byte_to_id[b], id);
        tok->id_to_byte[id] = b;
        tok->byte_to_id[b] = (int16_t)id;
    }
    return GML_OK;
}

gml_status gml_tokenizer_encode(const gml_tokenizer *tok, const uint8_t *text, size_t n, int32_t *ids) {
    for (size_t i = 0; i < n; i++) {
        int16_t id = tok->byte_to_id[text[i]];
        if (id < 0)
            return gml_error_set(GML_ERR_BAD_INPUT,
                                 "byte 0x%02x at offset %zu is not in the %s tokenizer's vocabulary (%d ids)", text[i],
                                 i, gml_tokenizer_kind_name(tok->kind), tok->vocab_size);
        ids[i] = id;
    }
    return GML_OK;
}

size_t gml_tokenizer_decode(const gml_tokenizer *tok, const int32_t *ids, size_t n, char *out, size_t cap) {
    if (cap == 0) return 0;
    size_t w = 0;
    for (size_t i = 0; i < n && w + 1 < cap; i++) {
        if (ids[i] < 0 || ids[i] >= tok->vocab_size) continue;
        out[w++] = (char)tok->id_to_byte[ids[i]];
    }
    out[w] = '\0';
    return w;
}

const char *gml_tokenizer_kind_name(gml_tokenizer_kind kind) {
    switch (kind) {
    case GML_TOKENIZER_BYTE: return "byte";
    case GML_TOKENIZER_CHAR: return "char";
    }
    return "?";
}
