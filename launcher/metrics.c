/* metrics.c — the progress line, metrics.jsonl and the TensorBoard scalars
 * of a training run (see metrics.h for the formats).
 *
 * Each JSON line is built in memory (jbuf) and written with one fwrite and an
 * fflush. Not for: choosing what or when to log (launcher/train.c), or the
 * event-file format (launcher/tb_writer.c).
 */
#include "launcher/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/fsutil.h"
#include "core/power.h"
#include "launcher/tb_writer.h"

struct gml_metrics {
    FILE *jsonl;       /* out_dir/metrics.jsonl, or NULL */
    char *jsonl_path;  /* owned */
    gml_tb_writer *tb; /* out_dir/tb/, or NULL */
    int quiet;         /* 1: nothing on stdout */
    int steps;         /* total steps from the last train record; 0: unknown */
};

static double unix_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}


/* ---- JSON string escaping ---- */

typedef struct {
    char *out;
    size_t cap, len; /* bytes; len counts what the full result needs */
} sink;

static void sink_put(sink *k, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++, k->len++)
        if (k->len + 1 < k->cap) k->out[k->len] = s[i];
}

/* Length of the valid UTF-8 sequence starting at p (a lead byte >= 0x80), or
 * 0 when it is not one. The string is NUL-terminated and NUL is never a
 * continuation byte, so the look-ahead stops at the end. */
static size_t utf8_len(const unsigned char *p) {
    unsigned char c = p[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf; /* range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0) lo = 0xa0; /* no overlongs */
        if (c == 0xed) hi = 0x9f; /* no surrogates U+D800..DFFF */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0) lo = 0x90; /* no overlongs */
        if (c == 0xf4) hi = 0x8f; /* nothing above U+10FFFF */
    } else return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xbf) return 0;
    return n;
}

size_t gml_metrics_json_escape(const char *s, char *out, size_t cap) {
    sink k = {out, cap, 0};
    sink_put(&k, "\"", 1);
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p) {
        unsigned char c = *p;
        char esc[8];
        if (c == '"') sink_put(&k, "\\\"", 2);
        else if (c == '\\') sink_put(&k, "\\\\", 2);
        else if (c == '\n') sink_put(&k, "\\n", 2);
        else if (c == '\r') sink_put(&k, "\\r", 2);
        else if (c == '\t') sink_put(&k, "\\t", 2);
        else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", (unsigned)c);
            sink_put(&k, esc, 6);
        } else if (c < 0x80) sink_put(&k, (const char *)p, 1);
        else {
            size_t n = utf8_len(p);
            if (n == 0) {
                sink_put(&k, "\\ufffd", 6); /* one replacement per bad byte */
                p++;
                continue;
            }
            sink_put(&k, (const char *)p, n);
            p += n;
            continue;
        }
        p++;
    }
    sink_put(&k, "\"", 1);
    if (cap > 0) out[k.len < cap ? k.len : cap - 1] = '\0';
    return k.len;
}

/* ---- one JSON line, built in memory ---- */

typedef struct {
    char *p;
    size_t len, cap; /* bytes */
    int oom;
} jbuf;

static int jb_reserve(jbuf *b, size_t more) {
    if (b->oom) return 0;
    if (b->len + more + 1 <= b->cap) return 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return 0;
    }
    b->p = p;
    b->cap = cap;
    return 1;
}

