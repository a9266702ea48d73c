/* config_print.c — a RunConfig as YAML: the effective configuration.
 *
 * Prints every field, defaults included, sections and keys in .proto order,
 * walking the protobuf-c descriptors (so new .proto fields print with no change
 * here). The text re-parses with gml_config_load_string to the same message:
 * floats are printed with the fewest digits that convert back to the same
 * float (by strtof, as config.c reads them), strings are double-quoted with YAML escapes whenever a plain scalar
 * could be misread. Used by `gml-dist --print-config`, in logs, and next to
 * checkpoints. Not for: parsing (config.c) or checking values
 * (config_validate.c).
 */
#include "launcher/config.h"

#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- numbers ---- */

/* Fewest significant digits (up to max_digits, which always round-trips) such
 * that parsing the text back as config.c does gives `v` again. */
static void format_real(double v, int is_float, char *buf, size_t n) {
    int max_digits = is_float ? 9 : 17;
    for (int p = 1; p <= max_digits; p++) {
        snprintf(buf, n, "%.*g", p, v);
        if (is_float ? strtof(buf, NULL) == (float)v : strtod(buf, NULL) == v) break;
    }
    /* "1" -> "1.0" so other YAML readers see a float too. */
    if (strspn(buf, "-0123456789") == strlen(buf)) {
        size_t len = strlen(buf);
        if (len + 2 < n) memcpy(buf + len, ".0", 3);
    }
}

/* ---- strings ---- */

static int reserved_word(const char *s) {
    static const char *const words[] = {"true", "false", "yes", "no",   "on", "off",
                                        "y",    "n",     "null", "nan", "inf"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        const char *a = s, *b = words[i];
        while (*a && *b && tolower((unsigned char)*a) == *b) a++, b++;
        if (!*a && !*b) return 1;
    }
    return 0;
}

/* Plain only when unmistakable: starts with a letter, '/' or '_', has only
 * [A-Za-z0-9_./+-], and is not a word YAML readers turn into a bool/null. */
static int plain_ok(const char *s) {
    if (!(isalpha((unsigned char)s[0]) || s[0] == '/' || s[0] == '_')) return 0;
    for (const char *p = s; *p; p++)
        if (!(isalnum((unsigned char)*p) || strchr("_./+-", *p))) return 0;
    return !reserved_word(s);
}

/* Decodes one UTF-8 code point; returns its length in bytes, 0 if invalid. */
static int utf8_decode(const unsigned char *s, uint32_t *cp) {
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    int n;
    uint32_t c;
    if ((s[0] & 0xE0) == 0xC0) n = 2, c = s[0] & 0x1F;
    else if ((s[0] & 0xF0) == 0xE0) n = 3, c = s[0] & 0x0F;
    else if ((s[0] & 0xF8) == 0xF0) n = 4, c = s[0] & 0x07;
    else return 0;
    for (int k = 1; k < n; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[k] & 0x3F);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min_cp[n] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    *cp = c;
    return n;
}

static int utf8_valid(const char *s) {
    uint32_t cp;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        int n = utf8_decode(p, &cp);
        if (!n) return 0;
        p += n;
    }
    return 1;
}

/* Characters YAML does not allow raw (or reads as line breaks) get escapes. */
static int needs_escape(uint32_t cp) {
    return cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0) || cp == 0x2028 || cp == 0x2029 ||
           cp == 0xFEFF || cp == 0xFFFE || cp == 0xFFFF;
}

static int put_string(FILE *f, const char *s) {
    if (s[0] && plain_ok(s)) return fputs(s, f) < 0 ? -1 : 0;
    if (fputc('"', f) == EOF) return -1;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        uint32_t cp = 0;
        int n = utf8_decode(p, &cp); /* strings were checked valid before printing */
        if (n == 0) return -1;
        int r;
        if (cp == '"') r = fputs("\\\"", f);
        else if (cp == '\\') r = fputs("\\\\", f);
        else if (cp == '\n') r = fputs("\\n", f);
        else if (cp == '\t') r = fputs("\\t", f);
        else if (cp == '\r') r = fputs("\\r", f);
        else if (needs_escape(cp)) r = fprintf(f, "\\u%04" PRIX32, cp);
        else r = fwrite(p, 1, (size_t)n, f) == (size_t)n ? 0 : -1;
        if (r < 0) return -1;
        p += n;
    }
    return fputc('"', f) == EOF ? -1 : 0;
}

/* ---- walking the message ---- */

