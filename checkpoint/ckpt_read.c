/* ckpt_read.c — opening and verifying checkpoints: resume (every rank reads
 * the pieces it needs from the rank files, verified), `ckpt info` (lists
 * and verifies everything, the virtual datasets included) and `ckpt
 * export`. Format and checks: ckpt.h. Not for: writing (ckpt.c). */
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint/ckpt_impl.h"
#include "checkpoint/h5util.h"
#include "checkpoint/rankfile.h"
#include "checkpoint/vds.h"
#include "checkpoint/weights.h"
#include "core/crc32c.h"
#include "core/hostmem.h"
#include "proto/checkpoint.pb-c.h"

/* ------------------------------------------------------------ host state */

/* What a rank reads of a checkpoint, on the host: the fp32 master weights
 * and the two Adam moments over this rank's optimizer range [lo, hi) (hi -
 * lo floats each: all P at ZeRO-0, the shard at ZeRO-1/2/3), so under ZeRO
 * a rank reads 12P/dp bytes instead of 12P. */
typedef struct {
    float *t[3];  /* params, adam_m, adam_v over [lo, hi) */
    double bytes; /* read from the rank files (whole pieces, as verified) */
} host_state;

static void host_state_free(host_state *h) {
    for (int i = 0; i < 3; i++) free(h->t[i]);
    memset(h, 0, sizeof *h);
}

static gml_status host_state_alloc(host_state *h, size_t n) {
    memset(h, 0, sizeof *h);
    for (int i = 0; i < 3; i++) {
        /* zeroed, in 2 MiB pages: a cheap pin for the upload */
        h->t[i] = gml_host_alloc_touched(n * sizeof(float)); /* 0: a 1-byte buffer */
        if (!h->t[i]) {
            host_state_free(h);
            return gml_error_set(GML_ERR_NOMEM, "out of host memory for %zu parameters of a checkpoint", n);
        }
    }
    return GML_OK;
}

/* ------------------------------------------------------------ reader */

/* An open checkpoint: its top file, manifest and (after reader_open_files)
 * its rank files. A format_version 1 checkpoint looks like one with a
 * single rank file, state.h5 itself, holding every tensor whole. */
typedef struct {
    char path[4400]; /* state.h5 */
    char dir[4400];  /* the checkpoint directory */
    hid_t f;
    Gml__CheckpointManifest *man;
    int version;
    int nfiles;
    Gml__RankFile **rf;
    hid_t *files;      /* open rank files (version 1: f) */
    char (*fpath)[4400];
    Gml__RankFile v1;  /* version 1's one "rank file" */
    Gml__TensorPiece *v1_pieces;
    Gml__TensorPiece **v1_ptrs;
} reader;

static void reader_close(reader *r) {
    for (int i = 0; r->files && i < r->nfiles; i++)
        if (r->files[i] >= 0 && r->files[i] != r->f) H5Fclose(r->files[i]);
    free(r->files);
    free(r->fpath);
    free(r->v1_pieces);
    free(r->v1_ptrs);
    if (r->man) gml__checkpoint_manifest__free_unpacked(r->man, NULL);
    if (r->f >= 0) H5Fclose(r->f);
    memset(r, 0, sizeof *r);
    r->f = -1;
}

static uint64_t entry_numel(const Gml__TensorEntry *e) {
    uint64_t n = 1;
    for (size_t d = 0; d < e->n_shape; d++) n *= e->shape[d] > 0 ? (uint64_t)e->shape[d] : 0;
    return n;
}

/* Version 1: one piece per tensor, whole, in state.h5. */
static gml_status synthesize_v1(reader *r) {
    Gml__CheckpointManifest *man = r->man;
    size_t n = man->n_tensors;
    r->v1_pieces = calloc(n ? n : 1, sizeof *r->v1_pieces);
    r->v1_ptrs = calloc(n ? n : 1, sizeof *r->v1_ptrs);
    if (!r->v1_pieces || !r->v1_ptrs) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    for (size_t i = 0; i < n; i++) {
        const Gml__TensorEntry *e = man->tensors[i];
        Gml__TensorPiece *pc = &r->v1_pieces[i];
        gml__tensor_piece__init(pc);
        pc->group = e->group;
        pc->name = e->name;
        pc->has_offset = 1, pc->offset = 0;
        pc->has_count = 1, pc->count = entry_numel(e);
        pc->has_crc32c = e->has_crc32c, pc->crc32c = e->crc32c;
        r->v1_ptrs[i] = pc;
    }
    gml__rank_file__init(&r->v1);
    r->v1.file = (char *)GML_CKPT_STATE_FILE;
    r->v1.n_pieces = n;
    r->v1.pieces = r->v1_ptrs;
    return GML_OK;
}

