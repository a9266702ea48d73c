/* attention_cudnn.cu — causal attention, forward and backward, through
 * cuDNN's fused flash-attention engines, for the layout of attention.cu:
 * qkv (B,T,3C) bf16 (q | k | v per position, head h at channels
 * [h*hd, (h+1)*hd)), out (B,T,C) bf16, lse (B,NH,T) f32 the natural
 * log-sum-exp of the scaled scores, dqkv (B,T,3C) bf16 written whole. Every
 * tensor is used in place through strides: no copies, no transposes.
 *
 * cuDNN is driven through its backend C API: operation graphs of matmul,
 * pointwise, reduction and reshape nodes in the shape cuDNN recognises as
 * scaled dot-product attention (the lowering cudnn-frontend uses for
 * cuDNN 9.x before the single SDPA operation):
 *  - forward: S = Q K^T, S * scale, causal mask by row/column index,
 *    softmax with its statistics (lse = max + log sum), O = P V;
 *  - backward: D = rowsum(dO O) into a buffer we own, P = exp(scale S -
 *    lse) masked, dV = P^T dO, dS = P (dO V^T - D) scale, dK = dS^T Q,
 *    dQ = dS K. dQ is written by its matmul (no f32 accumulator filled with
 *    atomics, which cuDNN would take as the cue for its faster
 *    non-deterministic engine), so the result is the same bit for bit on
 *    every run, as bit-for-bit resume needs. Its engine keeps dP in a bf16
 *    workspace of B * NH * T^2 * 2 bytes (384 MiB for GPT-2 124M at 16 x
 *    1024); above CUDNN_MAX_WORKSPACE the call goes to attention.cu.
 * The heuristics' engines are tried in their order and the first whose
 * execution plan finalizes is kept, one plan per (graph, shape), built on
 * first use, which is never while a CUDA graph records (the first
 * micro-step runs outside). Workspaces come from the backend's scratch.
 *
 * Owns: the cuDNN handle (bound to the context's stream) and the cached
 * plans with their descriptors; gml_cudnn_release frees them. Selection
 * (GML_ATTENTION, read when the backend is created, backend_cuda.cu): auto
 * (the default) gives cuDNN the calls with at least two waves of 128-query
 * tiles (B * NH * ceil(T / 128) >= 2 * SMs: training batches, not
 * generation), cudnn every call it accepts, own none. cuDNN accepts hd 64
 * and 128 with 16-byte aligned tensors; a shape it declines goes to
 * attention.cu, said once on stderr. At most CUDNN_MAX_PLANS plans are
 * built; later shapes run on attention.cu's kernels.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/backend_cuda.h"
#include "kernels/cuda/cuda_common.cuh"

#ifdef GML_HAVE_CUDNN

#include <cudnn.h>

#define CUDNN_MAX_PLANS 16
#define CUDNN_MAX_DESCS 128
#define CUDNN_MAX_CFGS  8
/* The most workspace a plan may ask for (the deterministic backward's bf16
 * dP: B * NH * T^2 * 2 bytes, 384 MiB for GPT-2 124M at 16 x 1024); above
 * it, attention.cu's kernels run the call. It lives in the backend's
 * scratch, shared with every other op. */
#define CUDNN_MAX_WORKSPACE ((size_t)1 << 30)

/* tensor unique ids of the forward graph's real and by-value tensors */
enum { UID_Q = 1, UID_K, UID_V, UID_O, UID_STATS, UID_SCALE, UID_NEG };

enum { ATT_FWD, ATT_BWD }; /* the graph a plan runs */

typedef struct {
    int kind;          /* ATT_FWD or ATT_BWD */
    int B, T, C, NH;   /* the shape */
    int ok;            /* 1: plan usable; 0: cuDNN declined (use attention.cu) */
    float scale;       /* by-value attention scale */
    float neg;         /* by-value masked score */
    float one;         /* by-value 1 (the backward's D = rowsum(dO O) * 1) */
    int64_t workspace; /* bytes the plan needs */
    cudnnBackendDescriptor_t plan;
    cudnnBackendDescriptor_t descs[CUDNN_MAX_DESCS]; /* every descriptor the plan was built from */
    int n_descs;
} cudnn_plan;

struct gml_cudnn_state {
    int disabled;  /* GML_ATTENTION=own, or cuDNN unusable here */
    size_t calls;  /* executions so far (gml_cuda_cudnn_attention_calls) */
    int full_said; /* the note that no more plans are built was printed */
    cudnnHandle_t handle;
    cudnn_plan plans[CUDNN_MAX_PLANS];
    int n_plans;
};

/* ---- descriptor building with one sticky error ---- */

typedef struct {
    cudnn_plan *p;
    cudnnStatus_t err; /* first failure */
    const char *what;  /* its call */
    int line;
} builder;

