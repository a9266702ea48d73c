/* test_metrics.c — CRC-32C, TensorBoard event files and metrics.jsonl.
 *
 * Event files are read back here without our writer's code: TFRecord framing
 * is parsed by hand, both CRCs recomputed with a bit-at-a-time CRC-32C and
 * the mask formula written out again, one record is compared with protobuf
 * bytes encoded by hand from upstream's field numbers, and every record is
 * unpacked with protobuf-c. metrics.jsonl lines are checked with a small
 * hand-written JSON scan (balanced braces outside strings, expected keys),
 * and the progress line against the example in launcher/metrics.h.
 * TensorBoard's own loader reads our files in tests/tb_read.py.
 */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/crc32c.h"
#include "launcher/metrics.h"
#include "launcher/tb_writer.h"
#include "proto/tensorboard.pb-c.h"

/* ---- independent references ---- */

/* CRC-32C one bit at a time, straight from the definition (reflected
 * polynomial 0x82F63B78, init and final xor 0xFFFFFFFF). */
static uint32_t crc32c_bitwise(const void *data, size_t n) {
    const unsigned char *p = data;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

static uint32_t tf_mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

static uint64_t get_u64le(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint32_t get_u32le(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static char *make_tmpdir(void) {
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/gml-test-metrics-XXXXXX", base && base[0] ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

static void rm_rf(const char *path) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    assert_int_equal(system(cmd), 0);
}

static unsigned char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    assert_true(len >= 0);
    rewind(f);
    unsigned char *buf = malloc((size_t)len + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    buf[len] = 0;
    fclose(f);
    *n = (size_t)len;
    return buf;
}

/* Names of the entries in dir containing `needle`; returns the count and the
 * first match in first (caller frees). */
static int find_files(const char *dir, const char *needle, char **first) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int count = 0;
    struct dirent *e;
    *first = NULL;
    while ((e = readdir(d)) != NULL) {
        if (!strstr(e->d_name, needle)) continue;
        if (count++ == 0) {
            size_t n = strlen(dir) + strlen(e->d_name) + 2;
            *first = malloc(n);
            snprintf(*first, n, "%s/%s", dir, e->d_name);
        }
    }
    closedir(d);
    return count;
}

/* ---- CRC-32C ---- */

static void test_crc32c_vectors(void **state) {
    (void)state;
    assert_int_equal(crc32c_bitwise("123456789", 9), 0xE3069283u);
    assert_int_equal(gml_crc32c("123456789", 9), 0xE3069283u);
    assert_int_equal(gml_crc32c("", 0), 0u);
    /* RFC 3720 (iSCSI) B.4: 32 bytes of zeros, of 0xFF, and ascending. */
    unsigned char buf[32];
    memset(buf, 0, sizeof buf);
    assert_int_equal(gml_crc32c(buf, 32), 0x8A9136AAu);
    memset(buf, 0xFF, sizeof buf);
    assert_int_equal(gml_crc32c(buf, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++) buf[i] = (unsigned char)i;
    assert_int_equal(gml_crc32c(buf, 32), 0x46DD794Eu);

    printf("CRC-32C: %s\n", gml_crc32c_hardware() ? "the CPU's instruction (SSE4.2)" : "tables");
    /* Every length 0..300 and misaligned starts: both paths == bitwise, and
     * update() over two pieces == one pass. */
    unsigned char big[333];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof big; i++) {
        x = x * 1103515245u + 12345u;
        big[i] = (unsigned char)(x >> 16);
    }
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n + off <= 300; n++) {
            uint32_t want = crc32c_bitwise(big + off, n);
            assert_int_equal(gml_crc32c(big + off, n), want);
            assert_int_equal(gml_crc32c_update_tables(0, big + off, n), want); /* also where the CPU's runs */
            size_t h = n / 3;
            assert_int_equal(gml_crc32c_update(gml_crc32c(big + off, h), big + off + h, n - h), want);
            assert_int_equal(gml_crc32c_update_tables(gml_crc32c(big + off, h), big + off + h, n - h), want);
            assert_int_equal(gml_crc32c_mask(want), tf_mask(want));
            assert_int_equal(gml_crc32c_unmask(tf_mask(want)), want);
        }
}

/* ---- event files ---- */

typedef struct {
    const char *tag;
    int64_t step;
    double wall;
    float value;
} scalar;

static const scalar SCALARS[] = {
    {"train/loss", 0, 1700000000.25, 4.5f},   {"train/lr", 0, 1700000000.25, 0.0f},
    {"val/loss", 0, 1700000000.25, -1.75f},   {"train/loss", 10, 1700000010.5, 3.25f},
    {"train/lr", 10, 1700000010.5, 6e-4f},    {"val/loss", 10, 1700000010.5, 1e30f},
    {"train/loss", 300, 1700000300.0, 2.0f},  {"train/lr", 300, 1700000300.0, 3e-4f},
    {"val/loss", 8589934592LL, 1700000400.0, 2.5f},
};
#define N_SCALARS (sizeof SCALARS / sizeof SCALARS[0])

/* Protobuf bytes for Event{wall_time, step, summary{value{tag, simple_value}}}
 * encoded here by hand from upstream's numbers (event.proto: wall_time = 1
 * double, step = 2 int64, summary = 5; summary.proto: value = 1, tag = 1
 * string, simple_value = 2 float). Tag and values must be short (< 128). */
static size_t encode_by_hand(const scalar *s, unsigned char *out) {
    size_t taglen = strlen(s->tag);
    size_t vlen = 2 + taglen + 5;       /* value: tag field + simple_value field */
    size_t slen = 2 + vlen;             /* summary: one value field */
    unsigned char *p = out;
    *p++ = (1 << 3) | 1;                /* field 1, fixed64 */
    memcpy(p, &s->wall, 8);             /* host is little-endian (x86-64, arm64) */
    p += 8;
    if (s->step != 0) {
        *p++ = (2 << 3) | 0;            /* field 2, varint */
        uint64_t v = (uint64_t)s->step;
        do {
            unsigned char b = v & 0x7f;
            v >>= 7;
            *p++ = v ? (b | 0x80) : b;
        } while (v);
    }
    *p++ = (5 << 3) | 2;                /* field 5, length-delimited */
    *p++ = (unsigned char)slen;
    *p++ = (1 << 3) | 2;                /* Summary.value */
    *p++ = (unsigned char)vlen;
    *p++ = (1 << 3) | 2;                /* Value.tag */
    *p++ = (unsigned char)taglen;
    memcpy(p, s->tag, taglen);
    p += taglen;
    *p++ = (2 << 3) | 5;                /* Value.simple_value, fixed32 */
    memcpy(p, &s->value, 4);
    p += 4;
    return (size_t)(p - out);
}

static void test_tb_roundtrip(void **state) {
    (void)state;
    char *tmp = make_tmpdir();
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/a/b/tb", tmp); /* parents do not exist yet */
    double t0 = (double)time(NULL);

    gml_tb_writer *w = NULL;
    assert_int_equal(gml_tb_open(dir, &w), GML_OK);
    assert_non_null(w);
    for (size_t i = 0; i < N_SCALARS; i++)
        assert_int_equal(gml_tb_scalar(w, SCALARS[i].tag, SCALARS[i].step, SCALARS[i].wall, SCALARS[i].value),
                         GML_OK);
    assert_int_equal(gml_tb_flush(w), GML_OK);
    char path[1024];
    snprintf(path, sizeof path, "%s", gml_tb_path(w));
    assert_int_equal(gml_tb_close(w), GML_OK);
    assert_int_equal(gml_tb_close(NULL), GML_OK);

    /* the name: DIR/events.out.tfevents.<secs>.<host>.<pid>.gml */
    char *found = NULL;
    assert_int_equal(find_files(dir, "tfevents", &found), 1);
    assert_string_equal(found, path);
    free(found);
    const char *base = strrchr(path, '/') + 1;
    assert_int_equal(strncmp(base, "events.out.tfevents.", 20), 0);
    char *end = NULL;
    long long secs = strtoll(base + 20, &end, 10);
    assert_true(llabs(secs - (long long)t0) <= 5);
    char pidpart[64];
    snprintf(pidpart, sizeof pidpart, ".%ld.gml", (long)getpid());
    size_t bl = strlen(base), pl = strlen(pidpart);
    assert_true(bl > pl && strcmp(base + bl - pl, pidpart) == 0);

    size_t n = 0;
    unsigned char *buf = read_file(path, &n);
    size_t off = 0;
    int rec = 0;
    while (off < n) {
        assert_true(off + 12 <= n);
        uint64_t len = get_u64le(buf + off);
        assert_int_equal(get_u32le(buf + off + 8), tf_mask(crc32c_bitwise(buf + off, 8)));
        assert_true(off + 12 + len + 4 <= n);
        const unsigned char *data = buf + off + 12;
        assert_int_equal(get_u32le(data + len), tf_mask(crc32c_bitwise(data, (size_t)len)));

        Gml__Tb__Event *ev = gml__tb__event__unpack(NULL, (size_t)len, data);
        assert_non_null(ev);
        if (rec == 0) {
            assert_int_equal(ev->what_case, GML__TB__EVENT__WHAT_FILE_VERSION);
            assert_string_equal(ev->file_version, "brain.Event:2");
            assert_true(fabs(ev->wall_time - t0) < 5.0);
            assert_int_equal(ev->step, 0);
        } else {
            const scalar *s = &SCALARS[rec - 1];
            assert_int_equal(ev->what_case, GML__TB__EVENT__WHAT_SUMMARY);
            assert_int_equal(ev->step, s->step);
            assert_true(ev->wall_time == s->wall);
            assert_int_equal(ev->summary->n_value, 1);
            Gml__Tb__Summary__Value *v = ev->summary->value[0];
            assert_string_equal(v->tag, s->tag);
            assert_int_equal(v->value_case, GML__TB__SUMMARY__VALUE__VALUE_SIMPLE_VALUE); /* 0.0f too */
            assert_true(v->simple_value == s->value);

            unsigned char want[256];
            size_t wn = encode_by_hand(s, want);
            assert_int_equal(len, wn);
            assert_memory_equal(data, want, wn);
        }
        gml__tb__event__free_unpacked(ev, NULL);
        off += 12 + (size_t)len + 4;
        rec++;
    }
    assert_int_equal(off, n);
    assert_int_equal(rec, 1 + (int)N_SCALARS);
    free(buf);
    rm_rf(tmp);
    free(tmp);
}

static void test_tb_two_writers_and_errors(void **state) {
    (void)state;
    char *tmp = make_tmpdir();
    gml_tb_writer *a = NULL, *b = NULL;
    assert_int_equal(gml_tb_open(tmp, &a), GML_OK);
    assert_int_equal(gml_tb_open(tmp, &b), GML_OK); /* same dir, pid, (likely) second */
    assert_string_not_equal(gml_tb_path(a), gml_tb_path(b));
    assert_int_equal(gml_tb_scalar(a, "", 1, 0.0, 1.0f), GML_ERR_INVALID_ARG);
    gml_error_clear();
    assert_int_equal(gml_tb_close(a), GML_OK);
    assert_int_equal(gml_tb_close(b), GML_OK);
    char *first = NULL;
    assert_int_equal(find_files(tmp, "tfevents", &first), 2);
    free(first);

    /* a directory that cannot exist: its parent is a file */
    char file[1024], sub[1100];
    snprintf(file, sizeof file, "%s/plainfile", tmp);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(sub, sizeof sub, "%s/tb", file);
    gml_tb_writer *c = (gml_tb_writer *)&c; /* must be reset to NULL */
    gml_error_clear();
    assert_int_equal(gml_tb_open(sub, &c), GML_ERR_IO);
    assert_null(c);
    assert_non_null(strstr(gml_error_message(), "plainfile"));
    gml_error_clear();
    rm_rf(tmp);
    free(tmp);
}

/* ---- JSON ---- */

static void test_json_escape(void **state) {
    (void)state;
    char out[256];
    const char *in = "He said \"hi\"\n\tC:\\ caf\xc3\xa9 \xff!";
    const char *want = "\"He said \\\"hi\\\"\\n\\tC:\\\\ caf\xc3\xa9 \\ufffd!\"";
    assert_int_equal(gml_metrics_json_escape(in, out, sizeof out), strlen(want));
    assert_string_equal(out, want);

    struct {
        const char *in, *want;
    } cases[] = {
        {"", "\"\""},
        {"\x01\x1f\r\x7f", "\"\\u0001\\u001f\\r\x7f\""},
        {"\xf0\x9f\x98\x80", "\"\xf0\x9f\x98\x80\""},               /* U+1F600 passes */
        {"\xc0\x80", "\"\\ufffd\\ufffd\""},                         /* overlong NUL */
        {"\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""},             /* surrogate */
        {"\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""}, /* > U+10FFFF */
        {"a\xe2\x82", "\"a\\ufffd\\ufffd\""},                       /* truncated */
        {"\xe2\x82\xac", "\"\xe2\x82\xac\""},                       /* euro sign */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(gml_metrics_json_escape(cases[i].in, out, sizeof out), strlen(cases[i].want));
        assert_string_equal(out, cases[i].want);
    }
    /* snprintf-style: truncated output is NUL-terminated; the full length is returned */
    char small[5];
    assert_int_equal(gml_metrics_json_escape("abcdefgh", small, sizeof small), 10);
    assert_string_equal(small, "\"abc");
    assert_int_equal(gml_metrics_json_escape("abc", NULL, 0), 5);
}

/* A JSON object on one line: starts with {, ends with }, braces and brackets
 * balance outside strings, strings close, no raw control characters. */
static void check_json_line(const char *line) {
    size_t n = strlen(line);
    assert_true(n >= 2 && line[0] == '{' && line[n - 1] == '}');
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)line[i];
        assert_true(c >= 0x20);
        if (in_str) {
            if (c == '\\') {
                i++;
                assert_non_null(strchr("\"\\/bfnrtu", line[i]));
            } else if (c == '"') in_str = 0;
            continue;
        }
        if (c == '"') in_str = 1;
        else if (c == '{' || c == '[') depth++;
        else if (c == '}' || c == ']') {
            depth--;
            assert_true(depth >= 0);
            if (depth == 0) assert_int_equal(i, n - 1);
        }
    }
    assert_int_equal(depth, 0);
    assert_false(in_str);
    assert_non_null(strstr(line, "\"kind\":\""));
    assert_non_null(strstr(line, "\"time\":1"));
}

/* Run fn with stdout going to a file; returns what it printed (caller frees). */
static char *capture_stdout(void (*fn)(void *), void *arg) {
    fflush(stdout);
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    int saved = dup(1);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(tmp), 1) >= 0);
    fn(arg);
    fflush(stdout);
    assert_true(dup2(saved, 1) >= 0);
    close(saved);
    rewind(tmp);
    char *text = calloc(1, 8192);
    assert_non_null(text);
    size_t got = fread(text, 1, 8191, tmp);
    text[got] = '\0';
    fclose(tmp);
    return text;
}

