/* test_cpu_gradcheck.c — the CPU backend (kernels/cpu) against independent
 * computations: every op with a backward against central finite differences
 * of its own forward, every forward against a direct double-precision
 * implementation of the formula in core/backend.h (the fused ops too:
 * matmul + GELU, residual + LayerNorm, multi-tensor AdamW), plus memory accounting,
 * bf16 transfers, "+=" semantics and thread-count independence.
 *
 * Finite differences: the objective is L = sum(out .* R) with a fixed random
 * R (for the classifier L = dscale * sum(losses)); an input element x is
 * moved to x +- h in f32 (h = 1e-2 on inputs of size ~1), the forward runs in
 * f32 and L is summed in double, and dL/dx = (L+ - L-) / (x+ - x-) with the
 * actually representable x+-. The analytic gradient (backward called with
 * dout = R) must match with a relative error norm ||a - n|| / ||n|| <= 1e-3.
 * f32 central differences are good to ~1e-2 at worst: truncation is
 * O(h^2) ~ 1e-4 and f32 rounding in L adds ~1e-7 * |L| / h; at these small
 * sizes the measured errors are 1e-6 .. 1.1e-4, so 1e-3 keeps a margin of ~10
 * while still catching a 2 % error in one term (e.g. a missing scale on dk).
 *
 * The backend is used only through be->iface. Not for: CUDA (the GPU test
 * compares CUDA with this backend), speed (bench/).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h after the headers above */
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/dropout.h"
#include "core/dtype.h"

#define TOL_FD     1e-3 /* analytic vs central finite difference (see above) */
#define TOL_FWD    1e-5 /* f32 forward vs double formula, relative norm */
#define FD_H       1e-2f
#define LN_EPS_REF 1e-5

static gml_backend *g_be;

/* ---- random numbers: xorshift64*, seeded per test ---- */
static uint64_t g_rng = 88172645463325252ULL;
static void rng_seed(uint64_t s) { g_rng = s ? s : 1; }
static uint32_t rng_u32(void) {
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return (uint32_t)((g_rng * 2685821657736338717ULL) >> 32);
}
static float rng_uniform(float lo, float hi) { return lo + (hi - lo) * (float)(rng_u32() >> 8) / 16777216.0f; }

static float *rand_f32(size_t n, float lo, float hi) {
    float *x = malloc((n ? n : 1) * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = rng_uniform(lo, hi);
    return x;
}
static float *filled(size_t n, float v) {
    float *x = malloc((n ? n : 1) * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = v;
    return x;
}
static double *dalloc(size_t n) {
    double *x = calloc(n ? n : 1, sizeof *x);
    assert_non_null(x);
    return x;
}
static float *dup_f32(const float *src, size_t n) {
    float *x = malloc((n ? n : 1) * sizeof *x);
    assert_non_null(x);
    memcpy(x, src, n * sizeof *x);
    return x;
}

#define OK(call)                                                                                                       \
    do {                                                                                                               \
        gml_status st_ = (call);                                                                                       \
        if (st_ != GML_OK) fail_msg("%s -> %s: %s", #call, gml_status_name(st_), gml_error_message());                 \
    } while (0)

/* ---- device buffers (f32; act is f32 on the CPU backend) ---- */
static void *dev_alloc(size_t bytes) {
    void *p = NULL;
    OK(g_be->iface->alloc(g_be, &p, bytes));
    assert_non_null(p);
    return p;
}
static void *dev_from(const float *h, size_t n) {
    void *p = dev_alloc(n * sizeof(float));
    OK(g_be->iface->upload_f32(g_be, p, GML_DTYPE_F32, h, n));
    return p;
}
static void *dev_from_i32(const int32_t *h, size_t n) {
    void *p = dev_alloc(n * sizeof(int32_t));
    OK(g_be->iface->memcpy_h2d(g_be, p, h, n * sizeof(int32_t)));
    return p;
}
static void up(void *d, const float *h, size_t n) { OK(g_be->iface->upload_f32(g_be, d, GML_DTYPE_F32, h, n)); }
static void down(float *h, const void *d, size_t n) { OK(g_be->iface->download_f32(g_be, h, d, GML_DTYPE_F32, n)); }
static void dev_free(void *p) { g_be->iface->free(g_be, p); }

/* ---- comparisons ---- */

/* ||a - ref|| / ||ref|| (or ||a - ref|| when ref is all zero); fails on
 * non-finite values or above tol. */
static void check_rel(const char *what, const float *a, const double *ref, size_t n, double tol) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) fail_msg("%s: element %zu is %g", what, i, (double)a[i]);
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    double err = den > 0.0 ? sqrt(num / den) : sqrt(num);
    if (!(err <= tol)) {
        size_t worst = 0;
        double wd = -1.0;
        for (size_t i = 0; i < n; i++)
            if (fabs(a[i] - ref[i]) > wd) wd = fabs(a[i] - ref[i]), worst = i;
        fail_msg("%s: relative error %.3g > %.3g (n=%zu; worst at %zu: got %.7g want %.7g)", what, err, tol, n, worst,
                 (double)a[worst], ref[worst]);
    }
}
static void check_bitwise(const char *what, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
            fail_msg("%s: element %zu differs: %.9g vs %.9g", what, i, (double)a[i], (double)b[i]);
}

static double dot_fd(const float *out, const float *R, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)out[i] * R[i];
    return s;
}

/* ---- finite differences ---- */
typedef double (*eval_fn)(void *ctx); /* the objective at the ctx's current host inputs */

/* g[i] = dL/dx[i] for the listed indices (all of x when idx is NULL). */
static void numgrad(eval_fn f, void *ctx, float *x, size_t n, const size_t *idx, size_t nidx, double *g) {
    size_t cnt = idx ? nidx : n;
    for (size_t k = 0; k < cnt; k++) {
        size_t i = idx ? idx[k] : k;
        float orig = x[i];
        float xp = orig + FD_H, xm = orig - FD_H;
        x[i] = xp;
        double fp = f(ctx);
        x[i] = xm;
        double fm = f(ctx);
        x[i] = orig;
        g[k] = (fp - fm) / ((double)xp - (double)xm);
    }
    (void)f(ctx); /* leave the device buffers and outputs at the unperturbed point */
}

/* analytic (accumulated from a0 where a0 is not NULL) vs numeric for all n */
static void check_grad(const char *what, const float *analytic, const float *a0, const double *num, size_t n) {
    float *a = dup_f32(analytic, n);
    if (a0)
        for (size_t i = 0; i < n; i++)
            a[i] = analytic[i] - a0[i];
    check_rel(what, a, num, n, TOL_FD);
    free(a);
}

/* ================================================================ tests */

static void test_backend_props_and_memory(void **state) {
    (void)state;
    assert_string_equal(g_be->name, "cpu");
    assert_int_equal(g_be->act_dtype, GML_DTYPE_F32);
    assert_int_equal(g_be->device_index, -1);
    assert_true(g_be->peak_flops == 0.0);
    assert_true(strlen(g_be->device_name) > 0);

    size_t in0, peak0, in1, peak1;
    g_be->iface->mem_stats(g_be, &in0, &peak0);
    void *a = dev_alloc(100), *b = dev_alloc(1000), *z = dev_alloc(0);
    assert_int_equal((uintptr_t)a % 64, 0);
    assert_int_equal((uintptr_t)b % 64, 0);
    g_be->iface->mem_stats(g_be, &in1, &peak1);
    assert_int_equal(in1, in0 + 1100);
    assert_true(peak1 >= in1);
    memset(a, 0x5a, 100); /* the whole requested size is usable */
    memset(b, 0x5a, 1000);
    OK(g_be->iface->memset_zero(g_be, b, 1000));
    unsigned char raw[1000];
    OK(g_be->iface->memcpy_d2h(g_be, raw, b, 1000));
    for (int i = 0; i < 1000; i++)
        assert_int_equal(raw[i], 0);
    for (int i = 0; i < 1000; i++)
        raw[i] = (unsigned char)i;
    OK(g_be->iface->memcpy_h2d(g_be, b, raw, 1000));
    OK(g_be->iface->memcpy_d2d(g_be, a, b, 100));
    unsigned char back[100];
    OK(g_be->iface->memcpy_d2h(g_be, back, a, 100));
    assert_memory_equal(back, raw, 100);
    OK(g_be->iface->synchronize(g_be));
    dev_free(b);
    size_t in2, peak2;
    g_be->iface->mem_stats(g_be, &in2, &peak2);
    assert_int_equal(in2, in0 + 100);
    assert_int_equal(peak2, peak1);
    dev_free(a);
    dev_free(z);
    g_be->iface->free(g_be, NULL);
    g_be->iface->mem_stats(g_be, &in2, NULL);
    assert_int_equal(in2, in0);
}

