/* dataset.c — the "gml-tokens" HDF5 token file: write (atomic), open with
 * full validation, and ranged reads of token ids.
 *
 * Every HDF5 call is checked. HDF5's own error-stack printing is switched
 * off; a failure becomes one gml error message naming the file and what is
 * wrong (plus HDF5's innermost reason for I/O failures). Not for: window
 * order (core/loader.c), text handling (launcher/prep.c).
 */
#include "core/dataset.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HINT "\n---> HINT: recreate it with gml-dist prep"

struct gml_dataset {
    char *path;
    hid_t file;
    hid_t dset[2];   /* /train, /val */
    hid_t fspace[2]; /* their file dataspaces, reused for hyperslab reads */
    uint64_t ntok[2];
    int vocab_size;
    gml_tokenizer tok;
};

const char *gml_dataset_split_name(gml_split split) { return split == GML_SPLIT_VAL ? "val" : "train"; }

/* ---- error helpers ---- */

/* BAD_INPUT: "data file 'PATH': <detail>" + the recreate hint. */
__attribute__((format(printf, 4, 5))) static gml_status bad_at(const char *file, int line, const char *path,
                                                               const char *fmt, ...) {
    char detail[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return gml_error_set_at(GML_ERR_BAD_INPUT, file, line, "data file '%s': %s" HINT, path, detail);
}
#define BAD(path, ...) bad_at(__FILE__, __LINE__, (path), __VA_ARGS__)

/* The innermost description on HDF5's error stack (often holds errno text). */
static herr_t walk_cb(unsigned n, const H5E_error2_t *e, void *data) {
    (void)n;
    if (e->desc) snprintf((char *)data, 256, "%s", e->desc);
    return 0;
}
static const char *h5_reason(char buf[256]) {
    buf[0] = '\0';
    if (H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, walk_cb, buf) < 0 || buf[0] == '\0')
        snprintf(buf, 256, "unknown HDF5 error");
    return buf;
}

