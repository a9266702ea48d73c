/* train.c — the training loop: it wires the config, the mesh, the data
 * loader, the model, AdamW and the metrics together.
 *
 * One step: grad_accum micro-batches of forward (fused loss + dlogits) and
 * backward on this rank's share of the global batch, the gradients summed
 * over the dp group (parallel/dp.h; each rank's dscale carries 1/dp so the
 * sum is the global mean), then clip + AdamW at the scheduled LR, identical
 * on every rank; the loss is read back once per step. Evaluation on the val
 * split, samples and the progress line come at their configured intervals;
 * rank 0 alone prints and writes files. With ZeRO-3 every forward gathers
 * parameters from all dp ranks, so evaluation, samples and weight exports
 * are done by all ranks together (rank 0 still alone writes).
 * Not for: tensor / pipeline parallelism (to do), how ZeRO shards
 * (parallel/zero.h).
 */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint/ckpt.h"
#include "checkpoint/weights.h"
#include "comm/comm.h"
#include "core/fsutil.h"
#include "core/dataset.h"
#include "core/dropout.h"
#include "core/generate.h"
#include "core/loader.h"
#include "core/optim.h"
#include "launcher/agree.h"
#include "launcher/metrics.h"
#include "launcher/powerlog.h"
#include "launcher/run.h"
#include "parallel/dp.h"
#include "parallel/mesh.h"
#include "parallel/zero.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

gml_status gml_run_model_config(const Gml__RunConfig *cfg, int data_vocab, gml_gpt_config *out) {
    const Gml__ModelConfig *mc = cfg->model;
    memset(out, 0, sizeof *out);
    out->n_layer = mc->n_layer;
    out->n_head = mc->n_head;
    out->n_embd = mc->n_embd;
    out->block_size = mc->block_size;
    out->init_std = mc->init_std;
    out->dropout = mc->dropout;
    out->vocab_size = mc->vocab_size > 0 ? mc->vocab_size : data_vocab;
    if (out->vocab_size < data_vocab)
        return gml_error_set(GML_ERR_BAD_INPUT, "model.vocab_size = %d is smaller than the dataset's vocabulary (%d)",
                             mc->vocab_size, data_vocab);
    out->padded_vocab_size = mc->padded_vocab_size > 0 ? mc->padded_vocab_size : (out->vocab_size + 63) / 64 * 64;
    if (out->padded_vocab_size < out->vocab_size)
        return gml_error_set(GML_ERR_BAD_INPUT, "model.padded_vocab_size = %d is smaller than the vocabulary (%d)",
                             out->padded_vocab_size, out->vocab_size);
    return GML_OK;
}


typedef struct {
    const Gml__RunConfig *cfg;
    gml_backend *be;
    gml_dataset *ds;
    gml_gpt *model;
    gml_zero *opt; /* AdamW, ZeRO-sharded over the dp group */
    gml_loader *train, *val;
    gml_metrics *metrics;
    float *loss_acc; /* (1) device */
    int32_t *inputs, *targets; /* (B,T) host */
    int B, T;
    gml_mesh *mesh;
    gml_comm *dp_dev; /* the dp ranks for device buffers (NCCL on GPUs) */
    int rank0; /* this rank prints and writes files */
    char ckpt_dir[4096];
    int start_step; /* optimizer steps already done (resume) */
    gml_powerlog power; /* this rank's GPU power readings (none on CPU) */
} trainer;

/* SIGTERM / SIGUSR1 (SLURM's warning before a time limit): finish the step,
 * checkpoint, exit GML_EXIT_REQUEUE. */
static volatile sig_atomic_t g_stop_signal;
static void on_stop_signal(int sig) { g_stop_signal = sig; }

static gml_status install_stop_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGUSR1, &sa, NULL) != 0)
        return gml_error_set(GML_ERR_INTERNAL, "cannot install the SIGTERM/SIGUSR1 handlers");
    return GML_OK;
}

/* A stop request that needs no signal forwarding: the file out_dir/STOP
 * (train.sbatch writes it on SIGUSR1, because not every mpirun passes
 * SIGUSR1 on to the ranks; a user may touch it too). Rank 0 looks at most
 * once a second (a stat on a shared filesystem is not free) and deletes it
 * once the stop checkpoint is committed, so a requeued job runs on. */
typedef struct {
    char path[4200];
    double last_look;
} stop_file;

