/* test_dataset.c — tokenizers, the "gml-tokens" HDF5 format (write, open,
 * validation of broken files, ranged reads) and the data loader's order
 * (determinism, exactly-once per epoch, rank split, resume).
 *
 * Expected values come from hand-computed token ids, from files written here
 * directly with the HDF5 C API (not with gml_dataset_write), and from the raw
 * token arrays: every window the loader returns is located in the raw array.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>

#include "core/dataset.h"
#include "core/loader.h"
#include "core/rng.h"
#include "core/status.h"
#include "core/tokenizer.h"

static char g_dir[64];

static void tmp_path(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", g_dir, name); }

static void assert_msg_contains(const char *needle) {
    const char *msg = gml_error_message();
    if (!strstr(msg, needle)) fail_msg("error message lacks \"%s\": %s", needle, msg);
}

/* ---------------- tokenizer ---------------- */

static void test_tokenizer_char(void **state) {
    (void)state;
    /* "abca" + "é" (C3 A9): distinct bytes 0x61 0x62 0x63 0xA9 0xC3 -> ids 0..4 */
    const char *text = "abca\xc3\xa9";
    size_t n = strlen(text);
    gml_tokenizer tok;
    gml_tokenizer_init_char(&tok, (const uint8_t *)text, n);
    assert_int_equal(tok.kind, GML_TOKENIZER_CHAR);
    assert_int_equal(tok.vocab_size, 5);
    const uint8_t want_table[5] = {0x61, 0x62, 0x63, 0xa9, 0xc3};
    assert_memory_equal(tok.id_to_byte, want_table, 5);
    assert_int_equal(tok.byte_to_id['z'], -1);
    int32_t ids[6];
    assert_int_equal(gml_tokenizer_encode(&tok, (const uint8_t *)text, n, ids), GML_OK);
    const int32_t want_ids[6] = {0, 1, 2, 0, 4, 3};
    assert_memory_equal(ids, want_ids, sizeof want_ids);
    char out[16];
    assert_int_equal(gml_tokenizer_decode(&tok, ids, n, out, sizeof out), n);
    assert_string_equal(out, text);

    /* out-of-range ids are skipped; cap limits the output */
    const int32_t odd[5] = {1, 99, -1, 2, 5};
    assert_int_equal(gml_tokenizer_decode(&tok, odd, 5, out, sizeof out), 2);
    assert_string_equal(out, "bc");
    assert_int_equal(gml_tokenizer_decode(&tok, ids, n, out, 3), 2);
    assert_string_equal(out, "ab");

    /* unknown byte: named with its offset */
    gml_error_clear();
    assert_int_equal(gml_tokenizer_encode(&tok, (const uint8_t *)"abz", 3, ids), GML_ERR_BAD_INPUT);
    assert_msg_contains("0x7a");
    assert_msg_contains("offset 2");
}

static void test_tokenizer_byte(void **state) {
    (void)state;
    gml_tokenizer tok;
    gml_tokenizer_init_byte(&tok);
    assert_int_equal(tok.vocab_size, 256);
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)(255 - i);
    int32_t ids[256];
    assert_int_equal(gml_tokenizer_encode(&tok, all, 256, ids), GML_OK);
    for (int i = 0; i < 256; i++)
        assert_int_equal(ids[i], 255 - i);
    char out[300];
    assert_int_equal(gml_tokenizer_decode(&tok, ids, 256, out, sizeof out), 256);
    assert_memory_equal(out, all, 256);
}

/* ---------------- files written directly with HDF5 ---------------- */

typedef struct {
    const char *format; /* NULL: no attribute */
    int version;
    int vocab;
    const char *tokenizer; /* "byte" / "char" / other */
    const uint8_t *table;  /* /tokenizer_vocab, vocab entries; NULL: none */
    hid_t ttype;           /* file type of /train and /val */
    int train_2d;          /* /train as (ntrain/2, 2) */
    int with_val;
    const uint32_t *train;
    size_t ntrain;
    const uint32_t *val;
    size_t nval;
} raw_opts;

