/* attn.h: the CPU backend's attention op (internal to kernels/cpu/).
 *
 * A tiled ("flash") attention over the paged KV cache: each task takes a
 * tile of query rows, up to ATT_ROWS (tokens x query heads) of one
 * sequence and one KV head, and walks that sequence's cached keys in chunks
 * of ATT_KC. A chunk's K rows are gathered (and converted to f32) once,
 * transposed, and serve every row of the tile: the scores of one row for
 * the whole chunk are a broadcast-FMA loop with no horizontal sums, the
 * online softmax (kernels/math.h's state, with a vectorized exp) rescales
 * the row's accumulator once per chunk, and the chunk's V rows are summed
 * into it 64 columns at a time held in registers. Causal masking skips
 * chunks no row of the tile can see.
 *
 * Prefill (many tokens per sequence) fills tiles with tokens; decode (one
 * token) fills them with the query heads that share a KV head, so the same
 * code serves both and a sequence's logits do not depend on how its tokens
 * were batched. */
#ifndef FY_KERNELS_CPU_ATTN_H
#define FY_KERNELS_CPU_ATTN_H

#include "kernels/backend.h"
#include "kernels/cpu/mm.h"
#include "kernels/cpu/pool.h"

#define ATT_KC   32 /* keys per chunk */
#define ATT_ROWS 32 /* query rows per tile */

/* The attention op of kernels/backend.h on POOL, with the vector code of ISA.
 * Heads of more than 1024 dimensions are not run (the loaders refuse them). */
void fy__cpu_attention(fy_pool *pool, fy_cpu_isa isa, float *out, const float *q,
                       const void *k_cache, const void *v_cache, const fy_attn_batch *b,
                       const fy_attn_shape *sh);

#endif
