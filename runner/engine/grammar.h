/* grammar.h: byte-level grammars, their parse state, and the vocabulary
 * masks of constrained decoding.
 *
 * A grammar is a set of rules; a rule is a list of alternatives; an
 * alternative is a sequence of elements, each one byte from a set, a
 * reference to a rule, or a rule repeated min..max times. It describes
 * bytes, not characters: whoever builds one (runner/api/jsonschema.h,
 * runner/api/regex.h) spells UTF-8 out, so every sentence it accepts is
 * valid UTF-8 only if the builder made it so.
 *
 * The parse state is the set of pushdown stacks the bytes so far leave
 * alive (as llama.cpp's GBNF sampler keeps it), each a list of positions to
 * continue at. Every operation is bounded: a state holds at most
 * FY_GRAMMAR_MAX_STACKS stacks of at most FY_GRAMMAR_MAX_DEPTH frames, and
 * the stacks past a cap are dropped (each survivor is still a valid parse,
 * so what the state allows stays a subset of the grammar's language).
 *
 * The masker holds a trie of the vocabulary's token bytes and fills, for a
 * state, the set of tokens whose bytes the state can take, walking the trie
 * once and pruning at the first byte no stack allows. Masks are cached per
 * (grammar, state): a state seen before (the inside of a string, a repeated
 * list item) costs a lookup.
 *
 * Threads: a finished grammar is immutable and may be shared by threads
 * (fy_grammar_ref / _unref are atomic). A state and a masker are used by one
 * thread at a time (the engine thread). */
#ifndef FY_ENGINE_GRAMMAR_H
#define FY_ENGINE_GRAMMAR_H

#include "common/limits.h" /* FY_GRAMMAR_MAX_*: the caps on a grammar and its parse state */

#include <stddef.h>
#include <stdint.h>

typedef struct fy_grammar fy_grammar;

/* --- Building ---------------------------------------------------------------------------- */

typedef struct fy_gbuild fy_gbuild;

/* A 256-bit byte set: bit B of w[B / 64]. */
typedef struct {
    uint64_t w[4];
} fy_byteset;

static inline void fy_byteset_add_range(fy_byteset *s, unsigned lo, unsigned hi)
{
    for (unsigned b = lo; b <= hi && b < 256; b++) {
        s->w[b >> 6] |= 1ull << (b & 63);
    }
}

static inline int fy_byteset_has(const fy_byteset *s, unsigned b)
{
    return (int)((s->w[b >> 6] >> (b & 63)) & 1);
}

int fy_gbuild_new(fy_gbuild **out);
void fy_gbuild_free(fy_gbuild *b);

/* A new rule with one empty alternative; returns its id (>= 0). Elements are
 * appended to a rule's last alternative; fy_gb_alt starts the next one.
 * The builder's error is sticky: after a failure (FY_ENOMEM, FY_ELIMIT past
 * a cap, FY_EINVAL for a bad argument) every call returns it again and
 * fy_gbuild_finish reports it, so a caller may check only there. */
int fy_gb_rule(fy_gbuild *b);
int fy_gb_alt(fy_gbuild *b, int rule);
int fy_gb_bytes(fy_gbuild *b, int rule, const fy_byteset *set); /* one byte from SET (not empty) */
int fy_gb_byte_range(fy_gbuild *b, int rule, unsigned lo, unsigned hi);
int fy_gb_lit(fy_gbuild *b, int rule, const char *s, size_t n); /* these bytes, in order */
int fy_gb_ref(fy_gbuild *b, int rule, int target);
/* TARGET MIN..MAX times (MAX -1: unbounded; MIN <= MAX <= FY_GRAMMAR_REPEAT_MAX). */
int fy_gb_repeat(fy_gbuild *b, int rule, int target, int min, int max);
/* A new rule matching one of the rules ALTS[0..N) (N >= 1). */
int fy_gb_choice(fy_gbuild *b, const int *alts, int n);
/* A code point range [lo, hi] (inclusive). */
typedef struct {
    uint32_t lo, hi;
} fy_cprange;

