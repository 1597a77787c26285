/* mm.h: the CPU backend's matrix multiply, out[T x R] = x[T x K] . W^T + bias,
 * on weights in their stored type (internal to kernels/cpu/).
 *
 * ops_cpu.c owns a fy_mm per backend and routes its matmul op here. The
 * driver (matmul.c) picks a path by the batch size and runs one of the
 * instruction-set kernel tables (fy__mm_kern) below over the thread pool:
 *
 *  - T == 1 (decode): dot products straight on the stored rows, several rows
 *    at a time (a matrix-vector product bounded by memory bandwidth). Block
 *    types first quantize the activation row to 8 bits ("dot formats").
 *  - T > 1 (prefill, batched decode): GEMM. A panel of NR weight rows is
 *    unpacked once into a layout the microkernel streams (f32 for the float
 *    types; unsigned bytes in the VNNI order plus per-sub-block float scales
 *    for the block types) and serves every token; the activations are
 *    quantized once per call into tiles of MR tokens; a microkernel keeps an
 *    MR x NR tile of sums in registers.
 *
 * Every block type is handled by one identity: a weight is
 *     w = dw * (u - o) + m
 * with u an unsigned integer quant, o a per-type integer offset, and dw, m
 * float per sub-block of SB weights (m = 0 but for Q4_1, Q5_1, Q4_K, Q5_K).
 * With activations x ~= dx * qx (qx int8, one dx per block of activations):
 *     sum w x = dw dx (sum u qx - o sum qx) + m dx sum qx
 * The integer part is exact; the offsets fold into the per-block sums of qx.
 *
 * Scratch: all of it is allocated when the backend is created, for a bounded
 * size; the driver chunks T and K to fit, so no call allocates and an
 * out-of-memory can only fail backend creation. */
#ifndef FY_KERNELS_CPU_MM_H
#define FY_KERNELS_CPU_MM_H

#include "kernels/backend.h"
#include "kernels/cpu/pool.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Instruction sets, narrowest first. */
typedef enum {
    FY_ISA_PORTABLE = 0, /* plain C */
    FY_ISA_AVX2,         /* AVX2 + FMA + F16C: maddubs/madd integer dots */
    FY_ISA_AVXVNNI,      /* + AVX-VNNI: vpdpbusd on ymm */
    FY_ISA_AVX512,       /* + AVX512 F/BW/DQ/VL + AVX512-VNNI: vpdpbusd on zmm */
    FY_ISA_COUNT
} fy_cpu_isa;

/* "portable", "avx2", "avxvnni", "avx512". */
const char *fy__cpu_isa_name(fy_cpu_isa isa);
/* 1 when this CPU (and the OS's saved register state) can run ISA. */
int fy__cpu_isa_usable(fy_cpu_isa isa);
/* The widest usable ISA. */
fy_cpu_isa fy__cpu_isa_best(void);
/* The widest usable ISA no wider than WANT (portable always is). */
fy_cpu_isa fy__cpu_isa_cap(fy_cpu_isa want);
/* The ISA the environment asks for: FERRY_CPU_ISA=portable|avx2|avxvnni|avx512,
 * capped to what the CPU has (fy__cpu_isa_cap); unset or empty: the best. An
 * unknown value gives the best and, when MSG is not NULL, a message naming it. */
fy_cpu_isa fy__cpu_isa_from_env(char *msg, size_t msglen);

/* --- The matmul object -------------------------------------------------------------- */

typedef struct fy_mm fy_mm;

/* THREADS: the pool's threads (each gets its own panel buffer). Returns NULL
 * when out of memory. */
fy_mm *fy__mm_new(int threads, fy_cpu_isa isa);
void fy__mm_free(fy_mm *m);
/* Selects the kernels (capped to the CPU); returns the ISA now in use. */
fy_cpu_isa fy__mm_set_isa(fy_mm *m, fy_cpu_isa isa);
fy_cpu_isa fy__mm_isa(const fy_mm *m);
/* The matmul op (kernels/backend.h) on POOL (fy_pool_size(POOL) <= THREADS). */
void fy__mm_run(fy_mm *m, fy_pool *pool, float *out, const float *x, const fy_tensor *w,
                const fy_tensor *bias, int T);

