/* test_rankfile.c — reading a rank file's pieces without HDF5
 * (checkpoint/rankfile.h), the path a resume takes on OpenMP's threads:
 *  - every piece gml_rankfile_write makes is located (a byte offset) and
 *    gml_rankfile_pread_piece returns the data written, the same as HDF5's
 *    own read (gml_rankfile_read_piece), a piece cut at the range's start
 *    included;
 *  - a flipped byte: pread reports a checksum mismatch and its message is
 *    the one HDF5's path gives, word for word;
 *  - a file cut inside a piece: pread reports the end of the file;
 *  - a layout pread cannot take (a chunked dataset, as other tools may
 *    write) is not located (-1), and HDF5's read still verifies it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint/h5util.h"
#include "checkpoint/rankfile.h"
#include "core/crc32c.h"
#include "parallel/params.h"

static char g_dir[256];

/* Three parameters: 1000 + 37 x 50 + 3 elements. */
static void make_registry(gml_param_registry *reg) {
    gml_params_init(reg);
    const int64_t a[1] = {1000}, b[2] = {37, 50}, c[1] = {3};
    assert_int_equal(gml_params_add(reg, "a", 1, a, 1, GML_INIT_NORMAL, 0.02f, NULL), GML_OK);
    assert_int_equal(gml_params_add(reg, "b", 2, b, 1, GML_INIT_NORMAL, 0.02f, NULL), GML_OK);
    assert_int_equal(gml_params_add(reg, "c", 1, c, 0, GML_INIT_NORMAL, 0.02f, NULL), GML_OK);
}

/* Write rank 1 of 2 holding [lo, P): t[k][i] = k * 1e4 + i + lo + 0.25 */
static void write_rank_file(const gml_param_registry *reg, size_t lo, float *t[3], gml_rankfile_entry *e) {
    size_t n = reg->total - lo;
    for (int k = 0; k < 3; k++) {
        t[k] = malloc(n * sizeof *t[k]);
        assert_non_null(t[k]);
        for (size_t i = 0; i < n; i++) t[k][i] = (float)k * 1e4f + (float)(i + lo) + 0.25f;
    }
    const float *const ct[3] = {t[0], t[1], t[2]};
    assert_int_equal(gml_rankfile_write(g_dir, 1, 2, 7, 0x1234u, reg, lo, reg->total, ct, e), GML_OK);
}

/* The data piece pc should hold. */
static const float *expected(const gml_param_registry *reg, size_t lo, float *t[3], const Gml__TensorPiece *pc) {
    int k = !strcmp(pc->group, "params") ? 0 : !strcmp(pc->group, "adam_m") ? 1 : 2;
    int i = gml_params_find(reg, pc->name);
    assert_true(i >= 0);
    return t[k] + (reg->specs[i].offset + pc->offset - lo);
}