static void test_bf16_transfers(void **state) {
    (void)state;
    rng_seed(11);
    const size_t n = 64;
    float *x = rand_f32(n, -100.0f, 100.0f);
    /* round-to-nearest-even cases, expected bits worked out by hand */
    const uint32_t tie_bits[3] = {0x3F808000u /* 1 + 2^-8: tie, to even */, 0x3F818000u /* tie, up to even */,
                                  0x3F80C000u /* above half: up */};
    const uint16_t tie_want[3] = {0x3F80u, 0x3F82u, 0x3F81u};
    for (int i = 0; i < 3; i++)
        memcpy(&x[i], &tie_bits[i], 4);
    x[3] = INFINITY;
    x[4] = -0.0f;
    void *d = dev_alloc(n * 2);
    OK(g_be->iface->upload_f32(g_be, d, GML_DTYPE_BF16, x, n));
    uint16_t raw[64];
    OK(g_be->iface->memcpy_d2h(g_be, raw, d, n * 2));
    for (int i = 0; i < 3; i++)
        assert_int_equal(raw[i], tie_want[i]);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(raw[i], gml_f32_to_bf16(x[i]));
    float y[64];
    OK(g_be->iface->download_f32(g_be, y, d, GML_DTYPE_BF16, n));
    for (size_t i = 0; i < n; i++) {
        float want = gml_bf16_to_f32(gml_f32_to_bf16(x[i]));
        assert_memory_equal(&y[i], &want, 4);
    }
    /* f32 round trip is exact; cast_f32_to_act is a copy */
    void *f = dev_alloc(n * 4), *g = dev_alloc(n * 4);
    OK(g_be->iface->upload_f32(g_be, f, GML_DTYPE_F32, x, n));
    OK(g_be->iface->cast_f32_to_act(g_be, g, f, n));
    OK(g_be->iface->download_f32(g_be, y, g, GML_DTYPE_F32, n));
    assert_memory_equal(y, x, n * 4);
    /* other dtypes are refused */
    assert_int_equal(g_be->iface->upload_f32(g_be, f, GML_DTYPE_I32, x, n), GML_ERR_INVALID_ARG);
    assert_int_equal(g_be->iface->download_f32(g_be, y, f, GML_DTYPE_U16, n), GML_ERR_INVALID_ARG);
    gml_error_clear();
    dev_free(d), dev_free(f), dev_free(g);
    free(x);
}

static void test_residual_forward(void **state) {
    (void)state;
    rng_seed(12);
    const size_t n = 37;
    float *a = rand_f32(n, -2, 2), *b = rand_f32(n, -2, 2), *y = filled(n, 0);
    void *da = dev_from(a, n), *db = dev_from(b, n), *dout = dev_from(y, n);
    OK(g_be->iface->residual_forward(g_be, dout, da, db, n));
    down(y, dout, n);
    for (size_t i = 0; i < n; i++) {
        float want = a[i] + b[i];
        assert_memory_equal(&y[i], &want, 4);
    }
    dev_free(da), dev_free(db), dev_free(dout);
    free(a), free(b), free(y);
}

/* ---------------------------------------------------------------- encoder */

typedef struct {
    int B, T, C, Vp, maxT;
    float *wte, *wpe, *R, *out; /* host: (Vp,C) (maxT,C) (B,T,C) (B,T,C) */
    void *d_wte, *d_wpe, *d_tok, *d_out;
} enc_ctx;

static double enc_eval(void *p) {
    enc_ctx *c = p;
    size_t no = (size_t)c->B * c->T * c->C;
    up(c->d_wte, c->wte, (size_t)c->Vp * c->C);
    up(c->d_wpe, c->wpe, (size_t)c->maxT * c->C);
    OK(g_be->iface->encoder_forward(g_be, c->d_out, c->d_tok, c->d_wte, c->d_wpe, c->B, c->T, c->C));
    down(c->out, c->d_out, no);
    return dot_fd(c->out, c->R, no);
}

static void test_encoder(void **state) {
    (void)state;
    rng_seed(13);
    enc_ctx c = {.B = 2, .T = 5, .C = 8, .Vp = 16, .maxT = 7};
    const size_t nw = (size_t)c.Vp * c.C, np = (size_t)c.maxT * c.C, no = (size_t)c.B * c.T * c.C;
    int32_t tok[10] = {3, 0, 15, 3, 7, 7, 3, 11, 0, 2}; /* repeats: the backward must add, not store */
    c.wte = rand_f32(nw, -1, 1);
    c.wpe = rand_f32(np, -1, 1);
    c.R = rand_f32(no, -1, 1);
    c.out = filled(no, NAN);
    c.d_wte = dev_from(c.wte, nw);
    c.d_wpe = dev_from(c.wpe, np);
    c.d_tok = dev_from_i32(tok, 10);
    c.d_out = dev_from(c.out, no);

    /* forward: the direct formula (one f32 addition, so exact) */
    enc_eval(&c);
    for (int b = 0; b < c.B; b++)
        for (int t = 0; t < c.T; t++)
            for (int k = 0; k < c.C; k++) {
                float want = c.wte[tok[b * c.T + t] * c.C + k] + c.wpe[t * c.C + k];
                assert_memory_equal(&c.out[((size_t)b * c.T + t) * c.C + k], &want, 4);
            }

    /* backward vs finite differences, accumulating onto random gradients */
    float *gw0 = rand_f32(nw, -1, 1), *gp0 = rand_f32(np, -1, 1);
    float *gw = dup_f32(gw0, nw), *gp = dup_f32(gp0, np);
    void *d_gw = dev_from(gw, nw), *d_gp = dev_from(gp, np), *d_R = dev_from(c.R, no);
    OK(g_be->iface->encoder_backward(g_be, d_gw, d_gp, d_R, c.d_tok, c.B, c.T, c.C));
    down(gw, d_gw, nw);
    down(gp, d_gp, np);
    double *nw_g = dalloc(nw), *np_g = dalloc(np);
    numgrad(enc_eval, &c, c.wte, nw, NULL, 0, nw_g);
    numgrad(enc_eval, &c, c.wpe, np, NULL, 0, np_g);
    check_grad("encoder dwte", gw, gw0, nw_g, nw);
    check_grad("encoder dwpe", gp, gp0, np_g, np);

    /* "+=": twice from zero is twice once */
    float *z = filled(nw, 0.0f), *once_w = filled(nw, 0), *once_p = filled(np, 0);
    up(d_gw, z, nw);
    up(d_gp, z, np);
    OK(g_be->iface->encoder_backward(g_be, d_gw, d_gp, d_R, c.d_tok, c.B, c.T, c.C));
    down(once_w, d_gw, nw);
    down(once_p, d_gp, np);
    OK(g_be->iface->encoder_backward(g_be, d_gw, d_gp, d_R, c.d_tok, c.B, c.T, c.C));
    down(gw, d_gw, nw);
    down(gp, d_gp, np);
    /* (rows of repeated tokens add in another order: equal up to f32 rounding) */
    double *twice_w = dalloc(nw), *twice_p = dalloc(np);
    for (size_t i = 0; i < nw; i++)
        twice_w[i] = 2.0 * once_w[i];
    for (size_t i = 0; i < np; i++)
        twice_p[i] = 2.0 * once_p[i];
    check_rel("encoder dwte twice", gw, twice_w, nw, 1e-6);
    check_rel("encoder dwpe twice", gp, twice_p, np, 1e-6);
    free(twice_w), free(twice_p);
    /* positions t >= T get nothing */
    for (size_t i = (size_t)c.T * c.C; i < np; i++)
        assert_true(gp[i] == 0.0f);

    dev_free(c.d_wte), dev_free(c.d_wpe), dev_free(c.d_tok), dev_free(c.d_out);
    dev_free(d_gw), dev_free(d_gp), dev_free(d_R);
    free(c.wte), free(c.wpe), free(c.R), free(c.out), free(gw0), free(gp0), free(gw), free(gp);
    free(nw_g), free(np_g), free(z), free(once_w), free(once_p);
}

/* -------------------------------------------------------------- layernorm */

typedef struct {
    int N, C;
    float *inp, *w, *b, *R, *out, *mean, *rstd; /* host */
    void *d_inp, *d_w, *d_b, *d_out, *d_mean, *d_rstd;
} ln_ctx;

static double ln_eval(void *p) {
    ln_ctx *c = p;
    size_t n = (size_t)c->N * c->C;
    up(c->d_inp, c->inp, n);
    up(c->d_w, c->w, (size_t)c->C);
    up(c->d_b, c->b, (size_t)c->C);
    OK(g_be->iface->layernorm_forward(g_be, c->d_out, c->d_mean, c->d_rstd, c->d_inp, c->d_w, c->d_b, c->N, c->C));
    down(c->out, c->d_out, n);
    down(c->mean, c->d_mean, (size_t)c->N);
    down(c->rstd, c->d_rstd, (size_t)c->N);
    return dot_fd(c->out, c->R, n);
}

static void ln_ctx_init(ln_ctx *c, int N, int C) {
    size_t n = (size_t)N * C;
    c->N = N, c->C = C;
    c->inp = rand_f32(n, -2, 2);
    for (int i = 0; i < N; i++) /* rows with an offset, so the mean matters */
        for (int k = 0; k < C; k++)
            c->inp[(size_t)i * C + k] += 0.3f * (float)(i % 5);
    c->w = rand_f32((size_t)C, 0.5f, 1.5f);
    c->b = rand_f32((size_t)C, -0.5f, 0.5f);
    c->R = rand_f32(n, -1, 1);
    c->out = filled(n, NAN);
    c->mean = filled((size_t)N, NAN);
    c->rstd = filled((size_t)N, NAN);
    c->d_inp = dev_from(c->inp, n);
    c->d_w = dev_from(c->w, (size_t)C);
    c->d_b = dev_from(c->b, (size_t)C);
    c->d_out = dev_from(c->out, n);
    c->d_mean = dev_from(c->mean, (size_t)N);
    c->d_rstd = dev_from(c->rstd, (size_t)N);
}

static void ln_ctx_free(ln_ctx *c) {
    dev_free(c->d_inp), dev_free(c->d_w), dev_free(c->d_b), dev_free(c->d_out), dev_free(c->d_mean),
        dev_free(c->d_rstd);
    free(c->inp), free(c->w), free(c->b), free(c->R), free(c->out), free(c->mean), free(c->rstd);
}

/* The LayerNorm of the N rows of x (C each) in double precision: out,
 * and each row's mean and rstd (two passes, eps LN_EPS_REF). */
