/* config_validate.c — ranges and accepted values of a RunConfig, as a table.
 *
 * One row per checked key ("model.n_layer": integer 1..1024, ...), plus a few
 * checks that relate two keys (n_embd divisible by n_head, seq_len <=
 * block_size, padded_vocab_size >= vocab_size). Values are read through the
 * protobuf-c descriptors by dotted key, so a row names its key once and the
 * message says exactly that key. Every failure is GML_ERR_BAD_INPUT naming the
 * key, the value, and what is accepted; a row naming a key the schema lacks is
 * GML_ERR_INTERNAL (caught by tests). Not for: parsing (config.c), or checks
 * that need the outside world (file existence, device count, world size).
 */
#include "launcher/config.h"

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef enum {
    RULE_INT,      /* integer in [ilo, ihi] */
    RULE_REAL,     /* float in lo..hi, each end open or closed; always finite */
    RULE_ONE_OF,   /* string among `accepted` (", "-separated) */
    RULE_NONEMPTY, /* string not "" */
} rule_kind;

typedef struct {
    const char *key;
    rule_kind kind;
    int64_t ilo, ihi;
    double lo, hi;
    int lo_open, hi_open;
    const char *accepted;
} rule;

#define NOLIM INT64_MAX
#define INT_RULE(k, a, b) {k, RULE_INT, a, b, 0, 0, 0, 0, NULL}
#define REAL_RULE(k, a, ao, b, bo) {k, RULE_REAL, 0, 0, a, b, ao, bo, NULL}
#define ONE_OF(k, list) {k, RULE_ONE_OF, 0, 0, 0, 0, 0, 0, list}
#define NONEMPTY(k) {k, RULE_NONEMPTY, 0, 0, 0, 0, 0, 0, NULL}
#define OPEN 1
#define CLOSED 0

static const rule rules[] = {
    INT_RULE("model.n_layer", 1, 1024),
    INT_RULE("model.n_head", 1, 1024),
    INT_RULE("model.n_embd", 1, 65536),
    INT_RULE("model.block_size", 1, 1048576),
    INT_RULE("model.vocab_size", 0, 16777216),
    INT_RULE("model.padded_vocab_size", 0, NOLIM),
    REAL_RULE("model.init_std", 0, OPEN, INFINITY, OPEN),
    REAL_RULE("model.dropout", 0, CLOSED, 1, OPEN),

    INT_RULE("data.batch_size", 1, NOLIM),
    INT_RULE("data.seq_len", 0, NOLIM),

    REAL_RULE("optim.lr", 0, OPEN, 10, CLOSED),
    REAL_RULE("optim.min_lr_ratio", 0, CLOSED, 1, CLOSED),
    INT_RULE("optim.warmup_steps", 0, NOLIM),
    ONE_OF("optim.schedule", "cosine, linear, constant"),
    REAL_RULE("optim.beta1", 0, CLOSED, 1, OPEN),
    REAL_RULE("optim.beta2", 0, CLOSED, 1, OPEN),
    REAL_RULE("optim.eps", 0, OPEN, INFINITY, OPEN),
    REAL_RULE("optim.weight_decay", 0, CLOSED, INFINITY, OPEN),
    REAL_RULE("optim.grad_clip", 0, CLOSED, INFINITY, OPEN),

    INT_RULE("train.steps", 1, NOLIM),
    INT_RULE("train.grad_accum", 1, NOLIM),
    ONE_OF("train.device", "auto, cpu, cuda"),
    NONEMPTY("train.out_dir"),

    INT_RULE("eval.every", 0, NOLIM),
    INT_RULE("eval.batches", 1, NOLIM),

    INT_RULE("log.every", 1, NOLIM),

    INT_RULE("sample.every", 0, NOLIM),
    INT_RULE("sample.tokens", 0, NOLIM),
    REAL_RULE("sample.temperature", 0, OPEN, INFINITY, OPEN),
    INT_RULE("sample.top_k", 0, NOLIM),

    INT_RULE("parallel.dp", 1, NOLIM),
    INT_RULE("parallel.tp", 1, NOLIM),
    INT_RULE("parallel.pp", 1, NOLIM),
    INT_RULE("parallel.zero", 0, 3),
    REAL_RULE("parallel.timeout_s", 0, OPEN, 1e7, CLOSED),
    REAL_RULE("parallel.bucket_mib", 0, OPEN, 65536, CLOSED),
    ONE_OF("parallel.embedding_grads", "auto, gather, reduce"),

    INT_RULE("checkpoint.every_steps", 0, NOLIM),
    REAL_RULE("checkpoint.every_minutes", 0, CLOSED, INFINITY, OPEN),
    INT_RULE("checkpoint.keep_last", 1, NOLIM),
};

/* ---- reading a value by dotted key ---- */

typedef struct {
    const ProtobufCFieldDescriptor *f;
    const ProtobufCMessage *msg; /* NULL: the field's message is absent (defaults) */
} field_ref;