/* Open a checkpoint's top file, check its format and unpack and check its
 * manifest. On failure r is closed. */
static gml_status reader_open(const char *path, reader *r) {
    memset(r, 0, sizeof *r);
    r->f = -1;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    snprintf(r->path, sizeof r->path, "%s", path);
    snprintf(r->dir, sizeof r->dir, "%s", path);
    char *slash = strrchr(r->dir, '/');
    if (slash) *slash = '\0';
    else snprintf(r->dir, sizeof r->dir, ".");
    if (access(path, R_OK) != 0) return gml_error_set(GML_ERR_BAD_INPUT, "checkpoint file '%s' cannot be read", path);
    if (H5Fis_hdf5(path) <= 0)
        return gml_error_set(GML_ERR_BAD_INPUT, "checkpoint file '%s' is not a complete HDF5 file (truncated?)", path);
    r->f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (r->f < 0) return gml_error_set(GML_ERR_BAD_INPUT, "checkpoint file '%s' cannot be opened (truncated?)", path);
    char fmt[64] = "";
    uint8_t *buf = NULL;
    size_t n = 0;
    uint64_t crc = 0;
    gml_status st = GML_OK;
    if (gml_h5_read_str_attr(r->f, "format", fmt, sizeof fmt) == 0 && strcmp(fmt, GML_RANKFILE_FORMAT) == 0)
        st = gml_error_set(GML_ERR_BAD_INPUT, "'%s' is one rank's file of a checkpoint: give the checkpoint "
                           "directory or its %s", path, GML_CKPT_STATE_FILE);
    else if (strcmp(fmt, GML_CKPT_FORMAT) != 0 || gml_h5_read_int_attr(r->f, "format_version", &r->version) != 0)
        st = gml_error_set(GML_ERR_BAD_INPUT, "'%s' is not a gml-dist checkpoint (format '%s' attribute)", path,
                           GML_CKPT_FORMAT);
    else if (r->version != 1 && r->version != GML_CKPT_VERSION)
        st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s' has format_version %d; this gml-dist reads versions 1 "
                           "and %d ---> HINT: use the gml-dist that wrote it", path, r->version, GML_CKPT_VERSION);
    else if (gml_h5_read_bytes(r->f, "manifest", &buf, &n) != 0)
        st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': the manifest is missing or unreadable", path);
    else if (r->version >= 2 && (gml_h5_read_u64_attr(r->f, "manifest_crc32c", &crc) != 0 ||
                                 crc != gml_crc32c(buf, n)))
        st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': the manifest fails its checksum: the file is corrupt",
                           path);
    else if (!(r->man = gml__checkpoint_manifest__unpack(NULL, n, buf)))
        st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': the manifest is corrupt", path);
    free(buf);
    if (st == GML_OK && r->version == 1) {
        st = synthesize_v1(r);
        r->nfiles = 1;
        r->rf = NULL;
    } else if (st == GML_OK) {
        r->nfiles = (int)r->man->n_rank_files;
        r->rf = r->man->rank_files;
        if (r->nfiles < 1 || !r->man->has_save_id)
            st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': the manifest lists no rank files", path);
        for (int i = 0; i < r->nfiles && st == GML_OK; i++)
            if (r->rf[i]->rank != i)
                st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': rank file %d of the manifest is dp rank %d's",
                                   path, i, r->rf[i]->rank);
    }
    if (st != GML_OK) reader_close(r);
    return st;
}

static const Gml__RankFile *reader_rf(const reader *r, int i) { return r->version == 1 ? &r->v1 : r->rf[i]; }

