/* loader.c — windows of T+1 tokens in (seed, epoch)-determined order, read
 * one hyperslab per window from the token dataset. See loader.h for the
 * order and the position it keeps. Not for: the file format (dataset.c). */
#include "core/loader.h"

#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

struct gml_loader {
    gml_dataset *ds; /* borrowed */
    gml_split split;
    int B, T, shuffle, rank, world;
    uint64_t seed;
    uint64_t ntok;         /* tokens in the split, >= T+1 */
    uint64_t epoch, index; /* next global sequence */
    /* cached visiting order of one epoch */
    uint64_t perm_epoch; /* which epoch perm/offset belong to; UINT64_MAX: none */
    uint64_t perm_offset;
    uint64_t perm_n;
    uint32_t *perm; /* (n windows of perm_epoch) window ids; NULL when not shuffling */
    size_t perm_cap;
    int32_t *window; /* (T+1) tokens */
    /* gml_loader_prefetch: the batch at (epoch, index), read ahead; the
     * position after it */
    int32_t *ahead_in, *ahead_tg; /* (B,T) each */
    int ahead;
    uint64_t ahead_epoch, ahead_index;
};

/* Offset of the first window of `epoch` and the rng positioned after it. */
static uint64_t epoch_offset(const gml_loader *ld, uint64_t epoch, gml_rng *r) {
    gml_rng_init(r, ld->seed, GML_LOADER_STREAM + epoch);
    if (!ld->shuffle) return 0;
    uint64_t room = ld->ntok - (uint64_t)ld->T; /* >= 1: offsets that leave one full window */
    uint64_t span = room < (uint64_t)ld->T ? room : (uint64_t)ld->T;
    return gml_rng_below(r, span);
}

uint64_t gml_loader_epoch_windows(const gml_loader *ld, uint64_t epoch) {
    gml_rng r;
    uint64_t off = epoch_offset(ld, epoch, &r);
    return (ld->ntok - 1 - off) / (uint64_t)ld->T;
}

/* Make perm/offset describe `epoch`. */
static gml_status load_epoch(gml_loader *ld, uint64_t epoch) {
    if (ld->perm_epoch == epoch) return GML_OK;
    gml_rng r;
    uint64_t off = epoch_offset(ld, epoch, &r);
    uint64_t n = (ld->ntok - 1 - off) / (uint64_t)ld->T;
    if (ld->shuffle) {
        if (n > ld->perm_cap) {
            uint32_t *p = realloc(ld->perm, (size_t)n * sizeof *p);
            if (!p)
                return gml_error_set(GML_ERR_NOMEM, "data loader: out of host memory for %llu window ids",
                                     (unsigned long long)n);
            ld->perm = p;
            ld->perm_cap = (size_t)n;
        }
        for (uint64_t j = 0; j < n; j++)
            ld->perm[j] = (uint32_t)j;
        for (uint64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
            uint64_t k = gml_rng_below(&r, i + 1);
            uint32_t t = ld->perm[i];
            ld->perm[i] = ld->perm[k];
            ld->perm[k] = t;
        }
    }
    ld->perm_epoch = epoch;
    ld->perm_offset = off;
    ld->perm_n = n;
    return GML_OK;
}

/* Moves (epoch, index) forward by k global sequences. */
static gml_status advance(gml_loader *ld, uint64_t *epoch, uint64_t *index, uint64_t k) {
    for (;;) {
        GML_CHECK(load_epoch(ld, *epoch));
        uint64_t left = ld->perm_n - *index;
        if (k < left) {
            *index += k;
            return GML_OK;
        }
        k -= left;
        (*epoch)++;
        *index = 0;
    }
}

gml_status gml_loader_create(gml_dataset *ds, gml_split split, int B, int T, uint64_t seed, int shuffle, int rank,
                             int world, gml_loader **out) {
    *out = NULL;
    if (!ds || B < 1 || T < 1 || world < 1 || rank < 0 || rank >= world ||
        (split != GML_SPLIT_TRAIN && split != GML_SPLIT_VAL))
        return gml_error_set(GML_ERR_INVALID_ARG, "gml_loader_create: B=%d T=%d rank=%d world=%d split=%d", B, T, rank,
                             world, (int)split);
    uint64_t ntok = gml_dataset_num_tokens(ds, split);
    if (ntok < (uint64_t)T + 1)
        return gml_error_set(GML_ERR_BAD_INPUT,
                             "data file '%s': split '%s' has %llu tokens, fewer than seq_len+1 = %d needed for one "
                             "window\n---> HINT: use a shorter data.seq_len / model.block_size, or more text",
                             gml_dataset_path(ds), gml_dataset_split_name(split), (unsigned long long)ntok, T + 1);
    if ((ntok - 1) / (uint64_t)T > UINT32_MAX)
        return gml_error_set(GML_ERR_UNSUPPORTED, "data file '%s': split '%s' has more than 2^32 windows of %d",
                             gml_dataset_path(ds), gml_dataset_split_name(split), T);
    gml_loader *ld = calloc(1, sizeof *ld);
    if (!ld) return gml_error_set(GML_ERR_NOMEM, "data loader: out of host memory");
    ld->ds = ds;
    ld->split = split;
    ld->B = B;
    ld->T = T;
    ld->seed = seed;
    ld->shuffle = shuffle ? 1 : 0;
    ld->rank = rank;
    ld->world = world;
    ld->ntok = ntok;
    ld->perm_epoch = UINT64_MAX;
    ld->window = malloc(((size_t)T + 1) * sizeof *ld->window);
    if (!ld->window) {
        free(ld);
        return gml_error_set(GML_ERR_NOMEM, "data loader: out of host memory");
    }
    gml_status st = load_epoch(ld, 0);
    if (st != GML_OK) {
        gml_loader_destroy(ld);
        return st;
    }
    *out = ld;
    return GML_OK;
}

