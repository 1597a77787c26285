/* matmul.c: the CPU matmul driver (see mm.h): instruction-set detection, the
 * shared packed formats, and the chunking and threading around the kernels.
 *
 * Paths by batch size T (kernel tables in mm_portable.c and mm_avx*.c):
 *  - T <= dot_t[dtype] (decode, a few sequences; 4 to 16 tokens by type,
 *    where packing panels would cost more than it saves): register tiles of
 *    R rows x up to FY_MM_DOT_NT tokens straight on the stored rows, each
 *    weight vector loaded once per tile and used for every token of it;
 *    threads split the rows into tasks of at least MM_RB rows and MM_TB
 *    bytes, so each thread streams long runs of the matrix (a run of a few
 *    KB, as 16 rows of a 4-bit type are, ends before the hardware
 *    prefetcher has caught up).
 *  - larger T: GEMM. For each chunk of MM_MC tokens and KC weights, the
 *    activations are quantized once (block types) into tiles of MR tokens,
 *    then every thread takes panels of NR rows in turn, unpacks the panel
 *    into its own buffer and runs the microkernel over all token tiles, so
 *    an unpacked panel (in L1/L2) serves every token of the chunk and the
 *    chunk's activations stay in L2 while the panels stream past them.
 *
 * Scratch is allocated once, in fy__mm_new: one activation buffer of
 * MM_XCAP bytes shared by the threads, and one panel buffer of MM_PCAP bytes
 * per thread. The chunk sizes are chosen to fit them, so fy__mm_run never
 * allocates: the ops table has no error return, and an allocation failing
 * there could only produce wrong output. */
#include "kernels/cpu/mm.h"

#include "kernels/cpu/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if FY_MM_X86
#include <cpuid.h>
#endif

#define MM_XCAP ((size_t)4 << 20)  /* shared activation buffer */
#define MM_PCAP ((size_t)96 << 10) /* per-thread panel buffer */
#define MM_RB   16                 /* rows per decode task, at least */
#define MM_TB   ((size_t)64 << 10) /* bytes of weights per decode task, at least */
#define MM_MC   512                /* tokens per GEMM chunk */
#define MM_KCF  256                /* weights per f32 panel (NR x 256 floats: 32 KiB at NR 32) */
#define MM_KCQ  1024               /* weights per block-type panel (a multiple of 256) */

/* --- Instruction sets ---------------------------------------------------------------- */

static const char *const isa_names[FY_ISA_COUNT] = {"portable", "avx2", "avxvnni", "avx512"};

const char *fy__cpu_isa_name(fy_cpu_isa isa)
{
    return (unsigned)isa < FY_ISA_COUNT ? isa_names[isa] : "?";
}

#if FY_MM_X86
static uint64_t isa_xcr0(void)
{
    uint32_t a, d;
    __asm__ volatile("xgetbv" : "=a"(a), "=d"(d) : "c"(0));
    return (uint64_t)d << 32 | a;
}

int fy__cpu_isa_usable(fy_cpu_isa isa)
{
    unsigned a, b, c, d;
    if (isa == FY_ISA_PORTABLE) {
        return 1;
    }
    if ((unsigned)isa >= FY_ISA_COUNT || !__get_cpuid(1, &a, &b, &c, &d)) {
        return 0;
    }
    /* The OS must save the ymm (and for AVX512 the zmm and mask) registers. */
    int fma = (c >> 12) & 1, f16c = (c >> 29) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (!osxsave || !avx || !fma || !f16c || (isa_xcr0() & 6) != 6 || __get_cpuid_max(0, 0) < 7) {
        return 0;
    }
    __cpuid_count(7, 0, a, b, c, d);
    unsigned sub = a, b7 = b, c7 = c;
    if (!((b7 >> 5) & 1)) { /* AVX2 */
        return 0;
    }
    if (isa == FY_ISA_AVX2) {
        return 1;
    }
    if (isa == FY_ISA_AVXVNNI) {
        if (sub < 1) {
            return 0;
        }
        __cpuid_count(7, 1, a, b, c, d);
        return (a >> 4) & 1;
    }
    /* AVX512 F (b16), DQ (b17), BW (b30), VL (b31), VNNI (c11). */
    return (isa_xcr0() & 0xe6) == 0xe6 && ((b7 >> 16) & 1) && ((b7 >> 17) & 1) &&
           ((b7 >> 30) & 1) && ((b7 >> 31) & 1) && ((c7 >> 11) & 1);
}
#else
int fy__cpu_isa_usable(fy_cpu_isa isa)
{
    return isa == FY_ISA_PORTABLE;
}
#endif