#define B_FAIL(b, s, w)                                                                                                \
    do {                                                                                                               \
        if ((b)->err == CUDNN_STATUS_SUCCESS) {                                                                        \
            (b)->err = (s);                                                                                            \
            (b)->what = (w);                                                                                           \
            (b)->line = __LINE__;                                                                                      \
        }                                                                                                              \
    } while (0)

static cudnnBackendDescriptor_t mk(builder *b, cudnnBackendDescriptorType_t type) {
    cudnnBackendDescriptor_t d = NULL;
    if (b->err != CUDNN_STATUS_SUCCESS) return NULL;
    if (b->p->n_descs >= CUDNN_MAX_DESCS) {
        B_FAIL(b, CUDNN_STATUS_INTERNAL_ERROR, "too many descriptors");
        return NULL;
    }
    cudnnStatus_t s = cudnnBackendCreateDescriptor(type, &d);
    if (s != CUDNN_STATUS_SUCCESS) {
        B_FAIL(b, s, "cudnnBackendCreateDescriptor");
        return NULL;
    }
    b->p->descs[b->p->n_descs++] = d;
    return d;
}

static void set(builder *b, cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
                cudnnBackendAttributeType_t type, int64_t count, const void *v) {
    if (b->err != CUDNN_STATUS_SUCCESS) return;
    cudnnStatus_t s = cudnnBackendSetAttribute(d, name, type, count, v);
    if (s != CUDNN_STATUS_SUCCESS) B_FAIL(b, s, "cudnnBackendSetAttribute");
}

static void fin(builder *b, cudnnBackendDescriptor_t d, const char *what) {
    if (b->err != CUDNN_STATUS_SUCCESS) return;
    cudnnStatus_t s = cudnnBackendFinalize(d);
    if (s != CUDNN_STATUS_SUCCESS) B_FAIL(b, s, what);
}

/* A 4-d tensor; virt: an intermediate cuDNN never writes to memory; by_value:
 * a scalar whose host pointer goes into the variant pack. */
