/* gpt.c — the GPT model: parameter registration, buffer layout, and the
 * explicit forward/backward of its layers (embedding, blocks, head).
 *
 * Not for: the optimizer (core/optim.c), the training loop (launcher/train.c),
 * or any arithmetic (kernels/ through core/backend.h).
 */
#include "core/gpt.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dropout.h"

/* Indices into a block's parameter table. */
enum {
    P_LN1W, P_LN1B, P_QKVW, P_QKVB, P_PROJW, P_PROJB,
    P_LN2W, P_LN2B, P_FCW, P_FCB, P_FCPW, P_FCPB, P_BLOCK_COUNT
};

typedef struct {
    int idx[P_BLOCK_COUNT]; /* registry indices */
} block_params;

typedef struct {               /* what a block's backward needs, saved by its forward */
    void *ln1;                 /* (N,C) act */
    float *ln1_mean, *ln1_rstd; /* (N) */
    void *qkv;                 /* (N,3C) act */
    void *atty;                /* (N,C) act */
    float *att_lse;            /* (B,NH,T) */
    void *res2;                /* (N,C) act: x + attn */
    void *ln2;                 /* (N,C) act */
    float *ln2_mean, *ln2_rstd; /* (N) */
    void *fch;                 /* (N,4C) act: fc output, GELU input */
    void *fch_gelu;            /* (N,4C) act; NULL with recompute */
    void *res3;                /* (N,C) act: block output */
} block_acts;

typedef enum { LAYER_EMBED, LAYER_BLOCK, LAYER_HEAD } layer_kind;

typedef struct {
    layer_kind kind;
    int block; /* with LAYER_BLOCK */
} layer;

/* A recording of a training micro-step and what it was recorded for;
 * seen: one unrecorded run with these arguments done. */
typedef struct {
    void *graph;
    int seen, B, T;
    float dscale;
    float *acc;
    gml_grads_ready_fn fn;
    void *ctx;
    gml_encoder_gather_fn gather;
} micro_graph;

struct gml_gpt {
    gml_backend *be;
    gml_gpt_config cfg;
    int B_max, T_max, recompute;
    size_t as; /* bytes per act element */

    gml_param_registry reg;
    int i_wte, i_wpe, i_lnfw, i_lnfb;
    block_params *bp; /* (L) */

    int n_layers;
    layer *layers; /* embedding, blocks, head */

    /* parameter buffers, (P) each; all NULL with cfg.sharded_params */
    size_t padded;  /* flat buffer length: reg.total rounded up to cfg.shard_ways */
    float *master;
    void *compute; /* == master when act is f32 */
    float *grads;

    /* units (one per layer, see gpt.h): layers address parameters and
     * gradients through their unit's base. Without a provider the bases
     * point into compute / grads, fixed at create; with one they are the
     * windows it handed out, NULL while the unit is not held. */
    size_t *unit_lo, *unit_hi; /* (n_layers) flat ranges */
    int *param_unit;           /* (reg.n) unit of each parameter */
    void **unit_c;             /* (n_layers) act parameters at the unit's first element */
    float **unit_g;            /* (n_layers) f32 gradients, likewise */
    unsigned char *fetching;   /* (n_layers) prefetched, not yet acquired */
    gml_gpt_provider prov;
    int has_prov;

    /* activations and scratch: one allocation */
    void *act_base;
    int32_t *tokens, *targets; /* (N_max) */
    void *encoded;             /* (N,C) act */
    block_acts *ba;            /* (L) */
    void *lnf;                 /* (N,C) act */
    float *lnf_mean, *lnf_rstd;
    void *logits;              /* (N,Vp) act; dlogits after a training forward */
    float *losses;             /* (N) */
    void *scratch_c;           /* (N,C) act: projection outputs */
    void *scratch_4c;          /* (N,4C) act: GELU output with recompute */
    void *dresidual;           /* (N,C) act */
    void *dbuf_c;              /* (N,C) act */
    void *dqkv;                /* (N,3C) act */
    void *dfch;                /* (N,4C) act */

    /* the last forward */
    int B, T, has_grad_logits;
    /* dropout: on for the last forward iff it was a training forward and
     * cfg.dropout > 0; masks from dropout_key (core/dropout.h) */
    int dropout_on;
    uint64_t dropout_key, dropout_first_row;
    gml_grads_ready_fn ready_fn; /* see gml_gpt_set_grads_ready_hook */
    void *ready_ctx;
    int ready_recordable;
    gml_encoder_gather_fn gather_fn; /* see gml_gpt_set_encoder_gather */
    void *gather_ctx;
    uint32_t drop_threshold;
    float drop_scale;

    /* head_chunks: sequences per head piece (B_max without chunking); the
     * rows the logits buffer holds after the last forward; head_done: the
     * last training forward did the head's backward already */
    int head_bc;
    size_t logits_r0, logits_n;
    int head_done;

    /* gml_gpt_train_micro's recordings of a micro-step: slot 0 without a
     * grads-ready hook, slot 1 with a recordable one (gradient accumulation
     * alternates: the dp reducer hooks the last micro-step only) */
    micro_graph graphs[2];
    int graph_off, replayed;
};

/* ------------------------------------------------------------------ */
/* registration */

static gml_status add_param(gml_gpt *m, const char *name, int64_t d0, int64_t d1, int decay, gml_init_kind init,
                            float v, int *index) {
    int64_t shape[2] = {d0, d1};
    return gml_params_add(&m->reg, name, d1 > 0 ? 2 : 1, shape, decay, init, v, index);
}

