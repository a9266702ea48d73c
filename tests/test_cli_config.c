/* test_cli_config.c — the config errors as a user sees them: runs the
 * gml-dist binary ($GML_BINARY) as a child process with
 * `--print-config FILE [key=value ...]` and checks the exit code and what it
 * writes.
 *
 * Contract under test (launcher/main.c): on a bad config, file or override the
 * binary prints "gml-dist: error: <message>" to stderr and exits 2; on success
 * `--print-config` prints the effective config as YAML to stdout and exits 0.
 * Not for: the parser's details (test_config.c covers those library-level).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <sys/wait.h>
#include <unistd.h>

#include "launcher/config.h"

extern char **environ;

typedef struct {
    int exit_code; /* -1 if killed by a signal */
    char *out;     /* stdout, NUL-terminated */
    char *err;     /* stderr, NUL-terminated */
} run_result;

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap + 1);
    assert_non_null(buf);
    for (size_t got; (got = fread(buf + len, 1, cap - len, f)) > 0;) {
        len += got;
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            assert_non_null(buf);
        }
    }
    assert_false(ferror(f));
    fclose(f);
    buf[len] = '\0';
    return buf;
}

static char *temp_path(void) {
    char *path = strdup("/tmp/gml_cli_config_XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    return path;
}

static char *write_yaml(const char *text) {
    char *path = temp_path();
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
    return path;
}

/* Runs $GML_BINARY --print-config <config> <args...>, capturing stdout and
 * stderr through temporary files. */
static run_result run_print_config(const char *config, int n_args, const char *const *args) {
    const char *bin = getenv("GML_BINARY");
    assert_non_null(bin);
    char *out_path = temp_path(), *err_path = temp_path();

    posix_spawn_file_actions_t fa;
    assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
    assert_int_equal(posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_TRUNC, 0), 0);
    assert_int_equal(posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_TRUNC, 0), 0);
    assert_int_equal(posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0), 0);

    char *argv[16];
    int argc = 0;
    argv[argc++] = (char *)bin;
    argv[argc++] = "--print-config";
    argv[argc++] = (char *)config;
    assert_true(n_args <= 12);
    for (int i = 0; i < n_args; i++) argv[argc++] = (char *)args[i];
    argv[argc] = NULL;

    pid_t pid;
    int rc = posix_spawn(&pid, bin, &fa, NULL, argv, environ);
    if (rc != 0) fail_msg("posix_spawn %s: %s", bin, strerror(rc));
    posix_spawn_file_actions_destroy(&fa);
    int status;
    while (waitpid(pid, &status, 0) < 0) assert_int_equal(errno, EINTR);

    run_result r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = slurp(out_path);
    r.err = slurp(err_path);
    unlink(out_path);
    unlink(err_path);
    free(out_path);
    free(err_path);
    return r;
}

static void result_free(run_result *r) {
    free(r->out);
    free(r->err);
}

/* Runs with the given YAML text (or an existing path when yaml is NULL) and
 * expects exit 2 with every NULL-terminated needle on stderr; with names_file,
 * the message must also name the temporary file (errors in the file's text). */
static void expect_user_error(const char *yaml, const char *path, int names_file, int n_args,
                              const char *const *args, ...) {
    char *tmp = yaml ? write_yaml(yaml) : NULL;
    run_result r = run_print_config(tmp ? tmp : path, n_args, args);
    if (r.exit_code != 2)
        fail_msg("expected exit 2, got %d\nstdout:\n%s\nstderr:\n%s", r.exit_code, r.out, r.err);
    if (!strstr(r.err, "gml-dist: error:")) fail_msg("stderr lacks 'gml-dist: error:':\n%s", r.err);
    va_list ap;
    va_start(ap, args);
    for (const char *s; (s = va_arg(ap, const char *));)
        if (!strstr(r.err, s)) fail_msg("stderr lacks '%s':\n%s", s, r.err);
    va_end(ap);
    if (tmp) {
        if (names_file && !strstr(r.err, tmp)) fail_msg("stderr lacks the file name %s:\n%s", tmp, r.err);
        unlink(tmp);
        free(tmp);
    }
    result_free(&r);
}

static void test_unknown_key(void **state) {
    expect_user_error("model:\n  n_layer: 2\n  n_layr: 6\n", NULL, 1, 0, NULL, "model.n_layr", ":3", "n_layer",
                      NULL);
}

static void test_wrong_type(void **state) {
    expect_user_error("train:\n  steps: many\n", NULL, 1, 0, NULL, "train.steps", "many", ":2", NULL);
}

static void test_out_of_range(void **state) {
    expect_user_error("parallel:\n  dp: 1\n  zero: 7\n", NULL, 1, 0, NULL, "parallel.zero", "7", ":3", NULL);
}