/* This rank's batch of the global step at (*epoch, *index); moves the
 * position past the whole global step (all ranks). */
static gml_status read_batch(gml_loader *ld, uint64_t *epoch, uint64_t *index, int32_t *inputs, int32_t *targets) {
    const int B = ld->B, T = ld->T;
    uint64_t e = *epoch, i = *index;
    GML_CHECK(advance(ld, &e, &i, (uint64_t)ld->rank * (uint64_t)B)); /* skip lower ranks' sequences */
    for (int b = 0; b < B; b++) {
        if (b > 0) GML_CHECK(advance(ld, &e, &i, 1));
        GML_CHECK(load_epoch(ld, e));
        uint64_t j = ld->shuffle ? ld->perm[i] : i;
        uint64_t start = ld->perm_offset + j * (uint64_t)T;
        GML_CHECK(gml_dataset_read(ld->ds, ld->split, start, (size_t)T + 1, ld->window));
        for (int t = 0; t < T; t++) {
            inputs[(size_t)b * T + t] = ld->window[t];
            targets[(size_t)b * T + t] = ld->window[t + 1];
        }
    }
    return advance(ld, epoch, index, (uint64_t)B * (uint64_t)ld->world);
}

gml_status gml_loader_next(gml_loader *ld, int32_t *inputs, int32_t *targets) {
    if (ld->ahead) {
        size_t n = (size_t)ld->B * (size_t)ld->T;
        memcpy(inputs, ld->ahead_in, n * sizeof *inputs);
        memcpy(targets, ld->ahead_tg, n * sizeof *targets);
        ld->ahead = 0;
        ld->epoch = ld->ahead_epoch;
        ld->index = ld->ahead_index;
        return GML_OK;
    }
    uint64_t e = ld->epoch, i = ld->index;
    GML_CHECK(read_batch(ld, &e, &i, inputs, targets));
    ld->epoch = e;
    ld->index = i;
    return GML_OK;
}

gml_status gml_loader_prefetch(gml_loader *ld) {
    if (ld->ahead) return GML_OK;
    if (!ld->ahead_in) {
        size_t n = (size_t)ld->B * (size_t)ld->T;
        ld->ahead_in = malloc(n * sizeof *ld->ahead_in);
        ld->ahead_tg = malloc(n * sizeof *ld->ahead_tg);
        if (!ld->ahead_in || !ld->ahead_tg) return gml_error_set(GML_ERR_NOMEM, "data loader: out of host memory");
    }
    uint64_t e = ld->epoch, i = ld->index;
    GML_CHECK(read_batch(ld, &e, &i, ld->ahead_in, ld->ahead_tg));
    ld->ahead_epoch = e;
    ld->ahead_index = i;
    ld->ahead = 1;
    return GML_OK;
}

void gml_loader_position(const gml_loader *ld, uint64_t *epoch, uint64_t *index) {
    *epoch = ld->epoch;
    *index = ld->index;
}

gml_status gml_loader_seek(gml_loader *ld, uint64_t epoch, uint64_t index) {
    uint64_t n = gml_loader_epoch_windows(ld, epoch);
    if (index > n)
        return gml_error_set(GML_ERR_BAD_INPUT,
                             "data position (epoch %llu, index %llu) is past the %llu windows of that epoch of split "
                             "'%s' in '%s' (seq_len %d)\n---> HINT: resume with the same data file and seq_len",
                             (unsigned long long)epoch, (unsigned long long)index, (unsigned long long)n,
                             gml_dataset_split_name(ld->split), gml_dataset_path(ld->ds), ld->T);
    if (index == n) {
        epoch++;
        index = 0;
    }
    ld->epoch = epoch;
    ld->index = index;
    ld->ahead = 0;
    return GML_OK;
}

gml_status gml_loader_reset(gml_loader *ld) { return gml_loader_seek(ld, 0, 0); }

void gml_loader_destroy(gml_loader *ld) {
    if (!ld) return;
    free(ld->perm);
    free(ld->window);
    free(ld->ahead_in);
    free(ld->ahead_tg);
    free(ld);
}
