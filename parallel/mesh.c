/* mesh.c — world rank <-> (dp, pp, tp) coordinates and one comm group per
 * axis. See mesh.h for the rank order. */
#include "parallel/mesh.h"

#include <stdlib.h>

gml_status gml_mesh_create(int dp, int pp, int tp, gml_mesh **out) {
    *out = NULL;
    gml_comm *w = NULL;
    GML_CHECK(gml_comm_world(&w));
    int world = gml_comm_size(w), rank = gml_comm_rank(w);
    if (dp < 1 || pp < 1 || tp < 1 || (long long)dp * pp * tp != world) {
        gml_comm_destroy(w);
        return gml_error_set(GML_ERR_BAD_INPUT,
                             "parallel.dp x parallel.pp x parallel.tp = %d x %d x %d = %lld, but the job has %d "
                             "rank(s) ---> HINT: start it with mpirun -np %lld, or set the layout to match",
                             dp, pp, tp, (long long)dp * pp * tp, world, (long long)dp * pp * tp);
    }
    gml_mesh *m = calloc(1, sizeof *m);
    if (!m) {
        gml_comm_destroy(w);
        return gml_error_set(GML_ERR_NOMEM, "out of host memory");
    }
    m->world = world;
    m->rank = rank;
    m->dp = dp, m->pp = pp, m->tp = tp;
    m->tp_rank = rank % tp;
    m->pp_rank = (rank / tp) % pp;
    m->dp_rank = rank / (tp * pp);
    m->world_c = w;
    gml_status st = GML_OK;
    GML_CHECK_GOTO(gml_comm_split(w, m->pp_rank * tp + m->tp_rank, m->dp_rank, "dp", &m->dp_c), st, fail);
    GML_CHECK_GOTO(gml_comm_split(w, m->dp_rank * tp + m->tp_rank, m->pp_rank, "pp", &m->pp_c), st, fail);
    GML_CHECK_GOTO(gml_comm_split(w, m->dp_rank * pp + m->pp_rank, m->tp_rank, "tp", &m->tp_c), st, fail);
    *out = m;
    return GML_OK;
fail:
    gml_mesh_destroy(m);
    return st;
}

void gml_mesh_destroy(gml_mesh *m) {
    if (!m) return;
    gml_comm_destroy(m->tp_c);
    gml_comm_destroy(m->pp_c);
    gml_comm_destroy(m->dp_c);
    gml_comm_destroy(m->world_c);
    free(m);
}
