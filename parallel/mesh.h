/* mesh.h — the ranks of a job as a dp x pp x tp mesh (DESIGN.md: parallel/).
 *
 * World rank = (dp_rank * pp + pp_rank) * tp + tp_rank: tensor-parallel
 * peers are adjacent ranks (on one node where possible), then pipeline
 * stages, then data-parallel replicas. Each axis is a comm group of the ranks
 * that differ only in that coordinate.
 * Ownership: gml_mesh_create allocates; gml_mesh_destroy (collective) frees
 * the mesh and its groups.
 */
#ifndef GML_MESH_H
#define GML_MESH_H

#include "comm/comm.h"
#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int world, rank;
    int dp, pp, tp;
    int dp_rank, pp_rank, tp_rank;
    gml_comm *world_c, *dp_c, *pp_c, *tp_c;
} gml_mesh;

/* Collective over the world (gml_comm_init must have run). dp * pp * tp must
 * equal the world size: otherwise GML_ERR_BAD_INPUT naming the product. */
gml_status gml_mesh_create(int dp, int pp, int tp, gml_mesh **out);
void gml_mesh_destroy(gml_mesh *m);

#ifdef __cplusplus
}
#endif
#endif
