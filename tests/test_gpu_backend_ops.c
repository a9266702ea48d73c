/* test_gpu_backend_ops.c — every op of the CUDA backend against the CPU
 * backend (ggml's test-backend-ops): same inputs, compare outputs.
 *
 * Inputs are drawn in f32 from a seeded xorshift generator and rounded to
 * bf16 on the host first, so both backends see identical values; each op runs
 * on both; outputs are downloaded as f32 and compared by relative norm error
 * ||gpu - cpu|| / ||cpu||. Output buffers are poisoned (NaN) beforehand so an
 * element the GPU never writes fails; accumulated (+=) outputs start from
 * random values so "=" instead of "+=" fails. Sizes are small and odd (tails
 * of every tile) plus GPT-2-like ones for attention and the classifier.
 * Exits 77 ("SKIP: no CUDA device") where no GPU is visible.
 * Not for: speed (bench/), whole-model parity (the PyTorch tests).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h after the headers above */
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/dropout.h"
#include "core/dtype.h"

/* ---- tolerances (relative norm error ||gpu - cpu|| / ||cpu||) ----
 * bf16 outputs: the GPU rounds each result to bf16 (relative error up to
 * 2^-9 = 2e-3 per element) and reads bf16 intermediates where the CPU keeps
 * f32; 2e-2 leaves room for that and for f32 summation order. */
#define TOL_BF16_OUT 2e-2
/* f32 outputs computed from bf16 inputs (parameter gradients, lse, losses,
 * LayerNorm statistics): inputs are identical, but the GPU's bf16
 * intermediates (e.g. attention's recomputation, matmul in bf16 tensor
 * cores) differ from the CPU's f32 ones. */
#define TOL_F32_FROM_BF16 1e-2
/* AdamW: identical f32 inputs and formula; only rounding of f32 ops
 * (fast-math division / sqrt on the GPU) differs. */
#define TOL_F32_ADAMW 1e-5
/* sum / sum of squares of f32 values: only the summation order differs. */
#define TOL_F32_REDUCE 1e-4

static gml_backend *g_cpu, *g_gpu;
/* g_gpu is created with GML_ATTENTION=cudnn (cuDNN's fused attention for
 * every call it accepts), g_own with GML_ATTENTION=own (our kernels only):
 * test_attention runs both */
static gml_backend *g_own;
/* kernels/cuda/attention_cudnn.cu; absent (NULL) in a build without CUDA */
extern size_t gml_cuda_cudnn_attention_calls(gml_backend *be) __attribute__((weak));

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

static float round_bf16(float x) { return gml_bf16_to_f32(gml_f32_to_bf16(x)); }