fy_cpu_isa fy__cpu_isa_cap(fy_cpu_isa want)
{
    if ((unsigned)want >= FY_ISA_COUNT) {
        want = FY_ISA_COUNT - 1;
    }
    for (int i = (int)want; i > 0; i--) {
        if (fy__cpu_isa_usable((fy_cpu_isa)i)) {
            return (fy_cpu_isa)i;
        }
    }
    return FY_ISA_PORTABLE;
}

fy_cpu_isa fy__cpu_isa_best(void)
{
    return fy__cpu_isa_cap(FY_ISA_COUNT - 1);
}

fy_cpu_isa fy__cpu_isa_from_env(char *msg, size_t msglen)
{
    const char *v = getenv("FERRY_CPU_ISA");
    if (msg && msglen) {
        msg[0] = 0;
    }
    if (!v || !*v) {
        return fy__cpu_isa_best();
    }
    for (int i = 0; i < FY_ISA_COUNT; i++) {
        if (strcmp(v, isa_names[i]) == 0) {
            return fy__cpu_isa_cap((fy_cpu_isa)i);
        }
    }
    fy_cpu_isa best = fy__cpu_isa_best();
    if (msg && msglen) {
        snprintf(msg, msglen,
                 "FERRY_CPU_ISA=%.40s is not one of portable, avx2, avxvnni, avx512: using %s", v,
                 isa_names[best]);
    }
    return best;
}

/* --- Formats ------------------------------------------------------------------------- */

const fy__mm_type fy__mm_types[FY_DT_COUNT] = {
    [FY_DT_Q8_0] = {32, 128, 0, 0}, [FY_DT_Q4_0] = {32, 8, 0, 0},  [FY_DT_Q4_1] = {32, 0, 1, 0},
    [FY_DT_Q5_0] = {32, 16, 0, 0},  [FY_DT_Q5_1] = {32, 0, 1, 0},  [FY_DT_Q4_K] = {32, 0, 1, 1},
    [FY_DT_Q5_K] = {32, 0, 1, 1},   [FY_DT_Q6_K] = {16, 32, 0, 1},
};

#define al64 fy__mm_al64

size_t fy__mm_act_bytes(int kq, size_t k)
{
    if (kq) {
        return al64(k) + al64(k / 256 * sizeof(float)) + al64(k / 16 * sizeof(int16_t));
    }
    return al64(k) + 2 * al64(k / 32 * sizeof(float));
}

fy__mm_act fy__mm_act_at(void *buf, int kq, size_t k)
{
    char *p = buf;
    fy__mm_act a = {0};
    a.q = (const int8_t *)p;
    p += al64(k);
    a.d = (const float *)(void *)p;
    if (kq) {
        p += al64(k / 256 * sizeof(float));
        a.bsum = (const int16_t *)(void *)p;
    } else {
        p += al64(k / 32 * sizeof(float));
        a.aux = (const int32_t *)(void *)p;
    }
    return a;
}

size_t fy__mm_panel_bytes(int nr, int kc, int sb, int min)
{
    size_t nsb = (size_t)(kc / sb);
    return al64(nsb * (size_t)sb * (size_t)nr) + (1 + (size_t)(min != 0)) * al64(nsb * nr * 4);
}

size_t fy__mm_tile_bytes(int mr, int kc, int sb)
{
    size_t nsb = (size_t)(kc / sb);
    return al64(nsb * (size_t)sb * (size_t)mr) + 2 * al64(nsb * mr * 4);
}

