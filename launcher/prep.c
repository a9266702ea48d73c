/* prep.c — `gml-dist prep`: read UTF-8 text files, tokenize, split into
 * train/val, write a token dataset. See prep.h for the command line.
 * Not for: the file format (core/dataset.c), the tokenizers themselves
 * (core/tokenizer.c).
 */
#include "launcher/prep.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dataset.h"
#include "core/tokenizer.h"

#define PREP_USAGE                                                                                                     \
    "usage: gml-dist prep [--tokenizer byte|char] [--val-fraction F] [--strip-fortune] --out FILE.h5 INPUT..."         \
    "\n  --tokenizer     char (default: one id per distinct byte of the text) or byte (256 ids)"                       \
    "\n  --val-fraction  share of the tokens, taken from the end, that becomes /val (0 < F < 1, default 0.1)"          \
    "\n  --strip-fortune drop lines that are exactly \"%\" (fortune file separators)"

#define BAD_USAGE(...) gml_error_set(GML_ERR_BAD_INPUT, "prep: " __VA_ARGS__)

/* A growing byte buffer holding the concatenated text. */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} text_buf;

static gml_status buf_reserve(text_buf *b, size_t more) {
    if (b->n + more <= b->cap) return GML_OK;
    size_t cap = b->cap ? b->cap : 1 << 16;
    while (cap < b->n + more)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) return gml_error_set(GML_ERR_NOMEM, "prep: out of host memory for %zu bytes of text", cap);
    b->p = p;
    b->cap = cap;
    return GML_OK;
}

/* Offset of the first byte that breaks UTF-8 (RFC 3629: no overlong forms,
 * no surrogates, nothing above U+10FFFF), or n if all of s is valid. */
static size_t utf8_invalid_at(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return i;
        }
        if (n - i < len) return i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return i;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
        i += len;
    }
    return n;
}

/* Appends file `path` to b (after a '\n' if b does not end in one). */
static gml_status append_file(text_buf *b, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return gml_error_set(GML_ERR_BAD_INPUT, "prep: cannot open input file '%s': %s", path, strerror(errno));
    size_t start = b->n;
    if (b->n > 0 && b->p[b->n - 1] != '\n') {
        gml_status st = buf_reserve(b, 1);
        if (st != GML_OK) {
            fclose(f);
            return st;
        }
        b->p[b->n++] = '\n';
    }
    size_t body = b->n;
    for (;;) {
        gml_status st = buf_reserve(b, 1 << 16);
        if (st != GML_OK) {
            fclose(f);
            return st;
        }
        size_t got = fread(b->p + b->n, 1, b->cap - b->n, f);
        b->n += got;
        if (got == 0) break;
    }
    int err = ferror(f) ? errno : 0;
    fclose(f);
    if (err) return gml_error_set(GML_ERR_BAD_INPUT, "prep: cannot read input file '%s': %s", path, strerror(err));
    if (b->n == body) { /* empty file: take back the separator */
        b->n = start;
        return GML_OK;
    }
    size_t bad = utf8_invalid_at(b->p + body, b->n - body);
    if (bad < b->n - body)
        return gml_error_set(GML_ERR_BAD_INPUT,
                             "prep: input file '%s' is not valid UTF-8 at byte offset %zu (byte 0x%02x)\n---> HINT: "
                             "convert it first, e.g. iconv -f latin1 -t utf-8",
                             path, bad, b->p[body + bad]);
    return GML_OK;
}

/* Removes lines that are exactly "%" (with their '\n'), in place. */
static void strip_fortune(text_buf *b) {
    size_t r = 0, w = 0;
    while (r < b->n) {
        size_t e = r;
        while (e < b->n && b->p[e] != '\n')
            e++;
        size_t next = e < b->n ? e + 1 : e; /* past the '\n' */
        int sep = (e - r == 1 && b->p[r] == '%');
        if (!sep) {
            memmove(b->p + w, b->p + r, next - r);
            w += next - r;
        }
        r = next;
    }
    b->n = w;
}

/* Value of "--flag value" or "--flag=value"; advances *i past what it used. */
static int flag_value(int argc, char **argv, int *i, const char *flag, const char **value) {
    size_t fl = strlen(flag);
    const char *a = argv[*i];
    if (strncmp(a, flag, fl) != 0) return 0;
    if (a[fl] == '=') {
        *value = a + fl + 1;
        return 1;
    }
    if (a[fl] != '\0') return 0;
    *value = (*i + 1 < argc) ? argv[++*i] : NULL;
    return 1;
}