/* For writes: any failing H5 call -> GML_ERR_IO naming the call and the file. */
#define H5_CHECK_GOTO(call, st, label)                                                                                 \
    do {                                                                                                               \
        if ((call) < 0) {                                                                                              \
            char why_[256];                                                                                            \
            (st) = gml_error_set(GML_ERR_IO, "writing data file '%s': %s failed: %s", path, #call, h5_reason(why_));   \
            goto label;                                                                                                \
        }                                                                                                              \
    } while (0)

static void h5_silence(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static void close_attr(hid_t *h) {
    if (*h >= 0) H5Aclose(*h);
    *h = -1;
}
static void close_type(hid_t *h) {
    if (*h >= 0) H5Tclose(*h);
    *h = -1;
}
static void close_space(hid_t *h) {
    if (*h >= 0) H5Sclose(*h);
    *h = -1;
}
static void close_dset(hid_t *h) {
    if (*h >= 0) H5Dclose(*h);
    *h = -1;
}
static void close_plist(hid_t *h) {
    if (*h >= 0) H5Pclose(*h);
    *h = -1;
}

/* ---- open / validate ---- */

/* Reads root attribute `name` as a string into buf (cap bytes). */
static gml_status read_str_attr(const char *path, hid_t file, const char *name, char *buf, size_t cap) {
    gml_status st = GML_OK;
    hid_t attr = -1, type = -1, space = -1, mtype = -1;
    htri_t ex = H5Aexists(file, name);
    if (ex < 0) return BAD(path, "cannot query root attribute '%s'", name);
    if (ex == 0) return BAD(path, "root attribute '%s' is missing (not a gml-tokens file?)", name);
    if ((attr = H5Aopen(file, name, H5P_DEFAULT)) < 0 || (type = H5Aget_type(attr)) < 0 ||
        (space = H5Aget_space(attr)) < 0) {
        st = BAD(path, "cannot open root attribute '%s'", name);
        goto done;
    }
    if (H5Tget_class(type) != H5T_STRING || H5Sget_simple_extent_npoints(space) != 1) {
        st = BAD(path, "root attribute '%s' is not a single string", name);
        goto done;
    }
    htri_t vlen = H5Tis_variable_str(type);
    H5T_cset_t cset = H5Tget_cset(type); /* ASCII or UTF-8; memory must match to convert */
    if (vlen < 0 || cset < 0 || (mtype = H5Tcopy(H5T_C_S1)) < 0 || H5Tset_cset(mtype, cset) < 0) {
        st = BAD(path, "cannot read root attribute '%s'", name);
        goto done;
    }
    if (vlen > 0) {
        char *s = NULL;
        if (H5Tset_size(mtype, H5T_VARIABLE) < 0 || H5Aread(attr, mtype, &s) < 0 || !s) {
            st = BAD(path, "cannot read root attribute '%s'", name);
            goto done;
        }
        snprintf(buf, cap, "%s", s);
        H5free_memory(s);
    } else {
        size_t sz = H5Tget_size(type);
        char *tmp = calloc(sz + 1, 1);
        if (!tmp) {
            st = gml_error_set(GML_ERR_NOMEM, "data file '%s': out of host memory", path);
            goto done;
        }
        if (H5Tset_size(mtype, sz) < 0 || H5Aread(attr, mtype, tmp) < 0) {
            free(tmp);
            st = BAD(path, "cannot read root attribute '%s'", name);
            goto done;
        }
        snprintf(buf, cap, "%s", tmp);
        free(tmp);
    }
done:
    close_type(&mtype);
    close_space(&space);
    close_type(&type);
    close_attr(&attr);
    return st;
}

/* Reads root attribute `name` as an integer. */
static gml_status read_int_attr(const char *path, hid_t file, const char *name, long long *v) {
    gml_status st = GML_OK;
    hid_t attr = -1, type = -1, space = -1;
    htri_t ex = H5Aexists(file, name);
    if (ex < 0) return BAD(path, "cannot query root attribute '%s'", name);
    if (ex == 0) return BAD(path, "root attribute '%s' is missing", name);
    if ((attr = H5Aopen(file, name, H5P_DEFAULT)) < 0 || (type = H5Aget_type(attr)) < 0 ||
        (space = H5Aget_space(attr)) < 0) {
        st = BAD(path, "cannot open root attribute '%s'", name);
        goto done;
    }
    if (H5Tget_class(type) != H5T_INTEGER || H5Sget_simple_extent_npoints(space) != 1) {
        st = BAD(path, "root attribute '%s' is not a single integer", name);
        goto done;
    }
    if (H5Aread(attr, H5T_NATIVE_LLONG, v) < 0) st = BAD(path, "cannot read root attribute '%s'", name);
done:
    close_space(&space);
    close_type(&type);
    close_attr(&attr);
    return st;
}

/* Opens 1-D dataset `name`; returns its dataset id, length, element size. */
static gml_status open_1d(const char *path, hid_t file, const char *name, hid_t *out, uint64_t *len, int want_u8) {
    gml_status st = GML_OK;
    hid_t d = -1, type = -1, space = -1;
    *out = -1;
    htri_t ex = H5Lexists(file, name, H5P_DEFAULT);
    if (ex < 0) return BAD(path, "cannot look up '%s'", name);
    if (ex == 0) return BAD(path, "dataset '%s' is missing", name);
    if ((d = H5Dopen2(file, name, H5P_DEFAULT)) < 0) return BAD(path, "'%s' is not a dataset", name);
    if ((type = H5Dget_type(d)) < 0 || (space = H5Dget_space(d)) < 0) {
        st = BAD(path, "cannot read the type and shape of '%s'", name);
        goto fail;
    }
    int ndims = H5Sget_simple_extent_ndims(space);
    if (ndims != 1) {
        st = BAD(path, "dataset '%s' has %d dimensions, expected 1", name, ndims);
        goto fail;
    }
    hsize_t dim = 0;
    if (H5Sget_simple_extent_dims(space, &dim, NULL) < 0) {
        st = BAD(path, "cannot read the shape of '%s'", name);
        goto fail;
    }
    H5T_class_t cls = H5Tget_class(type);
    H5T_sign_t sign = H5Tget_sign(type);
    size_t sz = H5Tget_size(type);
    int ok = cls == H5T_INTEGER && sign == H5T_SGN_NONE && (want_u8 ? sz == 1 : (sz == 2 || sz == 4));
    if (!ok) {
        const char *cname = cls == H5T_INTEGER ? (sign == H5T_SGN_NONE ? "uint" : "int")
                            : cls == H5T_FLOAT ? "float"
                                               : "non-numeric ";
        st = BAD(path, "dataset '%s' has element type %s%zu, expected %s", name, cname, sz * 8,
                 want_u8 ? "uint8" : "uint16 or uint32");
        goto fail;
    }
    if (dim == 0) {
        st = BAD(path, "dataset '%s' is empty", name);
        goto fail;
    }
    close_space(&space);
    close_type(&type);
    *out = d;
    *len = (uint64_t)dim;
    return GML_OK;
fail:
    close_space(&space);
    close_type(&type);
    close_dset(&d);
    return st;
}

static gml_status validate(gml_dataset *ds) {
    const char *path = ds->path;
    char buf[256];
    GML_CHECK(read_str_attr(path, ds->file, "format", buf, sizeof buf));
    if (strcmp(buf, GML_DATASET_FORMAT) != 0)
        return BAD(path, "attribute 'format' is \"%s\", expected \"%s\"", buf, GML_DATASET_FORMAT);
    long long ver = 0, vocab = 0;
    GML_CHECK(read_int_attr(path, ds->file, "format_version", &ver));
    if (ver != GML_DATASET_FORMAT_VERSION)
        return BAD(path, "format_version is %lld, expected %d (this gml-dist reads version %d only)", ver,
                   GML_DATASET_FORMAT_VERSION, GML_DATASET_FORMAT_VERSION);
    GML_CHECK(read_int_attr(path, ds->file, "vocab_size", &vocab));
    if (vocab < 1 || vocab > GML_DATASET_MAX_VOCAB)
        return BAD(path, "vocab_size is %lld, expected 1..%d", vocab, GML_DATASET_MAX_VOCAB);
    ds->vocab_size = (int)vocab;
    GML_CHECK(read_str_attr(path, ds->file, "tokenizer", buf, sizeof buf));
    if (strcmp(buf, "byte") == 0) {
        if (vocab != 256) return BAD(path, "tokenizer \"byte\" with vocab_size %lld, expected 256", vocab);
        gml_tokenizer_init_byte(&ds->tok);
    } else if (strcmp(buf, "char") == 0) {
        if (vocab > 256) return BAD(path, "tokenizer \"char\" with vocab_size %lld, expected 1..256", vocab);
        hid_t v = -1;
        uint64_t vlen = 0;
        GML_CHECK(open_1d(path, ds->file, "/tokenizer_vocab", &v, &vlen, 1));
        uint8_t table[256];
        gml_status st = GML_OK;
        if (vlen != (uint64_t)vocab)
            st = BAD(path, "/tokenizer_vocab has %llu entries, vocab_size is %lld", (unsigned long long)vlen, vocab);
        else if (H5Dread(v, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, table) < 0)
            st = BAD(path, "cannot read /tokenizer_vocab");
        close_dset(&v);
        GML_CHECK(st);
        uint8_t seen[256] = {0};
        for (int i = 0; i < (int)vocab; i++) {
            if (seen[table[i]]) return BAD(path, "/tokenizer_vocab holds byte 0x%02x twice", table[i]);
            seen[table[i]] = 1;
        }
        GML_CHECK(gml_tokenizer_init_from_vocab(&ds->tok, table, (int)vocab));
    } else {
        return BAD(path, "tokenizer is \"%s\", expected \"byte\" or \"char\"", buf);
    }
    for (int s = 0; s < 2; s++) {
        const char *name = s == GML_SPLIT_TRAIN ? "/train" : "/val";
        GML_CHECK(open_1d(path, ds->file, name, &ds->dset[s], &ds->ntok[s], 0));
        if ((ds->fspace[s] = H5Dget_space(ds->dset[s])) < 0) return BAD(path, "cannot read the shape of '%s'", name);
    }
    return GML_OK;
}

gml_status gml_dataset_open(const char *path, gml_dataset **out) {
    *out = NULL;
    h5_silence();
    struct stat sb;
    if (stat(path, &sb) != 0)
        return gml_error_set(GML_ERR_BAD_INPUT, "data file '%s': %s\n---> HINT: create it with gml-dist prep", path,
                             strerror(errno));
    if (!S_ISREG(sb.st_mode)) return BAD(path, "not a regular file");
    if (sb.st_size == 0) return BAD(path, "the file is empty (0 bytes), not HDF5");
    htri_t is = H5Fis_hdf5(path);
    if (is <= 0)
        return gml_error_set(GML_ERR_BAD_INPUT,
                             "data file '%s': not an HDF5 file\n---> HINT: a text corpus must first become a token "
                             "file: gml-dist prep --out FILE.h5 TEXT...",
                             path);

    gml_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) return gml_error_set(GML_ERR_NOMEM, "data file '%s': out of host memory", path);
    ds->file = ds->dset[0] = ds->dset[1] = ds->fspace[0] = ds->fspace[1] = -1;
    gml_status st = GML_OK;
    ds->path = strdup(path);
    if (!ds->path) {
        st = gml_error_set(GML_ERR_NOMEM, "data file '%s': out of host memory", path);
        goto fail;
    }
    if ((ds->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT)) < 0) {
        char why[256];
        st = BAD(path, "HDF5 cannot open it: %s", h5_reason(why));
        goto fail;
    }
    GML_CHECK_GOTO(validate(ds), st, fail);
    *out = ds;
    return GML_OK;
fail:
    gml_dataset_close(ds);
    return st;
}