static void test_malformed_yaml(void **state) {
    expect_user_error("model:\n  n_layer: 4\n  n_head: 4: 5\n", NULL, 1, 0, NULL, "malformed YAML", ":3:",
                      NULL);
}

static void test_missing_file(void **state) {
    expect_user_error(NULL, "/nonexistent/gml-dist/run.yaml", 0, 0, NULL, "/nonexistent/gml-dist/run.yaml",
                      "No such file", NULL);
}

static void test_bad_override_syntax(void **state) {
    const char *args[] = {"model.n_layer"};
    expect_user_error("model:\n  n_layer: 2\n", NULL, 0, 1, args, "model.n_layer", "command line", NULL);
}

static void test_bad_override_value(void **state) {
    const char *args[] = {"model.n_layer=6", "optim.schedule=step"};
    expect_user_error("", NULL, 0, 2, args, "optim.schedule", "step", "cosine", NULL);
}

static void test_good_file_with_override(void **state) {
    char *path = write_yaml("model:\n  n_layer: 2\n  n_head: 2\noptim:\n  lr: 0.001\n");
    const char *args[] = {"model.n_layer=6"};
    run_result r = run_print_config(path, 1, args);
    if (r.exit_code != 0) fail_msg("expected exit 0, got %d\nstderr:\n%s", r.exit_code, r.err);
    if (!strstr(r.out, "n_layer: 6")) fail_msg("stdout lacks 'n_layer: 6':\n%s", r.out);
    /* the printed config is the effective one: it loads back with the file's
     * values and the override applied */
    Gml__RunConfig *cfg = NULL;
    gml_error_clear();
    if (gml_config_load_string(r.out, "stdout", 0, NULL, &cfg) != GML_OK)
        fail_msg("printed config does not load: %s\n%s", gml_error_message(), r.out);
    assert_int_equal(cfg->model->n_layer, 6);
    assert_int_equal(cfg->model->n_head, 2);
    assert_true(cfg->optim->lr == 0.001f);
    assert_int_equal(cfg->model->n_embd, 128); /* default from the .proto */
    gml_config_free(cfg);
    unlink(path);
    free(path);
    result_free(&r);
}

/* Parameters of a GPT of the config's shape: embeddings, per block two
 * LayerNorms, qkv, proj, fc, fc_proj (weights and biases), the final
 * LayerNorm; the head shares wte. */
static double gpt_params(const Gml__ModelConfig *m) {
    double C = m->n_embd, L = m->n_layer, V = m->padded_vocab_size, T = m->block_size;
    return V * C + T * C + L * (12.0 * C * C + 13.0 * C) + 2.0 * C;
}

/* Every file in configs/ is accepted as shipped, and the GPT-2 ones have the
 * size their name says (gpt2-350m: 350e6 parameters within 5%), so a mistyped
 * width or depth cannot hide behind a config that merely parses. */
static void test_shipped_configs(void **state) {
    const char *src = getenv("GML_SOURCE_DIR");
    assert_non_null(src);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/configs", src);
    DIR *d = opendir(dir);
    assert_non_null(d);
    int files = 0, sized = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n < 6 || strcmp(e->d_name + n - 5, ".yaml") != 0) continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        run_result r = run_print_config(path, 0, NULL);
        if (r.exit_code != 0) fail_msg("%s: expected exit 0, got %d\nstderr:\n%s", path, r.exit_code, r.err);
        Gml__RunConfig *cfg = NULL;
        gml_error_clear();
        if (gml_config_load_string(r.out, path, 0, NULL, &cfg) != GML_OK)
            fail_msg("%s: printed config does not load: %s", path, gml_error_message());
        double nominal = 0.0;
        char unit = 0;
        if (sscanf(e->d_name, "gpt2-%lf%c", &nominal, &unit) == 2 && (unit == 'm' || unit == 'b')) {
            double want = nominal * (unit == 'm' ? 1e6 : 1e9), got = gpt_params(cfg->model);
            if (fabs(got - want) > 0.05 * want)
                fail_msg("%s: %.0f parameters for a name that says %.3g", path, got, want);
            sized++;
        }
        gml_config_free(cfg);
        result_free(&r);
        files++;
    }
    closedir(d);
    assert_true(files >= 6);
    assert_true(sized >= 4); /* 124m, 350m, 774m, 1.5b */
}

int main(void) {
    if (!getenv("GML_BINARY")) {
        printf("SKIP: GML_BINARY is not set (run through ctest)\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unknown_key),       cmocka_unit_test(test_wrong_type),
        cmocka_unit_test(test_out_of_range),      cmocka_unit_test(test_malformed_yaml),
        cmocka_unit_test(test_missing_file),      cmocka_unit_test(test_bad_override_syntax),
        cmocka_unit_test(test_bad_override_value), cmocka_unit_test(test_good_file_with_override),
        cmocka_unit_test(test_shipped_configs),
    };
    return cmocka_run_group_tests_name("cli_config", tests, NULL, NULL);
}