static gml_status lookup(const Gml__RunConfig *cfg, const char *key, field_ref *r) {
    const ProtobufCMessageDescriptor *d = &gml__run_config__descriptor;
    const ProtobufCMessage *msg = &cfg->base;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", key);
    char *part = buf;
    for (;;) {
        char *dot = strchr(part, '.');
        if (dot) *dot = '\0';
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, part);
        if (!f || (dot != NULL) != (f->type == PROTOBUF_C_TYPE_MESSAGE))
            return gml_error_set(GML_ERR_INTERNAL,
                                 "config_validate.c names key '%s', which runconfig.proto lacks", key);
        if (!dot) {
            r->f = f;
            r->msg = msg;
            return GML_OK;
        }
        msg = msg ? *(const ProtobufCMessage *const *)((const char *)msg + f->offset) : NULL;
        d = f->descriptor;
        part = dot + 1;
    }
}

static const void *value_ptr(const field_ref *r) {
    if (!r->msg) return r->f->default_value;
    return (const char *)r->msg + r->f->offset;
}

static gml_status get_int(const Gml__RunConfig *cfg, const char *key, int64_t *v) {
    field_ref r = {NULL, NULL};
    gml_status st = lookup(cfg, key, &r);
    if (st != GML_OK || !r.f) return st != GML_OK ? st : GML_ERR_INTERNAL;
    const void *p = value_ptr(&r);
    switch (r.f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_ENUM: *v = p ? *(const int32_t *)p : 0; return GML_OK;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: *v = p ? *(const uint32_t *)p : 0; return GML_OK;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: *v = p ? *(const int64_t *)p : 0; return GML_OK;
    default:
        return gml_error_set(GML_ERR_INTERNAL, "config_validate.c: '%s' is not a signed integer field",
                             key);
    }
}

static gml_status get_real(const Gml__RunConfig *cfg, const char *key, double *v) {
    field_ref r = {NULL, NULL};
    gml_status st = lookup(cfg, key, &r);
    if (st != GML_OK || !r.f) return st != GML_OK ? st : GML_ERR_INTERNAL;
    const void *p = value_ptr(&r);
    if (r.f->type == PROTOBUF_C_TYPE_FLOAT) *v = p ? *(const float *)p : 0.0f;
    else if (r.f->type == PROTOBUF_C_TYPE_DOUBLE) *v = p ? *(const double *)p : 0.0;
    else
        return gml_error_set(GML_ERR_INTERNAL, "config_validate.c: '%s' is not a float field", key);
    return GML_OK;
}

static gml_status get_string(const Gml__RunConfig *cfg, const char *key, const char **v) {
    field_ref r = {NULL, NULL};
    gml_status st = lookup(cfg, key, &r);
    if (st != GML_OK || !r.f) return st != GML_OK ? st : GML_ERR_INTERNAL;
    if (r.f->type != PROTOBUF_C_TYPE_STRING)
        return gml_error_set(GML_ERR_INTERNAL, "config_validate.c: '%s' is not a string field", key);
    const char *s = r.msg ? *(const char *const *)value_ptr(&r) : (const char *)r.f->default_value;
    *v = s ? s : "";
    return GML_OK;
}

/* ---- messages ---- */

typedef struct {
    gml_config_origin_fn fn;
    void *ctx;
} origins;

/* "run.yaml:12: " or "command line: " or "" (default value). */
static const char *where(const origins *o, const char *key, char *buf, size_t n) {
    const char *s = o->fn ? o->fn(o->ctx, key) : NULL;
    if (s)
        snprintf(buf, n, "%s: ", s);
    else
        buf[0] = '\0';
    return buf;
}

static const char *dflt(const origins *o, const char *key) {
    return (o->fn && !o->fn(o->ctx, key)) ? " (the default)" : "";
}

/* One-of match against "a, b, c". */
static int in_list(const char *s, const char *list) {
    size_t n = strlen(s);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncmp(p, s, n) == 0) return 1;
        if (!e) break;
        p = e + 1;
        while (*p == ' ') p++;
    }
    return 0;
}

