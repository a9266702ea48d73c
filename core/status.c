/* status.c — the first-error buffer behind gml_error_set and the status
 * names and exit codes the launcher prints. */
#include "core/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char err_buf[2048];
static _Thread_local int err_set;

gml_status gml_error_set_at(gml_status st, const char *file, int line, const char *fmt, ...) {
    if (err_set) return st; /* keep the first, deepest cause */
    int n = snprintf(err_buf, sizeof err_buf, "%s:%d: ", file, line);
    if (n < 0 || (size_t)n >= sizeof err_buf) n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf + n, sizeof err_buf - (size_t)n, fmt, ap);
    va_end(ap);
    err_set = 1;
    return st;
}

const char *gml_error_message(void) { return err_set ? err_buf : ""; }

void gml_error_clear(void) {
    err_set = 0;
    err_buf[0] = '\0';
}

const char *gml_status_name(gml_status st) {
    switch (st) {
    case GML_OK: return "ok";
    case GML_ERR_INVALID_ARG: return "invalid argument";
    case GML_ERR_BAD_INPUT: return "bad input";
    case GML_ERR_IO: return "I/O error";
    case GML_ERR_NOMEM: return "out of memory";
    case GML_ERR_NO_DEVICE: return "no device";
    case GML_ERR_BACKEND: return "backend error";
    case GML_ERR_COMM: return "communication error";
    case GML_ERR_NUMERIC: return "numeric error";
    case GML_ERR_UNSUPPORTED: return "unsupported";
    case GML_ERR_INTERNAL: return "internal error";
    case GML_PREEMPTED: return "preempted";
    }
    return "unknown status";
}

int gml_status_exit_code(gml_status st) {
    if (st == GML_OK) return 0;
    if (st == GML_ERR_BAD_INPUT) return 2;
    if (st == GML_PREEMPTED) return GML_EXIT_REQUEUE;
    return 1;
}