/* --- What the kernels share (matmul.c) ---------------------------------------------- */

/* Per block type (zero for F32, F16, BF16). */
typedef struct {
    uint8_t sb;  /* GEMM sub-block: weights per (dw, m) pair, 32 or 16 */
    uint8_t o;   /* integer offset of u */
    uint8_t min; /* 1: m is not zero */
    uint8_t kq;  /* 1: the dot format is fmt B (256-weight activation blocks) */
} fy__mm_type;

extern const fy__mm_type fy__mm_types[FY_DT_COUNT];

/* One token's activations in a dot format, for a run of K weights:
 *  fmt A (the 32-weight types): per 32: q int8[32], d = max|x| / 127, and
 *    aux = -o * sum(q) as an int32 (types with o) or the float bits of
 *    d * sum(q) (types with m);
 *  fmt B (Q4_K, Q5_K, Q6_K; Q8_K-style): per 256: q int8[256], d, and
 *    bsum int16[16], the sums of each 16 quants.
 *  F32/F16/BF16 read x itself. */
typedef struct {
    const float *x;
    const int8_t *q;
    const float *d;
    const int32_t *aux;
    const int16_t *bsum;
} fy__mm_act;

/* fmt A's aux of a block whose quants sum to S at scale D (see above). */
static inline int32_t fy__mm_aux(int s, float d, int o, int min)
{
    if (min) {
        float ds = d * (float)s;
        int32_t bits;
        memcpy(&bits, &ds, sizeof bits);
        return bits;
    }
    return -o * s;
}

/* Sum of A[i] * B[i] for i < N in 8 partial sums, a shape gcc and clang
 * vectorize without reassociation flags (the portable kernels, and the CPU
 * backend's other portable ops). */
static inline float fy__mm_dot_f32(const float *a, const float *b, int64_t n)
{
    float s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int j = 0; j < 8; j++) {
            s[j] += a[i + j] * b[i + j];
        }
    }
    for (; i < n; i++) {
        s[0] += a[i] * b[i];
    }
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

/* Bytes of fmt A/B for K weights (each array 64-byte aligned). */
size_t fy__mm_act_bytes(int kq, size_t k);
/* Lays out the arrays of a dot-format row of K weights at BUF. */
fy__mm_act fy__mm_act_at(void *buf, int kq, size_t k);

/* N rounded up to a multiple of 64 (every array of the formats starts 64-byte aligned). */
static inline size_t fy__mm_al64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

/* GEMM weight panel of NR rows by KC weights, sub-block SB (NSB = KC / SB):
 *   u   uint8 [NSB][SB/4][NR][4]   (4 consecutive weights of a row per int32)
 *   dw  float [NSB][NR]            at al64(NSB * SB * NR)
 *   m   float [NSB][NR]            (types with m) at that + al64(NSB * NR * 4)
 * Rows past the matrix are zero. With SGN (the AVX2 Q8_0 kernel, whose
 * maddubs would saturate on u up to 255) u holds the signed int8 q and o is 0.
 * Activation tile of MR tokens by KC weights, blocks of SB:
 *   q   int8 [NSB][SB/4][MR][4]
 *   d   float [NSB][MR]            at al64(NSB * SB * MR)
 *   aux int32/float [NSB][MR]      (as fmt A's aux, for this SB-block) at that + al64(NSB * MR * 4)
 * Tokens past T are zero. */
size_t fy__mm_panel_bytes(int nr, int kc, int sb, int min);
size_t fy__mm_tile_bytes(int mr, int kc, int sb);
/* Unpacks rows [r0, r0 + NR) x weights [k0, k0 + kc) of W (a block type). */
void fy__mm_pack_q(uint8_t *dst, const fy_tensor *w, int64_t r0, int nr, int64_t k0, int kc,
                   int sgn);
