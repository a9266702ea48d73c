/* vds.h — the checkpoint's top file maps each global logical tensor onto the
 * pieces the ranks wrote, as an HDF5 virtual dataset (HDF5 >= 1.10, serial).
 * Internal to checkpoint/.
 *
 * A piece is a contiguous run [offset, offset + count) of a tensor's
 * row-major flat index, stored as a 1-D dataset in a rank file. In an N-D
 * tensor such a run starts and ends anywhere, mid-row included, so it is cut
 * into at most 2N-1 rectangular blocks (a partial row, whole rows, a partial
 * row; recursively for N > 2): each block becomes one mapping from a regular
 * hyperslab of the virtual dataset to a contiguous 1-D range of the piece,
 * the only kind of selection pair every HDF5 1.10 release handles. Elements
 * no piece covers read as the fill value, NaN (a missing rank file shows up
 * as NaN in plain h5py, not as zeros).
 *
 * Source file names are stored as given (relative, e.g. "rank_00003.h5"):
 * HDF5 1.10 looks for a relative source first under $HDF5_VDS_PREFIX, then
 * the H5Pset_virtual_prefix of the access list, then the directory of the
 * file holding the virtual dataset, then the working directory; so h5py
 * reads a checkpoint from any working directory and after the checkpoint
 * directory was renamed. gml_vds_open pins the prefix to that directory.
 */
#ifndef GML_CKPT_VDS_H
#define GML_CKPT_VDS_H

#include <hdf5.h>
#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *file; /* source file, relative to the virtual dataset's file */
    const char *dset; /* 1-D f32 dataset in it, e.g. "/params/wte.weight" */
    uint64_t offset;  /* first element of the piece in the tensor's flat index */
    uint64_t count;   /* elements */
} gml_vds_source;

/* One block of a flat run: start[d], count[d] in the tensor, and where the
 * block begins in the run (flat - run start) and how many elements it has. */
typedef struct {
    uint64_t start[8], count[8];
    uint64_t flat, n;
} gml_vds_block;

/* Cut [a, b) of a tensor of shape (ndim <= 8) into rectangular blocks in
 * flat order; returns how many were written to out (cap >= 2*ndim - 1 is
 * always enough), or -1 for a bad range. */
int gml_vds_blocks(int ndim, const int64_t *shape, uint64_t a, uint64_t b, gml_vds_block *out, int cap);

/* Create dataset `name` in grp: f32 of `shape`, virtual, mapped onto
 * src[0..n). `where` names the file for messages. GML_ERR_IO on failure. */
gml_status gml_vds_create(hid_t grp, const char *name, int ndim, const int64_t *shape, const gml_vds_source *src,
                          int n, const char *where);

/* Open dataset grp/name for reading with relative sources resolved against
 * `dir` (the directory of the file holding it); close with H5Dclose. < 0 if
 * it cannot be opened. */
hid_t gml_vds_open(hid_t grp, const char *name, const char *dir);

#ifdef __cplusplus
}
#endif
#endif
