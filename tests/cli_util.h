/* cli_util.h — helpers for tests that drive the gml-dist binary: run a shell
 * command capturing its output, read environment set by CTest, pull values
 * out of metrics.jsonl, and read the weights files it writes. Include after
 * <cmocka.h>. */
#ifndef GML_TEST_CLI_UTIL_H
#define GML_TEST_CLI_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "checkpoint/weights.h"
#include "core/backend.h"
#include "core/gpt.h"

/* Run `cmd` with stderr merged into stdout; *out (malloc'd) gets the output
 * when out is not NULL. Returns the exit code (-1 if killed). */
static inline int cli_run(const char *cmd, char **out) {
    size_t len = strlen(cmd) + 16;
    char *full = malloc(len);
    assert_non_null(full);
    snprintf(full, len, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    free(full);
    assert_non_null(p);
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap);
    assert_non_null(buf);
    while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (n + 1 >= cap) {
            buf = realloc(buf, cap *= 2);
            assert_non_null(buf);
        }
    }
    buf[n] = '\0';
    int status = pclose(p);
    if (out) *out = buf;
    else free(buf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static inline const char *cli_env(const char *k) {
    const char *v = getenv(k);
    if (!v) fail_msg("environment variable %s is not set (CTest sets it)", k);
    return v;
}

/* The text after "key": of each "kind":"train" line of a metrics.jsonl, by
 * step (1-based; a later line for the same step replaces an earlier one, as
 * after a resume). Returns the largest step seen. text[s] holds up to 31
 * characters. */
static inline int cli_train_values(const char *jsonl, const char *key, char (*text)[32], int max_steps) {
    FILE *f = fopen(jsonl, "r");
    if (!f) fail_msg("cannot open %s", jsonl);
    char line[8192], pat[48];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    int last = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strstr(line, "\"kind\":\"train\"")) continue;
        const char *sp = strstr(line, "\"step\":"), *p = strstr(line, pat);
        assert_non_null(sp);
        assert_non_null(p);
        int step = atoi(sp + 7);
        assert_true(step >= 1 && step <= max_steps);
        p += strlen(pat);
        size_t k = strcspn(p, ",}");
        snprintf(text[step], 32, "%.*s", (int)(k < 31 ? k : 31), p);
        if (step > last) last = step;
    }
    fclose(f);
    return last;
}

/* A learnable corpus: n words from an 8-word list, a sentence break about
 * every 7th, from a fixed LCG seed. 0 on success. */
static inline int cli_write_words(const char *path, int n, unsigned seed) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    static const char *w[] = {"alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"};
    unsigned s = seed;
    for (int i = 0; i < n; i++) {
        s = s * 1103515245u + 12345u;
        fprintf(f, "%s%s", w[(s >> 9) % 8], (s >> 20) % 7 == 0 ? ".\n" : " ");
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* DIR/text.txt of cli_write_words(n, seed) and DIR/data.h5 made from it by
 * `gml-dist prep --tokenizer char` (GML_BINARY). 0 on success. */
static inline int cli_prep_words(const char *dir, int n, unsigned seed) {
    char path[4096], cmd[12288];
    snprintf(path, sizeof path, "%s/text.txt", dir);
    if (cli_write_words(path, n, seed) != 0) return -1;
    snprintf(cmd, sizeof cmd, "%s prep --tokenizer char --out %s/data.h5 %s", cli_env("GML_BINARY"), dir, path);
    return cli_run(cmd, NULL) == 0 ? 0 : -1;
}

/* The weights of a weights file (checkpoint/weights.h) as host floats, *n
 * of them (registry order); malloc'd, the caller frees. */
static inline float *cli_weights_of(const char *path, size_t *n) {
    gml_backend *be;
    gml_gpt_config c;
    gml_gpt *m;
    assert_int_equal(gml_backend_create("cpu", 0, &be), GML_OK);
    assert_int_equal(gml_weights_read_config(path, &c), GML_OK);
    assert_int_equal(gml_gpt_create(be, &c, 1, 1, 0, &m), GML_OK);
    assert_int_equal(gml_weights_load(m, path), GML_OK);
    *n = gml_gpt_num_params(m);
    float *w = malloc(*n * sizeof *w);
    assert_non_null(w);
    assert_int_equal(gml_gpt_get_params_host(m, w), GML_OK);
    gml_gpt_destroy(m);
    gml_backend_destroy(be);
    return w;
}

/* rm -rf of a test's temporary directory; 0 on success. */
static inline int cli_rm_rf(const char *dir) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

#endif
