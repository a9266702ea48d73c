/* test_cli_data.c — the data path through the real binary ($GML_BINARY):
 * `gml-dist prep` on good and bad text, and `gml-dist CONFIG` refusing a
 * data.path that is missing, empty, text, or a token file with a bad
 * attribute (exit 2, the path named on stderr).
 *
 * The good case is checked against the input text itself: the tokens of the
 * written file, decoded with the file's tokenizer, give back the text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>
#include <hdf5.h>

#include "core/dataset.h"
#include "core/status.h"
#include "core/tokenizer.h"

extern char **environ;

static char g_dir[64];
static const char *g_bin;
static char g_err[8192]; /* stderr of the last run */
static char g_out[8192]; /* stdout of the last run */

static void path_in(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", g_dir, name); }

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void slurp(const char *path, char *buf, size_t cap) {
    buf[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f) return;
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* Runs $GML_BINARY with args (NULL-terminated, without argv[0]); returns its
 * exit code, stdout/stderr in g_out/g_err. */
static int run(const char *const *args) {
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)g_bin;
    for (; args[n - 1] && n < 31; n++)
        argv[n] = (char *)args[n - 1];
    argv[n] = NULL;
    char outp[128], errp[128];
    path_in(outp, sizeof outp, "stdout.txt");
    path_in(errp, sizeof errp, "stderr.txt");
    posix_spawn_file_actions_t fa;
    assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
    assert_int_equal(posix_spawn_file_actions_addopen(&fa, 1, outp, O_WRONLY | O_CREAT | O_TRUNC, 0644), 0);
    assert_int_equal(posix_spawn_file_actions_addopen(&fa, 2, errp, O_WRONLY | O_CREAT | O_TRUNC, 0644), 0);
    pid_t pid;
    int rc = posix_spawn(&pid, g_bin, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) fail_msg("cannot start %s: %s", g_bin, strerror(rc));
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    slurp(outp, g_out, sizeof g_out);
    slurp(errp, g_err, sizeof g_err);
    if (!WIFEXITED(status)) fail_msg("%s did not exit normally (status 0x%x); stderr: %s", g_bin, status, g_err);
    return WEXITSTATUS(status);
}

static void expect_exit2(const char *const *args, const char *n1, const char *n2) {
    int code = run(args);
    if (code != 2) fail_msg("exit code %d, expected 2; stderr: %s", code, g_err);
    if (n1 && !strstr(g_err, n1)) fail_msg("stderr lacks \"%s\": %s", n1, g_err);
    if (n2 && !strstr(g_err, n2)) fail_msg("stderr lacks \"%s\": %s", n2, g_err);
}

/* All tokens of ds (train then val), decoded. */
static size_t decode_all(const char *path, char *out, size_t cap, int *vocab) {
    gml_dataset *ds = NULL;
    gml_error_clear();
    if (gml_dataset_open(path, &ds) != GML_OK) fail_msg("%s", gml_error_message());
    uint64_t nt = gml_dataset_num_tokens(ds, GML_SPLIT_TRAIN), nv = gml_dataset_num_tokens(ds, GML_SPLIT_VAL);
    int32_t *ids = malloc((nt + nv) * sizeof *ids);
    assert_non_null(ids);
    assert_int_equal(gml_dataset_read(ds, GML_SPLIT_TRAIN, 0, nt, ids), GML_OK);
    assert_int_equal(gml_dataset_read(ds, GML_SPLIT_VAL, 0, nv, ids + nt), GML_OK);
    size_t n = gml_tokenizer_decode(gml_dataset_tokenizer(ds), ids, nt + nv, out, cap);
    *vocab = gml_dataset_vocab_size(ds);
    free(ids);
    gml_dataset_close(ds);
    return n;
}

static void test_prep_good(void **state) {
    (void)state;
    const char *a = "Über den Wolken muss die Freiheit wohl grenzenlos sein.\nPi is 3.14159"; /* no final \n */
    const char *b = "%\nThe second file: naïve café ☕\n%\nlast line\n%";
    char pa[128], pb[128], out[128];
    path_in(pa, sizeof pa, "a.txt");
    path_in(pb, sizeof pb, "b.txt");
    path_in(out, sizeof out, "good.h5");
    write_file(pa, a, strlen(a));
    write_file(pb, b, strlen(b));

    /* char tokenizer, as is: a + '\n' + b */
    const char *const args1[] = {"prep", "--out", out, pa, pb, NULL};
    int code = run(args1);
    if (code != 0) fail_msg("exit %d; stderr: %s", code, g_err);
    assert_non_null(strstr(g_out, out));
    char want[512], got[512];
    snprintf(want, sizeof want, "%s\n%s", a, b);
    int vocab = 0;
    assert_int_equal(decode_all(out, got, sizeof got, &vocab), strlen(want));
    assert_string_equal(got, want);
    int distinct = 0; /* independent count of distinct bytes */
    for (int c = 0; c < 256; c++)
        distinct += memchr(want, c, strlen(want)) != NULL;
    assert_int_equal(vocab, distinct);

    /* --strip-fortune drops the "%" lines; byte tokenizer; val fraction */
    const char *const args2[] = {
        "prep", "--tokenizer", "byte", "--val-fraction=0.25", "--strip-fortune", "--out", out, pa, pb, NULL};
    code = run(args2);
    if (code != 0) fail_msg("exit %d; stderr: %s", code, g_err);
    snprintf(want, sizeof want, "%s\n%s", a, "The second file: naïve café ☕\nlast line\n");
    assert_int_equal(decode_all(out, got, sizeof got, &vocab), strlen(want));
    assert_string_equal(got, want);
    assert_int_equal(vocab, 256);
    gml_dataset *ds = NULL;
    assert_int_equal(gml_dataset_open(out, &ds), GML_OK);
    size_t n = strlen(want), nval = (size_t)(n * 0.25); /* floor */
    assert_int_equal(gml_dataset_num_tokens(ds, GML_SPLIT_VAL), nval);
    assert_int_equal(gml_dataset_num_tokens(ds, GML_SPLIT_TRAIN), n - nval);
    gml_dataset_close(ds);
}

static void test_prep_bad(void **state) {
    (void)state;
    char good[128], missing[128], bad8[128], empty[128], out[128];
    path_in(good, sizeof good, "ok.txt");
    path_in(missing, sizeof missing, "does-not-exist.txt");
    path_in(bad8, sizeof bad8, "latin1.txt");
    path_in(empty, sizeof empty, "empty.txt");
    path_in(out, sizeof out, "bad.h5");
    const char *text = "plenty of ordinary text for a train and a val split\n";
    write_file(good, text, strlen(text));
    write_file(bad8, "caf\xe9s and more text\n", 20); /* latin-1 e-acute at offset 3 */
    write_file(empty, "", 0);

    const char *const a1[] = {"prep", "--out", out, good, missing, NULL};
    expect_exit2(a1, missing, "No such file");
    const char *const a2[] = {"prep", "--out", out, bad8, NULL};
    expect_exit2(a2, bad8, "UTF-8 at byte offset 3");
    const char *const a3[] = {"prep", "--out", out, empty, NULL};
    expect_exit2(a3, "empty", empty);
    const char *const a4[] = {"prep", "--bogus", "--out", out, good, NULL};
    expect_exit2(a4, "unknown flag '--bogus'", "usage:");
    const char *const a5[] = {"prep", good, NULL};
    expect_exit2(a5, "--out", "usage:");
    const char *const a6[] = {"prep", "--val-fraction", "1.5", "--out", out, good, NULL};
    expect_exit2(a6, "--val-fraction '1.5'", NULL);
    const char *const a7[] = {"prep", "--tokenizer", "bpe", "--out", out, good, NULL};
    expect_exit2(a7, "'bpe'", NULL);
    const char *const a8[] = {"prep", "--out", out, NULL};
    expect_exit2(a8, "no INPUT", NULL);
    assert_int_equal(access(out, F_OK), -1); /* nothing was written */
}

/* `gml-dist CONFIG train.steps=1` with data.path = data: exit 2, data named. */
static void expect_train_refuses(const char *data, const char *detail) {
    char cfg[128], yaml[512], outdir[128];
    path_in(cfg, sizeof cfg, "run.yaml");
    path_in(outdir, sizeof outdir, "run-out");
    snprintf(yaml, sizeof yaml,
             "data: {path: \"%s\"}\ntrain: {steps: 1, device: cpu, out_dir: \"%s\"}\n"
             "model: {n_layer: 1, n_head: 1, n_embd: 8, block_size: 8}\n",
             data, outdir);
    write_file(cfg, yaml, strlen(yaml));
    const char *const args[] = {cfg, "train.steps=1", NULL};
    expect_exit2(args, data, detail);
}

static void test_train_bad_data(void **state) {
    (void)state;
    char p[128];
    path_in(p, sizeof p, "no-such-data.h5");
    expect_train_refuses(p, NULL);
    path_in(p, sizeof p, "zero-bytes.h5");
    write_file(p, "", 0);
    expect_train_refuses(p, NULL);
    path_in(p, sizeof p, "corpus.txt");
    const char *text = "Some text that was meant to go through gml-dist prep first.\n";
    write_file(p, text, strlen(text));
    expect_train_refuses(p, "HDF5");

    /* a valid token file whose format_version is then changed to 7 */
    path_in(p, sizeof p, "badattr.h5");
    gml_tokenizer tok;
    gml_tokenizer_init_byte(&tok);
    int32_t ids[64];
    for (int i = 0; i < 64; i++)
        ids[i] = 'a' + i % 26;
    gml_error_clear();
    assert_int_equal(gml_dataset_write(p, &tok, ids, 48, ids + 48, 16), GML_OK);
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    assert_true(a >= 0);
    int v = 7;
    assert_true(H5Awrite(a, H5T_NATIVE_INT, &v) >= 0);
    H5Aclose(a);
    H5Fclose(f);
    expect_train_refuses(p, "format_version is 7");
}

static int group_setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/gml-test-cli-data-XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    g_bin = getenv("GML_BINARY");
    if (!g_bin || !g_bin[0]) {
        printf("SKIP: GML_BINARY is not set (ctest sets it to the gml-dist binary)\n");
        return 77;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prep_good),
        cmocka_unit_test(test_prep_bad),
        cmocka_unit_test(test_train_bad_data),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