/* A field's value: the stored one, or the .proto default when the message
 * itself is absent. */
static const void *value_ptr(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *fd) {
    return msg ? (const char *)msg + fd->offset : fd->default_value;
}

static const char *string_value(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *fd) {
    const char *s = msg ? *(const char *const *)value_ptr(msg, fd) : (const char *)fd->default_value;
    return s ? s : "";
}

static gml_status check_strings(const ProtobufCMessage *msg, const ProtobufCMessageDescriptor *d,
                                const char *prefix) {
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[i];
        if (fd->type == PROTOBUF_C_TYPE_MESSAGE) {
            const ProtobufCMessage *sub = msg ? *(const ProtobufCMessage *const *)value_ptr(msg, fd) : NULL;
            char path[256];
            snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", fd->name);
            GML_CHECK(check_strings(sub, fd->descriptor, path));
        } else if (fd->type == PROTOBUF_C_TYPE_STRING && !utf8_valid(string_value(msg, fd))) {
            return gml_error_set(GML_ERR_INVALID_ARG,
                                 "gml_config_print: %s%s%s is not valid UTF-8; YAML cannot hold it",
                                 prefix, prefix[0] ? "." : "", fd->name);
        }
    }
    return GML_OK;
}

static int put_scalar(FILE *f, const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *fd) {
    const void *p = value_ptr(msg, fd);
    char buf[64];
    switch (fd->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: return fprintf(f, "%" PRId32, p ? *(const int32_t *)p : 0);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: return fprintf(f, "%" PRIu32, p ? *(const uint32_t *)p : 0u);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: return fprintf(f, "%" PRId64, p ? *(const int64_t *)p : (int64_t)0);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return fprintf(f, "%" PRIu64, p ? *(const uint64_t *)p : (uint64_t)0);
    case PROTOBUF_C_TYPE_FLOAT:
        format_real(p ? *(const float *)p : 0.0f, 1, buf, sizeof buf);
        return fputs(buf, f);
    case PROTOBUF_C_TYPE_DOUBLE:
        format_real(p ? *(const double *)p : 0.0, 0, buf, sizeof buf);
        return fputs(buf, f);
    case PROTOBUF_C_TYPE_BOOL:
        return fputs(p && *(const protobuf_c_boolean *)p ? "true" : "false", f);
    case PROTOBUF_C_TYPE_ENUM: {
        int32_t v = p ? *(const int32_t *)p : 0;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(fd->descriptor, v);
        return ev ? fputs(ev->name, f) : fprintf(f, "%" PRId32, v);
    }
    case PROTOBUF_C_TYPE_STRING: return put_string(f, string_value(msg, fd));
    default: return fputs("null", f); /* bytes: not in the schema (config.c rejects it) */
    }
}

static gml_status print_message(FILE *f, const ProtobufCMessage *msg, const ProtobufCMessageDescriptor *d,
                                int depth) {
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[i];
        if (fprintf(f, "%*s%s:", 2 * depth, "", fd->name) < 0) goto io_error;
        if (fd->type == PROTOBUF_C_TYPE_MESSAGE) {
            const ProtobufCMessage *sub = msg ? *(const ProtobufCMessage *const *)value_ptr(msg, fd) : NULL;
            if (fputc('\n', f) == EOF) goto io_error;
            GML_CHECK(print_message(f, sub, fd->descriptor, depth + 1));
            continue;
        }
        if (fputc(' ', f) == EOF || put_scalar(f, msg, fd) < 0 || fputc('\n', f) == EOF) goto io_error;
    }
    return GML_OK;
io_error:
    return gml_error_set(GML_ERR_IO, "gml_config_print: writing the config failed");
}

gml_status gml_config_print(const Gml__RunConfig *cfg, FILE *f) {
    if (!cfg || !f) return gml_error_set(GML_ERR_INVALID_ARG, "gml_config_print: cfg or f is NULL");
    const ProtobufCMessageDescriptor *d = &gml__run_config__descriptor;
    GML_CHECK(check_strings(&cfg->base, d, ""));
    if (fprintf(f, "# gml-dist effective configuration (schema version %d)\n", GML_CONFIG_SCHEMA_VERSION) <
        0)
        return gml_error_set(GML_ERR_IO, "gml_config_print: writing the config failed");
    GML_CHECK(print_message(f, &cfg->base, d, 0));
    if (fflush(f) != 0 || ferror(f))
        return gml_error_set(GML_ERR_IO, "gml_config_print: writing the config failed");
    return GML_OK;
}