#define rd32 fy__q_u32
#define rdh  fy__q_half

/* The 32-weight nibble blocks: weight j in the low nibble of byte j, j + 16 in
 * the high one, bit 4 (Q5) in bit j of QH. */
static void unpack_nib32(const uint8_t *qs, uint32_t qh, int has_qh, uint8_t *u)
{
    for (int j = 0; j < 16; j++) {
        u[j] = (uint8_t)((qs[j] & 15) | (has_qh ? ((qh >> j) & 1) << 4 : 0));
        u[j + 16] = (uint8_t)((qs[j] >> 4) | (has_qh ? ((qh >> (j + 16)) & 1) << 4 : 0));
    }
}

void fy__mm_unpack(fy_dtype dt, const uint8_t *b, uint8_t *u, float *dw, float *m)
{
    switch (dt) {
    case FY_DT_Q8_0:
        dw[0] = rdh(b);
        for (int j = 0; j < 32; j++) {
            u[j] = b[2 + j] ^ 0x80; /* q + 128 */
        }
        break;
    case FY_DT_Q4_0:
        dw[0] = rdh(b);
        unpack_nib32(b + 2, 0, 0, u);
        break;
    case FY_DT_Q4_1:
        dw[0] = rdh(b);
        m[0] = rdh(b + 2);
        unpack_nib32(b + 4, 0, 0, u);
        break;
    case FY_DT_Q5_0:
        dw[0] = rdh(b);
        unpack_nib32(b + 6, rd32(b + 2), 1, u);
        break;
    case FY_DT_Q5_1:
        dw[0] = rdh(b);
        m[0] = rdh(b + 2);
        unpack_nib32(b + 8, rd32(b + 4), 1, u);
        break;
    case FY_DT_Q4_K:
    case FY_DT_Q5_K: {
        float d = rdh(b), dmin = rdh(b + 2);
        const uint8_t *qh = dt == FY_DT_Q5_K ? b + 16 : NULL, *qs = b + (qh ? 48 : 16);
        for (int j = 0; j < 8; j++) {
            int sc, mn;
            fy__q_k_scale_min(b + 4, j, &sc, &mn);
            dw[j] = d * (float)sc;
            m[j] = -(dmin * (float)mn);
            for (int l = 0; l < 32; l++) {
                int v = j % 2 ? qs[32 * (j / 2) + l] >> 4 : qs[32 * (j / 2) + l] & 15;
                u[32 * j + l] = (uint8_t)(v | (qh ? ((qh[l] >> j) & 1) << 4 : 0));
            }
        }
        break;
    }
    case FY_DT_Q6_K: {
        const uint8_t *ql = b, *qh = b + 128;
        float d = rdh(b + 208);
        for (int s = 0; s < 16; s++) {
            dw[s] = d * (float)(int8_t)b[192 + s];
        }
        for (int h = 0; h < 2; h++) {
            for (int g = 0; g < 4; g++) {
                for (int l = 0; l < 32; l++) {
                    int lo = ql[64 * h + l + 32 * (g & 1)];
                    lo = g < 2 ? lo & 15 : lo >> 4;
                    u[128 * h + 32 * g + l] =
                        (uint8_t)(lo | ((qh[32 * h + l] >> (2 * g)) & 3) << 4);
                }
            }
        }
        break;
    }
    default:
        break;
    }
}

/* Rounds X * ID to an int8 in [-127, 127] (NaN, from an inf in the block, to 0). */
static int8_t quant1(float x, float id)
{
    float v = x * id;
    if (!(v == v)) {
        return 0;
    }
    v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
    return (int8_t)lrintf(v);
}

static float amax_of(const float *x, int n)
{
    float a = 0.0f;
    for (int i = 0; i < n; i++) {
        a = fmaxf(a, fabsf(x[i]));
    }
    return a;
}

