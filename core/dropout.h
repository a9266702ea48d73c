/* dropout.h — the dropout mask, shared by the CPU and the CUDA backend so
 * both draw exactly the same mask (DESIGN.md idea 3: one contract, tested by
 * comparing the two).
 *
 * The mask is a pure function of (key, element index): no state, no stored
 * bits. Element i is kept iff gml_dropout_bits(key, i) >= threshold, where
 * threshold = gml_dropout_threshold(p) = floor(p * 2^32); kept elements are
 * scaled by 1 / (1 - p). Backward applies the same mask with the same key to
 * the gradient, so nothing is saved between forward and backward. The key of
 * one dropout site in one micro-step comes from gml_dropout_site_key(step
 * key, site): the training loop derives the step key from (seed, step,
 * micro-step), so a resumed run draws the same masks.
 * Header-only (static inline); usable from C11 and from CUDA device code.
 */
#ifndef GML_DROPOUT_H
#define GML_DROPOUT_H

#include <stdint.h>

#ifdef __CUDACC__
#define GML_HD __host__ __device__
#else
#define GML_HD
#endif

/* splitmix64's finaliser: a bijective 64-bit mix with full avalanche. */
GML_HD static inline uint64_t gml_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* 32 uniform bits for element i under key. */
GML_HD static inline uint32_t gml_dropout_bits(uint64_t key, uint64_t i) {
    return (uint32_t)(gml_mix64(key + (i + 1) * 0x9e3779b97f4a7c15ULL) >> 32);
}

/* Keep threshold for drop probability p in [0, 1). */
static inline uint32_t gml_dropout_threshold(float p) {
    double t = (double)p * 4294967296.0;
    return t <= 0.0 ? 0u : t >= 4294967295.0 ? 4294967295u : (uint32_t)t;
}

/* The key under which element i is what element first + i is under `key`:
 * gml_dropout_bits(gml_dropout_offset_key(key, first), i) ==
 * gml_dropout_bits(key, first + i). A rank whose micro-batch starts at row r
 * of the global batch uses first = r * T * C, so every layout draws the same
 * mask for the same global element. */
static inline uint64_t gml_dropout_offset_key(uint64_t key, uint64_t first) {
    return key + first * 0x9e3779b97f4a7c15ULL;
}

/* Key of dropout site `site` (a layer-local constant) under a step key. */
static inline uint64_t gml_dropout_site_key(uint64_t step_key, uint64_t site) {
    return gml_mix64(step_key ^ gml_mix64(site + 0x44524f50ULL /* "DROP" */));
}

#endif
