/* ckpt.c — save, verify and restore checkpoints (see ckpt.h). */
#include "checkpoint/ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint/h5util.h"
#include "checkpoint/weights.h"
#include "core/crc32c.h"
#include "core/fsutil.h"
#include "core/version.h"
#include "proto/checkpoint.pb-c.h"

#define STATE_FILE "state.h5"
static const char *groups[3] = {"params", "adam_m", "adam_v"};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------ host state */

/* The three flat fp32 tensors of the checkpoint, full length P, on the host. */
typedef struct {
    float *t[3]; /* params, adam_m, adam_v */
    size_t P;
} host_state;

static void host_state_free(host_state *h) {
    for (int i = 0; i < 3; i++) free(h->t[i]);
    memset(h, 0, sizeof *h);
}

static gml_status host_state_alloc(host_state *h, size_t n) {
    memset(h, 0, sizeof *h);
    h->P = n;
    for (int i = 0; i < 3; i++) {
        h->t[i] = calloc(n ? n : 1, sizeof(float));
        if (!h->t[i]) {
            host_state_free(h);
            return gml_error_set(GML_ERR_NOMEM, "out of host memory for a checkpoint copy of %zu parameters", n);
        }
    }
    return GML_OK;
}

/* Collective over the dp group: every rank downloads its shard range of the
 * master weights and moments (gml_zero_download_shard) and every rank ends
 * with the full flat tensors; rank 0's copy is what gets written. */
static gml_status gather_state(gml_gpt *m, gml_zero *z, host_state *h) {
    gml_comm *dp = gml_zero_group(z);
    size_t P = gml_gpt_num_params(m), lo, hi;
    size_t padded = gml_gpt_padded_params(m), S = padded / (size_t)gml_comm_size(dp);
    size_t own = (size_t)gml_comm_rank(dp) * S; /* own block of the padded buffer: in-place all-gather */
    gml_zero_shard_range(z, &lo, &hi);
    GML_CHECK(host_state_alloc(h, padded));
    h->P = P;
    gml_status st = gml_zero_download_shard(z, h->t[0] + own, h->t[1] + own, h->t[2] + own);
    for (int k = 0; k < 3 && st == GML_OK; k++) st = gml_comm_allgather_f32(dp, h->t[k] + own, h->t[k], S, NULL);
    if (st != GML_OK) host_state_free(h);
    return st;
}

/* ------------------------------------------------------------ write */