static void test_pread_equals_hdf5(void **state) {
    (void)state;
    gml_param_registry reg;
    make_registry(&reg);
    const size_t lo = 400; /* cuts parameter a: its piece starts at element 400 */
    float *t[3];
    gml_rankfile_entry e;
    write_rank_file(&reg, lo, t, &e);
    assert_int_equal(e.msg.n_pieces, 9);
    hid_t f;
    char path[4096];
    assert_int_equal(gml_rankfile_open("ck/state.h5", g_dir, &e.msg, 7, 0x1234u, &f, path, sizeof path), GML_OK);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    float *a = malloc(37 * 50 * sizeof *a), *b = malloc(37 * 50 * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    int64_t at[9];
    for (size_t q = 0; q < e.msg.n_pieces; q++) {
        const Gml__TensorPiece *pc = e.msg.pieces[q];
        assert_int_equal(gml_rankfile_locate_piece(f, "ck/state.h5", path, pc, &at[q]), GML_OK);
        if (at[q] < 0) fail_msg("piece %s/%s of a rank file we wrote was not located", pc->group, pc->name);
        gml_piece_result r = gml_rankfile_pread_piece(fd, pc, at[q], a);
        assert_int_equal(r.code, GML_PIECE_OK);
        assert_int_equal(r.crc, pc->crc32c);
        assert_int_equal(gml_rankfile_read_piece(f, "ck/state.h5", path, pc, b), GML_OK);
        assert_memory_equal(a, b, pc->count * sizeof *a);
        assert_memory_equal(a, expected(&reg, lo, t, pc), pc->count * sizeof *a);
    }
    assert_int_equal(e.msg.pieces[0]->offset, 400);
    assert_int_equal(e.msg.pieces[0]->count, 600);
    H5Fclose(f);
    close(fd);

    /* a flipped byte inside piece 4 (adam_m/b): the same message both ways */
    const Gml__TensorPiece *pc = e.msg.pieces[4];
    assert_string_equal(pc->group, "adam_m");
    assert_string_equal(pc->name, "b");
    fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char byte;
    assert_int_equal(pread(fd, &byte, 1, at[4] + 4 * 123 + 2), 1);
    byte ^= 0x10;
    assert_int_equal(pwrite(fd, &byte, 1, at[4] + 4 * 123 + 2), 1);
    gml_piece_result r = gml_rankfile_pread_piece(fd, pc, at[4], a);
    assert_int_equal(r.code, GML_PIECE_CRC);
    assert_int_not_equal(r.crc, pc->crc32c);
    assert_int_equal(r.crc, gml_crc32c(a, pc->count * sizeof *a)); /* the CRC of what is there */
    gml_error_clear();
    assert_int_equal(gml_rankfile_piece_error("ck/state.h5", path, pc, r), GML_ERR_BAD_INPUT);
    char direct[2048];
    snprintf(direct, sizeof direct, "%s", strstr(gml_error_message(), "checkpoint '"));
    assert_int_equal(gml_rankfile_open("ck/state.h5", g_dir, &e.msg, 7, 0x1234u, &f, path, sizeof path), GML_OK);
    gml_error_clear(); /* the first error is kept until cleared */
    assert_int_equal(gml_rankfile_read_piece(f, "ck/state.h5", path, pc, b), GML_ERR_BAD_INPUT);
    H5Fclose(f);
    assert_string_equal(direct, strstr(gml_error_message(), "checkpoint '"));
    assert_non_null(strstr(direct, "tensor 'adam_m/b' fails its checksum in '"));
    printf("flipped byte: %s\n", direct);

    /* the file cut inside the last piece: the end of the file, named */
    const Gml__TensorPiece *last = e.msg.pieces[8];
    assert_int_equal(ftruncate(fd, at[8] + 4), 0);
    r = gml_rankfile_pread_piece(fd, last, at[8], a);
    gml_error_clear();
    assert_int_equal(r.code, GML_PIECE_SHORT);
    assert_int_equal(gml_rankfile_piece_error("ck/state.h5", path, last, r), GML_ERR_BAD_INPUT);
    assert_non_null(strstr(gml_error_message(), "tensor 'adam_v/c' in '"));
    assert_non_null(strstr(gml_error_message(), "the file ends first: truncated"));
    close(fd);
    free(a);
    free(b);
    for (int k = 0; k < 3; k++) free(t[k]);
    gml_rankfile_entry_free(&e);
    gml_params_free(&reg);
}

/* A chunked dataset is no plain array: not located; HDF5's read verifies it. */
static void test_chunked_not_located(void **state) {
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/chunked.h5", g_dir);
    float v[100];
    for (int i = 0; i < 100; i++) v[i] = (float)i * 0.5f;
    hid_t f = gml_h5_create_v110(path);
    assert_true(f >= 0);
    hid_t g = H5Gcreate2(f, "params", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t n = 100, chunk = 16;
    hid_t sp = H5Screate_simple(1, &n, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    assert_true(H5Pset_chunk(dcpl, 1, &chunk) >= 0);
    hid_t ds = H5Dcreate2(g, "w", H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    assert_true(ds >= 0);
    assert_true(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0);
    H5Dclose(ds);
    H5Pclose(dcpl);
    H5Sclose(sp);
    H5Gclose(g);
    H5Fclose(f);
    Gml__TensorPiece pc;
    gml__tensor_piece__init(&pc);
    pc.group = "params", pc.name = "w";
    pc.has_offset = 1, pc.offset = 0, pc.has_count = 1, pc.count = 100;
    pc.has_crc32c = 1, pc.crc32c = gml_crc32c(v, sizeof v);
    f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    int64_t at = 0;
    assert_int_equal(gml_rankfile_locate_piece(f, "ck/state.h5", path, &pc, &at), GML_OK);
    assert_int_equal(at, -1);
    float back[100];
    assert_int_equal(gml_rankfile_read_piece(f, "ck/state.h5", path, &pc, back), GML_OK);
    assert_memory_equal(back, v, sizeof v);
    pc.name = "missing";
    gml_error_clear();
    assert_int_equal(gml_rankfile_locate_piece(f, "ck/state.h5", path, &pc, &at), GML_ERR_BAD_INPUT);
    assert_non_null(strstr(gml_error_message(), "lacks tensor 'params/missing'"));
    H5Fclose(f);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/gml_rankfile_XXXXXX");
    if (!mkdtemp(g_dir)) return 1;
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_pread_equals_hdf5),
                                       cmocka_unit_test(test_chunked_not_located)};
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) return 1;
    return failed;
}