static cudnnBackendDescriptor_t tensor(builder *b, int64_t uid, cudnnDataType_t dt, const int64_t dims[4],
                                       const int64_t strides[4], bool virt, bool by_value, const char *what) {
    cudnnBackendDescriptor_t t = mk(b, CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const int64_t align = 16;
    set(b, t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt);
    set(b, t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims);
    set(b, t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides);
    set(b, t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    set(b, t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align);
    set(b, t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &virt);
    if (by_value) set(b, t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value);
    fin(b, t, what);
    return t;
}

/* y = x (op) [b] [t]: a pointwise node in f32 (math_prec) */
static cudnnBackendDescriptor_t pointwise(builder *b, cudnnPointwiseMode_t mode, cudnnDataType_t prec,
                                          cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t bb,
                                          cudnnBackendDescriptor_t t, cudnnBackendDescriptor_t y, int64_t axis,
                                          const char *what) {
    cudnnBackendDescriptor_t pw = mk(b, CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    set(b, pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    set(b, pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec);
    if (axis >= 0) set(b, pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
    fin(b, pw, what);
    cudnnBackendDescriptor_t op = mk(b, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    set(b, op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw);
    set(b, op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    if (bb) set(b, op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &bb);
    if (t) set(b, op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t);
    set(b, op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    fin(b, op, what);
    return op;
}

static cudnnBackendDescriptor_t matmul(builder *b, cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t bb,
                                       cudnnBackendDescriptor_t c, const char *what) {
    cudnnBackendDescriptor_t mm = mk(b, CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    set(b, mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32);
    fin(b, mm, what);
    cudnnBackendDescriptor_t op = mk(b, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    set(b, op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a);
    set(b, op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &bb);
    set(b, op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c);
    set(b, op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm);
    fin(b, op, what);
    return op;
}

static cudnnBackendDescriptor_t reduction(builder *b, cudnnReduceTensorOp_t mode, cudnnBackendDescriptor_t x,
                                          cudnnBackendDescriptor_t y, const char *what) {
    cudnnBackendDescriptor_t rd = mk(b, CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    set(b, rd, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode);
    set(b, rd, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32);
    fin(b, rd, what);
    cudnnBackendDescriptor_t op = mk(b, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    set(b, op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    set(b, op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    set(b, op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &rd);
    fin(b, op, what);
    return op;
}

static void build_plan(builder *b, cudnnHandle_t handle, cudnnBackendDescriptor_t *ops, int n);

static cudnnBackendDescriptor_t reshape(builder *b, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y,
                                        const char *what) {
    cudnnBackendDescriptor_t op = mk(b, CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
    set(b, op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    set(b, op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    fin(b, op, what);
    return op;
}

/* ---- what both graphs share ---- */

/* dims / strides of the (B, NH, ...) views both graphs use */
typedef struct {
    int64_t d_q[4], s_q[4];   /* Q, V, dQ, dK, dV: (B, NH, T, hd) views of qkv / dqkv */
    int64_t d_kt[4], s_kt[4]; /* K^T, V^T: (B, NH, hd, T) views of qkv */
    int64_t s_o[4];           /* O, dO: (B, NH, T, hd) views of (B, T, C) */
    int64_t d_st[4], s_st[4]; /* a value per row: stats, D, row max / sum (B, NH, T, 1) */
    int64_t d_s[4], s_s[4];   /* scores (B, NH, T, T), virtual */
} att_layout;

static att_layout layout_of(int B, int T, int C, int NH) {
    const int64_t hd = C / NH, C3 = 3 * (int64_t)C, T_ = T;
    const att_layout l = {{B, NH, T_, hd},      {T_ * C3, hd, C3, 1}, {B, NH, hd, T_},
                          {T_ * C3, hd, 1, C3}, {T_ * C, hd, C, 1},   {B, NH, T_, 1},
                          {NH * T_, T_, 1, 1},  {B, NH, T_, T_},      {NH * T_ * T_, T_ * T_, T_, 1}};
    return l;
}

/* a by-value f32 scalar (4-d like the tensors it meets: cuDNN requires equal ranks) */
static cudnnBackendDescriptor_t scalar(builder *b, int64_t uid, const char *what) {
    const int64_t one[4] = {1, 1, 1, 1};
    return tensor(b, uid, CUDNN_DATA_FLOAT, one, one, false, true, what);
}

/* Appends the causal mask to ops[*n]: the scores x where row >= column, the
 * by-value masked value neg elsewhere; returns the masked scores. */
static cudnnBackendDescriptor_t causal_mask(builder *b, const att_layout *l, int64_t *vid, cudnnBackendDescriptor_t x,
                                            cudnnBackendDescriptor_t neg, cudnnBackendDescriptor_t *ops, int *n) {
    const cudnnDataType_t I32 = CUDNN_DATA_INT32, BOOL = CUDNN_DATA_BOOLEAN;
    cudnnBackendDescriptor_t row = tensor(b, (*vid)++, I32, l->d_s, l->s_s, true, false, "row index");
    ops[(*n)++] = pointwise(b, CUDNN_POINTWISE_GEN_INDEX, I32, x, NULL, NULL, row, 2, "row index");
    cudnnBackendDescriptor_t col = tensor(b, (*vid)++, I32, l->d_s, l->s_s, true, false, "column index");
    ops[(*n)++] = pointwise(b, CUDNN_POINTWISE_GEN_INDEX, I32, x, NULL, NULL, col, 3, "column index");
    cudnnBackendDescriptor_t keep = tensor(b, (*vid)++, BOOL, l->d_s, l->s_s, true, false, "causal mask");
    ops[(*n)++] = pointwise(b, CUDNN_POINTWISE_CMP_GE, BOOL, row, col, NULL, keep, -1, "row >= column");
    cudnnBackendDescriptor_t y = tensor(b, (*vid)++, CUDNN_DATA_FLOAT, l->d_s, l->s_s, true, false, "masked");
    ops[(*n)++] = pointwise(b, CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, x, neg, keep, y, -1, "mask");
    return y;
}

/* ---- the forward graph ---- */

static void build_forward(builder *b, cudnnHandle_t handle, int B, int T, int C, int NH) {
    const att_layout l = layout_of(B, T, C, NH);
    const cudnnDataType_t BF = CUDNN_DATA_BFLOAT16, F32 = CUDNN_DATA_FLOAT;
    int64_t vid = 100; /* virtual tensor ids */
    const int64_t *d_q = l.d_q, *s_q = l.s_q, *d_st = l.d_st, *s_st = l.s_st, *d_s = l.d_s, *s_s = l.s_s;

    cudnnBackendDescriptor_t q = tensor(b, UID_Q, BF, d_q, s_q, false, false, "Q");
    cudnnBackendDescriptor_t kt = tensor(b, UID_K, BF, l.d_kt, l.s_kt, false, false, "K^T");
    cudnnBackendDescriptor_t v = tensor(b, UID_V, BF, d_q, s_q, false, false, "V");
    cudnnBackendDescriptor_t o = tensor(b, UID_O, BF, d_q, l.s_o, false, false, "O");
    cudnnBackendDescriptor_t stats = tensor(b, UID_STATS, F32, d_st, s_st, false, false, "stats");
    cudnnBackendDescriptor_t scale = scalar(b, UID_SCALE, "scale");
    cudnnBackendDescriptor_t neg = scalar(b, UID_NEG, "masked value");

    cudnnBackendDescriptor_t ops[16];
    int n = 0;
    /* S = Q K^T; S *= scale; causal */
    cudnnBackendDescriptor_t s0 = tensor(b, vid++, F32, d_s, s_s, true, false, "S");
    ops[n++] = matmul(b, q, kt, s0, "matmul Q K^T");
    cudnnBackendDescriptor_t s1 = tensor(b, vid++, F32, d_s, s_s, true, false, "S scaled");
    ops[n++] = pointwise(b, CUDNN_POINTWISE_MUL, F32, s0, scale, NULL, s1, -1, "scale");
    cudnnBackendDescriptor_t s2 = causal_mask(b, &l, &vid, s1, neg, ops, &n);
    /* softmax with statistics: m = max S, e = exp(S - m), z = sum e,
     * stats = m + log z, P = e / z */
    cudnnBackendDescriptor_t m = tensor(b, vid++, F32, d_st, s_st, true, false, "row max");
    ops[n++] = reduction(b, CUDNN_REDUCE_TENSOR_MAX, s2, m, "row max");
    cudnnBackendDescriptor_t sub = tensor(b, vid++, F32, d_s, s_s, true, false, "S - max");
    ops[n++] = pointwise(b, CUDNN_POINTWISE_SUB, F32, s2, m, NULL, sub, -1, "S - max");
    cudnnBackendDescriptor_t e = tensor(b, vid++, F32, d_s, s_s, true, false, "exp");
    ops[n++] = pointwise(b, CUDNN_POINTWISE_EXP, F32, sub, NULL, NULL, e, -1, "exp");
    cudnnBackendDescriptor_t z = tensor(b, vid++, F32, d_st, s_st, true, false, "row sum");
    ops[n++] = reduction(b, CUDNN_REDUCE_TENSOR_ADD, e, z, "row sum");
    cudnnBackendDescriptor_t logz = tensor(b, vid++, F32, d_st, s_st, true, false, "log row sum");
    ops[n++] = pointwise(b, CUDNN_POINTWISE_LOG, F32, z, NULL, NULL, logz, -1, "log");
    ops[n++] = pointwise(b, CUDNN_POINTWISE_ADD, F32, m, logz, NULL, stats, -1, "stats");
    /* P in bf16: the second matmul takes its A operand in the i/o type */
    cudnnBackendDescriptor_t p = tensor(b, vid++, BF, d_s, s_s, true, false, "P");
    ops[n++] = pointwise(b, CUDNN_POINTWISE_DIV, F32, e, z, NULL, p, -1, "P");
    /* O = P V */
    ops[n++] = matmul(b, p, v, o, "matmul P V");
    build_plan(b, handle, ops, n);
}

/* The operation graph of ops[0..n), the heuristics' engine configurations
 * in their order, and the first whose execution plan finalizes: b->p->plan
 * and its workspace size. */
static void build_plan(builder *b, cudnnHandle_t handle, cudnnBackendDescriptor_t *ops, int n) {
    cudnnBackendDescriptor_t graph = mk(b, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    set(b, graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, n, ops);
    set(b, graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
    fin(b, graph, "operation graph");

    /* the heuristics' ranked engine configurations; the first that builds */
    cudnnBackendDescriptor_t heur = mk(b, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    set(b, heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph);
    set(b, heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    fin(b, heur, "engine heuristics");
    cudnnBackendDescriptor_t cfgs[CUDNN_MAX_CFGS];
    for (int i = 0; i < CUDNN_MAX_CFGS; i++)
        cfgs[i] = mk(b, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    int64_t n_cfgs = 0;
    if (b->err == CUDNN_STATUS_SUCCESS) {
        cudnnStatus_t s = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                                   CUDNN_MAX_CFGS, &n_cfgs, cfgs);
        if (s != CUDNN_STATUS_SUCCESS)
            B_FAIL(b, s, "engine heuristics: results");
        else if (n_cfgs == 0)
            B_FAIL(b, CUDNN_STATUS_NOT_SUPPORTED, "engine heuristics: no engine for the graph");
    }
    cudnnStatus_t last = CUDNN_STATUS_NOT_SUPPORTED;
    for (int64_t i = 0; i < n_cfgs && b->err == CUDNN_STATUS_SUCCESS && !b->p->plan; i++) {
        cudnnBackendDescriptor_t plan = mk(b, CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
        set(b, plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
        set(b, plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfgs[i]);
        if (b->err != CUDNN_STATUS_SUCCESS) break;
        last = cudnnBackendFinalize(plan);
        if (last == CUDNN_STATUS_SUCCESS) b->p->plan = plan; /* else: try the next engine */
    }
    if (b->err == CUDNN_STATUS_SUCCESS && !b->p->plan) B_FAIL(b, last, "execution plan: no engine configuration built");
    if (b->err == CUDNN_STATUS_SUCCESS) {
        int64_t got = 0;
        cudnnStatus_t s = cudnnBackendGetAttribute(b->p->plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                                   CUDNN_TYPE_INT64, 1, &got, &b->p->workspace);
        if (s != CUDNN_STATUS_SUCCESS) B_FAIL(b, s, "execution plan: workspace size");
    }
}

/* ---- the backward graph (deterministic: dQ is written by its matmul, no
 * f32 accumulator that cuDNN would fill with atomics) ---- */

enum { BW_Q = 1, BW_KT, BW_VT, BW_O, BW_DO, BW_STATS, BW_DQ, BW_DK, BW_DV, BW_SUM, BW_SCALE, BW_ONE, BW_NEG };

static void build_backward(builder *b, cudnnHandle_t handle, int B, int T, int C, int NH) {
    const att_layout l = layout_of(B, T, C, NH);
    const cudnnDataType_t BF = CUDNN_DATA_BFLOAT16, F32 = CUDNN_DATA_FLOAT;
    int64_t vid = 100;
    const int64_t *d_q = l.d_q, *s_q = l.s_q, *d_st = l.d_st, *s_st = l.s_st, *d_s = l.d_s, *s_s = l.s_s;
    const int64_t hd = C / NH, T_ = T;
    const int64_t s_oo[4] = {NH * T_ * hd, T_ * hd, NH * hd, 1}; /* dO * O (virtual) */
    const int64_t s_st_t[4] = {NH * T_ * T_, T_ * T_, 1, T_};    /* the transposed view of an S-shaped tensor */

    cudnnBackendDescriptor_t q = tensor(b, BW_Q, BF, d_q, s_q, false, false, "Q");
    cudnnBackendDescriptor_t kt = tensor(b, BW_KT, BF, l.d_kt, l.s_kt, false, false, "K^T");
    cudnnBackendDescriptor_t vt = tensor(b, BW_VT, BF, l.d_kt, l.s_kt, false, false, "V^T");
    cudnnBackendDescriptor_t o = tensor(b, BW_O, BF, d_q, l.s_o, false, false, "O");
    cudnnBackendDescriptor_t dout = tensor(b, BW_DO, BF, d_q, l.s_o, false, false, "dO");
    cudnnBackendDescriptor_t stats = tensor(b, BW_STATS, F32, d_st, s_st, false, false, "stats");
    cudnnBackendDescriptor_t dq = tensor(b, BW_DQ, BF, d_q, s_q, false, false, "dQ");
    cudnnBackendDescriptor_t dk = tensor(b, BW_DK, BF, d_q, s_q, false, false, "dK");
    cudnnBackendDescriptor_t dv = tensor(b, BW_DV, BF, d_q, s_q, false, false, "dV");
    cudnnBackendDescriptor_t sum = tensor(b, BW_SUM, F32, d_st, s_st, false, false, "rowsum(dO O)");
    cudnnBackendDescriptor_t scale = scalar(b, BW_SCALE, "scale");
    cudnnBackendDescriptor_t one = scalar(b, BW_ONE, "one");
    cudnnBackendDescriptor_t neg = scalar(b, BW_NEG, "masked value");

    cudnnBackendDescriptor_t ops[24];
    int n = 0;
    /* D = rowsum(dO * O) (FlashAttention's D), written to a buffer we own */
    cudnnBackendDescriptor_t doo = tensor(b, vid++, F32, d_q, s_oo, true, false, "dO O");
    ops[n++] = pointwise(b, CUDNN_POINTWISE_MUL, F32, dout, o, NULL, doo, -1, "dO O");
    cudnnBackendDescriptor_t r1 = tensor(b, vid++, F32, d_st, s_st, true, false, "rowsum");
    ops[n++] = reduction(b, CUDNN_REDUCE_TENSOR_ADD, doo, r1, "rowsum");
    ops[n++] = pointwise(b, CUDNN_POINTWISE_MUL, F32, r1, one, NULL, sum, -1, "rowsum * 1");
    /* P = exp(scale Q K^T - stats), causal */
    cudnnBackendDescriptor_t s0 = tensor(b, vid++, F32, d_s, s_s, true, false, "S");
    ops[n++] = matmul(b, q, kt, s0, "matmul Q K^T");
    cudnnBackendDescriptor_t s1 = tensor(b, vid++, F32, d_s, s_s, true, false, "S scaled");
    ops[n++] = pointwise(b, CUDNN_POINTWISE_MUL, F32, s0, scale, NULL, s1, -1, "scale");
    cudnnBackendDescriptor_t s2 = tensor(b, vid++, F32, d_s, s_s, true, false, "S - stats");
    ops[n++] = pointwise(b, CUDNN_POINTWISE_SUB, F32, s1, stats, NULL, s2, -1, "S - stats");
    cudnnBackendDescriptor_t s3 = causal_mask(b, &l, &vid, s2, neg, ops, &n);
    cudnnBackendDescriptor_t e = tensor(b, vid++, F32, d_s, s_s, true, false, "P");
    ops[n++] = pointwise(b, CUDNN_POINTWISE_EXP, F32, s3, NULL, NULL, e, -1, "exp");
    /* dV = P^T dO (P^T a bf16 view: a matmul's A operand in the i/o type) */
    cudnnBackendDescriptor_t pt = tensor(b, vid++, BF, d_s, s_st_t, true, false, "P^T");
    ops[n++] = reshape(b, e, pt, "P^T");
    ops[n++] = matmul(b, pt, dout, dv, "matmul P^T dO");
    /* dS = P (dO V^T - D) scale */
    cudnnBackendDescriptor_t dp = tensor(b, vid++, F32, d_s, s_s, true, false, "dP");
    ops[n++] = matmul(b, dout, vt, dp, "matmul dO V^T");
    cudnnBackendDescriptor_t t1 = tensor(b, vid++, F32, d_s, s_s, true, false, "dP - D");
    ops[n++] = pointwise(b, CUDNN_POINTWISE_SUB, F32, dp, sum, NULL, t1, -1, "dP - D");
    cudnnBackendDescriptor_t t2 = tensor(b, vid++, F32, d_s, s_s, true, false, "P (dP - D)");
    ops[n++] = pointwise(b, CUDNN_POINTWISE_MUL, F32, t1, e, NULL, t2, -1, "P (dP - D)");
    cudnnBackendDescriptor_t ds = tensor(b, vid++, F32, d_s, s_s, true, false, "dS");
    ops[n++] = pointwise(b, CUDNN_POINTWISE_MUL, F32, t2, scale, NULL, ds, -1, "dS");
    /* dK = dS^T Q */
    cudnnBackendDescriptor_t dst = tensor(b, vid++, BF, d_s, s_st_t, true, false, "dS^T");
    ops[n++] = reshape(b, ds, dst, "dS^T");
    ops[n++] = matmul(b, dst, q, dk, "matmul dS^T Q");
    /* dQ = dS K (K: K^T viewed back) */
    cudnnBackendDescriptor_t kv = tensor(b, vid++, F32, d_q, s_q, true, false, "K");
    ops[n++] = reshape(b, kt, kv, "K");
    ops[n++] = matmul(b, ds, kv, dq, "matmul dS K");
    build_plan(b, handle, ops, n);
}

static void plan_free(cudnn_plan *p) {
    for (int i = p->n_descs - 1; i >= 0; i--)
        (void)cudnnBackendDestroyDescriptor(p->descs[i]);
    p->n_descs = 0;
    p->plan = NULL;
}

/* The state, created on first use; NULL (with *st GML_OK) when cuDNN is off. */
static gml_status state_get(gml_cuda_ctx *c, struct gml_cudnn_state **out) {
    *out = NULL;
    if (!c->cudnn) {
        struct gml_cudnn_state *s = (struct gml_cudnn_state *)calloc(1, sizeof *s);
        if (!s) return gml_error_set(GML_ERR_NOMEM, "cuDNN state");
        c->cudnn = s;
        if (c->attention == GML_ATTENTION_OWN) {
            s->disabled = 1;
        } else if (cudnnGetVersion() / 10000 != CUDNN_MAJOR) {
            fprintf(stderr, "gml: cuDNN %zu at run time, built against %d.%d: attention runs on our kernels\n",
                    cudnnGetVersion(), CUDNN_MAJOR, CUDNN_MINOR);
            s->disabled = 1;
        } else {
            cudnnStatus_t st = cudnnCreate(&s->handle);
            if (st == CUDNN_STATUS_SUCCESS) st = cudnnSetStream(s->handle, c->stream);
            if (st != CUDNN_STATUS_SUCCESS) {
                fprintf(stderr, "gml: cuDNN unusable (%s): attention runs on our kernels\n", cudnnGetErrorString(st));
                s->disabled = 1;
            }
        }
    }
    if (!c->cudnn->disabled) *out = c->cudnn;
    return GML_OK;
}

/* The plan of this kind for this shape (built on first use); NULL when
 * cuDNN declines it. */
static gml_status plan_get(gml_cuda_ctx *c, struct gml_cudnn_state *s, int kind, int B, int T, int C, int NH,
                           cudnn_plan **out) {
    *out = NULL;
    for (int i = 0; i < s->n_plans; i++) {
        cudnn_plan *p = &s->plans[i];
        if (p->kind == kind && p->B == B && p->T == T && p->C == C && p->NH == NH) {
            if (p->ok) *out = p;
            return GML_OK;
        }
    }
    if (s->n_plans == CUDNN_MAX_PLANS) {
        /* Building a plan takes cuDNN milliseconds to seconds (runtime
         * compilation), paid back only by a shape that comes again: training
         * has one or two. A caller that walks through shapes (generation,
         * whose T grows by one per token) keeps the plans it has, and new
         * shapes run on attention.cu's kernels. */
        if (!s->full_said) {
            fprintf(stderr, "gml: %d cuDNN attention plans built; further shapes run on our kernels\n",
                    CUDNN_MAX_PLANS);
            s->full_said = 1;
        }
        return GML_OK;
    }
    /* Planning may allocate and synchronize, which a recording stream does
     * not allow; every shape is met first outside a graph (the first
     * micro-step), so a shape first met inside one is a caller's bug. */
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    CUDA_CHECK(cudaStreamIsCapturing(c->stream, &cs));
    if (cs != cudaStreamCaptureStatusNone)
        return gml_error_set(GML_ERR_BACKEND,
                             "cuDNN attention %s B=%d T=%d C=%d NH=%d met first while a CUDA graph records (plans are "
                             "built outside graphs; GML_CUDA_GRAPHS=0 avoids the recording)",
                             kind == ATT_FWD ? "forward" : "backward", B, T, C, NH);
    cudnn_plan *p = &s->plans[s->n_plans++];
    memset(p, 0, sizeof *p);
    p->kind = kind, p->B = B, p->T = T, p->C = C, p->NH = NH;
    p->neg = -INFINITY; /* masked scores: exp gives exactly 0 */
    p->one = 1.0f;
    builder b = {p, CUDNN_STATUS_SUCCESS, NULL, 0};
    if (kind == ATT_FWD)
        build_forward(&b, s->handle, B, T, C, NH);
    else
        build_backward(&b, s->handle, B, T, C, NH);
    if (b.err == CUDNN_STATUS_SUCCESS && p->workspace > (int64_t)CUDNN_MAX_WORKSPACE)
        B_FAIL(&b, CUDNN_STATUS_NOT_SUPPORTED, "workspace above the cap (CUDNN_MAX_WORKSPACE)");
    if (b.err != CUDNN_STATUS_SUCCESS) {
        fprintf(stderr,
                "gml: cuDNN declined the attention %s B=%d T=%d C=%d NH=%d (%s: %s, %s:%d): attention.cu's kernels "
                "run it\n",
                kind == ATT_FWD ? "forward" : "backward", B, T, C, NH, b.what, cudnnGetErrorString(b.err), __FILE__,
                b.line);
        plan_free(p);
        return GML_OK;
    }
    p->ok = 1;
    *out = p;
    return GML_OK;
}

/* The state and plan for this call, or *p = NULL: cuDNN does not take it
 * (no 16-byte alignment of every tensor, a head size other than 64 / 128,
 * GML_ATTENTION=own, cuDNN unusable, or declined). */
static gml_status usable(gml_cuda_ctx *c, int kind, int B, int T, int C, int NH, const void *const *tensors, int n,
                         struct gml_cudnn_state **st, cudnn_plan **p) {
    *st = NULL, *p = NULL;
    const int hd = C / NH;
    if (hd != 64 && hd != 128) return GML_OK;
    /* auto: only calls with at least two waves of 128-query tiles. Smaller
     * ones are latency-bound on any kernel, and each new shape costs cuDNN
     * ~0.2 s to plan: generation, whose T grows by one per token with
     * B = 1, would pay that per token. The rule depends on the shape alone,
     * so a resumed run makes the same choices (bit-for-bit resume). */
    if (c->attention == GML_ATTENTION_AUTO && (long)B * NH * ((T + 127) / 128) < 2L * c->sm_count) return GML_OK;
    for (int i = 0; i < n; i++)
        if ((uintptr_t)tensors[i] & 15u) return GML_OK;
    GML_CHECK(state_get(c, st));
    if (!*st) return GML_OK;
    return plan_get(c, *st, kind, B, T, C, NH, p);
}

/* The plan's workspace followed by `extra` bytes (16-byte aligned), in the
 * backend's scratch (valid until the next op asks for scratch). */
static gml_status workspace(gml_cuda_ctx *c, const cudnn_plan *p, size_t extra, void **ws, void **extra_ptr) {
    const size_t head = ((size_t)p->workspace + 255) & ~(size_t)255;
    GML_CHECK(gml_cuda_scratch(c, head + extra, ws));
    if (extra_ptr) *extra_ptr = (char *)*ws + head;
    return GML_OK;
}

/* Runs plan p with the n (uid, pointer) pairs and workspace ws. */
static gml_status execute(struct gml_cudnn_state *s, cudnn_plan *p, int n, const int64_t *uids, void **ptrs, void *ws) {
    cudnnBackendDescriptor_t vp = NULL;
    cudnnStatus_t st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendFinalize(vp);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendExecute(s->handle, p->plan, vp);
    if (vp) (void)cudnnBackendDestroyDescriptor(vp);
    if (st != CUDNN_STATUS_SUCCESS)
        return gml_error_set(GML_ERR_BACKEND, "cuDNN attention %s B=%d T=%d C=%d NH=%d failed: %s",
                             p->kind == ATT_FWD ? "forward" : "backward", p->B, p->T, p->C, p->NH,
                             cudnnGetErrorString(st));
    CUDA_CHECK_LAUNCH("cuDNN attention");
    s->calls++;
    return GML_OK;
}

gml_status gml_cudnn_attention_forward(gml_cuda_ctx *c, void *out, float *lse, const void *qkv, int B, int T, int C,
                                       int NH, float scale, int *done) {
    *done = 0;
    const void *tensors[3] = {out, lse, qkv};
    struct gml_cudnn_state *s = NULL;
    cudnn_plan *p = NULL;
    GML_CHECK(usable(c, ATT_FWD, B, T, C, NH, tensors, 3, &s, &p));
    if (!p) return GML_OK;
    p->scale = scale;
    const bf16 *q = (const bf16 *)qkv;
    void *ptrs[7] = {(void *)q, (void *)(q + C), (void *)(q + 2 * C), out, lse, &p->scale, &p->neg};
    const int64_t uids[7] = {UID_Q, UID_K, UID_V, UID_O, UID_STATS, UID_SCALE, UID_NEG};
    void *ws = NULL;
    GML_CHECK(workspace(c, p, 0, &ws, NULL));
    GML_CHECK(execute(s, p, 7, uids, ptrs, ws));
    *done = 1;
    return GML_OK;
}

gml_status gml_cudnn_attention_backward(gml_cuda_ctx *c, void *dqkv, const void *dout, const void *qkv, const void *out,
                                        const float *lse, int B, int T, int C, int NH, float scale, int *done) {
    *done = 0;
    const void *tensors[5] = {dqkv, dout, qkv, out, lse};
    struct gml_cudnn_state *s = NULL;
    cudnn_plan *p = NULL;
    GML_CHECK(usable(c, ATT_BWD, B, T, C, NH, tensors, 5, &s, &p));
    if (!p) return GML_OK;
    p->scale = scale;
    void *ws = NULL, *sum = NULL;
    GML_CHECK(workspace(c, p, (size_t)B * NH * T * sizeof(float), &ws, &sum));
    const bf16 *q = (const bf16 *)qkv;
    bf16 *dq = (bf16 *)dqkv;
    void *ptrs[13] = {(void *)q, (void *)(q + C), (void *)(q + 2 * C), (void *)out, (void *)dout, (void *)lse,
                      dq,        dq + C,          dq + 2 * C,          sum,         &p->scale,    &p->one,
                      &p->neg};
    const int64_t uids[13] = {BW_Q,  BW_KT, BW_VT,  BW_O,     BW_DO,  BW_STATS, BW_DQ,
                              BW_DK, BW_DV, BW_SUM, BW_SCALE, BW_ONE, BW_NEG};
    GML_CHECK(execute(s, p, 13, uids, ptrs, ws));
    *done = 1;
    return GML_OK;
}

void gml_cudnn_release(gml_cuda_ctx *c) {
    struct gml_cudnn_state *s = c->cudnn;
    if (!s) return;
    for (int i = 0; i < s->n_plans; i++)
        plan_free(&s->plans[i]);
    if (s->handle) (void)cudnnDestroy(s->handle);
    free(s);
    c->cudnn = NULL;
}

extern "C" size_t gml_cuda_cudnn_attention_calls(gml_backend *be) {
    if (!be || be->device_index < 0) return 0;
    const gml_cuda_ctx *c = cuda_ctx(be);
    return c->cudnn ? c->cudnn->calls : 0;
}

#else /* no cuDNN in this build */

extern "C" size_t gml_cuda_cudnn_attention_calls(gml_backend *be) {
    (void)be;
    return 0;
}

gml_status gml_cudnn_attention_forward(gml_cuda_ctx *c, void *out, float *lse, const void *qkv, int B, int T, int C,
                                       int NH, float scale, int *done) {
    (void)c, (void)out, (void)lse, (void)qkv, (void)B, (void)T, (void)C, (void)NH, (void)scale;
    *done = 0;
    return GML_OK;
}

gml_status gml_cudnn_attention_backward(gml_cuda_ctx *c, void *dqkv, const void *dout, const void *qkv, const void *out,
                                        const float *lse, int B, int T, int C, int NH, float scale, int *done) {
    (void)c, (void)dqkv, (void)dout, (void)qkv, (void)out, (void)lse, (void)B, (void)T, (void)C, (void)NH, (void)scale;
    *done = 0;
    return GML_OK;
}

void gml_cudnn_release(gml_cuda_ctx *c) { (void)c; }

#endif