static gml_status write_state(const char *file, gml_gpt *m, gml_zero *z, const gml_mesh *mesh,
                              const Gml__RunConfig *cfg, const gml_ckpt_progress *prog, const host_state *h) {
    const gml_param_registry *reg = gml_gpt_params(m);
    const gml_gpt_config *mc = gml_gpt_get_config(m);
    gml_status st = GML_OK;
    Gml__CheckpointManifest man = GML__CHECKPOINT_MANIFEST__INIT;
    Gml__Layout lay = GML__LAYOUT__INIT;
    Gml__TensorEntry *ents = calloc((size_t)reg->n * 3, sizeof *ents);
    Gml__TensorEntry **eptr = calloc((size_t)reg->n * 3, sizeof *eptr);
    int64_t *shapes = calloc((size_t)reg->n * 3 * GML_PARAM_MAX_DIMS, sizeof *shapes);
    uint8_t *man_buf = NULL, *cfg_buf = NULL;
    hid_t f = -1, g[3] = {-1, -1, -1};
    if (!ents || !eptr || !shapes) {
        st = gml_error_set(GML_ERR_NOMEM, "out of host memory for the checkpoint manifest");
        goto done;
    }
    man.format = (char *)GML_CKPT_FORMAT;
    man.has_format_version = 1, man.format_version = GML_CKPT_VERSION;
    man.software_version = (char *)GML_VERSION;
    man.has_step = 1, man.step = prog->step;
    man.has_adam_t = 1, man.adam_t = gml_adamw_t(gml_zero_optimizer(z));
    man.has_loader_epoch = 1, man.loader_epoch = prog->loader_epoch;
    man.has_loader_index = 1, man.loader_index = prog->loader_index;
    man.has_seed = 1, man.seed = cfg->train->seed;
    lay.has_world = 1, lay.world = mesh->world;
    lay.has_dp = 1, lay.dp = mesh->dp;
    lay.has_tp = 1, lay.tp = mesh->tp;
    lay.has_pp = 1, lay.pp = mesh->pp;
    lay.has_zero = 1, lay.zero = gml_zero_stage(z);
    lay.device = gml_gpt_backend(m)->name;
    man.layout = &lay;
    man.has_n_layer = 1, man.n_layer = mc->n_layer;
    man.has_n_head = 1, man.n_head = mc->n_head;
    man.has_n_embd = 1, man.n_embd = mc->n_embd;
    man.has_block_size = 1, man.block_size = mc->block_size;
    man.has_vocab_size = 1, man.vocab_size = mc->vocab_size;
    man.has_padded_vocab_size = 1, man.padded_vocab_size = mc->padded_vocab_size;
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < reg->n; i++) {
            const gml_param_spec *p = &reg->specs[i];
            size_t e = (size_t)k * reg->n + (size_t)i;
            gml__tensor_entry__init(&ents[e]);
            ents[e].group = (char *)groups[k];
            ents[e].name = (char *)p->name;
            ents[e].n_shape = (size_t)p->ndim;
            ents[e].shape = shapes + e * GML_PARAM_MAX_DIMS;
            for (int d = 0; d < p->ndim; d++) ents[e].shape[d] = p->shape[d];
            ents[e].dtype = (char *)"f32";
            ents[e].has_crc32c = 1;
            ents[e].crc32c = gml_crc32c(h->t[k] + p->offset, p->numel * sizeof(float));
            eptr[e] = &ents[e];
        }
    }
    man.n_tensors = (size_t)reg->n * 3;
    man.tensors = eptr;
    size_t man_n = gml__checkpoint_manifest__get_packed_size(&man);
    size_t cfg_n = gml__run_config__get_packed_size(cfg);
    man_buf = malloc(man_n ? man_n : 1);
    cfg_buf = malloc(cfg_n ? cfg_n : 1);
    if (!man_buf || !cfg_buf) {
        st = gml_error_set(GML_ERR_NOMEM, "out of host memory for the checkpoint manifest");
        goto done;
    }
    gml__checkpoint_manifest__pack(&man, man_buf);
    gml__run_config__pack(cfg, cfg_buf);

    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    f = H5Fcreate(file, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        st = gml_error_set(GML_ERR_IO, "cannot create checkpoint file '%s'", file);
        goto done;
    }
    if (gml_h5_write_str_attr(f, "format", GML_CKPT_FORMAT) < 0 ||
        gml_h5_write_int_attr(f, "format_version", GML_CKPT_VERSION) < 0 ||
        gml_h5_write_u64_attr(f, "step", (uint64_t)prog->step) < 0 ||
        gml_h5_write_bytes(f, "manifest", man_buf, man_n) < 0 || gml_h5_write_bytes(f, "config", cfg_buf, cfg_n) < 0) {
        st = gml_error_set(GML_ERR_IO, "writing the manifest of '%s' failed (disk full?)", file);
        goto done;
    }
    for (int k = 0; k < 3 && st == GML_OK; k++) {
        g[k] = H5Gcreate2(f, groups[k], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g[k] < 0) st = gml_error_set(GML_ERR_IO, "cannot create group '%s' in '%s'", groups[k], file);
        for (int i = 0; i < reg->n && st == GML_OK; i++)
            if (gml_h5_write_tensor(g[k], &reg->specs[i], h->t[k] + reg->specs[i].offset) < 0)
                st = gml_error_set(GML_ERR_IO, "writing tensor '%s/%s' to '%s' failed (disk full?)", groups[k],
                                   reg->specs[i].name, file);
    }
done:
    for (int k = 0; k < 3; k++)
        if (g[k] >= 0) H5Gclose(g[k]);
    if (f >= 0 && H5Fclose(f) < 0 && st == GML_OK) st = gml_error_set(GML_ERR_IO, "closing '%s' failed", file);
    free(ents);
    free(eptr);
    free(shapes);
    free(man_buf);
    free(cfg_buf);
    return st;
}