static gml_status register_params(gml_gpt *m) {
    const gml_gpt_config *c = &m->cfg;
    int64_t C = c->n_embd, L = c->n_layer;
    float std = c->init_std, proj_std = c->init_std / sqrtf(2.0f * (float)L);
    char name[GML_PARAM_NAME_MAX];
    GML_CHECK(add_param(m, "wte.weight", c->padded_vocab_size, C, 1, GML_INIT_NORMAL, std, &m->i_wte));
    m->reg.specs[m->i_wte].valid_rows = c->vocab_size;
    GML_CHECK(add_param(m, "wpe.weight", c->block_size, C, 1, GML_INIT_NORMAL, std, &m->i_wpe));
    static const struct {
        const char *suffix;
        int rows_mult, cols_mult; /* shape = (rows_mult*C, cols_mult*C); cols 0: 1-D */
        int decay, normal, proj;
        float constant;
    } tab[P_BLOCK_COUNT] = {
        [P_LN1W] = {"ln1.weight", 1, 0, 0, 0, 0, 1.0f},
        [P_LN1B] = {"ln1.bias", 1, 0, 0, 0, 0, 0.0f},
        [P_QKVW] = {"attn.qkv.weight", 3, 1, 1, 1, 0, 0.0f},
        [P_QKVB] = {"attn.qkv.bias", 3, 0, 0, 0, 0, 0.0f},
        [P_PROJW] = {"attn.proj.weight", 1, 1, 1, 1, 1, 0.0f},
        [P_PROJB] = {"attn.proj.bias", 1, 0, 0, 0, 0, 0.0f},
        [P_LN2W] = {"ln2.weight", 1, 0, 0, 0, 0, 1.0f},
        [P_LN2B] = {"ln2.bias", 1, 0, 0, 0, 0, 0.0f},
        [P_FCW] = {"mlp.fc.weight", 4, 1, 1, 1, 0, 0.0f},
        [P_FCB] = {"mlp.fc.bias", 4, 0, 0, 0, 0, 0.0f},
        [P_FCPW] = {"mlp.proj.weight", 1, 4, 1, 1, 1, 0.0f},
        [P_FCPB] = {"mlp.proj.bias", 1, 0, 0, 0, 0, 0.0f},
    };
    for (int l = 0; l < c->n_layer; l++) {
        for (int k = 0; k < P_BLOCK_COUNT; k++) {
            snprintf(name, sizeof name, "blocks.%d.%s", l, tab[k].suffix);
            gml_init_kind init = tab[k].normal ? GML_INIT_NORMAL : GML_INIT_CONSTANT;
            float v = tab[k].normal ? (tab[k].proj ? proj_std : std) : tab[k].constant;
            GML_CHECK(add_param(m, name, tab[k].rows_mult * C, tab[k].cols_mult * C, tab[k].decay, init, v,
                                &m->bp[l].idx[k]));
        }
    }
    GML_CHECK(add_param(m, "ln_f.weight", C, 0, 0, GML_INIT_CONSTANT, 1.0f, &m->i_lnfw));
    GML_CHECK(add_param(m, "ln_f.bias", C, 0, 0, GML_INIT_CONSTANT, 0.0f, &m->i_lnfb));
    return GML_OK;
}

/* ------------------------------------------------------------------ */
/* buffer layout: one pass to size, one to assign */

typedef struct {
    uintptr_t base, off;
} carver;

static void *carve(carver *cv, size_t bytes) {
    cv->off = (cv->off + 255u) & ~(uintptr_t)255u;
    void *p = (void *)(cv->base + cv->off);
    cv->off += bytes;
    return p;
}

static size_t layout_acts(gml_gpt *m, uintptr_t base) {
    carver cv = {base, 0};
    size_t N = (size_t)m->B_max * (size_t)m->T_max, C = (size_t)m->cfg.n_embd, as = m->as;
    size_t NH = (size_t)m->cfg.n_head, Vp = (size_t)m->cfg.padded_vocab_size;
    m->tokens = carve(&cv, N * 4);
    m->targets = carve(&cv, N * 4);
    m->encoded = carve(&cv, N * C * as);
    for (int l = 0; l < m->cfg.n_layer; l++) {
        block_acts *a = &m->ba[l];
        a->ln1 = carve(&cv, N * C * as);
        a->ln1_mean = carve(&cv, N * 4);
        a->ln1_rstd = carve(&cv, N * 4);
        a->qkv = carve(&cv, N * 3 * C * as);
        a->atty = carve(&cv, N * C * as);
        a->att_lse = carve(&cv, N * NH * 4);
        a->res2 = carve(&cv, N * C * as);
        a->ln2 = carve(&cv, N * C * as);
        a->ln2_mean = carve(&cv, N * 4);
        a->ln2_rstd = carve(&cv, N * 4);
        a->fch = carve(&cv, N * 4 * C * as);
        a->fch_gelu = m->recompute ? NULL : carve(&cv, N * 4 * C * as);
        a->res3 = carve(&cv, N * C * as);
    }
    m->lnf = carve(&cv, N * C * as);
    m->lnf_mean = carve(&cv, N * 4);
    m->lnf_rstd = carve(&cv, N * 4);
    m->logits = carve(&cv, (size_t)m->head_bc * (size_t)m->T_max * Vp * as); /* one head piece */
    m->losses = carve(&cv, N * 4);
    m->scratch_c = carve(&cv, N * C * as);
    m->scratch_4c = m->recompute ? carve(&cv, N * 4 * C * as) : NULL;
    m->dresidual = carve(&cv, N * C * as);
    m->dbuf_c = carve(&cv, N * C * as);
    m->dqkv = carve(&cv, N * 3 * C * as);
    m->dfch = carve(&cv, N * 4 * C * as);
    return (size_t)cv.off;
}

/* ------------------------------------------------------------------ */
/* units */

static void layer_range(const gml_gpt *m, const layer *ly, size_t *lo, size_t *hi);

/* Unit u = layer u: its flat range, and the unit of every parameter. */
static gml_status setup_units(gml_gpt *m) {
    m->param_unit = malloc((size_t)m->reg.n * sizeof *m->param_unit);
    if (!m->param_unit) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    for (int i = 0; i < m->reg.n; i++) m->param_unit[i] = -1;
    for (int u = 0; u < m->n_layers; u++) {
        layer_range(m, &m->layers[u], &m->unit_lo[u], &m->unit_hi[u]);
        for (int i = 0; i < m->reg.n; i++) {
            const gml_param_spec *s = &m->reg.specs[i];
            if (s->offset >= m->unit_lo[u] && s->offset + s->numel <= m->unit_hi[u]) m->param_unit[i] = u;
        }
    }
    for (int i = 0; i < m->reg.n; i++)
        if (m->param_unit[i] < 0)
            return gml_error_set(GML_ERR_INTERNAL, "parameter '%s' belongs to no layer", m->reg.specs[i].name);
    return GML_OK;
}

int gml_gpt_num_units(const gml_gpt *m) { return m->n_layers; }

void gml_gpt_unit_range(const gml_gpt *m, int u, size_t *lo, size_t *hi) {
    *lo = m->unit_lo[u];
    *hi = m->unit_hi[u];
}