/* Quantizes N values with one scale: Q[i] * D ~= X[i]; returns the sum of Q. */
static int quant_block(const float *x, int n, int8_t *q, size_t qstride, float *d)
{
    float amax = amax_of(x, n);
    float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    int s = 0;
    *d = amax / 127.0f;
    for (int i = 0; i < n; i++) {
        q[(size_t)i * qstride] = quant1(x[i], id);
        s += q[(size_t)i * qstride];
    }
    return s;
}

void fy__mm_quant_a(const fy__mm_act *a, const float *x, size_t k, int o, int min)
{
    int8_t *q = (int8_t *)a->q;
    float *d = (float *)a->d;
    int32_t *aux = (int32_t *)a->aux;
    for (size_t b = 0; b < k / 32; b++) {
        int s = quant_block(x + 32 * b, 32, q + 32 * b, 1, &d[b]);
        aux[b] = fy__mm_aux(s, d[b], o, min);
    }
}

void fy__mm_quant_b(const fy__mm_act *a, const float *x, size_t k)
{
    int8_t *q = (int8_t *)a->q;
    float *d = (float *)a->d;
    int16_t *bs = (int16_t *)a->bsum;
    for (size_t b = 0; b < k / 256; b++) {
        quant_block(x + 256 * b, 256, q + 256 * b, 1, &d[b]);
        for (int i = 0; i < 16; i++) {
            int s = 0;
            for (int l = 0; l < 16; l++) {
                s += q[256 * b + 16 * i + l];
            }
            bs[16 * b + (size_t)i] = (int16_t)s;
        }
    }
}

void fy__mm_quant_tile(uint8_t *dst, const float *x, size_t ldx, int ntok, int mr, int kc, int sb,
                       int o, int min)
{
    int nsb = kc / sb;
    int8_t *q = (int8_t *)dst;
    float *d = (float *)(void *)(dst + al64((size_t)nsb * sb * mr));
    int32_t *aux = (int32_t *)(void *)((char *)d + al64((size_t)nsb * mr * 4));
    if (ntok < mr) {
        memset(dst, 0, fy__mm_tile_bytes(mr, kc, sb));
    }
    for (int t = 0; t < ntok; t++) {
        for (int b = 0; b < nsb; b++) {
            int8_t tmp[32];
            int s = quant_block(x + (size_t)t * ldx + (size_t)b * sb, sb, tmp, 1,
                                &d[(size_t)b * mr + t]);
            for (int g = 0; g < sb / 4; g++) {
                memcpy(q + (((size_t)b * (sb / 4) + g) * mr + t) * 4, tmp + 4 * g, 4);
            }
            aux[(size_t)b * mr + t] = fy__mm_aux(s, d[(size_t)b * mr + t], o, min);
        }
    }
}

void fy__mm_pack_q(uint8_t *dst, const fy_tensor *w, int64_t r0, int nr, int64_t k0, int kc,
                   int sgn)
{
    fy_dtype dt = w->dtype;
    const fy__mm_type *ty = &fy__mm_types[dt];
    int bw = (int)fy_dtype_block_weights(dt), sb = ty->sb, nsb = kc / sb, spb = bw / sb;
    size_t bb = fy_dtype_block_bytes(dt), rb = fy_dtype_row_bytes(dt, w->cols);
    uint8_t *u = dst;
    float *dw = (float *)(void *)(dst + al64((size_t)nsb * sb * nr));
    float *mw = (float *)(void *)((char *)dw + al64((size_t)nsb * nr * 4));
    for (int j = 0; j < nr; j++) {
        int64_t r = r0 + j;
        if (r >= w->rows) {
            for (int s = 0; s < nsb; s++) {
                dw[(size_t)s * nr + j] = 0.0f;
                if (ty->min) {
                    mw[(size_t)s * nr + j] = 0.0f;
                }
                for (int g = 0; g < sb / 4; g++) {
                    memset(u + (((size_t)s * (sb / 4) + g) * nr + j) * 4, 0, 4);
                }
            }
            continue;
        }
        const uint8_t *row = (const uint8_t *)w->data + (size_t)r * rb + (size_t)(k0 / bw) * bb;
        for (int blk = 0; blk < kc / bw; blk++) {
            uint8_t ub[256];
            float dws[16], ms[16] = {0};
            fy__mm_unpack(dt, row + (size_t)blk * bb, ub, dws, ms);
            for (int s = 0; s < spb; s++) {
                size_t gs = (size_t)blk * spb + s;
                dw[gs * nr + j] = dws[s];
                if (ty->min) {
                    mw[gs * nr + j] = ms[s];
                }
                for (int g = 0; g < sb / 4; g++) {
                    uint8_t *o4 = u + ((gs * (sb / 4) + g) * nr + j) * 4;
                    for (int l = 0; l < 4; l++) {
                        uint8_t v = ub[s * sb + 4 * g + l];
                        o4[l] = sgn ? (uint8_t)(v - ty->o) : v;
                    }
                }
            }
        }
    }
}

