/* weights.h — model weights as plain HDF5: one fp32 dataset per parameter,
 * named by its registry name, holding the global logical tensor.
 *
 * This is the layout-free format of DESIGN.md idea 4 for weights alone (what
 * `train` leaves in out_dir/model.h5, what `sample` reads, and what tests hand
 * to PyTorch). Full checkpoints with optimizer state, RNG and data position
 * build on it in checkpoint/. Root attributes: format = "gml-weights",
 * format_version = 1, and the model shape (n_layer, n_head, n_embd,
 * block_size, vocab_size, padded_vocab_size), checked on load.
 */
#ifndef GML_WEIGHTS_H
#define GML_WEIGHTS_H

#include "core/gpt.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GML_WEIGHTS_FORMAT "gml-weights"
#define GML_WEIGHTS_VERSION 1

/* Write the model's master weights to `path` (via path.tmp + fsync + rename).
 * With extra_grads != 0 also writes the current gradients under "grads/". */
gml_status gml_weights_save(gml_gpt *m, const char *path, int extra_grads);
/* Load weights saved by gml_weights_save into `m`; the model shape must
 * match (GML_ERR_BAD_INPUT names the file and the first mismatch). */
gml_status gml_weights_load(gml_gpt *m, const char *path);
/* Read just the model shape stored in a weights file. */
gml_status gml_weights_read_config(const char *path, gml_gpt_config *cfg);

#ifdef __cplusplus
}
#endif
#endif
