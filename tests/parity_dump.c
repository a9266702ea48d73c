/* parity_dump.c — writes a small GPT's weights, one batch, our loss and every
 * parameter gradient (CPU backend, fp32) to an HDF5 file, for
 * tests/torch_parity.py to recompute independently in PyTorch.
 *
 * usage: parity_dump OUT.h5 [recompute 0|1] [dropout p]
 * With dropout p > 0 the file also carries the attributes dropout and
 * dropout_key, from which the checker redraws the masks (core/dropout.h).
 * Not a CMocka test itself (tests/cmake/parity.cmake runs it with the
 * Python checker).
 */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>

#include "checkpoint/weights.h"
#include "core/backend.h"
#include "core/gpt.h"
#include "core/rng.h"

#define CHECK(call)                                                                                 \
    do {                                                                                            \
        if ((call) != GML_OK) {                                                                     \
            fprintf(stderr, "parity_dump: %s failed: %s\n", #call, gml_error_message());            \
            return 1;                                                                               \
        }                                                                                           \
    } while (0)

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: parity_dump OUT.h5 [recompute]\n");
        return 2;
    }
    int recompute = argc > 2 ? atoi(argv[2]) : 0;
    float dropout = argc > 3 ? strtof(argv[3], NULL) : 0.0f;
    const uint64_t dropout_key = 0x0123456789abcdefULL;
    /* odd sizes on purpose: 3 heads of 8, T < block_size, V not a multiple of 64 */
    gml_gpt_config c = {.n_layer = 2, .n_head = 3, .n_embd = 24, .block_size = 12, .vocab_size = 37,
                        .padded_vocab_size = 64, .init_std = 0.02f, .dropout = dropout};
    const int B = 3, T = 9;
    gml_backend *be;
    gml_gpt *m;
    CHECK(gml_backend_create("cpu", 0, &be));
    CHECK(gml_gpt_create(be, &c, B, T, recompute, &m));
    /* random weights everywhere (not GPT-2 init) so every path carries signal */
    const gml_param_registry *reg = gml_gpt_params(m);
    float *w = malloc(reg->total * sizeof *w);
    gml_rng r;
    gml_rng_init(&r, 1234, 7);
    for (int i = 0; i < reg->n; i++) {
        const gml_param_spec *p = &reg->specs[i];
        int is_ln_weight = p->init == GML_INIT_CONSTANT && p->init_value == 1.0f;
        for (size_t j = 0; j < p->numel; j++) {
            double x = gml_rng_normal(&r);
            w[p->offset + j] = (float)(is_ln_weight ? 1.0 + 0.2 * x : 0.3 * x);
        }
        if (p->valid_rows >= 0) /* padding rows of wte stay 0 */
            for (size_t j = (size_t)p->valid_rows * (size_t)p->shape[1]; j < p->numel; j++) w[p->offset + j] = 0;
    }
    CHECK(gml_gpt_set_params_host(m, w));
    int32_t in[B * T], tg[B * T];
    for (int i = 0; i < B * T; i++) {
        in[i] = (int32_t)gml_rng_below(&r, (uint64_t)c.vocab_size);
        tg[i] = (int32_t)gml_rng_below(&r, (uint64_t)c.vocab_size);
    }
    float *acc;
    CHECK(be->iface->alloc(be, (void **)&acc, 4));
    CHECK(be->iface->memset_zero(be, acc, 4));
    CHECK(gml_gpt_zero_grads(m));
    gml_gpt_set_dropout_key(m, dropout_key, 0);
    CHECK(gml_gpt_forward(m, in, tg, B, T, 1.0f / (B * T)));
    CHECK(gml_gpt_loss_accumulate(m, acc));
    CHECK(gml_gpt_backward(m));
    float loss_sum;
    CHECK(be->iface->download_f32(be, &loss_sum, acc, GML_DTYPE_F32, 1));
    float loss = loss_sum / (B * T);
    CHECK(gml_weights_save(m, argv[1], 1));

    hid_t f = H5Fopen(argv[1], H5F_ACC_RDWR, H5P_DEFAULT);
    hsize_t dims[2] = {B, T};
    hid_t sp = H5Screate_simple(2, dims, NULL);
    hid_t d1 = H5Dcreate2(f, "inputs", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t d2 = H5Dcreate2(f, "targets", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hid_t s0 = H5Screate(H5S_SCALAR);
    hid_t d3 = H5Dcreate2(f, "loss", H5T_IEEE_F32LE, s0, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0 || sp < 0 || d1 < 0 || d2 < 0 || d3 < 0 ||
        H5Dwrite(d1, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, in) < 0 ||
        H5Dwrite(d2, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, tg) < 0 ||
        H5Dwrite(d3, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, &loss) < 0) {
        fprintf(stderr, "parity_dump: writing the batch to %s failed\n", argv[1]);
        return 1;
    }
    hid_t a1 = H5Acreate2(f, "dropout", H5T_IEEE_F32LE, s0, H5P_DEFAULT, H5P_DEFAULT);
    hid_t a2 = H5Acreate2(f, "dropout_key", H5T_STD_U64LE, s0, H5P_DEFAULT, H5P_DEFAULT);
    if (a1 < 0 || a2 < 0 || H5Awrite(a1, H5T_NATIVE_FLOAT, &dropout) < 0 ||
        H5Awrite(a2, H5T_NATIVE_UINT64, &dropout_key) < 0) {
        fprintf(stderr, "parity_dump: writing the dropout attributes to %s failed\n", argv[1]);
        return 1;
    }
    H5Aclose(a1);
    H5Aclose(a2);
    H5Dclose(d1);
    H5Dclose(d2);
    H5Dclose(d3);
    H5Sclose(sp);
    H5Sclose(s0);
    H5Fclose(f);
    printf("parity_dump: loss %.7f, %zu parameters -> %s\n", loss, reg->total, argv[1]);
    be->iface->free(be, acc);
    free(w);
    gml_gpt_destroy(m);
    gml_backend_destroy(be);
    return 0;
}
