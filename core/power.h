/* power.h — what a GPU's power manager is doing while we compute: its energy
 * counter, power draw, SM clock and the reasons the clock is held below its
 * maximum, read through NVML.
 *
 * Why: an H200 running the GPT-2 124M step draws its whole 700 W limit and
 * the power manager lowers the SM clock from 1980 MHz to ~1650-1710 MHz
 * ("SW power cap"), so step time follows energy per step, and a rank whose
 * GPU runs hotter is a straggler for the whole job. Bench and trainer report
 * joules per step, watts and MHz next to tokens/s.
 *
 * NVML (libnvidia-ml.so.1, part of the driver) is loaded at run time with
 * dlopen: builds need neither its header nor its library, and a machine
 * without the driver simply has no readings. Read-only: nothing here changes
 * a clock, a limit or any other setting of the card.
 * Not for: CPU power (RAPL), or deciding anything from the readings.
 */
#ifndef GML_POWER_H
#define GML_POWER_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gml_power gml_power;

/* NVML's clock event reasons (nvmlClocksEventReason*), the bits of
 * gml_power_sample.reasons this module names. */
#define GML_POWER_REASON_IDLE           0x1ull
#define GML_POWER_REASON_APP_CLOCKS     0x2ull
#define GML_POWER_REASON_SW_POWER_CAP   0x4ull
#define GML_POWER_REASON_HW_SLOWDOWN    0x8ull
#define GML_POWER_REASON_SYNC_BOOST     0x10ull
#define GML_POWER_REASON_SW_THERMAL     0x20ull
#define GML_POWER_REASON_HW_THERMAL     0x40ull
#define GML_POWER_REASON_HW_POWER_BRAKE 0x80ull
#define GML_POWER_REASON_DISPLAY_CLOCK  0x100ull

typedef struct {
    double power_w;   /* power draw (W): NVML's own average over about a second on recent GPUs */
    double limit_w;   /* enforced power limit (W) */
    int sm_mhz;       /* SM clock now (MHz) */
    int max_sm_mhz;   /* the highest SM clock the card may run (MHz) */
    uint64_t reasons; /* GML_POWER_REASON_* bits: why the clock is below max_sm_mhz now */
} gml_power_sample;

/* Open NVML on the GPU whose PCI bus id is `pci_bus_id` (as CUDA writes it,
 * "0000:00:06.0"; gml_backend.pci_bus_id). The readings are optional: when
 * NVML, the device or one of the counters is not there this returns GML_OK
 * with *out = NULL and the reason in why (cap bytes, NUL-terminated). On
 * success *out is owned by the caller: gml_power_close. */
gml_status gml_power_open(const char *pci_bus_id, gml_power **out, char *why, size_t cap);

/* One reading of everything in gml_power_sample: cheap (a few microseconds
 * of host time). GML_ERR_BACKEND (naming the NVML call and its error) if a
 * counter that answered at open fails now. */
gml_status gml_power_read(gml_power *p, gml_power_sample *s);

/* The GPU's energy counter: joules since the driver loaded; take
 * differences. Slow and coarse: one call took ~4 ms of host time on an H200
 * (driver 580) and the counter moved every ~100 ms, so read it at the ends
 * of long windows (a run), never per step. */
gml_status gml_power_energy(gml_power *p, double *joules);

/* NULL is fine. */
void gml_power_close(gml_power *p);

/* 1 when the clock is held down by power (SW power cap or HW power brake). */
int gml_power_limited_by_power(uint64_t reasons);
/* 1 when it is held down by temperature (SW or HW thermal slowdown). */
int gml_power_limited_by_heat(uint64_t reasons);

/* The names of the set bits, comma-separated ("power cap, HW thermal"),
 * "none" for 0; bits this module does not name are written as one hex value
 * ("0x10000"). snprintf-style: returns the length of the full text. */
size_t gml_power_reasons_str(uint64_t reasons, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
