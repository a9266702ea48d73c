/* config.c — YAML text and `key.path=value` overrides -> Gml__RunConfig.
 *
 * Generic over the protobuf-c descriptors: a YAML mapping is matched to a
 * message descriptor, each key to a field by name, and the scalar text is
 * parsed by the field's protobuf type (int32/uint64/float/bool/string, and the
 * other scalar types for future fields). Adding a field to runconfig.proto
 * therefore needs no change here. Every user mistake (unknown key, wrong type,
 * duplicate, malformed YAML, bad override) is GML_ERR_BAD_INPUT with a message
 * naming file:line (or "command line"), the key, the value and what is
 * accepted. Not for: value ranges (config_validate.c) or printing
 * (config_print.c).
 *
 * Memory: every sub-message is malloc'd and every string strdup'd (defaults
 * included), so protobuf_c_message_free_unpacked frees each exactly once.
 */
#include "launcher/config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* ---- where each key got its value (for messages and duplicate detection) ---- */

typedef struct {
    char *key;    /* dotted path, "model.n_layer"; sections are "model" */
    char *origin; /* "run.yaml:12" or "command line" */
    int from_file;
} origin_entry;

typedef struct {
    const char *name; /* file name used in messages */
    origin_entry *v;
    size_t n, cap;
} load_ctx;

static origin_entry *origin_find(const load_ctx *c, const char *key) {
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->v[i].key, key) == 0) return &c->v[i];
    return NULL;
}

static const char *origin_of(void *ctx, const char *key) {
    const origin_entry *e = origin_find((const load_ctx *)ctx, key);
    return e ? e->origin : NULL;
}

static gml_status origin_set(load_ctx *c, const char *key, const char *origin, int from_file) {
    origin_entry *e = origin_find(c, key);
    char *o = strdup(origin);
    if (!o) return gml_error_set(GML_ERR_NOMEM, "out of memory recording config origins");
    if (e) {
        free(e->origin);
        e->origin = o;
        e->from_file = from_file;
        return GML_OK;
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        origin_entry *v = realloc(c->v, cap * sizeof *v);
        if (!v) {
            free(o);
            return gml_error_set(GML_ERR_NOMEM, "out of memory recording config origins");
        }
        c->v = v;
        c->cap = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(o);
        return gml_error_set(GML_ERR_NOMEM, "out of memory recording config origins");
    }
    c->v[c->n++] = (origin_entry){k, o, from_file};
    return GML_OK;
}

static void ctx_free(load_ctx *c) {
    for (size_t i = 0; i < c->n; i++) {
        free(c->v[i].key);
        free(c->v[i].origin);
    }
    free(c->v);
}

/* ---- messages: printable value excerpts, key lists, suggestions ---- */

/* `s` quoted for a message, cut to 60 bytes so one bad value cannot fill the
 * error buffer. */
static const char *excerpt(const char *s, char *buf, size_t n) {
    size_t len = strlen(s);
    if (len <= 60)
        snprintf(buf, n, "'%s'", s);
    else
        snprintf(buf, n, "'%.60s...'", s);
    return buf;
}

/* "n_layer, n_head, ..." in .proto order. */
static void field_list(const ProtobufCMessageDescriptor *d, char *buf, size_t n) {
    size_t used = 0;
    buf[0] = '\0';
    for (unsigned i = 0; i < d->n_fields && used < n; i++) {
        int k = snprintf(buf + used, n - used, "%s%s", i ? ", " : "", d->fields[i].name);
        if (k < 0) break;
        used += (size_t)k;
    }
}

/* Levenshtein distance, capped: enough to suggest "n_layer" for "n_layr". */
static size_t edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return 99;
    size_t prev[64], cur[64];
    for (size_t j = 0; j <= lb; j++) prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, (lb + 1) * sizeof prev[0]);
    }
    return prev[lb];
}

static void suggestion(const ProtobufCMessageDescriptor *d, const char *name, char *buf, size_t n) {
    size_t best = 3;
    const char *pick = NULL;
    for (unsigned i = 0; i < d->n_fields; i++) {
        size_t e = edit_distance(name, d->fields[i].name);
        if (e < best) {
            best = e;
            pick = d->fields[i].name;
        }
    }
    if (pick)
        snprintf(buf, n, " (did you mean '%s'?)", pick);
    else
        buf[0] = '\0';
}