gml_status gml_cmd_prep(int argc, char **argv) {
    const char *out = NULL, *tok_name = "char";
    double val_fraction = 0.1;
    int strip = 0;
    char **inputs = calloc(argc > 0 ? (size_t)argc : 1, sizeof *inputs);
    if (!inputs) return gml_error_set(GML_ERR_NOMEM, "prep: out of host memory");
    int ninputs = 0, flags_done = 0;
    gml_status st = GML_OK;
    text_buf b = {0};
    int32_t *ids = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (flags_done || a[0] != '-' || strcmp(a, "-") == 0) {
            inputs[ninputs++] = argv[i];
        } else if (strcmp(a, "--") == 0) {
            flags_done = 1;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            puts(PREP_USAGE);
            goto done;
        } else if (strcmp(a, "--strip-fortune") == 0) {
            strip = 1;
        } else if (flag_value(argc, argv, &i, "--out", &v)) {
            if (!v || !v[0]) {
                st = BAD_USAGE("--out needs a file name\n%s", PREP_USAGE);
                goto done;
            }
            out = v;
        } else if (flag_value(argc, argv, &i, "--tokenizer", &v)) {
            if (!v || (strcmp(v, "byte") != 0 && strcmp(v, "char") != 0)) {
                st = BAD_USAGE("--tokenizer '%s': accepted values are byte and char\n%s", v ? v : "", PREP_USAGE);
                goto done;
            }
            tok_name = v;
        } else if (flag_value(argc, argv, &i, "--val-fraction", &v)) {
            char *end = NULL;
            errno = 0;
            double f = v ? strtod(v, &end) : NAN;
            if (!v || end == v || *end != '\0' || errno != 0 || !(f > 0.0 && f < 1.0)) {
                st = BAD_USAGE("--val-fraction '%s': expected a number with 0 < F < 1\n%s", v ? v : "", PREP_USAGE);
                goto done;
            }
            val_fraction = f;
        } else {
            st = BAD_USAGE("unknown flag '%s'\n%s", a, PREP_USAGE);
            goto done;
        }
    }
    if (!out) {
        st = BAD_USAGE("--out FILE.h5 is required\n%s", PREP_USAGE);
        goto done;
    }
    if (ninputs == 0) {
        st = BAD_USAGE("no INPUT text files given\n%s", PREP_USAGE);
        goto done;
    }

    for (int k = 0; k < ninputs; k++)
        GML_CHECK_GOTO(append_file(&b, inputs[k]), st, done);
    if (b.n == 0) {
        st = gml_error_set(GML_ERR_BAD_INPUT, "prep: all %d input file(s) are empty (first: '%s')", ninputs, inputs[0]);
        goto done;
    }
    if (strip) strip_fortune(&b);
    if (b.n == 0) {
        st = gml_error_set(GML_ERR_BAD_INPUT, "prep: no text is left after --strip-fortune (first input '%s')",
                           inputs[0]);
        goto done;
    }

    gml_tokenizer tok;
    if (strcmp(tok_name, "byte") == 0)
        gml_tokenizer_init_byte(&tok);
    else
        gml_tokenizer_init_char(&tok, b.p, b.n);
    ids = malloc(b.n * sizeof *ids); /* (n) token ids */
    if (!ids) {
        st = gml_error_set(GML_ERR_NOMEM, "prep: out of host memory for %zu token ids", b.n);
        goto done;
    }
    GML_CHECK_GOTO(gml_tokenizer_encode(&tok, b.p, b.n, ids), st, done);
    size_t n = b.n;
    size_t nval = (size_t)floor((double)n * val_fraction);
    size_t ntrain = n - nval;
    if (nval < 2 || ntrain < 2) {
        st = gml_error_set(GML_ERR_BAD_INPUT,
                           "prep: the text has %zu tokens; with --val-fraction %g that is %zu train and %zu val "
                           "tokens, and each split needs at least 2\n---> HINT: give more text or change "
                           "--val-fraction",
                           n, val_fraction, ntrain, nval);
        goto done;
    }
    GML_CHECK_GOTO(gml_dataset_write(out, &tok, ids, ntrain, ids + ntrain, nval), st, done);
    printf("prep: %zu train tokens, %zu val tokens, vocab %d (%s tokenizer) -> %s\n", ntrain, nval, tok.vocab_size,
           tok_name, out);
done:
    free(ids);
    free(b.p);
    free(inputs);
    return st;
}
