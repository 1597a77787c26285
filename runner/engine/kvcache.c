/* kvcache.c: block pool, reference counts, copy-on-write and the prefix
 * cache (hash table + LRU of unreferenced cached blocks). Per-block state is
 * kept in parallel arrays indexed by block id. */
#include "runner/engine/kvcache.h"

#include "common/err.h"

#include <stdlib.h>
#include <string.h>

struct fy_kv {
    int nb, bs, prefix;
    size_t slot_bytes;
    int32_t *ref;     /* [nb] references (tables + pending copies) */
    int32_t *fill;    /* [nb] slots written */
    int32_t *pin;     /* [nb] of ref, pending copy-on-write sources */
    uint8_t *cached;  /* [nb] 1: registered in the hash table */
    uint64_t *hash;   /* [nb] chain hash when cached */
    int32_t *parent;  /* [nb] the cached block before it in its chain (-1: first) */
    uint32_t *pgen;   /* [nb] the parent's generation when registered */
    uint32_t *gen;    /* [nb] bumped whenever the block leaves the cache */
    int32_t *tokens;  /* [nb x bs] a cached block's tokens (collision guard) */
    int32_t *hnext;   /* [nb] next block in the same hash bucket */
    int32_t *buckets; /* [nbuckets] first block of each bucket (-1: empty) */
    uint64_t hmask;
    int32_t *lru_prev, *lru_next; /* [nb] unreferenced cached blocks, oldest first */
    int32_t lru_head, lru_tail;
    int32_t *free_stack; /* [nb] */
    int n_free, n_used, n_lru;
    uint64_t used_fill; /* sum of fill over used blocks */
    uint64_t queries, hits;
};

/* --- Hashing ----------------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    /* The SplitMix64 / MurmurHash3 finaliser: full avalanche. */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* The chain hash of a block: its parent's hash and its tokens. */
static uint64_t block_hash(uint64_t parent, const int32_t *tok, int bs)
{
    uint64_t h = mix64(parent ^ 0x9e3779b97f4a7c15ULL);
    for (int i = 0; i < bs; i++) {
        h = mix64(h ^ ((uint64_t)(uint32_t)tok[i] + 0x632be59bd9b4e019ULL * (uint64_t)(i + 1)));
    }
    return h;
}

/* --- Lists ---------------------------------------------------------------------------- */

static void lru_remove(fy_kv *kv, int32_t b)
{
    int32_t p = kv->lru_prev[b], n = kv->lru_next[b];
    if (p >= 0) {
        kv->lru_next[p] = n;
    } else {
        kv->lru_head = n;
    }
    if (n >= 0) {
        kv->lru_prev[n] = p;
    } else {
        kv->lru_tail = p;
    }
    kv->lru_prev[b] = kv->lru_next[b] = -1;
    kv->n_lru--;
}

static void lru_append(fy_kv *kv, int32_t b)
{
    kv->lru_prev[b] = kv->lru_tail;
    kv->lru_next[b] = -1;
    if (kv->lru_tail >= 0) {
        kv->lru_next[kv->lru_tail] = b;
    } else {
        kv->lru_head = b;
    }
    kv->lru_tail = b;
    kv->n_lru++;
}

static void hash_remove(fy_kv *kv, int32_t b)
{
    int32_t *p = &kv->buckets[kv->hash[b] & kv->hmask];
    while (*p >= 0 && *p != b) {
        p = &kv->hnext[*p];
    }
    if (*p == b) {
        *p = kv->hnext[b];
    }
    kv->hnext[b] = -1;
    kv->cached[b] = 0;
    kv->gen[b]++;
}

static void hash_insert(fy_kv *kv, int32_t b, uint64_t h)
{
    uint64_t i = h & kv->hmask;
    kv->hash[b] = h;
    kv->hnext[b] = kv->buckets[i];
    kv->buckets[i] = b;
    kv->cached[b] = 1;
}

/* The cached block for hash H whose tokens are TOK and whose parent is
 * (PARENT, PGEN), or -1. */
static int32_t hash_find(const fy_kv *kv, uint64_t h, const int32_t *tok, int32_t parent,
                         uint32_t pgen)
{
    for (int32_t b = kv->buckets[h & kv->hmask]; b >= 0; b = kv->hnext[b]) {
        if (kv->hash[b] == h && kv->parent[b] == parent && (parent < 0 || kv->pgen[b] == pgen) &&
            memcmp(&kv->tokens[(size_t)b * (size_t)kv->bs], tok, (size_t)kv->bs * sizeof *tok) ==
                0) {
            return b;
        }
    }
    return -1;
}

