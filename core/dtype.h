/* dtype.h — element types and the host-side bf16 conversions.
 *
 * bf16 rounding is round-to-nearest-even, the same as CUDA's __float2bfloat16,
 * so host and device agree bit for bit. Not for: device code (kernels/cuda
 * uses cuda_bf16.h).
 */
#ifndef GML_DTYPE_H
#define GML_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    GML_DTYPE_F32 = 0,
    GML_DTYPE_BF16 = 1,
    GML_DTYPE_I32 = 2,
    GML_DTYPE_U16 = 3,
    GML_DTYPE_U32 = 4
} gml_dtype;

static inline size_t gml_dtype_size(gml_dtype dt) {
    switch (dt) {
    case GML_DTYPE_F32: return 4;
    case GML_DTYPE_BF16: return 2;
    case GML_DTYPE_I32: return 4;
    case GML_DTYPE_U16: return 2;
    case GML_DTYPE_U32: return 4;
    }
    return 0;
}

static inline const char *gml_dtype_name(gml_dtype dt) {
    switch (dt) {
    case GML_DTYPE_F32: return "f32";
    case GML_DTYPE_BF16: return "bf16";
    case GML_DTYPE_I32: return "i32";
    case GML_DTYPE_U16: return "u16";
    case GML_DTYPE_U32: return "u32";
    }
    return "?";
}

static inline uint16_t gml_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float gml_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#ifdef __cplusplus
}
#endif
#endif