/* `where` is "file:line" or "command line"; `parent` is "" at the top level. */
static gml_status unknown_key(const char *where, const ProtobufCMessageDescriptor *d,
                              const char *parent, const char *name) {
    char list[1024], hint[320], ex[80];
    field_list(d, list, sizeof list);
    suggestion(d, name, hint, sizeof hint);
    if (parent[0] == '\0' && !hint[0]) {
        /* "n_layer=6": a key given without its section. */
        for (unsigned i = 0; i < d->n_fields; i++) {
            const ProtobufCFieldDescriptor *f = &d->fields[i];
            if (f->type == PROTOBUF_C_TYPE_MESSAGE &&
                protobuf_c_message_descriptor_get_field_by_name(f->descriptor, name)) {
                snprintf(hint, sizeof hint, " (did you mean '%s.%.64s'?)", f->name, name);
                break;
            }
        }
    }
    if (parent[0] == '\0')
        return gml_error_set(GML_ERR_BAD_INPUT, "%s: unknown section %s; accepted sections: %s%s",
                             where, excerpt(name, ex, sizeof ex), list, hint);
    char full[256];
    snprintf(full, sizeof full, "%s.%s", parent, name);
    return gml_error_set(GML_ERR_BAD_INPUT, "%s: unknown key %s; accepted keys in '%s': %s%s",
                         where, excerpt(full, ex, sizeof ex), parent, list, hint);
}

/* ---- descriptors ---- */

static int is_message(const ProtobufCFieldDescriptor *f) {
    return f->type == PROTOBUF_C_TYPE_MESSAGE;
}

/* Fields this module knows how to fill: singular scalars, strings, enums and
 * sub-messages. Checked once per load so a new .proto field of another kind is
 * reported as a schema problem, not a crash. */
static gml_status check_schema(const ProtobufCMessageDescriptor *d) {
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->label == PROTOBUF_C_LABEL_REPEATED || (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ||
            f->type == PROTOBUF_C_TYPE_BYTES)
            return gml_error_set(GML_ERR_INTERNAL,
                                 "runconfig.proto: field %s.%s is repeated, oneof or bytes; "
                                 "launcher/config.c supports only singular scalar, string, enum "
                                 "and message fields",
                                 d->name, f->name);
        if (is_message(f)) GML_CHECK(check_schema((const ProtobufCMessageDescriptor *)f->descriptor));
    }
    return GML_OK;
}

static void *member(void *msg, const ProtobufCFieldDescriptor *f) {
    return (char *)msg + f->offset;
}

/* Optional proto2 scalars carry a has_ flag at quantifier_offset. */
static int has_flag(const ProtobufCFieldDescriptor *f) {
    return f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
           f->type != PROTOBUF_C_TYPE_MESSAGE;
}

static size_t scalar_size(ProtobufCType t) {
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return 8;
    case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    default: return 4; /* int32 family, uint32, fixed32, float, enum */
    }
}

/* A new message of descriptor `d` with every sub-message allocated and every
 * string field a strdup of its default; scalars hold their init defaults with
 * has_ = 0. NULL when out of memory (nothing leaked). */
static ProtobufCMessage *msg_new(const ProtobufCMessageDescriptor *d) {
    ProtobufCMessage *m = calloc(1, d->sizeof_message);
    if (!m) return NULL;
    d->message_init(m);
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        void *p = member(m, f);
        if (is_message(f)) {
            ProtobufCMessage *sub = msg_new((const ProtobufCMessageDescriptor *)f->descriptor);
            *(ProtobufCMessage **)p = sub;
            if (!sub) goto fail;
        } else if (f->type == PROTOBUF_C_TYPE_STRING) {
            const char *def = f->default_value ? (const char *)f->default_value : "";
            char *s = strdup(def);
            /* On failure the field keeps the static default, which
             * free_unpacked knows not to free. */
            if (!s) goto fail;
            *(char **)p = s;
        }
    }
    return m;
fail:
    protobuf_c_message_free_unpacked(m, NULL);
    return NULL;
}

/* ---- scalar text -> typed value ---- */

typedef union {
    int32_t i32;
    uint32_t u32;
    int64_t i64;
    uint64_t u64;
    float f32;
    double f64;
    protobuf_c_boolean b;
} scalar_value;

