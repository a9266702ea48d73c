/* rankfile.c — rank files and commit markers (see rankfile.h). */
#include "checkpoint/rankfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint/h5util.h"
#include "core/crc32c.h"

#define RANKFILE_VERSION 2

const char *const gml_ckpt_groups[3] = {"params", "adam_m", "adam_v"};

void gml_rankfile_name(int rank, char *buf, size_t cap) { snprintf(buf, cap, "rank_%05d.h5", rank); }

void gml_rankfile_entry_free(gml_rankfile_entry *e) {
    free(e->pieces);
    free(e->ptrs);
    memset(e, 0, sizeof *e);
}

static herr_t write_piece(hid_t grp, const char *name, const float *data, uint64_t offset, uint64_t count) {
    hsize_t n = (hsize_t)count;
    hid_t sp = H5Screate_simple(1, &n, NULL);
    if (sp < 0) return -1;
    hid_t ds = H5Dcreate2(grp, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t r = ds < 0 ? -1 : H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (r >= 0) r = gml_h5_write_u64_attr(ds, "offset", offset);
    if (ds >= 0 && H5Dclose(ds) < 0) r = -1;
    H5Sclose(sp);
    return r;
}

gml_status gml_rankfile_write(const char *dir, int rank, int ranks, int64_t step, uint64_t save_id,
                              const gml_param_registry *reg, size_t lo, size_t hi, const float *const t[3],
                              gml_rankfile_entry *out) {
    memset(out, 0, sizeof *out);
    gml_rankfile_name(rank, out->file, sizeof out->file);
    char path[4200];
    if (snprintf(path, sizeof path, "%s/%s", dir, out->file) >= (int)sizeof path)
        return gml_error_set(GML_ERR_BAD_INPUT, "checkpoint directory '%s' is too long", dir);
    /* the pieces: every parameter that intersects [lo, hi), per group */
    int np = 0;
    for (int i = 0; i < reg->n; i++) {
        const gml_param_spec *p = &reg->specs[i];
        np += p->offset < hi && p->offset + p->numel > lo ? 3 : 0;
    }
    out->pieces = calloc((size_t)(np ? np : 1), sizeof *out->pieces);
    out->ptrs = calloc((size_t)(np ? np : 1), sizeof *out->ptrs);
    if (!out->pieces || !out->ptrs) {
        gml_rankfile_entry_free(out);
        return gml_error_set(GML_ERR_NOMEM, "out of host memory for the pieces of '%s'", path);
    }
    gml_status st = GML_OK;
    hid_t f = gml_h5_create_v110(path), g = -1;
    if (f < 0) st = gml_error_set(GML_ERR_IO, "cannot create rank file '%s'", path);
    if (st == GML_OK &&
        (gml_h5_write_str_attr(f, "format", GML_RANKFILE_FORMAT) < 0 ||
         gml_h5_write_int_attr(f, "format_version", RANKFILE_VERSION) < 0 ||
         gml_h5_write_u64_attr(f, "step", (uint64_t)step) < 0 || gml_h5_write_u64_attr(f, "save_id", save_id) < 0 ||
         gml_h5_write_int_attr(f, "dp_rank", rank) < 0 || gml_h5_write_int_attr(f, "dp_size", ranks) < 0 ||
         gml_h5_write_u64_attr(f, "lo", lo) < 0 || gml_h5_write_u64_attr(f, "hi", hi) < 0))
        st = gml_error_set(GML_ERR_IO, "writing the attributes of rank file '%s' failed (disk full?)", path);
    int j = 0;
    for (int k = 0; k < 3 && st == GML_OK; k++) {
        g = H5Gcreate2(f, gml_ckpt_groups[k], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) st = gml_error_set(GML_ERR_IO, "cannot create group '%s' in '%s'", gml_ckpt_groups[k], path);
        for (int i = 0; i < reg->n && st == GML_OK; i++) {
            const gml_param_spec *p = &reg->specs[i];
            size_t a = p->offset > lo ? p->offset : lo, b = p->offset + p->numel < hi ? p->offset + p->numel : hi;
            if (a >= b) continue;
            const float *data = t[k] + (a - lo); /* (b - a) f32 */
            Gml__TensorPiece *pc = &out->pieces[j];
            gml__tensor_piece__init(pc);
            pc->group = (char *)gml_ckpt_groups[k];
            pc->name = (char *)p->name;
            pc->has_offset = 1, pc->offset = a - p->offset;
            pc->has_count = 1, pc->count = b - a;
            pc->has_crc32c = 1, pc->crc32c = gml_crc32c(data, (b - a) * sizeof(float));
            out->ptrs[j++] = pc;
            if (write_piece(g, p->name, data, pc->offset, pc->count) < 0)
                st = gml_error_set(GML_ERR_IO, "writing tensor '%s/%s' to rank file '%s' failed (disk full?)",
                                   gml_ckpt_groups[k], p->name, path);
        }
        if (g >= 0) H5Gclose(g);
        g = -1;
    }
    if (f >= 0 && H5Fclose(f) < 0 && st == GML_OK)
        st = gml_error_set(GML_ERR_IO, "closing rank file '%s' failed (disk full?)", path);
    if (st == GML_OK) st = gml_fsync_path(path);
    struct stat sb;
    if (st == GML_OK && stat(path, &sb) != 0) st = gml_error_set(GML_ERR_IO, "cannot stat '%s'", path);
    if (st != GML_OK) {
        gml_rankfile_entry_free(out);
        return st;
    }
    Gml__RankFile *m = &out->msg;
    gml__rank_file__init(m);
    m->has_rank = 1, m->rank = rank;
    m->file = out->file;
    m->has_lo = 1, m->lo = lo;
    m->has_hi = 1, m->hi = hi;
    m->has_bytes = 1, m->bytes = (uint64_t)sb.st_size;
    m->has_step = 1, m->step = step;
    m->has_save_id = 1, m->save_id = save_id;
    m->n_pieces = (size_t)j;
    m->pieces = out->ptrs;
    return GML_OK;
}

gml_status gml_rankfile_open(const char *ckpt, const char *dir, const Gml__RankFile *rf, int64_t step,
                             uint64_t save_id, hid_t *out, char *path, size_t cap) {
    *out = -1;
    const char *name = rf->file ? rf->file : "";
    snprintf(path, cap, "%s/%s", dir, name);
    if (!name[0] || strchr(name, '/') || strcmp(name, "..") == 0 || strcmp(name, ".") == 0)
        return gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': the manifest names rank file '%s', not a file "
                             "name beside it (corrupt manifest?)", ckpt, name);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': rank file '%s' (dp rank %d's shard) is missing", ckpt,
                             path, rf->rank);
    if (!rf->has_bytes || (uint64_t)sb.st_size != rf->bytes)
        return gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': rank file '%s' is %lld bytes, the manifest says "
                             "%llu (truncated or replaced)", ckpt, path, (long long)sb.st_size,
                             (unsigned long long)rf->bytes);
    hid_t f = H5Fis_hdf5(path) > 0 ? H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
    if (f < 0)
        return gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': rank file '%s' cannot be opened (truncated or "
                             "corrupt?)", ckpt, path);
    char fmt[64] = "";
    uint64_t s = 0, id = 0, lo = 0, hi = 0;
    int rank = -1;
    if (gml_h5_read_str_attr(f, "format", fmt, sizeof fmt) != 0 || strcmp(fmt, GML_RANKFILE_FORMAT) != 0 ||
        gml_h5_read_u64_attr(f, "step", &s) != 0 || gml_h5_read_u64_attr(f, "save_id", &id) != 0 ||
        gml_h5_read_int_attr(f, "dp_rank", &rank) != 0 || gml_h5_read_u64_attr(f, "lo", &lo) != 0 ||
        gml_h5_read_u64_attr(f, "hi", &hi) != 0) {
        H5Fclose(f);
        return gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': '%s' is not a gml-dist rank file (format '%s')",
                             ckpt, path, GML_RANKFILE_FORMAT);
    }
    if ((int64_t)s != step || id != save_id || rank != rf->rank || lo != rf->lo || hi != rf->hi) {
        H5Fclose(f);
        return gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': rank file '%s' belongs to another checkpoint (step "
                             "%llu, save %016llx, dp rank %d; the manifest says step %lld, save %016llx, dp rank %d)",
                             ckpt, path, (unsigned long long)s, (unsigned long long)id, rank, (long long)step,
                             (unsigned long long)save_id, rf->rank);
    }
    *out = f;
    return GML_OK;
}