void gml_dataset_close(gml_dataset *ds) {
    if (!ds) return;
    for (int s = 0; s < 2; s++) {
        close_space(&ds->fspace[s]);
        close_dset(&ds->dset[s]);
    }
    if (ds->file >= 0) H5Fclose(ds->file);
    free(ds->path);
    free(ds);
}

int gml_dataset_vocab_size(const gml_dataset *ds) { return ds->vocab_size; }
const gml_tokenizer *gml_dataset_tokenizer(const gml_dataset *ds) { return &ds->tok; }
const char *gml_dataset_path(const gml_dataset *ds) { return ds->path; }
uint64_t gml_dataset_num_tokens(const gml_dataset *ds, gml_split split) {
    return (split == GML_SPLIT_TRAIN || split == GML_SPLIT_VAL) ? ds->ntok[split] : 0;
}

gml_status gml_dataset_read(gml_dataset *ds, gml_split split, uint64_t start, size_t n, int32_t *out) {
    if (split != GML_SPLIT_TRAIN && split != GML_SPLIT_VAL)
        return gml_error_set(GML_ERR_INVALID_ARG, "gml_dataset_read: split %d (0 train, 1 val)", (int)split);
    uint64_t len = ds->ntok[split];
    if (start > len || n > len - start)
        return gml_error_set(GML_ERR_INVALID_ARG,
                             "data file '%s': read of tokens [%llu, %llu + %zu) outside split '%s' (%llu tokens)",
                             ds->path, (unsigned long long)start, (unsigned long long)start, n,
                             gml_dataset_split_name(split), (unsigned long long)len);
    if (n == 0) return GML_OK;
    hsize_t hstart = (hsize_t)start, hcount = (hsize_t)n;
    hid_t mspace = H5Screate_simple(1, &hcount, NULL);
    if (mspace < 0) return gml_error_set(GML_ERR_IO, "data file '%s': H5Screate_simple failed", ds->path);
    gml_status st = GML_OK;
    /* uint32 in memory: the same bytes as int32 for every id < 2^31, and ids
     * are checked against vocab_size (<= 2^24) right after. */
    uint32_t *u = (uint32_t *)out;
    if (H5Sselect_hyperslab(ds->fspace[split], H5S_SELECT_SET, &hstart, NULL, &hcount, NULL) < 0 ||
        H5Dread(ds->dset[split], H5T_NATIVE_UINT32, mspace, ds->fspace[split], H5P_DEFAULT, u) < 0) {
        char why[256];
        st = gml_error_set(GML_ERR_IO, "data file '%s': reading tokens [%llu, %llu + %zu) of '%s' failed: %s", ds->path,
                           (unsigned long long)start, (unsigned long long)start, n, gml_dataset_split_name(split),
                           h5_reason(why));
    }
    H5Sclose(mspace);
    GML_CHECK(st);
    for (size_t i = 0; i < n; i++)
        if (u[i] >= (uint32_t)ds->vocab_size)
            return BAD(ds->path, "token %llu of '/%s' is %u, not below vocab_size %d", (unsigned long long)(start + i),
                       gml_dataset_split_name(split), u[i], ds->vocab_size);
    return GML_OK;
}