int gml_gpt_unit_window(const gml_gpt *m, int u) {
    (void)m;
    return u == 0 ? 0 : 1 + u % 2;
}

size_t gml_gpt_window_elems(const gml_gpt *m, int w) {
    size_t n = 0;
    for (int u = 0; u < m->n_layers; u++)
        if (gml_gpt_unit_window(m, u) == w && m->unit_hi[u] - m->unit_lo[u] > n) n = m->unit_hi[u] - m->unit_lo[u];
    return n;
}

gml_status gml_gpt_set_provider(gml_gpt *m, const gml_gpt_provider *p) {
    const int params = m->cfg.sharded_params;
    if (p && !params && !m->cfg.sharded_grads)
        return gml_error_set(GML_ERR_INVALID_ARG, "a provider needs a model created with sharded_params or "
                             "sharded_grads");
    if (p && (!p->grads_acquire || !p->grads_release || !p->grads_finish || !p->get_grads_host || !p->zero_grads ||
              (params && (!p->prefetch || !p->acquire || !p->release || !p->set_params_host || !p->get_params_host))))
        return gml_error_set(GML_ERR_INVALID_ARG, "a provider must fill in every function (the parameter ones "
                             "with sharded_params)");
    for (int u = 0; u < m->n_layers && (params || m->cfg.sharded_grads); u++) {
        if (params) m->unit_c[u] = NULL;
        m->unit_g[u] = NULL;
        m->fetching[u] = 0;
    }
    m->has_prov = p != NULL;
    if (p) m->prov = *p;
    else memset(&m->prov, 0, sizeof m->prov);
    return GML_OK;
}

int gml_gpt_has_hooks(const gml_gpt *m) { return m->ready_fn != NULL || m->has_prov; }

static gml_status need_provider(const gml_gpt *m) {
    if ((m->cfg.sharded_params || m->cfg.sharded_grads) && !m->has_prov)
        return gml_error_set(GML_ERR_INVALID_ARG, "the model was created with sharded_%s but has no provider "
                             "(gml_gpt_set_provider; parallel/zero.h sets it for ZeRO-2 and 3)",
                             m->cfg.sharded_params ? "params" : "grads");
    return GML_OK;
}

/* The provider serves parameters (sharded_params), not only gradients. */
static int params_provided(const gml_gpt *m) { return m->has_prov && m->cfg.sharded_params; }

/* The provider calls of the layer schedule (gpt.h); no-ops without one (the
 * parameter calls also with a gradients-only provider). */
static gml_status unit_prefetch(gml_gpt *m, int u) {
    if (!params_provided(m) || m->unit_c[u] || m->fetching[u]) return GML_OK;
    m->fetching[u] = 1;
    return m->prov.prefetch(m->prov.ctx, u);
}

static gml_status unit_acquire(gml_gpt *m, int u) {
    if (!params_provided(m) || m->unit_c[u]) return GML_OK;
    m->fetching[u] = 0;
    return m->prov.acquire(m->prov.ctx, u, &m->unit_c[u]);
}

static gml_status unit_release(gml_gpt *m, int u) {
    if (!params_provided(m) || (!m->unit_c[u] && !m->fetching[u])) return GML_OK;
    m->unit_c[u] = NULL;
    m->fetching[u] = 0;
    return m->prov.release(m->prov.ctx, u);
}

static gml_status unit_grads_acquire(gml_gpt *m, int u) {
    if (!m->has_prov || m->unit_g[u]) return GML_OK;
    return m->prov.grads_acquire(m->prov.ctx, u, &m->unit_g[u]);
}

static gml_status unit_grads_release(gml_gpt *m, int u) {
    if (!m->has_prov || !m->unit_g[u]) return GML_OK;
    m->unit_g[u] = NULL;
    return m->prov.grads_release(m->prov.ctx, u);
}

/* Give back every unit's parameters still held or on their way. */
static gml_status release_all(gml_gpt *m) {
    for (int u = 0; u < m->n_layers && params_provided(m); u++) GML_CHECK(unit_release(m, u));
    return GML_OK;
}

/* ------------------------------------------------------------------ */
/* lifetime */

static void graph_drop(gml_gpt *m);

