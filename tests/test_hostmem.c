/* test_hostmem.c — gml_host_alloc_touched returns memory that is already
 * resident (mincore: every page in core before anything else touches it),
 * zeroed, of the size asked for, on any OpenMP thread count. */
#define _DEFAULT_SOURCE /* mincore */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <omp.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/hostmem.h"

static size_t resident_pages(const void *p, size_t bytes, size_t *pages) {
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)p / pg * pg, hi = ((uintptr_t)p + bytes + pg - 1) / pg * pg;
    *pages = (hi - lo) / pg;
    unsigned char *v = malloc(*pages);
    assert_non_null(v);
    assert_int_equal(mincore((void *)lo, hi - lo, v), 0);
    size_t in = 0;
    for (size_t i = 0; i < *pages; i++) in += v[i] & 1u;
    free(v);
    return in;
}

static void test_resident_and_zeroed(void **state) {
    (void)state;
    const size_t sizes[] = {((size_t)37 << 20) + 3, (size_t)4096 * 5 + 1};
    const int threads[] = {1, 3};
    for (size_t s = 0; s < 2; s++) {
        omp_set_num_threads(threads[s]);
        unsigned char *p = gml_host_alloc_touched(sizes[s]);
        assert_non_null(p);
        size_t pages = 0, in = resident_pages(p, sizes[s], &pages);
        if (in != pages) fail_msg("%zu of %zu pages resident after the call", in, pages);
        for (size_t i = 0; i < sizes[s]; i += 4093) assert_int_equal(p[i], 0);
        assert_int_equal(p[sizes[s] - 1], 0);
        p[sizes[s] - 1] = 1;
        free(p);
    }
    void *z = gml_host_alloc_touched(0);
    assert_non_null(z);
    free(z);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_resident_and_zeroed)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