static void ln_reference(const float *x, const float *w, const float *b, int N, int C, double *out, double *mean,
                         double *rstd) {
    for (int i = 0; i < N; i++) {
        const float *xi = x + (size_t)i * C;
        double m = 0.0, v = 0.0;
        for (int k = 0; k < C; k++)
            m += xi[k];
        m /= C;
        for (int k = 0; k < C; k++)
            v += (xi[k] - m) * (xi[k] - m);
        v /= C;
        double rs = 1.0 / sqrt(v + LN_EPS_REF);
        mean[i] = m, rstd[i] = rs;
        for (int k = 0; k < C; k++)
            out[(size_t)i * C + k] = (xi[k] - m) * rs * w[k] + b[k];
    }
}

/* forward vs a double-precision direct computation */
static void ln_check_forward(ln_ctx *c) {
    int N = c->N, C = c->C;
    ln_eval(c);
    double *out = dalloc((size_t)N * C), *mean = dalloc((size_t)N), *rstd = dalloc((size_t)N);
    ln_reference(c->inp, c->w, c->b, N, C, out, mean, rstd);
    check_rel("layernorm out", c->out, out, (size_t)N * C, TOL_FWD);
    check_rel("layernorm mean", c->mean, mean, (size_t)N, TOL_FWD);
    check_rel("layernorm rstd", c->rstd, rstd, (size_t)N, TOL_FWD);
    free(out), free(mean), free(rstd);
}

static void test_layernorm(void **state) {
    (void)state;
    rng_seed(14);
    ln_ctx c;
    ln_ctx_init(&c, 7, 8);
    const int N = c.N, C = c.C;
    const size_t n = (size_t)N * C;
    ln_check_forward(&c);

    /* backward at the unperturbed point (ln_eval above left mean/rstd there) */
    float *gi0 = rand_f32(n, -1, 1), *gw0 = rand_f32((size_t)C, -1, 1), *gb0 = rand_f32((size_t)C, -1, 1);
    void *d_gi = dev_from(gi0, n), *d_gw = dev_from(gw0, (size_t)C), *d_gb = dev_from(gb0, (size_t)C);
    void *d_R = dev_from(c.R, n);
    OK(g_be->iface->layernorm_backward(g_be, d_gi, d_gw, d_gb, d_R, c.d_inp, c.d_w, c.d_mean, c.d_rstd, N, C));
    float *gi = filled(n, 0), *gw = filled((size_t)C, 0), *gb = filled((size_t)C, 0);
    down(gi, d_gi, n);
    down(gw, d_gw, (size_t)C);
    down(gb, d_gb, (size_t)C);

    double *ni = dalloc(n), *nw = dalloc((size_t)C), *nb = dalloc((size_t)C);
    numgrad(ln_eval, &c, c.inp, n, NULL, 0, ni);
    numgrad(ln_eval, &c, c.w, (size_t)C, NULL, 0, nw);
    numgrad(ln_eval, &c, c.b, (size_t)C, NULL, 0, nb);
    check_grad("layernorm dinp (+=)", gi, gi0, ni, n);
    check_grad("layernorm dweight (+=)", gw, gw0, nw, (size_t)C);
    check_grad("layernorm dbias (+=)", gb, gb0, nb, (size_t)C);

    /* "+=": twice from zero is twice once */
    ln_eval(&c);
    float *z = filled(n, 0), *o_i = filled(n, 0), *o_w = filled((size_t)C, 0), *o_b = filled((size_t)C, 0);
    up(d_gi, z, n), up(d_gw, z, (size_t)C), up(d_gb, z, (size_t)C);
    OK(g_be->iface->layernorm_backward(g_be, d_gi, d_gw, d_gb, d_R, c.d_inp, c.d_w, c.d_mean, c.d_rstd, N, C));
    down(o_i, d_gi, n), down(o_w, d_gw, (size_t)C), down(o_b, d_gb, (size_t)C);
    OK(g_be->iface->layernorm_backward(g_be, d_gi, d_gw, d_gb, d_R, c.d_inp, c.d_w, c.d_mean, c.d_rstd, N, C));
    down(gi, d_gi, n), down(gw, d_gw, (size_t)C), down(gb, d_gb, (size_t)C);
    for (size_t i = 0; i < n; i++)
        assert_true(gi[i] == 2.0f * o_i[i]);
    for (int k = 0; k < C; k++)
        assert_true(gw[k] == 2.0f * o_w[k] && gb[k] == 2.0f * o_b[k]);

    dev_free(d_gi), dev_free(d_gw), dev_free(d_gb), dev_free(d_R);
    free(gi0), free(gw0), free(gb0), free(gi), free(gw), free(gb), free(ni), free(nw), free(nb);
    free(z), free(o_i), free(o_w), free(o_b);
    ln_ctx_free(&c);
}

/* ----------------------------------------------------------------- matmul */

typedef struct {
    int N, IC, OC, with_bias;
    float *inp, *w, *b, *R, *out; /* host: (N,IC) (OC,IC) (OC) (N,OC) (N,OC) */
    void *d_inp, *d_w, *d_b, *d_out;
} mm_ctx;

static double mm_eval(void *p) {
    mm_ctx *c = p;
    up(c->d_inp, c->inp, (size_t)c->N * c->IC);
    up(c->d_w, c->w, (size_t)c->OC * c->IC);
    up(c->d_b, c->b, (size_t)c->OC);
    OK(g_be->iface->matmul_forward(g_be, c->d_out, c->d_inp, c->d_w, c->with_bias ? c->d_b : NULL, c->N, c->IC, c->OC));
    down(c->out, c->d_out, (size_t)c->N * c->OC);
    return dot_fd(c->out, c->R, (size_t)c->N * c->OC);
}

static void run_matmul(int with_bias) {
    rng_seed(15 + (uint64_t)with_bias);
    mm_ctx c = {.N = 7, .IC = 6, .OC = 5, .with_bias = with_bias};
    const size_t ni = (size_t)c.N * c.IC, nw = (size_t)c.OC * c.IC, no = (size_t)c.N * c.OC, nb = (size_t)c.OC;
    c.inp = rand_f32(ni, -1, 1);
    c.w = rand_f32(nw, -1, 1);
    c.b = rand_f32(nb, -1, 1);
    c.R = rand_f32(no, -1, 1);
    c.out = filled(no, NAN);
    c.d_inp = dev_from(c.inp, ni);
    c.d_w = dev_from(c.w, nw);
    c.d_b = dev_from(c.b, nb);
    c.d_out = dev_from(c.out, no); /* NaN: every element must be written */

    /* forward vs double */
    mm_eval(&c);
    double *ref = dalloc(no);
    for (int i = 0; i < c.N; i++)
        for (int o = 0; o < c.OC; o++) {
            double s = with_bias ? c.b[o] : 0.0;
            for (int k = 0; k < c.IC; k++)
                s += (double)c.inp[(size_t)i * c.IC + k] * c.w[(size_t)o * c.IC + k];
            ref[(size_t)i * c.OC + o] = s;
        }
    check_rel(with_bias ? "matmul out (bias)" : "matmul out (no bias)", c.out, ref, no, TOL_FWD);

    /* backward: dinp = (NaN beforehand), dweight / dbias += (random beforehand) */
    float *gi = filled(ni, NAN), *gw0 = rand_f32(nw, -1, 1), *gb0 = rand_f32(nb, -1, 1);
    float *gw = filled(nw, 0), *gb = filled(nb, 0);
    void *d_gi = dev_from(gi, ni), *d_gw = dev_from(gw0, nw), *d_gb = dev_from(gb0, nb), *d_R = dev_from(c.R, no);
    OK(g_be->iface->matmul_backward(g_be, d_gi, d_gw, with_bias ? d_gb : NULL, d_R, c.d_inp, c.d_w, c.N, c.IC, c.OC));
    down(gi, d_gi, ni), down(gw, d_gw, nw), down(gb, d_gb, nb);
    double *n_i = dalloc(ni), *n_w = dalloc(nw), *n_b = dalloc(nb);
    numgrad(mm_eval, &c, c.inp, ni, NULL, 0, n_i);
    numgrad(mm_eval, &c, c.w, nw, NULL, 0, n_w);
    check_grad("matmul dinp", gi, NULL, n_i, ni);
    check_grad("matmul dweight (+=)", gw, gw0, n_w, nw);
    if (with_bias) {
        numgrad(mm_eval, &c, c.b, nb, NULL, 0, n_b);
        check_grad("matmul dbias (+=)", gb, gb0, n_b, nb);
    } else {
        assert_memory_equal(gb, gb0, nb * 4); /* dbias NULL: untouched buffer stays */
    }

    /* dinp NULL and dbias NULL: only dweight, "+=" twice from zero is twice once */
    float *z = filled(nw, 0), *once = filled(nw, 0), *gb_once = filled(nb, 0);
    up(d_gw, z, nw);
    up(d_gb, z, nb);
    OK(g_be->iface->matmul_backward(g_be, NULL, d_gw, with_bias ? d_gb : NULL, d_R, c.d_inp, c.d_w, c.N, c.IC, c.OC));
    down(once, d_gw, nw);
    down(gb_once, d_gb, nb);
    OK(g_be->iface->matmul_backward(g_be, NULL, d_gw, with_bias ? d_gb : NULL, d_R, c.d_inp, c.d_w, c.N, c.IC, c.OC));
    down(gw, d_gw, nw);
    down(gb, d_gb, nb);
    for (size_t i = 0; i < nw; i++)
        assert_true(gw[i] == 2.0f * once[i]);
    for (size_t i = 0; i < nb; i++)
        assert_true(gb[i] == 2.0f * gb_once[i]);
    check_rel("matmul dweight (dinp NULL)", once, n_w, nw, TOL_FD);

    dev_free(c.d_inp), dev_free(c.d_w), dev_free(c.d_b), dev_free(c.d_out);
    dev_free(d_gi), dev_free(d_gw), dev_free(d_gb), dev_free(d_R);
    free(c.inp), free(c.w), free(c.b), free(c.R), free(c.out), free(ref);
    free(gi), free(gw0), free(gb0), free(gw), free(gb), free(n_i), free(n_w), free(n_b);
    free(z), free(once), free(gb_once);
}

