/* run.h — the launcher's commands: train and sample (prep lives in
 * launcher/prep.h, config parsing in launcher/config.h).
 *
 * Each returns a gml_status; launcher/main.c turns it into a message and an
 * exit code. Not for: anything a library caller would reuse (that goes in
 * core/).
 */
#ifndef GML_RUN_H
#define GML_RUN_H

#include "core/gpt.h"
#include "launcher/config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Train as `cfg` says: data, model, optimizer, logging, evaluation, samples,
 * checkpoints, and the final weights in out_dir/model.h5. resume: "none",
 * "auto" or a checkpoint path (checkpoint/ckpt.h). SIGTERM / SIGUSR1, or
 * the file out_dir/STOP (deleted once seen to), stop the run at the next
 * step boundary with a checkpoint: GML_PREEMPTED. */
gml_status gml_cmd_train(const Gml__RunConfig *cfg, const char *config_path, const char *resume);

/* `gml-dist sample CONFIG [--weights PATH] [--prompt TEXT] [--tokens N]
 *  [--temperature X] [--top-k K] [--seed S] [key=value ...]`; argv[0] is
 * "sample". */
gml_status gml_cmd_sample(int argc, char **argv);

/* The model shape a run config asks for, with the vocabulary of the dataset
 * (model.vocab_size 0 takes it; a smaller explicit one is an error). */
gml_status gml_run_model_config(const Gml__RunConfig *cfg, int data_vocab, gml_gpt_config *out);

#ifdef __cplusplus
}
#endif
#endif
