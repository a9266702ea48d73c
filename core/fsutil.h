/* fsutil.h — small file-system helpers shared by the modules that write
 * outputs (metrics, TensorBoard, weights, checkpoints). */
#ifndef GML_FSUTIL_H
#define GML_FSUTIL_H

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* mkdir -p: create `path` and its missing parents (0777 & ~umask); an
 * existing directory is fine. GML_ERR_IO names the part that failed. */
gml_status gml_mkdir_p(const char *path);

#ifdef __cplusplus
}
#endif
#endif
