/* fsutil.c — file-system helpers (see fsutil.h). */
#include "core/fsutil.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* mkdir -p: create `path` and its missing parents (0777 & ~umask). */
gml_status gml_mkdir_p(const char *path) {
    size_t n = strlen(path);
    char *buf = malloc(n + 1);
    if (!buf) return gml_error_set(GML_ERR_NOMEM, "out of memory for a path of %zu bytes", n);
    memcpy(buf, path, n + 1);
    gml_status st = GML_OK;
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
            st = gml_error_set(GML_ERR_IO, "cannot create directory '%s': %s", buf, strerror(errno));
            break;
        }
        buf[i] = c;
    }
    if (st == GML_OK) {
        struct stat sb;
        if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
            st = gml_error_set(GML_ERR_IO, "'%s' is not a directory", path);
    }
    free(buf);
    return st;
}
