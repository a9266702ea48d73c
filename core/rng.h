/* rng.h — the one random number generator of gml-dist (PCG32, O'Neill),
 * with independent streams derived from (seed, stream id).
 *
 * Everything random — weight init, data order, sampling — draws from an
 * explicitly seeded gml_rng so runs are reproducible and the state can be
 * saved in checkpoints (it is two uint64 values). Not for: cryptography.
 */
#ifndef GML_RNG_H
#define GML_RNG_H

#include <math.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint64_t state;
    uint64_t inc; /* stream selector, always odd */
} gml_rng;

static inline uint32_t gml_rng_u32(gml_rng *r) {
    uint64_t old = r->state;
    r->state = old * 6364136223846793005ULL + r->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31u));
}

/* Seed `r` for stream `stream` of `seed`; distinct streams are independent. */
static inline void gml_rng_init(gml_rng *r, uint64_t seed, uint64_t stream) {
    r->state = 0u;
    r->inc = (stream << 1u) | 1u;
    gml_rng_u32(r);
    r->state += seed;
    gml_rng_u32(r);
}

/* Move `r` forward by `delta` draws of gml_rng_u32 in O(log delta) steps
 * (the LCG's jump-ahead: composing x -> a x + c with itself by squaring), so
 * pieces of one stream can be drawn in parallel and still give the values of
 * one sequential draw. */
static inline void gml_rng_advance(gml_rng *r, uint64_t delta) {
    uint64_t mult = 6364136223846793005ULL, plus = r->inc, acc_mult = 1u, acc_plus = 0u;
    while (delta > 0) {
        if (delta & 1u) {
            acc_mult *= mult;
            acc_plus = acc_plus * mult + plus;
        }
        plus = (mult + 1u) * plus;
        mult *= mult;
        delta >>= 1u;
    }
    r->state = acc_mult * r->state + acc_plus;
}

static inline uint64_t gml_rng_u64(gml_rng *r) {
    uint64_t hi = gml_rng_u32(r);
    return (hi << 32) | gml_rng_u32(r);
}

/* Uniform integer in [0, n), n >= 1, without modulo bias. */
static inline uint64_t gml_rng_below(gml_rng *r, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
        x = gml_rng_u64(r);
    } while (x >= limit);
    return x % n;
}

/* Uniform float in [0, 1) with 24 random bits. */
static inline float gml_rng_uniform(gml_rng *r) { return (float)(gml_rng_u32(r) >> 8) * (1.0f / 16777216.0f); }

/* Standard normal (Box-Muller, one value per call; deterministic). Each call
 * draws exactly GML_RNG_NORMAL_DRAWS u32 values (no rejection), which is what
 * lets gml_rng_advance start a piece of a normal stream anywhere. */
#define GML_RNG_NORMAL_DRAWS 4u
static inline double gml_rng_normal(gml_rng *r) {
    double u1 = ((double)(gml_rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740993.0); /* (0,1] */
    double u2 = (double)(gml_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);         /* [0,1) */
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#ifdef __cplusplus
}
#endif
#endif