/* Decimal integer: optional sign, then digits only; no spaces, no 1e3, no
 * 0x. Returns NULL on success, else what is wrong. */
static const char *parse_signed(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    if (*p == '\0') return "not a decimal integer";
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q)) return "not a decimal integer";
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE || v < lo || v > hi) return "out of range";
    *out = v;
    return NULL;
}

static const char *parse_unsigned(const char *s, uint64_t hi, uint64_t *out) {
    const char *p = s;
    if (*p == '-') {
        for (const char *q = p + 1; *q; q++)
            if (!isdigit((unsigned char)*q)) return "not a decimal integer";
        return p[1] ? "negative, but the field is unsigned" : "not a decimal integer";
    }
    if (*p == '+') p++;
    if (*p == '\0') return "not a decimal integer";
    for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q)) return "not a decimal integer";
    errno = 0;
    unsigned long long v = strtoull(p, NULL, 10);
    if (errno == ERANGE || v > hi) return "out of range";
    *out = v;
    return NULL;
}

static const char *parse_real(const char *s, double *out) {
    if (*s == '\0' || isspace((unsigned char)*s)) return "not a number";
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end != '\0') return "not a number";
    if (!isfinite(v) || errno == ERANGE) return "not a finite number in range";
    *out = v;
    return NULL;
}

static int ieq(const char *a, const char *b) {
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return 0;
    return *a == *b;
}

/* What a field of this type accepts, for messages. */
static void expected_text(const ProtobufCFieldDescriptor *f, char *buf, size_t n) {
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        snprintf(buf, n, "a decimal integer (int32: %" PRId32 "..%" PRId32 ")", INT32_MIN, INT32_MAX);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        snprintf(buf, n, "a non-negative decimal integer (uint32: 0..%" PRIu32 ")", UINT32_MAX);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(buf, n, "a decimal integer (int64: %" PRId64 "..%" PRId64 ")", INT64_MIN, INT64_MAX);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(buf, n, "a non-negative decimal integer (uint64: 0..%" PRIu64 ")", UINT64_MAX);
        break;
    case PROTOBUF_C_TYPE_FLOAT: snprintf(buf, n, "a finite number (float)"); break;
    case PROTOBUF_C_TYPE_DOUBLE: snprintf(buf, n, "a finite number (double)"); break;
    case PROTOBUF_C_TYPE_BOOL: snprintf(buf, n, "a boolean (true/false/yes/no/on/off/1/0)"); break;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *e = f->descriptor;
        size_t used = (size_t)snprintf(buf, n, "one of: ");
        for (unsigned i = 0; i < e->n_values && used < n; i++) {
            int k = snprintf(buf + used, n - used, "%s%s", i ? ", " : "", e->values[i].name);
            if (k < 0) break;
            used += (size_t)k;
        }
        break;
    }
    default: snprintf(buf, n, "a string"); break;
    }
}

/* Parses `s` for field `f`. Returns NULL on success, else what is wrong. */
static const char *parse_scalar(const ProtobufCFieldDescriptor *f, const char *s, scalar_value *v) {
    int64_t i;
    uint64_t u;
    double d;
    const char *bad;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if ((bad = parse_signed(s, INT32_MIN, INT32_MAX, &i))) return bad;
        v->i32 = (int32_t)i;
        return NULL;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if ((bad = parse_signed(s, INT64_MIN, INT64_MAX, &i))) return bad;
        v->i64 = i;
        return NULL;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if ((bad = parse_unsigned(s, UINT32_MAX, &u))) return bad;
        v->u32 = (uint32_t)u;
        return NULL;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if ((bad = parse_unsigned(s, UINT64_MAX, &u))) return bad;
        v->u64 = u;
        return NULL;
    case PROTOBUF_C_TYPE_FLOAT:
        /* Syntax and finiteness as for double; the value itself from strtof
         * (correctly rounded, the same conversion config_print.c checks). */
        if ((bad = parse_real(s, &d))) return bad;
        v->f32 = strtof(s, NULL);
        if (isinf(v->f32)) return "out of range for float";
        if (d != 0.0 && v->f32 == 0.0f) return "too small for float (would become 0)";
        return NULL;
    case PROTOBUF_C_TYPE_DOUBLE:
        if ((bad = parse_real(s, &d))) return bad;
        v->f64 = d;
        return NULL;
    case PROTOBUF_C_TYPE_BOOL:
        if (ieq(s, "true") || ieq(s, "yes") || ieq(s, "on") || strcmp(s, "1") == 0) {
            v->b = 1;
            return NULL;
        }
        if (ieq(s, "false") || ieq(s, "no") || ieq(s, "off") || strcmp(s, "0") == 0) {
            v->b = 0;
            return NULL;
        }
        return "not a boolean";
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *ev =
            protobuf_c_enum_descriptor_get_value_by_name((const ProtobufCEnumDescriptor *)f->descriptor, s);
        if (!ev) return "not an accepted name";
        v->i32 = ev->value;
        return NULL;
    }
    default: return "unsupported field type";
    }
}