void fy__mm_pack_f(float *dst, const fy_tensor *w, int64_t r0, int nr, int64_t k0, int kc)
{
    size_t es = fy_dtype_size(w->dtype);
    for (int j = 0; j < nr; j++) {
        int64_t r = r0 + j;
        if (r >= w->rows) {
            for (int k = 0; k < kc; k++) {
                dst[(size_t)k * nr + j] = 0.0f;
            }
            continue;
        }
        const uint8_t *src = (const uint8_t *)w->data + ((size_t)r * (size_t)w->cols + k0) * es;
        for (int k0b = 0; k0b < kc; k0b += 256) {
            float tmp[256];
            int n = kc - k0b < 256 ? kc - k0b : 256;
            fy_q_dequant(w->dtype, src + (size_t)k0b * es, tmp, (size_t)n);
            for (int k = 0; k < n; k++) {
                dst[(size_t)(k0b + k) * nr + j] = tmp[k];
            }
        }
    }
}

/* --- The object ------------------------------------------------------------------------ */

struct fy_mm {
    int threads;
    const fy__mm_kern *k;
    uint8_t *xbuf; /* MM_XCAP: the chunk's activations */
    uint8_t *pbuf; /* threads x MM_PCAP: each thread's panel */
};

static const fy__mm_kern *kern_of(fy_cpu_isa isa)
{
#if FY_MM_X86
    switch (isa) {
    case FY_ISA_AVX512:
        return &fy__mm_avx512;
    case FY_ISA_AVXVNNI:
        return &fy__mm_avxvnni;
    case FY_ISA_AVX2:
        return &fy__mm_avx2;
    default:
        break;
    }
#endif
    (void)isa;
    return &fy__mm_portable;
}

fy_mm *fy__mm_new(int threads, fy_cpu_isa isa)
{
    fy_mm *m = calloc(1, sizeof *m);
    if (!m) {
        return NULL;
    }
    m->threads = threads < 1 ? 1 : threads;
    m->xbuf = aligned_alloc(64, MM_XCAP);
    m->pbuf = aligned_alloc(64, (size_t)m->threads * MM_PCAP);
    if (!m->xbuf || !m->pbuf) {
        fy__mm_free(m);
        return NULL;
    }
    fy__mm_set_isa(m, isa);
    return m;
}

void fy__mm_free(fy_mm *m)
{
    if (m) {
        free(m->xbuf);
        free(m->pbuf);
        free(m);
    }
}

fy_cpu_isa fy__mm_set_isa(fy_mm *m, fy_cpu_isa isa)
{
    m->k = kern_of(fy__cpu_isa_cap(isa));
    return m->k->isa;
}

fy_cpu_isa fy__mm_isa(const fy_mm *m)
{
    return m->k->isa;
}

/* --- Bias ------------------------------------------------------------------------------ */