static void raw_str_attr(hid_t f, const char *name, const char *v) {
    hid_t t = H5Tcopy(H5T_C_S1); /* fixed-length, as some other writers do */
    assert_true(t >= 0);
    assert_true(H5Tset_size(t, strlen(v) + 1) >= 0);
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, t, s, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(a >= 0);
    assert_true(H5Awrite(a, t, v) >= 0);
    H5Aclose(a);
    H5Sclose(s);
    H5Tclose(t);
}

static void raw_int_attr(hid_t f, const char *name, int v) {
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(a >= 0);
    assert_true(H5Awrite(a, H5T_NATIVE_INT, &v) >= 0);
    H5Aclose(a);
    H5Sclose(s);
}

static void raw_dset(hid_t f, const char *name, hid_t ftype, int rank, const hsize_t *dims, hid_t mtype,
                     const void *data) {
    hid_t s = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(f, name, ftype, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(d >= 0);
    if (dims[0] > 0) assert_true(H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    H5Dclose(d);
    H5Sclose(s);
}

static void raw_write(const char *path, const raw_opts *o) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    if (o->format) raw_str_attr(f, "format", o->format);
    raw_int_attr(f, "format_version", o->version);
    raw_int_attr(f, "vocab_size", o->vocab);
    raw_str_attr(f, "tokenizer", o->tokenizer);
    if (o->table) {
        hsize_t d = (hsize_t)o->vocab;
        raw_dset(f, "/tokenizer_vocab", H5T_STD_U8LE, 1, &d, H5T_NATIVE_UINT8, o->table);
    }
    if (o->train_2d) {
        hsize_t d2[2] = {o->ntrain / 2, 2};
        raw_dset(f, "/train", o->ttype, 2, d2, H5T_NATIVE_UINT32, o->train);
    } else {
        hsize_t d = o->ntrain;
        raw_dset(f, "/train", o->ttype, 1, &d, H5T_NATIVE_UINT32, o->train);
    }
    if (o->with_val) {
        hsize_t d = o->nval;
        raw_dset(f, "/val", o->ttype, 1, &d, H5T_NATIVE_UINT32, o->val);
    }
    H5Fclose(f);
}

static const uint32_t k_train[12] = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8};
static const uint32_t k_val[4] = {9, 7, 9, 3};

static raw_opts good_opts(void) {
    raw_opts o = {.format = "gml-tokens",
                  .version = 1,
                  .vocab = 256,
                  .tokenizer = "byte",
                  .table = NULL,
                  .ttype = H5T_STD_U32LE,
                  .train_2d = 0,
                  .with_val = 1,
                  .train = k_train,
                  .ntrain = 12,
                  .val = k_val,
                  .nval = 4};
    return o;
}

/* An independent reader: the file type of /train as stored. */
static size_t stored_elem_size(const char *path, const char *name) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    assert_true(d >= 0);
    hid_t t = H5Dget_type(d);
    size_t sz = H5Tget_size(t);
    assert_int_equal(H5Tget_sign(t), H5T_SGN_NONE);
    H5Tclose(t);
    H5Dclose(d);
    H5Fclose(f);
    return sz;
}

static void test_raw_u32_file(void **state) {
    (void)state;
    char path[128];
    tmp_path(path, sizeof path, "raw_u32.h5");
    raw_opts o = good_opts();
    raw_write(path, &o);
    gml_dataset *ds = NULL;
    gml_error_clear();
    assert_int_equal(gml_dataset_open(path, &ds), GML_OK);
    assert_int_equal(gml_dataset_vocab_size(ds), 256);
    assert_int_equal(gml_dataset_tokenizer(ds)->kind, GML_TOKENIZER_BYTE);
    assert_int_equal(gml_dataset_num_tokens(ds, GML_SPLIT_TRAIN), 12);
    assert_int_equal(gml_dataset_num_tokens(ds, GML_SPLIT_VAL), 4);
    assert_string_equal(gml_dataset_path(ds), path);
    int32_t got[12];
    assert_int_equal(gml_dataset_read(ds, GML_SPLIT_TRAIN, 0, 12, got), GML_OK);
    for (int i = 0; i < 12; i++)
        assert_int_equal(got[i], (int32_t)k_train[i]);
    assert_int_equal(gml_dataset_read(ds, GML_SPLIT_VAL, 1, 3, got), GML_OK);
    for (int i = 0; i < 3; i++)
        assert_int_equal(got[i], (int32_t)k_val[1 + i]);
    gml_dataset_close(ds);
    assert_int_equal(stored_elem_size(path, "/train"), 4);
}

