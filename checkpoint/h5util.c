/* h5util.c — shared HDF5 / fsync helpers (see h5util.h). */
#include "checkpoint/h5util.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

hid_t gml_h5_create_v110(const char *path) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return -1;
    hid_t f = -1;
    if (H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110) >= 0)
        f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    return f;
}

static herr_t write_scalar_attr(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, const void *value) {
    hid_t sp = H5Screate(H5S_SCALAR);
    if (sp < 0) return -1;
    hid_t a = H5Acreate2(loc, name, file_type, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t r = a < 0 ? -1 : H5Awrite(a, mem_type, value);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return r;
}

herr_t gml_h5_write_int_attr(hid_t loc, const char *name, int value) {
    return write_scalar_attr(loc, name, H5T_STD_I32LE, H5T_NATIVE_INT, &value);
}

herr_t gml_h5_write_u64_attr(hid_t loc, const char *name, uint64_t value) {
    return write_scalar_attr(loc, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &value);
}

herr_t gml_h5_write_str_attr(hid_t loc, const char *name, const char *value) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    H5Tset_size(t, strlen(value) + 1);
    herr_t r = write_scalar_attr(loc, name, t, t, value);
    H5Tclose(t);
    return r;
}

static int read_scalar_attr(hid_t loc, const char *name, hid_t mem_type, void *value) {
    if (H5Aexists(loc, name) <= 0) return -1;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    herr_t r = H5Aread(a, mem_type, value);
    H5Aclose(a);
    return r < 0 ? -1 : 0;
}

int gml_h5_read_int_attr(hid_t loc, const char *name, int *value) {
    return read_scalar_attr(loc, name, H5T_NATIVE_INT, value);
}

int gml_h5_read_u64_attr(hid_t loc, const char *name, uint64_t *value) {
    return read_scalar_attr(loc, name, H5T_NATIVE_UINT64, value);
}

int gml_h5_read_str_attr(hid_t loc, const char *name, char *buf, size_t cap) {
    if (H5Aexists(loc, name) <= 0) return -1;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    int ok = -1;
    if (ft >= 0 && H5Tget_class(ft) == H5T_STRING && !H5Tis_variable_str(ft) && H5Tget_size(ft) < cap) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, cap);
        memset(buf, 0, cap);
        ok = H5Aread(a, mt, buf) < 0 ? -1 : 0;
        H5Tclose(mt);
    }
    if (ft >= 0) H5Tclose(ft);
    H5Aclose(a);
    return ok;
}

herr_t gml_h5_write_tensor(hid_t grp, const gml_param_spec *p, const float *data) {
    hsize_t dims[GML_PARAM_MAX_DIMS];
    for (int d = 0; d < p->ndim; d++) dims[d] = (hsize_t)p->shape[d];
    hid_t sp = H5Screate_simple(p->ndim, dims, NULL);
    if (sp < 0) return -1;
    hid_t ds = H5Dcreate2(grp, p->name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t r = ds < 0 ? -1 : H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(sp);
    return r;
}

gml_status gml_h5_read_tensor(hid_t grp, const char *file, const char *group, const gml_param_spec *p, float *dst) {
    const char *g = group ? group : "", *sep = group ? "/" : "";
    hid_t ds = H5Lexists(grp, p->name, H5P_DEFAULT) > 0 ? H5Dopen2(grp, p->name, H5P_DEFAULT) : -1;
    if (ds < 0) return gml_error_set(GML_ERR_BAD_INPUT, "'%s' lacks tensor '%s%s%s'", file, g, sep, p->name);
    gml_status st = GML_OK;
    hid_t sp = H5Dget_space(ds);
    hsize_t dims[8];
    int nd = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
    int same = nd == p->ndim && nd <= 8 && H5Sget_simple_extent_dims(sp, dims, NULL) == nd;
    for (int d = 0; same && d < nd; d++) same = dims[d] == (hsize_t)p->shape[d];
    if (!same)
        st = gml_error_set(GML_ERR_BAD_INPUT, "'%s': tensor '%s%s%s' has the wrong shape", file, g, sep, p->name);
    else if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0)
        st = gml_error_set(GML_ERR_BAD_INPUT, "'%s': tensor '%s%s%s' cannot be read (truncated or corrupt file?)",
                           file, g, sep, p->name);
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(ds);
    return st;
}

herr_t gml_h5_write_bytes(hid_t loc, const char *name, const void *data, size_t n) {
    hsize_t dims[1] = {(hsize_t)n};
    hid_t sp = H5Screate_simple(1, dims, NULL);
    if (sp < 0) return -1;
    hid_t ds = H5Dcreate2(loc, name, H5T_STD_U8LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t r = ds < 0 ? -1 : (n ? H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : 0);
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(sp);
    return r;
}

int gml_h5_read_bytes(hid_t loc, const char *name, uint8_t **out, size_t *n) {
    *out = NULL;
    *n = 0;
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0) return -1;
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) return -1;
    hid_t sp = H5Dget_space(ds);
    hssize_t cnt = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    int r = -1;
    uint8_t *buf = cnt >= 0 ? malloc((size_t)cnt + 1) : NULL;
    if (buf && (cnt == 0 || H5Dread(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0)) {
        *out = buf;
        *n = (size_t)cnt;
        r = 0;
    } else {
        free(buf);
    }
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(ds);
    return r;
}

gml_status gml_fsync_path(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return gml_error_set(GML_ERR_IO, "cannot open '%s' to fsync it", path);
    int r = fsync(fd);
    close(fd);
    if (r != 0) return gml_error_set(GML_ERR_IO, "cannot fsync '%s'", path);
    return GML_OK;
}