gml_status gml_gpt_create(gml_backend *be, const gml_gpt_config *cfg, int B_max, int T_max, int recompute,
                          gml_gpt **out) {
    *out = NULL;
    if (cfg->n_layer < 1 || cfg->n_head < 1 || cfg->n_embd < 1 || cfg->n_embd % cfg->n_head != 0 ||
        cfg->block_size < 1 || cfg->vocab_size < 1 || cfg->padded_vocab_size < cfg->vocab_size ||
        !(cfg->dropout >= 0.0f && cfg->dropout < 1.0f))
        return gml_error_set(GML_ERR_INVALID_ARG, "bad GPT config (L=%d NH=%d C=%d T=%d V=%d Vp=%d dropout=%g)",
                             cfg->n_layer, cfg->n_head, cfg->n_embd, cfg->block_size, cfg->vocab_size,
                             cfg->padded_vocab_size, (double)cfg->dropout);
    if (B_max < 1 || T_max < 1 || T_max > cfg->block_size)
        return gml_error_set(GML_ERR_INVALID_ARG, "bad micro-batch %dx%d for block_size %d", B_max, T_max,
                             cfg->block_size);
    gml_status st = GML_OK;
    gml_gpt *m = calloc(1, sizeof *m);
    if (!m) return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    m->be = be;
    m->cfg = *cfg;
    m->B_max = B_max;
    m->T_max = T_max;
    m->recompute = recompute;
    m->head_bc = cfg->head_chunks > 1 ? (B_max + cfg->head_chunks - 1) / cfg->head_chunks : B_max;
    m->drop_threshold = gml_dropout_threshold(cfg->dropout);
    m->drop_scale = 1.0f / (1.0f - cfg->dropout);
    const char *graphs = getenv("GML_CUDA_GRAPHS");
    m->graph_off = graphs && strcmp(graphs, "0") == 0;
    m->as = gml_dtype_size(be->act_dtype);
    gml_params_init(&m->reg);
    m->bp = calloc((size_t)cfg->n_layer, sizeof *m->bp);
    m->ba = calloc((size_t)cfg->n_layer, sizeof *m->ba);
    m->n_layers = cfg->n_layer + 2;
    m->layers = calloc((size_t)m->n_layers, sizeof *m->layers);
    m->unit_lo = calloc((size_t)m->n_layers, sizeof *m->unit_lo);
    m->unit_hi = calloc((size_t)m->n_layers, sizeof *m->unit_hi);
    m->unit_c = calloc((size_t)m->n_layers, sizeof *m->unit_c);
    m->unit_g = calloc((size_t)m->n_layers, sizeof *m->unit_g);
    m->fetching = calloc((size_t)m->n_layers, sizeof *m->fetching);
    if (!m->bp || !m->ba || !m->layers || !m->unit_lo || !m->unit_hi || !m->unit_c || !m->unit_g || !m->fetching) {
        st = gml_error_set(GML_ERR_NOMEM, "out of host memory");
        goto fail;
    }
    m->layers[0].kind = LAYER_EMBED;
    for (int l = 0; l < cfg->n_layer; l++) m->layers[l + 1] = (layer){LAYER_BLOCK, l};
    m->layers[m->n_layers - 1].kind = LAYER_HEAD;
    GML_CHECK_GOTO(register_params(m), st, fail);
    GML_CHECK_GOTO(setup_units(m), st, fail);

    size_t ways = cfg->shard_ways > 1 ? (size_t)cfg->shard_ways : 1;
    size_t P = (m->reg.total + ways - 1) / ways * ways; /* padded */
    m->padded = P;
    if (!cfg->sharded_params) {
        GML_CHECK_GOTO(be->iface->alloc(be, (void **)&m->master, P * 4), st, fail);
        GML_CHECK_GOTO(be->iface->memset_zero(be, m->master, P * 4), st, fail);
        if (!cfg->sharded_grads) {
            GML_CHECK_GOTO(be->iface->alloc(be, (void **)&m->grads, P * 4), st, fail);
            GML_CHECK_GOTO(be->iface->memset_zero(be, m->grads, P * 4), st, fail);
        }
        if (be->act_dtype == GML_DTYPE_F32) {
            m->compute = m->master;
        } else {
            GML_CHECK_GOTO(be->iface->alloc(be, &m->compute, P * m->as), st, fail);
            GML_CHECK_GOTO(be->iface->memset_zero(be, m->compute, P * m->as), st, fail); /* padding: ZeRO gathers it */
        }
        for (int u = 0; u < m->n_layers; u++) {
            m->unit_c[u] = (char *)m->compute + m->unit_lo[u] * m->as;
            m->unit_g[u] = m->grads ? m->grads + m->unit_lo[u] : NULL;
        }
    }
    size_t act_bytes = layout_acts(m, 0);
    GML_CHECK_GOTO(be->iface->alloc(be, &m->act_base, act_bytes), st, fail);
    layout_acts(m, (uintptr_t)m->act_base);
    GML_CHECK_GOTO(be->iface->memset_zero(be, m->act_base, act_bytes), st, fail);
    *out = m;
    return GML_OK;
fail:
    gml_gpt_destroy(m);
    return st;
}

void gml_gpt_destroy(gml_gpt *m) {
    if (!m) return;
    gml_backend *be = m->be;
    graph_drop(m);
    if (m->act_base) be->iface->free(be, m->act_base);
    if (m->compute && m->compute != (void *)m->master) be->iface->free(be, m->compute);
    if (m->grads) be->iface->free(be, m->grads);
    if (m->master) be->iface->free(be, m->master);
    gml_params_free(&m->reg);
    free(m->bp);
    free(m->ba);
    free(m->layers);
    free(m->unit_lo);
    free(m->unit_hi);
    free(m->param_unit);
    free(m->unit_c);
    free(m->unit_g);
    free(m->fetching);
    free(m);
}

const gml_param_registry *gml_gpt_params(const gml_gpt *m) { return &m->reg; }
const gml_gpt_config *gml_gpt_get_config(const gml_gpt *m) { return &m->cfg; }
size_t gml_gpt_num_params(const gml_gpt *m) { return m->reg.total; }
size_t gml_gpt_padded_params(const gml_gpt *m) { return m->padded; }
gml_backend *gml_gpt_backend(const gml_gpt *m) { return m->be; }
int gml_gpt_max_T(const gml_gpt *m) { return m->T_max; }
float *gml_gpt_master(gml_gpt *m) { return m->master; }
void *gml_gpt_compute(gml_gpt *m) { return m->compute; }
float *gml_gpt_grads(gml_gpt *m) { return m->grads; }

double gml_gpt_flops_per_token(const gml_gpt *m, int T) {
    return 6.0 * (double)m->reg.total + 12.0 * m->cfg.n_layer * (double)T * m->cfg.n_embd;
}

/* ------------------------------------------------------------------ */
/* weights */

gml_status gml_gpt_set_params_host(gml_gpt *m, const float *host) {
    GML_CHECK(need_provider(m));
    if (params_provided(m)) return m->prov.set_params_host(m->prov.ctx, host);
    gml_backend *be = m->be;
    size_t P = m->reg.total;
    GML_CHECK(be->iface->memcpy_h2d(be, m->master, host, P * 4));
    if (m->compute != (void *)m->master) GML_CHECK(be->iface->cast_f32_to_act(be, m->compute, m->master, P));
    return GML_OK;
}

gml_status gml_gpt_get_params_host(gml_gpt *m, float *host) {
    GML_CHECK(need_provider(m));
    if (params_provided(m)) return m->prov.get_params_host(m->prov.ctx, host);
    return m->be->iface->memcpy_d2h(m->be, host, m->master, m->reg.total * 4);
}

gml_status gml_gpt_get_grads_host(gml_gpt *m, float *host) {
    GML_CHECK(need_provider(m));
    if (m->has_prov) return m->prov.get_grads_host(m->prov.ctx, host);
    return m->be->iface->memcpy_d2h(m->be, host, m->grads, m->reg.total * 4);
}

gml_status gml_gpt_init_weights(gml_gpt *m, uint64_t seed) {
    float *host = malloc(m->reg.total * sizeof *host);
    if (!host) return gml_error_set(GML_ERR_NOMEM, "out of host memory for %zu parameters", m->reg.total);
    gml_params_init_values(&m->reg, seed, host);
    gml_status st = gml_gpt_set_params_host(m, host);
    free(host);
    return st;
}

gml_status gml_gpt_zero_grads(gml_gpt *m) {
    GML_CHECK(need_provider(m));
    if (m->has_prov) return m->prov.zero_grads(m->prov.ctx);
    return m->be->iface->memset_zero(m->be, m->grads, m->reg.total * 4);
}