static void test_write_open_roundtrip(void **state) {
    (void)state;
    /* char tokenizer from a text with bytes >= 128 */
    const char *text = "Grüße, 世界! The quick brown fox.\n";
    size_t n = strlen(text);
    gml_tokenizer tok;
    gml_tokenizer_init_char(&tok, (const uint8_t *)text, n);
    int32_t *ids = malloc(n * sizeof *ids);
    assert_non_null(ids);
    assert_int_equal(gml_tokenizer_encode(&tok, (const uint8_t *)text, n, ids), GML_OK);
    size_t nval = 7, ntrain = n - nval;
    char path[128];
    tmp_path(path, sizeof path, "rt_char.h5");
    gml_error_clear();
    assert_int_equal(gml_dataset_write(path, &tok, ids, ntrain, ids + ntrain, nval), GML_OK);
    char tmpname[160];
    snprintf(tmpname, sizeof tmpname, "%s.tmp", path);
    assert_int_equal(access(tmpname, F_OK), -1); /* renamed away */
    assert_int_equal(stored_elem_size(path, "/train"), 2);

    gml_dataset *ds = NULL;
    assert_int_equal(gml_dataset_open(path, &ds), GML_OK);
    assert_int_equal(gml_dataset_vocab_size(ds), tok.vocab_size);
    const gml_tokenizer *t2 = gml_dataset_tokenizer(ds);
    assert_int_equal(t2->kind, GML_TOKENIZER_CHAR);
    assert_memory_equal(t2->id_to_byte, tok.id_to_byte, (size_t)tok.vocab_size);
    assert_int_equal(gml_dataset_num_tokens(ds, GML_SPLIT_TRAIN), ntrain);
    assert_int_equal(gml_dataset_num_tokens(ds, GML_SPLIT_VAL), nval);
    int32_t *all = malloc(n * sizeof *all);
    assert_int_equal(gml_dataset_read(ds, GML_SPLIT_TRAIN, 0, ntrain, all), GML_OK);
    assert_int_equal(gml_dataset_read(ds, GML_SPLIT_VAL, 0, nval, all + ntrain), GML_OK);
    char back[128];
    assert_int_equal(gml_tokenizer_decode(t2, all, n, back, sizeof back), n);
    assert_string_equal(back, text);

    /* range checks */
    int32_t one[4];
    assert_int_equal(gml_dataset_read(ds, GML_SPLIT_TRAIN, ntrain - 2, 2, one), GML_OK);
    assert_int_equal(one[1], ids[ntrain - 1]);
    assert_int_equal(gml_dataset_read(ds, GML_SPLIT_TRAIN, ntrain, 0, one), GML_OK);
    gml_error_clear();
    assert_int_equal(gml_dataset_read(ds, GML_SPLIT_TRAIN, ntrain - 1, 2, one), GML_ERR_INVALID_ARG);
    gml_error_clear();
    assert_int_equal(gml_dataset_read(ds, GML_SPLIT_VAL, nval + 1, 0, one), GML_ERR_INVALID_ARG);
    gml_error_clear();
    assert_int_equal(gml_dataset_read(ds, GML_SPLIT_VAL, UINT64_MAX, 2, one), GML_ERR_INVALID_ARG);
    gml_dataset_close(ds);

    /* byte tokenizer, written over the same path (replaces it) */
    gml_tokenizer bt;
    gml_tokenizer_init_byte(&bt);
    int32_t bytes[300];
    for (int i = 0; i < 300; i++)
        bytes[i] = (i * 37) % 256;
    assert_int_equal(gml_dataset_write(path, &bt, bytes, 290, bytes + 290, 10), GML_OK);
    assert_int_equal(gml_dataset_open(path, &ds), GML_OK);
    assert_int_equal(gml_dataset_vocab_size(ds), 256);
    assert_int_equal(gml_dataset_tokenizer(ds)->kind, GML_TOKENIZER_BYTE);
    int32_t rb[10];
    assert_int_equal(gml_dataset_read(ds, GML_SPLIT_VAL, 0, 10, rb), GML_OK);
    assert_memory_equal(rb, bytes + 290, sizeof rb);
    assert_int_equal(gml_dataset_read(ds, GML_SPLIT_TRAIN, 200, 10, rb), GML_OK);
    assert_memory_equal(rb, bytes + 200, sizeof rb);
    gml_dataset_close(ds);

    /* ids outside the vocabulary are refused by the writer */
    int32_t badids[3] = {0, 256, 1};
    gml_error_clear();
    assert_int_equal(gml_dataset_write(path, &bt, badids, 2, badids + 2, 1), GML_ERR_INVALID_ARG);
    /* an unwritable place is a user error naming it */
    gml_error_clear();
    assert_int_equal(gml_dataset_write("/nonexistent-dir-gml/x.h5", &bt, bytes, 2, bytes, 2), GML_ERR_BAD_INPUT);
    assert_msg_contains("/nonexistent-dir-gml/x.h5");
    free(all);
    free(ids);
}

