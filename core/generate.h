/* generate.h — sampling text from a GPT: temperature, top-k, a sliding
 * context window of the model's block size. Not for: batched or KV-cached
 * serving; each new token runs a forward over the current context. */
#ifndef GML_GENERATE_H
#define GML_GENERATE_H

#include "core/gpt.h"
#include "core/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int tokens;        /* new tokens to generate */
    float temperature; /* > 0 */
    int top_k;         /* 0: all */
    uint64_t seed;
} gml_sample_opts;

/* Continue `prompt` (may be "") with opts->tokens new tokens. Writes the
 * decoded prompt + continuation, NUL-terminated, into out (cap bytes).
 * The model needs B_max >= 1. A prompt byte outside the vocabulary is
 * GML_ERR_BAD_INPUT. */
gml_status gml_generate(gml_gpt *m, const gml_tokenizer *tok, const char *prompt, const gml_sample_opts *opts,
                        char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
