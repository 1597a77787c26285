/* tok_internal.h: the tokenizer's data, shared by tokenizer.c (loading and
 * the accessors), tok_encode.c (normalizers, pre-tokenizers, BPE) and
 * tok_decode.c (full and incremental decoding). Not for use outside
 * runner/engine/tok_*.c and tokenizer.c; tests may include it. */
#ifndef FY_ENGINE_TOK_INTERNAL_H
#define FY_ENGINE_TOK_INTERNAL_H

#include "runner/engine/tokenizer.h"

#include "common/buf.h"
#include "common/utf8.h"

#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

/* Caps on what a tokenizer.json (and an encode call) may make us hold. They
 * belong to this module alone; every one is checked where the value is read. */
#define TOK_MAX_FILE_BYTES   (64u << 20) /* tokenizer.json */
#define TOK_MAX_CONFIG_BYTES (4u << 20)  /* tokenizer_config.json */
#define TOK_MAX_VOCAB        (1 << 22)   /* entries in model.vocab, and the largest id + 1 */
#define TOK_MAX_MERGES       (1 << 23)
#define TOK_MAX_ADDED        (1 << 16)
#define TOK_MAX_TOKEN_BYTES  4096 /* one token's text */
#define TOK_MAX_STEPS        16   /* normalizer / pre-tokenizer / decoder steps, after flattening */
#define TOK_MAX_DEPTH        4    /* Sequence inside Sequence */
#define TOK_MAX_PATTERN      4096 /* bytes of a Split/Replace pattern */
#define TOK_MAX_TEMPLATE     8    /* special ids a post-processor adds on each side */
#define TOK_MAX_TEXT         (64u << 20) /* bytes one encode call accepts */
#define TOK_MATCH_LIMIT      10000000u   /* PCRE2 match limit: bounds time on hostile patterns */
#define TOK_DEPTH_LIMIT      100000u     /* PCRE2 backtracking depth limit */

/* Normalizers (applied to each text segment between added tokens). */
enum {
    TOK_N_PREPEND,    /* a: text to prepend when the segment is not empty */
    TOK_N_REPLACE,    /* a -> b, literal */
    TOK_N_REPLACE_RE, /* re -> b */
    TOK_N_NFC,
    TOK_N_NFD,
    TOK_N_NFKC,
    TOK_N_NFKD,
    TOK_N_LOWERCASE,
    TOK_N_STRIP, /* left / right: strip Unicode white space */
};

/* Pre-tokenizers (each maps a list of pieces to a finer list). */
enum {
    TOK_P_SPLIT,     /* re (or literal a), behavior, invert */
    TOK_P_METASPACE, /* a: replacement; prepend: TOK_PREPEND_*; split */
    TOK_P_BYTELEVEL, /* add_prefix_space; re when use_regex */
};

/* How a split keeps its matches (HF SplitDelimiterBehavior). */
enum {
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_MERGED_PREV,
    TOK_SPLIT_MERGED_NEXT,
    TOK_SPLIT_CONTIGUOUS,
};

enum { TOK_PREPEND_NEVER, TOK_PREPEND_FIRST, TOK_PREPEND_ALWAYS };

/* Per-token decoder steps, in chain order. */
enum {
    TOK_D_REPLACE,      /* a -> b, literal */
    TOK_D_BYTEFALLBACK, /* "<0xNN>" -> byte NN */
    TOK_D_BYTELEVEL,    /* GPT-2 unicode chars -> bytes */
    TOK_D_METASPACE,    /* a -> " "; the first token's a's are dropped when prepend != never */
    TOK_D_STRIP,        /* strip up to start leading / stop trailing `a` chars of each token */
};

typedef struct {
    int kind;
    char *a, *b; /* NUL-terminated, owned */
    size_t alen, blen;
    pcre2_code *re;
    int behavior, invert, prepend, split, add_prefix_space, left, right;
    int start, stop;
} tok_step;

typedef struct {
    char *content; /* owned, NUL-terminated */
    size_t len;
    int32_t id;
    uint8_t special, lstrip, rstrip, normalized, single_word;
} tok_added;

typedef struct {
    uint64_t key; /* (left id << 32) | right id; UINT64_MAX when empty */
    int32_t rank;
    int32_t id; /* the merged token */
} tok_merge_slot;

struct fy_tokenizer {
    int32_t n_vocab;      /* largest id + 1 */
    char **piece;         /* [n_vocab] token text (NUL-terminated), NULL for a gap */
    uint32_t *piece_len;  /* [n_vocab] */
    uint8_t *special;     /* [n_vocab] 1 for a special added token */
    char **vstr;          /* [n_vocab] model.vocab text (added tokens may rename an id's piece) */
    uint32_t *vlen;       /* [n_vocab] */
    int32_t *vocab_slots; /* open addressing over model.vocab (compares vstr): id or -1 */
    size_t vocab_mask;
    tok_merge_slot *merges;
    size_t merge_mask;
    size_t n_merges;

    /* model */
    int32_t unk_id; /* -1 when none */
    int fuse_unk, byte_fallback, ignore_merges;
    int32_t byte_id[256]; /* "<0xNN>" ids for byte fallback, -1 when absent */

    tok_added *added; /* sorted by first byte, then longest first */
    size_t n_added;
    uint32_t added_first[257]; /* added[added_first[c] .. added_first[c+1]) start with byte c */

