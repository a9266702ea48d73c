/* ops_loss.c — the CPU's loss and optimizer ops: the fused softmax
 * cross-entropy classifier (per-row loss, and the logits' gradient written in
 * place), the sum / sum-of-squares reductions, and the AdamW update.
 *
 * The classifier splits rows over OpenMP threads (a row is one task); the
 * reductions run serially in index order with a double accumulator, so they
 * are deterministic and accurate. AdamW is element-wise, f32 like the CUDA
 * kernel, with the bias corrections computed in double; the multi-tensor form
 * runs the pieces one after the other.
 * Not for: optimizer policy (core/optim.h), cross-rank sums (comm/).
 */
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu_impl.h"

gml_status gml_cpu_classifier_forward_backward(gml_backend *be, float *losses, void *logits_, const int32_t *targets,
                                               float dscale, int N, int V, int Vp) {
    if (N < 0) return gml_error_set(GML_ERR_INVALID_ARG, "classifier_forward_backward: N = %d", N);
    if (N == 0) return GML_OK;
    if (V <= 0 || Vp < V)
        return gml_error_set(GML_ERR_INVALID_ARG, "classifier_forward_backward: V=%d Vp=%d (need 0 < V <= Vp)", V, Vp);
    for (int i = 0; i < N; i++)
        if (targets[i] < 0 || targets[i] >= V)
            return gml_error_set(GML_ERR_INVALID_ARG,
                                 "classifier_forward_backward: target %d of row %d is outside [0, %d)", (int)targets[i],
                                 i, V);
    float *logits = logits_; /* (N, Vp) in place; losses (N) =; targets (N) */

#pragma omp parallel for schedule(static) if ((size_t)N * Vp >= GML_CPU_PAR_MIN)
    for (int i = 0; i < N; i++) {
        float *x = logits + (size_t)i * Vp;
        const int tgt = targets[i];
        float mx = x[0];
        for (int c = 1; c < V; c++)
            if (x[c] > mx) mx = x[c];
        double sum = 0.0;
        for (int c = 0; c < V; c++)
            sum += exp((double)x[c] - mx);
        const double lse = mx + log(sum);
        losses[i] = (float)(lse - x[tgt]);
        if (dscale == 0.0f) continue;
        for (int c = 0; c < V; c++) {
            const float p = (float)exp((double)x[c] - lse);
            x[c] = (p - (c == tgt ? 1.0f : 0.0f)) * dscale;
        }
        for (int c = V; c < Vp; c++)
            x[c] = 0.0f;
    }
    return GML_OK;
}

gml_status gml_cpu_sum_accumulate(gml_backend *be, float *acc, const float *x, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += x[i];
    *acc = (float)((double)*acc + s);
    return GML_OK;
}

gml_status gml_cpu_sumsq_accumulate(gml_backend *be, float *acc, const float *x, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    *acc = (float)((double)*acc + s);
    return GML_OK;
}

/* p -= lr * ((m / bc1) / (sqrt(v / bc2) + eps) + wd * p), bc1 = 1 - b1^t, bc2 = 1 - b2^t;
 * param_act NULL: no act copy (it is the f32 param itself here) */
static void adamw_range(float *param, float *param_act, const float *grad, float *m, float *v, size_t n, float lr,
                        float beta1, float beta2, float eps, float weight_decay, float grad_scale, float bc1,
                        float bc2) {
    const long long nn = (long long)n;
#pragma omp parallel for schedule(static) if (n >= GML_CPU_PAR_MIN)
    for (long long i = 0; i < nn; i++) {
        const float g = grad[i] * grad_scale;
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        float p = param[i];
        const float mhat = mi / bc1, vhat = vi / bc2;
        p -= lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * p);
        m[i] = mi;
        v[i] = vi;
        param[i] = p;
        if (param_act) param_act[i] = p;
    }
}

gml_status gml_cpu_adamw_update(gml_backend *be, float *param, void *param_act_, const float *grad, float *m, float *v,
                                size_t n, float lr, float beta1, float beta2, float eps, float weight_decay,
                                float grad_scale, int t) {
    if (t < 1) return gml_error_set(GML_ERR_INVALID_ARG, "adamw_update: step t = %d, must be >= 1", t);
    float *param_act = param_act_ != (void *)param ? param_act_ : NULL; /* (n) f32 or NULL */
    const float bc1 = (float)(1.0 - pow((double)beta1, (double)t));
    const float bc2 = (float)(1.0 - pow((double)beta2, (double)t));
    adamw_range(param, param_act, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, grad_scale, bc1, bc2);
    return GML_OK;
}

/* The pieces one after the other (each its own OpenMP loop), the same
 * arithmetic per element as gml_cpu_adamw_update. */
gml_status gml_cpu_adamw_update_pieces(gml_backend *be, float *param, void *param_act_, const float *grad, float *m,
                                       float *v, const gml_adamw_piece *pieces, int n_pieces, size_t total, float lr,
                                       float beta1, float beta2, float eps, float weight_decay, float grad_scale,
                                       int t) {
    if (t < 1) return gml_error_set(GML_ERR_INVALID_ARG, "adamw_update_pieces: step t = %d, must be >= 1", t);
    if (n_pieces < 0) return gml_error_set(GML_ERR_INVALID_ARG, "adamw_update_pieces: %d pieces", n_pieces);
    float *param_act = param_act_ != (void *)param ? param_act_ : NULL; /* f32 or NULL */
    const float bc1 = (float)(1.0 - pow((double)beta1, (double)t));
    const float bc2 = (float)(1.0 - pow((double)beta2, (double)t));
    size_t flat = 0;
    for (int k = 0; k < n_pieces; k++) {
        const gml_adamw_piece *p = &pieces[k]; /* (host memory: this backend's "device") */
        if (p->flat_off != flat)
            return gml_error_set(GML_ERR_INVALID_ARG, "adamw_update_pieces: piece %d has flat_off %llu, want %zu", k,
                                 (unsigned long long)p->flat_off, flat);
        adamw_range(param + p->param_off, param_act ? param_act + p->param_off : NULL, grad + p->state_off,
                    m + p->state_off, v + p->state_off, (size_t)p->numel, lr, beta1, beta2, eps,
                    p->decay ? weight_decay : 0.0f, grad_scale, bc1, bc2);
        flat += (size_t)p->numel;
    }
    if (flat != total)
        return gml_error_set(GML_ERR_INVALID_ARG, "adamw_update_pieces: pieces hold %zu elements, total is %zu", flat,
                             total);
    return GML_OK;
}