/* ------------------------------------------------------------------ */
/* forward / backward */

/* A parameter's compute copy and its gradient, through its unit's base. */
static inline void *cp(const gml_gpt *m, int idx) {
    int u = m->param_unit[idx];
    return (char *)m->unit_c[u] + (m->reg.specs[idx].offset - m->unit_lo[u]) * m->as;
}
static inline float *gp(const gml_gpt *m, int idx) {
    int u = m->param_unit[idx];
    return m->unit_g[u] + (m->reg.specs[idx].offset - m->unit_lo[u]);
}
static inline void *act_at(const gml_gpt *m, void *base, size_t elems) { return (char *)base + elems * m->as; }

/* Dropout sites: 0 the embedding output, 1 + 2l / 2 + 2l the attention / MLP
 * branch of block l. out = mask(x) under this site's key; callers test
 * m->dropout_on first. */
enum { SITE_EMBED = 0 };
static inline uint64_t site_attn(int l) { return 1 + 2 * (uint64_t)l; }
static inline uint64_t site_mlp(int l) { return 2 + 2 * (uint64_t)l; }

static gml_status drop(gml_gpt *m, void *out, const void *x, size_t n, uint64_t site) {
    uint64_t first = m->dropout_first_row * (uint64_t)m->T * (uint64_t)m->cfg.n_embd; /* every site is (B,T,C) */
    uint64_t key = gml_dropout_offset_key(gml_dropout_site_key(m->dropout_key, site), first);
    return m->be->iface->dropout(m->be, out, x, n, key, m->drop_threshold, m->drop_scale);
}

/* A LayerNorm of the forward: where it writes, and its parameters. */
typedef struct {
    void *out;          /* (N,C) act */
    float *mean, *rstd; /* (N) */
    const void *w, *b;  /* (C) act */
} norm_site;

/* The LayerNorm that reads block l's output: block l+1's ln1, or ln_f after
 * the last block. Block l's closing residual add computes it in the same op
 * (residual_layernorm_forward), so blocks after the first and the head start
 * from their normalised input. (A pipeline stage that starts at block l+1
 * would run this norm itself.) */
static norm_site norm_after_block(gml_gpt *m, int l) {
    if (l + 1 < m->cfg.n_layer) {
        block_acts *n = &m->ba[l + 1];
        const int *p = m->bp[l + 1].idx;
        return (norm_site){n->ln1, n->ln1_mean, n->ln1_rstd, cp(m, p[P_LN1W]), cp(m, p[P_LN1B])};
    }
    return (norm_site){m->lnf, m->lnf_mean, m->lnf_rstd, cp(m, m->i_lnfw), cp(m, m->i_lnfb)};
}

static gml_status block_forward(gml_gpt *m, int l, const void *x) {
    const struct gml_backend_i *o = m->be->iface;
    gml_backend *be = m->be;
    int B = m->B, T = m->T, C = m->cfg.n_embd, NH = m->cfg.n_head, N = B * T;
    const int *p = m->bp[l].idx;
    block_acts *a = &m->ba[l];
    if (l == 0) /* later blocks: ln1 came with the previous block's last residual add */
        GML_CHECK(o->layernorm_forward(be, a->ln1, a->ln1_mean, a->ln1_rstd, x, cp(m, p[P_LN1W]), cp(m, p[P_LN1B]),
                                       N, C));
    GML_CHECK(o->matmul_forward(be, a->qkv, a->ln1, cp(m, p[P_QKVW]), cp(m, p[P_QKVB]), N, C, 3 * C));
    GML_CHECK(o->attention_forward(be, a->atty, a->att_lse, a->qkv, B, T, C, NH));
    GML_CHECK(o->matmul_forward(be, m->scratch_c, a->atty, cp(m, p[P_PROJW]), cp(m, p[P_PROJB]), N, C, C));
    if (m->dropout_on) GML_CHECK(drop(m, m->scratch_c, m->scratch_c, (size_t)N * C, site_attn(l)));
    GML_CHECK(o->residual_layernorm_forward(be, a->res2, a->ln2, a->ln2_mean, a->ln2_rstd, x, m->scratch_c,
                                            cp(m, p[P_LN2W]), cp(m, p[P_LN2B]), N, C));
    void *gelu = a->fch_gelu ? a->fch_gelu : m->scratch_4c;
    GML_CHECK(o->matmul_gelu_forward(be, gelu, a->fch, a->ln2, cp(m, p[P_FCW]), cp(m, p[P_FCB]), N, C, 4 * C));
    GML_CHECK(o->matmul_forward(be, m->scratch_c, gelu, cp(m, p[P_FCPW]), cp(m, p[P_FCPB]), N, 4 * C, C));
    if (m->dropout_on) GML_CHECK(drop(m, m->scratch_c, m->scratch_c, (size_t)N * C, site_mlp(l)));
    GML_CHECK(unit_acquire(m, l + 2)); /* the next layer's unit (block l+1 or the head) has that norm */
    norm_site next = norm_after_block(m, l);
    return o->residual_layernorm_forward(be, a->res3, next.out, next.mean, next.rstd, a->res2, m->scratch_c, next.w,
                                         next.b, N, C);
}

