/* attention_cudnn.cu — the causal attention forward through cuDNN's fused
 * flash-attention engine, for the layout of attention.cu: qkv (B,T,3C) bf16
 * (q | k | v per position, head h at channels [h*hd, (h+1)*hd)), out (B,T,C)
 * bf16, lse (B,NH,T) f32 the natural log-sum-exp of the scaled scores, which
 * attention.cu's backward consumes as it does its own forward's.
 *
 * cuDNN is driven through its backend C API: an operation graph of matmul,
 * pointwise and reduction nodes in the shape cuDNN recognises as scaled
 * dot-product attention (S = Q K^T, S * scale, causal mask by row/column
 * index, softmax with its statistics, O = P V), the engines its heuristics
 * rank first, the first whose execution plan finalizes. Plans are built once
 * per shape and cached; building never happens while a CUDA graph records
 * (the first call of a shape runs outside, as every first micro-step does).
 *
 * Owns: the cuDNN handle (bound to the context's stream), the cached plans
 * and their descriptors, and a grow-only workspace; gml_cudnn_release frees
 * all of it. Selection: GML_ATTENTION=own (read when the backend is
 * created, kernels/cuda/backend_cuda.cu) keeps attention.cu's kernels;
 * otherwise cuDNN runs where it accepts the shape (hd 64/128, 16-byte
 * aligned tensors, compute capability 8.0+), and a shape it declines falls
 * back to attention.cu, said once on stderr.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/backend_cuda.h"
#include "kernels/cuda/cuda_common.cuh"

#ifdef GML_HAVE_CUDNN

#include <cudnn.h>

#define CUDNN_MAX_PLANS 8
#define CUDNN_MAX_DESCS 64
#define CUDNN_MAX_CFGS 8

/* tensor unique ids of the forward graph's real and by-value tensors */
enum { UID_Q = 1, UID_K, UID_V, UID_O, UID_STATS, UID_SCALE, UID_NEG };

typedef struct {
    int B, T, C, NH;     /* the shape */
    int ok;              /* 1: plan usable; 0: cuDNN declined (use attention.cu) */
    float scale;         /* by-value attention scale */
    float neg;           /* by-value masked score */
    int64_t workspace;   /* bytes the plan needs */
    cudnnBackendDescriptor_t plan;
    cudnnBackendDescriptor_t descs[CUDNN_MAX_DESCS]; /* every descriptor the plan was built from */
    int n_descs;
} cudnn_plan;

