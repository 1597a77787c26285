/* tok_support.h: what the tokenizer tests share: finding the shared test
 * data (skipping a test without it) and encoding with a failure message.
 * Header-only; include after <cmocka.h>. */
#ifndef FY_TEST_TOK_SUPPORT_H
#define FY_TEST_TOK_SUPPORT_H

#include "common/buf.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "runner/engine/tok_internal.h"
#include "runner/engine/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* $FERRY_TESTDATA/REL in BUF when that file exists, else NULL. */
static inline const char *testdata(const char *rel, char *buf, size_t len)
{
    const char *root = getenv("FERRY_TESTDATA");
    if (!root || !*root) {
        return NULL;
    }
    snprintf(buf, len, "%s/%s", root, rel);
    return fy_file_exists(buf) ? buf : NULL;
}

/* Declares VAR, the path of test data REL, or skips the test. */
#define NEED_TESTDATA(var, rel)                                                              \
    char var##_buf[4096];                                                                    \
    const char *var = testdata(rel, var##_buf, sizeof var##_buf);                            \
    if (!var) {                                                                              \
        print_message("skipped: %s not found (set FERRY_TESTDATA to run this test)\n", rel); \
        skip();                                                                              \
    }

/* Encodes S[0..N) into *IDS (the caller frees it); fails the test on error. */
static inline size_t encode(const fy_tokenizer *t, const char *s, size_t n, int add_special,
                            int parse_special, int32_t **ids)
{
    fy_encode_options o = {add_special, parse_special};
    size_t k = 0;
    int rc = fy_tokenizer_encode(t, s, n, &o, ids, &k);
    if (rc) {
        fail_msg("encode \"%.*s\": %s", (int)n, s, fy_strerror(rc));
    }
    return k;
}

/* Streams IDS[0..N) through a detokenizer primed with PRIME[0..NP) (skipping
 * specials): every chunk is valid UTF-8 and together they read TEXT. */
static inline void expect_stream(const fy_tokenizer *t, const int32_t *prime, size_t np,
                                 const int32_t *ids, size_t n, const char *text)
{
    fy_detok *d = fy_detok_new(t, 1);
    assert_non_null(d);
    assert_int_equal(fy_detok_prime(d, prime, np), 0);
    fy_buf acc;
    fy_buf_init(&acc, 1 << 20);
    const char *chunk;
    size_t len;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(fy_detok_push(d, ids[i], &chunk, &len), 0);
        assert_true(fy__tok_utf8_valid(chunk, len));
        assert_int_equal(fy_buf_append(&acc, chunk, len), 0);
    }
    assert_int_equal(fy_detok_finish(d, &chunk, &len), 0);
    assert_int_equal(fy_buf_append(&acc, chunk, len), 0);
    assert_int_equal(acc.len, strlen(text));
    assert_memory_equal(acc.data, text, acc.len);
    fy_buf_free(&acc);
    fy_detok_free(d);
}

#endif