/* ---------------- broken files ---------------- */

static void expect_open_fails(const char *path, const char *detail) {
    gml_dataset *ds = (gml_dataset *)0x1;
    gml_error_clear();
    assert_int_equal(gml_dataset_open(path, &ds), GML_ERR_BAD_INPUT);
    assert_null(ds);
    assert_msg_contains(path);
    if (detail) assert_msg_contains(detail);
}

static void test_corrupt_files(void **state) {
    (void)state;
    char path[128];
    FILE *f;

    tmp_path(path, sizeof path, "missing.h5");
    expect_open_fails(path, "No such file");

    tmp_path(path, sizeof path, "empty.h5");
    f = fopen(path, "wb");
    assert_non_null(f);
    fclose(f);
    expect_open_fails(path, "empty");

    tmp_path(path, sizeof path, "text.h5");
    f = fopen(path, "wb");
    assert_non_null(f);
    for (int i = 0; i < 100; i++)
        fputs("this is plain text, not HDF5\n", f);
    fclose(f);
    expect_open_fails(path, "not an HDF5 file");

    raw_opts o;
    tmp_path(path, sizeof path, "noval.h5");
    o = good_opts();
    o.with_val = 0;
    raw_write(path, &o);
    expect_open_fails(path, "'/val' is missing");

    tmp_path(path, sizeof path, "badformat.h5");
    o = good_opts();
    o.format = "gml-weights";
    raw_write(path, &o);
    expect_open_fails(path, "expected \"gml-tokens\"");
    expect_open_fails(path, "\"gml-weights\"");

    tmp_path(path, sizeof path, "noformat.h5");
    o = good_opts();
    o.format = NULL;
    raw_write(path, &o);
    expect_open_fails(path, "'format' is missing");

    tmp_path(path, sizeof path, "badversion.h5");
    o = good_opts();
    o.version = 2;
    raw_write(path, &o);
    expect_open_fails(path, "format_version is 2, expected 1");

    tmp_path(path, sizeof path, "badvocab.h5");
    o = good_opts();
    o.vocab = 0;
    raw_write(path, &o);
    expect_open_fails(path, "vocab_size is 0");

    tmp_path(path, sizeof path, "badtok.h5");
    o = good_opts();
    o.tokenizer = "bpe";
    raw_write(path, &o);
    expect_open_fails(path, "\"bpe\"");

    tmp_path(path, sizeof path, "char_notable.h5");
    o = good_opts();
    o.tokenizer = "char";
    o.vocab = 10;
    o.train = k_val; /* ids < 10 */
    o.ntrain = 4;
    raw_write(path, &o);
    expect_open_fails(path, "/tokenizer_vocab");

    tmp_path(path, sizeof path, "twod.h5");
    o = good_opts();
    o.train_2d = 1;
    raw_write(path, &o);
    expect_open_fails(path, "2 dimensions");

    tmp_path(path, sizeof path, "float.h5");
    o = good_opts();
    o.ttype = H5T_IEEE_F32LE;
    raw_write(path, &o);
    expect_open_fails(path, "float32");

    tmp_path(path, sizeof path, "signed.h5");
    o = good_opts();
    o.ttype = H5T_STD_I16LE;
    raw_write(path, &o);
    expect_open_fails(path, "int16");

    tmp_path(path, sizeof path, "emptytrain.h5");
    o = good_opts();
    o.ntrain = 0;
    raw_write(path, &o);
    expect_open_fails(path, "'/train' is empty");

    /* id >= vocab_size: opens, fails on read, names the file and the token */
    tmp_path(path, sizeof path, "bigid.h5");
    const uint8_t table[10] = {'0', '1', '2', '3', '4', '5', '6', '7', '8', '9'};
    const uint32_t train[6] = {1, 2, 3, 12, 4, 5};
    o = good_opts();
    o.tokenizer = "char";
    o.vocab = 10;
    o.table = table;
    o.train = train;
    o.ntrain = 6;
    raw_write(path, &o);
    gml_dataset *ds = NULL;
    gml_error_clear();
    assert_int_equal(gml_dataset_open(path, &ds), GML_OK);
    int32_t got[6];
    assert_int_equal(gml_dataset_read(ds, GML_SPLIT_TRAIN, 0, 3, got), GML_OK);
    assert_int_equal(got[2], 3);
    assert_int_equal(gml_dataset_read(ds, GML_SPLIT_TRAIN, 0, 6, got), GML_ERR_BAD_INPUT);
    assert_msg_contains(path);
    assert_msg_contains("token 3 of '/train' is 12");
    gml_dataset_close(ds);
}

