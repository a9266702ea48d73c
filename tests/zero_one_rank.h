/* zero_one_rank.h — ZeRO stages 1-3 on a one-rank group against stage 0,
 * for one backend (test_zero_one_rank: CPU; test_gpu_dp: CUDA + NCCL). On
 * one rank every shard is the whole model and every collective moves data
 * only to oneself, so each stage must do exactly stage 0's arithmetic
 * through its own machinery: AdamW and the parameter gather in parts
 * (stages 1, 2), gradient windows reduced onto their owner layer by layer
 * (2, 3), parameter windows gathered before each layer's forward and
 * backward (3). Without clipping the losses and the final weights must be
 * bit-identical to stage 0's; with clipping the norm crosses the group as
 * one f32 (stages 1-3), so the clip factor may differ in its last bits.
 * On CUDA stages 0 and 1 record their micro-steps and replay them (CUDA
 * graphs), which the comparison covers too; stages 2 and 3 run launch by
 * launch (a model with a provider is not recorded).
 * And a restore in the middle (zero_restore_on_one_rank), into each stage.
 * This is the only place the GPU paths of stages 2 and 3 run on a one-GPU
 * host. Needs MPI started (gml_comm_init). Include after <cmocka.h>. */
#ifndef GML_TEST_ZERO_ONE_RANK_H
#define GML_TEST_ZERO_ONE_RANK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "core/backend.h"
#include "core/gpt.h"
#include "core/rng.h"
#include "parallel/zero.h"

enum { ZOR_B = 8, ZOR_T = 32, ZOR_STEPS = 6 };

/* One model and its ZeRO group of one rank. */
typedef struct {
    gml_comm *world, *dev;
    gml_backend *be;
    gml_gpt *m;
    gml_zero *z;
    float *acc; /* (1) device loss accumulator */
    int vocab;
} zor_run_t;

/* A three-layer model at ZeRO `stage` (weights drawn from init_seed) with
 * AdamW clipping at `clip`. */
static void zor_open(zor_run_t *x, const char *device, int stage, double clip, uint64_t init_seed) {
    assert_int_equal(gml_comm_world(&x->world), GML_OK);
    assert_int_equal(gml_comm_size(x->world), 1);
    assert_int_equal(gml_backend_create(device, 0, &x->be), GML_OK);
    assert_int_equal(gml_comm_device_group(x->world, x->be, &x->dev), GML_OK);
    /* three layers: the head shares the third window with block 1; a
     * quarter of the micro-batch's logits at a time, as the trainer runs */
    gml_gpt_config c = {.n_layer = 3, .n_head = 4, .n_embd = 64, .block_size = ZOR_T, .vocab_size = 50,
                        .padded_vocab_size = 64, .init_std = 0.02f, .shard_ways = 1, .head_chunks = 4,
                        .sharded_params = stage == 3, .sharded_grads = stage == 2};
    x->vocab = c.vocab_size;
    assert_int_equal(gml_gpt_create(x->be, &c, ZOR_B, ZOR_T, 0, &x->m), GML_OK);
    gml_adamw_config oc = {0.9, 0.95, 1e-8, 0.1, clip};
    /* 4096-element buckets (stages 0, 1): many per backward */
    assert_int_equal(gml_zero_create(x->m, x->world, x->dev, stage, 4096, &oc, &x->z), GML_OK);
    assert_int_equal(gml_zero_stage(x->z), stage);
    assert_int_equal(gml_zero_set_embedding_grads(x->z, GML_EMBEDDING_AUTO, (size_t)ZOR_B * ZOR_T), GML_OK);
    assert_int_equal(gml_gpt_init_weights(x->m, init_seed), GML_OK); /* after the provider is in place */
    assert_int_equal(x->be->iface->alloc(x->be, (void **)&x->acc, 4), GML_OK);
}

/* Steps [from, to) of `accum` micro-steps on batches drawn from *r; their
 * losses and norms into losses[s], norms[s]; *replays += micro-steps that
 * replayed a recording. */