/* Open piece pc's dataset in f and check its element count: *g, *ds (close
 * both; -1 when not opened). */
static gml_status piece_dataset(hid_t f, const char *ckpt, const char *path, const Gml__TensorPiece *pc, hid_t *g,
                                hid_t *ds) {
    const char *gn = pc->group ? pc->group : "?", *name = pc->name ? pc->name : "?";
    *g = H5Lexists(f, gn, H5P_DEFAULT) > 0 ? H5Gopen2(f, gn, H5P_DEFAULT) : -1;
    *ds = *g >= 0 && H5Lexists(*g, name, H5P_DEFAULT) > 0 ? H5Dopen2(*g, name, H5P_DEFAULT) : -1;
    if (*ds < 0)
        return gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': '%s' lacks tensor '%s/%s'", ckpt, path, gn, name);
    hid_t sp = H5Dget_space(*ds);
    hssize_t n = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    if (sp >= 0) H5Sclose(sp);
    if (n < 0 || (uint64_t)n != pc->count)
        return gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': tensor '%s/%s' in '%s' has %lld elements, the "
                             "manifest says %llu", ckpt, gn, name, path, (long long)n, (unsigned long long)pc->count);
    return GML_OK;
}

static void close_dataset(hid_t g, hid_t ds) {
    if (ds >= 0) H5Dclose(ds);
    if (g >= 0) H5Gclose(g);
}