/* ------------------------------------------------------------ directory */

static int parse_step_name(const char *name, long long *step) {
    if (strncmp(name, "step_", 5) != 0 || !name[5]) return 0;
    char *end = NULL;
    long long v = strtoll(name + 5, &end, 10);
    if (*end != '\0' || v < 0) return 0;
    *step = v;
    return 1;
}

static int cmp_desc(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Steps of the committed checkpoints in dir, newest first (malloc'd). */
static gml_status list_steps(const char *dir, long long **out, int *n) {
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? GML_OK : gml_error_set(GML_ERR_IO, "cannot list '%s'", dir);
    int cap = 16;
    long long *v = malloc((size_t)cap * sizeof *v);
    struct dirent *e;
    while (v && (e = readdir(d))) {
        long long s;
        if (!parse_step_name(e->d_name, &s)) continue;
        if (*n == cap) {
            long long *nv = realloc(v, (size_t)(cap *= 2) * sizeof *v);
            if (!nv) {
                free(v);
                v = NULL;
                break;
            }
            v = nv;
        }
        v[(*n)++] = s;
    }
    closedir(d);
    if (!v) return gml_error_set(GML_ERR_NOMEM, "out of host memory listing '%s'", dir);
    qsort(v, (size_t)*n, sizeof *v, cmp_desc);
    *out = v;
    return GML_OK;
}

/* rm -r of a checkpoint directory (flat: files only). */
static void remove_dir(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        char f[4096];
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(f, sizeof f, "%s/%s", path, e->d_name);
            unlink(f);
        }
        closedir(d);
    }
    rmdir(path);
}

/* Leftovers of interrupted saves: .tmp-* directories and latest.tmp. */
static void remove_partial(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char f[4096];
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, ".tmp-", 5) != 0) continue;
        snprintf(f, sizeof f, "%s/%s", dir, e->d_name);
        remove_dir(f);
    }
    closedir(d);
    snprintf(f, sizeof f, "%s/latest.tmp", dir);
    unlink(f);
}

static gml_status write_latest(const char *dir, const char *name) {
    char tmp[4096], fin[4096];
    snprintf(tmp, sizeof tmp, "%s/latest.tmp", dir);
    snprintf(fin, sizeof fin, "%s/latest", dir);
    FILE *f = fopen(tmp, "w");
    if (!f) return gml_error_set(GML_ERR_IO, "cannot create '%s'", tmp);
    int bad = fprintf(f, "%s\n", name) < 0;
    bad |= fclose(f) != 0;
    if (bad) return gml_error_set(GML_ERR_IO, "cannot write '%s' (disk full?)", tmp);
    GML_CHECK(gml_fsync_path(tmp));
    if (rename(tmp, fin) != 0) return gml_error_set(GML_ERR_IO, "cannot rename '%s' to '%s'", tmp, fin);
    return gml_fsync_path(dir);
}

/* Rank 0's part of a save: write, commit, point latest, prune. */
static gml_status commit(const char *dir, gml_gpt *m, gml_zero *z, const gml_mesh *mesh, const Gml__RunConfig *cfg,
                         const gml_ckpt_progress *prog, int keep_last, const host_state *h) {
    char name[64], tmpdir[4096], file[4096 + 16], fin[4096 + 64];
    snprintf(name, sizeof name, "step_%08lld", (long long)prog->step);
    if (snprintf(tmpdir, sizeof tmpdir, "%s/.tmp-%s", dir, name) >= (int)sizeof tmpdir)
        return gml_error_set(GML_ERR_BAD_INPUT, "checkpoint.dir '%s' is too long", dir);
    snprintf(file, sizeof file, "%s/%s", tmpdir, STATE_FILE);
    snprintf(fin, sizeof fin, "%s/%s", dir, name);
    GML_CHECK(gml_mkdir_p(dir));
    remove_partial(dir);
    if (mkdir(tmpdir, 0755) != 0) return gml_error_set(GML_ERR_IO, "cannot create '%s'", tmpdir);
    gml_status st = write_state(file, m, z, mesh, cfg, prog, h);
    if (st == GML_OK) st = gml_fsync_path(file);
    if (st == GML_OK) st = gml_fsync_path(tmpdir);
    if (st == GML_OK) {
        struct stat sb;
        if (stat(fin, &sb) == 0) remove_dir(fin); /* a re-save of the same step replaces it */
        if (rename(tmpdir, fin) != 0) st = gml_error_set(GML_ERR_IO, "cannot rename '%s' to '%s'", tmpdir, fin);
    }
    if (st == GML_OK) st = gml_fsync_path(dir);
    if (st == GML_OK) st = write_latest(dir, name);
    if (st != GML_OK) {
        remove_dir(tmpdir);
        return st;
    }
    if (keep_last > 0) {
        long long *steps = NULL;
        int n = 0;
        if (list_steps(dir, &steps, &n) == GML_OK) {
            for (int i = keep_last; i < n; i++) {
                char old[4096];
                snprintf(old, sizeof old, "%s/step_%08lld", dir, steps[i]);
                remove_dir(old);
            }
        }
        free(steps);
    }
    return GML_OK;
}

