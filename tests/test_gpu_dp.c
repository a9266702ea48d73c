/* test_gpu_dp.c — the dp reducer inside a recorded micro-step, on one GPU.
 * The bucketed all-reduce (parallel/dp.h), hooked into a training
 * micro-step on a one-rank NCCL group, is recorded into the micro-step's
 * CUDA graph and replayed: from the third micro-step on the hook is no
 * longer called (the replay runs the recorded collectives), and the losses
 * and final weights equal those of a run without the reducer bit for bit (a
 * one-rank sum is the identity, so any difference would be the
 * recording's); also with the embedding's token rows gathered (NCCL
 * all-gathers in the recording) instead of its gradient reduced last. Every
 * dp > 1 GPU run takes this path; test_gpu_multi checks it across GPUs.
 * And NCCL point to point (comm.h's sendrecv) with oneself; and ZeRO
 * stages 1-3 on the one-rank NCCL group against stage 0 (bf16: the same
 * bits without clipping; tests/zero_one_rank.h). Skipped (exit 77) without a CUDA device. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "comm/comm.h"
#include "core/backend.h"
#include "core/gpt.h"
#include "core/optim.h"
#include "core/rng.h"
#include "parallel/dp.h"
#include "zero_one_rank.h"

/* ------------------------------------------------------------------ */
/* one GPU: the reducer recorded into the micro-step's graph */

static const gml_gpt_config CFG = {.n_layer = 2, .n_head = 4, .n_embd = 64, .block_size = 64, .vocab_size = 50,
                                   .padded_vocab_size = 64, .init_std = 0.02f};
enum { B = 8, T = 64, MICRO_STEPS = 6 }; /* MICRO_STEPS: optimizer steps */

typedef struct {
    gml_dp_reducer *red;
    int calls;
} counting_hook;

static gml_status count_ready(void *ctx, size_t lo, size_t hi) {
    counting_hook *h = ctx;
    h->calls++;
    return gml_dp_reducer_ready(h->red, lo, hi);
}

/* MICRO_STEPS AdamW steps of `accum` micro-steps each; with dev_group, the
 * reducer on it hooked into the last micro-step of each step (what
 * parallel/zero.c does), so with accum 2 the model alternates between its
 * recording without a hook and the one with it. hook_calls[s]: the hook's
 * calls during step s; replayed[s]: the last micro-step was a replay. */
