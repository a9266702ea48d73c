/* ckpt_dir.c — the checkpoint root directory: which step_ checkpoints it
 * holds, publishing a new one atomically, the `latest` pointer, pruning.
 * Not for: what is inside a checkpoint (ckpt.c, ckpt_read.c). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint/ckpt_impl.h"
#include "checkpoint/h5util.h"

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

gml_status gml_ckpt_list_steps(const char *dir, long long **out, int *n) {
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
        char f[4400];
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(f, sizeof f, "%s/%s", path, e->d_name);
            unlink(f);
        }
        closedir(d);
    }
    rmdir(path);
}

void gml_ckpt_remove_partial(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char f[4400];
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
    char tmp[4200], fin[4200];
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

gml_status gml_ckpt_publish(const char *dir, const char *tmpdir, const char *name, int keep_last) {
    char fin[4200], aside[4200];
    snprintf(fin, sizeof fin, "%s/%s", dir, name);
    snprintf(aside, sizeof aside, "%s/.tmp-replaced-%s", dir, name);
    GML_CHECK(gml_fsync_path(tmpdir));
    struct stat sb;
    int replacing = stat(fin, &sb) == 0; /* a re-save of the same step (after a fallback) replaces it */
    if (replacing) {
        remove_dir(aside);
        if (rename(fin, aside) != 0) return gml_error_set(GML_ERR_IO, "cannot rename '%s' to '%s'", fin, aside);
    }
    if (rename(tmpdir, fin) != 0) return gml_error_set(GML_ERR_IO, "cannot rename '%s' to '%s'", tmpdir, fin);
    GML_CHECK(gml_fsync_path(dir));
    if (replacing) remove_dir(aside);
    GML_CHECK(write_latest(dir, name));
    if (keep_last > 0) {
        long long *steps = NULL;
        int n = 0;
        if (gml_ckpt_list_steps(dir, &steps, &n) == GML_OK) {
            for (int i = keep_last; i < n; i++) { /* renamed away first: never a half-removed step_ */
                char old[4200], gone[4200];
                snprintf(old, sizeof old, "%s/step_%08lld", dir, steps[i]);
                snprintf(gone, sizeof gone, "%s/.tmp-old-step_%08lld", dir, steps[i]);
                if (rename(old, gone) == 0) remove_dir(gone);
            }
        }
        free(steps);
    }
    return GML_OK;
}
