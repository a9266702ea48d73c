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

/* The losses, gradient norms and final weights (*params, malloc'd, *n of
 * them) of ZOR_STEPS AdamW steps of `accum` micro-steps at ZeRO `stage`;
 * *replays: micro-steps that replayed a recording. */
static void zor_run(const char *device, int stage, int accum, double clip, double *losses, double *norms,
                    float **params, size_t *n, int *replays) {
    gml_comm *world, *dev;
    gml_backend *be;
    gml_gpt *m;
    gml_zero *z;
    assert_int_equal(gml_comm_world(&world), GML_OK);
    assert_int_equal(gml_comm_size(world), 1);
    assert_int_equal(gml_backend_create(device, 0, &be), GML_OK);
    assert_int_equal(gml_comm_device_group(world, be, &dev), GML_OK);
    /* three layers: the head shares the third window with block 1; a
     * quarter of the micro-batch's logits at a time, as the trainer runs */
    gml_gpt_config c = {.n_layer = 3, .n_head = 4, .n_embd = 64, .block_size = ZOR_T, .vocab_size = 50,
                        .padded_vocab_size = 64, .init_std = 0.02f, .shard_ways = 1, .head_chunks = 4,
                        .sharded_params = stage == 3, .sharded_grads = stage == 2};
    assert_int_equal(gml_gpt_create(be, &c, ZOR_B, ZOR_T, 0, &m), GML_OK);
    gml_adamw_config oc = {0.9, 0.95, 1e-8, 0.1, clip};
    /* 4096-element buckets (stages 0, 1): many per backward */
    assert_int_equal(gml_zero_create(m, world, dev, stage, 4096, &oc, &z), GML_OK);
    assert_int_equal(gml_zero_stage(z), stage);
    assert_int_equal(gml_zero_set_embedding_grads(z, GML_EMBEDDING_AUTO, (size_t)ZOR_B * ZOR_T), GML_OK);
    assert_int_equal(gml_gpt_init_weights(m, 5), GML_OK); /* after the provider is in place */
    float *acc;
    assert_int_equal(be->iface->alloc(be, (void **)&acc, 4), GML_OK);
    gml_rng r;
    gml_rng_init(&r, 11, 1);
    int32_t in[ZOR_B * ZOR_T], tg[ZOR_B * ZOR_T];
    float dscale = 1.0f / (float)(ZOR_B * ZOR_T * accum);
    *replays = 0;
    for (int s = 0; s < ZOR_STEPS; s++) {
        assert_int_equal(gml_gpt_zero_grads(m), GML_OK);
        assert_int_equal(be->iface->memset_zero(be, acc, 4), GML_OK);
        for (int micro = 0; micro < accum; micro++) {
            for (int i = 0; i < ZOR_B * ZOR_T; i++) {
                in[i] = (int32_t)gml_rng_below(&r, c.vocab_size);
                tg[i] = (in[i] * 7 + 3) % c.vocab_size;
            }
            if (micro == accum - 1) gml_zero_before_last_backward(z);
            assert_int_equal(gml_gpt_train_micro(m, in, tg, ZOR_B, ZOR_T, dscale, acc), GML_OK);
            *replays += gml_gpt_micro_replayed(m);
        }
        assert_int_equal(gml_zero_step(z, 3e-3, &norms[s]), GML_OK);
        float l;
        assert_int_equal(be->iface->download_f32(be, &l, acc, GML_DTYPE_F32, 1), GML_OK);
        losses[s] = (double)l * dscale;
    }
    *n = gml_gpt_num_params(m);
    *params = malloc(*n * sizeof **params);
    assert_non_null(*params);
    assert_int_equal(gml_zero_gather_params_host(z), GML_OK); /* stages 1, 2: the master; 3: the shards */
    assert_int_equal(gml_gpt_get_params_host(m, *params), GML_OK);
    be->iface->free(be, acc);
    gml_zero_destroy(z);
    gml_gpt_destroy(m);
    gml_comm_destroy(dev);
    gml_backend_destroy(be);
    gml_comm_destroy(world);
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

#endif