/* out[t][r] += bias[r] for tokens [t0, t1), rows [r0, r1). */
static void add_bias(float *out, size_t ldo, int t0, int t1, const fy_tensor *bias, int64_t r0,
                     int64_t r1)
{
    if (!bias || !bias->data || r0 >= r1) {
        return;
    }
    fy_dtype dt = bias->dtype;
    int64_t bw = fy_dtype_block_weights(dt);
    size_t bb = fy_dtype_block_bytes(dt);
    float tmp[256];
    for (int64_t c = r0 / bw * bw; c < r1; c += bw) { /* a block (or one weight) at a time */
        fy_q_dequant(dt, (const uint8_t *)bias->data + (size_t)(c / bw) * bb, tmp, (size_t)bw);
        int64_t lo = c < r0 ? r0 : c, hi = c + bw < r1 ? c + bw : r1;
        for (int t = t0; t < t1; t++) {
            float *o = out + (size_t)t * ldo;
            for (int64_t r = lo; r < hi; r++) {
                o[r] += tmp[r - c];
            }
        }
    }
}

/* --- Dot path (small T) --------------------------------------------------------------- */

typedef struct {
    fy_mm *m;
    float *out;
    const fy_tensor *w, *bias;
    const fy__mm_act *act; /* [T] */
    int T, k, add, last;
    int64_t k0, rb; /* rows per task */
} dot_ctx;

static void dot_task(void *ctx, size_t b, size_t e, int tid)
{
    dot_ctx *d = ctx;
    const fy_tensor *w = d->w;
    int64_t bw = fy_dtype_block_weights(w->dtype);
    size_t rb = (size_t)(w->cols / bw) * fy_dtype_block_bytes(w->dtype);
    const uint8_t *base =
        (const uint8_t *)w->data + (size_t)(d->k0 / bw) * fy_dtype_block_bytes(w->dtype);
    (void)tid;
    for (size_t blk = b; blk < e; blk++) {
        int64_t r0 = (int64_t)blk * d->rb, r1 = r0 + d->rb < w->rows ? r0 + d->rb : w->rows;
        for (int t = 0; t < d->T; t += FY_MM_DOT_NT) {
            int nt = d->T - t < FY_MM_DOT_NT ? d->T - t : FY_MM_DOT_NT;
            d->m->k->dot[w->dtype](base + (size_t)r0 * rb, rb, (int)(r1 - r0), d->k, d->act + t, nt,
                                   d->out + (size_t)t * (size_t)w->rows + r0, (size_t)w->rows,
                                   d->add);
        }
        if (d->last) {
            add_bias(d->out, (size_t)w->rows, 0, d->T, d->bias, r0, r1);
        }
    }
}

static void mm_dot(fy_mm *m, fy_pool *pool, float *out, const float *x, const fy_tensor *w,
                   const fy_tensor *bias, int T)
{
    fy_dtype dt = w->dtype;
    int block = fy_dtype_is_block(dt);
    const fy__mm_type *ty = &fy__mm_types[dt];
    int64_t K = w->cols, bw = fy_dtype_block_weights(dt);
    fy__mm_act act[FY_MM_DOT_MAXT];
    /* K per chunk: the T quantized rows must fit the activation buffer. */
    int64_t kc = K;
    if (block) {
        int64_t unit = ty->kq ? 256 : 32;
        while ((size_t)T * fy__mm_act_bytes(ty->kq, (size_t)kc) > MM_XCAP) {
            kc = (kc / 2 + unit - 1) / unit * unit;
        }
    } else if (K > INT32_MAX / 2) {
        kc = INT32_MAX / 2 / bw * bw;
    }
    for (int64_t k0 = 0; k0 < K; k0 += kc) {
        int64_t n = K - k0 < kc ? K - k0 : kc;
        for (int t = 0; t < T; t++) {
            if (!block) {
                act[t] = (fy__mm_act){.x = x + (size_t)t * (size_t)K + k0};
                continue;
            }
            size_t ab = fy__mm_act_bytes(ty->kq, (size_t)n);
            act[t] = fy__mm_act_at(m->xbuf + (size_t)t * ab, ty->kq, (size_t)n);
            const float *xt = x + (size_t)t * (size_t)K + k0;
            if (ty->kq) {
                (m->k->quant_b ? m->k->quant_b : fy__mm_quant_b)(&act[t], xt, (size_t)n);
            } else {
                (m->k->quant_a ? m->k->quant_a : fy__mm_quant_a)(&act[t], xt, (size_t)n, ty->o,
                                                                 ty->min);
            }
        }
        dot_ctx d = {m, out, w, bias, act, T, (int)n, k0 > 0, k0 + n >= K, k0, MM_RB};
        uint64_t rowb = 0;
        fy_dtype_bytes(dt, (uint64_t)n, &rowb);
        if (rowb > 0 && MM_TB / rowb > MM_RB) {
            d.rb = (int64_t)(MM_TB / rowb + 3) / 4 * 4;
        }
        fy_pool_for(pool, (size_t)((w->rows + d.rb - 1) / d.rb), 1, dot_task, &d);
    }
}