/* Open (and check) every rank file. */
static gml_status reader_open_files(reader *r) {
    r->files = malloc((size_t)r->nfiles * sizeof *r->files);
    r->fpath = calloc((size_t)r->nfiles, sizeof *r->fpath);
    if (!r->files || !r->fpath) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    for (int i = 0; i < r->nfiles; i++) r->files[i] = -1;
    if (r->version == 1) {
        r->files[0] = r->f;
        snprintf(r->fpath[0], sizeof r->fpath[0], "%s", r->path);
        return GML_OK;
    }
    for (int i = 0; i < r->nfiles; i++)
        GML_CHECK(gml_rankfile_open(r->path, r->dir, r->rf[i], r->man->step, r->man->save_id, &r->files[i],
                                    r->fpath[i], sizeof r->fpath[i]));
    return GML_OK;
}

/* One piece to read: elements [keep_lo, keep_hi) of piece pc (relative to
 * the piece) of rank file `file` go to dst; the piece is read and verified
 * whole (through a bounce buffer where only part of it is kept). */
typedef struct {
    int file;
    const Gml__TensorPiece *pc;
    float *dst;
    uint64_t keep_lo, keep_hi;
    int64_t at;           /* byte offset of its data in the file; -1: read through HDF5 */
    gml_piece_result res; /* of the parallel read */
} read_job;

typedef struct {
    read_job *v;
    size_t n, cap;
} job_list;

/* Plan the reading of elements [a, b) of tensor group/name (numel
 * elements) into dst (b - a floats): a job per piece that overlaps [a, b),
 * while the manifest's pieces must still tile [0, numel) exactly. */
static gml_status reader_plan_range(reader *r, const char *group, const char *name, uint64_t numel, uint64_t a,
                                    uint64_t b, float *dst, job_list *jobs) {
    uint64_t covered = 0;
    for (int i = 0; i < r->nfiles; i++) {
        const Gml__RankFile *rf = reader_rf(r, i);
        for (size_t q = 0; q < rf->n_pieces; q++) {
            const Gml__TensorPiece *pc = rf->pieces[q];
            if (!pc->group || !pc->name || strcmp(pc->group, group) != 0 || strcmp(pc->name, name) != 0) continue;
            if (pc->offset != covered || pc->count > numel - covered)
                return gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': the manifest's pieces of tensor '%s/%s' do "
                                     "not tile it (a piece at element %llu, %llu expected): corrupt manifest",
                                     r->path, group, name, (unsigned long long)pc->offset,
                                     (unsigned long long)covered);
            covered += pc->count;
            uint64_t lo = pc->offset > a ? pc->offset : a, hi = pc->offset + pc->count < b ? pc->offset + pc->count : b;
            if (lo >= hi) continue; /* not ours: another rank reads and verifies it */
            if (jobs->n == jobs->cap) {
                size_t cap = jobs->cap ? 2 * jobs->cap : 256;
                read_job *v = realloc(jobs->v, cap * sizeof *v);
                if (!v) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
                jobs->v = v, jobs->cap = cap;
            }
            jobs->v[jobs->n++] = (read_job){.file = i, .pc = pc, .dst = dst + (lo - a), .keep_lo = lo - pc->offset,
                                            .keep_hi = hi - pc->offset, .at = -1};
        }
    }
    if (covered != numel)
        return gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': the rank files hold %llu of the %llu elements of "
                             "tensor '%s/%s': corrupt manifest", r->path, (unsigned long long)covered,
                             (unsigned long long)numel, group, name);
    return GML_OK;
}

/* Where job j's piece is read to: its destination when the job keeps all
 * of it, else a bounce buffer for the whole piece (NULL: out of memory). */
static float *job_buffer(const read_job *j) {
    const Gml__TensorPiece *pc = j->pc;
    if (j->keep_lo == 0 && j->keep_hi == pc->count) return j->dst;
    return malloc((pc->count ? pc->count : 1) * sizeof(float));
}

/* After the read into buf (verified: ok): the kept part to the destination
 * and the bounce buffer freed. */
static void job_done(const read_job *j, float *buf, int ok) {
    if (buf == j->dst) return;
    if (ok) memcpy(j->dst, buf + j->keep_lo, (j->keep_hi - j->keep_lo) * sizeof *buf);
    free(buf);
}

static const gml_piece_result no_memory = {GML_PIECE_NOMEM, 0, 0};