/* ---- write ---- */

static gml_status write_str_attr(const char *path, hid_t file, const char *name, const char *value) {
    gml_status st = GML_OK;
    hid_t type = -1, space = -1, attr = -1;
    H5_CHECK_GOTO(type = H5Tcopy(H5T_C_S1), st, done);
    H5_CHECK_GOTO(H5Tset_size(type, H5T_VARIABLE), st, done);
    H5_CHECK_GOTO(H5Tset_cset(type, H5T_CSET_UTF8), st, done);
    H5_CHECK_GOTO(space = H5Screate(H5S_SCALAR), st, done);
    H5_CHECK_GOTO(attr = H5Acreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT), st, done);
    H5_CHECK_GOTO(H5Awrite(attr, type, &value), st, done);
done:
    close_attr(&attr);
    close_space(&space);
    close_type(&type);
    return st;
}

static gml_status write_int_attr(const char *path, hid_t file, const char *name, int32_t value) {
    gml_status st = GML_OK;
    hid_t space = -1, attr = -1;
    H5_CHECK_GOTO(space = H5Screate(H5S_SCALAR), st, done);
    H5_CHECK_GOTO(attr = H5Acreate2(file, name, H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT), st, done);
    H5_CHECK_GOTO(H5Awrite(attr, H5T_NATIVE_INT32, &value), st, done);
done:
    close_attr(&attr);
    close_space(&space);
    return st;
}