static void run_steps(gml_comm *dev_group, int accum, int exchange, double *losses, float **params, size_t *n_params,
                      int *hook_calls, int *replayed) {
    gml_backend *be;
    gml_gpt *m;
    gml_adamw *opt;
    assert_int_equal(gml_backend_create("cuda", 0, &be), GML_OK);
    gml_comm *dev = NULL;
    if (dev_group) assert_int_equal(gml_comm_device_group(dev_group, be, &dev), GML_OK);
    assert_int_equal(gml_gpt_create(be, &CFG, B, T, 0, &m), GML_OK);
    assert_int_equal(gml_gpt_init_weights(m, 1), GML_OK);
    gml_adamw_config oc = {0.9, 0.95, 1e-8, 0.1, 1.0};
    assert_int_equal(gml_adamw_create(m, &oc, &opt), GML_OK);
    counting_hook h = {NULL, 0};
    /* 4096-element buckets: dozens per backward, most started mid-backward */
    if (dev) assert_int_equal(gml_dp_reducer_create(dev, gml_gpt_grads(m), gml_gpt_num_params(m), 4096, &h.red), GML_OK);
    if (dev && exchange) { /* wte/wpe reduced after the head, the token rows gathered (NCCL all-gathers) */
        size_t lo0, hi0;
        gml_gpt_unit_range(m, 0, &lo0, &hi0);
        assert_int_equal(gml_dp_reducer_set_early(h.red, hi0), GML_OK);
        gml_dp_reducer_set_exchange_backend(h.red, be);
    }
    float *acc;
    assert_int_equal(be->iface->alloc(be, (void **)&acc, 4), GML_OK);
    gml_rng r;
    gml_rng_init(&r, 7, 1);
    int32_t in[B * T], tg[B * T];
    for (int s = 0; s < MICRO_STEPS; s++) {
        assert_int_equal(gml_gpt_zero_grads(m), GML_OK);
        assert_int_equal(be->iface->memset_zero(be, acc, 4), GML_OK);
        int before = h.calls;
        for (int micro = 0; micro < accum; micro++) {
            for (int i = 0; i < B * T; i++) {
                in[i] = (int32_t)gml_rng_below(&r, CFG.vocab_size);
                tg[i] = (in[i] * 3 + 1) % CFG.vocab_size;
            }
            if (h.red && micro == accum - 1) {
                gml_dp_reducer_begin(h.red);
                gml_gpt_set_grads_ready_hook(m, count_ready, &h, 1);
                if (exchange) gml_gpt_set_encoder_gather(m, gml_dp_reducer_exchange_rows, h.red);
            }
            assert_int_equal(gml_gpt_train_micro(m, in, tg, B, T, 1.0f / (B * T * accum), acc), GML_OK);
        }
        if (h.red) {
            replayed[s] = gml_gpt_micro_replayed(m);
            gml_gpt_set_grads_ready_hook(m, NULL, NULL, 0);
            gml_gpt_set_encoder_gather(m, NULL, NULL);
            if (replayed[s]) {
                gml_dp_reducer_replayed(h.red);
                assert_int_equal(gml_comm_watch(dev, "allreduce (recorded micro-step)"), GML_OK);
            }
            assert_int_equal(gml_dp_reducer_finish(h.red), GML_OK);
            hook_calls[s] = h.calls - before;
        }
        assert_int_equal(gml_adamw_step(opt, 3e-3, NULL), GML_OK);
        float l;
        assert_int_equal(be->iface->download_f32(be, &l, acc, GML_DTYPE_F32, 1), GML_OK);
        losses[s] = l / (B * T * accum);
    }
    *n_params = gml_gpt_num_params(m);
    *params = malloc(*n_params * sizeof **params);
    assert_non_null(*params);
    assert_int_equal(gml_gpt_get_params_host(m, *params), GML_OK);
    be->iface->free(be, acc);
    gml_dp_reducer_destroy(h.red);
    gml_adamw_destroy(opt);
    gml_gpt_destroy(m);
    gml_comm_destroy(dev);
    gml_backend_destroy(be);
}

static void reducer_recorded(gml_comm *world, int accum, int exchange) {
    double la[MICRO_STEPS], lb[MICRO_STEPS];
    float *pa, *pb;
    int calls[MICRO_STEPS], replayed[MICRO_STEPS];
    printf("%d micro-step(s) per step%s\n", accum, exchange ? ", token rows gathered" : "");
    size_t n, nb;
    run_steps(NULL, accum, 0, la, &pa, &n, NULL, NULL);
    run_steps(world, accum, exchange, lb, &pb, &nb, calls, replayed);
    assert_int_equal(n, nb);
    for (int s = 0; s < MICRO_STEPS; s++) {
        printf("step %d: loss %.6f / %.6f, hook calls %d, replayed %d\n", s + 1, la[s], lb[s], calls[s], replayed[s]);
        assert_memory_equal(&la[s], &lb[s], sizeof la[s]);
        /* the hooked micro-step: run, then recorded (the hook runs while
         * recording), then replayed */
        assert_int_equal(replayed[s], s >= 2);
        /* head, blocks, embedding (with the exchange: unit 0 right after the head instead) */
        assert_int_equal(calls[s], s >= 2 ? 0 : CFG.n_layer + 2);
    }
    assert_memory_equal(pa, pb, n * sizeof *pa);
    printf("reducer recorded in the micro-step's graph, %d micro-step(s) per step%s: %d losses and %zu weights "
           "identical to a run without it\n", accum, exchange ? ", token rows gathered" : "", MICRO_STEPS, n);
    free(pa);
    free(pb);
}