/* dresidual holds d(block output) on entry and d(block input) on return. */
static gml_status block_backward(gml_gpt *m, int l, const void *x) {
    const struct gml_backend_i *o = m->be->iface;
    gml_backend *be = m->be;
    int B = m->B, T = m->T, C = m->cfg.n_embd, NH = m->cfg.n_head, N = B * T;
    const int *p = m->bp[l].idx;
    block_acts *a = &m->ba[l];
    void *gelu = a->fch_gelu;
    if (!gelu) { /* recompute what forward did not keep */
        gelu = m->scratch_4c;
        GML_CHECK(o->gelu_forward(be, gelu, a->fch, (size_t)N * 4 * C));
    }
    /* d(branch output) = mask(d(block output)); the residual path keeps the
     * unmasked gradient. scratch_c is free during backward. */
    const void *dbranch = m->dresidual;
    if (m->dropout_on) {
        GML_CHECK(drop(m, m->scratch_c, m->dresidual, (size_t)N * C, site_mlp(l)));
        dbranch = m->scratch_c;
    }
    GML_CHECK(o->matmul_backward_gelu(be, m->dfch, gp(m, p[P_FCPW]), gp(m, p[P_FCPB]), dbranch, gelu,
                                      cp(m, p[P_FCPW]), a->fch, N, 4 * C, C));
    GML_CHECK(o->matmul_backward(be, m->dbuf_c, gp(m, p[P_FCW]), gp(m, p[P_FCB]), m->dfch, a->ln2,
                                 cp(m, p[P_FCW]), N, C, 4 * C));
    GML_CHECK(o->layernorm_backward(be, m->dresidual, gp(m, p[P_LN2W]), gp(m, p[P_LN2B]), m->dbuf_c, a->res2,
                                    cp(m, p[P_LN2W]), a->ln2_mean, a->ln2_rstd, N, C));
    if (m->dropout_on) GML_CHECK(drop(m, m->scratch_c, m->dresidual, (size_t)N * C, site_attn(l)));
    GML_CHECK(o->matmul_backward(be, m->dbuf_c, gp(m, p[P_PROJW]), gp(m, p[P_PROJB]), dbranch, a->atty,
                                 cp(m, p[P_PROJW]), N, C, C));
    GML_CHECK(o->attention_backward(be, m->dqkv, m->dbuf_c, a->qkv, a->atty, a->att_lse, B, T, C, NH));
    GML_CHECK(o->matmul_backward(be, m->dbuf_c, gp(m, p[P_QKVW]), gp(m, p[P_QKVB]), m->dqkv, a->ln1,
                                 cp(m, p[P_QKVW]), N, C, 3 * C));
    GML_CHECK(o->layernorm_backward(be, m->dresidual, gp(m, p[P_LN1W]), gp(m, p[P_LN1B]), m->dbuf_c, x,
                                    cp(m, p[P_LN1W]), a->ln1_mean, a->ln1_rstd, N, C));
    return GML_OK;
}

/* The input of block l (the residual stream entering it). */
static const void *block_input(const gml_gpt *m, int l) { return l == 0 ? m->encoded : m->ba[l - 1].res3; }

static gml_status layer_forward(gml_gpt *m, const layer *ly, float dscale, int with_targets) {
    const struct gml_backend_i *o = m->be->iface;
    gml_backend *be = m->be;
    int B = m->B, T = m->T, C = m->cfg.n_embd, N = B * T;
    switch (ly->kind) {
    case LAYER_EMBED:
        GML_CHECK(o->encoder_forward(be, m->encoded, m->tokens, cp(m, m->i_wte), cp(m, m->i_wpe), B, T, C));
        return m->dropout_on ? drop(m, m->encoded, m->encoded, (size_t)N * C, SITE_EMBED) : GML_OK;
    case LAYER_BLOCK:
        return block_forward(m, ly->block, block_input(m, ly->block));
    case LAYER_HEAD: { /* ln_f came with the last block's residual add (norm_after_block) */
        const int Vp = m->cfg.padded_vocab_size, V = m->cfg.vocab_size;
        /* more sequences than one piece holds: piece by piece, each piece's
         * logits gradient used (the head's backward) before the next piece
         * overwrites it (see gml_gpt_config.head_chunks); else one piece
         * whose logits stay for backward / logits_row */
        const int pieces = B > m->head_bc, step = pieces ? m->head_bc : B;
        if (pieces && !with_targets)
            return gml_error_set(GML_ERR_INVALID_ARG, "a forward without targets keeps the logits of at most %d "
                                 "sequences (head_chunks = %d); this one has %d", m->head_bc, m->cfg.head_chunks, B);
        /* the head's backward runs here: the tied wte's gradient window now
         * (a provider's; it stays held until the embedding's backward) */
        if (pieces && dscale != 0.0f) GML_CHECK(unit_grads_acquire(m, 0));
        for (int b0 = 0; b0 < B; b0 += step) {
            int n = (B - b0 < step ? B - b0 : step) * T;
            size_t r0 = (size_t)b0 * (size_t)T;
            const void *x = act_at(m, m->lnf, r0 * (size_t)C);
            GML_CHECK(o->matmul_forward(be, m->logits, x, cp(m, m->i_wte), NULL, n, C, Vp));
            if (with_targets)
                GML_CHECK(o->classifier_forward_backward(be, m->losses + r0, m->logits, m->targets + r0, dscale, n,
                                                         V, Vp));
            if (pieces && dscale != 0.0f)
                GML_CHECK(o->matmul_backward(be, act_at(m, m->dbuf_c, r0 * (size_t)C), gp(m, m->i_wte), NULL,
                                             m->logits, x, cp(m, m->i_wte), n, C, Vp));
            m->logits_r0 = r0;
            m->logits_n = (size_t)n;
        }
        m->head_done = pieces && dscale != 0.0f;
        return GML_OK;
    }
    }
    return gml_error_set(GML_ERR_INTERNAL, "unknown layer kind %d", (int)ly->kind);
}

static gml_status layer_backward(gml_gpt *m, const layer *ly) {
    const struct gml_backend_i *o = m->be->iface;
    gml_backend *be = m->be;
    int B = m->B, T = m->T, C = m->cfg.n_embd, N = B * T;
    switch (ly->kind) {
    case LAYER_EMBED: {
        if (m->dropout_on) GML_CHECK(drop(m, m->dresidual, m->dresidual, (size_t)N * C, SITE_EMBED));
        if (!m->gather_fn)
            return o->encoder_backward(be, gp(m, m->i_wte), gp(m, m->i_wpe), m->dresidual, m->tokens, B, T, C);
        /* every rank's rows: the scatter of all of them is the sum over ranks */
        const void *dx_all = NULL;
        const int32_t *tok_all = NULL;
        int ways = 0;
        GML_CHECK(m->gather_fn(m->gather_ctx, m->dresidual, m->tokens, (size_t)N, (size_t)C * m->as, &dx_all,
                               &tok_all, &ways));
        return o->encoder_backward(be, gp(m, m->i_wte), gp(m, m->i_wpe), dx_all, tok_all, B * ways, T, C);
    }
    case LAYER_BLOCK:
        return block_backward(m, ly->block, block_input(m, ly->block));
    case LAYER_HEAD: {
        const void *x = block_input(m, m->cfg.n_layer);
        if (!m->head_done) /* else the forward did it piece by piece (head_chunks) */
            GML_CHECK(o->matmul_backward(be, m->dbuf_c, gp(m, m->i_wte), NULL, m->logits, m->lnf, cp(m, m->i_wte),
                                         N, C, m->cfg.padded_vocab_size));
        GML_CHECK(o->memset_zero(be, m->dresidual, (size_t)N * C * m->as));
        return o->layernorm_backward(be, m->dresidual, gp(m, m->i_lnfw), gp(m, m->i_lnfb), m->dbuf_c, x,
                                     cp(m, m->i_lnfw), m->lnf_mean, m->lnf_rstd, N, C);
    }
    }
    return gml_error_set(GML_ERR_INTERNAL, "unknown layer kind %d", (int)ly->kind);
}