static void zor_steps(zor_run_t *x, gml_rng *r, int accum, int from, int to, double *losses, double *norms,
                      int *replays) {
    int32_t in[ZOR_B * ZOR_T], tg[ZOR_B * ZOR_T];
    float dscale = 1.0f / (float)(ZOR_B * ZOR_T * accum);
    for (int s = from; s < to; s++) {
        assert_int_equal(gml_gpt_zero_grads(x->m), GML_OK);
        assert_int_equal(x->be->iface->memset_zero(x->be, x->acc, 4), GML_OK);
        for (int micro = 0; micro < accum; micro++) {
            for (int i = 0; i < ZOR_B * ZOR_T; i++) {
                in[i] = (int32_t)gml_rng_below(r, x->vocab);
                tg[i] = (in[i] * 7 + 3) % x->vocab;
            }
            if (micro == accum - 1) gml_zero_before_last_backward(x->z);
            assert_int_equal(gml_gpt_train_micro(x->m, in, tg, ZOR_B, ZOR_T, dscale, x->acc), GML_OK);
            *replays += gml_gpt_micro_replayed(x->m);
        }
        assert_int_equal(gml_zero_step(x->z, 3e-3, &norms[s]), GML_OK);
        float l;
        assert_int_equal(x->be->iface->download_f32(x->be, &l, x->acc, GML_DTYPE_F32, 1), GML_OK);
        losses[s] = (double)l * dscale;
    }
}

/* The full weights (malloc'd, *n of them). */
static float *zor_weights(zor_run_t *x, size_t *n) {
    *n = gml_gpt_num_params(x->m);
    float *p = malloc(*n * sizeof *p);
    assert_non_null(p);
    assert_int_equal(gml_zero_gather_params_host(x->z), GML_OK); /* stages 1, 2: the master; 3: the shards */
    assert_int_equal(gml_gpt_get_params_host(x->m, p), GML_OK);
    return p;
}

static void zor_close(zor_run_t *x) {
    x->be->iface->free(x->be, x->acc);
    gml_zero_destroy(x->z);
    gml_gpt_destroy(x->m);
    gml_comm_destroy(x->dev);
    gml_backend_destroy(x->be);
    gml_comm_destroy(x->world);
    memset(x, 0, sizeof *x);
}

/* The losses, gradient norms and final weights (*params, malloc'd, *n of
 * them) of ZOR_STEPS AdamW steps of `accum` micro-steps at ZeRO `stage`;
 * *replays: micro-steps that replayed a recording. */
static void zor_run(const char *device, int stage, int accum, double clip, double *losses, double *norms,
                    float **params, size_t *n, int *replays) {
    zor_run_t x;
    zor_open(&x, device, stage, clip, 5);
    gml_rng r;
    gml_rng_init(&r, 11, 1);
    *replays = 0;
    zor_steps(&x, &r, accum, 0, ZOR_STEPS, losses, norms, replays);
    *params = zor_weights(&x, n);
    zor_close(&x);
}

/* Stages 1-3 against stage 0 on `device`, with 1 and 2 micro-steps per
 * step, without and with clipping. */
static void zero_stages_on_one_rank(const char *device) {
    const char *graphs = getenv("GML_CUDA_GRAPHS");
    int recording = !strcmp(device, "cuda") && !(graphs && !strcmp(graphs, "0"));
    for (int accum = 1; accum <= 2; accum++) {
        for (int clipped = 0; clipped <= 1; clipped++) {
            /* clip 0: off; 0.05: below every norm of these runs (asserted) */
            double clip = clipped ? 0.05 : 0.0;
            double l0[ZOR_STEPS], n0[ZOR_STEPS];
            float *p0;
            size_t n;
            int r0;
            zor_run(device, 0, accum, clip, l0, n0, &p0, &n, &r0);
            for (int s = 0; s < ZOR_STEPS; s++)
                if (clipped && !(n0[s] > clip)) fail_msg("step %d: norm %g does not exceed the clip %g", s + 1, n0[s], clip);
            for (int stage = 1; stage <= 3; stage++) {
                double l[ZOR_STEPS], nr[ZOR_STEPS], worst = 0.0;
                float *p;
                size_t np;
                int replays;
                zor_run(device, stage, accum, clip, l, nr, &p, &np, &replays);
                assert_int_equal(np, n);
                /* the recorded path is among what is compared */
                if (recording && (r0 == 0 || (stage < 2 && replays == 0)))
                    fail_msg("%s stage %d accum %d: %d replays (stage 0: %d): the micro-steps were not recorded",
                             device, stage, accum, replays, r0);
                for (int s = 0; s < ZOR_STEPS; s++) {
                    /* the norm: one f32 across the group in stages 1-3 */
                    if (!(fabs(nr[s] - n0[s]) <= 1e-6 * n0[s]))
                        fail_msg("%s stage %d accum %d step %d: norm %.9g, stage 0 %.9g", device, stage, accum, s + 1,
                                 nr[s], n0[s]);
                    double d = fabs(l[s] - l0[s]) / l0[s];
                    if (d > worst) worst = d;
                }
                if (!clipped) { /* the same arithmetic: the same bits */
                    assert_memory_equal(l, l0, sizeof l);
                    assert_memory_equal(p, p0, n * sizeof *p);
                } else if (!(worst <= 1e-4)) {
                    fail_msg("%s stage %d accum %d clipped: loss %.3g relative from stage 0's", device, stage, accum,
                             worst);
                }
                printf("%s, one rank, ZeRO-%d vs ZeRO-0, %d micro-step(s), clip %s: %d losses %s (worst relative "
                       "difference %.2e)%s; %d / %d micro-steps replayed\n", device, stage, accum,
                       clipped ? "0.05" : "off", ZOR_STEPS, clipped ? "within 1e-4" : "bit-identical", worst,
                       clipped ? "" : ", final weights bit-identical", replays, r0);
                free(p);
            }
            free(p0);
        }
    }
}