/* Well-formed UTF-8: no overlong forms, no surrogates, nothing past
 * U+10FFFF (command-line strings must print back as valid YAML; config_print.c
 * applies the same rule). */
static int utf8_ok(const unsigned char *s) {
    while (*s) {
        if (*s < 0x80) {
            s++;
            continue;
        }
        int n;
        uint32_t c;
        if ((*s & 0xE0) == 0xC0) n = 1, c = *s & 0x1F;
        else if ((*s & 0xF0) == 0xE0) n = 2, c = *s & 0x0F;
        else if ((*s & 0xF8) == 0xF0) n = 3, c = *s & 0x07;
        else return 0;
        for (int k = 1; k <= n; k++) {
            if ((s[k] & 0xC0) != 0x80) return 0;
            c = (c << 6) | (s[k] & 0x3F);
        }
        static const uint32_t min_cp[4] = {0, 0x80, 0x800, 0x10000};
        if (c < min_cp[n] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
        s += n + 1;
    }
    return 1;
}

/* Sets field `f` of `msg` from text `s`; `where`/`key` for messages. */
static gml_status set_field(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f, const char *s,
                            const char *where, const char *key) {
    void *p = member(msg, f);
    char ex[80];
    if (f->type == PROTOBUF_C_TYPE_STRING) {
        if (!utf8_ok((const unsigned char *)s))
            return gml_error_set(GML_ERR_BAD_INPUT, "%s: bad value for '%s': not valid UTF-8 text",
                                 where, key);
        char *dup = strdup(s);
        if (!dup) return gml_error_set(GML_ERR_NOMEM, "out of memory setting '%s'", key);
        char **sp = (char **)p;
        if (*sp && *sp != (char *)f->default_value) free(*sp);
        *sp = dup;
        return GML_OK;
    }
    scalar_value v;
    memset(&v, 0, sizeof v);
    const char *bad = parse_scalar(f, s, &v);
    if (bad) {
        char want[512];
        expected_text(f, want, sizeof want);
        return gml_error_set(GML_ERR_BAD_INPUT, "%s: bad value %s for '%s': %s; expected %s", where,
                             excerpt(s, ex, sizeof ex), key, bad, want);
    }
    memcpy(p, &v, scalar_size(f->type));
    if (has_flag(f)) *(protobuf_c_boolean *)((char *)msg + f->quantifier_offset) = 1;
    return GML_OK;
}

/* Every field not set gets its .proto default (zero if none); every optional
 * scalar ends with has_ = 1 so the packed message records the value used. */
static gml_status fill_defaults(ProtobufCMessage *msg, const ProtobufCMessageDescriptor *d) {
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        void *p = member(msg, f);
        if (is_message(f)) {
            const ProtobufCMessageDescriptor *sd = f->descriptor;
            ProtobufCMessage **sp = (ProtobufCMessage **)p;
            if (!*sp && !(*sp = msg_new(sd)))
                return gml_error_set(GML_ERR_NOMEM, "out of memory building config section %s",
                                     f->name);
            GML_CHECK(fill_defaults(*sp, sd));
        } else if (f->type == PROTOBUF_C_TYPE_STRING) {
            char **sp = (char **)p;
            if (!*sp || *sp == (char *)f->default_value) {
                char *dup = strdup(f->default_value ? (const char *)f->default_value : "");
                if (!dup) return gml_error_set(GML_ERR_NOMEM, "out of memory setting %s", f->name);
                *sp = dup;
            }
        } else if (has_flag(f)) {
            protobuf_c_boolean *has = (protobuf_c_boolean *)((char *)msg + f->quantifier_offset);
            if (!*has) {
                if (f->default_value)
                    memcpy(p, f->default_value, scalar_size(f->type));
                else
                    memset(p, 0, scalar_size(f->type));
                *has = 1;
            }
        }
    }
    return GML_OK;
}