static void run_train_line(void *arg) {
    gml_metrics *m = arg;
    gml_train_stats s = {.step = 120,
                         .steps = 5000,
                         .loss = 2.1345,
                         .lr = 6e-4,
                         .grad_norm = 0.8123,
                         .step_s = 0.0452,
                         .tokens_per_s = 362100.0,
                         .mfu = 0.413,
                         .mem_bytes = 1320702444.0, /* 1.23 GiB, rounded up to whole bytes */
                         .eta_s = 220.0,
                         .power_w = 672.4,
                         .sm_mhz = 1702,
                         .clock_reasons = 0x4}; /* NVML's SW power cap bit */
    assert_int_equal(gml_metrics_train(m, &s), GML_OK);
    s.step = 121;
    s.mfu = -1.0;     /* unknown: no MFU field */
    s.power_w = -1.0; /* no readings (CPU): no power, no clock */
    s.loss = NAN;     /* printed as nan, null in JSON */
    s.eta_s = 7300.0; /* 2h01m40s */
    assert_int_equal(gml_metrics_train(m, &s), GML_OK);
    assert_int_equal(gml_metrics_eval(m, 121, 2.5), GML_OK);
}

static void test_metrics_files(void **state) {
    (void)state;
    char *tmp = make_tmpdir();
    char out_dir[1024];
    snprintf(out_dir, sizeof out_dir, "%s/run/x", tmp);

    gml_metrics *m = NULL;
    assert_int_equal(gml_metrics_open(out_dir, 1, 1, 0, &m), GML_OK);
    char *text = capture_stdout(run_train_line, m);
    const char *want = "step   120/5000 | loss 2.1345 | lr 6.00e-04 | norm 0.8123 | 45.2 ms | 362.1k tok/s | "
                       "MFU 41.3% | mem 1.23 GiB | 672 W 1702 MHz | ETA 3m40s\n"
                       "step   121/5000 | loss nan | lr 6.00e-04 | norm 0.8123 | 45.2 ms | 362.1k tok/s | "
                       "mem 1.23 GiB | ETA 2h01m\n"
                       "step   121/5000 | val loss 2.5000\n";
    assert_string_equal(text, want);
    free(text);
    assert_int_equal(gml_metrics_sample(m, 121, "He said \"hi\"\n\tC:\\ caf\xc3\xa9 \xff!"), GML_OK);
    assert_int_equal(gml_metrics_info(m, "config \"path\"", "configs/x.yaml"), GML_OK);
    assert_int_equal(gml_metrics_close(m), GML_OK);
    assert_int_equal(gml_metrics_close(NULL), GML_OK);

    /* a second run appends, quietly */
    assert_int_equal(gml_metrics_open(out_dir, 1, 0, 1, &m), GML_OK);
    text = capture_stdout(run_train_line, m);
    assert_string_equal(text, "");
    free(text);
    assert_int_equal(gml_metrics_close(m), GML_OK);

    char path[1200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", out_dir);
    size_t n = 0;
    char *all = (char *)read_file(path, &n);
    assert_true(n > 0 && all[n - 1] == '\n');
    const char *kinds[] = {"train", "train", "eval", "sample", "info", "train", "train", "eval"};
    int line_no = 0;
    for (char *line = strtok(all, "\n"); line; line = strtok(NULL, "\n"), line_no++) {
        assert_true(line_no < 8);
        check_json_line(line);
        char k[64];
        snprintf(k, sizeof k, "{\"kind\":\"%s\",\"time\":", kinds[line_no]);
        assert_int_equal(strncmp(line, k, strlen(k)), 0);
        if (line_no == 0) {
            const char *keys[] = {"\"step\":120,", "\"steps\":5000,", "\"loss\":2.1345,", "\"lr\":0.0006,",
                                  "\"grad_norm\":0.8123,", "\"step_s\":0.0452,", "\"tokens_per_s\":362100,",
                                  "\"mfu\":0.413,", "\"mem_bytes\":1320702444,", "\"eta_s\":220,",
                                  "\"power_w\":672.4,", "\"sm_mhz\":1702,", "\"clock_limits\":\"power cap\"}"};
            for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
                if (!strstr(line, keys[i])) fail_msg("line 0 lacks %s: %s", keys[i], line);
            }
        }
        if (line_no == 1) {
            assert_non_null(strstr(line, "\"loss\":null,"));
            assert_non_null(strstr(line, "\"mfu\":null,"));
            assert_non_null(strstr(line, "\"eta_s\":7300,"));
            assert_non_null(strstr(line, "\"power_w\":null,\"sm_mhz\":null,\"clock_limits\":null}"));
        }
        if (line_no == 2) assert_non_null(strstr(line, ",\"step\":121,\"val_loss\":2.5}"));
        if (line_no == 3)
            assert_non_null(strstr(line, ",\"step\":121,\"text\":\"He said \\\"hi\\\"\\n\\tC:\\\\ caf\xc3\xa9 "
                                         "\\ufffd!\"}"));
        if (line_no == 4) assert_non_null(strstr(line, ",\"config \\\"path\\\"\":\"configs/x.yaml\"}"));
    }
    assert_int_equal(line_no, 8);
    free(all);

    /* TensorBoard: one file under out_dir/tb with the train and val tags */
    char tbdir[1200];
    snprintf(tbdir, sizeof tbdir, "%s/tb", out_dir);
    char *ev_path = NULL;
    assert_int_equal(find_files(tbdir, "tfevents", &ev_path), 1);
    unsigned char *buf = read_file(ev_path, &n);
    free(ev_path);
    const char *want_tags[] = {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/mfu",
                               "train/power_w", "train/sm_mhz",
                               /* step 121: no mfu, no power */
                               "train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "val/loss"};
    const int64_t want_steps[] = {120, 120, 120, 120, 120, 120, 120, 121, 121, 121, 121, 121};
    const int n_tags = (int)(sizeof want_steps / sizeof want_steps[0]);
    size_t off = 0;
    int rec = 0;
    while (off < n) {
        uint64_t len = get_u64le(buf + off);
        const unsigned char *data = buf + off + 12;
        assert_int_equal(get_u32le(data + len), tf_mask(crc32c_bitwise(data, (size_t)len)));
        Gml__Tb__Event *ev = gml__tb__event__unpack(NULL, (size_t)len, data);
        assert_non_null(ev);
        if (rec > 0) {
            assert_true(rec - 1 < n_tags);
            assert_string_equal(ev->summary->value[0]->tag, want_tags[rec - 1]);
            assert_int_equal(ev->step, want_steps[rec - 1]);
            if (rec == 5) assert_true(ev->summary->value[0]->simple_value == 0.413f);
            if (rec == 6) assert_true(ev->summary->value[0]->simple_value == 672.4f);
            if (rec == 7) assert_true(ev->summary->value[0]->simple_value == 1702.0f);
            if (rec == n_tags) assert_true(ev->summary->value[0]->simple_value == 2.5f);
        }
        gml__tb__event__free_unpacked(ev, NULL);
        off += 12 + (size_t)len + 4;
        rec++;
    }
    assert_int_equal(rec, n_tags + 1);
    free(buf);

    /* no outputs asked for: no directory made */
    char none[1200];
    snprintf(none, sizeof none, "%s/none", tmp);
    assert_int_equal(gml_metrics_open(none, 0, 0, 1, &m), GML_OK);
    assert_int_equal(gml_metrics_info(m, "k", "v"), GML_OK);
    assert_int_equal(gml_metrics_close(m), GML_OK);
    struct stat sb;
    assert_int_not_equal(stat(none, &sb), 0);

    rm_rf(tmp);
    free(tmp);
}

static void run_fast_line(void *arg) {
    gml_train_stats s = {.step = 7, .steps = 10, .loss = 2.0, .lr = 6e-4, .grad_norm = 0.5, .step_s = 0.0316,
                         .tokens_per_s = 1034567.0, .mfu = -1.0, .mem_bytes = -1.0, .eta_s = 30.0};
    assert_int_equal(gml_metrics_train(arg, &s), GML_OK);
}

/* Several GPUs pass 1M tokens/s: the line keeps four digits (1.035M), as
 * below it (362.1k), so scaling tables read from it stay exact enough. */
static void test_metrics_rate_digits(void **state) {
    (void)state;
    gml_metrics *m = NULL;
    assert_int_equal(gml_metrics_open("/nonexistent-not-used", 0, 0, 0, &m), GML_OK);
    char *text = capture_stdout(run_fast_line, m);
    assert_string_equal(text, "step     7/10 | loss 2.0000 | lr 6.00e-04 | norm 0.5000 | 31.6 ms | 1.035M tok/s | ETA 30s\n");
    free(text);
    assert_int_equal(gml_metrics_close(m), GML_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_rate_digits),
        cmocka_unit_test(test_crc32c_vectors),
        cmocka_unit_test(test_tb_roundtrip),
        cmocka_unit_test(test_tb_two_writers_and_errors),
        cmocka_unit_test(test_json_escape),
        cmocka_unit_test(test_metrics_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