/* ---------------- loader ---------------- */

enum { LD_NTRAIN = 997, LD_NVAL = 5, LD_T = 8 };
static int32_t g_raw[LD_NTRAIN + LD_NVAL]; /* train then val, byte ids */
static char g_ld_path[128];

/* Start of the window (inputs, targets) in the raw train array; asserts the
 * window occurs exactly once and targets are inputs shifted by one. */
static uint64_t find_start(const int32_t *in, const int32_t *tg, int T) {
    int found = 0;
    uint64_t at = 0;
    for (uint64_t s = 0; s + (uint64_t)T + 1 <= LD_NTRAIN; s++) {
        if (memcmp(&g_raw[s], in, (size_t)T * sizeof *in) == 0 && g_raw[s + (uint64_t)T] == tg[T - 1]) {
            found++;
            at = s;
        }
    }
    assert_int_equal(found, 1);
    assert_memory_equal(&g_raw[at + 1], tg, (size_t)T * sizeof *tg);
    return at;
}

static int setup_loader_file(void) {
    gml_rng r;
    gml_rng_init(&r, 7, 99);
    for (int i = 0; i < LD_NTRAIN + LD_NVAL; i++)
        g_raw[i] = (int32_t)(gml_rng_u32(&r) & 0xff);
    gml_tokenizer bt;
    gml_tokenizer_init_byte(&bt);
    tmp_path(g_ld_path, sizeof g_ld_path, "loader.h5");
    return gml_dataset_write(g_ld_path, &bt, g_raw, LD_NTRAIN, g_raw + LD_NTRAIN, LD_NVAL) == GML_OK ? 0 : -1;
}

static gml_dataset *open_ld(void) {
    gml_dataset *ds = NULL;
    gml_error_clear();
    assert_int_equal(gml_dataset_open(g_ld_path, &ds), GML_OK);
    return ds;
}