/* 1-D chunked token dataset `name` from ids[0..n), written a chunk at a time. */
static gml_status write_tokens(const char *path, hid_t file, const char *name, const int32_t *ids, size_t n, int u16) {
    gml_status st = GML_OK;
    hid_t fspace = -1, dcpl = -1, d = -1, mspace = -1;
    hsize_t dim = (hsize_t)n;
    hsize_t chunk = n < GML_DATASET_CHUNK_TOKENS ? (hsize_t)n : GML_DATASET_CHUNK_TOKENS;
    size_t esz = u16 ? 2 : 4;
    void *buf = malloc((size_t)chunk * esz); /* (chunk) uint16 or uint32 */
    if (!buf) return gml_error_set(GML_ERR_NOMEM, "writing data file '%s': out of host memory", path);
    H5_CHECK_GOTO(fspace = H5Screate_simple(1, &dim, NULL), st, done);
    H5_CHECK_GOTO(dcpl = H5Pcreate(H5P_DATASET_CREATE), st, done);
    H5_CHECK_GOTO(H5Pset_chunk(dcpl, 1, &chunk), st, done);
    H5_CHECK_GOTO(
        d = H5Dcreate2(file, name, u16 ? H5T_STD_U16LE : H5T_STD_U32LE, fspace, H5P_DEFAULT, dcpl, H5P_DEFAULT), st,
        done);
    for (size_t at = 0; at < n; at += (size_t)chunk) {
        size_t m = n - at < (size_t)chunk ? n - at : (size_t)chunk;
        for (size_t i = 0; i < m; i++) {
            if (u16)
                ((uint16_t *)buf)[i] = (uint16_t)ids[at + i];
            else
                ((uint32_t *)buf)[i] = (uint32_t)ids[at + i];
        }
        hsize_t hstart = (hsize_t)at, hcount = (hsize_t)m;
        close_space(&mspace);
        H5_CHECK_GOTO(mspace = H5Screate_simple(1, &hcount, NULL), st, done);
        H5_CHECK_GOTO(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &hstart, NULL, &hcount, NULL), st, done);
        H5_CHECK_GOTO(H5Dwrite(d, u16 ? H5T_NATIVE_UINT16 : H5T_NATIVE_UINT32, mspace, fspace, H5P_DEFAULT, buf), st,
                      done);
    }
done:
    close_space(&mspace);
    close_dset(&d);
    close_plist(&dcpl);
    close_space(&fspace);
    free(buf);
    return st;
}

static gml_status check_ids(const char *path, const char *what, const int32_t *ids, size_t n, int vocab) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return gml_error_set(GML_ERR_INVALID_ARG, "writing data file '%s': %s token %zu is %d, outside [0, %d)",
                                 path, what, i, (int)ids[i], vocab);
    return GML_OK;
}