static int stop_file_present(stop_file *f, double now) {
    if (now - f->last_look < 1.0) return 0;
    f->last_look = now;
    return access(f->path, F_OK) == 0;
}

/* Test hook, documented in README: GML_TEST_SIGNAL_AT_STEP=N makes world
 * rank 0 send itself SIGUSR1 when step N is done (a deterministic stand-in for
 * a scheduler's preemption signal). */
static int test_signal_step(void) {
    const char *v = getenv("GML_TEST_SIGNAL_AT_STEP");
    return v ? atoi(v) : -1;
}

/* Test hook, documented in README: GML_TEST_FAULT=RANK,STEP,KILL|STOP makes
 * world rank RANK SIGKILL or SIGSTOP itself when step STEP is done (a dead or
 * hung peer for the other ranks). */
static void test_fault(int rank, int done) {
    const char *v = getenv("GML_TEST_FAULT");
    int r = -1, s = -1;
    char kind[8] = "";
    if (!v || sscanf(v, "%d,%d,%7s", &r, &s, kind) != 3 || r != rank || s != done) return;
    fflush(stdout);
    raise(strcmp(kind, "STOP") == 0 ? SIGSTOP : SIGKILL);
}

/* The ZeRO stage to run: the configured one, except stage 0 on one rank
 * (nothing to shard). Measurement hook, documented in README:
 * GML_ZERO_ONE_RANK=1 keeps the configured stage on one rank, its windows,
 * gathers and reductions with oneself included: the stage's cost without
 * communication, on one GPU. */
static int zero_stage_for(int zero, int dp) {
    const char *v = getenv("GML_ZERO_ONE_RANK");
    return dp > 1 || (v && !strcmp(v, "1")) ? zero : 0;
}

/* A one-off fact: on stdout and in metrics.jsonl (rank 0). */
static gml_status info(trainer *t, const char *key, const char *value) {
    if (!t->rank0) return GML_OK;
    printf("%s: %s\n", key, value);
    return gml_metrics_info(t->metrics, key, value);
}

/* A finished checkpoint write (time, GB/s; rank 0: the commit), once. */
static gml_status log_checkpoint_write(trainer *t) {
    char line[512];
    if (!gml_ckpt_writer_report(line, sizeof line) || !t->rank0) return GML_OK;
    return info(t, "checkpoint written", line);
}

static gml_status save_checkpoint(trainer *t, int done, const char *why) {
    gml_ckpt_progress prog = {done, 0, 0};
    gml_loader_position(t->train, &prog.loader_epoch, &prog.loader_index);
    gml_ckpt_save_stats s;
    const Gml__CheckpointConfig *cc = t->cfg->checkpoint;
    GML_CHECK(gml_ckpt_save(t->ckpt_dir, t->model, t->opt, t->mesh, t->cfg, &prog, cc->keep_last, cc->async, &s));
    GML_CHECK(log_checkpoint_write(t)); /* the previous one, reaped by the save (or this one, synchronous) */
    char line[4400];
    snprintf(line, sizeof line, "step %d (%s) -> %s/step_%08d, %.3f s stall (copy of %.1f MB to host %.3f s, "
             "waiting for the previous write %.3f s%s)", done, why, t->ckpt_dir, done, s.stall_s, s.bytes / 1e6,
             s.copy_s, s.wait_s, cc->async ? "; written in the background" : ", then the write and the commit");
    return info(t, "checkpoint", line);
}

static gml_status evaluate(trainer *t, double *val_loss) {
    gml_backend *be = t->be;
    int batches = t->cfg->eval->batches;
    GML_CHECK(gml_loader_reset(t->val));
    GML_CHECK(be->iface->memset_zero(be, t->loss_acc, 4));
    for (int i = 0; i < batches; i++) {
        GML_CHECK(gml_loader_next(t->val, t->inputs, t->targets));
        GML_CHECK(gml_gpt_forward(t->model, t->inputs, t->targets, t->B, t->T, 0.0f));
        GML_CHECK(gml_gpt_loss_accumulate(t->model, t->loss_acc));
    }
    float sum = 0.0f;
    GML_CHECK(be->iface->download_f32(be, &sum, t->loss_acc, GML_DTYPE_F32, 1));
    GML_CHECK(gml_comm_allreduce_sum_f32(t->mesh->dp_c, &sum, 1, NULL));
    *val_loss = (double)sum / ((double)batches * t->B * t->T * t->mesh->dp);
    return GML_OK;
}

