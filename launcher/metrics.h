/* metrics.h — what a training run reports: the progress line on stdout,
 * metrics as JSON lines (out_dir/metrics.jsonl) and TensorBoard scalars
 * (out_dir/tb/events.out.tfevents.*).
 *
 * One gml_metrics per process; on ranks other than 0 open it with quiet=1
 * (and usually jsonl = tensorboard = 0). Every JSON line is one object with a
 * "kind" ("train" | "eval" | "sample" | "info") and a "time" (unix seconds),
 * written with one fwrite and flushed, so a crash loses at most the line being
 * written; numbers use %.9g (integral values below 2^53 all digits, so byte
 * counts stay exact), NaN / Inf become null. Not thread-safe. Not for:
 * error messages (those travel as gml_status, see core/status.h) or deciding
 * when to log (the training loop does that).
 */
#ifndef GML_METRICS_H
#define GML_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int step, steps;     /* step just finished (1-based), total */
    double loss;         /* mean train loss of the step */
    double lr, grad_norm; /* grad_norm before clipping */
    double step_s;       /* seconds for this step */
    double tokens_per_s; /* over the last logging window */
    double mfu;          /* 0..1; < 0 when unknown (CPU) */
    double mem_bytes;    /* backend memory in use (peak), bytes; < 0 when unknown */
    double eta_s;        /* seconds to finish */
    double power_w;      /* GPU: power draw as NVML reports it (its own ~1 s average; W); <= 0 when unknown */
    int sm_mhz;          /* GPU: SM clock now (MHz); <= 0 when unknown */
    uint64_t clock_reasons; /* why that clock is below its maximum (core/power.h's bits) */
} gml_train_stats;

typedef struct gml_metrics gml_metrics;

/* out_dir is created (with parents) if jsonl or tensorboard is on;
 * jsonl -> out_dir/metrics.jsonl (appended), tensorboard -> out_dir/tb/.
 * quiet=1: no stdout (non-zero ranks). On success *out is freed with
 * gml_metrics_close; on failure *out is NULL. */
gml_status gml_metrics_open(const char *out_dir, int jsonl, int tensorboard, int quiet, gml_metrics **out);

/* The progress line
 *   step   120/5000 | loss 2.1345 | lr 6.00e-04 | norm 0.8123 | 45.2 ms |
 *   362.1k tok/s | MFU 41.3% | mem 1.23 GiB | 672 W 1702 MHz | ETA 3m40s
 * (one line; MFU left out when mfu < 0, mem when mem_bytes < 0, power and
 * clock when either is unknown), the JSON line
 * {"kind":"train","time":..,"step":..,"steps":..,"loss":..,"lr":..,
 *  "grad_norm":..,"step_s":..,"tokens_per_s":..,"mfu":..|null,"mem_bytes":..,
 *  "eta_s":..,"power_w":..|null,"sm_mhz":..|null,"clock_limits":".."|null}
 * (clock_limits: gml_power_reasons_str of clock_reasons, e.g. "power cap")
 * and the TensorBoard scalars train/loss, train/lr, train/grad_norm,
 * train/tokens_per_s, train/mfu (when mfu >= 0), train/power_w and
 * train/sm_mhz (when known). */
gml_status gml_metrics_train(gml_metrics *m, const gml_train_stats *s);

/* "step   120/5000 | val loss 2.3456" (total from the last train record; just
 * "step N" before one), {"kind":"eval","time":..,"step":..,"val_loss":..} and
 * the TensorBoard scalar val/loss. */
gml_status gml_metrics_eval(gml_metrics *m, int step, double val_loss);

/* The text on stdout under a "step N | sample:" line, and
 * {"kind":"sample","time":..,"step":..,"text":"..."}. In JSON the text is
 * escaped: \" \\ \n \r \t, other control characters as \u00XX; bytes >= 0x80
 * pass through where they form valid UTF-8 (no overlongs, surrogates or code
 * points above U+10FFFF), each other byte becomes \ufffd. */
gml_status gml_metrics_sample(gml_metrics *m, int step, const char *text);

/* {"kind":"info","time":..,KEY:VALUE}: a one-off fact (device, parameter
 * count, config path). JSON only; nothing on stdout. */
gml_status gml_metrics_info(gml_metrics *m, const char *key, const char *value);

/* Flush and close the files and free `m`. NULL is ok. */
gml_status gml_metrics_close(gml_metrics *m);

/* Write `s` into `out` as a JSON string (quotes included), escaped as
 * gml_metrics_sample describes. Returns the number of bytes the full result
 * needs, without the terminating NUL (snprintf-style: `out` gets at most
 * cap-1 bytes and a NUL when cap > 0). Exposed for tests and for other JSON
 * writers. */
size_t gml_metrics_json_escape(const char *s, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
