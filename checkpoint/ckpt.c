/* ckpt.c — saving a checkpoint: the host copy of this rank's shard, the
 * writer job (rank file, marker; on rank 0 also waiting for the other
 * ranks, the top file with the manifest and virtual datasets, the commit).
 * The protocol is in ckpt.h. Not for: reading (ckpt_read.c), the root
 * directory (ckpt_dir.c), the background process (ckpt_writer.c). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint/ckpt_impl.h"
#include "checkpoint/h5util.h"
#include "checkpoint/rankfile.h"
#include "checkpoint/vds.h"
#include "core/crc32c.h"
#include "core/fsutil.h"
#include "core/hostmem.h"
#include "core/version.h"
#include "proto/checkpoint.pb-c.h"

double gml_ckpt_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

gml_status gml_ckpt_agree(gml_comm *world, gml_status mine, const char *what) {
    float bad = mine != GML_OK ? 1.0f : 0.0f;
    gml_status cst = gml_comm_allreduce_sum_f32(world, &bad, 1, NULL);
    if (mine != GML_OK) return mine;
    if (cst != GML_OK) return cst;
    if (bad > 0.0f) return gml_error_set(GML_ERR_IO, "%s failed on %d other rank(s)", what, (int)bad);
    return GML_OK;
}

/* Test hook, documented in README: GML_TEST_CKPT_WRITER=RANK,STEP,fail|hang|kill
 * makes dp rank RANK's writer of step STEP fail, sleep 30 s first, or SIGKILL
 * itself. */
enum { FAULT_NONE, FAULT_FAIL, FAULT_HANG, FAULT_KILL };
static int writer_fault(int rank, long long step) {
    const char *v = getenv("GML_TEST_CKPT_WRITER");
    int r = -1;
    long long s = -1;
    char kind[8] = "";
    if (!v || sscanf(v, "%d,%lld,%7s", &r, &s, kind) != 3 || r != rank || s != step) return FAULT_NONE;
    return !strcmp(kind, "fail") ? FAULT_FAIL : !strcmp(kind, "hang") ? FAULT_HANG : FAULT_KILL;
}

/* Everything a writer needs, made by the parent before the fork (the child
 * reads its copy-on-write image; nothing in it is touched after the fork). */
typedef struct {
    char dir[4096], tmpdir[4200], name[64];
    int rank, ranks, keep_last, fault;
    int64_t step;
    uint64_t save_id;
    double timeout_s;          /* the wait for the other ranks' markers; <= 0: the default */
    size_t lo, hi;             /* this rank's shard range of the flat parameter space */
    float *t[3];               /* (hi - lo) f32 each: master weights, adam_m, adam_v */
    const gml_param_registry *reg;
    Gml__CheckpointManifest man; /* everything but tensors, rank files and save id */
    Gml__Layout lay;
    char device[32];
    uint8_t *cfg_buf;          /* the packed RunConfig */
    size_t cfg_n;
} save_job;

static void job_free(save_job *j) {
    if (!j) return;
    for (int k = 0; k < 3; k++) free(j->t[k]);
    free(j->cfg_buf);
    free(j);
}

/* ------------------------------------------------------------ top file */

/* state.h5 of the checkpoint in j->tmpdir: attributes, manifest, config and
 * a virtual dataset per tensor over the pieces of rf[0..ranks). */
