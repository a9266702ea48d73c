/* bench_train_step.c — times the full training step (forward, backward,
 * clip, AdamW) of a GPT on random tokens and prints one JSON line per run:
 * tokens/s, ms/step (median), MFU against the backend's datasheet peak, peak
 * memory, the device name, whether the micro-step ran as a CUDA graph
 * (GML_CUDA_GRAPHS=0 turns that off, for a side-by-side comparison), and
 * on a GPU with NVML what the power manager did over the timed steps
 * (core/power.h, read after each step): the median of NVML's power (its own
 * ~1 s average) and that times the median step as joules per step, the
 * median SM clock and the share of steps that ended with the clock held down
 * by the power cap.
 *
 * usage: bench_train_step [--device cuda|cpu] [--layers 12] [--heads 12] [--width 768]
 *                         [--context 1024] [--vocab 50257] [--batch 16] [--steps 30] [--warmup 5]
 *                         [--recompute 0|1]   (1: GELU outputs recomputed in backward, train.recompute)
 *                         [--head-chunks 4]   (logits for 1/k of the batch at a time, as training does; 0: whole)
 *                         [--token-range K]   (token ids uniform in [0, K) instead of [0, vocab): e.g. 65, the
 *                                              symbols of character-level text, where equal tokens are frequent)
 * Defaults are GPT-2 124M at 16 x 1024 tokens per step. Benchmarks print
 * figures; they assert nothing (bench/NOTES.md keeps the history).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/backend.h"
#include "core/gpt.h"
#include "core/optim.h"
#include "core/power.h"
#include "core/rng.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define CHECK(call)                                                                                 \
    do {                                                                                            \
        if ((call) != GML_OK) {                                                                     \
            fprintf(stderr, "bench: %s failed: %s\n", #call, gml_error_message());                  \
            return 1;                                                                               \
        }                                                                                           \
    } while (0)

int main(int argc, char **argv) {
    const char *device = "cuda";
    int L = 12, NH = 12, C = 768, T = 1024, V = 50257, B = 16, steps = 30, warmup = 5, recompute = 0, head_chunks = 4, range = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i];
        int v = atoi(argv[i + 1]);
        if (!strcmp(k, "--device")) device = argv[i + 1];
        else if (!strcmp(k, "--layers")) L = v;
        else if (!strcmp(k, "--heads")) NH = v;
        else if (!strcmp(k, "--width")) C = v;
        else if (!strcmp(k, "--context")) T = v;
        else if (!strcmp(k, "--vocab")) V = v;
        else if (!strcmp(k, "--batch")) B = v;
        else if (!strcmp(k, "--steps")) steps = v;
        else if (!strcmp(k, "--warmup")) warmup = v;
        else if (!strcmp(k, "--recompute")) recompute = v;
        else if (!strcmp(k, "--head-chunks")) head_chunks = v;
        else if (!strcmp(k, "--token-range")) range = v;
        else {
            fprintf(stderr, "bench: unknown flag %s\n", k);
            return 2;
        }
    }
    if (range <= 0 || range > V) range = V;
    gml_gpt_config c = {L, NH, C, T, V, (V + 127) / 128 * 128, 0.02f};
    c.head_chunks = head_chunks;
    const char *g = getenv("GML_CUDA_GRAPHS");
    int graphs_off = g && !strcmp(g, "0");
    gml_backend *be;
    gml_gpt *m;
    gml_adamw *opt;
    CHECK(gml_backend_create(device, 0, &be));
    CHECK(gml_gpt_create(be, &c, B, T, recompute, &m));
    CHECK(gml_gpt_init_weights(m, 1));
    gml_adamw_config oc = {0.9, 0.95, 1e-8, 0.1, 1.0};
    CHECK(gml_adamw_create(m, &oc, &opt));
    size_t N = (size_t)B * T;
    /* every step's tokens drawn up front: between timed steps the GPU waits
     * only for the loss read-back, so the energy window is the steps' own */
    size_t all_n = (size_t)(warmup + steps) * N;
    int32_t *in_all = malloc(all_n * 4), *tg_all = malloc(all_n * 4);
    double *times = malloc((size_t)steps * sizeof *times);
    int *mhz = malloc((size_t)steps * sizeof *mhz), capped = 0;
    double *watts = malloc((size_t)steps * sizeof *watts);
    if (!in_all || !tg_all || !times || !mhz || !watts) {
        fprintf(stderr, "bench: out of host memory\n");
        return 1;
    }
    gml_power *pw = NULL;
    gml_power_sample ps;
    char why[256];
    CHECK(gml_power_open(be->pci_bus_id, &pw, why, sizeof why));
    if (!pw && be->device_index >= 0) fprintf(stderr, "bench: no power readings: %s\n", why);
    gml_rng r;
    gml_rng_init(&r, 7, 0);
    float *acc;
    CHECK(be->iface->alloc(be, (void **)&acc, 4));
    float loss = 0;
    for (size_t i = 0; i < all_n; i += N)
        for (size_t j = i; j < i + N; j++) {
            in_all[j] = (int32_t)gml_rng_below(&r, (uint64_t)range);
            tg_all[j] = (int32_t)gml_rng_below(&r, (uint64_t)range);
        }
    for (int s = 0; s < warmup + steps; s++) {
        const int32_t *in = in_all + (size_t)s * N, *tg = tg_all + (size_t)s * N;
        CHECK(be->iface->synchronize(be));
        double t0 = now_s();
        CHECK(gml_gpt_zero_grads(m));
        CHECK(be->iface->memset_zero(be, acc, 4));
        CHECK(gml_gpt_train_micro(m, in, tg, B, T, 1.0f / (float)N, acc)); /* a CUDA graph from step 2 */
        CHECK(gml_adamw_step(opt, 1e-4, NULL));
        CHECK(be->iface->download_f32(be, &loss, acc, GML_DTYPE_F32, 1));
        double t1 = now_s();
        if (s >= warmup) times[s - warmup] = t1 - t0;
        if (pw && s >= warmup) { /* after the step's timing (microseconds): how it ended */
            CHECK(gml_power_read(pw, &ps));
            mhz[s - warmup] = ps.sm_mhz;
            watts[s - warmup] = ps.power_w;
            capped += gml_power_limited_by_power(ps.reasons);
        }
    }
    qsort(times, (size_t)steps, sizeof *times, cmp_double);
    double med = times[steps / 2];
    char power[192] = "\"power_w\":null,\"energy_j_per_step\":null,\"sm_mhz\":null,\"power_capped\":null";
    if (pw) {
        qsort(mhz, (size_t)steps, sizeof *mhz, cmp_int);
        qsort(watts, (size_t)steps, sizeof *watts, cmp_double);
        snprintf(power, sizeof power,
                 "\"power_w\":%.1f,\"energy_j_per_step\":%.2f,\"power_limit_w\":%.0f,\"sm_mhz\":%d,"
                 "\"power_capped\":%.2f",
                 watts[steps / 2], watts[steps / 2] * med, ps.limit_w, mhz[steps / 2], (double)capped / steps);
    }
    double tps = (double)N / med;
    size_t in_use, peak;
    be->iface->mem_stats(be, &in_use, &peak);
    double mfu = be->peak_flops > 0 ? gml_gpt_flops_per_token(m, T) * tps / be->peak_flops : -1;
    const char *graphs = be->iface->graph_begin && !graphs_off ? "true" : "false";
    printf("{\"bench\":\"train_step\",\"device\":\"%s\",\"backend\":\"%s\",\"layers\":%d,\"width\":%d,"
           "\"context\":%d,\"batch\":%d,\"params\":%zu,\"ms_per_step\":%.3f,\"tokens_per_s\":%.0f,"
           "\"mfu\":%.4f,\"peak_mem_gib\":%.3f,\"loss\":%.4f,\"cuda_graphs\":%s,\"recompute\":%d,"
           "\"head_chunks\":%d,\"token_range\":%d,%s}\n",
           be->device_name, be->name, L, C, T, B, gml_gpt_num_params(m), med * 1e3, tps, mfu,
           (double)peak / (1024.0 * 1024 * 1024), loss / (double)N, graphs, recompute, head_chunks, range,
           power);
    gml_power_close(pw);
    be->iface->free(be, acc);
    free(in_all);
    free(tg_all);
    free(times);
    free(mhz);
    free(watts);
    gml_adamw_destroy(opt);
    gml_gpt_destroy(m);
    gml_backend_destroy(be);
    return 0;
}