static void test_loader_exactly_once(void **state) {
    (void)state;
    gml_dataset *ds = open_ld();
    gml_loader *ld = NULL;
    const int T = LD_T;
    assert_int_equal(gml_loader_create(ds, GML_SPLIT_TRAIN, 1, T, 42, 1, 0, 1, &ld), GML_OK);
    int32_t in[LD_T], tg[LD_T];
    uint64_t first_order[LD_NTRAIN], nfirst = 0;
    int epochs_differ = 0;
    for (uint64_t epoch = 0; epoch < 4; epoch++) {
        uint8_t seen[LD_NTRAIN] = {0};
        uint64_t e, idx, count = 0, off = UINT64_MAX, prev_start = 0;
        int sorted = 1;
        for (;;) {
            gml_loader_position(ld, &e, &idx);
            if (e != epoch) break;
            assert_int_equal(idx, count);
            assert_int_equal(gml_loader_next(ld, in, tg), GML_OK);
            uint64_t s = find_start(in, tg, T);
            if (off == UINT64_MAX) off = s % T;
            assert_int_equal(s % T, off); /* one offset per epoch */
            assert_int_equal(seen[s], 0); /* each window once */
            seen[s] = 1;
            if (count > 0 && s < prev_start) sorted = 0;
            prev_start = s;
            if (epoch == 0)
                first_order[nfirst++] = s;
            else if (count < nfirst && first_order[count] != s)
                epochs_differ = 1;
            count++;
        }
        assert_int_equal(e, epoch + 1);
        assert_true(off < (uint64_t)T);
        /* every window of this epoch was visited: (ntok - 1 - off) / T of them */
        assert_int_equal(count, (LD_NTRAIN - 1 - off) / T);
        assert_int_equal(count, gml_loader_epoch_windows(ld, epoch));
        assert_false(sorted); /* shuffled */
    }
    assert_true(epochs_differ);
    gml_loader_destroy(ld);
    gml_dataset_close(ds);
}

/* n steps of a loader into out (n * B * T inputs and targets). */
static void run_steps(gml_loader *ld, int n, int B, int T, int32_t *in, int32_t *tg) {
    for (int s = 0; s < n; s++)
        assert_int_equal(gml_loader_next(ld, in + (size_t)s * B * T, tg + (size_t)s * B * T), GML_OK);
}

static void test_loader_seeds_and_batching(void **state) {
    (void)state;
    gml_dataset *ds = open_ld();
    const int T = LD_T, steps = 60, B = 5; /* 300 sequences: crosses two epoch ends mid-batch */
    size_t sz = (size_t)steps * B * T;
    int32_t *a_in = malloc(sz * 4), *a_tg = malloc(sz * 4), *b_in = malloc(sz * 4), *b_tg = malloc(sz * 4);
    gml_loader *a = NULL, *b = NULL;

    /* same seed -> same batches */
    assert_int_equal(gml_loader_create(ds, GML_SPLIT_TRAIN, B, T, 1234, 1, 0, 1, &a), GML_OK);
    assert_int_equal(gml_loader_create(ds, GML_SPLIT_TRAIN, B, T, 1234, 1, 0, 1, &b), GML_OK);
    run_steps(a, steps, B, T, a_in, a_tg);
    run_steps(b, steps, B, T, b_in, b_tg);
    assert_memory_equal(a_in, b_in, sz * 4);
    assert_memory_equal(a_tg, b_tg, sz * 4);
    gml_loader_destroy(b);

    /* different seed -> different */
    assert_int_equal(gml_loader_create(ds, GML_SPLIT_TRAIN, B, T, 1235, 1, 0, 1, &b), GML_OK);
    run_steps(b, steps, B, T, b_in, b_tg);
    assert_true(memcmp(a_in, b_in, sz * 4) != 0);
    gml_loader_destroy(b);

    /* B=5 per call == B=1 per call, five times (batches straddle epochs) */
    assert_int_equal(gml_loader_create(ds, GML_SPLIT_TRAIN, 1, T, 1234, 1, 0, 1, &b), GML_OK);
    run_steps(b, steps * B, 1, T, b_in, b_tg);
    assert_memory_equal(a_in, b_in, sz * 4);
    assert_memory_equal(a_tg, b_tg, sz * 4);
    for (int s = 0; s < steps * B; s++)
        find_start(b_in + (size_t)s * T, b_tg + (size_t)s * T, T);
    uint64_t e, i;
    gml_loader_position(b, &e, &i);
    assert_int_equal(e, 2); /* 300 sequences > two epochs of ~124 */
    gml_loader_destroy(b);

    /* ranks 0..3 of world 4 with B=3 == world 1 with B=12 */
    const int W = 4, Br = 3, st2 = 25; /* 300 sequences again */
    gml_loader *w1 = NULL;
    assert_int_equal(gml_loader_create(ds, GML_SPLIT_TRAIN, Br * W, T, 99, 1, 0, 1, &w1), GML_OK);
    run_steps(w1, st2, Br * W, T, a_in, a_tg);
    for (int r = 0; r < W; r++) {
        gml_loader *lr = NULL;
        assert_int_equal(gml_loader_create(ds, GML_SPLIT_TRAIN, Br, T, 99, 1, r, W, &lr), GML_OK);
        run_steps(lr, st2, Br, T, b_in, b_tg);
        for (int s = 0; s < st2; s++) {
            size_t global = ((size_t)s * Br * W + (size_t)r * Br) * T, local = (size_t)s * Br * T;
            assert_memory_equal(a_in + global, b_in + local, (size_t)Br * T * 4);
            assert_memory_equal(a_tg + global, b_tg + local, (size_t)Br * T * 4);
        }
        uint64_t e1, i1, e2, i2;
        gml_loader_position(w1, &e1, &i1);
        gml_loader_position(lr, &e2, &i2);
        assert_int_equal(e1, e2); /* the position is global: the same on every rank */
        assert_int_equal(i1, i2);
        gml_loader_destroy(lr);
    }
    gml_loader_destroy(w1);
    gml_loader_destroy(a);
    free(a_in);
    free(a_tg);
    free(b_in);
    free(b_tg);
    gml_dataset_close(ds);
}

