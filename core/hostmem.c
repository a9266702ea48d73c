/* hostmem.c — large host buffers, faulted in before use (core/hostmem.h). */
#define _DEFAULT_SOURCE /* madvise and MADV_HUGEPAGE (Linux), beside _POSIX_C_SOURCE */
#include "core/hostmem.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define HUGE_PAGE ((size_t)2 << 20)

void *gml_host_alloc_touched(size_t bytes) {
    if (bytes == 0) bytes = 1;
    size_t n = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    if (n < bytes) return NULL; /* overflow */
    void *p = NULL;
    if (posix_memalign(&p, HUGE_PAGE, n) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    (void)madvise(p, n, MADV_HUGEPAGE); /* a hint: without THP the 4 KiB faults below still run in parallel */
#endif
    /* one write per 4 KiB faults every page in; a huge page's first write
     * maps all 2 MiB of it. memset of each 2 MiB piece keeps the writes in
     * order within a piece. */
    long pieces = (long)(n / HUGE_PAGE);
#pragma omp parallel for schedule(static)
    for (long i = 0; i < pieces; i++) memset((char *)p + (size_t)i * HUGE_PAGE, 0, HUGE_PAGE);
    return p;
}