/* n values in [lo, hi), rounded to bf16. Caller frees. */
static float *rand_bf16(size_t n, float lo, float hi) {
    float *x = malloc(n * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = round_bf16(rng_uniform(lo, hi));
    return x;
}
/* n f32 values in [lo, hi) (not rounded). Caller frees. */
static float *rand_f32(size_t n, float lo, float hi) {
    float *x = malloc(n * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = rng_uniform(lo, hi);
    return x;
}

#define OK(call)                                                                                                       \
    do {                                                                                                               \
        gml_status st_ = (call);                                                                                       \
        if (st_ != GML_OK) fail_msg("%s -> %s: %s", #call, gml_status_name(st_), gml_error_message());                 \
    } while (0)

/* ---- a buffer on both backends ---- */
typedef struct {
    void *cpu, *gpu;
    size_t n; /* elements */
    int act;  /* 1: each backend's act dtype; 0: f32; 2: int32 */
} pair;

static gml_dtype pair_dt(const pair *p, const gml_backend *be) {
    return p->act == 1 ? be->act_dtype : p->act == 2 ? GML_DTYPE_I32 : GML_DTYPE_F32;
}

static pair pair_alloc(size_t n, int act) {
    pair p = {NULL, NULL, n, act};
    OK(g_cpu->iface->alloc(g_cpu, &p.cpu, n * gml_dtype_size(pair_dt(&p, g_cpu))));
    OK(g_gpu->iface->alloc(g_gpu, &p.gpu, n * gml_dtype_size(pair_dt(&p, g_gpu))));
    return p;
}

static void pair_upload(pair *p, const float *host) {
    OK(g_cpu->iface->upload_f32(g_cpu, p->cpu, pair_dt(p, g_cpu), host, p->n));
    OK(g_gpu->iface->upload_f32(g_gpu, p->gpu, pair_dt(p, g_gpu), host, p->n));
}

/* a buffer holding `host` on both */
static pair pair_from(const float *host, size_t n, int act) {
    pair p = pair_alloc(n, act);
    pair_upload(&p, host);
    return p;
}

/* an output buffer filled with NaN on both */
static pair pair_poison(size_t n, int act) {
    float *nan_buf = malloc(n * sizeof *nan_buf);
    assert_non_null(nan_buf);
    for (size_t i = 0; i < n; i++)
        nan_buf[i] = NAN;
    pair p = pair_from(nan_buf, n, act);
    free(nan_buf);
    return p;
}

static pair pair_i32(const int32_t *host, size_t n) {
    pair p = pair_alloc(n, 2);
    OK(g_cpu->iface->memcpy_h2d(g_cpu, p.cpu, host, n * sizeof(int32_t)));
    OK(g_gpu->iface->memcpy_h2d(g_gpu, p.gpu, host, n * sizeof(int32_t)));
    return p;
}

static void pair_free(pair *p) {
    g_cpu->iface->free(g_cpu, p->cpu);
    g_gpu->iface->free(g_gpu, p->gpu);
    p->cpu = p->gpu = NULL;
}

/* downloads one side as f32; caller frees */
static float *download(const pair *p, int gpu) {
    gml_backend *be = gpu ? g_gpu : g_cpu;
    float *h = malloc(p->n * sizeof *h);
    assert_non_null(h);
    OK(be->iface->download_f32(be, h, gpu ? p->gpu : p->cpu, pair_dt(p, be), p->n));
    return h;
}

/* relative norm error of gpu vs cpu; fails on NaN/Inf or above tol */
static double compare(const char *what, const pair *p, double tol) {
    float *c = download(p, 0), *g = download(p, 1);
    double num = 0.0, den = 0.0;
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (!isfinite(g[i]) || !isfinite(c[i])) {
            if (!bad) first_bad = i;
            bad++;
            continue;
        }
        double d = (double)g[i] - (double)c[i];
        num += d * d;
        den += (double)c[i] * (double)c[i];
    }
    double err = den > 0.0 ? sqrt(num / den) : sqrt(num);
    printf("  %-44s n=%-9zu rel err %.3e (tol %.0e)%s\n", what, p->n, err, tol, bad ? "  NON-FINITE" : "");
    if (bad)
        fail_msg("%s: %zu non-finite values, first at %zu (cpu %g, gpu %g)", what, bad, first_bad, (double)c[first_bad],
                 (double)g[first_bad]);
    free(c);
    free(g);
    if (!(err <= tol)) fail_msg("%s: relative error %.3e above %.0e", what, err, tol);
    return err;
}

/* ------------------------------------------------------------ tests */

static void test_memory_and_transfers(void **state) {
    (void)state;
    rng_seed(1);
    size_t in0 = 0, peak0 = 0, in1 = 0, peak1 = 0;
    g_gpu->iface->mem_stats(g_gpu, &in0, &peak0);
    const size_t n = 1000003;
    float *x = rand_bf16(n, -3.0f, 3.0f);
    void *a = NULL, *b = NULL, *f = NULL;
    OK(g_gpu->iface->alloc(g_gpu, &a, n * 2));
    OK(g_gpu->iface->alloc(g_gpu, &b, n * 2));
    OK(g_gpu->iface->alloc(g_gpu, &f, n * 4));
    g_gpu->iface->mem_stats(g_gpu, &in1, &peak1);
    assert_true(in1 == in0 + n * 8);
    assert_true(peak1 >= in1);

    /* bf16 round trip is exact for bf16 values; d2d copy; f32 round trip */
    float *y = malloc(n * sizeof *y);
    assert_non_null(y);
    OK(g_gpu->iface->upload_f32(g_gpu, a, GML_DTYPE_BF16, x, n));
    OK(g_gpu->iface->memcpy_d2d(g_gpu, b, a, n * 2));
    OK(g_gpu->iface->download_f32(g_gpu, y, b, GML_DTYPE_BF16, n));
    assert_memory_equal(x, y, n * sizeof *x);
    OK(g_gpu->iface->upload_f32(g_gpu, f, GML_DTYPE_F32, x, n));
    OK(g_gpu->iface->download_f32(g_gpu, y, f, GML_DTYPE_F32, n));
    assert_memory_equal(x, y, n * sizeof *x);

    /* f32 -> bf16 on the device rounds like gml_f32_to_bf16 (to nearest even) */
    float *z = rand_f32(n, -100.0f, 100.0f);
    OK(g_gpu->iface->upload_f32(g_gpu, f, GML_DTYPE_F32, z, n));
    OK(g_gpu->iface->cast_f32_to_act(g_gpu, a, f, n));
    OK(g_gpu->iface->download_f32(g_gpu, y, a, GML_DTYPE_BF16, n));
    for (size_t i = 0; i < n; i++)
        if (y[i] != round_bf16(z[i]))
            fail_msg("cast_f32_to_act[%zu]: %g -> %g, want %g", i, z[i], y[i], round_bf16(z[i]));

    /* raw copies and memset */
    uint16_t *raw = malloc(n * 2);
    assert_non_null(raw);
    OK(g_gpu->iface->memset_zero(g_gpu, b, n * 2));
    OK(g_gpu->iface->memcpy_d2h(g_gpu, raw, b, n * 2));
    for (size_t i = 0; i < n; i++)
        assert_int_equal(raw[i], 0);
    for (size_t i = 0; i < n; i++)
        raw[i] = gml_f32_to_bf16(x[i]);
    OK(g_gpu->iface->memcpy_h2d(g_gpu, b, raw, n * 2));
    OK(g_gpu->iface->download_f32(g_gpu, y, b, GML_DTYPE_BF16, n));
    assert_memory_equal(x, y, n * sizeof *x);
    OK(g_gpu->iface->synchronize(g_gpu));

    g_gpu->iface->free(g_gpu, a);
    g_gpu->iface->free(g_gpu, b);
    g_gpu->iface->free(g_gpu, f);
    g_gpu->iface->mem_stats(g_gpu, &in1, &peak1);
    assert_true(in1 == in0);
    assert_true(peak1 >= in0 + n * 8);
    printf("  device '%s', peak_flops %.3g\n", g_gpu->device_name, g_gpu->peak_flops);
    free(x);
    free(y);
    free(z);
    free(raw);
}

static void test_cast(void **state) {
    (void)state;
    rng_seed(2);
    const size_t n = 4097;
    float *z = rand_f32(n, -10.0f, 10.0f);
    pair src = pair_alloc(n, 0);
    pair_upload(&src, z);
    pair dst = pair_poison(n, 1);
    OK(g_cpu->iface->cast_f32_to_act(g_cpu, dst.cpu, src.cpu, n));
    OK(g_gpu->iface->cast_f32_to_act(g_gpu, dst.gpu, src.gpu, n));
    compare("cast_f32_to_act", &dst, TOL_BF16_OUT);
    pair_free(&src);
    pair_free(&dst);
    free(z);
}

/* skewed: a few tokens take most positions (like the space of
 * character-level text), so runs of equal tokens cross the GPU backward's
 * cells of 32 sorted positions, some many of them. */
static void run_encoder(int B, int T, int C, int skewed) {
    const int V = 1000, Vp = 1024, maxT = 320;
    const size_t N = (size_t)B * T;
    int32_t *tok = malloc(N * sizeof *tok);
    assert_non_null(tok);
    for (size_t i = 0; i < N; i++) {
        uint32_t u = rng_u32() % 100;
        tok[i] = (int32_t)(rng_u32() % V);
        if (skewed && u < 40) tok[i] = 7;       /* ~40%: a run over dozens of cells */
        else if (skewed && u < 50) tok[i] = 0;  /* ~10% */
        else if (skewed && u < 53) tok[i] = V - 1;
    }
    tok[N / 3] = tok[N / 2] = tok[N - 2] = 17; /* repeated tokens: dwte rows get several adds */
    tok[N - 1] = V - 1;
    float *wte_h = rand_bf16((size_t)Vp * C, -1.0f, 1.0f);
    float *wpe_h = rand_bf16((size_t)maxT * C, -1.0f, 1.0f);
    float *dout_h = rand_bf16(N * C, -1.0f, 1.0f);
    float *dwte_h = rand_f32((size_t)Vp * C, -0.5f, 0.5f);
    float *dwpe_h = rand_f32((size_t)maxT * C, -0.5f, 0.5f);
    pair tokens = pair_i32(tok, N);
    pair wte = pair_from(wte_h, (size_t)Vp * C, 1), wpe = pair_from(wpe_h, (size_t)maxT * C, 1);
    pair out = pair_poison(N * C, 1);
    char what[96];
    OK(g_cpu->iface->encoder_forward(g_cpu, out.cpu, tokens.cpu, wte.cpu, wpe.cpu, B, T, C));
    OK(g_gpu->iface->encoder_forward(g_gpu, out.gpu, tokens.gpu, wte.gpu, wpe.gpu, B, T, C));
    snprintf(what, sizeof what, "encoder_forward out B=%d T=%d C=%d%s", B, T, C, skewed ? " skewed" : "");
    compare(what, &out, TOL_BF16_OUT);

    pair dout = pair_from(dout_h, N * C, 1);
    pair dwte = pair_from(dwte_h, (size_t)Vp * C, 0), dwpe = pair_from(dwpe_h, (size_t)maxT * C, 0);
    OK(g_cpu->iface->encoder_backward(g_cpu, dwte.cpu, dwpe.cpu, dout.cpu, tokens.cpu, B, T, C));
    OK(g_gpu->iface->encoder_backward(g_gpu, dwte.gpu, dwpe.gpu, dout.gpu, tokens.gpu, B, T, C));
    snprintf(what, sizeof what, "encoder_backward dwte (+=) B=%d T=%d C=%d%s", B, T, C, skewed ? " skewed" : "");
    compare(what, &dwte, TOL_F32_FROM_BF16);
    snprintf(what, sizeof what, "encoder_backward dwpe (+=) B=%d T=%d C=%d%s", B, T, C, skewed ? " skewed" : "");
    compare(what, &dwpe, TOL_F32_FROM_BF16);
    pair_free(&tokens), pair_free(&wte), pair_free(&wpe), pair_free(&out), pair_free(&dout);
    pair_free(&dwte), pair_free(&dwpe);
    free(wte_h), free(wpe_h), free(dout_h), free(dwte_h), free(dwpe_h), free(tok);
}

static void test_encoder(void **state) {
    (void)state;
    rng_seed(3);
    run_encoder(2, 37, 64, 0);
    run_encoder(4, 300, 100, 1);
}

static void run_layernorm(int N, int C) {
    char what[96];
    const size_t NC = (size_t)N * C;
    float *inp_h = rand_bf16(NC, -2.0f, 3.0f);
    float *w_h = rand_bf16((size_t)C, 0.5f, 1.5f), *b_h = rand_bf16((size_t)C, -0.5f, 0.5f);
    float *dout_h = rand_bf16(NC, -1.0f, 1.0f), *dinp_h = rand_bf16(NC, -0.5f, 0.5f);
    float *dw_h = rand_f32((size_t)C, -0.5f, 0.5f), *db_h = rand_f32((size_t)C, -0.5f, 0.5f);
    pair inp = pair_from(inp_h, NC, 1), w = pair_from(w_h, (size_t)C, 1), b = pair_from(b_h, (size_t)C, 1);
    pair out = pair_poison(NC, 1), mean = pair_poison((size_t)N, 0), rstd = pair_poison((size_t)N, 0);
    OK(g_cpu->iface->layernorm_forward(g_cpu, out.cpu, mean.cpu, rstd.cpu, inp.cpu, w.cpu, b.cpu, N, C));
    OK(g_gpu->iface->layernorm_forward(g_gpu, out.gpu, mean.gpu, rstd.gpu, inp.gpu, w.gpu, b.gpu, N, C));
    snprintf(what, sizeof what, "layernorm_forward out N=%d C=%d", N, C);
    compare(what, &out, TOL_BF16_OUT);
    snprintf(what, sizeof what, "layernorm_forward mean N=%d C=%d", N, C);
    compare(what, &mean, TOL_F32_FROM_BF16);
    snprintf(what, sizeof what, "layernorm_forward rstd N=%d C=%d", N, C);
    compare(what, &rstd, TOL_F32_FROM_BF16);

    /* backward from the CPU's statistics, so both use the same mean/rstd */
    float *mean_h = download(&mean, 0), *rstd_h = download(&rstd, 0);
    pair_upload(&mean, mean_h);
    pair_upload(&rstd, rstd_h);
    pair dout = pair_from(dout_h, NC, 1), dinp = pair_from(dinp_h, NC, 1);
    pair dw = pair_from(dw_h, (size_t)C, 0), db = pair_from(db_h, (size_t)C, 0);
    OK(g_cpu->iface->layernorm_backward(g_cpu, dinp.cpu, dw.cpu, db.cpu, dout.cpu, inp.cpu, w.cpu, mean.cpu, rstd.cpu,
                                        N, C));
    OK(g_gpu->iface->layernorm_backward(g_gpu, dinp.gpu, dw.gpu, db.gpu, dout.gpu, inp.gpu, w.gpu, mean.gpu, rstd.gpu,
                                        N, C));
    snprintf(what, sizeof what, "layernorm_backward dinp (+=) N=%d C=%d", N, C);
    compare(what, &dinp, TOL_BF16_OUT);
    snprintf(what, sizeof what, "layernorm_backward dweight (+=) N=%d C=%d", N, C);
    compare(what, &dw, TOL_F32_FROM_BF16);
    snprintf(what, sizeof what, "layernorm_backward dbias (+=) N=%d C=%d", N, C);
    compare(what, &db, TOL_F32_FROM_BF16);
    pair_free(&inp), pair_free(&w), pair_free(&b), pair_free(&out), pair_free(&mean), pair_free(&rstd);
    pair_free(&dout), pair_free(&dinp), pair_free(&dw), pair_free(&db);
    free(inp_h), free(w_h), free(b_h), free(dout_h), free(dinp_h), free(dw_h), free(db_h);
    free(mean_h), free(rstd_h);
}

static void test_layernorm(void **state) {
    (void)state;
    rng_seed(4);
    run_layernorm(74, 64);
    run_layernorm(33, 768);
    run_layernorm(1000, 100); /* C % 8 != 0: scalar kernels, more row chunks than one partial-sum block */
    run_layernorm(40, 1280);  /* wider rows */
    run_layernorm(40000, 64); /* more rows than 512 chunks of 64: several rows per partial-sum lane */
}

static void run_matmul(int N, int IC, int OC, int with_bias) {
    char what[96];
    float *inp_h = rand_bf16((size_t)N * IC, -1.0f, 1.0f), *w_h = rand_bf16((size_t)OC * IC, -0.5f, 0.5f);
    float *b_h = rand_bf16((size_t)OC, -1.0f, 1.0f), *dout_h = rand_bf16((size_t)N * OC, -1.0f, 1.0f);
    float *dw_h = rand_f32((size_t)OC * IC, -0.5f, 0.5f), *db_h = rand_f32((size_t)OC, -0.5f, 0.5f);
    pair inp = pair_from(inp_h, (size_t)N * IC, 1), w = pair_from(w_h, (size_t)OC * IC, 1);
    pair b = pair_from(b_h, (size_t)OC, 1), out = pair_poison((size_t)N * OC, 1);
    OK(g_cpu->iface->matmul_forward(g_cpu, out.cpu, inp.cpu, w.cpu, with_bias ? b.cpu : NULL, N, IC, OC));
    OK(g_gpu->iface->matmul_forward(g_gpu, out.gpu, inp.gpu, w.gpu, with_bias ? b.gpu : NULL, N, IC, OC));
    snprintf(what, sizeof what, "matmul_forward N=%d IC=%d OC=%d bias=%d", N, IC, OC, with_bias);
    compare(what, &out, TOL_BF16_OUT);

    pair dout = pair_from(dout_h, (size_t)N * OC, 1), dinp = pair_poison((size_t)N * IC, 1);
    pair dw = pair_from(dw_h, (size_t)OC * IC, 0), db = pair_from(db_h, (size_t)OC, 0);
    OK(g_cpu->iface->matmul_backward(g_cpu, dinp.cpu, dw.cpu, with_bias ? db.cpu : NULL, dout.cpu, inp.cpu, w.cpu, N,
                                     IC, OC));
    OK(g_gpu->iface->matmul_backward(g_gpu, dinp.gpu, dw.gpu, with_bias ? db.gpu : NULL, dout.gpu, inp.gpu, w.gpu, N,
                                     IC, OC));
    snprintf(what, sizeof what, "matmul_backward dinp N=%d IC=%d OC=%d", N, IC, OC);
    compare(what, &dinp, TOL_BF16_OUT);
    snprintf(what, sizeof what, "matmul_backward dweight (+=) N=%d IC=%d OC=%d", N, IC, OC);
    compare(what, &dw, TOL_F32_FROM_BF16);
    snprintf(what, sizeof what, "matmul_backward dbias (+=) N=%d IC=%d OC=%d", N, IC, OC);
    compare(what, &db, TOL_F32_FROM_BF16); /* unchanged on both when !with_bias */

    /* second pass without dinp and dbias: dweight accumulates again */
    OK(g_cpu->iface->matmul_backward(g_cpu, NULL, dw.cpu, NULL, dout.cpu, inp.cpu, w.cpu, N, IC, OC));
    OK(g_gpu->iface->matmul_backward(g_gpu, NULL, dw.gpu, NULL, dout.gpu, inp.gpu, w.gpu, N, IC, OC));
    snprintf(what, sizeof what, "matmul_backward dweight x2 N=%d IC=%d OC=%d", N, IC, OC);
    compare(what, &dw, TOL_F32_FROM_BF16);
    pair_free(&inp), pair_free(&w), pair_free(&b), pair_free(&out), pair_free(&dout), pair_free(&dinp);
    pair_free(&dw), pair_free(&db);
    free(inp_h), free(w_h), free(b_h), free(dout_h), free(dw_h), free(db_h);
}

static void test_matmul(void **state) {
    (void)state;
    rng_seed(5);
    run_matmul(33, 96, 80, 1);
    run_matmul(33, 96, 80, 0);
    run_matmul(17, 36, 52, 1);     /* leading dimensions not multiples of 8 */
    run_matmul(256, 768, 2304, 1); /* GPT-2 qkv projection, one sequence */
}

/* GELU (tanh form) on the host, to build the inputs inp = gelu(pre) */
static float gelu_host(float x) { return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x))); }

/* The fused MLP ops: matmul_gelu_forward (pre and out) and
 * matmul_backward_gelu (dpre, dweight +=, dbias +=). Shapes with OC or IC
 * a multiple of 8 take cuBLASLt's GELU_AUX_BIAS / DGELU / BGRADB epilogues,
 * the others the fallback kernels. */
static void run_matmul_gelu(int N, int IC, int OC, int with_bias) {
    char what[112];
    float *inp_h = rand_bf16((size_t)N * IC, -1.0f, 1.0f), *w_h = rand_bf16((size_t)OC * IC, -0.5f, 0.5f);
    float *b_h = rand_bf16((size_t)OC, -1.0f, 1.0f);
    pair inp = pair_from(inp_h, (size_t)N * IC, 1), w = pair_from(w_h, (size_t)OC * IC, 1);
    pair b = pair_from(b_h, (size_t)OC, 1);
    pair out = pair_poison((size_t)N * OC, 1), pre = pair_poison((size_t)N * OC, 1);
    OK(g_cpu->iface->matmul_gelu_forward(g_cpu, out.cpu, pre.cpu, inp.cpu, w.cpu, with_bias ? b.cpu : NULL, N, IC, OC));
    OK(g_gpu->iface->matmul_gelu_forward(g_gpu, out.gpu, pre.gpu, inp.gpu, w.gpu, with_bias ? b.gpu : NULL, N, IC, OC));
    snprintf(what, sizeof what, "matmul_gelu_forward pre N=%d IC=%d OC=%d bias=%d", N, IC, OC, with_bias);
    compare(what, &pre, TOL_BF16_OUT);
    snprintf(what, sizeof what, "matmul_gelu_forward out N=%d IC=%d OC=%d bias=%d", N, IC, OC, with_bias);
    compare(what, &out, TOL_BF16_OUT);
    pair_free(&inp), pair_free(&w), pair_free(&b), pair_free(&out), pair_free(&pre);
    free(inp_h), free(w_h), free(b_h);
}

/* the layer after the GELU: inp = gelu(pre) (N, IC), weight (OC, IC) */
static void run_matmul_backward_gelu(int N, int IC, int OC, int with_bias) {
    char what[112];
    const size_t ni = (size_t)N * IC, no = (size_t)N * OC, nw = (size_t)OC * IC;
    float *pre_h = rand_bf16(ni, -3.0f, 3.0f), *inp_h = malloc(ni * sizeof *inp_h);
    assert_non_null(inp_h);
    for (size_t i = 0; i < ni; i++)
        inp_h[i] = round_bf16(gelu_host(pre_h[i]));
    float *w_h = rand_bf16(nw, -0.5f, 0.5f), *dout_h = rand_bf16(no, -1.0f, 1.0f);
    float *dw_h = rand_f32(nw, -0.5f, 0.5f), *db_h = rand_f32((size_t)OC, -0.5f, 0.5f);
    pair pre = pair_from(pre_h, ni, 1), inp = pair_from(inp_h, ni, 1), w = pair_from(w_h, nw, 1);
    pair dout = pair_from(dout_h, no, 1), dpre = pair_poison(ni, 1);
    pair dw = pair_from(dw_h, nw, 0), db = pair_from(db_h, (size_t)OC, 0);
    OK(g_cpu->iface->matmul_backward_gelu(g_cpu, dpre.cpu, dw.cpu, with_bias ? db.cpu : NULL, dout.cpu, inp.cpu, w.cpu,
                                          pre.cpu, N, IC, OC));
    OK(g_gpu->iface->matmul_backward_gelu(g_gpu, dpre.gpu, dw.gpu, with_bias ? db.gpu : NULL, dout.gpu, inp.gpu, w.gpu,
                                          pre.gpu, N, IC, OC));
    snprintf(what, sizeof what, "matmul_backward_gelu dpre N=%d IC=%d OC=%d", N, IC, OC);
    compare(what, &dpre, TOL_BF16_OUT);
    snprintf(what, sizeof what, "matmul_backward_gelu dweight (+=) N=%d IC=%d OC=%d", N, IC, OC);
    compare(what, &dw, TOL_F32_FROM_BF16);
    snprintf(what, sizeof what, "matmul_backward_gelu dbias (+=) N=%d IC=%d OC=%d bias=%d", N, IC, OC, with_bias);
    compare(what, &db, TOL_F32_FROM_BF16); /* unchanged on both when !with_bias */
    pair_free(&pre), pair_free(&inp), pair_free(&w), pair_free(&dout), pair_free(&dpre), pair_free(&dw);
    pair_free(&db);
    free(pre_h), free(inp_h), free(w_h), free(dout_h), free(dw_h), free(db_h);
}

static void test_matmul_gelu(void **state) {
    (void)state;
    rng_seed(11);
    run_matmul_gelu(33, 96, 80, 1);
    run_matmul_gelu(33, 96, 80, 0);
    run_matmul_gelu(17, 36, 52, 1);     /* OC not a multiple of 8: no epilogue */
    run_matmul_gelu(256, 768, 3072, 1); /* GPT-2 fc, one sequence */
    run_matmul_backward_gelu(33, 80, 96, 1);
    run_matmul_backward_gelu(33, 80, 96, 0);
    run_matmul_backward_gelu(17, 52, 36, 1);     /* IC not a multiple of 8: no epilogue */
    run_matmul_backward_gelu(256, 3072, 768, 1); /* GPT-2 fc proj, one sequence */
}

static void run_residual_layernorm(int N, int C) {
    char what[96];
    const size_t NC = (size_t)N * C;
    float *a_h = rand_bf16(NC, -2.0f, 3.0f), *b_h = rand_bf16(NC, -1.0f, 1.0f);
    float *w_h = rand_bf16((size_t)C, 0.5f, 1.5f), *bias_h = rand_bf16((size_t)C, -0.5f, 0.5f);
    pair a = pair_from(a_h, NC, 1), b = pair_from(b_h, NC, 1), w = pair_from(w_h, (size_t)C, 1);
    pair bias = pair_from(bias_h, (size_t)C, 1);
    pair res = pair_poison(NC, 1), out = pair_poison(NC, 1), mean = pair_poison((size_t)N, 0);
    pair rstd = pair_poison((size_t)N, 0);
    OK(g_cpu->iface->residual_layernorm_forward(g_cpu, res.cpu, out.cpu, mean.cpu, rstd.cpu, a.cpu, b.cpu, w.cpu,
                                                bias.cpu, N, C));
    OK(g_gpu->iface->residual_layernorm_forward(g_gpu, res.gpu, out.gpu, mean.gpu, rstd.gpu, a.gpu, b.gpu, w.gpu,
                                                bias.gpu, N, C));
    snprintf(what, sizeof what, "residual_layernorm res N=%d C=%d", N, C);
    compare(what, &res, TOL_BF16_OUT);
    snprintf(what, sizeof what, "residual_layernorm out N=%d C=%d", N, C);
    compare(what, &out, TOL_BF16_OUT);
    snprintf(what, sizeof what, "residual_layernorm mean N=%d C=%d", N, C);
    compare(what, &mean, TOL_F32_FROM_BF16);
    snprintf(what, sizeof what, "residual_layernorm rstd N=%d C=%d", N, C);
    compare(what, &rstd, TOL_F32_FROM_BF16);

    /* on the GPU the fused op equals residual_forward then layernorm_forward, bit for bit */
    pair res2 = pair_poison(NC, 1), out2 = pair_poison(NC, 1), mean2 = pair_poison((size_t)N, 0);
    pair rstd2 = pair_poison((size_t)N, 0);
    OK(g_gpu->iface->residual_forward(g_gpu, res2.gpu, a.gpu, b.gpu, NC));
    OK(g_gpu->iface->layernorm_forward(g_gpu, out2.gpu, mean2.gpu, rstd2.gpu, res2.gpu, w.gpu, bias.gpu, N, C));
    float *x1 = download(&out, 1), *x2 = download(&out2, 1), *r1 = download(&res, 1), *r2 = download(&res2, 1);
    float *m1 = download(&mean, 1), *m2 = download(&mean2, 1);
    assert_memory_equal(r1, r2, NC * sizeof *r1);
    assert_memory_equal(x1, x2, NC * sizeof *x1);
    assert_memory_equal(m1, m2, (size_t)N * sizeof *m1);
    free(x1), free(x2), free(r1), free(r2), free(m1), free(m2);
    pair_free(&a), pair_free(&b), pair_free(&w), pair_free(&bias), pair_free(&res), pair_free(&out);
    pair_free(&mean), pair_free(&rstd), pair_free(&res2), pair_free(&out2), pair_free(&mean2), pair_free(&rstd2);
    free(a_h), free(b_h), free(w_h), free(bias_h);
}

static void test_residual_layernorm(void **state) {
    (void)state;
    rng_seed(12);
    run_residual_layernorm(74, 64);
    run_residual_layernorm(33, 768);
    run_residual_layernorm(37, 100); /* C % 8 != 0: the unfused kernels */
}

static void test_gelu_residual(void **state) {
    (void)state;
    rng_seed(6);
    const size_t n = 100003;
    float *x_h = rand_bf16(n, -5.0f, 5.0f), *y_h = rand_bf16(n, -5.0f, 5.0f), *d_h = rand_bf16(n, -1.0f, 1.0f);
    pair x = pair_from(x_h, n, 1), y = pair_from(y_h, n, 1), d = pair_from(d_h, n, 1);
    pair out = pair_poison(n, 1);
    OK(g_cpu->iface->gelu_forward(g_cpu, out.cpu, x.cpu, n));
    OK(g_gpu->iface->gelu_forward(g_gpu, out.gpu, x.gpu, n));
    compare("gelu_forward", &out, TOL_BF16_OUT);
    pair dinp = pair_poison(n, 1);
    OK(g_cpu->iface->gelu_backward(g_cpu, dinp.cpu, x.cpu, d.cpu, n));
    OK(g_gpu->iface->gelu_backward(g_gpu, dinp.gpu, x.gpu, d.gpu, n));
    compare("gelu_backward dinp", &dinp, TOL_BF16_OUT);
    pair res = pair_poison(n, 1);
    OK(g_cpu->iface->residual_forward(g_cpu, res.cpu, x.cpu, y.cpu, n));
    OK(g_gpu->iface->residual_forward(g_gpu, res.gpu, x.gpu, y.gpu, n));
    compare("residual_forward", &res, TOL_BF16_OUT);
    pair_free(&x), pair_free(&y), pair_free(&d), pair_free(&out), pair_free(&dinp), pair_free(&res);
    free(x_h), free(y_h), free(d_h);
}

/* Dropout: the CUDA mask must be the CPU mask exactly (same zeros), the
 * kept values x*scale within bf16 rounding. */
static void test_dropout(void **state) {
    (void)state;
    rng_seed(8);
    const size_t n = 1000003;
    const float p = 0.2f, scale = 1.0f / (1.0f - p);
    const uint32_t thr = gml_dropout_threshold(p);
    float *x_h = rand_bf16(n, 0.5f, 2.0f); /* never 0: a 0 output means dropped */
    pair x = pair_from(x_h, n, 1), out = pair_poison(n, 1);
    OK(g_cpu->iface->dropout(g_cpu, out.cpu, x.cpu, n, 0xfeedULL, thr, scale));
    OK(g_gpu->iface->dropout(g_gpu, out.gpu, x.gpu, n, 0xfeedULL, thr, scale));
    float *c = download(&out, 0), *g = download(&out, 1);
    size_t differ = 0, dropped = 0;
    for (size_t i = 0; i < n; i++) {
        differ += (c[i] == 0.0f) != (g[i] == 0.0f);
        dropped += g[i] == 0.0f;
    }
    printf("  dropout: %zu of %zu dropped on the GPU, %zu mask bits differ from the CPU\n", dropped, n, differ);
    assert_int_equal(differ, 0);
    assert_true(dropped > 0 && dropped < n);
    compare("dropout", &out, TOL_BF16_OUT);
    free(c), free(g), free(x_h);
    pair_free(&x), pair_free(&out);
}

/* A CUDA backend created with GML_ATTENTION=value (NULL: unset), the
 * variable restored afterwards. */
static gml_status cuda_with_attention(const char *value, gml_backend **out) {
    const char *old = getenv("GML_ATTENTION");
    char *saved = old ? strdup(old) : NULL;
    if (value) assert_int_equal(setenv("GML_ATTENTION", value, 1), 0);
    else assert_int_equal(unsetenv("GML_ATTENTION"), 0);
    gml_status st = gml_backend_create("cuda", 0, out);
    if (saved) assert_int_equal(setenv("GML_ATTENTION", saved, 1), 0);
    else assert_int_equal(unsetenv("GML_ATTENTION"), 0);
    free(saved);
    return st;
}