static gml_status fsync_path(const char *p, int dir) {
    int fd = open(p, dir ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
    if (fd < 0) return gml_error_set(GML_ERR_IO, "open '%s' for fsync: %s", p, strerror(errno));
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    if (rc != 0) return gml_error_set(GML_ERR_IO, "fsync '%s': %s", p, strerror(err));
    return GML_OK;
}

gml_status gml_dataset_write(const char *path, const gml_tokenizer *tok, const int32_t *train, size_t ntrain,
                             const int32_t *val, size_t nval) {
    h5_silence();
    if (!path || !tok || !train || !val || ntrain == 0 || nval == 0)
        return gml_error_set(GML_ERR_INVALID_ARG,
                             "gml_dataset_write('%s'): needs a tokenizer and non-empty train "
                             "(%zu) and val (%zu) tokens",
                             path ? path : "(null)", ntrain, nval);
    int vocab = tok->vocab_size;
    if (vocab < 1 || vocab > GML_DATASET_MAX_VOCAB)
        return gml_error_set(GML_ERR_INVALID_ARG, "writing data file '%s': vocab size %d, expected 1..%d", path, vocab,
                             GML_DATASET_MAX_VOCAB);
    GML_CHECK(check_ids(path, "train", train, ntrain, vocab));
    GML_CHECK(check_ids(path, "val", val, nval, vocab));

    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (!tmp) return gml_error_set(GML_ERR_NOMEM, "writing data file '%s': out of host memory", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);

    gml_status st = GML_OK;
    hid_t file = -1, vspace = -1, vd = -1;
    int created = 0;
    /* Probe with open(2) first so an unwritable path gets errno's words. */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        st = gml_error_set(GML_ERR_BAD_INPUT, "cannot create data file '%s': %s", tmp, strerror(errno));
        goto done;
    }
    close(fd);
    created = 1;
    H5_CHECK_GOTO(file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), st, done);
    GML_CHECK_GOTO(write_str_attr(path, file, "format", GML_DATASET_FORMAT), st, done);
    GML_CHECK_GOTO(write_int_attr(path, file, "format_version", GML_DATASET_FORMAT_VERSION), st, done);
    GML_CHECK_GOTO(write_int_attr(path, file, "vocab_size", vocab), st, done);
    GML_CHECK_GOTO(write_str_attr(path, file, "tokenizer", gml_tokenizer_kind_name(tok->kind)), st, done);
    if (tok->kind == GML_TOKENIZER_CHAR) {
        hsize_t vdim = (hsize_t)vocab;
        H5_CHECK_GOTO(vspace = H5Screate_simple(1, &vdim, NULL), st, done);
        H5_CHECK_GOTO(
            vd = H5Dcreate2(file, "/tokenizer_vocab", H5T_STD_U8LE, vspace, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), st,
            done);
        H5_CHECK_GOTO(H5Dwrite(vd, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, tok->id_to_byte), st, done);
        close_dset(&vd);
    }
    int u16 = vocab <= 65536;
    GML_CHECK_GOTO(write_tokens(path, file, "/train", train, ntrain, u16), st, done);
    GML_CHECK_GOTO(write_tokens(path, file, "/val", val, nval, u16), st, done);
    H5_CHECK_GOTO(H5Fflush(file, H5F_SCOPE_GLOBAL), st, done);
    {
        herr_t rc = H5Fclose(file);
        file = -1;
        H5_CHECK_GOTO(rc, st, done);
    }
    GML_CHECK_GOTO(fsync_path(tmp, 0), st, done);
    if (rename(tmp, path) != 0) {
        st = gml_error_set(GML_ERR_IO, "rename '%s' -> '%s': %s", tmp, path, strerror(errno));
        goto done;
    }
    created = 0;
    {
        /* Make the rename durable: fsync the directory holding path. */
        char *dir = strdup(path);
        if (!dir) {
            st = gml_error_set(GML_ERR_NOMEM, "writing data file '%s': out of host memory", path);
            goto done;
        }
        char *slash = strrchr(dir, '/');
        if (!slash)
            strcpy(dir, ".");
        else if (slash == dir)
            dir[1] = '\0';
        else
            *slash = '\0';
        st = fsync_path(dir, 1);
        free(dir);
    }
done:
    close_dset(&vd);
    close_space(&vspace);
    if (file >= 0) H5Fclose(file);
    if (created) unlink(tmp);
    free(tmp);
    return st;
}