static void test_matmul_bias(void **state) {
    (void)state;
    run_matmul(1);
}
static void test_matmul_nobias(void **state) {
    (void)state;
    run_matmul(0);
}

/* ------------------------------------------------------------------- gelu */

typedef struct {
    size_t n;
    float *x, *R, *out;
    void *d_x, *d_out;
} gelu_ctx;

static double gelu_eval(void *p) {
    gelu_ctx *c = p;
    up(c->d_x, c->x, c->n);
    OK(g_be->iface->gelu_forward(g_be, c->d_out, c->d_x, c->n));
    down(c->out, c->d_out, c->n);
    return dot_fd(c->out, c->R, c->n);
}

static void test_gelu(void **state) {
    (void)state;
    rng_seed(17);
    gelu_ctx c = {.n = 41};
    c.x = rand_f32(c.n, -4, 4);
    c.R = rand_f32(c.n, -1, 1);
    c.out = filled(c.n, NAN);
    c.d_x = dev_from(c.x, c.n);
    c.d_out = dev_from(c.out, c.n);
    gelu_eval(&c);
    double *ref = dalloc(c.n);
    for (size_t i = 0; i < c.n; i++) {
        double x = c.x[i];
        ref[i] = 0.5 * x * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) * (x + 0.044715 * x * x * x)));
    }
    check_rel("gelu out", c.out, ref, c.n, TOL_FWD);

    float *gi = filled(c.n, NAN);
    void *d_gi = dev_from(gi, c.n), *d_R = dev_from(c.R, c.n);
    OK(g_be->iface->gelu_backward(g_be, d_gi, c.d_x, d_R, c.n));
    down(gi, d_gi, c.n);
    double *ng = dalloc(c.n);
    numgrad(gelu_eval, &c, c.x, c.n, NULL, 0, ng);
    check_grad("gelu dinp", gi, NULL, ng, c.n);
    /* and vs the derivative of the exact formula, in double */
    double *dref = dalloc(c.n);
    for (size_t i = 0; i < c.n; i++) {
        double x = c.x[i], s = sqrt(2.0 / 3.14159265358979323846);
        double th = tanh(s * (x + 0.044715 * x * x * x));
        dref[i] = (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * s * (1.0 + 3.0 * 0.044715 * x * x)) * c.R[i];
    }
    check_rel("gelu dinp vs formula", gi, dref, c.n, TOL_FWD);
    free(dref);
    /* "=": a second call gives the same, not twice */
    float *gi2 = filled(c.n, 0);
    OK(g_be->iface->gelu_backward(g_be, d_gi, c.d_x, d_R, c.n));
    down(gi2, d_gi, c.n);
    assert_memory_equal(gi, gi2, c.n * 4);

    dev_free(c.d_x), dev_free(c.d_out), dev_free(d_gi), dev_free(d_R);
    free(c.x), free(c.R), free(c.out), free(ref), free(gi), free(gi2), free(ng);
}

/* ------------------------------------------------------ fused MLP matmuls */

#define PI_REF 3.14159265358979323846
static double gelu_ref(double x) { return 0.5 * x * (1.0 + tanh(sqrt(2.0 / PI_REF) * (x + 0.044715 * x * x * x))); }
static double dgelu_ref(double x) {
    double s = sqrt(2.0 / PI_REF), th = tanh(s * (x + 0.044715 * x * x * x));
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * s * (1.0 + 3.0 * 0.044715 * x * x);
}

/* matmul_gelu_forward: pre and out vs the double formula; every element written. */
static void run_matmul_gelu_forward(int with_bias) {
    rng_seed(30 + (uint64_t)with_bias);
    const int N = 7, IC = 6, OC = 5;
    const size_t ni = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
    float *inp = rand_f32(ni, -1, 1), *w = rand_f32(nw, -1, 1), *b = rand_f32((size_t)OC, -1, 1);
    float *out = filled(no, NAN), *pre = filled(no, NAN);
    void *d_inp = dev_from(inp, ni), *d_w = dev_from(w, nw), *d_b = dev_from(b, (size_t)OC);
    void *d_out = dev_from(out, no), *d_pre = dev_from(pre, no);
    OK(g_be->iface->matmul_gelu_forward(g_be, d_out, d_pre, d_inp, d_w, with_bias ? d_b : NULL, N, IC, OC));
    down(out, d_out, no), down(pre, d_pre, no);
    double *rpre = dalloc(no), *rout = dalloc(no);
    for (int i = 0; i < N; i++)
        for (int o = 0; o < OC; o++) {
            double acc = with_bias ? b[o] : 0.0;
            for (int k = 0; k < IC; k++)
                acc += (double)inp[(size_t)i * IC + k] * w[(size_t)o * IC + k];
            rpre[(size_t)i * OC + o] = acc;
            rout[(size_t)i * OC + o] = gelu_ref(acc);
        }
    check_rel(with_bias ? "matmul_gelu pre (bias)" : "matmul_gelu pre (no bias)", pre, rpre, no, TOL_FWD);
    check_rel(with_bias ? "matmul_gelu out (bias)" : "matmul_gelu out (no bias)", out, rout, no, TOL_FWD);
    dev_free(d_inp), dev_free(d_w), dev_free(d_b), dev_free(d_out), dev_free(d_pre);
    free(inp), free(w), free(b), free(out), free(pre), free(rpre), free(rout);
}

static void test_matmul_gelu_forward(void **state) {
    (void)state;
    run_matmul_gelu_forward(1);
    run_matmul_gelu_forward(0);
}

/* F(pre, W, b) = gelu(pre) @ W^T + b through the plain ops; L = sum(F .* R).
 * matmul_backward_gelu with dout = R, inp = gelu(pre) must be its gradient. */
typedef struct {
    int N, IC, OC;
    float *pre, *w, *b, *R, *out; /* host: (N,IC) (OC,IC) (OC) (N,OC) (N,OC) */
    void *d_pre, *d_w, *d_b, *d_g, *d_out; /* d_g (N,IC): gelu(pre) */
} mlp_ctx;

static double mlp_eval(void *p) {
    mlp_ctx *c = p;
    const size_t ni = (size_t)c->N * c->IC, no = (size_t)c->N * c->OC;
    up(c->d_pre, c->pre, ni);
    up(c->d_w, c->w, (size_t)c->OC * c->IC);
    up(c->d_b, c->b, (size_t)c->OC);
    OK(g_be->iface->gelu_forward(g_be, c->d_g, c->d_pre, ni));
    OK(g_be->iface->matmul_forward(g_be, c->d_out, c->d_g, c->d_w, c->d_b, c->N, c->IC, c->OC));
    down(c->out, c->d_out, no);
    return dot_fd(c->out, c->R, no);
}

static void test_matmul_backward_gelu(void **state) {
    (void)state;
    rng_seed(32);
    mlp_ctx c = {.N = 7, .IC = 6, .OC = 5};
    const size_t ni = (size_t)c.N * c.IC, nw = (size_t)c.OC * c.IC, no = (size_t)c.N * c.OC, nb = (size_t)c.OC;
    c.pre = rand_f32(ni, -3, 3);
    c.w = rand_f32(nw, -1, 1);
    c.b = rand_f32(nb, -1, 1);
    c.R = rand_f32(no, -1, 1);
    c.out = filled(no, NAN);
    c.d_pre = dev_from(c.pre, ni);
    c.d_w = dev_from(c.w, nw);
    c.d_b = dev_from(c.b, nb);
    c.d_g = dev_alloc(ni * 4);
    c.d_out = dev_from(c.out, no);
    mlp_eval(&c); /* d_g = gelu(pre) */

    /* dpre = (NaN beforehand), dweight / dbias += (random beforehand) */
    float *gi = filled(ni, NAN), *gw0 = rand_f32(nw, -1, 1), *gb0 = rand_f32(nb, -1, 1);
    float *gw = filled(nw, 0), *gb = filled(nb, 0);
    void *d_gi = dev_from(gi, ni), *d_gw = dev_from(gw0, nw), *d_gb = dev_from(gb0, nb), *d_R = dev_from(c.R, no);
    OK(g_be->iface->matmul_backward_gelu(g_be, d_gi, d_gw, d_gb, d_R, c.d_g, c.d_w, c.d_pre, c.N, c.IC, c.OC));
    down(gi, d_gi, ni), down(gw, d_gw, nw), down(gb, d_gb, nb);
    double *n_i = dalloc(ni), *n_w = dalloc(nw), *n_b = dalloc(nb);
    numgrad(mlp_eval, &c, c.pre, ni, NULL, 0, n_i);
    numgrad(mlp_eval, &c, c.w, nw, NULL, 0, n_w);
    numgrad(mlp_eval, &c, c.b, nb, NULL, 0, n_b);
    check_grad("matmul_backward_gelu dpre", gi, NULL, n_i, ni);
    check_grad("matmul_backward_gelu dweight (+=)", gw, gw0, n_w, nw);
    check_grad("matmul_backward_gelu dbias (+=)", gb, gb0, n_b, nb);

    /* dpre vs the double formula: (R @ W) * gelu'(pre) */
    double *ref = dalloc(ni);
    for (int i = 0; i < c.N; i++)
        for (int k = 0; k < c.IC; k++) {
            double acc = 0.0;
            for (int o = 0; o < c.OC; o++)
                acc += (double)c.R[(size_t)i * c.OC + o] * c.w[(size_t)o * c.IC + k];
            ref[(size_t)i * c.IC + k] = acc * dgelu_ref(c.pre[(size_t)i * c.IC + k]);
        }
    check_rel("matmul_backward_gelu dpre vs formula", gi, ref, ni, TOL_FWD);

    /* "=" for dpre (a second call gives the same), "+=" for dweight, dbias
     * NULL leaves the bias gradient alone */
    float *gi2 = filled(ni, 0), *gw2 = filled(nw, 0), *gb2 = filled(nb, 0);
    OK(g_be->iface->matmul_backward_gelu(g_be, d_gi, d_gw, NULL, d_R, c.d_g, c.d_w, c.d_pre, c.N, c.IC, c.OC));
    down(gi2, d_gi, ni), down(gw2, d_gw, nw), down(gb2, d_gb, nb);
    assert_memory_equal(gi2, gi, ni * 4);
    assert_memory_equal(gb2, gb, nb * 4);
    double *twice = dalloc(nw);
    for (size_t i = 0; i < nw; i++)
        twice[i] = (double)gw0[i] + 2.0 * ((double)gw[i] - gw0[i]);
    check_rel("matmul_backward_gelu dweight twice", gw2, twice, nw, 1e-6);
    assert_int_equal(g_be->iface->matmul_backward_gelu(g_be, NULL, d_gw, NULL, d_R, c.d_g, c.d_w, c.d_pre, c.N, c.IC,
                                                       c.OC),
                     GML_ERR_INVALID_ARG);
    gml_error_clear();

    dev_free(c.d_pre), dev_free(c.d_w), dev_free(c.d_b), dev_free(c.d_g), dev_free(c.d_out);
    dev_free(d_gi), dev_free(d_gw), dev_free(d_gb), dev_free(d_R);
    free(c.pre), free(c.w), free(c.b), free(c.R), free(c.out), free(gi), free(gw0), free(gb0), free(gw), free(gb);
    free(n_i), free(n_w), free(n_b), free(ref), free(gi2), free(gw2), free(gb2), free(twice);
}

