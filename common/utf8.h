/* utf8.h: UTF-8 as the Unicode Standard defines it (chapter 3, Table 3-7):
 * no overlong forms, no surrogates (U+D800..U+DFFF), nothing above
 * U+10FFFF. The one place ferry checks, decodes and repairs text: the
 * tokenizers, stop strings, the OpenAI API's JSON and the access log. */
#ifndef FY_COMMON_UTF8_H
#define FY_COMMON_UTF8_H

#include "common/buf.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* The length (1..4) of the valid character that S[0..N) starts with, its
 * code point in *CP (CP may be NULL); 0 when the bytes there are not one
 * (ill-formed, or truncated by N; N == 0 included). */
size_t fy_utf8_char(const char *s, size_t n, uint32_t *cp);

/* 1 when S[0..N) is valid UTF-8. */
int fy_utf8_valid(const char *s, size_t n);

/* Appends S[0..N) to OUT with each maximal ill-formed subsequence (the
 * Unicode "maximal subpart" practice, as Rust's from_utf8_lossy and
 * Python's errors="replace" do) replaced by U+FFFD. Unless FINAL, a
 * character cut short at the end (a valid prefix) is left unconsumed for
 * the next call. Returns the bytes consumed, or a negative FY_E* code from
 * OUT. */
long fy_utf8_sanitize(const char *s, size_t n, int final, fy_buf *out);

/* Copies S[0..N) to OUT replacing each byte that is not part of a valid
 * character, and each NUL, by REPL (REPL_LEN bytes): text safe for any JSON
 * or C string. OUT holds N * max(REPL_LEN, 1) + 1 bytes; it is
 * NUL-terminated. Returns its length. */
size_t fy_utf8_scrub(const char *s, size_t n, const char *repl, size_t repl_len, char *out);

/* A JSON string of S[0..N): the bytes as they are when they are valid UTF-8
 * (NULs included), else as fy_utf8_scrub() with REPL repairs them. Returns a
 * new reference, or NULL when out of memory. */
json_t *fy_utf8_json(const char *s, size_t n, const char *repl, size_t repl_len);

#endif