static void run_attention(int B, int T, int C, int NH) {
    char what[96];
    const size_t n_qkv = (size_t)B * T * 3 * C, n_out = (size_t)B * T * C, n_lse = (size_t)B * NH * T;
    float *qkv_h = rand_bf16(n_qkv, -2.0f, 2.0f), *dout_h = rand_bf16(n_out, -1.0f, 1.0f);
    pair qkv = pair_from(qkv_h, n_qkv, 1), out = pair_poison(n_out, 1), lse = pair_poison(n_lse, 0);
    OK(g_cpu->iface->attention_forward(g_cpu, out.cpu, lse.cpu, qkv.cpu, B, T, C, NH));
    OK(g_gpu->iface->attention_forward(g_gpu, out.gpu, lse.gpu, qkv.gpu, B, T, C, NH));
    snprintf(what, sizeof what, "attention_forward out B=%d T=%d C=%d NH=%d", B, T, C, NH);
    compare(what, &out, TOL_BF16_OUT);
    snprintf(what, sizeof what, "attention_forward lse B=%d T=%d C=%d NH=%d", B, T, C, NH);
    compare(what, &lse, TOL_F32_FROM_BF16);

    /* backward from the CPU's forward results (rounded to bf16), given to both */
    float *out_h = download(&out, 0), *lse_h = download(&lse, 0);
    for (size_t i = 0; i < n_out; i++)
        out_h[i] = round_bf16(out_h[i]);
    pair_upload(&out, out_h);
    pair_upload(&lse, lse_h);
    pair dout = pair_from(dout_h, n_out, 1), dqkv = pair_poison(n_qkv, 1);
    OK(g_cpu->iface->attention_backward(g_cpu, dqkv.cpu, dout.cpu, qkv.cpu, out.cpu, lse.cpu, B, T, C, NH));
    OK(g_gpu->iface->attention_backward(g_gpu, dqkv.gpu, dout.gpu, qkv.gpu, out.gpu, lse.gpu, B, T, C, NH));
    snprintf(what, sizeof what, "attention_backward dqkv B=%d T=%d C=%d NH=%d", B, T, C, NH);
    compare(what, &dqkv, TOL_BF16_OUT);
    /* deterministic: a second backward gives the same bits (no atomics) */
    float *first = download(&dqkv, 1);
    OK(g_gpu->iface->attention_backward(g_gpu, dqkv.gpu, dout.gpu, qkv.gpu, out.gpu, lse.gpu, B, T, C, NH));
    float *again = download(&dqkv, 1);
    assert_memory_equal(first, again, n_qkv * sizeof *first);
    free(first), free(again);
    pair_free(&qkv), pair_free(&out), pair_free(&lse), pair_free(&dout), pair_free(&dqkv);
    free(qkv_h), free(dout_h), free(out_h), free(lse_h);
}

/* Every shape on both GPU paths: the default backend (cuDNN's fused
 * attention for hd 64 and 128 where this build has cuDNN) and g_own
 * (GML_ATTENTION=own: attention.cu's kernels), each against the CPU. */
static void attention_shapes(void) {
    /* scalar fallback (hd not 64 or 128) */
    run_attention(2, 37, 64, 2); /* hd 32, T not a multiple of the tile */
    run_attention(2, 37, 96, 2); /* hd 48: partial lanes */
    /* tensor-core kernels or cuDNN (hd 64 and 128; 64-row tiles, hd 128 also 32-row) */
    run_attention(1, 70, 256, 2);    /* hd 128: the largest head, T not a multiple of 64 */
    run_attention(1, 192, 512, 4);   /* hd 128, T a multiple of 64 */
    run_attention(3, 1, 64, 1);      /* hd 64, T = 1 */
    run_attention(1, 200, 256, 4);   /* hd 64, T not a multiple of 64 */
    run_attention(2, 256, 768, 12);  /* GPT-2 124M heads */
    run_attention(2, 1024, 768, 12); /* GPT-2 124M at its full context */
}

static void test_attention(void **state) {
    (void)state;
    gml_backend *dflt = g_gpu;
    for (int own = 0; own <= 1; own++) {
        printf(" %s\n", own ? "GML_ATTENTION=own (attention.cu's kernels):" : "GML_ATTENTION=cudnn (where built in):");
        rng_seed(7);
        g_gpu = own ? g_own : dflt;
        attention_shapes();
    }
    g_gpu = dflt;
    const size_t by_cudnn = gml_cuda_cudnn_attention_calls ? gml_cuda_cudnn_attention_calls(g_gpu) : 0;
    const size_t own_cudnn = gml_cuda_cudnn_attention_calls ? gml_cuda_cudnn_attention_calls(g_own) : 0;
    printf(" cuDNN ran %zu attention calls with GML_ATTENTION=cudnn, %zu with GML_ATTENTION=own\n", by_cudnn,
           own_cudnn);
    assert_int_equal(own_cudnn, 0);
#ifdef GML_HAVE_CUDNN
    /* cuDNN must take at least the GPT-2 shapes, forward and both
     * backwards (a silent fallback would cost the step its fused attention) */
    assert_true(by_cudnn >= 6);
#endif
}

/* A GML_ATTENTION value other than auto, cudnn or own is refused when the
 * backend is created, naming the variable: bad user input, exit code 2. */
static void test_attention_env_checked(void **state) {
    (void)state;
    gml_backend *be = NULL;
    gml_status st = cuda_with_attention("fast", &be);
    printf(" GML_ATTENTION=fast: %s: %s\n", gml_status_name(st), gml_error_message());
    assert_int_equal(st, GML_ERR_BAD_INPUT);
    assert_int_equal(gml_status_exit_code(st), 2);
    assert_null(be);
    assert_non_null(strstr(gml_error_message(), "GML_ATTENTION=fast"));
}

/* GML_ATTENTION unset (auto): cuDNN takes the forward of a training-sized
 * call (GPT-2 124M at 16 x 1024: B * NH * ceil(T / 128) = 1536 tiles, at
 * least two waves on any GPU up to 768 SMs) and leaves a generation-sized
 * one (B = 1, T = 1024: 96 tiles, fewer than two per SM on a GPU with 48 or
 * more) to our kernels; the big call gives the bits of g_gpu's forward
 * (GML_ATTENTION=cudnn: the same plan). */
