/* powerlog.c — a run's power readings per progress line and its end summary
 * over all ranks (see powerlog.h). */
#include "launcher/powerlog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

gml_status gml_powerlog_open(gml_powerlog *pl, const char *pci_bus_id, char *why, size_t cap) {
    memset(pl, 0, sizeof *pl);
    return gml_power_open(pci_bus_id, &pl->p, why, cap);
}

void gml_powerlog_close(gml_powerlog *pl) {
    gml_power_close(pl->p);
    pl->p = NULL;
}

gml_status gml_powerlog_start(gml_powerlog *pl, double now) {
    if (!pl->p) return GML_OK;
    GML_CHECK(gml_power_energy(pl->p, &pl->e_start)); /* slow (ms): once per run */
    pl->t_start = now;
    pl->mhz_sum = 0;
    pl->n = pl->n_power = pl->n_heat = 0;
    return GML_OK;
}

gml_status gml_powerlog_sample(gml_powerlog *pl, double *power_w, int *sm_mhz, uint64_t *reasons) {
    *power_w = -1, *sm_mhz = -1, *reasons = 0;
    if (!pl->p) return GML_OK;
    gml_power_sample s;
    GML_CHECK(gml_power_read(pl->p, &s)); /* microseconds: fine between steps */
    *power_w = s.power_w;
    *sm_mhz = s.sm_mhz;
    *reasons = s.reasons;
    pl->max_sm_mhz = s.max_sm_mhz;
    pl->mhz_sum += s.sm_mhz;
    pl->n++;
    pl->n_power += gml_power_limited_by_power(s.reasons);
    pl->n_heat += gml_power_limited_by_heat(s.reasons);
    return GML_OK;
}

enum { F_HAVE, F_J, F_S, F_MHZ, F_N, F_POWER, F_HEAT, F_MAX_MHZ, NF }; /* one rank's figures */

/* Append printf-style to line at *n, never past cap. */
#define APPEND(...)                                                                                                    \
    do {                                                                                                               \
        if (*n < cap) *n += (size_t)snprintf(line + *n, cap - *n, __VA_ARGS__);                                        \
    } while (0)

static void one_rank(const float *f, double tokens, char *line, size_t cap, size_t *n) {
    APPEND("%.1f kJ in %.1f s: %.0f W mean", f[F_J] / 1e3, f[F_S], f[F_S] > 0 ? f[F_J] / f[F_S] : 0.0);
    if (tokens > 0) APPEND(", %.3f mJ/token", 1e3 * f[F_J] / tokens);
    APPEND("; SM %.0f MHz mean of %.0f readings (max %.0f), held by the power cap in %.0f", f[F_MHZ], f[F_N],
           f[F_MAX_MHZ], f[F_POWER]);
    if (f[F_HEAT] > 0) APPEND(", by heat in %.0f", f[F_HEAT]);
}

/* This rank's figures at `now` (the last sample and the energy counter). */
static gml_status my_figures(gml_powerlog *pl, double now, float *mine) {
    double w, e_end;
    int mhz;
    uint64_t reasons;
    GML_CHECK(gml_powerlog_sample(pl, &w, &mhz, &reasons)); /* the last stretch */
    GML_CHECK(gml_power_energy(pl->p, &e_end));
    mine[F_HAVE] = 1;
    mine[F_J] = (float)(e_end - pl->e_start);
    mine[F_S] = (float)(now - pl->t_start);
    mine[F_MHZ] = (float)(pl->mhz_sum / pl->n);
    mine[F_N] = (float)pl->n;
    mine[F_POWER] = (float)pl->n_power;
    mine[F_HEAT] = (float)pl->n_heat;
    mine[F_MAX_MHZ] = (float)pl->max_sm_mhz;
    return GML_OK;
}

gml_status gml_powerlog_summary(gml_powerlog *pl, gml_comm *world, double now, double tokens, char *line, size_t cap,
                                int *have) {
    *have = 0;
    line[0] = '\0';
    int size = world ? gml_comm_size(world) : 1, rank = world ? gml_comm_rank(world) : 0;
    float mine[NF] = {0}, *all = calloc((size_t)size * NF, sizeof *all);
    if (!all) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    /* a failed reading still joins the collective (as "no readings"), so the
     * other ranks do not wait for it; its error is returned after */
    gml_status mine_st = pl->p ? my_figures(pl, now, mine) : GML_OK, st = GML_OK;
    if (mine_st != GML_OK) memset(mine, 0, sizeof mine);
    memcpy(all + (size_t)rank * NF, mine, sizeof mine);
    if (size > 1) GML_CHECK_GOTO(gml_comm_allgather_f32(world, mine, all, NF, NULL), st, done);
    size_t n0 = 0, *n = &n0;
    int with = 0, lo = -1, hi = -1;
    double joules = 0;
    for (int r = 0; r < size; r++) {
        const float *f = all + (size_t)r * NF;
        if (f[F_HAVE] == 0) continue;
        with++, joules += f[F_J];
        if (lo < 0 || f[F_MHZ] < all[(size_t)lo * NF + F_MHZ]) lo = r;
        if (hi < 0 || f[F_MHZ] > all[(size_t)hi * NF + F_MHZ]) hi = r;
    }
    *have = with > 0;
    if (with == 0) goto done;
    if (size == 1) {
        one_rank(all, tokens, line, cap, n);
        goto done;
    }
    APPEND("job %.1f kJ on %d GPU(s)", joules / 1e3, with);
    if (tokens > 0) APPEND(", %.3f mJ/token", 1e3 * joules / tokens);
    APPEND("; SM clock mean lowest %.0f MHz on rank %d, highest %.0f on rank %d", all[(size_t)lo * NF + F_MHZ], lo,
           all[(size_t)hi * NF + F_MHZ], hi);
    if (size <= 16) { /* per rank: kJ / W / MHz / readings held by the power cap */
        APPEND("; per rank kJ/W/MHz/capped:");
        for (int r = 0; r < size; r++) {
            const float *f = all + (size_t)r * NF;
            if (f[F_HAVE] == 0)
                APPEND(" %d:-", r);
            else
                APPEND(" %d:%.1f/%.0f/%.0f/%.0f of %.0f", r, f[F_J] / 1e3, f[F_S] > 0 ? f[F_J] / f[F_S] : 0.0, f[F_MHZ],
                       f[F_POWER], f[F_N]);
        }
    }
done:
    free(all);
    return st != GML_OK ? st : mine_st;
}