/* ------------------------------------------------- residual + layernorm */

/* res is exactly a + b in f32; out, mean, rstd the LayerNorm of res vs the
 * double formula. Sizes on both sides of the OpenMP threshold. */
static void run_residual_layernorm(int N, int C) {
    const size_t n = (size_t)N * C;
    float *a = rand_f32(n, -2, 2), *b = rand_f32(n, -2, 2);
    for (int i = 0; i < N; i++) /* rows with an offset, so the mean matters */
        for (int k = 0; k < C; k++)
            a[(size_t)i * C + k] += 0.3f * (float)(i % 5);
    float *w = rand_f32((size_t)C, 0.5f, 1.5f), *bias = rand_f32((size_t)C, -0.5f, 0.5f);
    float *res = filled(n, NAN), *out = filled(n, NAN), *mean = filled((size_t)N, NAN), *rstd = filled((size_t)N, NAN);
    void *d_a = dev_from(a, n), *d_b = dev_from(b, n), *d_w = dev_from(w, (size_t)C), *d_bias = dev_from(bias, (size_t)C);
    void *d_res = dev_from(res, n), *d_out = dev_from(out, n);
    void *d_mean = dev_from(mean, (size_t)N), *d_rstd = dev_from(rstd, (size_t)N);
    OK(g_be->iface->residual_layernorm_forward(g_be, d_res, d_out, d_mean, d_rstd, d_a, d_b, d_w, d_bias, N, C));
    down(res, d_res, n), down(out, d_out, n), down(mean, d_mean, (size_t)N), down(rstd, d_rstd, (size_t)N);
    for (size_t i = 0; i < n; i++) {
        float want = a[i] + b[i];
        assert_memory_equal(&res[i], &want, 4);
    }
    double *rout = dalloc(n), *rmean = dalloc((size_t)N), *rrstd = dalloc((size_t)N);
    ln_reference(res, w, bias, N, C, rout, rmean, rrstd);
    check_rel("residual_layernorm out", out, rout, n, TOL_FWD);
    check_rel("residual_layernorm mean", mean, rmean, (size_t)N, TOL_FWD);
    check_rel("residual_layernorm rstd", rstd, rrstd, (size_t)N, TOL_FWD);
    dev_free(d_a), dev_free(d_b), dev_free(d_w), dev_free(d_bias), dev_free(d_res), dev_free(d_out);
    dev_free(d_mean), dev_free(d_rstd);
    free(a), free(b), free(w), free(bias), free(res), free(out), free(mean), free(rstd);
    free(rout), free(rmean), free(rrstd);
}

static void test_residual_layernorm(void **state) {
    (void)state;
    rng_seed(33);
    run_residual_layernorm(9, 16);
    run_residual_layernorm(70, 301); /* past GML_CPU_PAR_MIN */
}

/* ---------------------------------------------------------------- dropout */

typedef struct {
    size_t n;
    uint64_t key;
    uint32_t thr;
    float scale;
    float *x, *R, *out;
    void *d_x, *d_out;
} drop_ctx;

static double drop_eval(void *p) {
    drop_ctx *c = p;
    up(c->d_x, c->x, c->n);
    OK(g_be->iface->dropout(g_be, c->d_out, c->d_x, c->n, c->key, c->thr, c->scale));
    down(c->out, c->d_out, c->n);
    return dot_fd(c->out, c->R, c->n);
}

/* Dropout: each output is 0 or x*scale; the drop rate is p within 5 sigma of
 * the binomial; the mask depends on the key only (same key same mask,
 * another key another one, in place same as out of place); the op is its own
 * backward (finite differences); p = 0 is the identity. */
static void test_dropout(void **state) {
    (void)state;
    rng_seed(23);
    const float p = 0.2f;
    drop_ctx c = {.n = 200003, .key = 0x1234abcdULL, .thr = gml_dropout_threshold(p), .scale = 1.0f / (1.0f - p)};
    c.x = rand_f32(c.n, 0.5f, 2.0f); /* never 0, so a 0 output means dropped */
    c.R = rand_f32(c.n, -1, 1);
    c.out = filled(c.n, NAN);
    c.d_x = dev_from(c.x, c.n);
    c.d_out = dev_from(c.out, c.n);
    drop_eval(&c);
    size_t dropped = 0;
    for (size_t i = 0; i < c.n; i++) {
        if (c.out[i] == 0.0f) {
            dropped++;
        } else if (c.out[i] != c.x[i] * c.scale) {
            fail_msg("dropout: element %zu is %g, want 0 or %g", i, (double)c.out[i], (double)(c.x[i] * c.scale));
        }
    }
    double rate = (double)dropped / (double)c.n, sigma = sqrt(p * (1.0 - p) / (double)c.n);
    printf("  dropout p=%.2f: dropped %.5f of %zu (5 sigma = %.5f)\n", (double)p, rate, c.n, 5 * sigma);
    assert_true(fabs(rate - p) < 5 * sigma);

    /* same key, in place: the same mask bit for bit */
    float *again = filled(c.n, NAN);
    void *d_in = dev_from(c.x, c.n);
    OK(g_be->iface->dropout(g_be, d_in, d_in, c.n, c.key, c.thr, c.scale));
    down(again, d_in, c.n);
    check_bitwise("dropout in place vs out of place", again, c.out, c.n);
    /* another key: the masks agree on about p^2 + (1-p)^2 of the elements */
    up(d_in, c.x, c.n);
    OK(g_be->iface->dropout(g_be, d_in, d_in, c.n, c.key + 1, c.thr, c.scale));
    down(again, d_in, c.n);
    size_t agree = 0;
    for (size_t i = 0; i < c.n; i++) agree += (again[i] == 0.0f) == (c.out[i] == 0.0f);
    double want = (double)p * p + (1.0 - p) * (1.0 - p);
    assert_true(fabs((double)agree / (double)c.n - want) < 0.01);
    /* p = 0: the identity */
    up(d_in, c.x, c.n);
    OK(g_be->iface->dropout(g_be, d_in, d_in, c.n, c.key, gml_dropout_threshold(0.0f), 1.0f));
    down(again, d_in, c.n);
    check_bitwise("dropout p=0", again, c.x, c.n);

    /* backward = the same op on the gradient: vs finite differences on a few
     * hundred elements (the op is diagonal, so each is independent) */
    enum { NCHECK = 300 };
    size_t idx[NCHECK];
    for (size_t k = 0; k < NCHECK; k++) idx[k] = (size_t)rng_u32() % c.n;
    float *dx = filled(c.n, NAN);
    void *d_R = dev_from(c.R, c.n), *d_dx = dev_from(dx, c.n);
    OK(g_be->iface->dropout(g_be, d_dx, d_R, c.n, c.key, c.thr, c.scale));
    down(dx, d_dx, c.n);
    double *ng = dalloc(NCHECK);
    numgrad(drop_eval, &c, c.x, c.n, idx, NCHECK, ng);
    float *dxs = filled(NCHECK, 0);
    for (size_t k = 0; k < NCHECK; k++) dxs[k] = dx[idx[k]];
    check_grad("dropout dx", dxs, NULL, ng, NCHECK);

    dev_free(c.d_x), dev_free(c.d_out), dev_free(d_in), dev_free(d_R), dev_free(d_dx);
    free(c.x), free(c.R), free(c.out), free(again), free(dx), free(ng), free(dxs);
}

/* -------------------------------------------------------------- attention */

typedef struct {
    int B, T, C, NH;
    float *qkv, *R, *out, *lse; /* host: (B,T,3C) (B,T,C) (B,T,C) (B,NH,T) */
    void *d_qkv, *d_out, *d_lse;
} att_ctx;

static double att_eval(void *p) {
    att_ctx *c = p;
    size_t nq = (size_t)c->B * c->T * 3 * c->C, no = (size_t)c->B * c->T * c->C;
    up(c->d_qkv, c->qkv, nq);
    OK(g_be->iface->attention_forward(g_be, c->d_out, c->d_lse, c->d_qkv, c->B, c->T, c->C, c->NH));
    down(c->out, c->d_out, no);
    down(c->lse, c->d_lse, (size_t)c->B * c->NH * c->T);
    return dot_fd(c->out, c->R, no);
}

