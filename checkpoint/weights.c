/* weights.c — write and read model weights as plain HDF5 (see weights.h).
 * Not for: optimizer state or resumable checkpoints. */
#include "checkpoint/weights.h"

#include "checkpoint/h5util.h"

#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define H5_TRY(call, what)                                                                              \
    do {                                                                                                \
        if ((call) < 0) {                                                                               \
            st = gml_error_set(GML_ERR_IO, "HDF5 %s failed for '%s'", (what), path);                    \
            goto done;                                                                                  \
        }                                                                                               \
    } while (0)

static const char *shape_keys[6] = {"n_layer", "n_head", "n_embd", "block_size", "vocab_size",
                                    "padded_vocab_size"};

static void config_values(const gml_gpt_config *c, int v[6]) {
    v[0] = c->n_layer;
    v[1] = c->n_head;
    v[2] = c->n_embd;
    v[3] = c->block_size;
    v[4] = c->vocab_size;
    v[5] = c->padded_vocab_size;
}

gml_status gml_weights_save(gml_gpt *m, const char *path, int extra_grads) {
    gml_status st = GML_OK;
    const gml_param_registry *reg = gml_gpt_params(m);
    size_t P = gml_gpt_num_params(m);
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return gml_error_set(GML_ERR_INVALID_ARG, "path too long: '%s'", path);
    float *host = malloc(P * sizeof *host);
    if (!host) return gml_error_set(GML_ERR_NOMEM, "out of host memory for %zu parameters", P);
    hid_t f = -1, g = -1;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    GML_CHECK_GOTO(gml_gpt_get_params_host(m, host), st, done);
    f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        st = gml_error_set(GML_ERR_IO, "cannot create '%s'", tmp);
        goto done;
    }
    H5_TRY(gml_h5_write_str_attr(f, "format", GML_WEIGHTS_FORMAT), "write format");
    H5_TRY(gml_h5_write_int_attr(f, "format_version", GML_WEIGHTS_VERSION), "write version");
    int v[6];
    config_values(gml_gpt_get_config(m), v);
    for (int i = 0; i < 6; i++) H5_TRY(gml_h5_write_int_attr(f, shape_keys[i], v[i]), "write model shape");
    for (int i = 0; i < reg->n; i++) H5_TRY(gml_h5_write_tensor(f, &reg->specs[i], host + reg->specs[i].offset), "write");
    if (extra_grads) {
        GML_CHECK_GOTO(gml_gpt_get_grads_host(m, host), st, done);
        g = H5Gcreate2(f, "grads", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        H5_TRY(g, "create group grads");
        for (int i = 0; i < reg->n; i++)
            H5_TRY(gml_h5_write_tensor(g, &reg->specs[i], host + reg->specs[i].offset), "write grads");
    }
    if (g >= 0) H5Gclose(g);
    g = -1;
    H5_TRY(H5Fflush(f, H5F_SCOPE_GLOBAL), "flush");
    H5_TRY(H5Fclose(f), "close");
    f = -1;
    GML_CHECK_GOTO(gml_fsync_path(tmp), st, done);
    if (rename(tmp, path) != 0) st = gml_error_set(GML_ERR_IO, "cannot rename '%s' to '%s'", tmp, path);
done:
    if (g >= 0) H5Gclose(g);
    if (f >= 0) H5Fclose(f);
    if (st != GML_OK) unlink(tmp);
    free(host);
    return st;
}

static gml_status open_checked(const char *path, hid_t *out) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (access(path, R_OK) != 0)
        return gml_error_set(GML_ERR_BAD_INPUT, "weights file '%s' cannot be read ---> HINT: train first, or pass "
                             "--weights PATH", path);
    if (H5Fis_hdf5(path) <= 0)
        return gml_error_set(GML_ERR_BAD_INPUT, "weights file '%s' is not an HDF5 file", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return gml_error_set(GML_ERR_BAD_INPUT, "weights file '%s' cannot be opened as HDF5", path);
    char fmt[64];
    int ver = 0;
    if (gml_h5_read_str_attr(f, "format", fmt, sizeof fmt) != 0 || strcmp(fmt, GML_WEIGHTS_FORMAT) != 0 ||
        gml_h5_read_int_attr(f, "format_version", &ver) != 0 || ver != GML_WEIGHTS_VERSION) {
        H5Fclose(f);
        return gml_error_set(GML_ERR_BAD_INPUT, "'%s' is not a gml-dist weights file (expected format '%s' "
                             "version %d)", path, GML_WEIGHTS_FORMAT, GML_WEIGHTS_VERSION);
    }
    *out = f;
    return GML_OK;
}

gml_status gml_weights_read_config(const char *path, gml_gpt_config *cfg) {
    hid_t f;
    GML_CHECK(open_checked(path, &f));
    int v[6];
    for (int i = 0; i < 6; i++) {
        if (gml_h5_read_int_attr(f, shape_keys[i], &v[i]) != 0) {
            H5Fclose(f);
            return gml_error_set(GML_ERR_BAD_INPUT, "weights file '%s' lacks attribute '%s'", path, shape_keys[i]);
        }
    }
    H5Fclose(f);
    memset(cfg, 0, sizeof *cfg);
    cfg->n_layer = v[0];
    cfg->n_head = v[1];
    cfg->n_embd = v[2];
    cfg->block_size = v[3];
    cfg->vocab_size = v[4];
    cfg->padded_vocab_size = v[5];
    cfg->init_std = 0.02f;
    return GML_OK;
}

gml_status gml_weights_load(gml_gpt *m, const char *path) {
    gml_gpt_config fc;
    GML_CHECK(gml_weights_read_config(path, &fc));
    int want[6], got[6];
    config_values(gml_gpt_get_config(m), want);
    config_values(&fc, got);
    for (int i = 0; i < 6; i++)
        if (want[i] != got[i])
            return gml_error_set(GML_ERR_BAD_INPUT, "weights file '%s' has %s = %d, the model has %d", path,
                                 shape_keys[i], got[i], want[i]);
    const gml_param_registry *reg = gml_gpt_params(m);
    size_t P = gml_gpt_num_params(m);
    float *host = malloc(P * sizeof *host);
    if (!host) return gml_error_set(GML_ERR_NOMEM, "out of host memory for %zu parameters", P);
    hid_t f;
    gml_status st = open_checked(path, &f);
    if (st != GML_OK) {
        free(host);
        return st;
    }
    for (int i = 0; i < reg->n && st == GML_OK; i++)
        st = gml_h5_read_tensor(f, path, NULL, &reg->specs[i], host + reg->specs[i].offset);
    H5Fclose(f);
    if (st == GML_OK) st = gml_gpt_set_params_host(m, host);
    free(host);
    return st;
}