static void test_loader_resume(void **state) {
    (void)state;
    gml_dataset *ds = open_ld();
    const int T = LD_T, B = 7, steps = 50; /* 350 sequences: ~3 epochs */
    size_t step = (size_t)B * T;
    int32_t *in = malloc((size_t)steps * step * 4), *tg = malloc((size_t)steps * step * 4);
    uint64_t pe[50], pi[50];
    gml_loader *a = NULL;
    assert_int_equal(gml_loader_create(ds, GML_SPLIT_TRAIN, B, T, 5, 1, 0, 1, &a), GML_OK);
    for (int s = 0; s < steps; s++) {
        gml_loader_position(a, &pe[s], &pi[s]);
        assert_int_equal(gml_loader_next(a, in + s * step, tg + s * step), GML_OK);
    }
    int32_t bin[7 * LD_T], btg[7 * LD_T];
    const int at[] = {0, 1, 17, 18, 35, 49};
    for (size_t k = 0; k < sizeof at / sizeof at[0]; k++) {
        gml_loader *b = NULL;
        assert_int_equal(gml_loader_create(ds, GML_SPLIT_TRAIN, B, T, 5, 1, 0, 1, &b), GML_OK);
        assert_int_equal(gml_loader_seek(b, pe[at[k]], pi[at[k]]), GML_OK);
        for (int s = at[k]; s < steps; s++) {
            assert_int_equal(gml_loader_next(b, bin, btg), GML_OK);
            assert_memory_equal(bin, in + s * step, step * 4);
            assert_memory_equal(btg, tg + s * step, step * 4);
        }
        gml_loader_destroy(b);
    }
    /* read-ahead (the trainer's gml_loader_prefetch after each micro-step):
     * the same batches, and the position still names the batch not yet
     * returned, across epoch boundaries (a checkpoint saves that) */
    {
        gml_loader *c = NULL;
        assert_int_equal(gml_loader_create(ds, GML_SPLIT_TRAIN, B, T, 5, 1, 0, 1, &c), GML_OK);
        for (int s = 0; s < steps; s++) {
            uint64_t e, i;
            assert_int_equal(gml_loader_next(c, bin, btg), GML_OK);
            assert_memory_equal(bin, in + s * step, step * 4);
            assert_memory_equal(btg, tg + s * step, step * 4);
            assert_int_equal(gml_loader_prefetch(c), GML_OK);
            assert_int_equal(gml_loader_prefetch(c), GML_OK); /* twice: still one batch ahead */
            gml_loader_position(c, &e, &i);
            if (s + 1 < steps) {
                assert_int_equal(e, pe[s + 1]);
                assert_int_equal(i, pi[s + 1]);
            }
        }
        /* a seek drops what was read ahead */
        assert_int_equal(gml_loader_prefetch(c), GML_OK);
        assert_int_equal(gml_loader_seek(c, pe[17], pi[17]), GML_OK);
        assert_int_equal(gml_loader_next(c, bin, btg), GML_OK);
        assert_memory_equal(bin, in + 17 * step, step * 4);
        gml_loader_destroy(c);
    }
    /* reset goes back to the start */
    assert_int_equal(gml_loader_reset(a), GML_OK);
    assert_int_equal(gml_loader_next(a, bin, btg), GML_OK);
    assert_memory_equal(bin, in, step * 4);
    /* seek to the end of an epoch == start of the next; past it is an error */
    uint64_t n0 = gml_loader_epoch_windows(a, 0), e, i;
    assert_int_equal(gml_loader_seek(a, 0, n0), GML_OK);
    gml_loader_position(a, &e, &i);
    assert_int_equal(e, 1);
    assert_int_equal(i, 0);
    gml_error_clear();
    assert_int_equal(gml_loader_seek(a, 0, n0 + 1), GML_ERR_BAD_INPUT);
    assert_msg_contains(g_ld_path);
    gml_loader_destroy(a);
    free(in);
    free(tg);
    gml_dataset_close(ds);
}