static void jb_printf(jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void jb_printf(jbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !jb_reserve(b, (size_t)n)) {
        b->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void jb_str(jbuf *b, const char *s) {
    size_t n = gml_metrics_json_escape(s, NULL, 0);
    if (!jb_reserve(b, n)) return;
    gml_metrics_json_escape(s, b->p + b->len, b->cap - b->len);
    b->len += n;
}

/* ,"key":  */
static void jb_key(jbuf *b, const char *key) {
    jb_printf(b, ",");
    jb_str(b, key);
    jb_printf(b, ":");
}

static void jb_num(jbuf *b, const char *key, double v) {
    jb_key(b, key);
    if (!isfinite(v)) jb_printf(b, "null");
    else if (v == floor(v) && fabs(v) < 9007199254740992.0) jb_printf(b, "%.0f", v); /* byte counts: exact */
    else jb_printf(b, "%.9g", v);
}

static void jb_int(jbuf *b, const char *key, long long v) {
    jb_key(b, key);
    jb_printf(b, "%lld", v);
}

/* {"kind":KIND,"time":T */
static void jb_begin(jbuf *b, const char *kind) {
    jb_printf(b, "{\"kind\":");
    jb_str(b, kind);
    jb_printf(b, ",\"time\":%.3f", unix_now());
}

/* Close the object and write it as one line; frees the buffer. */
static gml_status jb_emit(gml_metrics *m, jbuf *b) {
    gml_status st = GML_OK;
    jb_printf(b, "}\n");
    if (b->oom) st = gml_error_set(GML_ERR_NOMEM, "out of memory for a metrics line");
    else if (fwrite(b->p, 1, b->len, m->jsonl) != b->len || fflush(m->jsonl) != 0)
        st = gml_error_set(GML_ERR_IO, "cannot write to '%s': %s", m->jsonl_path, strerror(errno));
    free(b->p);
    b->p = NULL;
    return st;
}

/* ---- stdout ---- */

static gml_status say(const gml_metrics *m, const char *text) {
    if (m->quiet) return GML_OK;
    if (fputs(text, stdout) == EOF || fflush(stdout) != 0)
        return gml_error_set(GML_ERR_IO, "cannot write the progress line to stdout: %s", strerror(errno));
    return GML_OK;
}

static int ndigits(int v) {
    int n = 1;
    while (v >= 10 || v <= -10) {
        v /= 10;
        n++;
    }
    return n;
}

/* "step   120/5000" or, with the total unknown, "step   120". */
static void fmt_step(char *out, size_t cap, int step, int steps) {
    int w = ndigits(steps > 0 ? steps : step);
    if (w < 5) w = 5;
    if (steps > 0) snprintf(out, cap, "step %*d/%d", w, step, steps);
    else snprintf(out, cap, "step %*d", w, step);
}

/* 40s, 3m40s, 2h05m, 1d03h; "?" when not a finite non-negative number. */
static void fmt_eta(char *out, size_t cap, double s) {
    if (!isfinite(s) || s < 0 || s > 1e12) {
        snprintf(out, cap, "?");
        return;
    }
    long long t = (long long)(s + 0.5);
    if (t < 60) snprintf(out, cap, "%llds", t);
    else if (t < 3600) snprintf(out, cap, "%lldm%02llds", t / 60, t % 60);
    else if (t < 86400) snprintf(out, cap, "%lldh%02lldm", t / 3600, t % 3600 / 60);
    else snprintf(out, cap, "%lldd%02lldh", t / 86400, t % 86400 / 3600);
}

/* 950.0, 362.1k, 1.035M, 3.400G */
static void fmt_si(char *out, size_t cap, double v) {
    double a = fabs(v);
    if (!isfinite(v) || a < 1e3) snprintf(out, cap, "%.1f", v);
    else if (a < 1e6) snprintf(out, cap, "%.1fk", v / 1e3);
    else if (a < 1e9) snprintf(out, cap, "%.3fM", v / 1e6); /* 1.034M: four digits, like 520.4k */
    else snprintf(out, cap, "%.3fG", v / 1e9);
}

/* 45.2 ms below 10 s, else 12.34 s */
static void fmt_time(char *out, size_t cap, double s) {
    if (isfinite(s) && s >= 10.0) snprintf(out, cap, "%.2f s", s);
    else snprintf(out, cap, "%.1f ms", s * 1e3);
}

/* 1.23 GiB from 1 GiB up, else 512.0 MiB */
static void fmt_mem(char *out, size_t cap, double bytes) {
    const double gib = 1024.0 * 1024.0 * 1024.0;
    if (bytes >= gib) snprintf(out, cap, "%.2f GiB", bytes / gib);
    else snprintf(out, cap, "%.1f MiB", bytes / (1024.0 * 1024.0));
}

/* ---- public ---- */

gml_status gml_metrics_open(const char *out_dir, int jsonl, int tensorboard, int quiet, gml_metrics **out) {
    if (!out) return gml_error_set(GML_ERR_INVALID_ARG, "gml_metrics_open: out is NULL");
    *out = NULL;
    if ((jsonl || tensorboard) && (!out_dir || !out_dir[0]))
        return gml_error_set(GML_ERR_BAD_INPUT, "train.out_dir is empty; metrics.jsonl and tb/ need a directory");
    gml_metrics *m = calloc(1, sizeof *m);
    if (!m) return gml_error_set(GML_ERR_NOMEM, "out of memory for the metrics writer");
    m->quiet = quiet;
    gml_status st = GML_OK;
    char *tb_dir = NULL;
    if (jsonl || tensorboard) GML_CHECK_GOTO(gml_mkdir_p(out_dir), st, fail);
    if (jsonl) {
        size_t n = strlen(out_dir) + sizeof "/metrics.jsonl";
        m->jsonl_path = malloc(n);
        if (!m->jsonl_path) {
            st = gml_error_set(GML_ERR_NOMEM, "out of memory for a path");
            goto fail;
        }
        snprintf(m->jsonl_path, n, "%s/metrics.jsonl", out_dir);
        m->jsonl = fopen(m->jsonl_path, "a");
        if (!m->jsonl) {
            st = gml_error_set(GML_ERR_IO, "cannot open '%s' for appending: %s", m->jsonl_path, strerror(errno));
            goto fail;
        }
    }
    if (tensorboard) {
        size_t n = strlen(out_dir) + sizeof "/tb";
        tb_dir = malloc(n);
        if (!tb_dir) {
            st = gml_error_set(GML_ERR_NOMEM, "out of memory for a path");
            goto fail;
        }
        snprintf(tb_dir, n, "%s/tb", out_dir);
        GML_CHECK_GOTO(gml_tb_open(tb_dir, &m->tb), st, fail);
    }
    free(tb_dir);
    *out = m;
    return GML_OK;
fail:
    free(tb_dir);
    gml_metrics_close(m); /* the first error is already recorded */
    return st;
}

/* power and clock are printed together or not at all */
static int power_known(const gml_train_stats *s) { return s->power_w > 0 && s->sm_mhz > 0; }

gml_status gml_metrics_train(gml_metrics *m, const gml_train_stats *s) {
    if (!m || !s) return gml_error_set(GML_ERR_INVALID_ARG, "gml_metrics_train: NULL argument");
    m->steps = s->steps;
    if (!m->quiet) {
        char stp[64], tim[32], tok[32], mfu[32] = "", mem[48] = "", pw[48] = "", eta[32], line[512];
        fmt_step(stp, sizeof stp, s->step, s->steps);
        fmt_time(tim, sizeof tim, s->step_s);
        fmt_si(tok, sizeof tok, s->tokens_per_s);
        if (s->mfu >= 0) snprintf(mfu, sizeof mfu, " | MFU %.1f%%", 100.0 * s->mfu);
        if (s->mem_bytes >= 0) {
            char b[32];
            fmt_mem(b, sizeof b, s->mem_bytes);
            snprintf(mem, sizeof mem, " | mem %s", b);
        }
        if (power_known(s)) snprintf(pw, sizeof pw, " | %.0f W %d MHz", s->power_w, s->sm_mhz);
        fmt_eta(eta, sizeof eta, s->eta_s);
        snprintf(line, sizeof line, "%s | loss %.4f | lr %.2e | norm %.4f | %s | %s tok/s%s%s%s | ETA %s\n", stp,
                 s->loss, s->lr, s->grad_norm, tim, tok, mfu, mem, pw, eta);
        GML_CHECK(say(m, line));
    }
    if (m->jsonl) {
        jbuf b = {0};
        jb_begin(&b, "train");
        jb_int(&b, "step", s->step);
        jb_int(&b, "steps", s->steps);
        jb_num(&b, "loss", s->loss);
        jb_num(&b, "lr", s->lr);
        jb_num(&b, "grad_norm", s->grad_norm);
        jb_num(&b, "step_s", s->step_s);
        jb_num(&b, "tokens_per_s", s->tokens_per_s);
        jb_num(&b, "mfu", s->mfu >= 0 ? s->mfu : NAN); /* unknown -> null */
        jb_num(&b, "mem_bytes", s->mem_bytes >= 0 ? s->mem_bytes : NAN);
        jb_num(&b, "eta_s", s->eta_s);
        jb_num(&b, "power_w", power_known(s) ? s->power_w : NAN);
        jb_num(&b, "sm_mhz", power_known(s) ? s->sm_mhz : NAN);
        jb_key(&b, "clock_limits");
        if (power_known(s)) {
            char why[256];
            gml_power_reasons_str(s->clock_reasons, why, sizeof why);
            jb_str(&b, why);
        } else {
            jb_printf(&b, "null");
        }
        GML_CHECK(jb_emit(m, &b));
    }
    if (m->tb) {
        double t = unix_now();
        GML_CHECK(gml_tb_scalar(m->tb, "train/loss", s->step, t, (float)s->loss));
        GML_CHECK(gml_tb_scalar(m->tb, "train/lr", s->step, t, (float)s->lr));
        GML_CHECK(gml_tb_scalar(m->tb, "train/grad_norm", s->step, t, (float)s->grad_norm));
        GML_CHECK(gml_tb_scalar(m->tb, "train/tokens_per_s", s->step, t, (float)s->tokens_per_s));
        if (s->mfu >= 0) GML_CHECK(gml_tb_scalar(m->tb, "train/mfu", s->step, t, (float)s->mfu));
        if (power_known(s)) {
            GML_CHECK(gml_tb_scalar(m->tb, "train/power_w", s->step, t, (float)s->power_w));
            GML_CHECK(gml_tb_scalar(m->tb, "train/sm_mhz", s->step, t, (float)s->sm_mhz));
        }
        GML_CHECK(gml_tb_flush(m->tb));
    }
    return GML_OK;
}

gml_status gml_metrics_eval(gml_metrics *m, int step, double val_loss) {
    if (!m) return gml_error_set(GML_ERR_INVALID_ARG, "gml_metrics_eval: metrics is NULL");
    if (!m->quiet) {
        char stp[64], line[128];
        fmt_step(stp, sizeof stp, step, m->steps);
        snprintf(line, sizeof line, "%s | val loss %.4f\n", stp, val_loss);
        GML_CHECK(say(m, line));
    }
    if (m->jsonl) {
        jbuf b = {0};
        jb_begin(&b, "eval");
        jb_int(&b, "step", step);
        jb_num(&b, "val_loss", val_loss);
        GML_CHECK(jb_emit(m, &b));
    }
    if (m->tb) {
        GML_CHECK(gml_tb_scalar(m->tb, "val/loss", step, unix_now(), (float)val_loss));
        GML_CHECK(gml_tb_flush(m->tb));
    }
    return GML_OK;
}

gml_status gml_metrics_sample(gml_metrics *m, int step, const char *text) {
    if (!m) return gml_error_set(GML_ERR_INVALID_ARG, "gml_metrics_sample: metrics is NULL");
    if (!text) text = "";
    if (!m->quiet) {
        char head[64];
        snprintf(head, sizeof head, "step %d | sample:\n", step);
        GML_CHECK(say(m, head));
        GML_CHECK(say(m, text));
        size_t n = strlen(text);
        if (n == 0 || text[n - 1] != '\n') GML_CHECK(say(m, "\n"));
    }
    if (m->jsonl) {
        jbuf b = {0};
        jb_begin(&b, "sample");
        jb_int(&b, "step", step);
        jb_key(&b, "text");
        jb_str(&b, text);
        GML_CHECK(jb_emit(m, &b));
    }
    return GML_OK;
}

gml_status gml_metrics_info(gml_metrics *m, const char *key, const char *value) {
    if (!m || !key || !key[0]) return gml_error_set(GML_ERR_INVALID_ARG, "gml_metrics_info: NULL metrics or empty key");
    if (m->jsonl) {
        jbuf b = {0};
        jb_begin(&b, "info");
        jb_key(&b, key);
        jb_str(&b, value ? value : "");
        GML_CHECK(jb_emit(m, &b));
    }
    return GML_OK;
}

gml_status gml_metrics_close(gml_metrics *m) {
    if (!m) return GML_OK;
    gml_status st = gml_tb_close(m->tb);
    if (m->jsonl && fclose(m->jsonl) != 0 && st == GML_OK)
        st = gml_error_set(GML_ERR_IO, "cannot close '%s': %s", m->jsonl_path, strerror(errno));
    free(m->jsonl_path);
    free(m);
    return st;
}
