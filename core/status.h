/* status.h — error values for all of gml-dist.
 *
 * Library-style code (everything outside launcher/) returns gml_status and
 * propagates it with GML_CHECK / GML_CHECK_GOTO (NCCL's habit). The first
 * failure records a message with file:line in a thread-local buffer
 * (gml_error_set); only the launcher turns it into text on stderr and an exit
 * code (gml_status_exit_code). Not for: logging progress (launcher/metrics).
 */
#ifndef GML_STATUS_H
#define GML_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    GML_OK = 0,
    GML_ERR_INVALID_ARG,  /* a caller passed something impossible (a bug) */
    GML_ERR_BAD_INPUT,    /* user input: config, data file, flag (exit 2) */
    GML_ERR_IO,           /* open/read/write failed */
    GML_ERR_NOMEM,        /* host or device allocation failed */
    GML_ERR_NO_DEVICE,    /* the backend asked for has no device here */
    GML_ERR_BACKEND,      /* CUDA / cuBLAS / OpenBLAS call failed */
    GML_ERR_COMM,         /* MPI / NCCL failure */
    GML_ERR_NUMERIC,      /* NaN / Inf where a number was required */
    GML_ERR_UNSUPPORTED,  /* valid request this build cannot do */
    GML_ERR_INTERNAL,
    GML_PREEMPTED         /* not an error: stopped on SIGTERM/SIGUSR1 after committing a
                             checkpoint; exit code 3 tells a batch script to requeue */
} gml_status;

/* Record the first error's message (printf-style), with where it happened.
 * Returns `st` so it can be used as `return gml_error_set(...)`. */
gml_status gml_error_set_at(gml_status st, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define gml_error_set(st, ...) gml_error_set_at((st), __FILE__, __LINE__, __VA_ARGS__)

/* The recorded message ("" if none). Owned by the library; valid until the
 * next gml_error_clear on this thread. */
const char *gml_error_message(void);
void gml_error_clear(void);

const char *gml_status_name(gml_status st);
/* Exit codes a batch script can act on: 0 ok, 2 bad user input, 3 preempted
 * with a checkpoint committed (requeue and --resume auto), 1 other. */
#define GML_EXIT_REQUEUE 3
int gml_status_exit_code(gml_status st);

#define GML_CHECK(call)                                                                  \
    do {                                                                                 \
        gml_status gml_st_ = (call);                                                     \
        if (gml_st_ != GML_OK) return gml_st_;                                           \
    } while (0)

/* Jumps to `label` with `st` (a gml_status variable in scope) set. */
#define GML_CHECK_GOTO(call, st, label)                                                  \
    do {                                                                                 \
        (st) = (call);                                                                   \
        if ((st) != GML_OK) goto label;                                                  \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif
