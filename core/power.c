/* power.c — NVML readings of a GPU's energy, power, clock and clock limits
 * (see power.h). NVML's C ABI is stable across drivers; the few entry points
 * used are declared here and resolved with dlsym, so nothing of NVML is
 * needed at build time. */
#include "core/power.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvml_ret;              /* nvmlReturn_t: 0 is NVML_SUCCESS */
typedef struct nvml_dev *nvml_dev; /* nvmlDevice_t */
enum { NVML_CLOCK_SM = 1 };        /* nvmlClockType_t */

struct gml_power {
    void *lib; /* dlopen handle of libnvidia-ml.so.1 */
    nvml_dev dev;
    nvml_ret (*shutdown)(void);
    const char *(*error_string)(nvml_ret);
    nvml_ret (*energy)(nvml_dev, unsigned long long *); /* mJ */
    nvml_ret (*power)(nvml_dev, unsigned int *);        /* mW */
    nvml_ret (*limit)(nvml_dev, unsigned int *);        /* mW */
    nvml_ret (*clock)(nvml_dev, int, unsigned int *);   /* MHz */
    nvml_ret (*reasons)(nvml_dev, unsigned long long *);
    int initialized; /* nvmlInit_v2 succeeded: shutdown on close */
    int max_sm_mhz;
};

static const char *err_str(const gml_power *p, nvml_ret r) {
    const char *s = p->error_string ? p->error_string(r) : NULL;
    return s ? s : "unknown NVML error";
}

static nvml_ret read_all(gml_power *p, gml_power_sample *s, const char **call);

void gml_power_close(gml_power *p) {
    if (!p) return;
    if (p->initialized && p->shutdown) p->shutdown();
    if (p->lib) dlclose(p->lib);
    free(p);
}

gml_status gml_power_open(const char *pci_bus_id, gml_power **out, char *why, size_t cap) {
    if (!out || !why || cap == 0) return gml_error_set(GML_ERR_INVALID_ARG, "gml_power_open: NULL argument");
    *out = NULL;
    why[0] = '\0';
    if (!pci_bus_id || !*pci_bus_id) {
        snprintf(why, cap, "no GPU (no PCI bus id)");
        return GML_OK;
    }
    gml_power *p = calloc(1, sizeof *p);
    if (!p) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    nvml_ret r = 0;
    p->lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!p->lib) {
        const char *e = dlerror();
        snprintf(why, cap, "NVML not loadable (%s)", e ? e : "dlopen failed");
        goto none;
    }
    nvml_ret (*init)(void) = NULL;
    nvml_ret (*by_bus)(const char *, nvml_dev *) = NULL;
    nvml_ret (*max_clock)(nvml_dev, int, unsigned int *) = NULL;
    /* POSIX: dlsym's void * converts to a function pointer through memcpy */
#define SYM(dst, name)                                                                                                 \
    do {                                                                                                               \
        void *s_ = dlsym(p->lib, name);                                                                                \
        if (s_) memcpy(&(dst), &s_, sizeof s_);                                                                        \
    } while (0)
    SYM(init, "nvmlInit_v2");
    SYM(by_bus, "nvmlDeviceGetHandleByPciBusId_v2");
    SYM(max_clock, "nvmlDeviceGetMaxClockInfo");
    SYM(p->shutdown, "nvmlShutdown");
    SYM(p->error_string, "nvmlErrorString");
    SYM(p->energy, "nvmlDeviceGetTotalEnergyConsumption");
    SYM(p->power, "nvmlDeviceGetPowerUsage");
    SYM(p->limit, "nvmlDeviceGetEnforcedPowerLimit");
    SYM(p->clock, "nvmlDeviceGetClockInfo");
    SYM(p->reasons, "nvmlDeviceGetCurrentClocksEventReasons"); /* the name since CUDA 12.2 */
    if (!p->reasons) SYM(p->reasons, "nvmlDeviceGetCurrentClocksThrottleReasons");
#undef SYM
    if (!init || !by_bus || !max_clock || !p->shutdown || !p->energy || !p->power || !p->limit || !p->clock ||
        !p->reasons) {
        snprintf(why, cap, "this NVML lacks an entry point we read");
        goto none;
    }
    const char *call = "nvmlInit_v2";
    if ((r = init()) != 0) goto failed;
    p->initialized = 1;
    call = "nvmlDeviceGetHandleByPciBusId_v2";
    if ((r = by_bus(pci_bus_id, &p->dev)) != 0) goto failed;
    unsigned int mhz = 0;
    call = "nvmlDeviceGetMaxClockInfo";
    if ((r = max_clock(p->dev, NVML_CLOCK_SM, &mhz)) != 0) goto failed;
    p->max_sm_mhz = (int)mhz;
    /* every counter once: a GPU may lack one (energy: Volta and newer) */
    gml_power_sample s;
    unsigned long long mj = 0;
    if ((r = read_all(p, &s, &call)) != 0) goto failed;
    call = "nvmlDeviceGetTotalEnergyConsumption";
    if ((r = p->energy(p->dev, &mj)) != 0) goto failed;
    *out = p;
    return GML_OK;
