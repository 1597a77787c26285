/* attn.c: the CPU backend's tiled attention (attn.h): the task split and the
 * per-ISA builds of attn_tile.h. */
#include "kernels/cpu/attn.h"

#include "kernels/math.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#if FY_MM_X86
#include <immintrin.h>
#endif

typedef struct att_job att_job;
typedef void (*att_tile_fn)(const att_job *j, int s, int g, int t0, int t1, int h0, int h1,
                            float *scratch);

struct att_job {
    float *out;
    const float *q;
    const void *kc, *vc;
    const fy_attn_batch *b;
    const fy_attn_shape *sh;
    int group;  /* query heads per KV head */
    int tokens; /* tokens per tile */
    int heads;  /* query heads per tile */
    int splits; /* tiles a KV head's group of heads is split into */
    att_tile_fn tile;
};

/* The 16-lane helpers are always inlined, so no vector crosses a call and
 * the compilers' note that such a call's ABI would depend on the ISA does
 * not apply. */
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wpsabi"
#elif defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
typedef float att_v16 __attribute__((vector_size(64)));
typedef int32_t att_i16 __attribute__((vector_size(64)));

#define ATT_TARGET
#define ATT_SUFFIX portable
#include "kernels/cpu/attn_tile.h"
#undef ATT_TARGET
#undef ATT_SUFFIX

#if FY_MM_X86
#define ATT_F16C
#define ATT_TARGET __attribute__((target("avx2,fma,f16c")))
#define ATT_SUFFIX avx2
#include "kernels/cpu/attn_tile.h"
#undef ATT_TARGET
#undef ATT_SUFFIX

/* GCC splits loops into 256-bit pieces unless told to prefer 512; clang has no
 * such option and already lowers the 16-lane vectors to one zmm. */
#if defined(__clang__)
#define ATT_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl")))
#else
#define ATT_TARGET  \
    __attribute__(( \
        target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,prefer-vector-width=512")))
#endif
#define ATT_SUFFIX avx512
#include "kernels/cpu/attn_tile.h"
#undef ATT_TARGET
#undef ATT_SUFFIX
#undef ATT_F16C
#endif

static int seq_of_token(const fy_attn_batch *b, int t)
{
    int lo = 0, hi = b->n_seqs - 1;
    while (lo < hi) { /* last s with seq_start[s] <= t */
        int mid = (lo + hi + 1) / 2;
        if (b->host_seq_start[mid] <= t) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

/* Items are (token, KV head, split); the item of a token that starts a tile
 * (every j->tokens-th of its sequence) runs that tile, the others nothing. */
static void att_task(void *ctx, size_t begin, size_t end, int tid)
{
    const att_job *j = ctx;
    const int hd = j->sh->head_dim, nkv = j->sh->n_kv_heads;
    float scratch[(size_t)(ATT_ROWS + 3 * ATT_KC) * (size_t)hd];
    (void)tid;
    for (size_t i = begin; i < end; i++) {
        size_t per_token = (size_t)nkv * (size_t)j->splits;
        int t = (int)(i / per_token), g = (int)(i % per_token) / j->splits;
        int split = (int)(i % per_token) % j->splits;
        int s = seq_of_token(j->b, t), first = j->b->host_seq_start[s];
        if ((t - first) % j->tokens != 0) {
            continue;
        }
        int t1 = t + j->tokens < j->b->host_seq_start[s + 1] ? t + j->tokens
                                                             : j->b->host_seq_start[s + 1];
        int h0 = g * j->group + split * j->heads;
        int h1 = h0 + j->heads < (g + 1) * j->group ? h0 + j->heads : (g + 1) * j->group;
        j->tile(j, s, g, t, t1, h0, h1, scratch);
    }
}

void fy__cpu_attention(fy_pool *pool, fy_cpu_isa isa, float *out, const float *q,
                       const void *k_cache, const void *v_cache, const fy_attn_batch *b,
                       const fy_attn_shape *sh)
{
    if (sh->head_dim <= 0 || sh->head_dim > 1024 || b->n_tokens <= 0 || sh->n_kv_heads <= 0) {
        return;
    }
    att_job j = {out, q, k_cache, v_cache, b, sh, .tile = att_tile_portable};
#if FY_MM_X86
    j.tile = isa >= FY_ISA_AVX512 ? att_tile_avx512 : isa >= FY_ISA_AVX2 ? att_tile_avx2 : j.tile;
#else
    (void)isa;
#endif
    j.group = sh->n_heads / sh->n_kv_heads;
    if (j.group <= ATT_ROWS) {
        j.heads = j.group;
        j.splits = 1;
        j.tokens = ATT_ROWS / j.group;
    } else {
        j.heads = ATT_ROWS;
        j.splits = (j.group + ATT_ROWS - 1) / ATT_ROWS;
        j.tokens = 1;
    }
    size_t items = (size_t)b->n_tokens * (size_t)sh->n_kv_heads * (size_t)j.splits;
    fy_pool_for(pool, items, 1, att_task, &j);
}