/* Rank 0 writes the weights to `path`; with ZeRO-3 all ranks first gather
 * them (collective: every rank calls this). */
static gml_status save_weights(trainer *t, const char *path) {
    GML_CHECK(gml_zero_gather_params_host(t->opt));
    gml_status st = t->rank0 ? gml_weights_save(t->model, path, 0) : GML_OK; /* tmp + fsync + rename */
    gml_zero_drop_params_host(t->opt);
    return st;
}

static gml_status sample(trainer *t, int step) {
    const Gml__SampleConfig *sc = t->cfg->sample;
    /* ZeRO-3: each forward gathers from every rank, so all ranks generate
     * (the same text, same seed); rank 0 records it */
    int all = gml_zero_stage(t->opt) == 3;
    if (sc->tokens <= 0 || (!t->rank0 && !all)) return GML_OK;
    gml_sample_opts o = {sc->tokens, sc->temperature, sc->top_k, t->cfg->train->seed + (uint64_t)step};
    size_t cap = strlen(sc->prompt) + (size_t)sc->tokens + 1;
    char *text = malloc(cap);
    if (!text) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    gml_status st = gml_generate(t->model, gml_dataset_tokenizer(t->ds), sc->prompt, &o, text, cap);
    if (st == GML_OK && t->rank0) st = gml_metrics_sample(t->metrics, step, text);
    free(text);
    return st;
}