/* ---- YAML document -> message ---- */

static const char *node_kind(const yaml_node_t *n) {
    switch (n->type) {
    case YAML_SCALAR_NODE: return "a scalar";
    case YAML_SEQUENCE_NODE: return "a sequence";
    case YAML_MAPPING_NODE: return "a mapping";
    default: return "an empty node";
    }
}

/* `~`, `null` or nothing, written plain: YAML's null. */
static int is_null_scalar(const yaml_node_t *n) {
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return 0;
    const char *s = (const char *)n->data.scalar.value;
    return s[0] == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
           strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

static int line_of(const yaml_node_t *n) { return (int)n->start_mark.line + 1; }

/* Fills `msg` (descriptor `d`, dotted path `prefix`, "" at the top) from the
 * mapping node `map`. */
static gml_status walk_mapping(load_ctx *c, yaml_document_t *doc, yaml_node_t *map,
                               ProtobufCMessage *msg, const ProtobufCMessageDescriptor *d,
                               const char *prefix) {
    char where[600], key[256], ex[80], prev[600];
    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top; pr++) {
        yaml_node_t *kn = yaml_document_get_node(doc, pr->key);
        yaml_node_t *vn = yaml_document_get_node(doc, pr->value);
        if (!kn || !vn) return gml_error_set(GML_ERR_INTERNAL, "%s: libyaml returned a broken node", c->name);
        snprintf(where, sizeof where, "%s:%d", c->name, line_of(kn));
        if (kn->type != YAML_SCALAR_NODE)
            return gml_error_set(GML_ERR_BAD_INPUT, "%s: keys%s%s must be plain names, got %s",
                                 where, prefix[0] ? " in " : "", prefix, node_kind(kn));
        const char *name = (const char *)kn->data.scalar.value;
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, name);
        if (!f) return unknown_key(where, d, prefix, name);
        snprintf(key, sizeof key, "%s%s%s", prefix, prefix[0] ? "." : "", name);

        const origin_entry *seen = origin_find(c, key);
        if (seen) {
            snprintf(prev, sizeof prev, "%s", seen->origin);
            return gml_error_set(GML_ERR_BAD_INPUT, "%s: duplicate key '%s' (first set at %s)", where,
                                 key, prev);
        }
        GML_CHECK(origin_set(c, key, where, 1));

        if (is_message(f)) {
            ProtobufCMessage *sub = *(ProtobufCMessage **)member(msg, f);
            const ProtobufCMessageDescriptor *sd = f->descriptor;
            if (is_null_scalar(vn)) continue; /* "model:" with every key commented out */
            if (vn->type != YAML_MAPPING_NODE) {
                char list[1024];
                field_list(sd, list, sizeof list);
                return gml_error_set(GML_ERR_BAD_INPUT,
                                     "%s: '%s' must be a mapping of keys (accepted keys: %s), got %s%s%s",
                                     where, key, list, node_kind(vn),
                                     vn->type == YAML_SCALAR_NODE ? " " : "",
                                     vn->type == YAML_SCALAR_NODE
                                         ? excerpt((const char *)vn->data.scalar.value, ex, sizeof ex)
                                         : "");
            }
            GML_CHECK(walk_mapping(c, doc, vn, sub, sd, key));
            continue;
        }
        if (vn->type != YAML_SCALAR_NODE)
            return gml_error_set(GML_ERR_BAD_INPUT,
                                 "%s: '%s' must be a single value, got %s (keys nest only as section.key)",
                                 where, key, node_kind(vn));
        const char *val = (const char *)vn->data.scalar.value;
        if (strlen(val) != vn->data.scalar.length)
            return gml_error_set(GML_ERR_BAD_INPUT, "%s: value of '%s' contains a NUL character", where, key);
        snprintf(where, sizeof where, "%s:%d", c->name, line_of(vn));
        GML_CHECK(set_field(msg, f, val, where, key));
    }
    return GML_OK;
}