    tok_step norm[TOK_MAX_STEPS];
    int n_norm;
    tok_step pretok[TOK_MAX_STEPS];
    int n_pretok;
    tok_step dec[TOK_MAX_STEPS];
    int n_dec;
    int dec_strip_start; /* Strip after Fuse: leading spaces dropped from the whole output */

    /* GPT-2 byte <-> unicode map (used by ByteLevel steps). */
    char bl_enc[256][3];
    uint8_t bl_len[256];
    int16_t bl_dec[324]; /* code point -> byte, -1 when not in the map */

    /* Decoded bytes of each token when it is not the first (precomputed). */
    char *dec_bytes;
    uint32_t *dec_off; /* [n_vocab + 1] */

    int32_t pre[TOK_MAX_TEMPLATE], post[TOK_MAX_TEMPLATE];
    int n_pre, n_post;
    int32_t bos, eos;
};

/* Growable id list (bounded by the caller's input). */
typedef struct {
    int32_t *v;
    size_t n, cap;
} tok_ids;

int fy__tok_ids_push(tok_ids *a, int32_t id);

/* ---- building a tokenizer: what tokenizer.c (tokenizer.json) and
 * tokenizer_gguf.c (GGUF metadata) share. A loader callocs the struct,
 * fills it through these, sets its steps and specials, and ends with
 * fy__tok_finish(); on failure fy_tokenizer_free() releases whatever was
 * built. The callers validate first: these check nothing but memory. */

/* Where a loader reports: the file named in messages, and the caller's buffer. */
typedef struct {
    const char *file;
    char *err;
    size_t errlen;
} tok_ctx;

/* Writes "FILE: <message>" into C's buffer; returns RC. */
int fy__tok_fail(tok_ctx *c, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A malloc'd NUL-terminated copy of S[0..N), NULL when out of memory. */
char *fy__tok_dup(const char *s, size_t n);

/* Compiles a split/replace pattern (PCRE2, UTF + UCP; LITERAL: a plain
 * string) of at most TOK_MAX_PATTERN bytes; WHERE names it in messages. */
int fy__tok_compile_re(tok_ctx *c, const char *pat, size_t len, int literal, const char *where,
                       pcre2_code **out);

/* GPT-2's split pattern (the ByteLevel pre-tokenizer's use_regex). */
extern const char fy__tok_gpt2_pattern[];

/* The per-id tables for ids [0, N_VOCAB), and a vocabulary hash with room for
 * N_ENTRIES strings. */
int fy__tok_vocab_alloc(fy_tokenizer *t, int32_t n_vocab, size_t n_entries);
/* Makes a copy of S[0..N) the vocabulary text and the piece of ID, a free id
 * whose text is not in the vocabulary yet (at most N_ENTRIES of them). */
int fy__tok_vocab_put(fy_tokenizer *t, int32_t id, const char *s, size_t n);

/* A merge table with room for N pairs. */
int fy__tok_merges_alloc(fy_tokenizer *t, size_t n);
/* (A, B) -> ID at RANK (lower merges first); a pair given again takes the new
 * rank. At most the N pairs of fy__tok_merges_alloc(). */
void fy__tok_merge_put(fy_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t id);

/* Room for N added tokens; each put copies A.content (A.len bytes, not
 * empty), which becomes the piece of A.id; fy__tok_added_index() after the
 * last one orders them for matching. */
int fy__tok_added_alloc(fy_tokenizer *t, size_t n);
int fy__tok_added_put(fy_tokenizer *t, tok_added a);
void fy__tok_added_index(fy_tokenizer *t);

/* The <0xNN> byte-fallback ids, the GPT-2 byte map and each token's decoded
 * bytes: the last step. */
int fy__tok_finish(fy_tokenizer *t);

/* Loads from memory (tests and fuzz drivers); CONFIG_PATH (a
 * tokenizer_config.json) may be NULL. Same checks as fy_tokenizer_load. */
int fy__tok_load_mem(const char *data, size_t len, const char *config_path, fy_tokenizer **out,
                     char *err, size_t errlen);

/* Vocabulary lookup of S[0..N); -1 when absent. */
int32_t fy__tok_vocab_find(const fy_tokenizer *t, const char *s, size_t n);
/* Merge of (A, B): 1 and *RANK, *ID when it exists. */
int fy__tok_merge_find(const fy_tokenizer *t, int32_t a, int32_t b, int32_t *rank, int32_t *id);

/* UTF-8 is common/utf8.h's. */
int fy__tok_is_space(uint32_t cp);

/* Applies the per-token decoder chain to token ID; FIRST selects the first
 * token's treatment (Metaspace). Appends the bytes to OUT. */
int fy__tok_decode_piece(const fy_tokenizer *t, int32_t id, int first, fy_buf *out);

/* Replaces every match of RE in S[0..N) by REP, appending the result to OUT.
 * Returns 0, FY_ENOMEM, FY_ETOOBIG or FY_ELIMIT (the match limit was hit). */
int fy__tok_re_replace(const pcre2_code *re, const char *s, size_t n, const char *rep,
                       size_t replen, fy_buf *out);

/* Appends S[0..N) to OUT with every occurrence of A (ALEN > 0) replaced by REP. */
int fy__tok_replace_lit(const char *s, size_t n, const char *a, size_t alen, const char *rep,
                        size_t replen, fy_buf *out);

#endif