/* Read and verify job j's piece with pread (thread-safe). */
static void run_pread(read_job *j, int fd) {
    float *buf = job_buffer(j);
    j->res = buf ? gml_rankfile_pread_piece(fd, j->pc, j->at, buf) : no_memory;
    if (buf) job_done(j, buf, j->res.code == GML_PIECE_OK);
}

/* Read the planned jobs. Where HDF5 says a piece is a plain array at a known
 * place in its file (what our writer makes), the pieces are read with pread
 * and verified on OpenMP's threads: a resume of GPT-2 1.5B reads 18.7 GB, on
 * one core that took ~10 s; other layouts are read through HDF5 on this
 * thread. A piece HDF5 cannot find (or of the wrong size) is reported
 * before anything is read; otherwise the error reported is that of the
 * first failing job in plan order, as a sequential read would report it.
 * *bytes (may be NULL) grows by the bytes of every piece read. */
static gml_status reader_run(reader *r, job_list *jobs, double *bytes) {
    gml_status st = GML_OK;
    int *fds = malloc((size_t)r->nfiles * sizeof *fds);
    if (!fds) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    for (int i = 0; i < r->nfiles; i++) fds[i] = -1;
    for (size_t j = 0; j < jobs->n && st == GML_OK; j++) {
        read_job *job = &jobs->v[j];
        int f = job->file;
        st = gml_rankfile_locate_piece(r->files[f], r->path, r->fpath[f], job->pc, &job->at);
        if (st == GML_OK && job->at >= 0 && fds[f] < 0 && (fds[f] = open(r->fpath[f], O_RDONLY | O_CLOEXEC)) < 0)
            st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': '%s' cannot be opened: %s", r->path, r->fpath[f],
                               strerror(errno));
    }
    if (st == GML_OK) {
        long n = (long)jobs->n;
#pragma omp parallel for schedule(dynamic, 1)
        for (long j = 0; j < n; j++)
            if (jobs->v[j].at >= 0) run_pread(&jobs->v[j], fds[jobs->v[j].file]);
    }
    for (size_t j = 0; j < jobs->n && st == GML_OK; j++) {
        read_job *job = &jobs->v[j];
        const Gml__TensorPiece *pc = job->pc;
        int f = job->file;
        if (job->at >= 0) {
            st = gml_rankfile_piece_error(r->path, r->fpath[f], pc, job->res);
        } else { /* a layout only HDF5 reads, on this thread */
            float *buf = job_buffer(job);
            st = buf ? gml_rankfile_read_piece(r->files[f], r->path, r->fpath[f], pc, buf)
                     : gml_rankfile_piece_error(r->path, r->fpath[f], pc, no_memory);
            if (buf) job_done(job, buf, st == GML_OK);
        }
        if (bytes) *bytes += 4.0 * (double)pc->count;
    }
    for (int i = 0; i < r->nfiles; i++)
        if (fds[i] >= 0) close(fds[i]);
    free(fds);
    return st;
}

/* The whole tensor group/name (numel elements) into dst. */
static gml_status reader_read_tensor(reader *r, const char *group, const char *name, uint64_t numel, float *dst) {
    job_list jobs = {0};
    gml_status st = reader_plan_range(r, group, name, numel, 0, numel, dst, &jobs);
    if (st == GML_OK) st = reader_run(r, &jobs, NULL);
    free(jobs.v);
    return st;
}

/* ------------------------------------------------------------ load */

/* Read and verify everything of `path` (a state.h5) into h for model m;
 * nothing of the model is touched. *damaged: the failure is the files'
 * (unreadable, missing, truncated, checksum) rather than a mismatch with
 * this run's model, which no older checkpoint would fix. */
