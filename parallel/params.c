/* params.c — the parameter registry: registration, lookup, initial values. */
#include "parallel/params.h"

#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

void gml_params_init(gml_param_registry *reg) { memset(reg, 0, sizeof *reg); }

void gml_params_free(gml_param_registry *reg) {
    free(reg->specs);
    memset(reg, 0, sizeof *reg);
}

int gml_params_find(const gml_param_registry *reg, const char *name) {
    for (int i = 0; i < reg->n; i++)
        if (strcmp(reg->specs[i].name, name) == 0) return i;
    return -1;
}

gml_status gml_params_add(gml_param_registry *reg, const char *name, int ndim, const int64_t *shape, int decay,
                          gml_init_kind init, float init_value, int *index) {
    if (ndim < 1 || ndim > GML_PARAM_MAX_DIMS)
        return gml_error_set(GML_ERR_INVALID_ARG, "parameter '%s': %d dims (1..%d)", name, ndim,
                             GML_PARAM_MAX_DIMS);
    if (strlen(name) >= GML_PARAM_NAME_MAX)
        return gml_error_set(GML_ERR_INVALID_ARG, "parameter name too long: '%s'", name);
    if (gml_params_find(reg, name) >= 0)
        return gml_error_set(GML_ERR_INVALID_ARG, "parameter '%s' registered twice", name);
    if (reg->n == reg->cap) {
        int cap = reg->cap ? reg->cap * 2 : 64;
        gml_param_spec *s = realloc(reg->specs, (size_t)cap * sizeof *s);
        if (!s) return gml_error_set(GML_ERR_NOMEM, "parameter registry: out of host memory");
        reg->specs = s;
        reg->cap = cap;
    }
    gml_param_spec *p = &reg->specs[reg->n];
    memset(p, 0, sizeof *p);
    strcpy(p->name, name);
    p->ndim = ndim;
    size_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 1) return gml_error_set(GML_ERR_INVALID_ARG, "parameter '%s': dim %d is %lld", name, d,
                                               (long long)shape[d]);
        p->shape[d] = shape[d];
        numel *= (size_t)shape[d];
    }
    p->placement = GML_PLACE_REPLICATED;
    p->split_dim = -1;
    p->decay = decay;
    p->init = init;
    p->init_value = init_value;
    p->valid_rows = -1;
    p->offset = reg->total;
    p->numel = numel;
    reg->total += numel;
    if (index) *index = reg->n;
    reg->n++;
    return GML_OK;
}

void gml_params_init_values(const gml_param_registry *reg, uint64_t seed, float *out) {
    for (int i = 0; i < reg->n; i++) {
        const gml_param_spec *p = &reg->specs[i];
        float *dst = out + p->offset;
        if (p->init == GML_INIT_CONSTANT) {
            for (size_t j = 0; j < p->numel; j++) dst[j] = p->init_value;
            continue;
        }
        gml_rng r;
        gml_rng_init(&r, seed, 0x9000u + (uint64_t)i);
        size_t row = p->ndim > 1 ? p->numel / (size_t)p->shape[0] : p->numel;
        size_t valid = p->valid_rows >= 0 ? (size_t)p->valid_rows * row : p->numel;
        for (size_t j = 0; j < p->numel; j++)
            dst[j] = j < valid ? (float)(gml_rng_normal(&r) * p->init_value) : 0.0f;
    }
}
