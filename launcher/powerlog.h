/* powerlog.h — a training run's GPU power readings (core/power.h): power
 * and SM clock for each progress line (cheap readings); at the end, from the
 * energy counter read at the start and the end of the run (slow readings),
 * every rank's energy, mean power, mean clock and how often the power cap
 * (or heat) held its clock down, gathered into one summary on rank 0, with
 * the job's energy per token. A rank whose GPU is held lower than the
 * others' is a straggler for the whole job: the summary names it by its
 * figures.
 *
 * Every rank keeps its own gml_powerlog (by value, in the trainer); ranks
 * without readings (CPU, no NVML) take part in the summary with none.
 * Not for: the readings themselves (core/power.h), printing (the caller).
 */
#ifndef GML_POWERLOG_H
#define GML_POWERLOG_H

#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"
#include "core/power.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    gml_power *p;            /* NULL: this rank has no readings */
    double e_start, t_start; /* J, s: at gml_powerlog_start */
    double mhz_sum;          /* over the samples since start */
    int n, n_power, n_heat;  /* samples; of them held by power, by heat */
    int max_sm_mhz;          /* the card's highest SM clock (from the samples) */
} gml_powerlog;

/* Zero *pl and open readings for the GPU with this PCI bus id (may be "":
 * none). Without readings *pl->p is NULL and why says why (cap bytes). */
gml_status gml_powerlog_open(gml_powerlog *pl, const char *pci_bus_id, char *why, size_t cap);

/* Start counting (energy and time) at `now` (s, any monotonic clock). */
gml_status gml_powerlog_start(gml_powerlog *pl, double now);

/* One sample: *power_w = the power NVML reports (its own ~1 s average),
 * *sm_mhz = the clock now, *reasons = why it is held below its maximum
 * (core/power.h's bits). Without readings: -1, -1, 0. A few microseconds of
 * host time. */
gml_status gml_powerlog_sample(gml_powerlog *pl, double *power_w, int *sm_mhz, uint64_t *reasons);

/* Collective over `world` (every rank calls it; NULL: this rank alone): the
 * summary at `now`, of the run's `tokens` (all ranks together), into line
 * (cap bytes), on every rank; *have = 0 and line "" when no rank has
 * readings. One rank: "13.2 kJ in 19.6 s: 672 W mean, 0.80 mJ/token; SM
 * 1702 MHz mean of 15 readings (max 1980), held by the power cap in 15".
 * Several: the job's kJ and mJ/token, then per rank "kJ/W/MHz/power-capped
 * readings of readings". */
gml_status gml_powerlog_summary(gml_powerlog *pl, gml_comm *world, double now, double tokens, char *line, size_t cap,
                                int *have);

void gml_powerlog_close(gml_powerlog *pl);

#ifdef __cplusplus
}
#endif
#endif