static void att_ctx_init(att_ctx *c, int B, int T, int C, int NH, float range) {
    c->B = B, c->T = T, c->C = C, c->NH = NH;
    size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C, nl = (size_t)B * NH * T;
    c->qkv = rand_f32(nq, -range, range);
    c->R = rand_f32(no, -1, 1);
    c->out = filled(no, NAN);
    c->lse = filled(nl, NAN);
    c->d_qkv = dev_from(c->qkv, nq);
    c->d_out = dev_from(c->out, no);
    c->d_lse = dev_from(c->lse, nl);
}

static void att_ctx_free(att_ctx *c) {
    dev_free(c->d_qkv), dev_free(c->d_out), dev_free(c->d_lse);
    free(c->qkv), free(c->R), free(c->out), free(c->lse);
}

/* forward vs a naive double implementation: scores, causal mask, softmax */
static void att_check_forward(att_ctx *c) {
    const int B = c->B, T = c->T, C = c->C, NH = c->NH, hd = C / NH;
    att_eval(c);
    double *out = dalloc((size_t)B * T * C), *lse = dalloc((size_t)B * NH * T), *sc = dalloc((size_t)T);
    const double scale = 1.0 / sqrt((double)hd);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const float *q = c->qkv + ((size_t)b * T + t) * 3 * C + (size_t)h * hd;
                double mx = -INFINITY;
                for (int s = 0; s < T; s++) {
                    if (s > t) { /* masked */
                        sc[s] = -INFINITY;
                        continue;
                    }
                    const float *k = c->qkv + ((size_t)b * T + s) * 3 * C + C + (size_t)h * hd;
                    double d = 0.0;
                    for (int i = 0; i < hd; i++)
                        d += (double)q[i] * k[i];
                    sc[s] = d * scale;
                    if (sc[s] > mx) mx = sc[s];
                }
                double sum = 0.0;
                for (int s = 0; s < T; s++)
                    sum += exp(sc[s] - mx); /* exp(-inf) = 0 for masked */
                lse[((size_t)b * NH + h) * T + t] = mx + log(sum);
                for (int i = 0; i < hd; i++) {
                    double o = 0.0;
                    for (int s = 0; s < T; s++) {
                        const float *v = c->qkv + ((size_t)b * T + s) * 3 * C + 2 * C + (size_t)h * hd;
                        o += exp(sc[s] - mx) / sum * v[i];
                    }
                    out[((size_t)b * T + t) * C + (size_t)h * hd + i] = o;
                }
            }
    check_rel("attention out", c->out, out, (size_t)B * T * C, TOL_FWD);
    check_rel("attention lse", c->lse, lse, (size_t)B * NH * T, TOL_FWD);
    free(out), free(lse), free(sc);
}

/* backward at the ctx's point; dqkv starts as NaN so every element must be written */
static float *att_backward(att_ctx *c) {
    size_t nq = (size_t)c->B * c->T * 3 * c->C, no = (size_t)c->B * c->T * c->C;
    att_eval(c);
    float *g = filled(nq, NAN);
    void *d_g = dev_from(g, nq), *d_R = dev_from(c->R, no);
    OK(g_be->iface->attention_backward(g_be, d_g, d_R, c->d_qkv, c->d_out, c->d_lse, c->B, c->T, c->C, c->NH));
    down(g, d_g, nq);
    dev_free(d_g), dev_free(d_R);
    return g;
}

static void test_attention(void **state) {
    (void)state;
    rng_seed(18);
    att_ctx c;
    att_ctx_init(&c, 2, 5, 8, 2, 1.5f);
    att_check_forward(&c);
    size_t nq = (size_t)c.B * c.T * 3 * c.C;
    float *g = att_backward(&c);
    double *ng = dalloc(nq);
    numgrad(att_eval, &c, c.qkv, nq, NULL, 0, ng);
    check_grad("attention dqkv", g, NULL, ng, nq);
    /* "=": a second backward gives the same */
    float *g2 = att_backward(&c);
    check_bitwise("attention dqkv twice", g2, g, nq);
    free(g), free(g2), free(ng);
    att_ctx_free(&c);
}

/* Sizes where the OpenMP loops run in parallel; sampled finite differences,
 * and the same bits with one thread as with several. */
static void test_attention_large(void **state) {
    (void)state;
    rng_seed(19);
    att_ctx c;
    att_ctx_init(&c, 2, 37, 48, 3, 1.0f);
    att_check_forward(&c);
    size_t nq = (size_t)c.B * c.T * 3 * c.C;
    float *g = att_backward(&c);
    enum { NS = 60 };
    size_t idx[NS];
    for (int k = 0; k < NS; k++)
        idx[k] = rng_u32() % nq;
    double ng[NS];
    float ga[NS];
    numgrad(att_eval, &c, c.qkv, nq, idx, NS, ng);
    for (int k = 0; k < NS; k++)
        ga[k] = g[idx[k]];
    check_rel("attention dqkv (sampled, large)", ga, ng, NS, TOL_FD);

    float *out_n = dup_f32(c.out, (size_t)c.B * c.T * c.C), *lse_n = dup_f32(c.lse, (size_t)c.B * c.NH * c.T);
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    float *g1 = att_backward(&c); /* also reruns the forward with one thread */
    omp_set_num_threads(nt);
    check_bitwise("attention out, 1 thread vs many", c.out, out_n, (size_t)c.B * c.T * c.C);
    check_bitwise("attention lse, 1 thread vs many", c.lse, lse_n, (size_t)c.B * c.NH * c.T);
    check_bitwise("attention dqkv, 1 thread vs many", g1, g, nq);
    free(g), free(g1), free(out_n), free(lse_n);
    att_ctx_free(&c);
}

/* ------------------------------------------------------------- classifier */

typedef struct {
    int N, V, Vp;
    float *logits, *losses; /* host: (N,Vp) (N) */
    int32_t *tgt;
    void *d_logits, *d_losses, *d_tgt;
} cls_ctx;

/* sum(losses), evaluation mode (dscale = 0) */
static double cls_eval(void *p) {
    cls_ctx *c = p;
    up(c->d_logits, c->logits, (size_t)c->N * c->Vp);
    OK(g_be->iface->classifier_forward_backward(g_be, c->d_losses, c->d_logits, c->d_tgt, 0.0f, c->N, c->V, c->Vp));
    down(c->losses, c->d_losses, (size_t)c->N);
    double s = 0.0;
    for (int i = 0; i < c->N; i++)
        s += c->losses[i];
    return s;
}

static void run_classifier(int N, int V, int Vp, uint64_t seed, int check_fd) {
    rng_seed(seed);
    cls_ctx c = {.N = N, .V = V, .Vp = Vp};
    const size_t n = (size_t)N * Vp;
    c.logits = rand_f32(n, -3, 3);
    for (size_t i = 0; i < (size_t)N; i++) /* padding columns hold junk that must be ignored */
        for (int k = V; k < Vp; k++)
            c.logits[i * Vp + k] = 50.0f;
    c.losses = filled((size_t)N, NAN);
    c.tgt = malloc((size_t)N * sizeof *c.tgt);
    assert_non_null(c.tgt);
    for (int i = 0; i < N; i++)
        c.tgt[i] = (int32_t)(rng_u32() % (uint32_t)V);
    c.tgt[0] = V - 1; /* the last real column */
    c.d_logits = dev_from(c.logits, n);
    c.d_losses = dev_from(c.losses, (size_t)N);
    c.d_tgt = dev_from_i32(c.tgt, (size_t)N);

    /* losses vs double; dscale = 0 leaves the logits as they were */
    cls_eval(&c);
    double *ref = dalloc((size_t)N);
    for (int i = 0; i < N; i++) {
        const float *x = c.logits + (size_t)i * Vp;
        double mx = x[0], s = 0.0;
        for (int k = 1; k < V; k++)
            mx = x[k] > mx ? x[k] : mx;
        for (int k = 0; k < V; k++)
            s += exp(x[k] - mx);
        ref[i] = mx + log(s) - x[c.tgt[i]];
    }
    check_rel("classifier losses", c.losses, ref, (size_t)N, TOL_FWD);
    float *back = filled(n, 0);
    down(back, c.d_logits, n);
    assert_memory_equal(back, c.logits, n * 4);

    /* dscale != 0: logits become d(dscale * sum(losses)) / dlogits */
    const float dscale = 0.37f;
    up(c.d_logits, c.logits, n);
    float *losses2 = filled((size_t)N, NAN);
    void *d_l2 = dev_from(losses2, (size_t)N);
    OK(g_be->iface->classifier_forward_backward(g_be, d_l2, c.d_logits, c.d_tgt, dscale, N, V, Vp));
    down(losses2, d_l2, (size_t)N);
    check_rel("classifier losses (training)", losses2, ref, (size_t)N, TOL_FWD);
    down(back, c.d_logits, n);
    for (int i = 0; i < N; i++)
        for (int k = V; k < Vp; k++)
            assert_true(back[(size_t)i * Vp + k] == 0.0f);
    /* independent double formula for every element */
    double *gref = dalloc(n);
    for (int i = 0; i < N; i++) {
        const float *x = c.logits + (size_t)i * Vp;
        double mx = x[0], s = 0.0;
        for (int k = 1; k < V; k++)
            mx = x[k] > mx ? x[k] : mx;
        for (int k = 0; k < V; k++)
            s += exp(x[k] - mx);
        for (int k = 0; k < V; k++)
            gref[(size_t)i * Vp + k] = (exp(x[k] - mx) / s - (k == c.tgt[i])) * dscale;
    }
    check_rel("classifier dlogits vs formula", back, gref, n, TOL_FWD);
    if (check_fd) {
        double *ng = dalloc(n);
        numgrad(cls_eval, &c, c.logits, n, NULL, 0, ng);
        for (size_t i = 0; i < n; i++)
            ng[i] *= dscale;
        check_grad("classifier dlogits vs finite differences", back, NULL, ng, n);
        free(ng);
    }

    /* the same bits with one thread */
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    float *back1 = filled(n, 0), *losses1 = filled((size_t)N, 0);
    up(c.d_logits, c.logits, n);
    OK(g_be->iface->classifier_forward_backward(g_be, d_l2, c.d_logits, c.d_tgt, dscale, N, V, Vp));
    omp_set_num_threads(nt);
    down(back1, c.d_logits, n);
    check_bitwise("classifier dlogits, 1 thread vs many", back1, back, n);
    down(losses1, d_l2, (size_t)N);
    check_bitwise("classifier losses, 1 thread vs many", losses1, losses2, (size_t)N);

    /* a target outside [0, V) is refused */
    int32_t bad = V;
    void *d_bad = dev_from_i32(&bad, 1);
    assert_int_equal(g_be->iface->classifier_forward_backward(g_be, d_l2, c.d_logits, d_bad, dscale, 1, V, Vp),
                     GML_ERR_INVALID_ARG);
    gml_error_clear();

    dev_free(c.d_logits), dev_free(c.d_losses), dev_free(c.d_tgt), dev_free(d_l2), dev_free(d_bad);
    free(c.logits), free(c.losses), free(c.tgt), free(ref), free(back), free(losses2), free(gref);
    free(back1), free(losses1);
}