/* Check and upload a micro-batch, and set what the forward of it needs. */
static gml_status stage_inputs(gml_gpt *m, const int32_t *inputs, const int32_t *targets, int B, int T,
                               float dscale) {
    if (B < 1 || B > m->B_max || T < 1 || T > m->T_max)
        return gml_error_set(GML_ERR_INVALID_ARG, "micro-batch %dx%d exceeds the model's %dx%d", B, T, m->B_max,
                             m->T_max);
    gml_backend *be = m->be;
    size_t N = (size_t)B * (size_t)T;
    for (size_t i = 0; i < N; i++) {
        if (inputs[i] < 0 || inputs[i] >= m->cfg.vocab_size || (targets && (targets[i] < 0 ||
                                                                            targets[i] >= m->cfg.vocab_size)))
            return gml_error_set(GML_ERR_BAD_INPUT, "token id at position %zu is outside the vocabulary [0, %d)",
                                 i, m->cfg.vocab_size);
    }
    GML_CHECK(be->iface->memcpy_h2d(be, m->tokens, inputs, N * 4));
    if (targets) GML_CHECK(be->iface->memcpy_h2d(be, m->targets, targets, N * 4));
    m->B = B;
    m->T = T;
    m->has_grad_logits = 0;
    m->dropout_on = targets != NULL && dscale != 0.0f && m->cfg.dropout > 0.0f;
    return GML_OK;
}

/* The provider calls around layer i's forward (unit i; no-ops without a
 * provider). Before: its unit (the head: also unit 0, the tied wte), and
 * the next unit started on its way so the transfer overlaps this layer's
 * compute; the last block also starts unit 0 for the head. Block i's closing
 * norm acquires unit i+1 itself (block_forward). After: the unit goes back,
 * except the head's units after a training forward, which its backward
 * reads next. */
static gml_status forward_begin(gml_gpt *m, int i) {
    int head = m->n_layers - 1;
    GML_CHECK(unit_acquire(m, i));
    if (i == head) return unit_acquire(m, 0);
    GML_CHECK(unit_prefetch(m, i + 1));
    return i + 1 == head ? unit_prefetch(m, 0) : GML_OK;
}

static gml_status forward_end(gml_gpt *m, int i, int training) {
    if (i < m->n_layers - 1) return unit_release(m, i);
    return training ? GML_OK : release_all(m);
}

static gml_status run_forward(gml_gpt *m, float dscale, int with_targets) {
    int training = with_targets && dscale != 0.0f;
    if (m->has_prov) GML_CHECK(release_all(m)); /* a training forward's head units, never back-propagated */
    else GML_CHECK(need_provider(m));
    for (int i = 0; i < m->n_layers; i++) {
        if (m->has_prov) GML_CHECK(forward_begin(m, i));
        GML_CHECK(layer_forward(m, &m->layers[i], dscale, with_targets));
        if (m->has_prov) GML_CHECK(forward_end(m, i, training));
    }
    m->has_grad_logits = training;
    return GML_OK;
}

gml_status gml_gpt_forward(gml_gpt *m, const int32_t *inputs, const int32_t *targets, int B, int T, float dscale) {
    GML_CHECK(stage_inputs(m, inputs, targets, B, T, dscale));
    return run_forward(m, dscale, targets != NULL);
}

void gml_gpt_set_dropout_key(gml_gpt *m, uint64_t key, uint64_t first_row) {
    m->dropout_key = key;
    m->dropout_first_row = first_row;
}

void gml_gpt_set_grads_ready_hook(gml_gpt *m, gml_grads_ready_fn fn, void *ctx, int recordable) {
    m->ready_fn = fn;
    m->ready_ctx = ctx;
    m->ready_recordable = fn && recordable;
}

/* Flat range of the parameters a layer owns (registry order: wte, wpe,
 * blocks 0..L-1, ln_f). */
static void layer_range(const gml_gpt *m, const layer *ly, size_t *lo, size_t *hi) {
    const gml_param_spec *s = m->reg.specs;
    int first, last;
    switch (ly->kind) {
    case LAYER_EMBED: first = m->i_wte, last = m->i_wpe; break;
    case LAYER_BLOCK: first = m->bp[ly->block].idx[0], last = m->bp[ly->block].idx[P_BLOCK_COUNT - 1]; break;
    default: first = m->i_lnfw, last = m->i_lnfb; break;
    }
    *lo = s[first].offset < s[last].offset ? s[first].offset : s[last].offset;
    size_t a = s[first].offset + s[first].numel, b = s[last].offset + s[last].numel;
    *hi = a > b ? a : b;
}

/* The provider calls around layer i's backward. Before: its unit's
 * parameters (the embedding reads none; the head also reads wte), the
 * previous block's started on their way, and gradient windows for its unit
 * (the head: also unit 0's, which the embedding's backward completes: wte is
 * tied). After: parameters back, and the unit's gradients handed over. */
static gml_status backward_begin(gml_gpt *m, int i) {
    int head = m->n_layers - 1;
    if (i > 0) GML_CHECK(unit_acquire(m, i));
    if (i == head) GML_CHECK(unit_acquire(m, 0));
    if (i - 1 >= 1) GML_CHECK(unit_prefetch(m, i - 1));
    GML_CHECK(unit_grads_acquire(m, i));
    return i == head ? unit_grads_acquire(m, 0) : GML_OK;
}

static gml_status backward_end(gml_gpt *m, int i) {
    GML_CHECK(unit_release(m, i));
    if (i == m->n_layers - 1) GML_CHECK(unit_release(m, 0));
    return unit_grads_release(m, i);
}