static gml_status write_top(const save_job *j, Gml__RankFile *const *rf, const char *file) {
    const gml_param_registry *reg = j->reg;
    gml_status st = GML_OK;
    Gml__CheckpointManifest man = j->man;
    Gml__Layout lay = j->lay;
    man.layout = &lay;
    lay.device = (char *)j->device;
    size_t nt = (size_t)reg->n * 3;
    Gml__TensorEntry *ents = calloc(nt, sizeof *ents);
    Gml__TensorEntry **eptr = calloc(nt, sizeof *eptr);
    int64_t *shapes = calloc(nt * GML_PARAM_MAX_DIMS, sizeof *shapes);
    gml_vds_source *src = calloc((size_t)j->ranks, sizeof *src);
    uint8_t *man_buf = NULL;
    hid_t f = -1, g = -1;
    if (!ents || !eptr || !shapes || !src) {
        st = gml_error_set(GML_ERR_NOMEM, "out of host memory for the checkpoint manifest");
        goto done;
    }
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < reg->n; i++) {
            const gml_param_spec *p = &reg->specs[i];
            size_t e = (size_t)k * (size_t)reg->n + (size_t)i;
            gml__tensor_entry__init(&ents[e]);
            ents[e].group = (char *)gml_ckpt_groups[k];
            ents[e].name = (char *)p->name;
            ents[e].n_shape = (size_t)p->ndim;
            ents[e].shape = shapes + e * GML_PARAM_MAX_DIMS;
            for (int d = 0; d < p->ndim; d++) ents[e].shape[d] = p->shape[d];
            ents[e].dtype = (char *)"f32";
            eptr[e] = &ents[e];
        }
    man.n_tensors = nt;
    man.tensors = eptr;
    man.n_rank_files = (size_t)j->ranks;
    man.rank_files = (Gml__RankFile **)rf;
    man.has_save_id = 1, man.save_id = j->save_id;
    size_t man_n = gml__checkpoint_manifest__get_packed_size(&man);
    man_buf = malloc(man_n ? man_n : 1);
    if (!man_buf) {
        st = gml_error_set(GML_ERR_NOMEM, "out of host memory for the checkpoint manifest");
        goto done;
    }
    gml__checkpoint_manifest__pack(&man, man_buf);
    f = gml_h5_create_v110(file);
    if (f < 0) {
        st = gml_error_set(GML_ERR_IO, "cannot create checkpoint file '%s'", file);
        goto done;
    }
    if (gml_h5_write_str_attr(f, "format", GML_CKPT_FORMAT) < 0 ||
        gml_h5_write_int_attr(f, "format_version", GML_CKPT_VERSION) < 0 ||
        gml_h5_write_u64_attr(f, "step", (uint64_t)j->step) < 0 ||
        gml_h5_write_u64_attr(f, "manifest_crc32c", gml_crc32c(man_buf, man_n)) < 0 ||
        gml_h5_write_u64_attr(f, "config_crc32c", gml_crc32c(j->cfg_buf, j->cfg_n)) < 0 ||
        gml_h5_write_bytes(f, "manifest", man_buf, man_n) < 0 || gml_h5_write_bytes(f, "config", j->cfg_buf, j->cfg_n) < 0) {
        st = gml_error_set(GML_ERR_IO, "writing the manifest of '%s' failed (disk full?)", file);
        goto done;
    }
    for (int k = 0; k < 3 && st == GML_OK; k++) {
        g = H5Gcreate2(f, gml_ckpt_groups[k], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) st = gml_error_set(GML_ERR_IO, "cannot create group '%s' in '%s'", gml_ckpt_groups[k], file);
        for (int i = 0; i < reg->n && st == GML_OK; i++) {
            const gml_param_spec *p = &reg->specs[i];
            char dset[GML_PARAM_NAME_MAX + 16];
            snprintf(dset, sizeof dset, "/%s/%s", gml_ckpt_groups[k], p->name);
            int n = 0;
            for (int r = 0; r < j->ranks; r++) /* rank order is flat order */
                for (size_t q = 0; q < rf[r]->n_pieces; q++) {
                    const Gml__TensorPiece *pc = rf[r]->pieces[q];
                    if (strcmp(pc->group, gml_ckpt_groups[k]) != 0 || strcmp(pc->name, p->name) != 0) continue;
                    src[n].file = rf[r]->file;
                    src[n].dset = dset;
                    src[n].offset = pc->offset;
                    src[n].count = pc->count;
                    n++;
                    break;
                }
            st = gml_vds_create(g, p->name, p->ndim, p->shape, src, n, file);
        }
        H5Gclose(g);
        g = -1;
    }