/* A restore in the middle, as a resume does it: half the steps at stage 0,
 * its state (weights, moments, step count: gml_zero_download_shard) taken
 * to the host; then a model of each stage 0-3 drawn from another seed
 * restores it (gml_zero_restore: stage 3 keeps its shard, stages 1 and 2
 * all-gather the master, every stage refreshes its compute copy) and runs
 * the other half on the same batches. Without clipping every stage does
 * stage 0's arithmetic, so its losses and final weights must be those of
 * the uninterrupted stage 0 run, bit for bit. */
static void zero_restore_on_one_rank(const char *device) {
    enum { HALF = ZOR_STEPS / 2 };
    double l0[ZOR_STEPS], n0[ZOR_STEPS];
    int replays = 0;
    zor_run_t x;
    zor_open(&x, device, 0, 0.0, 5);
    gml_rng r, at_half;
    gml_rng_init(&r, 11, 1);
    zor_steps(&x, &r, 1, 0, HALF, l0, n0, &replays);
    at_half = r;
    size_t P = gml_gpt_num_params(x.m), lo, hi;
    gml_zero_shard_range(x.z, &lo, &hi);
    assert_true(lo == 0 && hi == P); /* one rank: the whole model */
    float *st[3];
    for (int k = 0; k < 3; k++) assert_non_null(st[k] = malloc(P * sizeof *st[k]));
    assert_int_equal(gml_zero_download_shard(x.z, st[0], st[1], st[2]), GML_OK);
    int t = gml_adamw_t(gml_zero_optimizer(x.z));
    assert_int_equal(t, HALF);
    zor_steps(&x, &r, 1, HALF, ZOR_STEPS, l0, n0, &replays);
    size_t n;
    float *p0 = zor_weights(&x, &n);
    zor_close(&x);
    for (int stage = 0; stage <= 3; stage++) {
        double l[ZOR_STEPS], nr[ZOR_STEPS];
        zor_open(&x, device, stage, 0.0, 77); /* other weights: the restore must replace every one */
        size_t olo, ohi;
        gml_adamw_range(gml_zero_optimizer(x.z), &olo, &ohi);
        assert_true(olo == 0 && ohi == P);
        assert_int_equal(gml_zero_restore(x.z, st[0], st[1], st[2], t), GML_OK);
        r = at_half;
        zor_steps(&x, &r, 1, HALF, ZOR_STEPS, l, nr, &replays);
        float *p = zor_weights(&x, &n);
        assert_memory_equal(l + HALF, l0 + HALF, (ZOR_STEPS - HALF) * sizeof *l);
        for (int s = HALF; s < ZOR_STEPS; s++) /* the norm: one f32 across the group in stages 1-3 */
            if (!(fabs(nr[s] - n0[s]) <= 1e-6 * n0[s]))
                fail_msg("%s restored into ZeRO-%d, step %d: norm %.9g, uninterrupted %.9g", device, stage, s + 1,
                         nr[s], n0[s]);
        assert_memory_equal(p, p0, n * sizeof *p);
        printf("%s, one rank: ZeRO-0's state after step %d restored into ZeRO-%d: steps %d-%d and the final "
               "weights bit-identical to the uninterrupted run\n", device, HALF, stage, HALF + 1, ZOR_STEPS);
        free(p);
        zor_close(&x);
    }
    for (int k = 0; k < 3; k++) free(st[k]);
    free(p0);
}

#endif