static gml_status read_state(const char *path, gml_gpt *m, size_t lo, size_t hi, host_state *h,
                             Gml__CheckpointManifest **man_out, int *damaged) {
    *man_out = NULL;
    *damaged = 1;
    memset(h, 0, sizeof *h);
    reader r;
    GML_CHECK(reader_open(path, &r));
    Gml__CheckpointManifest *man = r.man;
    gml_status st = GML_OK;
    const gml_param_registry *reg = gml_gpt_params(m);
    const gml_gpt_config *mc = gml_gpt_get_config(m);
    {
        const int want[6] = {mc->n_layer, mc->n_head, mc->n_embd, mc->block_size, mc->vocab_size,
                             mc->padded_vocab_size};
        const int got[6] = {man->n_layer, man->n_head, man->n_embd, man->block_size, man->vocab_size,
                            man->padded_vocab_size};
        static const char *keys[6] = {"n_layer", "n_head", "n_embd", "block_size", "vocab_size",
                                      "padded_vocab_size"};
        for (int i = 0; i < 6; i++)
            if (want[i] != got[i]) {
                *damaged = 0;
                st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s' holds another model: %s = %d there, %d in "
                                   "this run's config", path, keys[i], got[i], want[i]);
                goto done;
            }
    }
    if (man->n_tensors != (size_t)reg->n * 3) {
        st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s' lists %zu tensors, this model has %d x 3", path,
                           man->n_tensors, reg->n);
        goto done;
    }
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < reg->n; i++) {
            const gml_param_spec *p = &reg->specs[i];
            const Gml__TensorEntry *e = man->tensors[(size_t)k * reg->n + (size_t)i];
            if (!e->name || strcmp(e->name, p->name) != 0 || !e->group || strcmp(e->group, gml_ckpt_groups[k]) != 0 ||
                entry_numel(e) != p->numel) {
                st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': manifest entry %d of '%s' is '%s', expected "
                                   "'%s' of %zu elements", path, i, gml_ckpt_groups[k], e->name ? e->name : "?",
                                   p->name, p->numel);
                goto done;
            }
        }
    GML_CHECK_GOTO(reader_open_files(&r), st, done);
    GML_CHECK_GOTO(host_state_alloc(h, hi - lo), st, done);
    job_list jobs = {0}; /* every piece of the range, then all read at once */
    for (int k = 0; k < 3 && st == GML_OK; k++)
        for (int i = 0; i < reg->n && st == GML_OK; i++) {
            const gml_param_spec *p = &reg->specs[i];
            size_t a = p->offset > lo ? p->offset : lo, end = p->offset + p->numel, b = end < hi ? end : hi;
            if (a >= b) continue; /* the parameter lies outside the range */
            st = reader_plan_range(&r, gml_ckpt_groups[k], p->name, p->numel, a - p->offset, b - p->offset,
                                   h->t[k] + (a - lo), &jobs);
        }
    if (st == GML_OK) st = reader_run(&r, &jobs, &h->bytes);
    free(jobs.v);
done:
    if (st != GML_OK) {
        host_state_free(h);
        reader_close(&r);
        return st;
    }
    *man_out = r.man;
    r.man = NULL; /* handed to the caller */
    reader_close(&r);
    return GML_OK;
}

/* All ranks agree on a load: failed anywhere -> failed everywhere, with
 * the status and message of the lowest failing rank; *damaged (in: this
 * rank's, out: everyone's) is 0 if any failure was not the files' fault.
 * Collective over world. */
static gml_status agree_load(gml_comm *world, gml_status mine, int *damaged) {
    int size = gml_comm_size(world), rank = gml_comm_rank(world);
    float code = mine == GML_OK ? 0.0f : *damaged ? 1.0f : 2.0f, *all = calloc((size_t)size, sizeof *all);
    if (!all) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    gml_status st = gml_comm_allgather_f32(world, &code, all, 1, NULL);
    int first = -1, hard = 0;
    for (int r = 0; r < size && st == GML_OK; r++) {
        if (all[r] > 0.0f && first < 0) first = r;
        hard |= all[r] > 1.5f;
    }
    free(all);
    if (st != GML_OK) return st;
    if (first < 0) return GML_OK;
    *damaged = !hard;
    struct {
        int32_t status;
        char msg[1020];
    } e;
    memset(&e, 0, sizeof e);
    if (rank == first) e.status = (int32_t)mine, snprintf(e.msg, sizeof e.msg, "%s", gml_error_message());
    GML_CHECK(gml_comm_broadcast(world, &e, sizeof e, first, NULL));
    if (rank == first) return mine;
    char file[512] = "";
    int line = 0, off = 0; /* "file:line: text" as gml_error_set made it */
    gml_error_clear();
    if (sscanf(e.msg, "%511[^:]:%d: %n", file, &line, &off) == 2 && off > 0)
        return gml_error_set_at((gml_status)e.status, file, line, "%s (on dp rank %d)", e.msg + off, first);
    return gml_error_set((gml_status)e.status, "%s (on dp rank %d)", e.msg, first);
}