static gml_status parse_yaml(load_ctx *c, const char *text, size_t len, ProtobufCMessage *cfg,
                             const ProtobufCMessageDescriptor *d) {
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    int have_doc = 0, have_extra = 0;
    gml_status st = GML_OK;
    if (!yaml_parser_initialize(&parser))
        return gml_error_set(GML_ERR_NOMEM, "yaml_parser_initialize failed (out of memory)");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);

    if (!yaml_parser_load(&parser, &doc)) goto parse_error;
    have_doc = 1;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root) {
        if (!yaml_parser_load(&parser, &extra)) goto parse_error;
        have_extra = 1;
        yaml_node_t *r2 = yaml_document_get_root_node(&extra);
        if (r2) {
            st = gml_error_set(GML_ERR_BAD_INPUT,
                               "%s:%d: a second YAML document starts here; a config file holds one",
                               c->name, (int)extra.start_mark.line + 1);
            goto done;
        }
        if (root->type == YAML_MAPPING_NODE) {
            st = walk_mapping(c, &doc, root, cfg, d, "");
        } else if (!is_null_scalar(root)) {
            char list[1024], ex[80];
            field_list(d, list, sizeof list);
            st = gml_error_set(
                GML_ERR_BAD_INPUT,
                "%s:%d: the top level must be a mapping of sections (%s), got %s%s%s", c->name,
                line_of(root), list, node_kind(root), root->type == YAML_SCALAR_NODE ? " " : "",
                root->type == YAML_SCALAR_NODE
                    ? excerpt((const char *)root->data.scalar.value, ex, sizeof ex)
                    : "");
        }
    }
    goto done;

parse_error:
    if (parser.error == YAML_READER_ERROR) {
        st = gml_error_set(GML_ERR_BAD_INPUT, "%s: malformed YAML at byte offset %zu: %s", c->name,
                           parser.problem_offset, parser.problem ? parser.problem : "reader error");
    } else if (parser.error == YAML_MEMORY_ERROR) {
        st = gml_error_set(GML_ERR_NOMEM, "%s: libyaml ran out of memory", c->name);
    } else if (parser.context) {
        st = gml_error_set(GML_ERR_BAD_INPUT, "%s:%zu:%zu: malformed YAML: %s (%s at line %zu)", c->name,
                           parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                           parser.problem ? parser.problem : "parse error", parser.context,
                           parser.context_mark.line + 1);
    } else {
        st = gml_error_set(GML_ERR_BAD_INPUT, "%s:%zu:%zu: malformed YAML: %s", c->name,
                           parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                           parser.problem ? parser.problem : "parse error");
    }
done:
    if (have_extra) yaml_document_delete(&extra);
    if (have_doc) yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return st;
}

/* ---- overrides: "section.key=value" ---- */

static gml_status apply_override(load_ctx *c, ProtobufCMessage *cfg, const ProtobufCMessageDescriptor *d,
                                 const char *arg) {
    const char *where = "command line";
    char ex[80];
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg)
        return gml_error_set(GML_ERR_BAD_INPUT,
                             "%s: bad override %s: expected section.key=value (e.g. model.n_layer=6)",
                             where, excerpt(arg, ex, sizeof ex));
    size_t klen = (size_t)(eq - arg);
    char key[256];
    if (klen >= sizeof key)
        return gml_error_set(GML_ERR_BAD_INPUT, "%s: override key %s is too long", where,
                             excerpt(arg, ex, sizeof ex));
    memcpy(key, arg, klen);
    key[klen] = '\0';
    const char *value = eq + 1;

    /* Walk "a.b.c" down the descriptors. `path` is the key up to the
     * current part ("model", then "model.n_layer"); `parent` the part before. */
    const char *full = arg; /* key text, klen bytes, with its dots */
    ProtobufCMessage *msg = cfg;
    char parent[256] = "", path[256];
    char *part = key;
    for (;;) {
        char *dot = strchr(part, '.');
        if (dot) *dot = '\0';
        const ProtobufCFieldDescriptor *f =
            part[0] ? protobuf_c_message_descriptor_get_field_by_name(d, part) : NULL;
        if (!f) return unknown_key(where, d, parent, part);
        size_t plen = (size_t)(part - key) + strlen(part); /* <= klen < sizeof path */
        memcpy(path, full, plen);
        path[plen] = '\0';
        if (is_message(f)) {
            const ProtobufCMessageDescriptor *sd = f->descriptor;
            if (!dot) {
                char list[1024];
                field_list(sd, list, sizeof list);
                return gml_error_set(GML_ERR_BAD_INPUT,
                                     "%s: bad override %s: '%s' is a section; set one of its keys "
                                     "as %s.KEY=value (accepted keys: %s)",
                                     where, excerpt(arg, ex, sizeof ex), path, path, list);
            }
            msg = *(ProtobufCMessage **)member(msg, f);
            d = sd;
            memcpy(parent, path, plen + 1);
            part = dot + 1;
            continue;
        }
        if (dot)
            return gml_error_set(GML_ERR_BAD_INPUT,
                                 "%s: bad override %s: '%s' is a single value, it has no sub-keys",
                                 where, excerpt(arg, ex, sizeof ex), path);
        GML_CHECK(set_field(msg, f, value, where, path));
        return origin_set(c, path, where, 0);
    }
}