static gml_status train_loop(trainer *t) {
    const Gml__RunConfig *cfg = t->cfg;
    gml_backend *be = t->be;
    int steps = cfg->train->steps, accum = cfg->train->grad_accum;
    double tokens_per_step = (double)t->B * t->T * accum * t->mesh->dp; /* global */
    gml_lr_schedule sched = {GML_SCHED_COSINE, cfg->optim->lr, cfg->optim->min_lr_ratio, cfg->optim->warmup_steps,
                             steps};
    GML_CHECK(gml_sched_parse(cfg->optim->schedule, &sched.kind));
    double flops_tok = gml_gpt_flops_per_token(t->model, t->T);
    float dscale = 1.0f / (float)tokens_per_step;

    double val_loss, best_val;
    int best_step = t->start_step;
    GML_CHECK(evaluate(t, &val_loss));
    if (t->rank0) GML_CHECK(gml_metrics_eval(t->metrics, t->start_step, val_loss));
    best_val = val_loss;
    const double start_val = val_loss;
    const Gml__CheckpointConfig *cc = cfg->checkpoint;
    const int ckpt_on = cc->every_steps > 0 || cc->every_minutes > 0;
    const int signal_at = test_signal_step();

    double t_start = now_s(), window_t0 = t_start, last_ckpt = t_start;
    GML_CHECK(gml_powerlog_start(&t->power, t_start));
    stop_file stop_req = {.last_look = -1e30};
    snprintf(stop_req.path, sizeof stop_req.path, "%s/STOP", cfg->train->out_dir);
    int window_steps = 0;
    for (int step = t->start_step; step < steps; step++) {
        double t0 = now_s();
        GML_CHECK(gml_gpt_zero_grads(t->model));
        GML_CHECK(be->iface->memset_zero(be, t->loss_acc, 4));
        for (int micro = 0; micro < accum; micro++) {
            GML_CHECK(gml_loader_next(t->train, t->inputs, t->targets));
            /* dropout masks: a function of (seed, step, micro-step) only */
            uint64_t micro_index = (uint64_t)step * (uint64_t)accum + (uint64_t)micro;
            gml_gpt_set_dropout_key(t->model, gml_mix64(cfg->train->seed ^ gml_mix64(micro_index)),
                                    (uint64_t)t->mesh->dp_rank * (uint64_t)t->B);
            if (micro == accum - 1) gml_zero_before_last_backward(t->opt); /* overlap the reduction */
            GML_CHECK(gml_gpt_train_micro(t->model, t->inputs, t->targets, t->B, t->T, dscale, t->loss_acc));
            GML_CHECK(gml_loader_prefetch(t->train)); /* the next micro-batch, while the GPU computes this one */
        }
        double lr = gml_lr_at(&sched, step), norm = 0.0;
        GML_CHECK(gml_zero_step(t->opt, lr, &norm)); /* reduce over dp, clip, update, gather */
        float loss_sum = 0.0f;
        GML_CHECK(be->iface->download_f32(be, &loss_sum, t->loss_acc, GML_DTYPE_F32, 1));
        GML_CHECK(gml_comm_allreduce_sum_f32(t->mesh->dp_c, &loss_sum, 1, NULL));
        double loss = (double)loss_sum / tokens_per_step;
        if (!isfinite(loss))
            return gml_error_set(GML_ERR_NUMERIC, "train loss is %g at step %d ---> HINT: lower optim.lr", loss,
                                 step + 1);
        double t1 = now_s();
        window_steps++;
        int done = step + 1;
        if (done % cfg->log->every == 0 || done == steps) {
            gml_train_stats s = {0};
            GML_CHECK(gml_powerlog_sample(&t->power, &s.power_w, &s.sm_mhz, &s.clock_reasons)); /* every rank */
            if (t->rank0) {
                double window_s = t1 - window_t0;
                size_t in_use = 0, peak = 0;
                be->iface->mem_stats(be, &in_use, &peak);
                s.step = done;
                s.steps = steps;
                s.loss = loss;
                s.lr = lr;
                s.grad_norm = norm;
                s.step_s = t1 - t0;
                s.tokens_per_s = window_s > 0 ? tokens_per_step * window_steps / window_s : 0.0;
                s.mfu = be->peak_flops > 0 ? flops_tok * s.tokens_per_s / be->peak_flops : -1.0;
                s.mem_bytes = (double)peak;
                s.eta_s = (t1 - t_start) / (done - t->start_step) * (steps - done);
                GML_CHECK(gml_metrics_train(t->metrics, &s));
            }
            window_t0 = now_s();
            window_steps = 0;
        }
        int eval_every = cfg->eval->every, sample_every = cfg->sample->every;
        double aside_t0 = now_s(); /* eval and sampling stay out of tokens/s */
        if ((eval_every > 0 && done % eval_every == 0) || done == steps) {
            GML_CHECK(evaluate(t, &val_loss));
            if (t->rank0) GML_CHECK(gml_metrics_eval(t->metrics, done, val_loss));
            if (val_loss < best_val) {
                best_val = val_loss, best_step = done;
                if (cfg->eval->save_best) { /* every rank: val_loss is the group's */
                    char path[4200];
                    snprintf(path, sizeof path, "%s/best.h5", cfg->train->out_dir);
                    GML_CHECK(save_weights(t, path));
                }
            }
        }
        if ((sample_every > 0 && done % sample_every == 0) || done == steps) GML_CHECK(sample(t, done));
        if (t->rank0 && done == signal_at) raise(SIGUSR1);
        test_fault(t->mesh->rank, done);
        /* checkpoint triggers, agreed by all ranks: a stop signal on any rank,
         * the stop file, every_steps, every_minutes (rank 0's clock) */
        float flags[3] = {g_stop_signal ? 1.0f : 0.0f,
                          t->rank0 && cc->every_minutes > 0 && now_s() - last_ckpt >= 60.0 * cc->every_minutes,
                          t->rank0 && !g_stop_signal && stop_file_present(&stop_req, now_s())};
        if (t->mesh->world > 1) GML_CHECK(gml_comm_allreduce_sum_f32(t->mesh->world_c, flags, 3, NULL));
        int stop = flags[0] > 0.0f || flags[2] > 0.0f;
        int due = (cc->every_steps > 0 && done % cc->every_steps == 0) || flags[1] > 0.0f || (ckpt_on && done == steps);
        GML_CHECK(gml_ckpt_writer_wait(0)); /* every rank: a failed background write stops the run */
        GML_CHECK(log_checkpoint_write(t));
        if (stop || due) {
            GML_CHECK(save_checkpoint(t, done, !stop ? "scheduled" : flags[0] > 0.0f ? "stop signal" : "stop file"));
            last_ckpt = now_s();
        }
        if (stop) {
            GML_CHECK(gml_ckpt_writer_wait(1)); /* committed before we exit for requeue; every rank: */
            GML_CHECK(log_checkpoint_write(t));  /* an exit would kill its writer */
            if (t->rank0 && unlink(stop_req.path) != 0 && errno != ENOENT)
                return gml_error_set(GML_ERR_IO, "%s: cannot delete the stop file (%s): a requeued job would stop "
                                     "at once", stop_req.path, strerror(errno));
            return GML_PREEMPTED;
        }
        window_t0 += now_s() - aside_t0;
    }
    GML_CHECK(gml_ckpt_writer_wait(1)); /* every rank's writer done (an exit would kill it) */
    GML_CHECK(log_checkpoint_write(t));
    char line[160];
    if (t->mesh->dp > 1) {
        snprintf(line, sizeof line, "%d %s of the last step started while backward was running",
                 gml_zero_overlapped_buckets(t->opt),
                 gml_zero_stage(t->opt) >= 2 ? "layer gradient reduction(s)" : "gradient bucket(s)");
        GML_CHECK(info(t, "dp overlap", line));
    }
    char summary[1024];
    int have_power = 0; /* every rank: a collective */
    GML_CHECK(gml_powerlog_summary(&t->power, t->mesh->world > 1 ? t->mesh->world_c : NULL, now_s(),
                                   tokens_per_step * (steps - t->start_step), summary, sizeof summary, &have_power));
    if (have_power) GML_CHECK(info(t, "power", summary));
    snprintf(line, sizeof line, "best %.4f at step %d%s, last %.4f, start %.4f; %.1f s training", best_val,
             best_step, cfg->eval->save_best && best_step > t->start_step ? " (weights in best.h5)" : "", val_loss,
             start_val, now_s() - t_start);
    return info(t, "val loss", line);
}

gml_status gml_cmd_train(const Gml__RunConfig *cfg, const char *config_path, const char *resume) {
    gml_status st = GML_OK;
    trainer t = {0};
    t.cfg = cfg;
    char path[4096];
    if (cfg->data->path[0] == '\0')
        return gml_error_set(GML_ERR_BAD_INPUT, "%s: data.path is not set ---> HINT: make a dataset with "
                             "`gml-dist prep --out FILE.h5 TEXT...` and set data.path: FILE.h5", config_path);
    int rank = 0, world = 1, local_rank = 0;
    GML_CHECK_GOTO(gml_comm_init(&rank, &world, &local_rank, NULL), st, done);
    t.rank0 = rank == 0;
    if (world > 1) { /* before the layout, which the config sets */
        gml_comm *all = NULL;
        GML_CHECK_GOTO(gml_comm_world(&all), st, done);
        st = gml_agree_config(all, cfg, config_path);
        gml_comm_destroy(all);
        if (st != GML_OK) goto done;
    }
    const Gml__ParallelConfig *pc = cfg->parallel;
    /* one process per replica unless told otherwise: dp defaults to the world */
    int dp = pc->dp == 1 && pc->tp == 1 && pc->pp == 1 ? world : pc->dp;
    if (pc->tp > 1 || pc->pp > 1) {
        st = gml_error_set(GML_ERR_BAD_INPUT, "%s: parallel.tp = %d, parallel.pp = %d: only data parallelism "
                           "(tp = pp = 1, ZeRO 0-3) is implemented yet", config_path, pc->tp, pc->pp);
        goto done;
    }
    gml_comm_set_timeout(pc->timeout_s);
    GML_CHECK_GOTO(gml_mesh_create(dp, pc->pp, pc->tp, &t.mesh), st, done);
    GML_CHECK_GOTO(gml_dataset_open(cfg->data->path, &t.ds), st, done);
    GML_CHECK_GOTO(gml_agree_dataset(t.mesh->world_c, t.ds), st, done);
    gml_gpt_config mc;
    GML_CHECK_GOTO(gml_run_model_config(cfg, gml_dataset_vocab_size(t.ds), &mc), st, done);
    t.B = cfg->data->batch_size;
    t.T = cfg->data->seq_len > 0 ? cfg->data->seq_len : mc.block_size;
    if (t.T > mc.block_size) {
        st = gml_error_set(GML_ERR_BAD_INPUT, "data.seq_len = %d exceeds model.block_size = %d", t.T, mc.block_size);
        goto done;
    }
    GML_CHECK_GOTO(gml_loader_create(t.ds, GML_SPLIT_TRAIN, t.B, t.T, cfg->train->seed, 1, t.mesh->dp_rank, dp,
                                     &t.train), st, done);
    GML_CHECK_GOTO(gml_loader_create(t.ds, GML_SPLIT_VAL, t.B, t.T, cfg->train->seed, 0, t.mesh->dp_rank, dp, &t.val),
                   st, done);
    if (t.rank0) GML_CHECK_GOTO(gml_mkdir_p(cfg->train->out_dir), st, done);
    GML_CHECK_GOTO(gml_backend_create(cfg->train->device, local_rank, &t.be), st, done);
    char why[256];
    GML_CHECK_GOTO(gml_powerlog_open(&t.power, t.be->pci_bus_id, why, sizeof why), st, done);
    GML_CHECK_GOTO(gml_comm_device_group(t.mesh->dp_c, t.be, &t.dp_dev), st, done);
    const int zero = zero_stage_for(pc->zero, dp);
    mc.shard_ways = dp;            /* equal ZeRO shards for any parameter count */
    mc.sharded_params = zero == 3; /* ZeRO-3: no full parameter buffers at all */
    mc.sharded_grads = zero == 2;  /* ZeRO-2: no full gradient buffer */
    /* the (N, Vp) logits for a quarter of the micro-batch at a time (1.24 GB
     * less for GPT-2 124M at 16 x 1024), ZeRO-3 included */
    mc.head_chunks = 4;
    GML_CHECK_GOTO(gml_gpt_create(t.be, &mc, t.B, t.T, cfg->train->recompute, &t.model), st, done);
    gml_adamw_config oc = {cfg->optim->beta1, cfg->optim->beta2, cfg->optim->eps, cfg->optim->weight_decay,
                           cfg->optim->grad_clip};
    size_t bucket = (size_t)(pc->bucket_mib * 1048576.0 / 4.0);
    GML_CHECK_GOTO(gml_zero_create(t.model, t.mesh->dp_c, t.dp_dev, zero, bucket ? bucket : 1, &oc, &t.opt), st,
                   done);
    gml_embedding_grads eg = !strcmp(pc->embedding_grads, "gather")   ? GML_EMBEDDING_GATHER
                             : !strcmp(pc->embedding_grads, "reduce") ? GML_EMBEDDING_REDUCE
                                                                      : GML_EMBEDDING_AUTO;
    GML_CHECK_GOTO(gml_zero_set_embedding_grads(t.opt, eg, (size_t)t.B * (size_t)t.T), st, done);
    if (cfg->checkpoint->dir[0]) snprintf(t.ckpt_dir, sizeof t.ckpt_dir, "%s", cfg->checkpoint->dir);
    else snprintf(t.ckpt_dir, sizeof t.ckpt_dir, "%s/ckpt", cfg->train->out_dir);
    GML_CHECK_GOTO(install_stop_handlers(), st, done);
    {
        gml_ckpt_progress prog = {0, 0, 0};
        int loaded = 0;
        char used[4096] = "";
        double t_resume = now_s(), read = 0.0;
        GML_CHECK_GOTO(gml_ckpt_resume(t.ckpt_dir, resume, t.model, t.opt, t.mesh, &prog, &loaded, used,
                                       sizeof used, &read), st, done);
        t_resume = now_s() - t_resume;
        if (loaded) {
            if (prog.step > cfg->train->steps) {
                st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s' is at step %lld, past train.steps = %d", used,
                                   (long long)prog.step, cfg->train->steps);
                goto done;
            }
            GML_CHECK_GOTO(gml_loader_seek(t.train, prog.loader_epoch, prog.loader_index), st, done);
            t.start_step = (int)prog.step;
        } else { /* after gml_zero_create: with ZeRO-3 each rank keeps its shard of the init
                  * (nothing else is drawn first: a fresh run's weights do not depend on --resume) */
            GML_CHECK_GOTO(gml_gpt_init_weights(t.model, cfg->train->seed), st, done);
        }
        if (strcmp(resume, "none") != 0 && t.rank0) {
            if (loaded) /* rank 0's share: the weights and the moments of its optimizer range */
                printf("resume: %s (step %lld): %.0f bytes (%.2f GB) read%s, verified and restored in %.2f s\n",
                       used, (long long)prog.step, read, read / 1e9, t.mesh->world > 1 ? " by rank 0" : "", t_resume);
            else printf("resume: no checkpoint in %s, starting fresh\n", t.ckpt_dir);
        }
    }
    GML_CHECK_GOTO(t.be->iface->alloc(t.be, (void **)&t.loss_acc, 4), st, done);
    t.inputs = malloc((size_t)t.B * t.T * sizeof *t.inputs);
    t.targets = malloc((size_t)t.B * t.T * sizeof *t.targets);
    if (!t.inputs || !t.targets) {
        st = gml_error_set(GML_ERR_NOMEM, "out of host memory");
        goto done;
    }
    if (t.rank0)
        GML_CHECK_GOTO(gml_metrics_open(cfg->train->out_dir, cfg->log->jsonl, cfg->log->tensorboard, 0, &t.metrics),
                       st, done);
    char line[512];
    int threads = omp_get_max_threads(); /* init, checkpoint reads, the CPU backend */
    snprintf(line, sizeof line, "%s (%s); %d OpenMP thread%s per rank", t.be->name, t.be->device_name, threads,
             threads == 1 ? "" : "s");
    GML_CHECK_GOTO(info(&t, "device", line), st, done);
    if (t.be->device_index >= 0 && !t.power.p) {
        snprintf(line, sizeof line, "not read (%s)", why);
        GML_CHECK_GOTO(info(&t, "power", line), st, done);
    }
    snprintf(line, sizeof line, "%zu parameters: %d layers, %d heads, width %d, context %d, vocab %d (padded %d)",
             gml_gpt_num_params(t.model), mc.n_layer, mc.n_head, mc.n_embd, mc.block_size, mc.vocab_size,
             mc.padded_vocab_size);
    GML_CHECK_GOTO(info(&t, "model", line), st, done);
    snprintf(line, sizeof line, "%s: %llu train / %llu val tokens; %d x %d x %d x %d (accum x dp x batch x T) tokens "
             "per step", cfg->data->path, (unsigned long long)gml_dataset_num_tokens(t.ds, GML_SPLIT_TRAIN),
             (unsigned long long)gml_dataset_num_tokens(t.ds, GML_SPLIT_VAL), cfg->train->grad_accum, dp, t.B, t.T);
    GML_CHECK_GOTO(info(&t, "data", line), st, done);
    size_t state = gml_zero_state_bytes(t.opt);
    snprintf(line, sizeof line, "dp %d, zero %d: model state %zu bytes (%.1f MiB) on rank 0 (%s)%s", dp,
             gml_zero_stage(t.opt), state, state / 1048576.0,
             gml_zero_stage(t.opt) == 3   ? "shards of params, grads, Adam moments; gather windows"
             : gml_zero_stage(t.opt) == 2 ? "params; shards of grads, Adam moments; gradient windows"
                                          : "params, grads, Adam moments",
             dp == 1 || gml_zero_stage(t.opt) > 1 ? ""
             : gml_zero_embedding_gathered(t.opt) ? "; embedding gradient: token rows gathered, wte/wpe reduced early"
                                                  : "; embedding gradient: all-reduced after backward");
    GML_CHECK_GOTO(info(&t, "parallel", line), st, done);

    GML_CHECK_GOTO(train_loop(&t), st, done);

    if (world > 1) { /* every rank's peak, gathered to rank 0's report */
        size_t in_use = 0, peak = 0;
        t.be->iface->mem_stats(t.be, &in_use, &peak);
        float mine = (float)(peak / 1048576.0), *all = calloc((size_t)world, sizeof *all);
        if (!all) {
            st = gml_error_set(GML_ERR_NOMEM, "out of host memory");
            goto done;
        }
        all[rank] = mine;
        st = gml_comm_allgather_f32(t.mesh->world_c, all + rank, all, 1, NULL);
        int n = 0;
        for (int r = 0; r < world && st == GML_OK && n < (int)sizeof line - 24; r++)
            n += snprintf(line + n, sizeof line - (size_t)n, "%s%.1f", r ? " " : "", (double)all[r]);
        free(all);
        if (st != GML_OK) goto done;
        GML_CHECK_GOTO(info(&t, "peak memory per rank (MiB)", line), st, done);
    }
    snprintf(path, sizeof path, "%s/model.h5", cfg->train->out_dir);
    GML_CHECK_GOTO(save_weights(&t, path), st, done); /* every rank (ZeRO-3 gathers); rank 0 writes */
    GML_CHECK_GOTO(info(&t, "weights", path), st, done);
done:
    gml_metrics_close(t.metrics);
    free(t.inputs);
    free(t.targets);
    if (t.loss_acc) t.be->iface->free(t.be, t.loss_acc);
    gml_zero_destroy(t.opt);
    gml_gpt_destroy(t.model);
    gml_powerlog_close(&t.power);
    gml_comm_destroy(t.dp_dev); /* before the backend whose stream it uses */
    gml_backend_destroy(t.be);
    if (t.train) gml_loader_destroy(t.train);
    if (t.val) gml_loader_destroy(t.val);
    if (t.ds) gml_dataset_close(t.ds);
    gml_mesh_destroy(t.mesh);
    return st;
}