done:
    if (f >= 0 && H5Fclose(f) < 0 && st == GML_OK) st = gml_error_set(GML_ERR_IO, "closing '%s' failed", file);
    if (st == GML_OK) st = gml_fsync_path(file);
    free(ents);
    free(eptr);
    free(shapes);
    free(src);
    free(man_buf);
    return st;
}

/* ------------------------------------------------------------ the writer job */

static off_t file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? sb.st_size : -1;
}

/* Rank 0, after its own rank file: wait for the others, write state.h5,
 * publish. rep gets the totals. */
static gml_status commit(const save_job *j, gml_rankfile_entry *own, double t0, gml_ckpt_report *rep) {
    Gml__RankFile **rf = calloc((size_t)j->ranks, sizeof *rf);
    if (!rf) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    double own_s = own->msg.write_s;
    double timeout = j->timeout_s > 0 ? j->timeout_s : 600.0 + 4.0 * own_s;
    gml_status st = gml_rankfile_wait(j->tmpdir, j->ranks, j->step, timeout, rf);
    char path[4400];
    if (st == GML_OK) {
        rf[0] = &own->msg;
        double bytes = 0;
        rep->rank_min_gbps = -1;
        for (int r = 0; r < j->ranks && st == GML_OK; r++) {
            snprintf(path, sizeof path, "%s/%s", j->tmpdir, rf[r]->file);
            if (file_size(path) != (off_t)rf[r]->bytes) {
                st = gml_error_set(GML_ERR_IO, "rank file '%s' is not the size its writer reported", path);
                break;
            }
            double s = rf[r]->write_s, gbps = s > 0 ? (double)rf[r]->bytes / 1e9 / s : 0.0;
            bytes += (double)rf[r]->bytes;
            if (rep->rank_min_gbps < 0 || gbps < rep->rank_min_gbps) rep->rank_min_gbps = gbps;
            if (gbps > rep->rank_max_gbps) rep->rank_max_gbps = gbps;
            if (s >= rep->slowest_s) rep->slowest_s = s, rep->slowest_rank = r;
        }
        snprintf(path, sizeof path, "%s/%s", j->tmpdir, GML_CKPT_STATE_FILE);
        if (st == GML_OK) st = write_top(j, rf, path);
        if (st == GML_OK) {
            bytes += (double)file_size(path);
            gml_rankfile_unmark(j->tmpdir, j->ranks);
            st = gml_ckpt_publish(j->dir, j->tmpdir, j->name, j->keep_last);
        }
        rep->committed = st == GML_OK;
        rep->ranks = j->ranks;
        rep->bytes = bytes;
        rep->seconds = gml_ckpt_now() - t0;
    }
    for (int r = 1; r < j->ranks; r++)
        if (rf[r]) gml__rank_file__free_unpacked(rf[r], NULL);
    free(rf);
    return st;
}

/* The writer of one rank (a background process, or inline). No MPI here. */
static gml_status job_run(void *arg, gml_ckpt_report *rep) {
    const save_job *j = arg;
    double t0 = gml_ckpt_now();
    rep->step = j->step;
    if (j->fault == FAULT_KILL) raise(SIGKILL);
    if (j->fault == FAULT_HANG) sleep(30);
    gml_rankfile_entry own;
    memset(&own, 0, sizeof own);
    const float *t[3] = {j->t[0], j->t[1], j->t[2]};
    gml_status st = j->fault == FAULT_FAIL
                        ? gml_error_set(GML_ERR_IO, "injected writer failure (GML_TEST_CKPT_WRITER)")
                        : gml_rankfile_write(j->tmpdir, j->rank, j->ranks, j->step, j->save_id, j->reg, j->lo, j->hi,
                                             t, &own);
    if (st == GML_OK) {
        own.msg.has_write_s = 1, own.msg.write_s = gml_ckpt_now() - t0;
        rep->seconds = own.msg.write_s;
        rep->bytes = (double)own.msg.bytes;
        rep->ranks = 1;
        if (j->rank != 0) st = gml_rankfile_mark_done(j->tmpdir, &own);
        else st = commit(j, &own, t0, rep);
    }
    if (st != GML_OK && j->rank != 0) gml_rankfile_mark_failed(j->tmpdir, j->rank, gml_error_message());
    gml_rankfile_entry_free(&own);
    return st;
}