/* --- Pool ------------------------------------------------------------------------------ */

int fy_kv_new(const fy_kv_options *o, fy_kv **out)
{
    *out = NULL;
    if (!o || o->num_blocks < 1 || o->block_size < 1 || o->block_size > 1024 ||
        o->num_blocks > (1 << 28)) {
        return FY_EINVAL;
    }
    fy_kv *kv = calloc(1, sizeof *kv);
    if (!kv) {
        return FY_ENOMEM;
    }
    size_t nb = (size_t)o->num_blocks;
    kv->nb = o->num_blocks;
    kv->bs = o->block_size;
    kv->prefix = o->prefix_caching ? 1 : 0;
    kv->slot_bytes = o->block_bytes / (size_t)o->block_size;
    size_t nbuckets = 1;
    while (nbuckets < nb) {
        nbuckets <<= 1;
    }
    kv->hmask = nbuckets - 1;
    kv->ref = calloc(nb, sizeof *kv->ref);
    kv->fill = calloc(nb, sizeof *kv->fill);
    kv->pin = calloc(nb, sizeof *kv->pin);
    kv->cached = calloc(nb, 1);
    kv->hash = calloc(nb, sizeof *kv->hash);
    kv->parent = calloc(nb, sizeof *kv->parent);
    kv->pgen = calloc(nb, sizeof *kv->pgen);
    kv->gen = calloc(nb, sizeof *kv->gen);
    kv->tokens = kv->prefix ? calloc(nb * (size_t)o->block_size, sizeof *kv->tokens) : NULL;
    kv->hnext = malloc(nb * sizeof *kv->hnext);
    kv->buckets = malloc(nbuckets * sizeof *kv->buckets);
    kv->lru_prev = malloc(nb * sizeof *kv->lru_prev);
    kv->lru_next = malloc(nb * sizeof *kv->lru_next);
    kv->free_stack = malloc(nb * sizeof *kv->free_stack);
    if (!kv->ref || !kv->fill || !kv->pin || !kv->cached || !kv->hash || !kv->parent || !kv->pgen ||
        !kv->gen || (kv->prefix && !kv->tokens) || !kv->hnext || !kv->buckets || !kv->lru_prev ||
        !kv->lru_next || !kv->free_stack) {
        fy_kv_free(kv);
        return FY_ENOMEM;
    }
    for (size_t i = 0; i < nbuckets; i++) {
        kv->buckets[i] = -1;
    }
    for (size_t i = 0; i < nb; i++) {
        kv->hnext[i] = kv->lru_prev[i] = kv->lru_next[i] = -1;
        /* Stack top is block 0, so blocks are handed out in id order. */
        kv->free_stack[i] = (int32_t)(nb - 1 - i);
    }
    kv->n_free = kv->nb;
    kv->lru_head = kv->lru_tail = -1;
    *out = kv;
    return 0;
}

void fy_kv_free(fy_kv *kv)
{
    if (!kv) {
        return;
    }
    free(kv->ref);
    free(kv->fill);
    free(kv->pin);
    free(kv->cached);
    free(kv->hash);
    free(kv->parent);
    free(kv->pgen);
    free(kv->gen);
    free(kv->tokens);
    free(kv->hnext);
    free(kv->buckets);
    free(kv->lru_prev);
    free(kv->lru_next);
    free(kv->free_stack);
    free(kv);
}

int fy_kv_block_size(const fy_kv *kv)
{
    return kv->bs;
}

int fy_kv_available(const fy_kv *kv)
{
    return kv->n_free + kv->n_lru;
}

/* Takes a block: the free list first, else the least recently used cached
 * block (evicted from the prefix cache). The caller checked availability. */
static int32_t block_alloc(fy_kv *kv)
{
    int32_t b;
    if (kv->n_free > 0) {
        b = kv->free_stack[--kv->n_free];
    } else {
        b = kv->lru_head;
        lru_remove(kv, b);
        hash_remove(kv, b);
    }
    kv->ref[b] = 1;
    kv->fill[b] = 0;
    kv->n_used++;
    return b;
}

static void block_ref(fy_kv *kv, int32_t b)
{
    if (kv->ref[b]++ == 0) {
        /* A cached block coming back into use. */
        lru_remove(kv, b);
        kv->n_used++;
        kv->used_fill += (uint64_t)kv->fill[b];
    }
}