static void test_loader_in_order_and_small(void **state) {
    (void)state;
    gml_dataset *ds = open_ld();
    const int T = LD_T;
    gml_loader *ld = NULL;
    assert_int_equal(gml_loader_create(ds, GML_SPLIT_TRAIN, 2, T, 77, 0, 0, 1, &ld), GML_OK);
    const uint64_t nw = (LD_NTRAIN - 1) / T; /* offset 0 when not shuffling */
    assert_int_equal(gml_loader_epoch_windows(ld, 0), nw);
    int32_t in[2 * LD_T], tg[2 * LD_T];
    for (uint64_t k = 0; k < 2 * nw + 6; k += 2) { /* two epochs and a bit: wraps to window 0 */
        assert_int_equal(gml_loader_next(ld, in, tg), GML_OK);
        for (int b = 0; b < 2; b++) {
            uint64_t j = (k + (uint64_t)b) % nw;
            assert_memory_equal(in + b * T, &g_raw[j * T], (size_t)T * 4);
            assert_memory_equal(tg + b * T, &g_raw[j * T + 1], (size_t)T * 4);
        }
    }
    gml_loader_destroy(ld);

    /* the val split (5 tokens) cannot hold one window of T+1 = 9 */
    gml_error_clear();
    ld = (gml_loader *)0x1;
    assert_int_equal(gml_loader_create(ds, GML_SPLIT_VAL, 1, T, 1, 0, 0, 1, &ld), GML_ERR_BAD_INPUT);
    assert_null(ld);
    assert_msg_contains("'val' has 5 tokens");
    assert_msg_contains("= 9");
    assert_msg_contains(g_ld_path);
    /* but T=4 fits exactly one window; shuffling it still works */
    assert_int_equal(gml_loader_create(ds, GML_SPLIT_VAL, 3, 4, 1, 1, 0, 1, &ld), GML_OK);
    int32_t vin[12], vtg[12];
    assert_int_equal(gml_loader_next(ld, vin, vtg), GML_OK);
    for (int b = 0; b < 3; b++) {
        assert_memory_equal(vin + b * 4, &g_raw[LD_NTRAIN], 16);
        assert_memory_equal(vtg + b * 4, &g_raw[LD_NTRAIN + 1], 16);
    }
    gml_loader_destroy(ld);
    gml_dataset_close(ds);
}

static int group_setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/gml-test-dataset-XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    return setup_loader_file();
}

static int group_teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokenizer_char),
        cmocka_unit_test(test_tokenizer_byte),
        cmocka_unit_test(test_raw_u32_file),
        cmocka_unit_test(test_write_open_roundtrip),
        cmocka_unit_test(test_corrupt_files),
        cmocka_unit_test(test_loader_exactly_once),
        cmocka_unit_test(test_loader_seeds_and_batching),
        cmocka_unit_test(test_loader_resume),
        cmocka_unit_test(test_loader_in_order_and_small),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
