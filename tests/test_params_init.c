/* test_params_init.c — initial weights drawn in parallel pieces are the
 * values of one sequential draw per parameter, for any thread count.
 *
 * The reference below is the definition itself: parameter i draws from
 * stream 0x9000 + i of the seed, one gml_rng_normal per value, in order,
 * scaled by its std; padding rows are 0; constants are their value. The
 * parameters cross the 64k-value pieces of parallel/params.c in the middle of
 * a piece, at an exact boundary and inside the padding rows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <omp.h>

#include "core/rng.h"
#include "parallel/params.h"

static void test_advance_is_that_many_draws(void **state) {
    (void)state;
    const uint64_t deltas[] = {0, 1, 2, 3, 64, 65535, 65536, 1000003};
    for (size_t d = 0; d < sizeof deltas / sizeof deltas[0]; d++) {
        gml_rng a, b;
        gml_rng_init(&a, 1337, 0x9000u + d);
        b = a;
        for (uint64_t k = 0; k < deltas[d]; k++) (void)gml_rng_u32(&a);
        gml_rng_advance(&b, deltas[d]);
        assert_int_equal(a.state, b.state);
        assert_int_equal(a.inc, b.inc);
        assert_int_equal(gml_rng_u32(&a), gml_rng_u32(&b));
    }
}

static void test_normal_draws_four(void **state) {
    (void)state;
    gml_rng a, b;
    gml_rng_init(&a, 7, 3);
    b = a;
    (void)gml_rng_normal(&a);
    for (unsigned k = 0; k < GML_RNG_NORMAL_DRAWS; k++) (void)gml_rng_u32(&b);
    assert_int_equal(a.state, b.state);
}

static void reference(const gml_param_registry *reg, uint64_t seed, float *out) {
    for (int i = 0; i < reg->n; i++) {
        const gml_param_spec *p = &reg->specs[i];
        gml_rng r;
        gml_rng_init(&r, seed, 0x9000u + (uint64_t)i);
        size_t row = p->ndim > 1 ? p->numel / (size_t)p->shape[0] : p->numel;
        for (size_t j = 0; j < p->numel; j++) {
            if (p->init == GML_INIT_CONSTANT) out[p->offset + j] = p->init_value;
            else if (p->valid_rows >= 0 && j >= (size_t)p->valid_rows * row) out[p->offset + j] = 0.0f;
            else out[p->offset + j] = (float)(gml_rng_normal(&r) * p->init_value);
        }
    }
}

static void test_pieces_equal_sequential_draw(void **state) {
    (void)state;
    gml_param_registry reg;
    gml_params_init(&reg);
    const int64_t wte[2] = {7, 30001};  /* 210007 values, rows 5-6 padding: pieces end mid-row */
    const int64_t ln[1] = {70000};
    const int64_t exact[2] = {2, 65536}; /* ends on a piece boundary */
    const int64_t small[1] = {3};
    int iw = -1;
    assert_int_equal(gml_params_add(&reg, "wte.weight", 2, wte, 1, GML_INIT_NORMAL, 0.02f, &iw), GML_OK);
    reg.specs[iw].valid_rows = 5;
    assert_int_equal(gml_params_add(&reg, "ln.weight", 1, ln, 0, GML_INIT_CONSTANT, 1.0f, NULL), GML_OK);
    assert_int_equal(gml_params_add(&reg, "fc.weight", 2, exact, 1, GML_INIT_NORMAL, 0.5f, NULL), GML_OK);
    assert_int_equal(gml_params_add(&reg, "fc.bias", 1, small, 0, GML_INIT_NORMAL, 1.0f, NULL), GML_OK);
    float *want = malloc(reg.total * sizeof *want), *got = malloc(reg.total * sizeof *got);
    assert_non_null(want);
    assert_non_null(got);
    reference(&reg, 42, want);
    /* the padding rows are zeros and the rest is not: the reference is not degenerate */
    assert_true(want[reg.specs[iw].offset + 5 * 30001] == 0.0f && want[reg.specs[iw].offset + 5 * 30001 - 1] != 0.0f);
    const int threads[] = {1, 2, 3, 8};
    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
        omp_set_num_threads(threads[t]);
        memset(got, 0xff, reg.total * sizeof *got);
        gml_params_init_values(&reg, 42, got);
        assert_memory_equal(got, want, reg.total * sizeof *got);
    }
    /* another seed gives other values */
    gml_params_init_values(&reg, 43, got);
    assert_memory_not_equal(got, want, reg.total * sizeof *got);
    free(want);
    free(got);
    gml_params_free(&reg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_advance_is_that_many_draws),
        cmocka_unit_test(test_normal_draws_four),
        cmocka_unit_test(test_pieces_equal_sequential_draw),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
