/* test_gpu_power.c — the power readings of a real GPU (core/power.h,
 * launcher/powerlog.h): a CUDA backend names its GPU's PCI bus id, NVML opens
 * by it, and the readings agree with physics and with each other over ~1 s of
 * bf16 matrix products: the energy counter grows, the mean power it implies
 * and the power NVML reports lie between a floor no busy H100/H200-class
 * card stays under and the card's own limit (a wrong unit, mJ taken for J or the reverse, lands three
 * orders of magnitude outside), the clock is within (0, max]. Exits 77
 * ("SKIP: no CUDA device") where no GPU is visible.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core/backend.h"
#include "core/power.h"
#include "launcher/powerlog.h"

#define OK(call) assert_int_equal((call), GML_OK)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* About `seconds` of 4096^3 bf16 products (0.14 TFLOP each) on random
 * operands (zeros would draw less power than real data). */
static void busy(gml_backend *be, double seconds) {
    const int n = 4096;
    size_t elems = (size_t)n * n;
    float *host = malloc(elems * sizeof *host);
    assert_non_null(host);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < elems; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        host[i] = (float)((x >> 40) & 0xffff) / 65536.0f - 0.5f;
    }
    void *a, *b, *c;
    OK(be->iface->alloc(be, &a, elems * 2));
    OK(be->iface->alloc(be, &b, elems * 2));
    OK(be->iface->alloc(be, &c, elems * 2));
    OK(be->iface->upload_f32(be, a, GML_DTYPE_BF16, host, elems));
    OK(be->iface->upload_f32(be, b, GML_DTYPE_BF16, host, elems));
    double t0 = now_s();
    while (now_s() - t0 < seconds) {
        for (int i = 0; i < 50; i++)
            OK(be->iface->matmul_forward(be, c, a, b, NULL, n, n, n));
        OK(be->iface->synchronize(be));
    }
    be->iface->free(be, a);
    be->iface->free(be, b);
    be->iface->free(be, c);
    free(host);
}

static void check_sample(const gml_power_sample *s) {
    assert_true(s->limit_w >= 50.0 && s->limit_w <= 3000.0);
    assert_true(s->max_sm_mhz >= 300 && s->max_sm_mhz <= 5000);
    assert_true(s->sm_mhz > 0 && s->sm_mhz <= s->max_sm_mhz);
    assert_true(s->power_w > 0.0 && s->power_w <= 1.5 * s->limit_w);
}

static void test_readings_under_load(void **state) {
    (void)state;
    gml_backend *be = NULL;
    OK(gml_backend_create("cuda", 0, &be));
    assert_true(strlen(be->pci_bus_id) >= 7); /* "0:0:0.0" at the shortest */
    char why[256];
    gml_power *p = NULL;
    OK(gml_power_open(be->pci_bus_id, &p, why, sizeof why));
    if (!p) fail_msg("no power readings for GPU %s: %s", be->pci_bus_id, why);
    busy(be, 0.3); /* warm: cuBLASLt's first-call choice stays out of the window */
    gml_power_sample s0, s1;
    double e0, e1;
    OK(gml_power_read(p, &s0));
    OK(gml_power_energy(p, &e0));
    double t0 = now_s();
    busy(be, 2.0); /* the counter moves every ~100 ms: +-10% at most over 2 s */
    OK(gml_power_energy(p, &e1));
    double dt = now_s() - t0;
    OK(gml_power_read(p, &s1));
    check_sample(&s0);
    check_sample(&s1);
    assert_true(e0 > 0.0 && e1 > e0);
    double watts = (e1 - e0) / dt;
    char reasons[256];
    gml_power_reasons_str(s1.reasons, reasons, sizeof reasons);
    printf("GPU %s: %.1f J in %.2f s of bf16 products = %.0f W mean (limit %.0f W); now %.0f W, SM %d of %d MHz, "
           "clock limits: %s\n",
           be->pci_bus_id, e1 - e0, dt, watts, s1.limit_w, s1.power_w, s1.sm_mhz, s1.max_sm_mhz, reasons);
    assert_true(watts > 60.0);               /* a busy data-centre GPU; an idle H200 draws ~80-125 W */
    assert_true(watts <= 1.25 * s1.limit_w); /* the counter cannot run far ahead of the limit */
    assert_true(s1.power_w > 60.0);          /* NVML's own average, after 2 s of products */

    /* the run-level bookkeeping over the same kind of window */
    gml_powerlog pl;
    OK(gml_powerlog_open(&pl, be->pci_bus_id, why, sizeof why));
    assert_non_null(pl.p);
    OK(gml_powerlog_start(&pl, now_s()));
    busy(be, 2.0);
    double w = 0;
    int mhz = 0;
    uint64_t r = 0;
    OK(gml_powerlog_sample(&pl, &w, &mhz, &r));
    assert_true(w > 60.0 && w <= 1.25 * s1.limit_w);
    assert_true(mhz > 0 && mhz <= s1.max_sm_mhz);
    char line[512];
    int have = 0;
    OK(gml_powerlog_summary(&pl, NULL, now_s(), 1e6, line, sizeof line, &have));
    printf("summary: %s\n", line);
    assert_int_equal(have, 1);
    assert_non_null(strstr(line, " kJ in "));
    assert_non_null(strstr(line, " W mean, "));
    assert_non_null(strstr(line, " mJ/token; SM "));
    assert_non_null(strstr(line, " MHz mean of 2 readings (max ")); /* the sample above and the summary's own */
    gml_powerlog_close(&pl);
    gml_power_close(p);
    gml_backend_destroy(be);
}

int main(void) {
    if (gml_backend_cuda_device_count() == 0) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_readings_under_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
