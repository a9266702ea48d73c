/* agree.h — every rank of a job runs the same job: what each rank read on
 * its own (the config file and its overrides, the data file) is compared
 * across the world before anything depends on it. Ranks that disagree
 * would otherwise train different models in one job without a word (a
 * different train.seed: different initial weights per replica) or hang in
 * a collective of mismatched sizes (a different model shape).
 *
 * A difference is bad input (GML_ERR_BAD_INPUT, exit code 2) on every rank,
 * naming the ranks that differ from rank 0.
 * Not for: a checkpoint's layout against the job (checkpoint/).
 */
#ifndef GML_AGREE_H
#define GML_AGREE_H

#include <stddef.h>

#include "comm/comm.h"
#include "core/dataset.h"
#include "launcher/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Collective over `world`: GML_OK if every rank passed the same n bytes
 * (compared by CRC-32C, with n), else GML_ERR_BAD_INPUT on every rank:
 * "WHAT is not the same on every rank of this job: ranks 1, 3 differ from
 * rank 0 ---> HINT: HINT". */
gml_status gml_agree_bytes(gml_comm *world, const char *what, const void *bytes, size_t n, const char *hint);

/* The run config, as every rank parsed it (file and key=value overrides). */
gml_status gml_agree_config(gml_comm *world, const Gml__RunConfig *cfg, const char *config_path);

/* The data file's tokenizer, vocabulary, split sizes and first tokens (up
 * to 64 Ki of each split), as every rank reads it. */
gml_status gml_agree_dataset(gml_comm *world, gml_dataset *ds);

#ifdef __cplusplus
}
#endif
#endif