static gml_status run_backward(gml_gpt *m) {
    const int head = m->n_layers - 1;
    for (int i = head; i >= 0; i--) {
        if (m->has_prov) GML_CHECK(backward_begin(m, i));
        GML_CHECK(layer_backward(m, &m->layers[i]));
        if (m->has_prov) GML_CHECK(backward_end(m, i));
        if (!m->ready_fn || (i == 0 && m->gather_fn)) continue;
        GML_CHECK(m->ready_fn(m->ready_ctx, m->unit_lo[i], m->unit_hi[i]));
        /* with the encoder's rows exchanged, unit 0 (wte, wpe) is final for the
         * hook once the head (the tied wte's other user) is done */
        if (i == head && m->gather_fn) GML_CHECK(m->ready_fn(m->ready_ctx, m->unit_lo[0], m->unit_hi[0]));
    }
    if (m->has_prov) GML_CHECK(m->prov.grads_finish(m->prov.ctx));
    m->has_grad_logits = 0;
    return GML_OK;
}

gml_status gml_gpt_backward(gml_gpt *m) {
    if (!m->has_grad_logits)
        return gml_error_set(GML_ERR_INVALID_ARG, "backward without a training forward (targets and dscale)");
    return run_backward(m);
}

/* ------------------------------------------------------------------ */
/* a training micro-step, recorded once and replayed (backend graph_*) */

static void graph_drop_slot(gml_gpt *m, micro_graph *g) {
    if (g->graph) m->be->iface->graph_free(m->be, g->graph);
    memset(g, 0, sizeof *g);
}

static void graph_drop(gml_gpt *m) {
    for (int i = 0; i < 2; i++) graph_drop_slot(m, &m->graphs[i]);
}

/* The device work of a micro-step after stage_inputs. */
static gml_status micro_body(gml_gpt *m, float dscale, float *loss_acc) {
    GML_CHECK(run_forward(m, dscale, 1));
    GML_CHECK(gml_gpt_loss_accumulate(m, loss_acc));
    return run_backward(m);
}

/* Record the micro-step's work into slot g and keep the recording; on any
 * failure end the recording, switch recording off for this model and say so
 * once. */
static gml_status graph_record(gml_gpt *m, micro_graph *g, float dscale, float *loss_acc) {
    const struct gml_backend_i *o = m->be->iface;
    GML_CHECK(o->graph_begin(m->be));
    gml_status st = micro_body(m, dscale, loss_acc);
    void *rec = NULL;
    gml_status end = o->graph_end(m->be, &rec);
    if (st == GML_OK) st = end;
    if (st != GML_OK) {
        if (rec) o->graph_free(m->be, rec);
        fprintf(stderr, "gml-dist: note: recording the training step as a CUDA graph failed (%s); running it "
                        "launch by launch\n", gml_error_message());
        m->graph_off = 1;
        graph_drop(m);
        /* nothing recorded ran: run it now (the hook's work was recorded too) */
        return micro_body(m, dscale, loss_acc);
    }
    g->graph = rec;
    int stale = 0;
    GML_CHECK(o->graph_launch(m->be, rec, &stale));
    return stale ? micro_body(m, dscale, loss_acc) : GML_OK;
}

gml_status gml_gpt_train_micro(gml_gpt *m, const int32_t *inputs, const int32_t *targets, int B, int T, float dscale,
                               float *loss_acc) {
    m->replayed = 0;
    if (!targets || dscale == 0.0f)
        return gml_error_set(GML_ERR_INVALID_ARG, "a training micro-step needs targets and dscale != 0");
    GML_CHECK(stage_inputs(m, inputs, targets, B, T, dscale));
    const struct gml_backend_i *o = m->be->iface;
    int can = o->graph_begin && !m->graph_off && !m->has_prov && !m->dropout_on &&
              (!m->ready_fn || m->ready_recordable);
    if (!can) {
        graph_drop(m);
        return micro_body(m, dscale, loss_acc);
    }
    micro_graph *g = &m->graphs[m->ready_fn != NULL];
    int same = g->seen && g->B == B && g->T == T && g->dscale == dscale && g->acc == loss_acc && g->fn == m->ready_fn &&
               g->ctx == m->ready_ctx && g->gather == m->gather_fn;
    if (!same) graph_drop_slot(m, g);
    if (g->graph) {
        int stale = 0;
        GML_CHECK(o->graph_launch(m->be, g->graph, &stale));
        if (!stale) {
            m->has_grad_logits = 0;
            m->replayed = 1;
            return GML_OK;
        }
        graph_drop(m); /* scratch moved: run once unrecorded, record next time */
        same = 0;
    }
    if (same) return graph_record(m, g, dscale, loss_acc);
    /* first time with these arguments: run unrecorded, so every lazily
     * allocated workspace exists before a recording */
    *g = (micro_graph){NULL, 1, B, T, dscale, loss_acc, m->ready_fn, m->ready_ctx, m->gather_fn};
    return micro_body(m, dscale, loss_acc);
}

int gml_gpt_micro_replayed(const gml_gpt *m) { return m->replayed; }

void gml_gpt_set_encoder_gather(gml_gpt *m, gml_encoder_gather_fn fn, void *ctx) {
    m->gather_fn = fn;
    m->gather_ctx = ctx;
}

gml_status gml_gpt_loss_accumulate(gml_gpt *m, float *acc_dev) {
    return m->be->iface->sum_accumulate(m->be, acc_dev, m->losses, (size_t)m->B * (size_t)m->T);
}

gml_status gml_gpt_logits_row(gml_gpt *m, int b, int t, float *out) {
    if (m->has_grad_logits)
        return gml_error_set(GML_ERR_INVALID_ARG, "logits were replaced by their gradient");
    if (b < 0 || b >= m->B || t < 0 || t >= m->T)
        return gml_error_set(GML_ERR_INVALID_ARG, "row (%d,%d) outside the last forward %dx%d", b, t, m->B, m->T);
    size_t row = (size_t)b * (size_t)m->T + (size_t)t;
    if (row < m->logits_r0 || row >= m->logits_r0 + m->logits_n)
        return gml_error_set(GML_ERR_INVALID_ARG, "row (%d,%d): the head ran in pieces and keeps rows %zu-%zu only",
                             b, t, m->logits_r0, m->logits_r0 + m->logits_n - 1);
    const void *src = act_at(m, m->logits, (row - m->logits_r0) * (size_t)m->cfg.padded_vocab_size);
    return m->be->iface->download_f32(m->be, out, src, m->be->act_dtype, (size_t)m->cfg.vocab_size);
}