static void test_attention_auto(void **state) {
    (void)state;
    gml_backend *be = NULL;
    OK(cuda_with_attention(NULL, &be));
    const int shapes[2][4] = {{1, 1024, 768, 12}, {16, 1024, 768, 12}}; /* B, T, C, NH */
    size_t calls[2];
    for (int i = 0; i < 2; i++) {
        const int B = shapes[i][0], T = shapes[i][1], C = shapes[i][2], NH = shapes[i][3];
        const size_t n_qkv = (size_t)B * T * 3 * C, n_out = (size_t)B * T * C, n_lse = (size_t)B * NH * T;
        void *qkv = NULL, *out = NULL, *lse = NULL, *out2 = NULL, *lse2 = NULL;
        OK(be->iface->alloc(be, &qkv, n_qkv * 2));
        OK(be->iface->alloc(be, &out, n_out * 2));
        OK(be->iface->alloc(be, &lse, n_lse * 4));
        OK(g_gpu->iface->alloc(g_gpu, &out2, n_out * 2));
        OK(g_gpu->iface->alloc(g_gpu, &lse2, n_lse * 4));
        rng_seed(11);
        float *h = rand_bf16(n_qkv, -2.0f, 2.0f);
        OK(be->iface->upload_f32(be, qkv, GML_DTYPE_BF16, h, n_qkv));
        OK(be->iface->attention_forward(be, out, lse, qkv, B, T, C, NH));
        OK(be->iface->synchronize(be));
        calls[i] = gml_cuda_cudnn_attention_calls ? gml_cuda_cudnn_attention_calls(be) : 0;
        printf(" auto, B=%d T=%d NH=%d: cuDNN calls so far %zu\n", B, T, NH, calls[i]);
        if (i == 1 && calls[1] == 1) { /* same plan as GML_ATTENTION=cudnn: same bits */
            OK(g_gpu->iface->attention_forward(g_gpu, out2, lse2, qkv, B, T, C, NH));
            OK(g_gpu->iface->synchronize(g_gpu));
            float *a = malloc(n_out * sizeof *a), *b = malloc(n_out * sizeof *b);
            assert_non_null(a);
            assert_non_null(b);
            OK(be->iface->download_f32(be, a, out, GML_DTYPE_BF16, n_out));
            OK(g_gpu->iface->download_f32(g_gpu, b, out2, GML_DTYPE_BF16, n_out));
            assert_memory_equal(a, b, n_out * sizeof *a);
            free(a), free(b);
        }
        free(h);
        be->iface->free(be, qkv), be->iface->free(be, out), be->iface->free(be, lse);
        g_gpu->iface->free(g_gpu, out2), g_gpu->iface->free(g_gpu, lse2);
    }
    assert_int_equal(calls[0], 0);
#ifdef GML_HAVE_CUDNN
    assert_int_equal(calls[1], 1);
#endif
    gml_backend_destroy(be);
}

static void run_classifier(int N, int V, int Vp) {
    char what[96];
    const size_t n = (size_t)N * Vp;
    float *logits_h = rand_bf16(n, -4.0f, 4.0f);
    for (int i = 0; i < N; i++)
        for (int c = V; c < Vp; c++)
            logits_h[(size_t)i * Vp + c] = 30.0f; /* padding must be ignored */
    int32_t *tgt = malloc((size_t)N * sizeof *tgt);
    assert_non_null(tgt);
    for (int i = 0; i < N; i++)
        tgt[i] = (int32_t)(rng_u32() % (uint32_t)V);
    tgt[0] = 0;
    tgt[N - 1] = V - 1;
    pair targets = pair_i32(tgt, (size_t)N), logits = pair_from(logits_h, n, 1);
    pair losses = pair_poison((size_t)N, 0);

    /* evaluation: dscale = 0 leaves the logits as they were */
    OK(g_cpu->iface->classifier_forward_backward(g_cpu, losses.cpu, logits.cpu, targets.cpu, 0.0f, N, V, Vp));
    OK(g_gpu->iface->classifier_forward_backward(g_gpu, losses.gpu, logits.gpu, targets.gpu, 0.0f, N, V, Vp));
    snprintf(what, sizeof what, "classifier losses (eval) N=%d V=%d Vp=%d", N, V, Vp);
    compare(what, &losses, TOL_F32_FROM_BF16);
    float *after = download(&logits, 1);
    assert_memory_equal(after, logits_h, n * sizeof *after);
    free(after);

    /* training: gradient in place */
    const float dscale = 1.0f / (float)N;
    pair_free(&losses);
    losses = pair_poison((size_t)N, 0);
    OK(g_cpu->iface->classifier_forward_backward(g_cpu, losses.cpu, logits.cpu, targets.cpu, dscale, N, V, Vp));
    OK(g_gpu->iface->classifier_forward_backward(g_gpu, losses.gpu, logits.gpu, targets.gpu, dscale, N, V, Vp));
    snprintf(what, sizeof what, "classifier losses (train) N=%d V=%d Vp=%d", N, V, Vp);
    compare(what, &losses, TOL_F32_FROM_BF16);
    snprintf(what, sizeof what, "classifier dlogits N=%d V=%d Vp=%d", N, V, Vp);
    compare(what, &logits, TOL_BF16_OUT);
    after = download(&logits, 1);
    for (int i = 0; i < N; i++)
        for (int c = V; c < Vp; c++)
            if (after[(size_t)i * Vp + c] != 0.0f)
                fail_msg("dlogits[%d,%d] (padding) = %g, want 0", i, c, after[(size_t)i * Vp + c]);
    /* a row of the gradient sums to 0 (softmax sums to 1, onehot too) */
    for (int i = 0; i < N; i++) {
        double s = 0.0;
        for (int c = 0; c < V; c++)
            s += after[(size_t)i * Vp + c];
        if (fabs(s) > 0.05 * dscale) fail_msg("dlogits row %d sums to %g, want ~0", i, s);
    }
    free(after);
    pair_free(&targets), pair_free(&logits), pair_free(&losses);
    free(logits_h), free(tgt);
}

static void test_classifier(void **state) {
    (void)state;
    rng_seed(8);
    run_classifier(33, 1000, 1024);
    run_classifier(64, 50257, 50304);
    run_classifier(9, 20, 24);     /* fewer 8-column groups than threads */
    run_classifier(17, 997, 1001); /* Vp % 8 != 0: the scalar kernel */
}

static void run_reduce(size_t n) {
    char what[96];
    float *x_pos = rand_f32(n, 0.0f, 1.0f), *x_any = rand_f32(n, -1.0f, 1.0f);
    const float acc0 = 3.0f;
    pair xp = pair_from(x_pos, n, 0), xa = pair_from(x_any, n, 0);
    pair s = pair_from(&acc0, 1, 0), q = pair_from(&acc0, 1, 0);
    OK(g_cpu->iface->sum_accumulate(g_cpu, s.cpu, xp.cpu, n));
    OK(g_gpu->iface->sum_accumulate(g_gpu, s.gpu, xp.gpu, n));
    OK(g_cpu->iface->sumsq_accumulate(g_cpu, q.cpu, xa.cpu, n));
    OK(g_gpu->iface->sumsq_accumulate(g_gpu, q.gpu, xa.gpu, n));
    snprintf(what, sizeof what, "sum_accumulate n=%zu", n);
    compare(what, &s, TOL_F32_REDUCE);
    snprintf(what, sizeof what, "sumsq_accumulate n=%zu", n);
    compare(what, &q, TOL_F32_REDUCE);
    /* independent check of the GPU against a double sum on the host */
    double ds = acc0, dq = acc0;
    for (size_t i = 0; i < n; i++) {
        ds += x_pos[i];
        dq += (double)x_any[i] * x_any[i];
    }
    float *gs = download(&s, 1), *gq = download(&q, 1);
    if (fabs(gs[0] - ds) > TOL_F32_REDUCE * fabs(ds)) fail_msg("sum: gpu %g, host %g", gs[0], ds);
    if (fabs(gq[0] - dq) > TOL_F32_REDUCE * fabs(dq)) fail_msg("sumsq: gpu %g, host %g", gq[0], dq);
    free(gs), free(gq);
    pair_free(&xp), pair_free(&xa), pair_free(&s), pair_free(&q);
    free(x_pos), free(x_any);
}

static void test_reductions(void **state) {
    (void)state;
    rng_seed(9);
    run_reduce(1);
    run_reduce(1003);
    run_reduce(3000017); /* more than RED_MAX_BLOCKS blocks' worth */
}

