/* optim.h — AdamW over a model's parameters, the learning-rate schedule, and
 * global-norm gradient clipping.
 *
 * The optimizer owns the fp32 Adam moments (m, v) of a range [lo, hi) of the
 * flat parameter buffer (all of it, or this rank's ZeRO shard), laid out
 * with the registry's offsets minus lo; weight decay applies to the
 * parameters the registry marks `decay` (2-D weights), also to the part of
 * one that falls in the range. Not for: gradient reduction across ranks
 * (parallel/), checkpoint I/O (checkpoint/).
 */
#ifndef GML_OPTIM_H
#define GML_OPTIM_H

#include "core/gpt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { GML_SCHED_COSINE = 0, GML_SCHED_LINEAR = 1, GML_SCHED_CONSTANT = 2 } gml_sched_kind;

typedef struct {
    gml_sched_kind kind;
    double lr;           /* peak */
    double min_lr_ratio; /* final lr = lr * min_lr_ratio */
    int warmup_steps;
    int total_steps;
} gml_lr_schedule;

/* LR for step `step` (0-based): linear warmup from lr/warmup to lr over
 * warmup_steps, then cosine / linear decay to lr*min_lr_ratio at total_steps. */
double gml_lr_at(const gml_lr_schedule *s, int step);
/* Parse "cosine" | "linear" | "constant"; GML_ERR_BAD_INPUT otherwise. */
gml_status gml_sched_parse(const char *name, gml_sched_kind *out);

typedef struct {
    double beta1, beta2, eps, weight_decay;
    double grad_clip; /* global norm; 0: off */
} gml_adamw_config;

typedef struct gml_adamw gml_adamw;

/* Moments for all of `m`'s parameters on its backend, zeroed. Owned by the
 * caller: gml_adamw_destroy. */
gml_status gml_adamw_create(gml_gpt *m, const gml_adamw_config *cfg, gml_adamw **out);
/* The same for the flat range [lo, hi) only (lo <= hi <= num_params). */
gml_status gml_adamw_create_range(gml_gpt *m, const gml_adamw_config *cfg, size_t lo, size_t hi, gml_adamw **out);
/* The same for a range whose master weights live in a caller's shard
 * buffer instead of the model's full buffers (ZeRO-3): param[i] is flat
 * element lo + i (f32, device), param_act[i] its compute copy (act; NULL on
 * an f32 backend, where param is what the model computes with). The buffers
 * are borrowed and must outlive the optimizer. */
gml_status gml_adamw_create_shard(gml_gpt *m, const gml_adamw_config *cfg, size_t lo, size_t hi, float *param,
                                  void *param_act, gml_adamw **out);
/* Sum of squares of the range's gradients g (hi - lo values, device). */
gml_status gml_adamw_range_sumsq(gml_adamw *opt, const float *g, double *sumsq);
/* One AdamW step of the range with gradients g (hi - lo values, device),
 * given the global gradient norm (for clipping): updates the master weights
 * of the range and their compute copy (the model's, or the shard buffers). */
gml_status gml_adamw_step_range(gml_adamw *opt, double lr, const float *g, double global_norm);
/* The same step in parts, so a caller can send each part while the next is
 * updated (ZeRO-1/2's parameter gather): set_parts cuts the range into
 * `parts` of part_len elements (the last may be shorter or empty; device
 * tables, built once per cut); begin_step checks the norm, fixes the clip
 * scale and counts the step; update_part(j) then updates part j with
 * gradients g (hi - lo values, the whole range). Every part once per step:
 * the same bits as gml_adamw_step_range. */
gml_status gml_adamw_set_parts(gml_adamw *opt, int parts, size_t part_len);
gml_status gml_adamw_begin_step(gml_adamw *opt, double lr, double global_norm);
gml_status gml_adamw_update_part(gml_adamw *opt, const float *g, int j);
void gml_adamw_destroy(gml_adamw *opt);

/* Global L2 norm of the gradients (synchronises). */
gml_status gml_grad_norm(gml_gpt *m, float *scratch_dev, double *norm);

/* One AdamW step of an optimizer over all parameters (gml_adamw_create),
 * with the model's gradients: computes the global gradient norm
 * (returned before clipping in *grad_norm), clips to grad_clip, updates the
 * master weights and their compute copy. Non-finite norm -> GML_ERR_NUMERIC
 * and no update. */
gml_status gml_adamw_step(gml_adamw *opt, double lr, double *grad_norm);
int gml_adamw_t(const gml_adamw *opt);     /* steps taken */
void gml_adamw_set_t(gml_adamw *opt, int t); /* resume: the restored step count */
void gml_adamw_range(const gml_adamw *opt, size_t *lo, size_t *hi);
float *gml_adamw_m(gml_adamw *opt);         /* (hi - lo) device f32 */
float *gml_adamw_v(gml_adamw *opt);         /* (hi - lo) device f32 */

#ifdef __cplusplus
}
#endif
#endif
