/* crc32c.h — CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), and the
 * "masked" form TFRecord files store.
 *
 * Used for TensorBoard event files (launcher/tb_writer.c) and the pieces of
 * every checkpoint (checkpoint/rankfile.c: 18.7 GB per save and per resume
 * of GPT-2 1.5B). x86-64 CPUs with SSE4.2 run the crc32 instruction (chosen
 * at run time); others the tables (slicing-by-8, about 1-2 GB/s on one core).
 * Thread-safe. Not for: cryptographic integrity.
 */
#ifndef GML_CRC32C_H
#define GML_CRC32C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Continue a CRC over `n` more bytes. Start with crc = 0; the value returned
 * is the finished CRC of everything so far (pre/post inversion is inside), so
 * gml_crc32c_update(gml_crc32c_update(0, a, na), b, nb) == crc of a||b. */
uint32_t gml_crc32c_update(uint32_t crc, const void *data, size_t n);

/* gml_crc32c_update on the tables alone, whatever the CPU (for tests). */
uint32_t gml_crc32c_update_tables(uint32_t crc, const void *data, size_t n);
/* 1: gml_crc32c_update runs the CPU's CRC-32C instruction. */
int gml_crc32c_hardware(void);

/* CRC-32C of `n` bytes. gml_crc32c("123456789", 9) == 0xE3069283. */
uint32_t gml_crc32c(const void *data, size_t n);

/* TFRecord's masking: ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2^32). */
uint32_t gml_crc32c_mask(uint32_t crc);
/* The inverse of gml_crc32c_mask. */
uint32_t gml_crc32c_unmask(uint32_t masked);

#ifdef __cplusplus
}
#endif
#endif
