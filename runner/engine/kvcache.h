/* kvcache.h: the paged KV cache's block manager (the vLLM idea).
 *
 * KV memory is a pool of NUM_BLOCKS blocks of BLOCK_SIZE token slots; the
 * memory itself lives in the forward pass (forward.h) and this module only
 * hands out block ids. Each sequence has a block table (position p is in
 * blocks[p / block_size]); blocks are reference-counted so parallel samples
 * share their prompt blocks (fy_kv_fork) and a shared partial block is
 * copied on write (fy_kv_reserve returns the (src, dst) pairs the engine
 * passes to fy_fwd_copy_blocks before the step).
 *
 * Automatic prefix caching: a full block is identified by a 64-bit hash
 * chained over its tokens and its parent's hash. A hash hit is accepted only
 * when the block's tokens are equal and its parent is the very block (id and
 * generation) matched for the previous position, so a hash collision can
 * never splice foreign KV into a sequence. Cached blocks whose reference
 * count drops to zero stay cached and are evicted least recently used first
 * when the free list is empty.
 *
 * Every block is in exactly one state: used (referenced by a table or a
 * pending copy), cached (unreferenced, holding a reusable prefix, evictable)
 * or free. used + cached + free == total. Allocation and release are O(1);
 * nothing scans the pool.
 *
 * Not thread-safe: the engine thread owns it. */
#ifndef FY_ENGINE_KVCACHE_H
#define FY_ENGINE_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct fy_kv fy_kv;

typedef struct {
    int num_blocks;     /* >= 1 */
    int block_size;     /* tokens per block, >= 1 */
    size_t block_bytes; /* KV bytes of one block over all layers (for the waste figure) */
    int prefix_caching; /* 1: hash full blocks and reuse them */
} fy_kv_options;

/* One sequence's block table. Zero-initialise (fy_kv_table_init); release
 * with fy_kv_table_release. */
typedef struct {
    int32_t *blocks; /* [n_blocks] block ids */
    int n_blocks, cap;
    int n_tokens;  /* slots whose KV is written (committed) */
    int n_hashed;  /* leading full blocks already matched or registered */
    uint64_t hash; /* chain hash of block n_hashed - 1 */
    int32_t canon; /* the cached block standing for block n_hashed - 1 (-1: none) */
    uint32_t canon_gen;
} fy_kv_table;

/* Copy-on-write pairs collected for one step. The caller sizes the arrays
 * (one pair per sequence per step at most). */
typedef struct {
    int32_t *src, *dst;
    int n, cap;
} fy_kv_cow;

typedef struct {
    int total, used, cached, free;
    uint64_t queries, hits; /* full-block prefix lookups and hits */
    uint64_t wasted_bytes;  /* allocated minus written token slots of used blocks, in bytes */
    uint64_t used_bytes;    /* used blocks, in bytes */
} fy_kv_stats;

/* Returns 0, FY_EINVAL (options out of range) or FY_ENOMEM. */
int fy_kv_new(const fy_kv_options *o, fy_kv **out);
void fy_kv_free(fy_kv *kv);

int fy_kv_block_size(const fy_kv *kv);
/* Blocks an allocation can take now: free + cached (evictable). */
int fy_kv_available(const fy_kv *kv);

void fy_kv_table_init(fy_kv_table *t);
/* Drops T's references (blocks reaching zero become cached or free) and
 * frees its array; T is empty afterwards. */
void fy_kv_table_release(fy_kv *kv, fy_kv_table *t);

/* For an empty T about to hold TOKENS[0..N): takes the longest cached
 * prefix of whole blocks, never the block holding the last token (it must
 * be recomputed for its logits). Returns the tokens covered (a multiple of
 * block_size; T->n_tokens is set to it) or FY_ENOMEM. */
int fy_kv_match_prefix(fy_kv *kv, fy_kv_table *t, const int32_t *tokens, int n);

/* Counts one lookup of a sequence of N tokens that found HIT tokens
 * (fy_kv_match_prefix's result) in the hit-rate figures. Lookups that are
 * undone (the sequence could not be admitted yet) are not counted. */
void fy_kv_count_prefix(fy_kv *kv, int n, int hit);

/* New blocks fy_kv_reserve(T, N) would take (copy-on-write included). */
int fy_kv_blocks_needed(const fy_kv *kv, const fy_kv_table *t, int n);

/* Makes T cover slots 0..N-1 so tokens T->n_tokens..N-1 can be written: a
 * shared partial last block is replaced by a private copy (the pair is
 * appended to COW; its source stays referenced until fy_kv_cow_done), and
 * new blocks are appended. Returns 0, FY_EAGAIN when not enough blocks are
 * available (T unchanged), FY_ENOMEM, or FY_ELIMIT when COW is full. */
int fy_kv_reserve(fy_kv *kv, fy_kv_table *t, int n, fy_kv_cow *cow);

/* After the copies of COW ran: releases their sources and empties COW. */
void fy_kv_cow_done(fy_kv *kv, fy_kv_cow *cow);

/* After the step wrote slots T->n_tokens..N-1 (TOKENS[0..N) are the
 * sequence's tokens): records them and registers newly full blocks in the
 * prefix cache. */
void fy_kv_commit(fy_kv *kv, fy_kv_table *t, const int32_t *tokens, int n);

/* DST (empty) shares every block of SRC. Returns 0 or FY_ENOMEM. */
int fy_kv_fork(fy_kv *kv, const fy_kv_table *src, fy_kv_table *dst);

void fy_kv_get_stats(const fy_kv *kv, fy_kv_stats *s);

#endif