/* ------------------------------------------------------------ save */

static uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The parent's part of steps 2-3 for this rank: the host copy and the job. */
static gml_status make_job(const char *dir, gml_gpt *m, gml_zero *z, const gml_mesh *mesh, const Gml__RunConfig *cfg,
                           const gml_ckpt_progress *prog, int keep_last, save_job **out, gml_ckpt_save_stats *stats) {
    *out = NULL;
    save_job *j = calloc(1, sizeof *j);
    if (!j) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    gml_status st = GML_OK;
    gml_comm *dp = gml_zero_group(z);
    j->rank = gml_comm_rank(dp);
    j->ranks = gml_comm_size(dp);
    j->keep_last = keep_last;
    j->step = prog->step;
    j->fault = writer_fault(j->rank, (long long)prog->step);
    const char *tv = getenv("GML_CKPT_COMMIT_TIMEOUT_S");
    j->timeout_s = tv ? atof(tv) : 0.0;
    j->reg = gml_gpt_params(m);
    snprintf(j->name, sizeof j->name, "step_%08lld", (long long)prog->step);
    if (snprintf(j->dir, sizeof j->dir, "%s", dir) >= (int)sizeof j->dir ||
        snprintf(j->tmpdir, sizeof j->tmpdir, "%s/.tmp-%s", dir, j->name) >= (int)sizeof j->tmpdir) {
        st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint.dir '%s' is too long", dir);
        goto fail;
    }
    gml_zero_shard_range(z, &j->lo, &j->hi);
    size_t n = j->hi - j->lo;
    for (int k = 0; k < 3; k++)
        if (!(j->t[k] = gml_host_alloc_touched(n * sizeof(float)))) { /* faulted in before the copy's clock */
            st = gml_error_set(GML_ERR_NOMEM, "out of host memory for a checkpoint copy of %zu parameters", n);
            goto fail;
        }
    double t0 = gml_ckpt_now();
    GML_CHECK_GOTO(gml_zero_download_shard(z, j->t[0], j->t[1], j->t[2]), st, fail);
    stats->copy_s = gml_ckpt_now() - t0;
    stats->bytes = 3.0 * 4.0 * (double)n;
    /* the manifest, but for what the writers find out */
    const gml_gpt_config *mc = gml_gpt_get_config(m);
    Gml__CheckpointManifest *man = &j->man;
    gml__checkpoint_manifest__init(man);
    gml__layout__init(&j->lay);
    man->format = (char *)GML_CKPT_FORMAT;
    man->has_format_version = 1, man->format_version = GML_CKPT_VERSION;
    man->software_version = (char *)GML_VERSION;
    man->has_step = 1, man->step = prog->step;
    man->has_adam_t = 1, man->adam_t = gml_adamw_t(gml_zero_optimizer(z));
    man->has_loader_epoch = 1, man->loader_epoch = prog->loader_epoch;
    man->has_loader_index = 1, man->loader_index = prog->loader_index;
    man->has_seed = 1, man->seed = cfg->train->seed;
    j->lay.has_world = 1, j->lay.world = mesh->world;
    j->lay.has_dp = 1, j->lay.dp = mesh->dp;
    j->lay.has_tp = 1, j->lay.tp = mesh->tp;
    j->lay.has_pp = 1, j->lay.pp = mesh->pp;
    j->lay.has_zero = 1, j->lay.zero = gml_zero_stage(z);
    snprintf(j->device, sizeof j->device, "%s", gml_gpt_backend(m)->name);
    man->has_n_layer = 1, man->n_layer = mc->n_layer;
    man->has_n_head = 1, man->n_head = mc->n_head;
    man->has_n_embd = 1, man->n_embd = mc->n_embd;
    man->has_block_size = 1, man->block_size = mc->block_size;
    man->has_vocab_size = 1, man->vocab_size = mc->vocab_size;
    man->has_padded_vocab_size = 1, man->padded_vocab_size = mc->padded_vocab_size;
    j->cfg_n = gml__run_config__get_packed_size(cfg);
    if (!(j->cfg_buf = malloc(j->cfg_n ? j->cfg_n : 1))) {
        st = gml_error_set(GML_ERR_NOMEM, "out of host memory for the checkpoint's config");
        goto fail;
    }
    gml__run_config__pack(cfg, j->cfg_buf);
    *out = j;
    return GML_OK;
fail:
    job_free(j);
    return st;
}