static void block_unref(fy_kv *kv, int32_t b)
{
    if (--kv->ref[b] > 0) {
        return;
    }
    kv->n_used--;
    kv->used_fill -= (uint64_t)kv->fill[b];
    if (kv->cached[b]) {
        lru_append(kv, b);
    } else {
        kv->fill[b] = 0;
        kv->free_stack[kv->n_free++] = b;
    }
}

/* --- Tables ---------------------------------------------------------------------------- */

void fy_kv_table_init(fy_kv_table *t)
{
    memset(t, 0, sizeof *t);
    t->canon = -1;
}

static int table_grow(fy_kv_table *t, int need)
{
    if (need <= t->cap) {
        return 0;
    }
    int cap = t->cap ? t->cap : 8;
    while (cap < need) {
        cap *= 2;
    }
    int32_t *p = realloc(t->blocks, (size_t)cap * sizeof *p);
    if (!p) {
        return FY_ENOMEM;
    }
    t->blocks = p;
    t->cap = cap;
    return 0;
}

void fy_kv_table_release(fy_kv *kv, fy_kv_table *t)
{
    /* Released last block first, so the LRU evicts a chain's tail before
     * its head (the head is the part other sequences are likely to share). */
    for (int i = t->n_blocks - 1; i >= 0; i--) {
        block_unref(kv, t->blocks[i]);
    }
    free(t->blocks);
    fy_kv_table_init(t);
}

int fy_kv_match_prefix(fy_kv *kv, fy_kv_table *t, const int32_t *tokens, int n)
{
    if (!kv->prefix || t->n_blocks > 0 || n < 1) {
        return 0;
    }
    int max_full = (n - 1) / kv->bs;
    if (table_grow(t, max_full) < 0) {
        return FY_ENOMEM;
    }
    uint64_t h = 0;
    int32_t parent = -1;
    uint32_t pgen = 0;
    for (int i = 0; i < max_full; i++) {
        const int32_t *tok = tokens + (size_t)i * (size_t)kv->bs;
        uint64_t hi = block_hash(h, tok, kv->bs);
        int32_t b = hash_find(kv, hi, tok, parent, pgen);
        if (b < 0) {
            break;
        }
        block_ref(kv, b);
        t->blocks[t->n_blocks++] = b;
        h = hi;
        parent = b;
        pgen = kv->gen[b];
    }
    t->n_tokens = t->n_blocks * kv->bs;
    t->n_hashed = t->n_blocks;
    t->hash = h;
    t->canon = parent;
    t->canon_gen = pgen;
    return t->n_tokens;
}

void fy_kv_count_prefix(fy_kv *kv, int n, int hit)
{
    if (kv->prefix && n >= 1) {
        kv->queries += (uint64_t)((n - 1) / kv->bs);
        kv->hits += (uint64_t)(hit / kv->bs);
    }
}

/* Whether writing past T->n_tokens needs a copy of a shared partial block.
 * References held only by pending copies don't count: the copies run
 * before the step writes, so the last table sharing a block writes in place. */
static int needs_cow(const fy_kv *kv, const fy_kv_table *t, int n)
{
    if (n <= t->n_tokens || t->n_tokens % kv->bs == 0 || t->n_blocks <= t->n_tokens / kv->bs) {
        return 0;
    }
    int32_t b = t->blocks[t->n_tokens / kv->bs];
    return kv->ref[b] - kv->pin[b] > 1;
}

int fy_kv_blocks_needed(const fy_kv *kv, const fy_kv_table *t, int n)
{
    int want = (n + kv->bs - 1) / kv->bs;
    int add = want > t->n_blocks ? want - t->n_blocks : 0;
    return add + needs_cow(kv, t, n);
}