/* Try one checkpoint on every rank; all ranks agree on the outcome.
 * *damaged as in read_state (any rank's). */
static gml_status try_load(const char *path, gml_gpt *m, gml_zero *z, const gml_mesh *mesh, gml_ckpt_progress *prog,
                           int *damaged, double *bytes) {
    host_state h;
    Gml__CheckpointManifest *man = NULL;
    size_t lo, hi;
    gml_adamw_range(gml_zero_optimizer(z), &lo, &hi);
    gml_status st = read_state(path, m, lo, hi, &h, &man, damaged);
    st = agree_load(mesh->world_c, st, damaged);
    if (st == GML_OK) {
        *bytes = h.bytes;
        st = gml_zero_restore(z, h.t[0], h.t[1], h.t[2], (int)man->adam_t);
        prog->step = man->step;
        prog->loader_epoch = man->loader_epoch;
        prog->loader_index = man->loader_index;
    }
    if (man) {
        host_state_free(&h);
        gml__checkpoint_manifest__free_unpacked(man, NULL);
    }
    return st;
}

gml_status gml_ckpt_resume(const char *dir, const char *spec, gml_gpt *m, gml_zero *z, const gml_mesh *mesh,
                           gml_ckpt_progress *prog, int *loaded, char *path_out, size_t cap, double *bytes_read) {
    *loaded = 0;
    double bytes_dummy = 0.0;
    if (!bytes_read) bytes_read = &bytes_dummy;
    *bytes_read = 0.0;
    char path[4400];
    if (strcmp(spec, "none") == 0) return GML_OK;
    if (strcmp(spec, "auto") != 0) { /* an explicit checkpoint: it must load */
        struct stat sb;
        if (stat(spec, &sb) == 0 && S_ISDIR(sb.st_mode))
            snprintf(path, sizeof path, "%s/%s", spec, GML_CKPT_STATE_FILE);
        else snprintf(path, sizeof path, "%s", spec);
        int damaged = 0;
        GML_CHECK(try_load(path, m, z, mesh, prog, &damaged, bytes_read));
        *loaded = 1;
        if (path_out) snprintf(path_out, cap, "%s", path);
        return GML_OK;
    }
    /* rank 0's listing, so that every rank tries the same checkpoints */
    long long *steps = NULL;
    int n = 0;
    gml_status st = mesh->rank == 0 ? gml_ckpt_list_steps(dir, &steps, &n) : GML_OK;
    st = gml_ckpt_agree(mesh->world_c, st, "listing the checkpoints");
    int64_t n64 = n;
    if (st == GML_OK) st = gml_comm_broadcast(mesh->world_c, &n64, sizeof n64, 0, NULL);
    if (st == GML_OK && mesh->rank != 0 && n64 > 0 && !(steps = calloc((size_t)n64, sizeof *steps)))
        st = gml_error_set(GML_ERR_NOMEM, "out of host memory");
    st = gml_ckpt_agree(mesh->world_c, st, "listing the checkpoints");
    if (st == GML_OK && n64 > 0) st = gml_comm_broadcast(mesh->world_c, steps, (size_t)n64 * sizeof *steps, 0, NULL);
    n = (int)n64;
    if (st != GML_OK) {
        free(steps);
        return st;
    }
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/step_%08lld/%s", dir, steps[i], GML_CKPT_STATE_FILE);
        int damaged = 0;
        st = try_load(path, m, z, mesh, prog, &damaged, bytes_read);
        if (st == GML_OK) {
            *loaded = 1;
            if (path_out) snprintf(path_out, cap, "%s", path);
            break;
        }
        /* only a damaged file sends us to an older one; a checkpoint of another
         * model means this run's config is wrong */
        if (!damaged || (st != GML_ERR_BAD_INPUT && st != GML_ERR_IO)) break;
        if (mesh->rank == 0)
            fprintf(stderr, "gml-dist: warning: checkpoint step %lld is unusable: %s; %s\n", steps[i],
                    gml_error_message(), i + 1 < n ? "falling back to the previous one" : "no older one left");
        gml_error_clear();
        st = GML_OK;
    }
    free(steps);
    return st;
}