/* Every rank learns whether all ranks succeeded (a failed rank's status is
 * kept; the others report that a peer failed). */
static gml_status agree(gml_comm *world, gml_status mine, const char *what) {
    float bad = mine != GML_OK ? 1.0f : 0.0f;
    gml_status cst = gml_comm_allreduce_sum_f32(world, &bad, 1, NULL);
    if (mine != GML_OK) return mine;
    if (cst != GML_OK) return cst;
    if (bad > 0.0f) return gml_error_set(GML_ERR_IO, "%s failed on %d other rank(s)", what, (int)bad);
    return GML_OK;
}

/* The background writer of rank 0 (one at a time). */
static pid_t g_writer = -1;
static long long g_writer_step;

gml_status gml_ckpt_writer_wait(int block) {
    if (g_writer < 0) return GML_OK;
    int status = 0;
    pid_t r = waitpid(g_writer, &status, block ? 0 : WNOHANG);
    if (r == 0) return GML_OK; /* still writing */
    if (r < 0) {
        g_writer = -1;
        return gml_error_set(GML_ERR_IO, "lost the checkpoint writer of step %lld: %s", g_writer_step,
                             strerror(errno));
    }
    g_writer = -1;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return GML_OK;
    return gml_error_set(GML_ERR_IO, "writing the checkpoint of step %lld failed in the background (%s %d; its "
                         "message is above); the previous checkpoints are intact",
                         g_writer_step, WIFEXITED(status) ? "exit" : "signal",
                         WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

/* Rank 0: write and commit in a child process working on the (copy-on-write)
 * host copy, so the step loop goes on; the child dies with its parent, so a
 * killed run never commits afterwards. */
static gml_status commit_in_background(const char *dir, gml_gpt *m, gml_zero *z, const gml_mesh *mesh,
                                       const Gml__RunConfig *cfg, const gml_ckpt_progress *prog, int keep_last,
                                       const host_state *h) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) return gml_error_set(GML_ERR_IO, "cannot fork the checkpoint writer: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1) _exit(3); /* the parent is already gone */
        double t0 = now_s();
        gml_status st = commit(dir, m, z, mesh, cfg, prog, keep_last, h);
        double s = now_s() - t0, gb = (double)h->P * 3 * 4 / 1e9;
        if (st != GML_OK)
            fprintf(stderr, "gml-dist: error: checkpoint of step %lld: %s\n", (long long)prog->step,
                    gml_error_message());
        else
            printf("checkpoint: step %lld written in the background in %.2f s (%.2f GB, %.2f GB/s)\n",
                   (long long)prog->step, s, gb, s > 0 ? gb / s : 0.0);
        fflush(stdout);
        fflush(stderr);
        _exit(st == GML_OK ? 0 : 1);
    }
    g_writer = pid;
    g_writer_step = (long long)prog->step;
    return GML_OK;
}