static void test_adamw(void **state) {
    (void)state;
    rng_seed(10);
    const size_t n = 100003;
    float *p_h = rand_f32(n, -1.0f, 1.0f), *g_h = rand_f32(n, -2.0f, 2.0f);
    float *m_h = rand_f32(n, -0.1f, 0.1f), *v_h = rand_f32(n, 0.0f, 0.01f);
    pair p = pair_from(p_h, n, 0), g = pair_from(g_h, n, 0), m = pair_from(m_h, n, 0), v = pair_from(v_h, n, 0);
    pair pa = pair_poison(n, 1);
    for (int t = 1; t <= 3; t++) {
        OK(g_cpu->iface->adamw_update(g_cpu, p.cpu, pa.cpu, g.cpu, m.cpu, v.cpu, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f,
                                      0.5f, t));
        OK(g_gpu->iface->adamw_update(g_gpu, p.gpu, pa.gpu, g.gpu, m.gpu, v.gpu, n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f,
                                      0.5f, t));
    }
    /* and once without the act copy */
    OK(g_cpu->iface->adamw_update(g_cpu, p.cpu, NULL, g.cpu, m.cpu, v.cpu, n, 3e-4f, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f,
                                  4));
    OK(g_gpu->iface->adamw_update(g_gpu, p.gpu, NULL, g.gpu, m.gpu, v.gpu, n, 3e-4f, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f,
                                  4));
    compare("adamw param", &p, TOL_F32_ADAMW);
    compare("adamw m", &m, TOL_F32_ADAMW);
    compare("adamw v", &v, TOL_F32_ADAMW);
    compare("adamw param_act (after step 3)", &pa, TOL_BF16_OUT);
    pair_free(&p), pair_free(&g), pair_free(&m), pair_free(&v), pair_free(&pa);
    free(p_h), free(g_h), free(m_h), free(v_h);
}

/* Multi-tensor AdamW: a table with gaps between pieces, param and state
 * offsets that differ, an empty piece, a piece of 100k elements (many
 * blocks) and small ones (several pieces in one block). */
static void test_adamw_pieces(void **state) {
    (void)state;
    rng_seed(13);
    const gml_adamw_piece tab[5] = {
        {.param_off = 5, .state_off = 0, .numel = 100003, .flat_off = 0, .decay = 1},
        {.param_off = 100010, .state_off = 100003, .numel = 768, .flat_off = 100003, .decay = 0},
        {.param_off = 100778, .state_off = 100771, .numel = 0, .flat_off = 100771, .decay = 1},
        {.param_off = 100778, .state_off = 100775, .numel = 3, .flat_off = 100771, .decay = 1},
        {.param_off = 100800, .state_off = 100778, .numel = 2305, .flat_off = 100774, .decay = 0},
    };
    const size_t np = 103200, ns = 103100, total = 103079;
    float *p_h = rand_f32(np, -1.0f, 1.0f), *g_h = rand_f32(ns, -2.0f, 2.0f);
    float *m_h = rand_f32(ns, -0.1f, 0.1f), *v_h = rand_f32(ns, 0.0f, 0.01f), *pa_h = rand_bf16(np, -1.0f, 1.0f);
    pair p = pair_from(p_h, np, 0), g = pair_from(g_h, ns, 0), m = pair_from(m_h, ns, 0), v = pair_from(v_h, ns, 0);
    pair pa = pair_from(pa_h, np, 1);
    void *tab_cpu = NULL, *tab_gpu = NULL;
    OK(g_cpu->iface->alloc(g_cpu, &tab_cpu, sizeof tab));
    OK(g_gpu->iface->alloc(g_gpu, &tab_gpu, sizeof tab));
    OK(g_cpu->iface->memcpy_h2d(g_cpu, tab_cpu, tab, sizeof tab));
    OK(g_gpu->iface->memcpy_h2d(g_gpu, tab_gpu, tab, sizeof tab));
    for (int t = 1; t <= 3; t++) {
        OK(g_cpu->iface->adamw_update_pieces(g_cpu, p.cpu, pa.cpu, g.cpu, m.cpu, v.cpu, tab_cpu, 5, total, 1e-3f, 0.9f,
                                             0.95f, 1e-8f, 0.1f, 0.5f, t));
        OK(g_gpu->iface->adamw_update_pieces(g_gpu, p.gpu, pa.gpu, g.gpu, m.gpu, v.gpu, tab_gpu, 5, total, 1e-3f, 0.9f,
                                             0.95f, 1e-8f, 0.1f, 0.5f, t));
    }
    compare("adamw_update_pieces param", &p, TOL_F32_ADAMW);
    compare("adamw_update_pieces m", &m, TOL_F32_ADAMW);
    compare("adamw_update_pieces v", &v, TOL_F32_ADAMW);
    compare("adamw_update_pieces param_act", &pa, TOL_BF16_OUT);
    /* gaps stay as they were on the GPU: params [0,5) [100003+5, 100010) ..., state tail */
    float *gp_ = download(&p, 1), *gm = download(&m, 1);
    for (size_t i = 0; i < 5; i++)
        assert_memory_equal(&gp_[i], &p_h[i], 4);
    for (size_t i = 100781; i < 100800; i++)
        assert_memory_equal(&gp_[i], &p_h[i], 4);
    for (size_t i = 103105; i < np; i++)
        assert_memory_equal(&gp_[i], &p_h[i], 4);
    for (size_t i = 103083; i < ns; i++)
        assert_memory_equal(&gm[i], &m_h[i], 4);
    free(gp_), free(gm);
    g_cpu->iface->free(g_cpu, tab_cpu);
    g_gpu->iface->free(g_gpu, tab_gpu);
    pair_free(&p), pair_free(&g), pair_free(&m), pair_free(&v), pair_free(&pa);
    free(p_h), free(g_h), free(m_h), free(v_h), free(pa_h);
}

static int group_setup(void **state) {
    (void)state;
    gml_status st = gml_backend_create("cpu", 0, &g_cpu);
    if (st != GML_OK) {
        fprintf(stderr, "cpu backend: %s\n", gml_error_message());
        return -1;
    }
    st = cuda_with_attention("cudnn", &g_gpu);
    if (st != GML_OK) {
        fprintf(stderr, "cuda backend: %s\n", gml_error_message());
        return -1;
    }
    st = cuda_with_attention("own", &g_own);
    if (st != GML_OK) {
        fprintf(stderr, "cuda backend with GML_ATTENTION=own: %s\n", gml_error_message());
        return -1;
    }
    if (g_gpu->act_dtype != GML_DTYPE_BF16) {
        fprintf(stderr, "cuda backend act dtype is %s, want bf16\n", gml_dtype_name(g_gpu->act_dtype));
        return -1;
    }
    printf("cpu: %s | cuda: %s\n", g_cpu->device_name, g_gpu->device_name);
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    gml_backend_destroy(g_own);
    gml_backend_destroy(g_gpu);
    gml_backend_destroy(g_cpu);
    return 0;
}

int main(void) {
    if (gml_backend_cuda_device_count() == 0) {
        printf("SKIP: no CUDA device\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memory_and_transfers),
        cmocka_unit_test(test_cast),
        cmocka_unit_test(test_encoder),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_gelu_residual),
        cmocka_unit_test(test_matmul_gelu),
        cmocka_unit_test(test_residual_layernorm),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attention_env_checked),
        cmocka_unit_test(test_attention_auto),
        cmocka_unit_test(test_classifier),
        cmocka_unit_test(test_reductions),
        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_adamw_pieces),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