failed:
    snprintf(why, cap, "%s(%s): %s", call, pci_bus_id, err_str(p, r));
none: /* no readings: not an error */
    gml_power_close(p);
    return GML_OK;
}

/* One reading; on failure returns the NVML error and names the call in *call. */
static nvml_ret read_all(gml_power *p, gml_power_sample *s, const char **call) {
    unsigned long long reasons = 0;
    unsigned int mw = 0, limit_mw = 0, mhz = 0;
    nvml_ret r;
#define TRY(expr, name)                                                                                                \
    do {                                                                                                               \
        if ((r = (expr)) != 0) {                                                                                       \
            *call = name;                                                                                              \
            return r;                                                                                                  \
        }                                                                                                              \
    } while (0)
    TRY(p->power(p->dev, &mw), "nvmlDeviceGetPowerUsage");
    TRY(p->limit(p->dev, &limit_mw), "nvmlDeviceGetEnforcedPowerLimit");
    TRY(p->clock(p->dev, NVML_CLOCK_SM, &mhz), "nvmlDeviceGetClockInfo");
    TRY(p->reasons(p->dev, &reasons), "nvmlDeviceGetCurrentClocksEventReasons");
#undef TRY
    s->power_w = (double)mw * 1e-3;
    s->limit_w = (double)limit_mw * 1e-3;
    s->sm_mhz = (int)mhz;
    s->max_sm_mhz = p->max_sm_mhz;
    s->reasons = (uint64_t)reasons;
    return 0;
}

gml_status gml_power_read(gml_power *p, gml_power_sample *s) {
    if (!p || !s) return gml_error_set(GML_ERR_INVALID_ARG, "gml_power_read: NULL argument");
    const char *call = "";
    nvml_ret r = read_all(p, s, &call);
    if (r != 0) return gml_error_set(GML_ERR_BACKEND, "%s: %s", call, err_str(p, r));
    return GML_OK;
}

gml_status gml_power_energy(gml_power *p, double *joules) {
    if (!p || !joules) return gml_error_set(GML_ERR_INVALID_ARG, "gml_power_energy: NULL argument");
    unsigned long long mj = 0;
    nvml_ret r = p->energy(p->dev, &mj);
    if (r != 0) return gml_error_set(GML_ERR_BACKEND, "nvmlDeviceGetTotalEnergyConsumption: %s", err_str(p, r));
    *joules = (double)mj * 1e-3;
    return GML_OK;
}

int gml_power_limited_by_power(uint64_t reasons) {
    return (reasons & (GML_POWER_REASON_SW_POWER_CAP | GML_POWER_REASON_HW_POWER_BRAKE)) != 0;
}

int gml_power_limited_by_heat(uint64_t reasons) {
    return (reasons & (GML_POWER_REASON_SW_THERMAL | GML_POWER_REASON_HW_THERMAL)) != 0;
}

size_t gml_power_reasons_str(uint64_t reasons, char *out, size_t cap) {
    static const struct {
        uint64_t bit;
        const char *name;
    } names[] = {{GML_POWER_REASON_IDLE, "idle"},
                 {GML_POWER_REASON_APP_CLOCKS, "application clocks"},
                 {GML_POWER_REASON_SW_POWER_CAP, "power cap"},
                 {GML_POWER_REASON_HW_SLOWDOWN, "HW slowdown"},
                 {GML_POWER_REASON_SYNC_BOOST, "sync boost"},
                 {GML_POWER_REASON_SW_THERMAL, "SW thermal"},
                 {GML_POWER_REASON_HW_THERMAL, "HW thermal"},
                 {GML_POWER_REASON_HW_POWER_BRAKE, "HW power brake"},
                 {GML_POWER_REASON_DISPLAY_CLOCK, "display clock"}};
    char buf[256];
    size_t n = 0;
    uint64_t rest = reasons;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!(reasons & names[i].bit)) continue;
        rest &= ~names[i].bit;
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%s", n ? ", " : "", names[i].name);
    }
    if (rest) n += (size_t)snprintf(buf + n, sizeof buf - n, "%s0x%llx", n ? ", " : "", (unsigned long long)rest);
    if (!reasons) snprintf(buf, sizeof buf, "none");
    return (size_t)snprintf(out, cap, "%s", buf);
}