static void test_reducer_recorded_in_graph(void **state) {
    (void)state;
    gml_comm *world;
    assert_int_equal(gml_comm_world(&world), GML_OK);
    assert_int_equal(gml_comm_size(world), 1);
    reducer_recorded(world, 1, 0);
    reducer_recorded(world, 2, 0); /* gradient accumulation: the recordings without and with the hook alternate */
    reducer_recorded(world, 1, 1); /* and with the embedding's rows gathered (parallel/dp.h) */
    reducer_recorded(world, 2, 1);
    gml_comm_destroy(world);
}

/* NCCL point to point on a one-rank group: a sendrecv with oneself moves
 * the bytes (a send alone would wait for a receive forever: that is what
 * sendrecv is for); a peer outside the group is refused. */
static void test_nccl_sendrecv_self(void **state) {
    (void)state;
    gml_comm *world, *dev;
    gml_backend *be;
    assert_int_equal(gml_comm_world(&world), GML_OK);
    assert_int_equal(gml_backend_create("cuda", 0, &be), GML_OK);
    assert_int_equal(gml_comm_device_group(world, be, &dev), GML_OK);
    enum { N = 1 << 20 };
    unsigned char *h = malloc(N), *back = malloc(N);
    assert_non_null(h);
    assert_non_null(back);
    for (size_t i = 0; i < N; i++) h[i] = (unsigned char)(i * 7 + 3);
    void *a, *b;
    assert_int_equal(be->iface->alloc(be, &a, N), GML_OK);
    assert_int_equal(be->iface->alloc(be, &b, N), GML_OK);
    assert_int_equal(be->iface->memcpy_h2d(be, a, h, N), GML_OK);
    assert_int_equal(be->iface->memset_zero(be, b, N), GML_OK);
    gml_comm_req *r = NULL;
    assert_int_equal(gml_comm_sendrecv(dev, a, 0, b, 0, N, &r), GML_OK);
    assert_int_equal(gml_comm_wait(&r), GML_OK);
    assert_int_equal(be->iface->memcpy_d2h(be, back, b, N), GML_OK);
    assert_memory_equal(back, h, N);
    gml_error_clear();
    assert_int_equal(gml_comm_send(dev, a, N, 1, NULL), GML_ERR_INVALID_ARG);
    printf("NCCL sendrecv with oneself: %d bytes moved; peer 1 of a one-rank group refused\n", N);
    be->iface->free(be, a);
    be->iface->free(be, b);
    free(h);
    free(back);
    gml_comm_destroy(dev);
    gml_backend_destroy(be);
    gml_comm_destroy(world);
}

/* the GPU paths of ZeRO 1-3 (windows, NCCL gathers and reduces with
 * oneself, AdamW and the gather in parts) against stage 0 */
static void test_zero_stages_one_rank(void **state) {
    (void)state;
    zero_stages_on_one_rank("cuda");
}

/* a restore into each stage on the GPU (ZeRO-1/2: the NCCL all-gather of the master) */
static void test_zero_restore_one_rank(void **state) {
    (void)state;
    zero_restore_on_one_rank("cuda");
}

int main(void) {
    if (gml_backend_cuda_device_count() == 0) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    if (gml_comm_init(NULL, NULL, NULL, NULL) != GML_OK) {
        fprintf(stderr, "test_gpu_dp: MPI did not start: %s\n", gml_error_message());
        return 1;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_reducer_recorded_in_graph),
                                       cmocka_unit_test(test_nccl_sendrecv_self),
                                       cmocka_unit_test(test_zero_stages_one_rank),
                                       cmocka_unit_test(test_zero_restore_one_rank)};
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    gml_comm_finalize();
    return failed;
}
