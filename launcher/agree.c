/* agree.c — the ranks of a job compare what each read on its own. See
 * agree.h. */
#include "launcher/agree.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/crc32c.h"

gml_status gml_agree_bytes(gml_comm *world, const char *what, const void *bytes, size_t n, const char *hint) {
    int size = gml_comm_size(world);
    if (size == 1) return GML_OK;
    uint32_t mine[2] = {gml_crc32c(bytes, n), (uint32_t)n};
    uint32_t *all = malloc((size_t)size * sizeof mine);
    if (!all) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    gml_status st = gml_comm_allgather_bytes(world, mine, all, sizeof mine, NULL);
    if (st != GML_OK) {
        free(all);
        return st;
    }
    char list[160] = "";
    size_t used = 0;
    int differ = 0;
    for (int r = 1; r < size; r++) {
        if (all[2 * r] == all[0] && all[2 * r + 1] == all[1]) continue;
        if (differ++ < 8 && used < sizeof list) {
            int k = snprintf(list + used, sizeof list - used, "%s%d", differ > 1 ? ", " : "", r);
            if (k > 0) used += (size_t)k;
        }
    }
    free(all);
    if (differ == 0) return GML_OK;
    char more[32] = "";
    if (differ > 8) snprintf(more, sizeof more, " and %d more", differ - 8);
    return gml_error_set(GML_ERR_BAD_INPUT, "%s is not the same on every rank of this job: rank%s %s%s differ%s "
                         "from rank 0 ---> HINT: %s", what, differ > 1 ? "s" : "", list, more, differ > 1 ? "" : "s",
                         hint);
}

gml_status gml_agree_config(gml_comm *world, const Gml__RunConfig *cfg, const char *config_path) {
    if (gml_comm_size(world) == 1) return GML_OK;
    size_t n = gml__run_config__get_packed_size(cfg);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    gml__run_config__pack(cfg, buf);
    char what[4200];
    snprintf(what, sizeof what, "the configuration (%s and the key=value overrides)", config_path);
    gml_status st = gml_agree_bytes(world, what, buf, n,
                                    "start every rank with the same config file and overrides (a copy of the file "
                                    "on a node-local disk may differ; `gml-dist --print-config` shows what a rank "
                                    "reads)");
    free(buf);
    return st;
}

/* The facts of a data file that every rank must share. */
typedef struct {
    int32_t vocab, kind;
    uint64_t tokens[2];
    uint32_t head_crc[2]; /* of the first HEAD_TOKENS tokens of each split */
    uint8_t id_to_byte[256];
} data_facts;

#define HEAD_TOKENS 65536

gml_status gml_agree_dataset(gml_comm *world, gml_dataset *ds) {
    if (gml_comm_size(world) == 1) return GML_OK;
    data_facts f;
    memset(&f, 0, sizeof f);
    const gml_tokenizer *tok = gml_dataset_tokenizer(ds);
    f.vocab = gml_dataset_vocab_size(ds);
    f.kind = (int32_t)tok->kind;
    memcpy(f.id_to_byte, tok->id_to_byte, sizeof f.id_to_byte);
    int32_t *head = malloc(HEAD_TOKENS * sizeof *head);
    if (!head) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    const gml_split splits[2] = {GML_SPLIT_TRAIN, GML_SPLIT_VAL};
    for (int i = 0; i < 2; i++) {
        f.tokens[i] = gml_dataset_num_tokens(ds, splits[i]);
        size_t n = f.tokens[i] < HEAD_TOKENS ? (size_t)f.tokens[i] : HEAD_TOKENS;
        gml_status st = n ? gml_dataset_read(ds, splits[i], 0, n, head) : GML_OK;
        if (st != GML_OK) {
            free(head);
            return st;
        }
        f.head_crc[i] = gml_crc32c(head, n * sizeof *head);
    }
    free(head);
    char what[4200];
    snprintf(what, sizeof what, "the data file %s (tokenizer, vocabulary, split sizes or first tokens)",
             gml_dataset_path(ds));
    return gml_agree_bytes(world, what, &f, sizeof f,
                           "every rank must read the same data file (a copy on a node-local disk may be stale; "
                           "compare with `sha256sum` on each host)");
}