static gml_status check_rule(const Gml__RunConfig *cfg, const rule *r, const origins *o) {
    char at[512];
    switch (r->kind) {
    case RULE_INT: {
        int64_t v = 0;
        GML_CHECK(get_int(cfg, r->key, &v));
        if (v >= r->ilo && v <= r->ihi) return GML_OK;
        where(o, r->key, at, sizeof at);
        if (r->ihi == NOLIM)
            return gml_error_set(GML_ERR_BAD_INPUT, "%s%s = %" PRId64 "%s is out of range; accepted: >= %" PRId64,
                                 at, r->key, v, dflt(o, r->key), r->ilo);
        return gml_error_set(GML_ERR_BAD_INPUT,
                             "%s%s = %" PRId64 "%s is out of range; accepted: %" PRId64 "..%" PRId64, at,
                             r->key, v, dflt(o, r->key), r->ilo, r->ihi);
    }
    case RULE_REAL: {
        double v = 0;
        GML_CHECK(get_real(cfg, r->key, &v));
        /* Written so that NaN fails every comparison. */
        int ok = isfinite(v) && (r->lo_open ? v > r->lo : v >= r->lo) &&
                 (isinf(r->hi) || (r->hi_open ? v < r->hi : v <= r->hi));
        if (ok) return GML_OK;
        char acc[128];
        int k = snprintf(acc, sizeof acc, "%s %g", r->lo_open ? ">" : ">=", r->lo);
        if (!isinf(r->hi) && k > 0 && (size_t)k < sizeof acc)
            snprintf(acc + k, sizeof acc - (size_t)k, " and %s %g", r->hi_open ? "<" : "<=", r->hi);
        where(o, r->key, at, sizeof at);
        return gml_error_set(GML_ERR_BAD_INPUT, "%s%s = %.9g%s is out of range; accepted: %s", at, r->key,
                             v, dflt(o, r->key), acc);
    }
    case RULE_ONE_OF: {
        const char *s = "";
        GML_CHECK(get_string(cfg, r->key, &s));
        if (in_list(s, r->accepted)) return GML_OK;
        where(o, r->key, at, sizeof at);
        return gml_error_set(GML_ERR_BAD_INPUT, "%s%s = '%.80s'%s is not accepted; accepted values: %s", at,
                             r->key, s, dflt(o, r->key), r->accepted);
    }
    case RULE_NONEMPTY: {
        const char *s = "";
        GML_CHECK(get_string(cfg, r->key, &s));
        if (s[0]) return GML_OK;
        where(o, r->key, at, sizeof at);
        return gml_error_set(GML_ERR_BAD_INPUT, "%s%s is empty%s; accepted: a non-empty string", at, r->key,
                             dflt(o, r->key));
    }
    }
    return gml_error_set(GML_ERR_INTERNAL, "config_validate.c: bad rule kind for '%s'", r->key);
}

/* ---- checks that relate two keys ---- */

static gml_status check_relations(const Gml__RunConfig *cfg, const origins *o) {
    char at[512], at2[512];
    int64_t n_embd = 0, n_head = 1, block = 0, vocab = 0, padded = 0, seq_len = 0;
    GML_CHECK(get_int(cfg, "model.n_embd", &n_embd));
    GML_CHECK(get_int(cfg, "model.n_head", &n_head));
    GML_CHECK(get_int(cfg, "model.block_size", &block));
    GML_CHECK(get_int(cfg, "model.vocab_size", &vocab));
    GML_CHECK(get_int(cfg, "model.padded_vocab_size", &padded));
    GML_CHECK(get_int(cfg, "data.seq_len", &seq_len));

    if (n_embd % n_head != 0) {
        where(o, "model.n_embd", at, sizeof at);
        const char *head_from = o->fn ? o->fn(o->ctx, "model.n_head") : NULL;
        if (head_from)
            snprintf(at2, sizeof at2, " (set at %s)", head_from);
        else
            snprintf(at2, sizeof at2, " (the default)");
        int64_t down = n_embd - n_embd % n_head, up = down + n_head;
        if (down == 0) down = up; /* n_embd < n_head: the smallest accepted value */
        return gml_error_set(GML_ERR_BAD_INPUT,
                             "%smodel.n_embd = %" PRId64 " is not divisible by model.n_head = %" PRId64
                             "%s; accepted: a multiple of model.n_head, e.g. %" PRId64 " or %" PRId64,
                             at, n_embd, n_head, o->fn ? at2 : "", down, up == down ? up + n_head : up);
    }
    if (vocab > 0 && padded != 0 && padded < vocab) {
        where(o, "model.padded_vocab_size", at, sizeof at);
        return gml_error_set(GML_ERR_BAD_INPUT,
                             "%smodel.padded_vocab_size = %" PRId64 " is smaller than model.vocab_size = %" PRId64
                             "; accepted: 0 (round up to a multiple of 64) or >= %" PRId64,
                             at, padded, vocab, vocab);
    }
    if (seq_len > block) {
        where(o, "data.seq_len", at, sizeof at);
        return gml_error_set(GML_ERR_BAD_INPUT,
                             "%sdata.seq_len = %" PRId64 " is larger than model.block_size = %" PRId64
                             "; accepted: 0 (use block_size) or 1..%" PRId64,
                             at, seq_len, block, block);
    }
    return GML_OK;
}

gml_status gml_config_validate_with_origin(const Gml__RunConfig *cfg, gml_config_origin_fn origin,
                                           void *ctx) {
    if (!cfg) return gml_error_set(GML_ERR_INVALID_ARG, "gml_config_validate: cfg is NULL");
    origins o = {origin, ctx};
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) GML_CHECK(check_rule(cfg, &rules[i], &o));
    return check_relations(cfg, &o);
}

gml_status gml_config_validate(const Gml__RunConfig *cfg) {
    return gml_config_validate_with_origin(cfg, NULL, NULL);
}