/* 1 when dst (pc->count floats) has the CRC-32C the manifest stores for pc;
 * *crc gets the one it has. */
static int crc_matches(const Gml__TensorPiece *pc, const float *dst, uint32_t *crc) {
    *crc = gml_crc32c(dst, pc->count * sizeof(float));
    return pc->has_crc32c && *crc == pc->crc32c;
}

static gml_status checksum_error(const char *ckpt, const char *path, const Gml__TensorPiece *pc, uint32_t crc) {
    return gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': tensor '%s/%s' fails its checksum in '%s' (elements "
                         "%llu-%llu; stored %08x, read %08x): the file is corrupt", ckpt, pc->group ? pc->group : "?",
                         pc->name ? pc->name : "?", path, (unsigned long long)pc->offset,
                         (unsigned long long)(pc->offset + pc->count), (unsigned)pc->crc32c, (unsigned)crc);
}

gml_status gml_rankfile_read_piece(hid_t f, const char *ckpt, const char *path, const Gml__TensorPiece *pc,
                                   float *dst) {
    hid_t g, ds;
    gml_status st = piece_dataset(f, ckpt, path, pc, &g, &ds);
    if (st == GML_OK && pc->count > 0 && H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0)
        st = gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': tensor '%s/%s' in '%s' cannot be read (truncated or "
                           "corrupt file?)", ckpt, pc->group, pc->name, path);
    uint32_t crc;
    if (st == GML_OK && !crc_matches(pc, dst, &crc)) st = checksum_error(ckpt, path, pc, crc);
    close_dataset(g, ds);
    return st;
}

gml_status gml_rankfile_locate_piece(hid_t f, const char *ckpt, const char *path, const Gml__TensorPiece *pc,
                                     int64_t *at) {
    *at = -1;
    hid_t g, ds;
    gml_status st = piece_dataset(f, ckpt, path, pc, &g, &ds);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    hid_t dcpl = st == GML_OK ? H5Dget_create_plist(ds) : -1, type = st == GML_OK ? H5Dget_type(ds) : -1;
    int plain = dcpl >= 0 && type >= 0 && H5Pget_layout(dcpl) == H5D_CONTIGUOUS && H5Pget_external_count(dcpl) == 0 &&
                H5Tequal(type, H5T_IEEE_F32LE) > 0 && H5Dget_storage_size(ds) == pc->count * sizeof(float);
    haddr_t a = plain && pc->count > 0 ? H5Dget_offset(ds) : HADDR_UNDEF;
    if (a != HADDR_UNDEF && a <= (haddr_t)INT64_MAX - pc->count * sizeof(float)) *at = (int64_t)a;
    if (dcpl >= 0) H5Pclose(dcpl);
    if (type >= 0) H5Tclose(type);
#endif
    close_dataset(g, ds);
    return st;
}

gml_piece_result gml_rankfile_pread_piece(int fd, const Gml__TensorPiece *pc, int64_t at, float *dst) {
    gml_piece_result r = {GML_PIECE_OK, 0, 0};
    size_t n = pc->count * sizeof(float), done = 0;
    while (done < n) {
        size_t want = n - done < ((size_t)1 << 30) ? n - done : (size_t)1 << 30;
        ssize_t got = pread(fd, (char *)dst + done, want, (off_t)at + (off_t)done);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            r.code = got == 0 ? GML_PIECE_SHORT : GML_PIECE_IOERR;
            r.err = got == 0 ? 0 : errno;
            return r;
        }
        done += (size_t)got;
    }
    if (!crc_matches(pc, dst, &r.crc)) r.code = GML_PIECE_CRC;
    return r;
}

gml_status gml_rankfile_piece_error(const char *ckpt, const char *path, const Gml__TensorPiece *pc,
                                    gml_piece_result r) {
    switch (r.code) {
    case GML_PIECE_OK: return GML_OK;
    case GML_PIECE_CRC: return checksum_error(ckpt, path, pc, r.crc);
    case GML_PIECE_NOMEM:
        return gml_error_set(GML_ERR_NOMEM, "out of host memory for a checkpoint piece of %llu elements",
                             (unsigned long long)pc->count);
    default:
        return gml_error_set(GML_ERR_BAD_INPUT, "checkpoint '%s': tensor '%s/%s' in '%s' cannot be read (%s)", ckpt,
                             pc->group ? pc->group : "?", pc->name ? pc->name : "?", path,
                             r.code == GML_PIECE_SHORT ? "the file ends first: truncated" : strerror(r.err));
    }
}