gml_status gml_ckpt_save(const char *dir, gml_gpt *m, gml_zero *z, const gml_mesh *mesh, const Gml__RunConfig *cfg,
                         const gml_ckpt_progress *prog, int keep_last, int async, double *seconds) {
    double t0 = now_s();
    gml_status st = mesh->rank == 0 ? gml_ckpt_writer_wait(1) : GML_OK; /* one writer at a time */
    host_state h;
    memset(&h, 0, sizeof h);
    if (st == GML_OK) st = gather_state(m, z, &h);
    if (st == GML_OK && mesh->rank == 0)
        st = async ? commit_in_background(dir, m, z, mesh, cfg, prog, keep_last, &h)
                   : commit(dir, m, z, mesh, cfg, prog, keep_last, &h);
    host_state_free(&h);
    st = agree(mesh->world_c, st, "saving the checkpoint");
    if (seconds) *seconds = now_s() - t0;
    return st;
}

/* ------------------------------------------------------------ read */

/* Open a checkpoint file, check its format and unpack its manifest; the
 * caller closes *f and frees *man (gml__checkpoint_manifest__free_unpacked). */
static gml_status open_ckpt(const char *path, hid_t *f_out, Gml__CheckpointManifest **man_out) {
    *f_out = -1;
    *man_out = NULL;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (access(path, R_OK) != 0) return gml_error_set(GML_ERR_BAD_INPUT, "checkpoint file '%s' cannot be read", path);
    if (H5Fis_hdf5(path) <= 0)
        return gml_error_set(GML_ERR_BAD_INPUT, "checkpoint file '%s' is not a complete HDF5 file (truncated?)", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return gml_error_set(GML_ERR_BAD_INPUT, "checkpoint file '%s' cannot be opened (truncated?)", path);
    char fmt[64] = "";
    int ver = 0;
    uint8_t *buf = NULL;
    size_t n = 0;
    Gml__CheckpointManifest *man = NULL;
    gml_status st = GML_OK;
    if (gml_h5_read_str_attr(f, "format", fmt, sizeof fmt) != 0 || strcmp(fmt, GML_CKPT_FORMAT) != 0 ||
        gml_h5_read_int_attr(f, "format_version", &ver) != 0 || ver != GML_CKPT_VERSION)
        st = gml_error_set(GML_ERR_BAD_INPUT, "'%s' is not a gml-dist checkpoint (format '%s' version %d)", path,
                           GML_CKPT_FORMAT, GML_CKPT_VERSION);
    else if (gml_h5_read_bytes(f, "manifest", &buf, &n) != 0 || !(man = gml__checkpoint_manifest__unpack(NULL, n, buf)))
        st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': the manifest is missing or corrupt", path);
    free(buf);
    if (st != GML_OK) {
        H5Fclose(f);
        return st;
    }
    *f_out = f;
    *man_out = man;
    return GML_OK;
}

/* Read and verify everything of `path` (a state.h5) into h; nothing of the
 * model is touched. *damaged: the failure is the file's (unreadable,
 * truncated, checksum) rather than a mismatch with this run's model, which
 * no older checkpoint would fix. */
static gml_status read_state(const char *path, gml_gpt *m, host_state *h, Gml__CheckpointManifest **man_out,
                             int *damaged) {
    *man_out = NULL;
    *damaged = 1;
    memset(h, 0, sizeof *h);
    hid_t f;
    Gml__CheckpointManifest *man = NULL;
    GML_CHECK(open_ckpt(path, &f, &man));
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
    GML_CHECK_GOTO(host_state_alloc(h, gml_gpt_num_params(m)), st, done);
    for (int k = 0; k < 3 && st == GML_OK; k++) {
        hid_t g = H5Gopen2(f, groups[k], H5P_DEFAULT);
        if (g < 0) {
            st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s' lacks group '%s'", path, groups[k]);
            break;
        }
        for (int i = 0; i < reg->n && st == GML_OK; i++) {
            const gml_param_spec *p = &reg->specs[i];
            const Gml__TensorEntry *e = man->tensors[(size_t)k * reg->n + (size_t)i];
            if (!e->name || strcmp(e->name, p->name) != 0 || !e->group || strcmp(e->group, groups[k]) != 0) {
                st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': manifest entry %d of '%s' is '%s', expected "
                                   "'%s'", path, i, groups[k], e->name ? e->name : "?", p->name);
                break;
            }
            st = gml_h5_read_tensor(g, path, groups[k], p, h->t[k] + p->offset);
            if (st != GML_OK) break;
            uint32_t crc = gml_crc32c(h->t[k] + p->offset, p->numel * sizeof(float));
            if (!e->has_crc32c || crc != e->crc32c)
                st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': tensor '%s/%s' fails its checksum (stored "
                                   "%08x, read %08x): the file is corrupt", path, groups[k], p->name,
                                   (unsigned)e->crc32c, (unsigned)crc);
        }
        H5Gclose(g);
    }
