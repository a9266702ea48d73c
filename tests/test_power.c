/* test_power.c — core/power.h and launcher/powerlog.h where there may be no
 * GPU: the names of NVML's clock event reasons (the bit values are NVML's
 * documented nvmlClocksEventReason* constants, written out here), which of
 * them count as power or heat, and that a machine or device without readings
 * gives none, with a reason, instead of an error (the readings themselves:
 * test_gpu_power). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/power.h"
#include "launcher/powerlog.h"

static void test_reason_names(void **state) {
    (void)state;
    char buf[256];
    assert_int_equal(gml_power_reasons_str(0, buf, sizeof buf), strlen("none"));
    assert_string_equal(buf, "none");
    gml_power_reasons_str(0x4, buf, sizeof buf);
    assert_string_equal(buf, "power cap");
    gml_power_reasons_str(0x4 | 0x40, buf, sizeof buf);
    assert_string_equal(buf, "power cap, HW thermal");
    gml_power_reasons_str(0x1 | 0x80 | 0x100, buf, sizeof buf);
    assert_string_equal(buf, "idle, HW power brake, display clock");
    gml_power_reasons_str(0x2 | 0x8 | 0x10 | 0x20, buf, sizeof buf);
    assert_string_equal(buf, "application clocks, HW slowdown, sync boost, SW thermal");
    gml_power_reasons_str(0x10000, buf, sizeof buf); /* a bit a newer driver may add */
    assert_string_equal(buf, "0x10000");
    gml_power_reasons_str(0x4 | 0x30000, buf, sizeof buf);
    assert_string_equal(buf, "power cap, 0x30000");
    /* snprintf-style: the full length, a cut and terminated text */
    char small[6];
    assert_int_equal(gml_power_reasons_str(0x4 | 0x40, small, sizeof small), strlen("power cap, HW thermal"));
    assert_string_equal(small, "power");
}

static void test_limits(void **state) {
    (void)state;
    assert_true(gml_power_limited_by_power(0x4));
    assert_true(gml_power_limited_by_power(0x80));
    assert_false(gml_power_limited_by_power(0x1 | 0x2 | 0x8 | 0x10 | 0x20 | 0x40 | 0x100));
    assert_true(gml_power_limited_by_heat(0x20));
    assert_true(gml_power_limited_by_heat(0x40));
    assert_false(gml_power_limited_by_heat(0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x80 | 0x100));
}

static void test_no_readings(void **state) {
    (void)state;
    char why[256];
    gml_power *p = (gml_power *)1;
    assert_int_equal(gml_power_open("", &p, why, sizeof why), GML_OK); /* CPU backends have no bus id */
    assert_null(p);
    assert_string_equal(why, "no GPU (no PCI bus id)");
    /* a bus id no GPU has: no NVML here, or NVML without such a device */
    p = (gml_power *)1;
    why[0] = '\0';
    assert_int_equal(gml_power_open("00000000:FF:1F.7", &p, why, sizeof why), GML_OK);
    assert_null(p);
    assert_true(strlen(why) > 0);
    gml_power_close(NULL);

    /* a run without readings: samples say unknown, the summary has nothing */
    gml_powerlog pl;
    assert_int_equal(gml_powerlog_open(&pl, "", why, sizeof why), GML_OK);
    assert_null(pl.p);
    assert_int_equal(gml_powerlog_start(&pl, 1.0), GML_OK);
    double w = 0;
    int mhz = 0;
    uint64_t reasons = 7;
    assert_int_equal(gml_powerlog_sample(&pl, &w, &mhz, &reasons), GML_OK);
    assert_true(w < 0);
    assert_true(mhz < 0);
    assert_int_equal(reasons, 0);
    char line[256] = "x";
    int have = 1;
    assert_int_equal(gml_powerlog_summary(&pl, NULL, 3.0, 1e6, line, sizeof line, &have), GML_OK);
    assert_int_equal(have, 0);
    assert_string_equal(line, "");
    gml_powerlog_close(&pl);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reason_names),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_no_readings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