/* --- GEMM path ------------------------------------------------------------------------- */

typedef struct {
    fy_mm *m;
    float *out;
    const float *x;
    const fy_tensor *w, *bias;
    int t0, t1, kc, nr, mr, add, last, sgn;
    int64_t k0;
} gemm_ctx;

static void gemmf_task(void *ctx, size_t b, size_t e, int tid)
{
    gemm_ctx *g = ctx;
    const fy__mm_kern *k = g->m->k;
    const fy_tensor *w = g->w;
    float *panel = (float *)(void *)(g->m->pbuf + (size_t)tid * MM_PCAP);
    size_t R = (size_t)w->rows, K = (size_t)w->cols;
    for (size_t p = b; p < e; p++) {
        int64_t r0 = (int64_t)p * g->nr;
        int n = w->rows - r0 < g->nr ? (int)(w->rows - r0) : g->nr;
        (k->pack_f ? k->pack_f : fy__mm_pack_f)(panel, w, r0, g->nr, g->k0, g->kc);
        for (int t = g->t0; t < g->t1; t += g->mr) {
            int mt = g->t1 - t < g->mr ? g->t1 - t : g->mr;
            k->gemmf(panel, g->x + (size_t)t * K + (size_t)g->k0, K, g->kc,
                     g->out + (size_t)t * R + (size_t)r0, R, mt, n, g->add);
        }
        if (g->last) {
            add_bias(g->out, R, g->t0, g->t1, g->bias, r0, r0 + n);
        }
    }
}

typedef struct {
    gemm_ctx *g;
    int sb, o, min;
    size_t tile;
} qtile_ctx;

static void quant_task(void *ctx, size_t b, size_t e, int tid)
{
    qtile_ctx *q = ctx;
    gemm_ctx *g = q->g;
    size_t K = (size_t)g->w->cols;
    (void)tid;
    for (size_t i = b; i < e; i++) {
        int t = g->t0 + (int)i * g->mr;
        int nt = g->t1 - t < g->mr ? g->t1 - t : g->mr;
        (g->m->k->quant_tile ? g->m->k->quant_tile : fy__mm_quant_tile)(
            g->m->xbuf + i * q->tile, g->x + (size_t)t * K + (size_t)g->k0, K, nt, g->mr, g->kc,
            q->sb, q->o, q->min);
    }
}

static void gemmq_task(void *ctx, size_t b, size_t e, int tid)
{
    qtile_ctx *q = ctx;
    gemm_ctx *g = q->g;
    const fy__mm_kern *k = g->m->k;
    const fy_tensor *w = g->w;
    uint8_t *panel = g->m->pbuf + (size_t)tid * MM_PCAP;
    size_t R = (size_t)w->rows;
    int nsb = g->kc / q->sb;
    for (size_t p = b; p < e; p++) {
        int64_t r0 = (int64_t)p * g->nr;
        int n = w->rows - r0 < g->nr ? (int)(w->rows - r0) : g->nr;
        (k->pack_q ? k->pack_q : fy__mm_pack_q)(panel, w, r0, g->nr, g->k0, g->kc, g->sgn);
        for (int t = g->t0, i = 0; t < g->t1; t += g->mr, i++) {
            int mt = g->t1 - t < g->mr ? g->t1 - t : g->mr;
            k->gemmq(panel, g->m->xbuf + (size_t)i * q->tile, g->mr, nsb, q->sb, q->min, g->sgn,
                     g->out + (size_t)t * R + (size_t)r0, R, mt, n, g->add);
        }
        if (g->last) {
            add_bias(g->out, R, g->t0, g->t1, g->bias, r0, r0 + n);
        }
    }
}