done:
    H5Fclose(f);
    if (st != GML_OK) {
        if (man) gml__checkpoint_manifest__free_unpacked(man, NULL);
        host_state_free(h);
        return st;
    }
    *man_out = man;
    return GML_OK;
}

/* Put a verified state into the model and this rank's optimizer range. */
static gml_status apply_state(gml_zero *z, const host_state *h, const Gml__CheckpointManifest *man,
                              gml_ckpt_progress *prog) {
    GML_CHECK(gml_zero_restore(z, h->t[0], h->t[1], h->t[2], (int)man->adam_t));
    prog->step = man->step;
    prog->loader_epoch = man->loader_epoch;
    prog->loader_index = man->loader_index;
    return GML_OK;
}

/* Try one checkpoint on every rank; all ranks agree on the outcome.
 * *damaged as in read_state (any rank's). */
static gml_status try_load(const char *path, gml_gpt *m, gml_zero *z, const gml_mesh *mesh, gml_ckpt_progress *prog,
                           int *damaged) {
    host_state h;
    Gml__CheckpointManifest *man = NULL;
    gml_status st = read_state(path, m, &h, &man, damaged);
    if (st == GML_OK) *damaged = 0;
    st = agree(mesh->world_c, st, "reading the checkpoint");
    if (st == GML_OK) st = apply_state(z, &h, man, prog);
    if (man) {
        host_state_free(&h);
        gml__checkpoint_manifest__free_unpacked(man, NULL);
    }
    return st;
}

gml_status gml_ckpt_resume(const char *dir, const char *spec, gml_gpt *m, gml_zero *z, const gml_mesh *mesh,
                           gml_ckpt_progress *prog, int *loaded, char *path_out, size_t cap) {
    *loaded = 0;
    char path[4096];
    if (strcmp(spec, "none") == 0) return GML_OK;
    if (strcmp(spec, "auto") != 0) { /* an explicit checkpoint: it must load */
        struct stat sb;
        if (stat(spec, &sb) == 0 && S_ISDIR(sb.st_mode)) snprintf(path, sizeof path, "%s/%s", spec, STATE_FILE);
        else snprintf(path, sizeof path, "%s", spec);
        int damaged = 0;
        GML_CHECK(try_load(path, m, z, mesh, prog, &damaged));
        *loaded = 1;
        if (path_out) snprintf(path_out, cap, "%s", path);
        return GML_OK;
    }
    long long *steps = NULL;
    int n = 0;
    GML_CHECK(list_steps(dir, &steps, &n));
    gml_status st = GML_OK;
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/step_%08lld/%s", dir, steps[i], STATE_FILE);
        int damaged = 0;
        st = try_load(path, m, z, mesh, prog, &damaged);
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

/* ------------------------------------------------------------ info */

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
        snprintf(path, cap, "%s/%s/%s", spec, name, STATE_FILE);
    } else {
        snprintf(path, cap, "%s/%s", spec, STATE_FILE);
    }
    return GML_OK;
}