/* ------------------------------------------------------------ info, export */

/* A user's PATH: a state.h5, a checkpoint directory, or a checkpoint root
 * (follow its latest). */
static gml_status resolve_user_path(const char *spec, char *path, size_t cap) {
    struct stat sb;
    snprintf(path, cap, "%s", spec);
    if (stat(spec, &sb) != 0 || !S_ISDIR(sb.st_mode)) return GML_OK;
    char latest[4096 + 16], name[256] = "";
    snprintf(latest, sizeof latest, "%s/latest", spec);
    FILE *lf = fopen(latest, "r");
    if (lf) {
        int ok = fscanf(lf, "%255s", name) == 1;
        fclose(lf);
        if (!ok) return gml_error_set(GML_ERR_BAD_INPUT, "'%s' is empty", latest);
        snprintf(path, cap, "%s/%s/%s", spec, name, GML_CKPT_STATE_FILE);
    } else {
        snprintf(path, cap, "%s/%s", spec, GML_CKPT_STATE_FILE);
    }
    return GML_OK;
}

gml_status gml_ckpt_export(const char *spec, const char *out) {
    char path[4400];
    GML_CHECK(resolve_user_path(spec, path, sizeof path));
    reader r;
    GML_CHECK(reader_open(path, &r));
    gml_gpt_config c;
    memset(&c, 0, sizeof c);
    const Gml__CheckpointManifest *man = r.man;
    c.n_layer = man->n_layer, c.n_head = man->n_head, c.n_embd = man->n_embd, c.block_size = man->block_size;
    c.vocab_size = man->vocab_size, c.padded_vocab_size = man->padded_vocab_size, c.init_std = 0.02f;
    reader_close(&r);
    gml_backend *be = NULL;
    gml_gpt *m = NULL;
    host_state h;
    Gml__CheckpointManifest *vm = NULL;
    int damaged = 0;
    gml_status st = gml_backend_create("cpu", 0, &be);
    if (st == GML_OK) st = gml_gpt_create(be, &c, 1, 1, 0, &m);
    if (st == GML_OK) /* the moments whole too: export verifies every checksum */
        st = read_state(path, m, 0, gml_gpt_num_params(m), &h, &vm, &damaged);
    if (st == GML_OK) {
        st = gml_gpt_set_params_host(m, h.t[0]);
        host_state_free(&h);
        gml__checkpoint_manifest__free_unpacked(vm, NULL);
    }
    if (st == GML_OK) st = gml_weights_save(m, out, 0);
    gml_gpt_destroy(m);
    gml_backend_destroy(be);
    return st;
}

/* Version 2: tensor group/name read through its virtual dataset equals
 * `want` (numel floats, already verified from the rank files). */
static gml_status check_vds(reader *r, const char *group, const char *name, const float *want, uint64_t numel,
                            float *buf) {
    hid_t g = H5Lexists(r->f, group, H5P_DEFAULT) > 0 ? H5Gopen2(r->f, group, H5P_DEFAULT) : -1;
    hid_t ds = g >= 0 ? gml_vds_open(g, name, r->dir) : -1;
    gml_status st = GML_OK;
    if (ds < 0) {
        st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s' lacks the virtual dataset '%s/%s'", r->path, group,
                           name);
    } else if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': the virtual dataset '%s/%s' cannot be read", r->path,
                           group, name);
    } else if (memcmp(buf, want, numel * sizeof(float)) != 0) {
        uint64_t i = 0;
        while (i < numel && memcmp(&buf[i], &want[i], sizeof(float)) == 0) i++;
        st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': tensor '%s/%s' read through the virtual dataset "
                           "differs from its rank files at element %llu (%g vs %g): corrupt mapping", r->path, group,
                           name, (unsigned long long)i, (double)buf[i], (double)want[i]);
    }
    if (ds >= 0) {
        hid_t sp = H5Dget_space(ds);
        if (sp >= 0 && H5Sget_simple_extent_npoints(sp) != (hssize_t)numel && st == GML_OK)
            st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': virtual dataset '%s/%s' has the wrong shape",
                               r->path, group, name);
        if (sp >= 0) H5Sclose(sp);
        H5Dclose(ds);
    }
    if (g >= 0) H5Gclose(g);
    return st;
}

