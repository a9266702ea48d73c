/* vds.c — virtual datasets over rank-file pieces (see vds.h). */
#include "checkpoint/vds.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int gml_vds_blocks(int ndim, const int64_t *shape, uint64_t a, uint64_t b, gml_vds_block *out, int cap) {
    if (ndim < 1 || ndim > 8) return -1;
    uint64_t span[8]; /* elements per unit step along dim d */
    span[ndim - 1] = 1;
    for (int d = ndim - 2; d >= 0; d--) span[d] = span[d + 1] * (uint64_t)shape[d + 1];
    uint64_t numel = span[0] * (uint64_t)shape[0];
    if (a > b || b > numel) return -1;
    int n = 0;
    for (uint64_t i = a; i < b;) {
        /* the outermost dim whose unit step starts at i and fits in the run */
        int d = 0;
        while (d < ndim - 1 && (i % span[d] != 0 || b - i < span[d])) d++;
        uint64_t idx = (i / span[d]) % (uint64_t)shape[d], c = (b - i) / span[d];
        if (c > (uint64_t)shape[d] - idx) c = (uint64_t)shape[d] - idx;
        if (n == cap) return -1;
        gml_vds_block *k = &out[n++];
        for (int e = 0; e < ndim; e++) {
            k->start[e] = e <= d ? (i / span[e]) % (uint64_t)shape[e] : 0;
            k->count[e] = e < d ? 1 : e == d ? c : (uint64_t)shape[e];
        }
        k->flat = i - a;
        k->n = c * span[d];
        i += k->n;
    }
    return n;
}

/* H5Pset_virtual reads printf-like %b / %% in source names: escape '%'. */
static void escape_pct(const char *s, char *out, size_t cap) {
    size_t j = 0;
    for (; *s && j + 2 < cap; s++) {
        if (*s == '%') out[j++] = '%';
        out[j++] = *s;
    }
    out[j] = '\0';
}

gml_status gml_vds_create(hid_t grp, const char *name, int ndim, const int64_t *shape, const gml_vds_source *src,
                          int n, const char *where) {
    hsize_t dims[8];
    for (int d = 0; d < ndim; d++) dims[d] = (hsize_t)shape[d];
    gml_status st = GML_OK;
    hid_t vsp = H5Screate_simple(ndim, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE), ds = -1;
    float nan = NAN;
    if (vsp < 0 || dcpl < 0 || H5Pset_fill_value(dcpl, H5T_NATIVE_FLOAT, &nan) < 0) {
        st = gml_error_set(GML_ERR_IO, "'%s': cannot set up virtual dataset '%s'", where, name);
        goto done;
    }
    for (int s = 0; s < n && st == GML_OK; s++) {
        gml_vds_block blk[16];
        int nb = gml_vds_blocks(ndim, shape, src[s].offset, src[s].offset + src[s].count, blk, 16);
        if (nb < 0) {
            st = gml_error_set(GML_ERR_INTERNAL, "'%s': piece [%llu, +%llu) of '%s' is outside the tensor", where,
                               (unsigned long long)src[s].offset, (unsigned long long)src[s].count, name);
            break;
        }
        char file[1024], dset[512];
        escape_pct(src[s].file, file, sizeof file);
        escape_pct(src[s].dset, dset, sizeof dset);
        hsize_t sn = (hsize_t)src[s].count;
        for (int b = 0; b < nb && st == GML_OK; b++) {
            hsize_t start[8], count[8], s0 = (hsize_t)blk[b].flat, c0 = (hsize_t)blk[b].n;
            for (int d = 0; d < ndim; d++) start[d] = (hsize_t)blk[b].start[d], count[d] = (hsize_t)blk[b].count[d];
            hid_t ssp = H5Screate_simple(1, &sn, NULL);
            if (ssp < 0 || H5Sselect_hyperslab(vsp, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
                H5Sselect_hyperslab(ssp, H5S_SELECT_SET, &s0, NULL, &c0, NULL) < 0 ||
                H5Pset_virtual(dcpl, vsp, file, dset, ssp) < 0)
                st = gml_error_set(GML_ERR_IO, "'%s': cannot map '%s' onto '%s' in '%s'", where, name, src[s].dset,
                                   src[s].file);
            if (ssp >= 0) H5Sclose(ssp);
        }
    }
    if (st == GML_OK) {
        H5Sselect_all(vsp);
        ds = H5Dcreate2(grp, name, H5T_IEEE_F32LE, vsp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        if (ds < 0) st = gml_error_set(GML_ERR_IO, "'%s': cannot create virtual dataset '%s'", where, name);
    }
done:
    if (ds >= 0 && H5Dclose(ds) < 0 && st == GML_OK)
        st = gml_error_set(GML_ERR_IO, "'%s': closing virtual dataset '%s' failed", where, name);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (vsp >= 0) H5Sclose(vsp);
    return st;
}

hid_t gml_vds_open(hid_t grp, const char *name, const char *dir) {
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (dapl < 0) return -1;
    hid_t ds = -1;
    if (H5Pset_virtual_prefix(dapl, dir) >= 0 && H5Lexists(grp, name, H5P_DEFAULT) > 0)
        ds = H5Dopen2(grp, name, dapl);
    H5Pclose(dapl);
    return ds;
}
