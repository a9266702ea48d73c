/* test_zero_one_rank.c — ZeRO stages 1-3 on a one-rank CPU group against
 * stage 0 (tests/zero_one_rank.h): the same bits without clipping, and a
 * mid-run restore into each stage.
 * test_gpu_dp runs the same on CUDA + NCCL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "zero_one_rank.h"

static void test_zero_stages_cpu(void **state) {
    (void)state;
    zero_stages_on_one_rank("cpu");
}

static void test_zero_restore_cpu(void **state) {
    (void)state;
    zero_restore_on_one_rank("cpu");
}

int main(void) {
    if (gml_comm_init(NULL, NULL, NULL, NULL) != GML_OK) {
        fprintf(stderr, "test_zero_one_rank: MPI did not start: %s\n", gml_error_message());
        return 1;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_zero_stages_cpu),
                                       cmocka_unit_test(test_zero_restore_cpu)};
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    gml_comm_finalize();
    return failed;
}
