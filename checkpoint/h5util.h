/* h5util.h — the small HDF5 and file-system helpers that weights.c and
 * ckpt.c share: scalar attributes, one fp32 dataset per parameter (its
 * global shape, under its registry name), opaque byte datasets, fsync.
 * The herr_t/int helpers return < 0 on failure (callers add the file name);
 * the gml_status ones set a message naming file and tensor.
 */
#ifndef GML_H5UTIL_H
#define GML_H5UTIL_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "parallel/params.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Create (truncate) an HDF5 file with the 1.10 object formats, whose
 * metadata carry checksums (readers need HDF5 >= 1.10). < 0 on failure. */
hid_t gml_h5_create_v110(const char *path);

herr_t gml_h5_write_int_attr(hid_t loc, const char *name, int value);
herr_t gml_h5_write_u64_attr(hid_t loc, const char *name, uint64_t value);
herr_t gml_h5_write_str_attr(hid_t loc, const char *name, const char *value);
int gml_h5_read_int_attr(hid_t loc, const char *name, int *value);
int gml_h5_read_u64_attr(hid_t loc, const char *name, uint64_t *value);
int gml_h5_read_str_attr(hid_t loc, const char *name, char *buf, size_t cap);

/* Dataset p->name in grp with p's global shape, fp32. */
herr_t gml_h5_write_tensor(hid_t grp, const gml_param_spec *p, const float *data);
/* Read dataset p->name of grp (in file `file`, for messages) into dst after
 * checking its shape; GML_ERR_BAD_INPUT names the file and the tensor. */
gml_status gml_h5_read_tensor(hid_t grp, const char *file, const char *group, const gml_param_spec *p, float *dst);

/* A 1-D uint8 dataset holding `n` bytes (e.g. a serialized protobuf). */
herr_t gml_h5_write_bytes(hid_t loc, const char *name, const void *data, size_t n);
/* Read such a dataset into a malloc'd buffer (*out, *n); < 0 if absent. */
int gml_h5_read_bytes(hid_t loc, const char *name, uint8_t **out, size_t *n);

/* fsync a file or a directory by path. */
gml_status gml_fsync_path(const char *path);

#ifdef __cplusplus
}
#endif
#endif