gml_status gml_ckpt_info(const char *spec, FILE *out) {
    char path[4400];
    GML_CHECK(resolve_user_path(spec, path, sizeof path));
    reader r;
    GML_CHECK(reader_open(path, &r));
    const Gml__CheckpointManifest *man = r.man;
    gml_status st = GML_OK;
    const Gml__Layout *l = man->layout;
    fprintf(out, "checkpoint: %s\nformat: %s v%d, written by gml-dist %s\n", path, man->format ? man->format : "?",
            r.version, man->software_version ? man->software_version : "?");
    fprintf(out, "step: %lld (adam t %lld), data position: epoch %llu sequence %llu, seed %llu\n",
            (long long)man->step, (long long)man->adam_t, (unsigned long long)man->loader_epoch,
            (unsigned long long)man->loader_index, (unsigned long long)man->seed);
    if (l)
        fprintf(out, "layout: %d rank(s), dp %d tp %d pp %d, zero %d, %s\n", l->world, l->dp, l->tp, l->pp, l->zero,
                l->device ? l->device : "?");
    fprintf(out, "model: n_layer %d, n_head %d, n_embd %d, block_size %d, vocab %d (padded %d)\n", man->n_layer,
            man->n_head, man->n_embd, man->block_size, man->vocab_size, man->padded_vocab_size);
    if (r.version >= 2) {
        uint8_t *cb = NULL;
        size_t cn = 0;
        uint64_t crc = 0;
        if (gml_h5_read_bytes(r.f, "config", &cb, &cn) != 0 || gml_h5_read_u64_attr(r.f, "config_crc32c", &crc) != 0 ||
            crc != gml_crc32c(cb, cn))
            st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': the stored config is missing or fails its "
                               "checksum", path);
        free(cb);
        fprintf(out, "rank files: %d\n", r.nfiles);
        for (int i = 0; i < r.nfiles; i++)
            fprintf(out, "  %s: dp rank %d, elements [%llu, %llu) of the flat parameters, %zu pieces, %.2f MB\n",
                    r.rf[i]->file ? r.rf[i]->file : "?", r.rf[i]->rank, (unsigned long long)r.rf[i]->lo,
                    (unsigned long long)r.rf[i]->hi, r.rf[i]->n_pieces, (double)r.rf[i]->bytes / 1e6);
    }
    if (st == GML_OK) st = reader_open_files(&r);
    uint64_t total = 0, biggest = 0;
    for (size_t i = 0; i < man->n_tensors; i++) {
        uint64_t n = entry_numel(man->tensors[i]);
        if (n > biggest) biggest = n;
    }
    float *buf = malloc((biggest ? biggest : 1) * sizeof *buf), *vbuf = malloc((biggest ? biggest : 1) * sizeof *vbuf);
    if (st == GML_OK && (!buf || !vbuf)) st = gml_error_set(GML_ERR_NOMEM, "out of host memory");
    uint32_t digest = 0;
    for (size_t i = 0; i < man->n_tensors && st == GML_OK; i++) {
        const Gml__TensorEntry *e = man->tensors[i];
        if (!e->name || !e->group || e->n_shape < 1 || e->n_shape > GML_PARAM_MAX_DIMS) {
            st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': manifest entry %zu is malformed", path, i);
            break;
        }
        uint64_t n = entry_numel(e);
        st = reader_read_tensor(&r, e->group, e->name, n, buf);
        if (st == GML_OK && r.version >= 2) st = check_vds(&r, e->group, e->name, buf, n, vbuf);
        digest = gml_crc32c_update(digest, buf, n * sizeof(float));
        if (strcmp(e->group, "params") == 0) total += n;
    }
    if (st == GML_OK)
        fprintf(out, "tensors: %zu (%llu parameters), all checksums verified%s; content digest %08x\n",
                man->n_tensors, (unsigned long long)total,
                r.version >= 2 ? ", virtual datasets equal to the rank files" : "", (unsigned)digest);
    free(buf);
    free(vbuf);
    reader_close(&r);
    return st;
}
