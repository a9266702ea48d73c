/* test_config.c — launcher/config*.c at the library level: defaults, parsing
 * by protobuf type, every class of user error (status GML_ERR_BAD_INPUT and a
 * message naming the key and the line), overrides, validation ranges, and the
 * print -> load round trip (packed bytes equal).
 *
 * Expected defaults and ranges are written here from the text of
 * proto/runconfig.proto and the task's rules, not read from the generated
 * descriptors, so a wrong default or range in the code is caught.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <glob.h>
#include <unistd.h>

#include <cmocka.h>

#include "launcher/config.h"

/* ---- helpers ---- */

static int setup(void **state) {
    (void)state;
    gml_error_clear();
    return 0;
}

static void assert_msg_has(const char *needle) {
    const char *m = gml_error_message();
    if (!strstr(m, needle)) fail_msg("error message\n  %s\nlacks '%s'", m, needle);
}

static Gml__RunConfig *load_ok(const char *yaml, int n, char *const *ov) {
    Gml__RunConfig *cfg = NULL;
    gml_error_clear();
    gml_status st = gml_config_load_string(yaml, "t.yaml", n, ov, &cfg);
    if (st != GML_OK) fail_msg("load failed (%s): %s", gml_status_name(st), gml_error_message());
    assert_non_null(cfg);
    return cfg;
}

/* Loads `yaml` (named t.yaml) with overrides and expects GML_ERR_BAD_INPUT
 * with every string in the NULL-terminated list in the message. */
static void expect_bad(const char *yaml, int n, char *const *ov, ...) {
    Gml__RunConfig *cfg = (Gml__RunConfig *)0x1;
    gml_error_clear();
    gml_status st = gml_config_load_string(yaml, "t.yaml", n, ov, &cfg);
    if (st != GML_ERR_BAD_INPUT)
        fail_msg("expected bad input for\n%s\ngot %s: %s", yaml, gml_status_name(st), gml_error_message());
    assert_null(cfg);
    va_list ap;
    va_start(ap, ov);
    for (const char *s; (s = va_arg(ap, const char *));) assert_msg_has(s);
    va_end(ap);
}

static uint8_t *pack(const Gml__RunConfig *cfg, size_t *len) {
    *len = gml__run_config__get_packed_size(cfg);
    uint8_t *buf = malloc(*len ? *len : 1);
    assert_non_null(buf);
    assert_int_equal(gml__run_config__pack(cfg, buf), *len);
    return buf;
}