/* Quantizes tokens [0, ntok) of X (rows LDX floats apart; ntok <= MR) into a tile. */
void fy__mm_quant_tile(uint8_t *dst, const float *x, size_t ldx, int ntok, int mr, int kc, int sb,
                       int o, int min);
/* F32 panel [kc][NR] of rows [r0, r0 + NR) x [k0, k0 + kc) of a float-type W. */
void fy__mm_pack_f(float *dst, const fy_tensor *w, int64_t r0, int nr, int64_t k0, int kc);
/* The portable dot-format quantizers (X: K floats). */
void fy__mm_quant_a(const fy__mm_act *a, const float *x, size_t k, int o, int min);
void fy__mm_quant_b(const fy__mm_act *a, const float *x, size_t k);
/* Unpacks one block of type DT (bw weights) into u[bw], dw[bw/sb], m[bw/sb]. */
void fy__mm_unpack(fy_dtype dt, const uint8_t *blk, uint8_t *u, float *dw, float *m);

/* --- One instruction set's kernels -------------------------------------------------- */

/* Tokens one dot-kernel call takes, and the most tokens the dot path is used for. */
#define FY_MM_DOT_NT   4
#define FY_MM_DOT_MAXT 16

/* out[t * LDO + r] (+)= W[r] . x_t for rows [0, nrows) at W (ROW_BYTES apart)
 * and tokens t < NT (<= FY_MM_DOT_NT, activations A[t]), over K weights (the
 * rows' first K; block types: a multiple of the block). ADD: accumulate. */
typedef void (*fy__mm_dot_fn)(const uint8_t *w, size_t row_bytes, int nrows, int k,
                              const fy__mm_act *a, int nt, float *out, size_t ldo, int add);
/* C[i][j] (+)= sum_k X[i][k] * P[k][j] for i < M, j < N (N <= NR, M <= MR):
 * X rows LDX apart, C rows LDC apart, P an f32 panel of KC rows. */
typedef void (*fy__mm_gemmf_fn)(const float *p, const float *x, size_t ldx, int kc, float *c,
                                size_t ldc, int m, int n, int add);
/* The same on a block-type panel and an activation tile (MRX tokens wide) of
 * NSB sub-blocks of SB; MIN and SGN as in the panel. */
typedef void (*fy__mm_gemmq_fn)(const uint8_t *p, const uint8_t *xt, int mrx, int nsb, int sb,
                                int min, int sgn, float *c, size_t ldc, int m, int n, int add);

typedef struct {
    fy_cpu_isa isa;
    fy__mm_dot_fn dot[FY_DT_COUNT];
    /* The dot path runs T <= dot_t[dtype] (<= FY_MM_DOT_MAXT), GEMM above: a
     * GEMM first unpacks every panel, which costs about a pass of dot
     * kernels, so small batches are faster on the dot kernels (measured per
     * type: bench_qmatmul). */
    uint8_t dot_t[FY_DT_COUNT];
    /* Dot-format quantizers (NULL: the portable ones). */
    void (*quant_a)(const fy__mm_act *a, const float *x, size_t k, int o, int min);
    void (*quant_b)(const fy__mm_act *a, const float *x, size_t k);
    /* GEMM on the float types. */
    int f_mr, f_nr;
    fy__mm_gemmf_fn gemmf;
    void (*pack_f)(float *dst, const fy_tensor *w, int64_t r0, int nr, int64_t k0, int kc);
    /* GEMM on the block types. */
    int q_mr, q_nr, q_sgn; /* q_sgn: Q8_0 panels are signed (SGN) */
    fy__mm_gemmq_fn gemmq;
    void (*quant_tile)(uint8_t *dst, const float *x, size_t ldx, int ntok, int mr, int kc, int sb,
                       int o, int min);
    void (*pack_q)(uint8_t *dst, const fy_tensor *w, int64_t r0, int nr, int64_t k0, int kc,
                   int sgn);
} fy__mm_kern;

extern const fy__mm_kern fy__mm_portable;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FY_MM_X86 1
extern const fy__mm_kern fy__mm_avx2, fy__mm_avxvnni, fy__mm_avx512;
#else
#define FY_MM_X86 0
#endif

#endif