static void test_classifier(void **state) {
    (void)state;
    run_classifier(7, 11, 16, 20, 1);
}
static void test_classifier_large(void **state) {
    (void)state;
    run_classifier(64, 500, 512, 21, 0);
}

/* ------------------------------------------- large layernorm and matmul */

/* Sizes past the OpenMP threshold: forward vs double, sampled finite
 * differences, and the same bits with one thread. */
static void test_layernorm_matmul_large(void **state) {
    (void)state;
    rng_seed(22);
    /* layernorm: N*C = 21070 */
    ln_ctx c;
    ln_ctx_init(&c, 70, 301);
    const int N = c.N, C = c.C;
    const size_t n = (size_t)N * C;
    ln_check_forward(&c);
    float *gi0 = rand_f32(n, -1, 1), *gw0 = rand_f32((size_t)C, -1, 1), *gb0 = rand_f32((size_t)C, -1, 1);
    void *d_gi = dev_from(gi0, n), *d_gw = dev_from(gw0, (size_t)C), *d_gb = dev_from(gb0, (size_t)C);
    void *d_R = dev_from(c.R, n);
    OK(g_be->iface->layernorm_backward(g_be, d_gi, d_gw, d_gb, d_R, c.d_inp, c.d_w, c.d_mean, c.d_rstd, N, C));
    float *gi = filled(n, 0), *gw = filled((size_t)C, 0), *gb = filled((size_t)C, 0);
    down(gi, d_gi, n), down(gw, d_gw, (size_t)C), down(gb, d_gb, (size_t)C);
    enum { NS = 60 };
    size_t idx[NS];
    for (int k = 0; k < NS; k++)
        idx[k] = rng_u32() % n;
    double ni[NS];
    float gi_s[NS];
    numgrad(ln_eval, &c, c.inp, n, idx, NS, ni);
    for (int k = 0; k < NS; k++)
        gi_s[k] = gi[idx[k]] - gi0[idx[k]];
    check_rel("layernorm dinp (sampled, large)", gi_s, ni, NS, TOL_FD);
    double *nw = dalloc((size_t)C), *nb = dalloc((size_t)C);
    numgrad(ln_eval, &c, c.w, (size_t)C, NULL, 0, nw);
    numgrad(ln_eval, &c, c.b, (size_t)C, NULL, 0, nb);
    check_grad("layernorm dweight (large)", gw, gw0, nw, (size_t)C);
    check_grad("layernorm dbias (large)", gb, gb0, nb, (size_t)C);

    /* the same bits with one thread (forward and backward) */
    float *out_n = dup_f32(c.out, n);
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    ln_eval(&c);
    up(d_gi, gi0, n), up(d_gw, gw0, (size_t)C), up(d_gb, gb0, (size_t)C);
    OK(g_be->iface->layernorm_backward(g_be, d_gi, d_gw, d_gb, d_R, c.d_inp, c.d_w, c.d_mean, c.d_rstd, N, C));
    omp_set_num_threads(nt);
    float *gi1 = filled(n, 0), *gw1 = filled((size_t)C, 0), *gb1 = filled((size_t)C, 0);
    down(gi1, d_gi, n), down(gw1, d_gw, (size_t)C), down(gb1, d_gb, (size_t)C);
    check_bitwise("layernorm out, 1 thread vs many", c.out, out_n, n);
    check_bitwise("layernorm dinp, 1 thread vs many", gi1, gi, n);
    check_bitwise("layernorm dweight, 1 thread vs many", gw1, gw, (size_t)C);
    check_bitwise("layernorm dbias, 1 thread vs many", gb1, gb, (size_t)C);
    dev_free(d_gi), dev_free(d_gw), dev_free(d_gb), dev_free(d_R);
    free(gi0), free(gw0), free(gb0), free(gi), free(gw), free(gb), free(nw), free(nb);
    free(out_n), free(gi1), free(gw1), free(gb1);
    ln_ctx_free(&c);

    /* matmul: N*OC = 21070; dbias column sums vs double, same bits with one thread */
    const int MN = 70, IC = 33, OC = 301;
    float *inp = rand_f32((size_t)MN * IC, -1, 1), *w = rand_f32((size_t)OC * IC, -1, 1);
    float *b = rand_f32((size_t)OC, -1, 1), *dout = rand_f32((size_t)MN * OC, -1, 1);
    float *out = filled((size_t)MN * OC, NAN), *db = filled((size_t)OC, 0), *db1 = filled((size_t)OC, 0);
    void *d_inp = dev_from(inp, (size_t)MN * IC), *d_w = dev_from(w, (size_t)OC * IC), *d_b = dev_from(b, (size_t)OC);
    void *d_out = dev_from(out, (size_t)MN * OC), *d_dout = dev_from(dout, (size_t)MN * OC);
    void *d_db = dev_from(db, (size_t)OC), *d_dw = dev_alloc((size_t)OC * IC * 4);
    OK(g_be->iface->matmul_forward(g_be, d_out, d_inp, d_w, d_b, MN, IC, OC));
    down(out, d_out, (size_t)MN * OC);
    double *ref = dalloc((size_t)MN * OC), *dbref = dalloc((size_t)OC);
    for (int i = 0; i < MN; i++)
        for (int o = 0; o < OC; o++) {
            double s = b[o];
            for (int k = 0; k < IC; k++)
                s += (double)inp[(size_t)i * IC + k] * w[(size_t)o * IC + k];
            ref[(size_t)i * OC + o] = s;
            dbref[o] += dout[(size_t)i * OC + o];
        }
    check_rel("matmul out (large)", out, ref, (size_t)MN * OC, TOL_FWD);
    OK(g_be->iface->memset_zero(g_be, d_dw, (size_t)OC * IC * 4));
    OK(g_be->iface->matmul_backward(g_be, NULL, d_dw, d_db, d_dout, d_inp, d_w, MN, IC, OC));
    down(db, d_db, (size_t)OC);
    check_rel("matmul dbias (large)", db, dbref, (size_t)OC, TOL_FWD);
    omp_set_num_threads(1);
    OK(g_be->iface->memset_zero(g_be, d_db, (size_t)OC * 4));
    OK(g_be->iface->matmul_backward(g_be, NULL, d_dw, d_db, d_dout, d_inp, d_w, MN, IC, OC));
    omp_set_num_threads(nt);
    down(db1, d_db, (size_t)OC);
    check_bitwise("matmul dbias, 1 thread vs many", db1, db, (size_t)OC);
    dev_free(d_inp), dev_free(d_w), dev_free(d_b), dev_free(d_out), dev_free(d_dout), dev_free(d_db), dev_free(d_dw);
    free(inp), free(w), free(b), free(dout), free(out), free(db), free(db1), free(ref), free(dbref);
}

/* ------------------------------------------------------------ reductions */

static void test_sum_sumsq(void **state) {
    (void)state;
    rng_seed(23);
    const size_t n = 1001;
    float *x = rand_f32(n, -3, 2);
    void *dx = dev_from(x, n);
    float acc0 = 1.5f;
    void *d_acc = dev_from(&acc0, 1);
    double s = acc0, ss = acc0;
    for (size_t i = 0; i < n; i++)
        s += x[i], ss += (double)x[i] * x[i];
    float got;
    OK(g_be->iface->sum_accumulate(g_be, d_acc, dx, n));
    down(&got, d_acc, 1);
    check_rel("sum_accumulate", &got, &s, 1, 1e-6);
    OK(g_be->iface->sum_accumulate(g_be, d_acc, dx, n)); /* += again */
    down(&got, d_acc, 1);
    double s2 = s + (s - acc0);
    check_rel("sum_accumulate twice", &got, &s2, 1, 1e-6);
    up(d_acc, &acc0, 1);
    OK(g_be->iface->sumsq_accumulate(g_be, d_acc, dx, n));
    down(&got, d_acc, 1);
    check_rel("sumsq_accumulate", &got, &ss, 1, 1e-6);
    OK(g_be->iface->sumsq_accumulate(g_be, d_acc, dx, 0)); /* empty: unchanged */
    float got2;
    down(&got2, d_acc, 1);
    assert_true(got2 == got);
    dev_free(dx), dev_free(d_acc);
    free(x);
}

/* ----------------------------------------------------------------- adamw */