int fy_kv_reserve(fy_kv *kv, fy_kv_table *t, int n, fy_kv_cow *cow)
{
    int want = (n + kv->bs - 1) / kv->bs;
    int cow_needed = needs_cow(kv, t, n);
    if (fy_kv_blocks_needed(kv, t, n) > fy_kv_available(kv)) {
        return FY_EAGAIN;
    }
    if (cow_needed && (!cow || cow->n >= cow->cap)) {
        return FY_ELIMIT;
    }
    if (table_grow(t, want) < 0) {
        return FY_ENOMEM;
    }
    if (cow_needed) {
        int i = t->n_tokens / kv->bs;
        int32_t src = t->blocks[i];
        int32_t dst = block_alloc(kv);
        kv->pin[src]++;
        /* The table's reference on SRC becomes the pending copy's; it is
         * dropped by fy_kv_cow_done, so SRC can't be reused before the copy. */
        kv->fill[dst] = kv->fill[src];
        kv->used_fill += (uint64_t)kv->fill[dst];
        t->blocks[i] = dst;
        cow->src[cow->n] = src;
        cow->dst[cow->n] = dst;
        cow->n++;
    }
    while (t->n_blocks < want) {
        t->blocks[t->n_blocks++] = block_alloc(kv);
    }
    return 0;
}

void fy_kv_cow_done(fy_kv *kv, fy_kv_cow *cow)
{
    for (int i = 0; i < cow->n; i++) {
        kv->pin[cow->src[i]]--;
        block_unref(kv, cow->src[i]);
    }
    cow->n = 0;
}

/* Registers block I of T (full, its tokens TOK) in the prefix cache, or
 * follows the equal block already there. */
static void register_block(fy_kv *kv, fy_kv_table *t, int i, const int32_t *tok)
{
    int32_t b = t->blocks[i];
    uint64_t h = block_hash(t->hash, tok, kv->bs);
    int32_t canon = hash_find(kv, h, tok, t->canon, t->canon_gen);
    if (canon < 0 && !kv->cached[b]) {
        hash_insert(kv, b, h);
        kv->parent[b] = t->canon;
        kv->pgen[b] = t->canon_gen;
        memcpy(&kv->tokens[(size_t)b * (size_t)kv->bs], tok, (size_t)kv->bs * sizeof *tok);
        canon = b;
    }
    /* A duplicate (another sequence computed the same block first) stays
     * private and is freed with its table; the chain continues through the
     * cached one so later blocks still link up. A block that is cached but
     * not under this parent (impossible unless the chain was broken) ends
     * the chain for this table. */
    t->n_hashed = i + 1;
    t->hash = h;
    t->canon = canon;
    t->canon_gen = canon >= 0 ? kv->gen[canon] : 0;
}

void fy_kv_commit(fy_kv *kv, fy_kv_table *t, const int32_t *tokens, int n)
{
    if (n <= t->n_tokens) {
        return;
    }
    for (int p = t->n_tokens / kv->bs; p * kv->bs < n && p < t->n_blocks; p++) {
        int32_t b = t->blocks[p];
        int end = (p + 1) * kv->bs < n ? kv->bs : n - p * kv->bs;
        if (end > kv->fill[b]) {
            kv->used_fill += (uint64_t)(end - kv->fill[b]);
            kv->fill[b] = end;
        }
    }
    t->n_tokens = n;
    if (!kv->prefix) {
        return;
    }
    int full = n / kv->bs;
    for (int i = t->n_hashed; i < full && i < t->n_blocks; i++) {
        if (i > 0 && t->canon < 0) {
            break; /* the chain was broken: nothing after it can be found */
        }
        register_block(kv, t, i, tokens + (size_t)i * (size_t)kv->bs);
    }
}

int fy_kv_fork(fy_kv *kv, const fy_kv_table *src, fy_kv_table *dst)
{
    fy_kv_table_init(dst);
    if (table_grow(dst, src->n_blocks) < 0) {
        return FY_ENOMEM;
    }
    for (int i = 0; i < src->n_blocks; i++) {
        block_ref(kv, src->blocks[i]);
        dst->blocks[i] = src->blocks[i];
    }
    dst->n_blocks = src->n_blocks;
    dst->n_tokens = src->n_tokens;
    dst->n_hashed = src->n_hashed;
    dst->hash = src->hash;
    dst->canon = src->canon;
    dst->canon_gen = src->canon_gen;
    return 0;
}

void fy_kv_get_stats(const fy_kv *kv, fy_kv_stats *s)
{
    memset(s, 0, sizeof *s);
    s->total = kv->nb;
    s->used = kv->n_used;
    s->cached = kv->n_lru;
    s->free = kv->n_free;
    s->queries = kv->queries;
    s->hits = kv->hits;
    uint64_t alloc_slots = (uint64_t)kv->n_used * (uint64_t)kv->bs;
    s->wasted_bytes = (alloc_slots - kv->used_fill) * (uint64_t)kv->slot_bytes;
    s->used_bytes = alloc_slots * (uint64_t)kv->slot_bytes;
}
