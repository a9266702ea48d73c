/* config.h — the run configuration: YAML file + `key.path=value` overrides ->
 * a Gml__RunConfig protobuf-c message (schema and defaults in
 * proto/runconfig.proto), its validation, and printing it back as YAML.
 *
 * The parser walks the protobuf-c descriptors, so adding a field to the .proto
 * needs no change here; ranges and accepted strings live in one table in
 * config_validate.c. Not for: checking that files named in the config exist,
 * or deciding anything at run time (the launcher reads the message).
 *
 * Ownership: a RunConfig returned by gml_config_load* owns every sub-message
 * and string (malloc/strdup); free it with gml_config_free. Every sub-message
 * is present and every field holds its value or its .proto default, so callers
 * read cfg->model->n_layer without NULL or has_ checks.
 */
#ifndef GML_LAUNCHER_CONFIG_H
#define GML_LAUNCHER_CONFIG_H

#include <stdio.h>

#include "core/status.h"
#include "proto/runconfig.pb-c.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bump when a field of runconfig.proto changes meaning (adding fields with new
 * numbers does not need it). Printed at the top of gml_config_print. */
#define GML_CONFIG_SCHEMA_VERSION 1

/* Parse YAML file `path`, then apply overrides ("model.n_layer=6", ...), fill
 * every unset field with its default (every sub-message allocated), then
 * validate. On success *out is owned by the caller (gml_config_free); on
 * failure *out is NULL. User errors return GML_ERR_BAD_INPUT with a message
 * naming file:line (or "command line"), the key, the bad value and what is
 * accepted. */
gml_status gml_config_load(const char *path, int n_overrides, char *const *overrides,
                           Gml__RunConfig **out);

/* Same, from a NUL-terminated YAML string; `name` stands for the file name in
 * messages (NULL: "<string>"). For tests and embedding. */
gml_status gml_config_load_string(const char *yaml, const char *name, int n_overrides,
                                  char *const *overrides, Gml__RunConfig **out);

/* Range / accepted-value checks (the table in config_validate.c). Called by
 * load; call it again after changing a loaded config by hand. Reads the stored
 * values (a NULL sub-message or string counts as its .proto defaults). */
gml_status gml_config_validate(const Gml__RunConfig *cfg);

/* The effective config as YAML: every field, defaults included, sections and
 * keys in .proto order. The text re-parses to the same message. Returns
 * GML_ERR_IO if writing to `f` fails. */
gml_status gml_config_print(const Gml__RunConfig *cfg, FILE *f);

/* Frees a config from gml_config_load*; NULL is fine. */
void gml_config_free(Gml__RunConfig *cfg);

/* ---- shared between launcher/config*.c; other modules need not call these ---- */

/* Where a field got its value, for messages: returns e.g. "run.yaml:12" or
 * "command line", or NULL when the field holds its default. `key` is the dotted
 * path ("model.n_layer"). */
typedef const char *(*gml_config_origin_fn)(void *ctx, const char *key);

/* gml_config_validate, with messages prefixed by the origin of the offending
 * key. `origin` may be NULL. */
gml_status gml_config_validate_with_origin(const Gml__RunConfig *cfg, gml_config_origin_fn origin,
                                           void *ctx);

#ifdef __cplusplus
}
#endif
#endif
