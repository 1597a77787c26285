/* quant.h: ggml's packed weight formats (the block types GGUF files carry),
 * their sizes, and the scalar reference dequantization.
 *
 * This module knows block layouts only, never files: a caller hands it the
 * bytes of a row of blocks and the number of weights. A row of N weights of a
 * quantized type is N / block_weights consecutive blocks of block_bytes each,
 * every multi-byte field little-endian, no padding, no alignment required
 * (fields are read byte by byte, so a view straight into a mapped file works
 * at any offset). The layouts (from ggml's ggml-common.h; d, dmin, m are
 * IEEE binary16):
 *
 *   Q8_0  32 w / 34 B   d, int8 q[32]                       w = d*q
 *   Q4_0  32 w / 18 B   d, q[16] nibbles                    w = d*(q-8)
 *   Q4_1  32 w / 20 B   d, m, q[16] nibbles                 w = d*q + m
 *   Q5_0  32 w / 22 B   d, qh u32, q[16] nibbles            w = d*(q-16)
 *   Q5_1  32 w / 24 B   d, m, qh u32, q[16] nibbles         w = d*q + m
 *       (32-weight blocks: byte j holds weight j in its low nibble and weight
 *        j+16 in its high one; bit k of qh is bit 4 of weight k)
 *   Q4_K 256 w / 144 B  d, dmin, scales[12], q[128] nibbles
 *   Q5_K 256 w / 176 B  d, dmin, scales[12], qh[32], q[128] nibbles
 *       (8 sub-blocks of 32 with 6-bit scale sc and min mn packed in
 *        scales[12]; w = d*sc*q - dmin*mn; sub-block j takes the low nibbles
 *        of bytes 32*(j/2).. when j is even, the high ones when odd; Q5_K's
 *        bit 4 of weight l of sub-block j is bit j of qh[l])
 *   Q6_K 256 w / 210 B  ql[128], qh[64], int8 scales[16], d
 *       (16 sub-blocks of 16 with an int8 scale; w = d*sc*(q-32), q 6 bits)
 *   F32, F16, BF16: one weight per "block" of 4, 2, 2 bytes.
 *
 * Exactness: every product in these formulas is exact in float: d has 11
 * significant bits and |scale * quant| <= 128 * 32 = 2^12 (Q6_K, the widest),
 * so any product needs at most 23 of float's 24. A weight is therefore the
 * exact value of its formula rounded once to float (where the formula adds
 * m or subtracts dmin*mn; the others are exact). Any correct implementation,
 * whatever the order of its multiplications, gives the same bits (signed
 * zeros too, as long as the add or subtract is the one written): that is
 * what the tests check. */
#ifndef FY_KERNELS_CPU_QUANT_H
#define FY_KERNELS_CPU_QUANT_H

#include "kernels/backend.h"

#include <stddef.h>
#include <stdint.h>

/* The types are kernels/backend.h's fy_dtype (with their names and block
 * sizes there). */

/* Field readers shared by the dequantizer and the matmul kernels' unpackers
 * (little-endian, any alignment). */
static inline uint16_t fy__q_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t fy__q_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline float fy__q_half(const uint8_t *p)
{
    return fy_f16_to_f32(fy__q_u16(p));
}

/* The K-quants' 12 bytes of 6-bit scales and mins for 8 sub-blocks: bytes
 * 0-3 hold scales 0-3 in their low 6 bits, bytes 4-7 mins 0-3 likewise;
 * scale/min j >= 4 has its low 4 bits in byte j+4 (scale low nibble, min high
 * nibble) and its top 2 bits in the top 2 bits of byte j-4 (scale) or j
 * (min). */
static inline void fy__q_k_scale_min(const uint8_t *s, int j, int *sc, int *mn)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0f) | (s[j - 4] >> 6) << 4;
        *mn = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
    }
}

/* Dequantizes the first N weights of the row of blocks at SRC into DST[0..N).
 * N must be a multiple of T's block; SRC must hold N / block_weights blocks.
 * Returns 0, or FY_EINVAL (nothing written) for a bad T or N. */
int fy_q_dequant(fy_dtype t, const void *src, float *dst, size_t n);

/* Quantizes N weights (a multiple of T's block) from SRC into N /
 * block_weights blocks at DST, each fitted by weighted least squares
 * (kernels/cpu/quantize.c says how). Deterministic. Returns 0, or FY_EINVAL
 * (DST unspecified) for a bad T or N, or a weight that is NaN or infinite. */
int fy_q_quantize(fy_dtype t, const float *src, void *dst, size_t n);

#endif