/* Rank 0: a fresh temp directory for the step (no writer of this run is
 * working in dir: step 1 of the protocol waited for them all). */
static gml_status prepare_dir(const save_job *j) {
    GML_CHECK(gml_mkdir_p(j->dir));
    gml_ckpt_remove_partial(j->dir);
    if (mkdir(j->tmpdir, 0755) != 0)
        return gml_error_set(GML_ERR_IO, "cannot create '%s': %s", j->tmpdir, strerror(errno));
    return GML_OK;
}

gml_status gml_ckpt_save(const char *dir, gml_gpt *m, gml_zero *z, const gml_mesh *mesh, const Gml__RunConfig *cfg,
                         const gml_ckpt_progress *prog, int keep_last, int async, gml_ckpt_save_stats *stats) {
    gml_ckpt_save_stats local;
    if (!stats) stats = &local;
    memset(stats, 0, sizeof *stats);
    double t0 = gml_ckpt_now();
    /* 1. one checkpoint in flight: this rank's previous writer is done */
    gml_status st = gml_ckpt_writer_wait(1);
    stats->wait_s = gml_ckpt_now() - t0;
    if (st == GML_OK && mesh->world != gml_comm_size(gml_zero_group(z)))
        st = gml_error_set(GML_ERR_UNSUPPORTED, "checkpoints of a mesh with tp or pp > 1 are not implemented yet "
                           "(world %d, dp %d)", mesh->world, gml_comm_size(gml_zero_group(z)));
    st = gml_ckpt_agree(mesh->world_c, st, "the previous checkpoint");
    if (st != GML_OK) return st;
    /* 2. the host copy; 3. rank 0's temp directory and save id */
    save_job *j = NULL;
    st = make_job(dir, m, z, mesh, cfg, prog, keep_last, &j, stats);
    uint64_t id = 0;
    if (st == GML_OK && j->rank == 0) {
        st = prepare_dir(j);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        id = mix64((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec) ^ mix64((uint64_t)getpid()) ^
             mix64((uint64_t)prog->step);
    }
    st = gml_ckpt_agree(mesh->world_c, st, "preparing the checkpoint");
    if (st == GML_OK) st = gml_comm_broadcast(mesh->world_c, &id, sizeof id, 0, NULL);
    /* 4. the writers */
    if (st == GML_OK) {
        j->save_id = id;
        if (async) {
            st = gml_ckpt_writer_start((long long)j->step, job_run, j, j->rank ? j->tmpdir : NULL, j->rank);
        } else {
            gml_ckpt_report rep;
            memset(&rep, 0, sizeof rep);
            st = job_run(j, &rep);
            rep.in_stall = 1;
            if (st == GML_OK) gml_ckpt_writer_set_report(&rep);
        }
    }
    job_free(j); /* the background writer has its own copy */
    st = gml_ckpt_agree(mesh->world_c, st, "saving the checkpoint");
    stats->stall_s = gml_ckpt_now() - t0;
    return st;
}