gml_status gml_ckpt_export(const char *spec, const char *out) {
    char path[4096 + 300];
    GML_CHECK(resolve_user_path(spec, path, sizeof path));
    hid_t f;
    Gml__CheckpointManifest *man = NULL;
    GML_CHECK(open_ckpt(path, &f, &man));
    H5Fclose(f);
    gml_gpt_config c;
    memset(&c, 0, sizeof c);
    c.n_layer = man->n_layer, c.n_head = man->n_head, c.n_embd = man->n_embd, c.block_size = man->block_size;
    c.vocab_size = man->vocab_size, c.padded_vocab_size = man->padded_vocab_size, c.init_std = 0.02f;
    gml__checkpoint_manifest__free_unpacked(man, NULL);
    gml_backend *be = NULL;
    gml_gpt *m = NULL;
    host_state h;
    Gml__CheckpointManifest *vm = NULL;
    int damaged = 0;
    gml_status st = gml_backend_create("cpu", 0, &be);
    if (st == GML_OK) st = gml_gpt_create(be, &c, 1, 1, 0, &m);
    if (st == GML_OK) st = read_state(path, m, &h, &vm, &damaged); /* verifies every checksum */
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

gml_status gml_ckpt_info(const char *spec, FILE *out) {
    char path[4096 + 300];
    GML_CHECK(resolve_user_path(spec, path, sizeof path));
    hid_t f;
    Gml__CheckpointManifest *man = NULL;
    GML_CHECK(open_ckpt(path, &f, &man));
    gml_status st = GML_OK;
    const Gml__Layout *l = man->layout;
    fprintf(out, "checkpoint: %s\nformat: %s v%d, written by gml-dist %s\n", path, man->format ? man->format : "?",
            man->format_version, man->software_version ? man->software_version : "?");
    fprintf(out, "step: %lld (adam t %lld), data position: epoch %llu sequence %llu, seed %llu\n",
            (long long)man->step, (long long)man->adam_t, (unsigned long long)man->loader_epoch,
            (unsigned long long)man->loader_index, (unsigned long long)man->seed);
    if (l)
        fprintf(out, "layout: %d rank(s), dp %d tp %d pp %d, zero %d, %s\n", l->world, l->dp, l->tp, l->pp, l->zero,
                l->device ? l->device : "?");
    fprintf(out, "model: n_layer %d, n_head %d, n_embd %d, block_size %d, vocab %d (padded %d)\n", man->n_layer,
            man->n_head, man->n_embd, man->block_size, man->vocab_size, man->padded_vocab_size);
    size_t total = 0;
    uint32_t digest = 0;
    for (size_t i = 0; i < man->n_tensors && st == GML_OK; i++) {
        const Gml__TensorEntry *e = man->tensors[i];
        gml_param_spec p;
        memset(&p, 0, sizeof p);
        if (!e->name || !e->group || e->n_shape < 1 || e->n_shape > GML_PARAM_MAX_DIMS) {
            st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': manifest entry %zu is malformed", path, i);
            break;
        }
        snprintf(p.name, sizeof p.name, "%s", e->name);
        p.ndim = (int)e->n_shape;
        p.numel = 1;
        for (int d = 0; d < p.ndim; d++) p.shape[d] = e->shape[d], p.numel *= (size_t)e->shape[d];
        float *data = malloc(p.numel * sizeof *data);
        hid_t g = H5Gopen2(f, e->group, H5P_DEFAULT);
        if (!data || g < 0) {
            st = gml_error_set(data ? GML_ERR_BAD_INPUT : GML_ERR_NOMEM, "checkpoint '%s': cannot read group '%s'",
                               path, e->group);
        } else {
            st = gml_h5_read_tensor(g, path, e->group, &p, data);
            uint32_t crc = st == GML_OK ? gml_crc32c(data, p.numel * sizeof(float)) : 0;
            if (st == GML_OK && crc != e->crc32c)
                st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': tensor '%s/%s' fails its checksum (stored "
                                   "%08x, read %08x): the file is corrupt", path, e->group, e->name,
                                   (unsigned)e->crc32c, (unsigned)crc);
        }
        if (g >= 0) H5Gclose(g);
        free(data);
        if (strcmp(e->group, "params") == 0) total += p.numel;
        digest = gml_crc32c_update(digest, &e->crc32c, sizeof e->crc32c);
    }
    if (st == GML_OK)
        fprintf(out, "tensors: %zu (%zu parameters), all checksums verified; content digest %08x\n", man->n_tensors,
                total, (unsigned)digest);
    gml__checkpoint_manifest__free_unpacked(man, NULL);
    H5Fclose(f);
    return st;
}