static void mm_gemm(fy_mm *m, fy_pool *pool, float *out, const float *x, const fy_tensor *w,
                    const fy_tensor *bias, int T)
{
    const fy__mm_kern *k = m->k;
    fy_dtype dt = w->dtype;
    int block = fy_dtype_is_block(dt);
    const fy__mm_type *ty = &fy__mm_types[dt];
    int64_t K = w->cols;
    gemm_ctx g = {.m = m, .out = out, .x = x, .w = w, .bias = bias};
    g.nr = block ? k->q_nr : k->f_nr;
    g.mr = block ? k->q_mr : k->f_mr;
    g.sgn = block && k->q_sgn && dt == FY_DT_Q8_0;
    int64_t kcmax = block ? MM_KCQ : MM_KCF;
    size_t npanels = (size_t)((w->rows + g.nr - 1) / g.nr);
    for (int t0 = 0; t0 < T; t0 += MM_MC) {
        int t1 = T - t0 < MM_MC ? T : t0 + MM_MC;
        for (int64_t k0 = 0; k0 < K; k0 += kcmax) {
            g.t0 = t0;
            g.t1 = t1;
            g.k0 = k0;
            g.kc = (int)(K - k0 < kcmax ? K - k0 : kcmax);
            g.add = k0 > 0;
            g.last = k0 + g.kc >= K;
            if (!block) {
                fy_pool_for(pool, npanels, 1, gemmf_task, &g);
                continue;
            }
            qtile_ctx q = {&g, ty->sb, g.sgn ? 0 : ty->o, ty->min, 0};
            q.tile = fy__mm_tile_bytes(g.mr, g.kc, q.sb);
            /* Tokens per pass: as many tiles as the activation buffer holds
             * (MM_MC tokens of MM_KCQ weights fit it at any MR). */
            int per = (int)(MM_XCAP / q.tile) * g.mr, t;
            for (t = t0; t < t1; t += per) {
                g.t0 = t;
                g.t1 = t1 - t < per ? t1 : t + per;
                size_t tiles = (size_t)((g.t1 - g.t0 + g.mr - 1) / g.mr);
                fy_pool_for(pool, tiles, 1, quant_task, &q);
                fy_pool_for(pool, npanels, 1, gemmq_task, &q);
            }
        }
    }
}

void fy__mm_run(fy_mm *m, fy_pool *pool, float *out, const float *x, const fy_tensor *w,
                const fy_tensor *bias, int T)
{
    if (T <= 0 || w->rows <= 0) {
        return;
    }
    /* The loaders validate shapes (cols a multiple of the block, a known
     * type); a tensor that is not would be read short, so its outputs are
     * NaN rather than plausible numbers. */
    if ((unsigned)w->dtype >= FY_DT_COUNT || w->cols % fy_dtype_block_weights(w->dtype) != 0) {
        for (size_t i = 0; i < (size_t)T * (size_t)w->rows; i++) {
            out[i] = NAN;
        }
        return;
    }
    if (w->cols <= 0) {
        for (int t = 0; t < T; t++) {
            memset(out + (size_t)t * (size_t)w->rows, 0, (size_t)w->rows * sizeof *out);
        }
        add_bias(out, (size_t)w->rows, 0, T, bias, 0, w->rows);
        return;
    }
    int dot_t = m->k->dot_t[w->dtype] < FY_MM_DOT_MAXT ? m->k->dot_t[w->dtype] : FY_MM_DOT_MAXT;
    if (T <= dot_t) {
        mm_dot(m, pool, out, x, w, bias, T);
    } else {
        mm_gemm(m, pool, out, x, w, bias, T);
    }
}
