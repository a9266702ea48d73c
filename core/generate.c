/* generate.c — autoregressive sampling from a GPT (see generate.h). */
#include "core/generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

/* Draw a token from the logits row (V) with temperature and top-k. */
static int32_t draw(float *logits, int V, float temperature, int top_k, gml_rng *rng, float *work) {
    float cut = -INFINITY;
    if (top_k > 0 && top_k < V) { /* k-th largest via a partial selection on a copy */
        memcpy(work, logits, (size_t)V * sizeof *work);
        for (int i = 0; i < top_k; i++) {
            int best = i;
            for (int j = i + 1; j < V; j++)
                if (work[j] > work[best]) best = j;
            float t = work[i];
            work[i] = work[best];
            work[best] = t;
        }
        cut = work[top_k - 1];
    }
    float mx = -INFINITY;
    for (int i = 0; i < V; i++)
        if (logits[i] >= cut && logits[i] > mx) mx = logits[i];
    double sum = 0.0;
    for (int i = 0; i < V; i++) {
        double p = logits[i] >= cut ? exp((double)(logits[i] - mx) / temperature) : 0.0;
        logits[i] = (float)p;
        sum += p;
    }
    double u = (double)gml_rng_uniform(rng) * sum, acc = 0.0;
    for (int i = 0; i < V; i++) {
        acc += logits[i];
        if (u < acc) return i;
    }
    for (int i = V - 1; i >= 0; i--)
        if (logits[i] > 0.0f) return i;
    return 0;
}

gml_status gml_generate(gml_gpt *m, const gml_tokenizer *tok, const char *prompt, const gml_sample_opts *opts,
                        char *out, size_t cap) {
    const gml_gpt_config *c = gml_gpt_get_config(m);
    if (opts->temperature <= 0.0f) return gml_error_set(GML_ERR_BAD_INPUT, "temperature must be > 0");
    if (tok->vocab_size > c->vocab_size)
        return gml_error_set(GML_ERR_BAD_INPUT, "tokenizer has %d ids, the model only %d", tok->vocab_size,
                             c->vocab_size);
    size_t plen = strlen(prompt);
    size_t total = plen + (size_t)opts->tokens + 1;
    int32_t *ids = malloc(total * sizeof *ids);
    float *logits = malloc((size_t)c->vocab_size * 2 * sizeof *logits);
    gml_status st = GML_OK;
    if (!ids || !logits) {
        st = gml_error_set(GML_ERR_NOMEM, "out of host memory");
        goto done;
    }
    size_t n = 0;
    if (plen > 0) {
        GML_CHECK_GOTO(gml_tokenizer_encode(tok, (const uint8_t *)prompt, plen, ids), st, done);
        n = plen;
    } else { /* start from a newline when the vocabulary has one */
        ids[0] = tok->byte_to_id['\n'] >= 0 ? tok->byte_to_id['\n'] : 0;
        n = 1;
    }
    size_t start = n; /* the newline seed is not part of the output */
    if (plen > 0) start = 0;
    gml_rng rng;
    gml_rng_init(&rng, opts->seed, 0x5a3d1e);
    for (int k = 0; k < opts->tokens; k++) {
        size_t Tmax = (size_t)gml_gpt_max_T(m);
        int T = (int)(n < Tmax ? n : Tmax);
        const int32_t *ctx = ids + (n - (size_t)T);
        GML_CHECK_GOTO(gml_gpt_forward(m, ctx, NULL, 1, T, 0.0f), st, done);
        GML_CHECK_GOTO(gml_gpt_logits_row(m, 0, T - 1, logits), st, done);
        int32_t next = draw(logits, tok->vocab_size, opts->temperature, opts->top_k, &rng, logits + c->vocab_size);
        ids[n++] = next;
    }
    gml_tokenizer_decode(tok, ids + start, n - start, out, cap);
done:
    free(ids);
    free(logits);
    return st;
}