/* A new rule matching one character, UTF-8 encoded, whose code point is in
 * the union of R[0..N) (any order, overlaps allowed; surrogates and code
 * points past U+10FFFF are never matched). Returns the rule id, or FY_EINVAL
 * when the union is empty. */
int fy_gb_charclass(fy_gbuild *b, const fy_cprange *r, int n);
/* The builder's error (0 when none). */
int fy_gbuild_error(const fy_gbuild *b);

/* Checks and freezes the grammar whose start rule is ROOT. Refuses, with ERR
 * saying which rule: a reference to no rule; left recursion (a rule that can
 * reach itself before any byte, which no parse could leave); an unbounded
 * repetition of a rule that can match nothing; a language with no sentence
 * at all. Returns 0 and *OUT (one reference), or a negative FY_E* code (the
 * builder's sticky error first). B stays the caller's to free. */
int fy_gbuild_finish(fy_gbuild *b, int root, fy_grammar **out, char *err, size_t errlen);

fy_grammar *fy_grammar_ref(fy_grammar *g);
void fy_grammar_unref(fy_grammar *g);        /* NULL is a no-op */
uint64_t fy_grammar_id(const fy_grammar *g); /* unique per grammar in this process */
int fy_grammar_n_rules(const fy_grammar *g);
int fy_grammar_n_elements(const fy_grammar *g);

/* --- Parsing ----------------------------------------------------------------------------- */

typedef struct fy_gstate fy_gstate;

/* The state before any byte. Holds a reference to G. FY_ENOMEM. */
int fy_gstate_new(fy_grammar *g, fy_gstate **out);
void fy_gstate_free(fy_gstate *s);
/* Makes DST (of the same grammar) a copy of SRC. 0 or FY_ENOMEM. */
int fy_gstate_copy(fy_gstate *dst, const fy_gstate *src);
/* Back to the state before any byte. */
int fy_gstate_reset(fy_gstate *s);

/* Takes BYTES[0..N): 0, or FY_EINVAL when the grammar does not allow them
 * here (S is then unchanged), FY_ENOMEM. */
int fy_gstate_feed(fy_gstate *s, const void *bytes, size_t n);
/* 1 when the bytes so far are a whole sentence of the grammar. */
int fy_gstate_accepting(const fy_gstate *s);
/* 1 when some byte may follow. A state that is accepting and cannot
 * continue is finished. */
int fy_gstate_can_continue(const fy_gstate *s);
/* The bytes that may come next, into SET. */
void fy_gstate_next_bytes(const fy_gstate *s, fy_byteset *set);

/* --- Masks over a vocabulary ------------------------------------------------------------- */

typedef struct fy_gmasker fy_gmasker;

/* The trie of VOCAB tokens' bytes: token I is BYTES[I][0..LENS[I]); a NULL
 * or empty entry (a special token, a gap) is never allowed by a grammar.
 * END_IDS[0..N_END) are the tokens that end a sentence (EOS, stop ids):
 * allowed when a state is accepting. CACHE_BYTES bounds the mask cache
 * (0: 64 MiB). The strings are copied. FY_ENOMEM. */
int fy_gmasker_new(int vocab, const char *const *bytes, const size_t *lens, const int32_t *end_ids,
                   int n_end, size_t cache_bytes, fy_gmasker **out);
void fy_gmasker_free(fy_gmasker *m);

/* Words of a mask: bit I of mask[I / 32] allows token I. */
int fy_gmasker_words(const fy_gmasker *m);

/* The tokens S allows next, as a mask owned by M (valid until the next
 * call); *N_ALLOWED gets their count (0: no token can continue S, which a
 * caller must treat as the end). NULL only when out of memory. */
const uint32_t *fy_gmasker_mask(fy_gmasker *m, const fy_gstate *s, int *n_allowed);

/* Cache statistics (for the benchmark and the tests). */
typedef struct {
    uint64_t lookups, hits, walks;
    size_t entries, bytes;
} fy_gmasker_stats;
void fy_gmasker_get_stats(const fy_gmasker *m, fy_gmasker_stats *st);

#endif
