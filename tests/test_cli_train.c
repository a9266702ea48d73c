/* test_cli_train.c — the user's path end to end through the gml-dist binary
 * (env GML_BINARY): prep a text, train a small GPT on the CPU, check the
 * outputs (val loss falls, metrics.jsonl, TensorBoard file, model.h5), then
 * sample from the saved weights; and the same binary rejects a run whose
 * weights file does not match. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

static char dir[64];

/* Run a shell command, capturing stdout+stderr into *out (malloc'd). */
static int run(const char *cmd, char **out) {
    char full[8192];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    assert_non_null(p);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += got;
        if (n + 1 >= cap) buf = realloc(buf, cap *= 2);
    }
    buf[n] = '\0';
    int status = pclose(p);
    if (out) *out = buf;
    else free(buf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static const char *binary(void) {
    const char *b = getenv("GML_BINARY");
    assert_non_null(b);
    return b;
}

/* val_loss of the n-th eval line of metrics.jsonl (n = -1: the last). */
static double val_loss(const char *jsonl, int n) {
    FILE *f = fopen(jsonl, "r");
    assert_non_null(f);
    char line[65536];
    double v = -1;
    int k = 0;
    while (fgets(line, sizeof line, f)) {
        char *p = strstr(line, "\"val_loss\":");
        if (!p) continue;
        if (n < 0 || k == n) v = strtod(p + strlen("\"val_loss\":"), NULL);
        k++;
    }
    fclose(f);
    return v;
}

static void test_prep_train_sample(void **state) {
    (void)state;
    char path[512], cmd[4096], *out;
    /* a learnable corpus: sentences drawn from a small grammar */
    snprintf(path, sizeof path, "%s/text.txt", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    const char *subj[] = {"the cat", "a dog", "my friend", "the old king", "her sister"};
    const char *verb[] = {"sees", "likes", "follows", "finds", "calls"};
    const char *obj[] = {"the moon.", "a red ball.", "the river.", "his horse.", "our house."};
    unsigned s = 1;
    for (int i = 0; i < 6000; i++) {
        s = s * 1103515245u + 12345u;
        fprintf(f, "%s %s %s\n", subj[(s >> 8) % 5], verb[(s >> 12) % 5], obj[(s >> 16) % 5]);
    }
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s prep --tokenizer char --out %s/data.h5 %s", binary(), dir, path);
    assert_int_equal(run(cmd, &out), 0);
    free(out);

    snprintf(path, sizeof path, "%s/run.yaml", dir);
    f = fopen(path, "w");
    fprintf(f,
            "model: {n_layer: 2, n_head: 2, n_embd: 32, block_size: 32}\n"
            "data: {path: %s/data.h5, batch_size: 8}\n"
            "optim: {lr: 0.003, warmup_steps: 5}\n"
            "train: {steps: 200, device: cpu, out_dir: %s/run}\n"
            "eval: {every: 100, batches: 4, save_best: true}\n"
            "log: {every: 50}\n"
            "sample: {tokens: 40}\n",
            dir, dir);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s %s", binary(), path);
    int rc = run(cmd, &out);
    if (rc != 0) fprintf(stderr, "%s\n", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "200/200")); /* the last progress line */
    free(out);

    snprintf(path, sizeof path, "%s/run/metrics.jsonl", dir);
    double first = val_loss(path, 0), last = val_loss(path, -1);
    printf("val loss %.4f -> %.4f\n", first, last);
    assert_true(first > 2.0);        /* about ln(vocab ~ 30) at init */
    /* the grammar carries about log(125) nats per ~25-char sentence, 0.2 nats
     * per character: a model that learns it ends far below 0.6 x the start */
    assert_true(last < 0.6 * first);

    snprintf(path, sizeof path, "%s/run/tb", dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    int events = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, "events.out.tfevents.", 20) == 0) events++;
    closedir(d);
    assert_int_equal(events, 1);

    snprintf(path, sizeof path, "%s/run/model.h5", dir);
    assert_int_equal(access(path, R_OK), 0);
    snprintf(path, sizeof path, "%s/run/best.h5", dir); /* eval.save_best */
    assert_int_equal(access(path, R_OK), 0);
    snprintf(cmd, sizeof cmd, "%s sample %s/run.yaml --prompt 'the ' --tokens 30 --seed 3", binary(), dir);
    assert_int_equal(run(cmd, &out), 0);
    assert_true(strncmp(out, "the ", 4) == 0);
    assert_true(strlen(out) >= 34);
    free(out);

    /* a weights file of another shape is bad input, not a crash */
    snprintf(cmd, sizeof cmd, "%s sample %s/run.yaml model.n_embd=64 --weights %s/data.h5", binary(), dir, dir);
    rc = run(cmd, &out);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "data.h5"));
    free(out);
}

static void test_bad_command_lines(void **state) {
    (void)state;
    char cmd[1024], *out;
    snprintf(cmd, sizeof cmd, "%s", binary());
    assert_int_equal(run(cmd, &out), 2);
    assert_non_null(strstr(out, "usage"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s --bogus", binary());
    assert_int_equal(run(cmd, &out), 2);
    free(out);
    snprintf(cmd, sizeof cmd, "%s sample", binary());
    assert_int_equal(run(cmd, &out), 2);
    assert_non_null(strstr(out, "CONFIG"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s sample /dev/null --tokens abc", binary());
    assert_int_equal(run(cmd, &out), 2);
    assert_non_null(strstr(out, "--tokens"));
    free(out);
    /* data.path unset */
    snprintf(cmd, sizeof cmd, "%s /dev/null train.device=cpu", binary());
    assert_int_equal(run(cmd, &out), 2);
    assert_non_null(strstr(out, "data.path"));
    free(out);
}

static int setup(void **state) {
    (void)state;
    strcpy(dir, "/tmp/gml_cli_trainXXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_prep_train_sample),
                                       cmocka_unit_test(test_bad_command_lines)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