/* ---- load ---- */

static gml_status load_buffer(const char *text, size_t len, const char *name, int n_overrides,
                              char *const *overrides, Gml__RunConfig **out) {
    if (!out) return gml_error_set(GML_ERR_INVALID_ARG, "gml_config_load: out is NULL");
    *out = NULL;
    if (n_overrides < 0 || (n_overrides > 0 && !overrides))
        return gml_error_set(GML_ERR_INVALID_ARG, "gml_config_load: bad overrides array");
    const ProtobufCMessageDescriptor *d = &gml__run_config__descriptor;
    GML_CHECK(check_schema(d));

    load_ctx c = {name ? name : "<string>", NULL, 0, 0};
    gml_status st = GML_OK;
    ProtobufCMessage *cfg = msg_new(d);
    if (!cfg) return gml_error_set(GML_ERR_NOMEM, "out of memory allocating the run config");

    GML_CHECK_GOTO(parse_yaml(&c, text, len, cfg, d), st, fail);
    for (int i = 0; i < n_overrides; i++) {
        if (!overrides[i]) {
            st = gml_error_set(GML_ERR_INVALID_ARG, "gml_config_load: override %d is NULL", i);
            goto fail;
        }
        GML_CHECK_GOTO(apply_override(&c, cfg, d, overrides[i]), st, fail);
    }
    GML_CHECK_GOTO(fill_defaults(cfg, d), st, fail);
    GML_CHECK_GOTO(gml_config_validate_with_origin((Gml__RunConfig *)cfg, origin_of, &c), st, fail);
    ctx_free(&c);
    *out = (Gml__RunConfig *)cfg;
    return GML_OK;
fail:
    ctx_free(&c);
    protobuf_c_message_free_unpacked(cfg, NULL);
    return st;
}

gml_status gml_config_load_string(const char *yaml, const char *name, int n_overrides,
                                  char *const *overrides, Gml__RunConfig **out) {
    if (!yaml) return gml_error_set(GML_ERR_INVALID_ARG, "gml_config_load_string: yaml is NULL");
    return load_buffer(yaml, strlen(yaml), name, n_overrides, overrides, out);
}

gml_status gml_config_load(const char *path, int n_overrides, char *const *overrides,
                           Gml__RunConfig **out) {
    if (out) *out = NULL;
    if (!path) return gml_error_set(GML_ERR_INVALID_ARG, "gml_config_load: path is NULL");
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return gml_error_set(GML_ERR_BAD_INPUT, "cannot open config file '%s': %s", path,
                             strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    gml_status st = GML_OK;
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? 2 * cap : 4096;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                st = gml_error_set(GML_ERR_NOMEM, "out of memory reading config file '%s'", path);
                goto done;
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + len, 1, cap - len, fp);
        len += got;
        if (got == 0) {
            if (ferror(fp)) {
                st = gml_error_set(GML_ERR_BAD_INPUT, "cannot read config file '%s': %s", path,
                                   strerror(errno));
                goto done;
            }
            break;
        }
    }
    buf[len] = '\0';
    st = load_buffer(buf, len, path, n_overrides, overrides, out);
done:
    free(buf);
    fclose(fp);
    return st;
}

void gml_config_free(Gml__RunConfig *cfg) {
    if (cfg) protobuf_c_message_free_unpacked(&cfg->base, NULL);
}