static void test_adamw(void **state) {
    (void)state;
    rng_seed(24);
    const size_t n = 29;
    const float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, gs = 0.5f;
    float *p0 = rand_f32(n, -1, 1), *m0 = filled(n, 0), *v0 = filled(n, 0);
    float *p = dup_f32(p0, n), *m = filled(n, 0), *v = filled(n, 0), *pa = filled(n, NAN);
    double *rp = dalloc(n), *rm = dalloc(n), *rv = dalloc(n);
    for (size_t i = 0; i < n; i++)
        rp[i] = p0[i];
    void *d_p = dev_from(p0, n), *d_m = dev_from(m0, n), *d_v = dev_from(v0, n), *d_pa = dev_from(pa, n);
    void *d_g = dev_alloc(n * 4);
    for (int t = 1; t <= 3; t++) {
        float *g = rand_f32(n, -2, 2);
        up(d_g, g, n);
        /* steps 1, 3 with a separate act copy; step 2 without */
        OK(g_be->iface->adamw_update(g_be, d_p, t == 2 ? NULL : d_pa, d_g, d_m, d_v, n, lr, b1, b2, eps, wd, gs, t));
        for (size_t i = 0; i < n; i++) {
            double gg = (double)g[i] * gs;
            rm[i] = (double)b1 * rm[i] + (1.0 - (double)b1) * gg;
            rv[i] = (double)b2 * rv[i] + (1.0 - (double)b2) * gg * gg;
            double mhat = rm[i] / (1.0 - pow(b1, t)), vhat = rv[i] / (1.0 - pow(b2, t));
            rp[i] -= (double)lr * (mhat / (sqrt(vhat) + eps) + (double)wd * rp[i]);
        }
        free(g);
    }
    down(p, d_p, n), down(m, d_m, n), down(v, d_v, n), down(pa, d_pa, n);
    /* compare the change of the parameters (1e-2 of them), not their value */
    float *dp = filled(n, 0);
    double *rdp = dalloc(n);
    for (size_t i = 0; i < n; i++)
        dp[i] = p[i] - p0[i], rdp[i] = rp[i] - p0[i];
    check_rel("adamw param change (3 steps)", dp, rdp, n, 1e-4);
    check_rel("adamw m", m, rm, n, TOL_FWD);
    check_rel("adamw v", v, rv, n, TOL_FWD);
    assert_memory_equal(pa, p, n * 4); /* act copy = the updated params */
    /* param_act == param is allowed (act is f32 here) */
    float *g1 = filled(n, 1.0f);
    up(d_g, g1, n);
    OK(g_be->iface->adamw_update(g_be, d_p, d_p, d_g, d_m, d_v, n, lr, b1, b2, eps, wd, gs, 4));
    assert_int_equal(g_be->iface->adamw_update(g_be, d_p, NULL, d_g, d_m, d_v, n, lr, b1, b2, eps, wd, gs, 0),
                     GML_ERR_INVALID_ARG);
    gml_error_clear();
    dev_free(d_p), dev_free(d_m), dev_free(d_v), dev_free(d_pa), dev_free(d_g);
    free(p0), free(m0), free(v0), free(p), free(m), free(v), free(pa), free(rp), free(rm), free(rv);
    free(dp), free(rdp), free(g1);
}

/* adamw_update_pieces: each piece updated exactly as adamw_update updates
 * it alone (same bits), elements outside every piece untouched, param and
 * state offsets that differ, an empty piece, decay per piece; a table
 * whose flat offsets or total do not add up is refused. */
static void test_adamw_pieces(void **state) {
    (void)state;
    rng_seed(25);
    const size_t np = 40, ns = 30; /* param buffer, state buffer (elements) */
    const gml_adamw_piece tab[4] = {
        {.param_off = 3, .state_off = 0, .numel = 7, .flat_off = 0, .decay = 1},
        {.param_off = 10, .state_off = 7, .numel = 5, .flat_off = 7, .decay = 0},
        {.param_off = 15, .state_off = 12, .numel = 0, .flat_off = 12, .decay = 1},
        {.param_off = 22, .state_off = 14, .numel = 9, .flat_off = 12, .decay = 1},
    };
    const int n_tab = 4;
    const size_t total = 21;
    const float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f, gs = 0.5f;
    float *p0 = rand_f32(np, -1, 1), *pa0 = rand_f32(np, -1, 1), *g = rand_f32(ns, -2, 2);
    float *m0 = rand_f32(ns, -0.1f, 0.1f), *v0 = rand_f32(ns, 0.0f, 0.01f);
    /* A: through the table; B: piece by piece through adamw_update */
    void *a_p = dev_from(p0, np), *a_pa = dev_from(pa0, np), *a_m = dev_from(m0, ns), *a_v = dev_from(v0, ns);
    void *b_p = dev_from(p0, np), *b_pa = dev_from(pa0, np), *b_m = dev_from(m0, ns), *b_v = dev_from(v0, ns);
    void *d_g = dev_from(g, ns);
    void *d_tab = dev_alloc(sizeof tab);
    OK(g_be->iface->memcpy_h2d(g_be, d_tab, tab, sizeof tab));
    for (int t = 1; t <= 3; t++) {
        int with_act = t != 2; /* step 2 without the act copy */
        OK(g_be->iface->adamw_update_pieces(g_be, a_p, with_act ? a_pa : NULL, d_g, a_m, a_v, d_tab, n_tab, total, lr,
                                            b1, b2, eps, wd, gs, t));
        for (int k = 0; k < n_tab; k++) {
            const gml_adamw_piece *q = &tab[k];
            OK(g_be->iface->adamw_update(g_be, (float *)b_p + q->param_off,
                                         with_act ? (float *)b_pa + q->param_off : NULL, (float *)d_g + q->state_off,
                                         (float *)b_m + q->state_off, (float *)b_v + q->state_off, q->numel, lr, b1,
                                         b2, eps, q->decay ? wd : 0.0f, gs, t));
        }
    }
    float *ha = filled(np, 0), *hb = filled(np, 0), *sa = filled(ns, 0), *sb = filled(ns, 0);
    down(ha, a_p, np), down(hb, b_p, np);
    check_bitwise("adamw pieces param vs per piece", ha, hb, np);
    for (size_t i = 0; i < np; i++) /* outside every piece: untouched */
        if (i < 3 || (i >= 15 && i < 22) || i >= 31) assert_memory_equal(&ha[i], &p0[i], 4);
    down(ha, a_pa, np), down(hb, b_pa, np);
    check_bitwise("adamw pieces param_act vs per piece", ha, hb, np);
    for (size_t i = 0; i < np; i++)
        if (i < 3 || (i >= 15 && i < 22) || i >= 31) assert_memory_equal(&ha[i], &pa0[i], 4);
    down(sa, a_m, ns), down(sb, b_m, ns);
    check_bitwise("adamw pieces m vs per piece", sa, sb, ns);
    for (size_t i = 12; i < 14; i++) assert_memory_equal(&sa[i], &m0[i], 4);
    for (size_t i = 23; i < ns; i++) assert_memory_equal(&sa[i], &m0[i], 4);
    down(sa, a_v, ns), down(sb, b_v, ns);
    check_bitwise("adamw pieces v vs per piece", sa, sb, ns);

    /* flat offsets that do not add up, a wrong total, t = 0 */
    gml_adamw_piece bad[2] = {tab[0], tab[1]};
    bad[1].flat_off = 6;
    OK(g_be->iface->memcpy_h2d(g_be, d_tab, bad, sizeof bad));
    assert_int_equal(g_be->iface->adamw_update_pieces(g_be, a_p, NULL, d_g, a_m, a_v, d_tab, 2, 12, lr, b1, b2, eps,
                                                      wd, gs, 4),
                     GML_ERR_INVALID_ARG);
    OK(g_be->iface->memcpy_h2d(g_be, d_tab, tab, sizeof tab));
    assert_int_equal(g_be->iface->adamw_update_pieces(g_be, a_p, NULL, d_g, a_m, a_v, d_tab, n_tab, total + 1, lr, b1,
                                                      b2, eps, wd, gs, 4),
                     GML_ERR_INVALID_ARG);
    assert_int_equal(g_be->iface->adamw_update_pieces(g_be, a_p, NULL, d_g, a_m, a_v, d_tab, n_tab, total, lr, b1, b2,
                                                      eps, wd, gs, 0),
                     GML_ERR_INVALID_ARG);
    gml_error_clear();
    dev_free(a_p), dev_free(a_pa), dev_free(a_m), dev_free(a_v), dev_free(b_p), dev_free(b_pa), dev_free(b_m);
    dev_free(b_v), dev_free(d_g), dev_free(d_tab);
    free(p0), free(pa0), free(g), free(m0), free(v0), free(ha), free(hb), free(sa), free(sb);
}

/* ------------------------------------------------------------------ main */

static int setup(void **state) {
    (void)state;
    gml_status st = gml_backend_create("cpu", 0, &g_be);
    if (st != GML_OK) {
        fprintf(stderr, "gml_backend_create(cpu): %s\n", gml_error_message());
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    gml_backend_destroy(g_be);
    g_be = NULL;
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backend_props_and_memory),
        cmocka_unit_test(test_bf16_transfers),
        cmocka_unit_test(test_residual_forward),
        cmocka_unit_test(test_encoder),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_matmul_bias),
        cmocka_unit_test(test_matmul_nobias),
        cmocka_unit_test(test_gelu),
        cmocka_unit_test(test_matmul_gelu_forward),
        cmocka_unit_test(test_matmul_backward_gelu),
        cmocka_unit_test(test_residual_layernorm),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attention_large),
        cmocka_unit_test(test_classifier),
        cmocka_unit_test(test_classifier_large),
        cmocka_unit_test(test_layernorm_matmul_large),
        cmocka_unit_test(test_sum_sumsq),
        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_adamw_pieces),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
