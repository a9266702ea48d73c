/* hostmem.h — large host buffers that a bulk device copy fills at once.
 *
 * A fresh malloc'd buffer gets its pages on first touch, one 4 KiB fault at
 * a time, inside whatever touches it first: for a checkpoint's shard copy
 * that was the copy itself (and cudaHostRegister's pinning), ~3 GB/s where
 * the link moves tens of GB/s. gml_host_alloc_touched asks for 2 MiB pages
 * (MADV_HUGEPAGE, a hint the kernel may ignore) and faults every page in on
 * OpenMP's threads before returning, so the copy into it runs at link speed.
 * Not for: small or short-lived buffers (the touch costs a pass over the
 * memory). Ownership: the caller frees the buffer with free().
 */
#ifndef GML_HOSTMEM_H
#define GML_HOSTMEM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* bytes (0 allowed: a 1-byte buffer) of zeroed, resident host memory, or
 * NULL when out of memory. */
void *gml_host_alloc_touched(size_t bytes);

#ifdef __cplusplus
}
#endif
#endif