static void assert_same_config(const Gml__RunConfig *a, const Gml__RunConfig *b) {
    size_t la, lb;
    uint8_t *pa = pack(a, &la), *pb = pack(b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(pa, pb, la);
    free(pa);
    free(pb);
}

static char *print_to_string(const Gml__RunConfig *cfg) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    gml_status st = gml_config_print(cfg, f);
    if (st != GML_OK) fail_msg("print failed: %s", gml_error_message());
    assert_int_equal(fclose(f), 0);
    return text;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* ---- defaults ---- */

/* Values from the [default = ...] annotations in proto/runconfig.proto. */
static void check_proto_defaults(const Gml__RunConfig *c) {
    assert_non_null(c->model);
    assert_non_null(c->data);
    assert_non_null(c->optim);
    assert_non_null(c->train);
    assert_non_null(c->eval);
    assert_non_null(c->log);
    assert_non_null(c->sample);
    assert_non_null(c->parallel);
    assert_non_null(c->checkpoint);
    assert_int_equal(c->model->n_layer, 4);
    assert_int_equal(c->model->n_head, 4);
    assert_int_equal(c->model->n_embd, 128);
    assert_int_equal(c->model->block_size, 128);
    assert_int_equal(c->model->vocab_size, 0);
    assert_int_equal(c->model->padded_vocab_size, 0);
    assert_true(c->model->init_std == 0.02f);
    assert_string_equal(c->data->path, "");
    assert_int_equal(c->data->batch_size, 8);
    assert_int_equal(c->data->seq_len, 0);
    assert_true(c->optim->lr == 0.0006f);
    assert_true(c->optim->min_lr_ratio == 0.1f);
    assert_int_equal(c->optim->warmup_steps, 100);
    assert_string_equal(c->optim->schedule, "cosine");
    assert_true(c->optim->beta1 == 0.9f);
    assert_true(c->optim->beta2 == 0.95f);
    assert_true(c->optim->eps == 1e-8f);
    assert_true(c->optim->weight_decay == 0.1f);
    assert_true(c->optim->grad_clip == 1.0f);
    assert_int_equal(c->train->steps, 1000);
    assert_int_equal(c->train->grad_accum, 1);
    assert_true(c->train->seed == 1337u);
    assert_string_equal(c->train->device, "auto");
    assert_string_equal(c->train->out_dir, "runs/default");
    assert_false(c->train->recompute);
    assert_int_equal(c->eval->every, 100);
    assert_int_equal(c->eval->batches, 20);
    assert_false(c->eval->save_best);
    assert_int_equal(c->log->every, 10);
    assert_true(c->log->jsonl);
    assert_true(c->log->tensorboard);
    assert_int_equal(c->sample->every, 0);
    assert_int_equal(c->sample->tokens, 200);
    assert_true(c->sample->temperature == 1.0f);
    assert_int_equal(c->sample->top_k, 0);
    assert_string_equal(c->sample->prompt, "");
    assert_int_equal(c->parallel->dp, 1);
    assert_int_equal(c->parallel->tp, 1);
    assert_int_equal(c->parallel->pp, 1);
    assert_int_equal(c->parallel->zero, 0);
    assert_true(c->parallel->timeout_s == 300.0f);
    assert_true(c->parallel->bucket_mib == 32.0f);
    assert_string_equal(c->parallel->embedding_grads, "auto");
    assert_true(c->checkpoint->async);
    assert_string_equal(c->checkpoint->dir, "");
    assert_int_equal(c->checkpoint->every_steps, 0);
    assert_true(c->checkpoint->every_minutes == 0.0f);
    assert_int_equal(c->checkpoint->keep_last, 3);
    /* The packed message records every value used, defaults included. */
    assert_true(c->model->has_n_layer && c->optim->has_eps && c->train->has_seed && c->log->has_jsonl);
}

static void test_defaults_empty_string(void **state) {
    Gml__RunConfig *c = load_ok("", 0, NULL);
    check_proto_defaults(c);
    gml_config_free(c);
}

static void test_defaults_comments_and_empty_sections(void **state) {
    Gml__RunConfig *c = load_ok("# only comments\n---\n", 0, NULL);
    check_proto_defaults(c);
    gml_config_free(c);
    c = load_ok("model:\n  # n_layer: 12\ndata: ~\noptim: {}\n", 0, NULL);
    check_proto_defaults(c);
    gml_config_free(c);
}

static void test_defaults_empty_file(void **state) {
    char path[] = "/tmp/gml_test_config_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    Gml__RunConfig *c = NULL;
    assert_int_equal(gml_config_load(path, 0, NULL, &c), GML_OK);
    check_proto_defaults(c);
    gml_config_free(c);
    unlink(path);
}

/* ---- values by type ---- */

static void test_values_by_type(void **state) {
    const char *yaml = "model:\n"
                       "  n_layer: 12\n"
                       "  n_head: +12\n"
                       "  n_embd: \"768\"\n"
                       "  vocab_size: 50257\n"
                       "  padded_vocab_size: 50304\n"
                       "  init_std: 2e-2\n"
                       "data:\n"
                       "  path: data/tiny shakespeare.h5\n"
                       "  seq_len: 0064\n"
                       "optim:\n"
                       "  lr: .001\n"
                       "  schedule: linear\n"
                       "  warmup_steps: -0\n"
                       "train:\n"
                       "  seed: 18446744073709551615\n"
                       "  recompute: yes\n"
                       "  device: 'cpu'\n"
                       "log:\n"
                       "  jsonl: Off\n"
                       "  tensorboard: 0\n"
                       "sample:\n"
                       "  prompt: \"Once upon: a time # not a comment\"\n";
    Gml__RunConfig *c = load_ok(yaml, 0, NULL);
    assert_int_equal(c->model->n_layer, 12);
    assert_int_equal(c->model->n_head, 12);
    assert_int_equal(c->model->n_embd, 768);
    assert_int_equal(c->model->vocab_size, 50257);
    assert_int_equal(c->model->padded_vocab_size, 50304);
    assert_true(c->model->init_std == 0.02f);
    assert_string_equal(c->data->path, "data/tiny shakespeare.h5");
    assert_int_equal(c->data->seq_len, 64);
    assert_true(c->optim->lr == 0.001f);
    assert_string_equal(c->optim->schedule, "linear");
    assert_int_equal(c->optim->warmup_steps, 0);
    assert_true(c->train->seed == UINT64_MAX);
    assert_true(c->train->recompute);
    assert_string_equal(c->train->device, "cpu");
    assert_false(c->log->jsonl);
    assert_false(c->log->tensorboard);
    assert_string_equal(c->sample->prompt, "Once upon: a time # not a comment");
    /* untouched keys keep defaults */
    assert_int_equal(c->model->block_size, 128);
    assert_int_equal(c->data->batch_size, 8);
    gml_config_free(c);
}

static void test_bool_spellings(void **state) {
    static const struct {
        const char *text;
        int value;
    } cases[] = {{"true", 1}, {"false", 0}, {"yes", 1}, {"no", 0}, {"on", 1},   {"off", 0},
                 {"1", 1},    {"0", 0},     {"True", 1}, {"NO", 0}, {"ON", 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char yaml[128];
        snprintf(yaml, sizeof yaml, "train:\n  recompute: %s\n", cases[i].text);
        Gml__RunConfig *c = load_ok(yaml, 0, NULL);
        assert_int_equal(!!c->train->recompute, cases[i].value);
        gml_config_free(c);
    }
}

/* ---- structural errors ---- */

static void test_unknown_key(void **state) {
    expect_bad("model:\n  n_layer: 2\n  n_layr: 6\n", 0, NULL, "t.yaml:3", "unknown key",
               "unknown key 'model.n_layr'; accepted keys in 'model': "
               "n_layer, n_head, n_embd, block_size, vocab_size, padded_vocab_size, init_std, dropout",
               "did you mean 'n_layer'", NULL);
}

static void test_unknown_section(void **state) {
    expect_bad("model:\n  n_layer: 2\n\nmodle:\n  n_head: 2\n", 0, NULL, "t.yaml:4", "'modle'",
               "model, data, optim, train, eval, log, sample, parallel, checkpoint", NULL);
}

static void test_duplicate_key(void **state) {
    expect_bad("optim:\n  lr: 0.1\n  eps: 1e-6\n  lr: 0.2\n", 0, NULL, "t.yaml:4", "duplicate key",
               "'optim.lr'", "t.yaml:2", NULL);
    expect_bad("model:\n  n_layer: 2\ndata:\n  batch_size: 4\nmodel:\n  n_head: 2\n", 0, NULL, "t.yaml:5",
               "duplicate key", "'model'", NULL);
}

static void test_structure_errors(void **state) {
    /* a sequence where a value belongs */
    expect_bad("model:\n  n_layer: [1, 2]\n", 0, NULL, "t.yaml:2", "model.n_layer", "sequence", NULL);
    /* nested deeper than the schema */
    expect_bad("model:\n  n_layer:\n    value: 3\n", 0, NULL, "t.yaml:2", "model.n_layer", "mapping", NULL);
    /* a scalar at the top */
    expect_bad("hello\n", 0, NULL, "t.yaml:1", "top level", "'hello'", NULL);
    /* a sequence at the top */
    expect_bad("- model\n- data\n", 0, NULL, "t.yaml:1", "top level", "sequence", NULL);
    /* a section given a scalar */
    expect_bad("data:\n  batch_size: 2\nmodel: 6\n", 0, NULL, "t.yaml:3", "'model'", "mapping", "'6'",
               NULL);
    /* a section given a sequence */
    expect_bad("\ntrain:\n  - steps\n", 0, NULL, "t.yaml:2", "'train'", "sequence", NULL);
    /* a key that is not a scalar */
    expect_bad("model:\n  ? [a, b]\n  : 3\n", 0, NULL, "t.yaml:2", "model", NULL);
    /* two documents */
    expect_bad("model:\n  n_layer: 2\n---\nmodel:\n  n_layer: 3\n", 0, NULL, "t.yaml:3", "document",
               NULL);
}

static void test_malformed_yaml(void **state) {
    /* "mapping values are not allowed" on line 3, at the second ':' (col 13) */
    expect_bad("model:\n  n_layer: 4\n  n_head: 4: 5\n", 0, NULL, "t.yaml:3:", "malformed YAML",
               "mapping values are not allowed", NULL);
    /* unclosed flow sequence: libyaml reports where it gave up */
    expect_bad("model:\n  n_layer: [1, 2\n", 0, NULL, "t.yaml:", "malformed YAML", NULL);
    /* a tab used for indentation */
    expect_bad("model:\n\tn_layer: 4\n", 0, NULL, "t.yaml:2:", "malformed YAML", NULL);
}

static void test_missing_and_unreadable_file(void **state) {
    Gml__RunConfig *c = (Gml__RunConfig *)0x1;
    gml_error_clear();
    assert_int_equal(gml_config_load("/nonexistent/gml/run.yaml", 0, NULL, &c), GML_ERR_BAD_INPUT);
    assert_null(c);
    assert_msg_has("/nonexistent/gml/run.yaml");
    assert_msg_has("No such file or directory");

    gml_error_clear();
    assert_int_equal(gml_config_load("/tmp", 0, NULL, &c), GML_ERR_BAD_INPUT);
    assert_null(c);
    assert_msg_has("'/tmp'");
    assert_msg_has("Is a directory");
}

static void test_file_errors_name_the_file(void **state) {
    char path[] = "/tmp/gml_test_config_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_file(path, "model:\n  n_layer: 2\n\n  block_siz: 64\n");
    Gml__RunConfig *c = NULL;
    gml_error_clear();
    assert_int_equal(gml_config_load(path, 0, NULL, &c), GML_ERR_BAD_INPUT);
    char where[64];
    snprintf(where, sizeof where, "%s:4", path);
    assert_msg_has(where);
    assert_msg_has("model.block_siz");
    unlink(path);
}

/* ---- type errors ---- */

static void test_int_type_errors(void **state) {
    static const char *const bad[] = {"1.5", "abc", "\"\"", "1e3", "0x10", "\" 6\"", "6 apples",
                                      "2147483648", "-2147483649", "99999999999999999999", "\"- 1\"", "\"1 \""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char yaml[128];
        snprintf(yaml, sizeof yaml, "# header\nmodel:\n  n_layer: %s\n", bad[i]);
        expect_bad(yaml, 0, NULL, "t.yaml:3", "model.n_layer", "int32", NULL);
    }
    /* the bad value is quoted back */
    expect_bad("model:\n  n_head: abc\n", 0, NULL, "'abc'", "decimal integer", NULL);
    /* empty value (YAML null) is not a number */
    expect_bad("model:\n  n_head:\n", 0, NULL, "t.yaml:2", "model.n_head", NULL);
}

static void test_uint_type_errors(void **state) {
    expect_bad("train:\n  seed: -1\n", 0, NULL, "t.yaml:2", "train.seed", "'-1'", "uint64", NULL);
    expect_bad("train:\n  seed: 18446744073709551616\n", 0, NULL, "t.yaml:2", "train.seed", "out of range",
               NULL);
    expect_bad("train:\n  seed: 1.0\n", 0, NULL, "t.yaml:2", "train.seed", NULL);
}

static void test_float_type_errors(void **state) {
    static const char *const bad[] = {"abc", "1.0x", "nan", "inf", "-inf", "1e39", "\"\"", "1e-50", "0.1.2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char yaml[128];
        snprintf(yaml, sizeof yaml, "optim:\n\n  lr: %s\n", bad[i]);
        expect_bad(yaml, 0, NULL, "t.yaml:3", "optim.lr", "float", NULL);
    }
}

static void test_bool_type_errors(void **state) {
    expect_bad("log:\n  jsonl: maybe\n", 0, NULL, "t.yaml:2", "log.jsonl", "'maybe'", "true/false", NULL);
    expect_bad("log:\n  tensorboard: 2\n", 0, NULL, "t.yaml:2", "log.tensorboard", NULL);
}

/* ---- validation ranges (from the task's rule list) ---- */

typedef struct {
    const char *override;
    int ok;
} range_case;

static const range_case range_cases[] = {
    {"model.n_layer=0", 0},           {"model.n_layer=1", 1},           {"model.n_layer=1024", 1},
    {"model.n_layer=1025", 0},        {"model.n_head=0", 0},            {"model.n_head=1025", 0},
    {"model.n_embd=0", 0},            {"model.n_embd=65540", 0},        {"model.block_size=0", 0},
    {"model.block_size=1048576", 1},  {"model.block_size=1048577", 0},  {"model.vocab_size=-1", 0},
    {"model.vocab_size=16777216", 1}, {"model.vocab_size=16777217", 0}, {"model.init_std=0", 0},
    {"model.init_std=-0.01", 0},      {"model.dropout=0", 1}, {"model.dropout=0.2", 1}, {"model.dropout=1", 0}, {"model.dropout=-0.1", 0},      {"model.init_std=1e-6", 1},       {"data.batch_size=0", 0},
    {"data.batch_size=1", 1},         {"data.seq_len=-1", 0},           {"data.seq_len=128", 1},
    {"data.seq_len=129", 0},          {"optim.lr=0", 0},                {"optim.lr=10", 1},
    {"optim.lr=10.001", 0},           {"optim.lr=-1", 0},               {"optim.min_lr_ratio=0", 1},
    {"optim.min_lr_ratio=1", 1},      {"optim.min_lr_ratio=1.01", 0},   {"optim.min_lr_ratio=-0.1", 0},
    {"optim.warmup_steps=0", 1},      {"optim.warmup_steps=-1", 0},     {"optim.schedule=cosine", 1},
    {"optim.schedule=constant", 1},   {"optim.schedule=Cosine", 0},     {"optim.schedule=step", 0},
    {"optim.beta1=0", 1},             {"optim.beta1=1", 0},             {"optim.beta1=0.999", 1},
    {"optim.beta2=1", 0},             {"optim.beta2=-0.1", 0},          {"optim.eps=0", 0},
    {"optim.weight_decay=0", 1},      {"optim.weight_decay=-0.1", 0},   {"optim.grad_clip=0", 1},
    {"optim.grad_clip=-1", 0},        {"train.steps=0", 0},             {"train.steps=1", 1},
    {"train.grad_accum=0", 0},        {"train.device=cuda", 1},         {"train.device=gpu", 0},
    {"train.device=", 0},             {"train.out_dir=", 0},            {"train.out_dir=x", 1},
    {"eval.every=0", 1},              {"eval.every=-1", 0},             {"eval.batches=0", 0},
    {"log.every=0", 0},               {"log.every=1", 1},               {"sample.every=-1", 0},
    {"sample.tokens=0", 1},           {"sample.tokens=-1", 0},          {"sample.temperature=0", 0},
    {"sample.temperature=0.01", 1},   {"sample.top_k=-1", 0},           {"sample.top_k=0", 1},
    {"parallel.dp=0", 0},             {"parallel.tp=0", 0},             {"parallel.pp=0", 0},
    {"parallel.pp=2", 1},             {"parallel.zero=3", 1},           {"parallel.zero=4", 0},
    {"parallel.zero=-1", 0},          {"parallel.timeout_s=0", 0},      {"parallel.timeout_s=2.5", 1},    {"parallel.bucket_mib=0", 0},     {"parallel.bucket_mib=0.01", 1},
    {"parallel.embedding_grads=gather", 1}, {"parallel.embedding_grads=reduce", 1},
    {"parallel.embedding_grads=sparse", 0},          {"checkpoint.every_steps=-1", 0}, {"checkpoint.every_minutes=-1", 0},
    {"checkpoint.every_minutes=0.5", 1}, {"checkpoint.keep_last=0", 0}, {"checkpoint.keep_last=1", 1},
};

static void test_validation_ranges(void **state) {
    for (size_t i = 0; i < sizeof range_cases / sizeof range_cases[0]; i++) {
        const range_case *rc = &range_cases[i];
        char *ov[1] = {(char *)rc->override};
        Gml__RunConfig *c = NULL;
        gml_error_clear();
        gml_status st = gml_config_load_string("", "t.yaml", 1, ov, &c);
        if (rc->ok) {
            if (st != GML_OK) fail_msg("%s should pass: %s", rc->override, gml_error_message());
            gml_config_free(c);
            continue;
        }
        if (st != GML_ERR_BAD_INPUT)
            fail_msg("%s should be rejected, got %s", rc->override, gml_status_name(st));
        assert_null(c);
        char key[64];
        const char *eq = strchr(rc->override, '=');
        snprintf(key, sizeof key, "%.*s", (int)(eq - rc->override), rc->override);
        assert_msg_has(key);
        assert_msg_has("command line");
        assert_msg_has("accepted");
    }
}

static void test_validation_messages(void **state) {
    /* from the file: line of the key, the value and the range */
    expect_bad("model:\n  n_head: 2\n  n_layer: 0\n", 0, NULL, "t.yaml:3", "model.n_layer", "= 0", "1..1024",
               NULL);
    expect_bad("optim:\n  schedule: step\n", 0, NULL, "t.yaml:2", "optim.schedule", "'step'",
               "cosine, linear, constant", NULL);
    expect_bad("optim:\n  lr: 11\n", 0, NULL, "t.yaml:2", "optim.lr", "11", "> 0 and <= 10", NULL);
    /* n_embd not divisible by n_head names both */
    expect_bad("model:\n  n_head: 3\n  n_embd: 100\n", 0, NULL, "t.yaml:3", "model.n_embd", "100",
               "model.n_head", "= 3", "t.yaml:2", NULL);
    expect_bad("model:\n  n_embd: 130\n", 0, NULL, "model.n_embd = 130", "model.n_head = 4", NULL);
    /* padded_vocab_size below vocab_size */
    expect_bad("model:\n  vocab_size: 50257\n  padded_vocab_size: 50000\n", 0, NULL, "t.yaml:3",
               "model.padded_vocab_size", "50000", "model.vocab_size", NULL);
    Gml__RunConfig *c = load_ok("model:\n  vocab_size: 50257\n  padded_vocab_size: 50257\n", 0, NULL);
    gml_config_free(c);
    c = load_ok("model:\n  vocab_size: 0\n  padded_vocab_size: 10\n", 0, NULL);
    gml_config_free(c);
    /* seq_len against block_size */
    expect_bad("model:\n  block_size: 64\ndata:\n  seq_len: 65\n", 0, NULL, "t.yaml:4", "data.seq_len", "65",
               "model.block_size", NULL);
}

static void test_validate_direct(void **state) {
    /* A message built with the INIT macros (NULL sub-messages) is all defaults. */
    Gml__RunConfig bare = GML__RUN_CONFIG__INIT;
    gml_error_clear();
    assert_int_equal(gml_config_validate(&bare), GML_OK);

    Gml__RunConfig *c = load_ok("", 0, NULL);
    c->model->n_layer = 0;
    gml_error_clear();
    assert_int_equal(gml_config_validate(c), GML_ERR_BAD_INPUT);
    assert_msg_has("model.n_layer");
    c->model->n_layer = 2;
    c->optim->beta2 = 1.0f;
    gml_error_clear();
    assert_int_equal(gml_config_validate(c), GML_ERR_BAD_INPUT);
    assert_msg_has("optim.beta2");
    gml_config_free(c);
    gml_config_free(NULL);
}

/* ---- overrides ---- */

static void test_overrides(void **state) {
    char *ov[] = {"model.n_layer=6", "train.steps=50", "sample.prompt=a=b", "data.path=x.h5",
                  "train.recompute=on", "model.n_layer=8", "checkpoint.dir="};
    Gml__RunConfig *c = load_ok("model:\n  n_layer: 2\n  n_head: 2\ntrain:\n  steps: 10\n", 7, ov);
    assert_int_equal(c->model->n_layer, 8); /* the last override wins */
    assert_int_equal(c->model->n_head, 2);  /* from the file */
    assert_int_equal(c->train->steps, 50);  /* override beats file */
    assert_string_equal(c->sample->prompt, "a=b"); /* split at the first '=' */
    assert_string_equal(c->data->path, "x.h5");    /* not in the file */
    assert_true(c->train->recompute);
    assert_string_equal(c->checkpoint->dir, "");
    gml_config_free(c);
}

static void test_override_errors(void **state) {
    char *no_eq[] = {"model.n_layer"};
    expect_bad("", 1, no_eq, "command line", "'model.n_layer'", "section.key=value", NULL);
    char *empty_key[] = {"=5"};
    expect_bad("", 1, empty_key, "command line", "section.key=value", NULL);
    char *unknown[] = {"model.n_layr=6"};
    expect_bad("", 1, unknown, "command line", "unknown key", "'model.n_layr'", "accepted keys in 'model'",
               "n_layer", NULL);
    char *unknown_section[] = {"modle.n_layer=6"};
    expect_bad("", 1, unknown_section, "command line", "'modle'", "accepted sections", NULL);
    char *no_section[] = {"n_layer=6"};
    expect_bad("", 1, no_section, "command line", "'n_layer'", "did you mean 'model.n_layer'", NULL);
    char *section[] = {"model=6"};
    expect_bad("", 1, section, "command line", "'model'", "section", NULL);
    char *too_deep[] = {"model.n_layer.x=6"};
    expect_bad("", 1, too_deep, "command line", "model.n_layer", NULL);
    char *bad_type[] = {"train.steps=ten"};
    expect_bad("", 1, bad_type, "command line", "train.steps", "'ten'", "int32", NULL);
    char *bad_empty[] = {"model.n_layer="};
    expect_bad("", 1, bad_empty, "command line", "model.n_layer", NULL);
    char *bad_utf8[] = {"sample.prompt=\xff\xfe"};
    expect_bad("", 1, bad_utf8, "command line", "sample.prompt", "UTF-8", NULL);
    char *surrogate[] = {"sample.prompt=\xed\xa0\x80"}; /* U+D800 encoded */
    expect_bad("", 1, surrogate, "command line", "sample.prompt", "UTF-8", NULL);
    char *overlong[] = {"sample.prompt=\xc0\xaf"};
    expect_bad("", 1, overlong, "command line", "sample.prompt", "UTF-8", NULL);
    /* an override that breaks a rule the file satisfies */
    char *range[] = {"parallel.zero=5"};
    expect_bad("parallel:\n  zero: 1\n", 1, range, "command line", "parallel.zero", "5", NULL);
    /* the second of two overrides is the bad one */
    char *second[] = {"model.n_layer=6", "model.n_embd=x"};
    expect_bad("", 2, second, "command line", "model.n_embd", "'x'", NULL);
}

/* ---- printing and the round trip ---- */

static void test_print_format(void **state) {
    char *ov[] = {"model.n_layer=6"};
    Gml__RunConfig *c = load_ok("", 1, ov);
    char *text = print_to_string(c);
    assert_non_null(strstr(text, "n_layer: 6\n"));
    assert_non_null(strstr(text, "init_std: 0.02\n"));
    assert_non_null(strstr(text, "lr: 0.0006\n"));
    assert_non_null(strstr(text, "eps: 1e-08\n"));
    assert_non_null(strstr(text, "grad_clip: 1.0\n"));
    assert_non_null(strstr(text, "seed: 1337\n"));
    assert_non_null(strstr(text, "schedule: cosine\n"));
    assert_non_null(strstr(text, "out_dir: runs/default\n"));
    assert_non_null(strstr(text, "path: \"\"\n"));
    assert_non_null(strstr(text, "jsonl: true\n"));
    assert_non_null(strstr(text, "recompute: false\n"));
    /* sections in .proto order, each at column 0 */
    static const char *const sections[] = {"model:\n", "data:\n",     "optim:\n",    "train:\n",
                                           "eval:\n",  "log:\n",      "sample:\n",   "parallel:\n",
                                           "checkpoint:\n"};
    const char *prev = text;
    for (size_t i = 0; i < 9; i++) {
        char needle[32];
        snprintf(needle, sizeof needle, "\n%s", sections[i]);
        const char *at = strstr(text, needle);
        if (!at) fail_msg("section %s missing", sections[i]);
        assert_true(at >= prev);
        prev = at;
    }
    /* every field of the .proto: 8+3+9+6+3+3+5+7+5 keys, 9 sections */
    int keys = 0, secs = 0;
    for (const char *p = text; *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p)) {
        if (p[0] == '#') continue;
        if (p[0] == ' ' && p[1] == ' ' && p[2] != ' ') keys++;
        else if (p[0] != '\n' && p[0] != ' ') secs++;
    }
    assert_int_equal(keys, 49);
    assert_int_equal(secs, 9);
    free(text);
    gml_config_free(c);
}

static void round_trip(const Gml__RunConfig *c) {
    char *text = print_to_string(c);
    Gml__RunConfig *back = NULL;
    gml_error_clear();
    if (gml_config_load_string(text, "printed", 0, NULL, &back) != GML_OK)
        fail_msg("printed config does not load: %s\n%s", gml_error_message(), text);
    assert_same_config(c, back);
    /* and printing is stable */
    char *again = print_to_string(back);
    assert_string_equal(text, again);
    free(again);
    free(text);
    gml_config_free(back);
}

static void test_round_trip_defaults(void **state) {
    Gml__RunConfig *c = load_ok("", 0, NULL);
    round_trip(c);
    /* a bare INIT message (NULL sections) prints its defaults */
    Gml__RunConfig bare = GML__RUN_CONFIG__INIT;
    char *text = print_to_string(&bare);
    Gml__RunConfig *back = load_ok(text, 0, NULL);
    assert_same_config(c, back);
    free(text);
    gml_config_free(back);
    gml_config_free(c);
}

static void test_round_trip_odd_values(void **state) {
    static const char *const prompts[] = {
        "",        "yes",        "No",          "null",           "~",          "123",      "-5",
        "1e3",     " leading",   "trailing ",   "# not comment",  "a: b",       "- item",   "[x]",
        "{y}",     "quote \" q", "back\\slash", "line\nbreak",    "tab\there",  "\x01\x1f", "\x7f",
        "h\xc3\xa9llo \xe2\x9c\x93",           "nel\xc2\x85" "x", "ls\xe2\x80\xa8" "x", "c1\xc2\x80",
        "'single'", "&anchor",   "*alias",      "!tag",           "%pct",       "@at",      "`bt",
        "|",       ">",          "?",           ":",              "a,b",        "path/to/x.h5",
    };
    static const char *const floats[] = {"0.1", "1e-30", "3.4028234e38", "1.17549435e-38", "1e-45",
                                         "0.333333343", "123456.789", "7"};
    for (size_t i = 0; i < sizeof prompts / sizeof prompts[0]; i++) {
        for (size_t j = 0; j < 2; j++) {
            char prompt[128], dir[128], wd[64];
            snprintf(prompt, sizeof prompt, "sample.prompt=%s", prompts[i]);
            snprintf(dir, sizeof dir, "checkpoint.dir=%s", prompts[(i + 7) % (sizeof prompts / sizeof prompts[0])]);
            snprintf(wd, sizeof wd, "optim.weight_decay=%s", floats[i % (sizeof floats / sizeof floats[0])]);
            char *ov[] = {prompt, dir, wd, "train.seed=18446744073709551615", "optim.eps=1e-40",
                          "model.init_std=0.0123456789", "train.recompute=true", "model.vocab_size=50257"};
            Gml__RunConfig *c = load_ok(j ? "log:\n  jsonl: no\n" : "", 8, ov);
            assert_string_equal(c->sample->prompt, prompts[i]);
            round_trip(c);
            gml_config_free(c);
        }
    }
    /* YAML escapes in the file itself */
    Gml__RunConfig *c = load_ok("sample:\n  prompt: \"\\x80\\u2029\\tx\"\n", 0, NULL);
    round_trip(c);
    gml_config_free(c);
}

static void test_print_rejects_invalid_utf8(void **state) {
    Gml__RunConfig *c = load_ok("", 0, NULL);
    free(c->sample->prompt);
    c->sample->prompt = strdup("\xff");
    assert_non_null(c->sample->prompt);
    FILE *f = fopen("/dev/null", "w");
    assert_non_null(f);
    gml_error_clear();
    assert_int_equal(gml_config_print(c, f), GML_ERR_INVALID_ARG);
    assert_msg_has("sample.prompt");
    fclose(f);
    gml_config_free(c);
}

/* ---- files in the source tree ---- */

static const char *source_dir(void) {
    const char *d = getenv("GML_SOURCE_DIR");
    if (!d) {
        printf("SKIP: GML_SOURCE_DIR not set (run through ctest)\n");
        skip();
    }
    return d;
}

/* Values from tests/data/config/all_keys.yaml, which sets every key. */
static void test_fixture_all_keys(void **state) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/config/all_keys.yaml", source_dir());
    Gml__RunConfig *c = NULL;
    gml_error_clear();
    if (gml_config_load(path, 0, NULL, &c) != GML_OK) fail_msg("%s", gml_error_message());
    assert_int_equal(c->model->n_layer, 6);
    assert_int_equal(c->model->n_head, 6);
    assert_int_equal(c->model->n_embd, 384);
    assert_int_equal(c->model->block_size, 256);
    assert_int_equal(c->model->vocab_size, 65);
    assert_int_equal(c->model->padded_vocab_size, 128);
    assert_true(c->model->init_std == 0.015f);
    assert_true(c->model->dropout == 0.25f);
    assert_string_equal(c->data->path, "data/shakespeare_char.h5");
    assert_int_equal(c->data->batch_size, 64);
    assert_int_equal(c->data->seq_len, 200);
    assert_true(c->optim->lr == 0.001f);
    assert_true(c->optim->min_lr_ratio == 0.05f);
    assert_int_equal(c->optim->warmup_steps, 50);
    assert_string_equal(c->optim->schedule, "linear");
    assert_true(c->optim->beta1 == 0.85f);
    assert_true(c->optim->beta2 == 0.99f);
    assert_true(c->optim->eps == 1.0e-6f);
    assert_true(c->optim->weight_decay == 0.2f);
    assert_true(c->optim->grad_clip == 0.5f);
    assert_int_equal(c->train->steps, 2500);
    assert_int_equal(c->train->grad_accum, 4);
    assert_true(c->train->seed == 42u);
    assert_string_equal(c->train->device, "cpu");
    assert_string_equal(c->train->out_dir, "runs/all keys");
    assert_true(c->train->recompute);
    assert_int_equal(c->eval->every, 0);
    assert_int_equal(c->eval->batches, 5);
    assert_true(c->eval->save_best);
    assert_int_equal(c->log->every, 25);
    assert_false(c->log->jsonl);
    assert_false(c->log->tensorboard);
    assert_int_equal(c->sample->every, 500);
    assert_int_equal(c->sample->tokens, 64);
    assert_true(c->sample->temperature == 0.7f);
    assert_int_equal(c->sample->top_k, 40);
    assert_string_equal(c->sample->prompt, "ROMEO:");
    assert_int_equal(c->parallel->dp, 2);
    assert_int_equal(c->parallel->tp, 3);
    assert_int_equal(c->parallel->pp, 4);
    assert_int_equal(c->parallel->zero, 2);
    assert_true(c->parallel->timeout_s == 60.0f);
    assert_true(c->parallel->bucket_mib == 8.0f);
    assert_string_equal(c->parallel->embedding_grads, "reduce");
    assert_false(c->checkpoint->async);
    assert_string_equal(c->checkpoint->dir, "/scratch/ckpt");
    assert_int_equal(c->checkpoint->every_steps, 1000);
    assert_true(c->checkpoint->every_minutes == 30.5f);
    assert_int_equal(c->checkpoint->keep_last, 2);
    round_trip(c);
    gml_config_free(c);
}

/* Every config shipped in configs/ loads, validates and round-trips. */
static void test_shipped_configs(void **state) {
    char pattern[1024];
    snprintf(pattern, sizeof pattern, "%s/configs/*.yaml", source_dir());
    glob_t g;
    int rc = glob(pattern, 0, NULL, &g);
    if (rc == GLOB_NOMATCH) {
        printf("SKIP: no %s\n", pattern);
        skip();
    }
    assert_int_equal(rc, 0);
    for (size_t i = 0; i < g.gl_pathc; i++) {
        Gml__RunConfig *c = NULL;
        gml_error_clear();
        if (gml_config_load(g.gl_pathv[i], 0, NULL, &c) != GML_OK)
            fail_msg("%s: %s", g.gl_pathv[i], gml_error_message());
        round_trip(c);
        gml_config_free(c);
    }
    globfree(&g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults_empty_string, setup),
        cmocka_unit_test_setup(test_defaults_comments_and_empty_sections, setup),
        cmocka_unit_test_setup(test_defaults_empty_file, setup),
        cmocka_unit_test_setup(test_values_by_type, setup),
        cmocka_unit_test_setup(test_bool_spellings, setup),
        cmocka_unit_test_setup(test_unknown_key, setup),
        cmocka_unit_test_setup(test_unknown_section, setup),
        cmocka_unit_test_setup(test_duplicate_key, setup),
        cmocka_unit_test_setup(test_structure_errors, setup),
        cmocka_unit_test_setup(test_malformed_yaml, setup),
        cmocka_unit_test_setup(test_missing_and_unreadable_file, setup),
        cmocka_unit_test_setup(test_file_errors_name_the_file, setup),
        cmocka_unit_test_setup(test_int_type_errors, setup),
        cmocka_unit_test_setup(test_uint_type_errors, setup),
        cmocka_unit_test_setup(test_float_type_errors, setup),
        cmocka_unit_test_setup(test_bool_type_errors, setup),
        cmocka_unit_test_setup(test_validation_ranges, setup),
        cmocka_unit_test_setup(test_validation_messages, setup),
        cmocka_unit_test_setup(test_validate_direct, setup),
        cmocka_unit_test_setup(test_overrides, setup),
        cmocka_unit_test_setup(test_override_errors, setup),
        cmocka_unit_test_setup(test_print_format, setup),
        cmocka_unit_test_setup(test_round_trip_defaults, setup),
        cmocka_unit_test_setup(test_round_trip_odd_values, setup),
        cmocka_unit_test_setup(test_print_rejects_invalid_utf8, setup),
        cmocka_unit_test_setup(test_fixture_all_keys, setup),
        cmocka_unit_test_setup(test_shipped_configs, setup),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
