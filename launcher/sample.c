/* sample.c — `gml-dist sample`: load trained weights and generate text.
 *
 * The model shape comes from the weights file, the tokenizer from the
 * config's dataset, the device from the config. Not for: training. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/weights.h"
#include "core/dataset.h"
#include "core/generate.h"
#include "launcher/run.h"

static const char *usage =
    "usage: gml-dist sample CONFIG [--weights PATH] [--prompt TEXT] [--tokens N] [--temperature X] "
    "[--top-k K] [--seed S] [key=value ...]";

static gml_status parse_long(const char *flag, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < lo || v > hi)
        return gml_error_set(GML_ERR_BAD_INPUT, "%s '%s': expected an integer in [%ld, %ld]", flag, s, lo, hi);
    *out = v;
    return GML_OK;
}

gml_status gml_cmd_sample(int argc, char **argv) {
    const char *config_path = NULL, *weights = NULL, *prompt = NULL;
    long tokens = -1, top_k = -1, seed = -1;
    double temperature = -1.0;
    char **overrides = calloc((size_t)argc + 1, sizeof *overrides);
    int n_over = 0;
    gml_status st = GML_OK;
    Gml__RunConfig *cfg = NULL;
    gml_dataset *ds = NULL;
    gml_backend *be = NULL;
    gml_gpt *model = NULL;
    char *text = NULL;
    if (!overrides) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
        if (a[0] == '-' && a[1] == '-' && !has_val) {
            st = gml_error_set(GML_ERR_BAD_INPUT, "%s needs a value\n%s", a, usage);
            goto done;
        }
        if (strcmp(a, "--weights") == 0) weights = argv[++i];
        else if (strcmp(a, "--prompt") == 0) prompt = argv[++i];
        else if (strcmp(a, "--tokens") == 0) GML_CHECK_GOTO(parse_long(a, argv[++i], 0, 1 << 20, &tokens), st, done);
        else if (strcmp(a, "--top-k") == 0) GML_CHECK_GOTO(parse_long(a, argv[++i], 0, 1 << 24, &top_k), st, done);
        else if (strcmp(a, "--seed") == 0) GML_CHECK_GOTO(parse_long(a, argv[++i], 0, 0x7fffffffL, &seed), st, done);
        else if (strcmp(a, "--temperature") == 0) {
            char *end;
            temperature = strtod(argv[++i], &end);
            if (*end != '\0' || !(temperature > 0.0)) {
                st = gml_error_set(GML_ERR_BAD_INPUT, "--temperature '%s': expected a number > 0", argv[i]);
                goto done;
            }
        } else if (a[0] == '-') {
            st = gml_error_set(GML_ERR_BAD_INPUT, "unknown flag '%s'\n%s", a, usage);
            goto done;
        } else if (!config_path) config_path = a;
        else overrides[n_over++] = argv[i];
    }
    if (!config_path) {
        st = gml_error_set(GML_ERR_BAD_INPUT, "no CONFIG given\n%s", usage);
        goto done;
    }
    GML_CHECK_GOTO(gml_config_load(config_path, n_over, overrides, &cfg), st, done);
    char wpath[4096];
    if (!weights) {
        snprintf(wpath, sizeof wpath, "%s/model.h5", cfg->train->out_dir);
        weights = wpath;
    }
    gml_gpt_config mc;
    GML_CHECK_GOTO(gml_weights_read_config(weights, &mc), st, done);
    GML_CHECK_GOTO(gml_dataset_open(cfg->data->path, &ds), st, done);
    GML_CHECK_GOTO(gml_backend_create(cfg->train->device, 0, &be), st, done);
    GML_CHECK_GOTO(gml_gpt_create(be, &mc, 1, mc.block_size, 0, &model), st, done);
    GML_CHECK_GOTO(gml_weights_load(model, weights), st, done);
    const Gml__SampleConfig *sc = cfg->sample;
    gml_sample_opts o = {tokens >= 0 ? (int)tokens : sc->tokens,
                         temperature > 0 ? (float)temperature : sc->temperature,
                         top_k >= 0 ? (int)top_k : sc->top_k,
                         seed >= 0 ? (uint64_t)seed : cfg->train->seed};
    if (!prompt) prompt = sc->prompt;
    size_t cap = strlen(prompt) + (size_t)o.tokens + 1;
    text = malloc(cap);
    if (!text) {
        st = gml_error_set(GML_ERR_NOMEM, "out of host memory");
        goto done;
    }
    GML_CHECK_GOTO(gml_generate(model, gml_dataset_tokenizer(ds), prompt, &o, text, cap), st, done);
    fputs(text, stdout);
    fputc('\n', stdout);
done:
    free(text);
    gml_gpt_destroy(model);
    gml_backend_destroy(be);
    if (ds) gml_dataset_close(ds);
    gml_config_free(cfg);
    free(overrides);
    return st;
}