/* ------------------------------------------------------------ markers */

static void marker_path(const char *dir, int rank, const char *ext, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/rank_%05d.%s", dir, rank, ext);
}

static int write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

gml_status gml_rankfile_mark_done(const char *dir, const gml_rankfile_entry *e) {
    char tmp[4200], fin[4200];
    marker_path(dir, e->msg.rank, "done.tmp", tmp, sizeof tmp);
    marker_path(dir, e->msg.rank, "done", fin, sizeof fin);
    size_t n = gml__rank_file__get_packed_size(&e->msg);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return gml_error_set(GML_ERR_NOMEM, "out of host memory for the marker '%s'", fin);
    gml__rank_file__pack(&e->msg, buf);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int bad = fd < 0 || write_all(fd, buf, n) != 0 || fsync(fd) != 0;
    if (fd >= 0 && close(fd) != 0) bad = 1;
    free(buf);
    if (bad) return gml_error_set(GML_ERR_IO, "cannot write the commit marker '%s' (disk full?)", tmp);
    if (rename(tmp, fin) != 0) return gml_error_set(GML_ERR_IO, "cannot rename '%s' to '%s'", tmp, fin);
    return gml_fsync_path(dir);
}

void gml_rankfile_mark_failed(const char *dir, int rank, const char *msg) {
    char path[4200];
    marker_path(dir, rank, "failed", path, sizeof path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return;
    (void)write_all(fd, msg, strlen(msg));
    close(fd);
}

static uint8_t *read_small_file(const char *path, size_t *n) {
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) break;
        if (len + 1 == cap) {
            uint8_t *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    int err = ferror(f);
    fclose(f);
    if (!buf || err) {
        free(buf);
        return NULL;
    }
    buf[len] = 0;
    *n = len;
    return buf;
}

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

gml_status gml_rankfile_wait(const char *dir, int ranks, int64_t step, double timeout_s, Gml__RankFile **out) {
    for (int r = 0; r < ranks; r++) out[r] = NULL;
    double t0 = mono_s();
    char path[4200];
    gml_status st = GML_OK;
    for (;;) {
        int missing = 0;
        for (int r = 1; r < ranks && st == GML_OK; r++) {
            if (out[r]) continue;
            size_t n = 0;
            marker_path(dir, r, "done", path, sizeof path);
            uint8_t *buf = read_small_file(path, &n);
            if (buf) {
                out[r] = gml__rank_file__unpack(NULL, n, buf);
                free(buf);
                if (!out[r] || out[r]->rank != r || out[r]->step != step || !out[r]->file)
                    st = gml_error_set(GML_ERR_IO, "the commit marker '%s' of dp rank %d is corrupt", path, r);
                continue;
            }
            marker_path(dir, r, "failed", path, sizeof path);
            buf = read_small_file(path, &n);
            if (buf) {
                st = gml_error_set(GML_ERR_IO, "the checkpoint writer of dp rank %d failed: %s", r, (char *)buf);
                free(buf);
                break;
            }
            missing++;
        }
        if (st != GML_OK || missing == 0) break;
        double waited = mono_s() - t0;
        if (waited > timeout_s) {
            char list[256] = "";
            size_t len = 0;
            for (int r = 1; r < ranks && len + 16 < sizeof list; r++)
                if (!out[r]) len += (size_t)snprintf(list + len, sizeof list - len, "%s%d", len ? ", " : "", r);
            st = gml_error_set(GML_ERR_IO, "no commit marker from dp rank(s) %s of %d after %.0f s in '%s': their "
                               "checkpoint writers died or hang (step %lld not committed)", list, ranks, waited, dir,
                               (long long)step);
            break;
        }
        struct timespec ts = {0, 10 * 1000 * 1000}; /* 10 ms */
        nanosleep(&ts, NULL);
    }
    if (st != GML_OK)
        for (int r = 0; r < ranks; r++) {
            if (out[r]) gml__rank_file__free_unpacked(out[r], NULL);
            out[r] = NULL;
        }
    return st;
}

void gml_rankfile_unmark(const char *dir, int ranks) {
    char path[4200];
    for (int r = 0; r < ranks; r++) {
        marker_path(dir, r, "done", path, sizeof path);
        unlink(path);
        marker_path(dir, r, "failed", path, sizeof path);
        unlink(path);
    }
}