struct gml_cudnn_state {
    int disabled; /* GML_ATTENTION=own, or cuDNN unusable here */
    size_t calls; /* executions so far (gml_cuda_cudnn_attention_calls) */
    cudnnHandle_t handle;
    cudnn_plan plans[CUDNN_MAX_PLANS];
    int n_plans;
    void *ws; /* device workspace, ws_bytes */
    size_t ws_bytes;
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

/* ---- the forward graph ---- */

static void build_forward(builder *b, cudnnHandle_t handle, int B, int T, int C, int NH) {
    const int64_t hd = C / NH, C3 = 3 * (int64_t)C, T_ = T;
    const cudnnDataType_t BF = CUDNN_DATA_BFLOAT16, F32 = CUDNN_DATA_FLOAT;
    int64_t vid = 100; /* virtual tensor ids */

    /* real tensors: (B, NH, T, hd) views of qkv and out; K^T as (B, NH, hd, T) */
    const int64_t d_q[4] = {B, NH, T_, hd}, s_q[4] = {T_ * C3, hd, C3, 1};
    const int64_t d_kt[4] = {B, NH, hd, T_}, s_kt[4] = {T_ * C3, hd, 1, C3};
    const int64_t s_o[4] = {T_ * C, hd, C, 1};
    const int64_t d_st[4] = {B, NH, T_, 1}, s_st[4] = {NH * T_, T_, 1, 1};
    const int64_t d_s[4] = {B, NH, T_, T_}, s_s[4] = {NH * T_ * T_, T_ * T_, T_, 1};
    const int64_t d_1[4] = {1, 1, 1, 1}, s_1[4] = {1, 1, 1, 1};

    cudnnBackendDescriptor_t q = tensor(b, UID_Q, BF, d_q, s_q, false, false, "Q");
    cudnnBackendDescriptor_t kt = tensor(b, UID_K, BF, d_kt, s_kt, false, false, "K^T");
    cudnnBackendDescriptor_t v = tensor(b, UID_V, BF, d_q, s_q, false, false, "V");
    cudnnBackendDescriptor_t o = tensor(b, UID_O, BF, d_q, s_o, false, false, "O");
    cudnnBackendDescriptor_t stats = tensor(b, UID_STATS, F32, d_st, s_st, false, false, "stats");
    cudnnBackendDescriptor_t scale = tensor(b, UID_SCALE, F32, d_1, s_1, false, true, "scale");
    cudnnBackendDescriptor_t neg = tensor(b, UID_NEG, F32, d_1, s_1, false, true, "masked value");

    cudnnBackendDescriptor_t ops[16];
    int n = 0;
    /* S = Q K^T; S *= scale */
    cudnnBackendDescriptor_t s0 = tensor(b, vid++, F32, d_s, s_s, true, false, "S");
    ops[n++] = matmul(b, q, kt, s0, "matmul Q K^T");
    cudnnBackendDescriptor_t s1 = tensor(b, vid++, F32, d_s, s_s, true, false, "S scaled");
    ops[n++] = pointwise(b, CUDNN_POINTWISE_MUL, F32, s0, scale, NULL, s1, -1, "scale");
    /* causal: keep S where row >= column, else the masked value */
    cudnnBackendDescriptor_t row = tensor(b, vid++, CUDNN_DATA_INT32, d_s, s_s, true, false, "row index");
    ops[n++] = pointwise(b, CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, s1, NULL, NULL, row, 2, "row index");
    cudnnBackendDescriptor_t col = tensor(b, vid++, CUDNN_DATA_INT32, d_s, s_s, true, false, "column index");
    ops[n++] = pointwise(b, CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, s1, NULL, NULL, col, 3, "column index");
    cudnnBackendDescriptor_t keep = tensor(b, vid++, CUDNN_DATA_BOOLEAN, d_s, s_s, true, false, "causal mask");
    ops[n++] = pointwise(b, CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, row, col, NULL, keep, -1, "row >= column");
    cudnnBackendDescriptor_t s2 = tensor(b, vid++, F32, d_s, s_s, true, false, "S masked");
    ops[n++] = pointwise(b, CUDNN_POINTWISE_BINARY_SELECT, F32, s1, neg, keep, s2, -1, "mask");
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
        if (s != CUDNN_STATUS_SUCCESS) B_FAIL(b, s, "engine heuristics: results");
        else if (n_cfgs == 0) B_FAIL(b, CUDNN_STATUS_NOT_SUPPORTED, "engine heuristics: no engine for the graph");
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
        if (c->attention_own) {
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

/* The plan for this shape (built on first use); NULL when cuDNN declines it. */
static gml_status plan_get(gml_cuda_ctx *c, struct gml_cudnn_state *s, int B, int T, int C, int NH,
                           cudnn_plan **out) {
    *out = NULL;
    for (int i = 0; i < s->n_plans; i++) {
        cudnn_plan *p = &s->plans[i];
        if (p->B == B && p->T == T && p->C == C && p->NH == NH) {
            if (p->ok) *out = p;
            return GML_OK;
        }
    }
    if (s->n_plans == CUDNN_MAX_PLANS) { /* evict the oldest */
        plan_free(&s->plans[0]);
        memmove(&s->plans[0], &s->plans[1], (CUDNN_MAX_PLANS - 1) * sizeof s->plans[0]);
        s->n_plans--;
    }
    cudnn_plan *p = &s->plans[s->n_plans++];
    memset(p, 0, sizeof *p);
    p->B = B, p->T = T, p->C = C, p->NH = NH;
    builder b = {p, CUDNN_STATUS_SUCCESS, NULL, 0};
    build_forward(&b, s->handle, B, T, C, NH);
    if (b.err != CUDNN_STATUS_SUCCESS) {
        fprintf(stderr,
                "gml: cuDNN declined attention B=%d T=%d C=%d NH=%d (%s: %s, %s:%d): attention.cu's kernels run "
                "it\n",
                B, T, C, NH, b.what, cudnnGetErrorString(b.err), __FILE__, b.line);
        plan_free(p);
        return GML_OK;
    }
    if ((size_t)p->workspace > s->ws_bytes) {
        if (s->ws) CUDA_CHECK(cudaFree(s->ws));
        s->ws = NULL;
        s->ws_bytes = 0;
        CUDA_CHECK(cudaMalloc(&s->ws, (size_t)p->workspace));
        s->ws_bytes = (size_t)p->workspace;
    }
    p->ok = 1;
    *out = p;
    return GML_OK;
}

gml_status gml_cudnn_attention_forward(gml_cuda_ctx *c, void *out, float *lse, const void *qkv, int B, int T, int C,
                                       int NH, float scale, int *done) {
    *done = 0;
    const int hd = C / NH;
    if (hd != 64 && hd != 128) return GML_OK;
    if (((uintptr_t)out & 15u) || ((uintptr_t)qkv & 15u) || ((uintptr_t)lse & 15u)) return GML_OK;
    struct gml_cudnn_state *s = NULL;
    GML_CHECK(state_get(c, &s));
    if (!s) return GML_OK;
    cudnn_plan *p = NULL;
    GML_CHECK(plan_get(c, s, B, T, C, NH, &p));
    if (!p) return GML_OK;

    p->scale = scale;
    p->neg = -INFINITY; /* masked scores: exp gives exactly 0 */
    const bf16 *q = (const bf16 *)qkv;
    void *ptrs[7] = {(void *)q, (void *)(q + C), (void *)(q + 2 * C), out, lse, &p->scale, &p->neg};
    const int64_t uids[7] = {UID_Q, UID_K, UID_V, UID_O, UID_STATS, UID_SCALE, UID_NEG};
    cudnnBackendDescriptor_t vp = NULL;
    cudnnStatus_t st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 7, uids);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 7, ptrs);
    if (st == CUDNN_STATUS_SUCCESS)
        st = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &s->ws);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendFinalize(vp);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendExecute(s->handle, p->plan, vp);
    if (vp) (void)cudnnBackendDestroyDescriptor(vp);
    if (st != CUDNN_STATUS_SUCCESS)
        return gml_error_set(GML_ERR_BACKEND, "cuDNN attention forward B=%d T=%d C=%d NH=%d failed: %s", B, T, C, NH,
                             cudnnGetErrorString(st));
    CUDA_CHECK_LAUNCH("cuDNN attention forward");
    s->calls++;
    *done = 1;
    return GML_OK;
}

void gml_cudnn_release(gml_cuda_ctx *c) {
    struct gml_cudnn_state *s = c->cudnn;
    if (!s) return;
    for (int i = 0; i < s->n_plans; i++)
        plan_free(&s->plans[i]);
    if (s->ws) (void)cudaFree(s->ws);
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

void gml_cudnn_release(gml_cuda_ctx *c) { (void)c; }

#endif
