/* params.h — the one sharding spec per parameter (DESIGN.md idea 1).
 *
 * Every parameter is registered once: its name ("blocks.3.mlp.fc.weight"),
 * global shape, placement on the mesh (replicated, or split along one dim over
 * the tp axis), whether weight decay applies, how it is initialised, and its
 * offset into the flat per-rank buffers (master weights, compute copy,
 * gradients, optimizer moments all share these offsets). Tensor-parallel
 * layers, ZeRO, clipping and checkpoints read this registry; none keeps its
 * own idea of who owns what. Not for: storage (core/gpt.c owns the buffers).
 */
#ifndef GML_PARAMS_H
#define GML_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GML_PARAM_NAME_MAX 96
#define GML_PARAM_MAX_DIMS 4

typedef enum {
    GML_PLACE_REPLICATED = 0, /* every rank of the tp axis holds all of it */
    GML_PLACE_SPLIT = 1       /* split along split_dim over the tp axis */
} gml_placement;

typedef enum {
    GML_INIT_NORMAL = 0,   /* N(0, std^2) */
    GML_INIT_CONSTANT = 1  /* value */
} gml_init_kind;

typedef struct {
    char name[GML_PARAM_NAME_MAX];
    int ndim;
    int64_t shape[GML_PARAM_MAX_DIMS];  /* global logical shape */
    gml_placement placement;
    int split_dim;                      /* with GML_PLACE_SPLIT */
    int decay;                          /* 1: AdamW weight decay applies */
    gml_init_kind init;
    float init_value;                   /* std for NORMAL, value for CONSTANT */
    int64_t valid_rows;                 /* rows [valid_rows, shape[0]) are padding kept at 0; -1: none */
    size_t offset;                      /* elements, into the flat local buffers */
    size_t numel;                       /* local elements on this rank */
} gml_param_spec;

typedef struct {
    gml_param_spec *specs; /* owned; freed by gml_params_free */
    int n, cap;
    size_t total;          /* local elements over all parameters */
} gml_param_registry;

void gml_params_init(gml_param_registry *reg);
void gml_params_free(gml_param_registry *reg);
/* Register a replicated parameter of global shape (ndim dims); returns its
 * index in *index (may be NULL). Names must be unique. */
gml_status gml_params_add(gml_param_registry *reg, const char *name, int ndim, const int64_t *shape, int decay,
                          gml_init_kind init, float init_value, int *index);
/* Index of the parameter called `name`, or -1. */
int gml_params_find(const gml_param_registry *reg, const char *name);
/* Fill host buffer `out` (reg->total f32) with initial values drawn from
 * `seed`; each parameter draws from its own RNG stream (its index), so the
 * values do not depend on the layout. The draw runs in pieces on OpenMP's
 * threads (gml_rng_advance starts each piece where a sequential draw would
 * be), so the values do not depend on the thread count either. */
void gml_params_init_values(const gml_param_registry *reg, uint64_t seed, float *out);

#ifdef __cplusplus
}
#endif
#endif
