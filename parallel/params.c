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

/* Values per piece of a parameter's stream: one piece is one task. 64k
 * normals are ~2 ms of one core; a jump-ahead costs 64 multiplications. */
#define INIT_PIECE ((size_t)1 << 16)

/* Piece `j` of parameter `p`: values [j * INIT_PIECE, ...) of its stream,
 * exactly the values a sequential draw from the stream's start gives them. */
static void init_piece(const gml_param_spec *p, int index, uint64_t seed, size_t j, float *out) {
    float *dst = out + p->offset;
    size_t lo = j * INIT_PIECE, hi = lo + INIT_PIECE < p->numel ? lo + INIT_PIECE : p->numel;
    if (p->init == GML_INIT_CONSTANT) {
        for (size_t k = lo; k < hi; k++) dst[k] = p->init_value;
        return;
    }
    size_t row = p->ndim > 1 ? p->numel / (size_t)p->shape[0] : p->numel;
    size_t valid = p->valid_rows >= 0 ? (size_t)p->valid_rows * row : p->numel;
    gml_rng r;
    gml_rng_init(&r, seed, 0x9000u + (uint64_t)index);
    gml_rng_advance(&r, (uint64_t)lo * GML_RNG_NORMAL_DRAWS);
    for (size_t k = lo; k < hi; k++) dst[k] = k < valid ? (float)(gml_rng_normal(&r) * p->init_value) : 0.0f;
}

void gml_params_init_values(const gml_param_registry *reg, uint64_t seed, float *out) {
    /* first[i]: parameter i's first piece in the numbering of all pieces. */
    size_t *first = malloc(((size_t)reg->n + 1) * sizeof *first);
    if (!first) { /* no room for the table: the same values, one core */
        for (int i = 0; i < reg->n; i++)
            for (size_t j = 0; j * INIT_PIECE < reg->specs[i].numel; j++) init_piece(&reg->specs[i], i, seed, j, out);
        return;
    }
    first[0] = 0;
    for (int i = 0; i < reg->n; i++) first[i + 1] = first[i] + (reg->specs[i].numel + INIT_PIECE - 1) / INIT_PIECE;
    long pieces = (long)first[reg->n];
#pragma omp parallel for schedule(dynamic, 4)
    for (long t = 0; t < pieces; t++) {
        int a = 0, b = reg->n - 1; /* the largest i with first[i] <= t: t's parameter */
        while (a < b) {
            int mid = (a + b + 1) / 2;
            if (first[mid] <= (size_t)t) a = mid;
            else b = mid - 1;
        }
        init_piece(&reg->specs[a], a, seed, (size_t)t - first[a], out);
    }
    free(first);
}
