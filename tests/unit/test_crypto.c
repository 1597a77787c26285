/* Unit tests for common/crypto: published SHA-256 and HMAC-SHA256 vectors,
 * streaming against one-shot, hex and base64url codecs, constant-time
 * comparison, and the random generators (including across fork and threads). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/crypto.h"
#include "common/err.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Decodes a hex literal from a table (test-side helper built on the code
 * under test only after test_hex_vectors has checked it). */
static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;
    assert_int_equal(fy_hex_decode(hex, strlen(hex), out, cap, &n), 0);
    return n;
}

static void assert_digest(const uint8_t got[FY_SHA256_LEN], const char *want_hex)
{
    char hex[FY_HEX_ENCODED_SIZE(FY_SHA256_LEN)];
    assert_int_equal(fy_hex_encode(got, FY_SHA256_LEN, hex, sizeof hex), 0);
    assert_string_equal(hex, want_hex);
}

/* ---- hex ---------------------------------------------------------------- */

static void test_hex_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t n;
        const char *hex;
    } cases[] = {
        {"", 0, ""},
        {"\x00", 1, "00"},
        {"\x0a\xff", 2, "0aff"},
        {"\x01\x23\x45\x67\x89\xab\xcd\xef", 8, "0123456789abcdef"},
        {"ferry", 5, "6665727279"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char hex[64];
        uint8_t bin[32];
        size_t n = 99;
        assert_int_equal(fy_hex_encode(cases[i].in, cases[i].n, hex, sizeof hex), 0);
        assert_string_equal(hex, cases[i].hex);
        assert_int_equal(fy_hex_decode(hex, strlen(hex), bin, sizeof bin, &n), 0);
        assert_int_equal(n, cases[i].n);
        assert_memory_equal(bin, cases[i].in, n);
    }
    /* Upper case decodes the same. */
    uint8_t bin[8];
    size_t n = 0;
    assert_int_equal(fy_hex_decode("0AfF", 4, bin, sizeof bin, &n), 0);
    assert_int_equal(n, 2);
    assert_memory_equal(bin, "\x0a\xff", 2);
}

static void test_hex_rejects(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int rc;
    } cases[] = {
        {"abc", FY_EPARSE}, {"0", FY_EPARSE},        {"0g", FY_EPARSE},   {"g0", FY_EPARSE},
        {"zz", FY_EPARSE},  {" 0", FY_EPARSE},       {"0x", FY_EPARSE},   {"0\n", FY_EPARSE},
        {"+1", FY_EPARSE},  {"\x80\x80", FY_EPARSE}, {"ab:c", FY_EPARSE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t out[8] = {0};
        assert_int_equal(fy_hex_decode(cases[i].in, strlen(cases[i].in), out, sizeof out, NULL),
                         cases[i].rc);
    }
    /* Every byte value: accepted exactly when it is a hex digit, and decoded
     * to the right value (this covers the branch-free classification). */
    for (int c = 0; c < 256; c++) {
        char in[2] = {'0', (char)c};
        uint8_t out = 0xEE;
        int rc = fy_hex_decode(in, 2, &out, 1, NULL);
        if (isxdigit(c)) {
            assert_int_equal(rc, 0);
            char s[2] = {(char)c, 0};
            assert_int_equal(out, (uint8_t)strtoul(s, NULL, 16));
        } else {
            assert_int_equal(rc, FY_EPARSE);
        }
    }
    /* Sizes: output too small, encode buffer too small, NULL. */
    uint8_t one[1];
    char small[5];
    assert_int_equal(fy_hex_decode("aabb", 4, one, 1, NULL), FY_ETOOBIG);
    assert_int_equal(fy_hex_encode("ab", 2, small, 4), FY_ETOOBIG);
    assert_int_equal(fy_hex_encode("ab", 2, small, 5), 0);
    assert_int_equal(fy_hex_encode(NULL, 2, small, 5), FY_EINVAL);
    assert_int_equal(fy_hex_decode(NULL, 2, one, 1, NULL), FY_EINVAL);
}

static void test_hex_roundtrip_random(void **state)
{
    (void)state;
    for (size_t n = 0; n < 200; n += 7) {
        uint8_t in[200], back[200];
        char hex[FY_HEX_ENCODED_SIZE(200)];
        size_t got = 0;
        assert_int_equal(fy_random_bytes(in, n), 0);
        assert_int_equal(fy_hex_encode(in, n, hex, sizeof hex), 0);
        assert_int_equal(strlen(hex), 2 * n);
        assert_int_equal(fy_hex_decode(hex, 2 * n, back, sizeof back, &got), 0);
        assert_int_equal(got, n);
        assert_memory_equal(back, in, n);
    }
}

/* ---- base64url ---------------------------------------------------------- */

static void test_b64url_vectors(void **state)
{
    (void)state;
    /* RFC 4648 section 10, without padding, plus bytes that use the two
     * URL-safe characters ('-' and '_' where base64 has '+' and '/'). */
    static const struct {
        const char *in;
        size_t n;
        const char *b64;
    } cases[] = {
        {"", 0, ""},
        {"f", 1, "Zg"},
        {"fo", 2, "Zm8"},
        {"foo", 3, "Zm9v"},
        {"foob", 4, "Zm9vYg"},
        {"fooba", 5, "Zm9vYmE"},
        {"foobar", 6, "Zm9vYmFy"},
        {"\xfb\xff", 2, "-_8"},
        {"\xff\xff\xfe", 3, "___-"},
        {"\x00\x00\x00", 3, "AAAA"},
        {"\x03\xe0", 2, "A-A"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char enc[32];
        uint8_t dec[32];
        size_t n = 99;
        assert_int_equal(fy_b64url_encode(cases[i].in, cases[i].n, enc, sizeof enc), 0);
        assert_string_equal(enc, cases[i].b64);
        assert_int_equal(strlen(enc), FY_B64URL_ENCODED_LEN(cases[i].n));
        assert_int_equal(fy_b64url_decode(enc, strlen(enc), dec, sizeof dec, &n), 0);
        assert_int_equal(n, cases[i].n);
        assert_memory_equal(dec, cases[i].in, n);
    }
}

static void test_b64url_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "Zg==",           /* padding */
        "Zm8=",           /* padding */
        "Z",              /* impossible length 4k+1 */
        "Zm9vY",          /* impossible length 4k+1 */
        "Zh",             /* non-canonical: trailing 4 bits not zero */
        "Zm9",            /* non-canonical: trailing 2 bits not zero */
        "Zm9vYh", "Zm+v", /* standard base64 alphabet */
        "Zm/v",   "Zm9v\n", "Zm 9v", " Zm9v", "Zm9v=", "Zm\x80v", "Zm.v",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t out[16];
        assert_int_equal(fy_b64url_decode(bad[i], strlen(bad[i]), out, sizeof out, NULL),
                         FY_EPARSE);
    }
    /* Every byte value in a full quantum: accepted exactly when it is in the
     * alphabet, with the right 6-bit value. */
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (int c = 0; c < 256; c++) {
        char in[4] = {'A', 'A', 'A', (char)c};
        uint8_t out[3] = {0xEE, 0xEE, 0xEE};
        int rc = fy_b64url_decode(in, 4, out, sizeof out, NULL);
        const char *pos = c ? memchr(alphabet, c, 64) : NULL;
        if (pos) {
            assert_int_equal(rc, 0);
            assert_int_equal(out[2], (uint8_t)(pos - alphabet));
        } else {
            assert_int_equal(rc, FY_EPARSE);
        }
    }
    /* Buffer sizes. */
    char enc[8];
    uint8_t dec[2];
    assert_int_equal(fy_b64url_encode("foobar", 6, enc, 8), FY_ETOOBIG); /* needs 9 */
    assert_int_equal(fy_b64url_encode("fooba", 5, enc, 7), FY_ETOOBIG);  /* needs 8 */
    assert_int_equal(fy_b64url_encode("fooba", 5, enc, 8), 0);
    assert_int_equal(fy_b64url_decode("Zm9v", 4, dec, 2, NULL), FY_ETOOBIG);
    assert_int_equal(fy_b64url_decode("Zm8", 3, dec, 2, NULL), 0);
    assert_int_equal(fy_b64url_decode(NULL, 4, dec, 2, NULL), FY_EINVAL);
    /* Length macros agree with the encoder for every tail. */
    for (size_t n = 0; n < 40; n++) {
        uint8_t in[40] = {0};
        char out[64];
        assert_int_equal(fy_b64url_encode(in, n, out, sizeof out), 0);
        assert_int_equal(strlen(out), FY_B64URL_ENCODED_LEN(n));
        assert_int_equal(FY_B64URL_DECODED_MAX(FY_B64URL_ENCODED_LEN(n)), n);
    }
}

static void test_b64url_roundtrip_random(void **state)
{
    (void)state;
    for (size_t n = 0; n < 300; n++) {
        uint8_t in[300], back[300];
        char enc[FY_B64URL_ENCODED_LEN(300) + 1];
        size_t got = 0;
        assert_int_equal(fy_random_bytes(in, n), 0);
        assert_int_equal(fy_b64url_encode(in, n, enc, sizeof enc), 0);
        assert_int_equal(fy_b64url_decode(enc, strlen(enc), back, sizeof back, &got), 0);
        assert_int_equal(got, n);
        assert_memory_equal(back, in, n);
    }
}

/* ---- SHA-256 ------------------------------------------------------------ */

static void test_sha256_vectors(void **state)
{
    (void)state;
    /* FIPS 180-2, appendix B. */
    static const struct {
        const char *msg;
        const char *digest;
    } cases[] = {
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t d[FY_SHA256_LEN];
        assert_int_equal(fy_sha256(cases[i].msg, strlen(cases[i].msg), d), 0);
        assert_digest(d, cases[i].digest);
    }
    /* One million 'a': one-shot, and streamed in uneven pieces. */
    size_t n = 1000000;
    char *a = malloc(n);
    assert_non_null(a);
    memset(a, 'a', n);
    uint8_t d[FY_SHA256_LEN];
    assert_int_equal(fy_sha256(a, n, d), 0);
    assert_digest(d, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    fy_sha256_ctx c;
    assert_int_equal(fy_sha256_init(&c), 0);
    for (size_t off = 0; off < n;) {
        size_t k = n - off < 777 ? n - off : 777;
        assert_int_equal(fy_sha256_update(&c, a + off, k), 0);
        off += k;
    }
    memset(d, 0, sizeof d);
    assert_int_equal(fy_sha256_final(&c, d), 0);
    assert_digest(d, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    fy_sha256_free(&c);
    free(a);
    assert_int_equal(fy_sha256(NULL, 1, d), FY_EINVAL);
    assert_int_equal(fy_sha256(NULL, 0, d), 0);
    assert_digest(d, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

/* Splits BUF at random points and checks the streamed digest and MAC equal
 * the one-shot ones. */
static void test_streaming_random_splits(void **state)
{
    (void)state;
    enum { N = 5000 };
    uint8_t *buf = malloc(N);
    assert_non_null(buf);
    assert_int_equal(fy_random_bytes(buf, N), 0);
    for (int iter = 0; iter < 50; iter++) {
        uint32_t r[2];
        assert_int_equal(fy_random_bytes(r, sizeof r), 0);
        size_t len = r[0] % (N + 1);
        uint8_t key[200];
        size_t keylen = r[1] % sizeof key; /* shorter and longer than the block */
        assert_int_equal(fy_random_bytes(key, keylen), 0);

        uint8_t d1[FY_SHA256_LEN], d2[FY_SHA256_LEN], m1[FY_SHA256_LEN], m2[FY_SHA256_LEN];
        assert_int_equal(fy_sha256(buf, len, d1), 0);
        assert_int_equal(fy_hmac_sha256(key, keylen, buf, len, m1), 0);

        fy_sha256_ctx sc;
        fy_hmac_sha256_ctx hc;
        assert_int_equal(fy_sha256_init(&sc), 0);
        assert_int_equal(fy_hmac_sha256_init(&hc, key, keylen), 0);
        size_t off = 0;
        while (off < len) {
            uint16_t step;
            assert_int_equal(fy_random_bytes(&step, sizeof step), 0);
            size_t k = step % 300; /* includes empty updates */
            if (k > len - off) {
                k = len - off;
            }
            assert_int_equal(fy_sha256_update(&sc, buf + off, k), 0);
            assert_int_equal(fy_hmac_sha256_update(&hc, buf + off, k), 0);
            off += k;
        }
        assert_int_equal(fy_sha256_final(&sc, d2), 0);
        assert_int_equal(fy_hmac_sha256_final(&hc, m2), 0);
        fy_hmac_sha256_free(&hc);
        assert_memory_equal(d1, d2, FY_SHA256_LEN);
        assert_memory_equal(m1, m2, FY_SHA256_LEN);
    }
    free(buf);
}

/* ---- HMAC-SHA256 -------------------------------------------------------- */

static void test_hmac_rfc4231(void **state)
{
    (void)state;
    /* RFC 4231 test cases 1-4, 6 and 7 (5 is a truncated MAC). Keys and data
     * as hex, except where the RFC gives text. */
    static const struct {
        const char *key_hex;
        const char *data; /* text */
        const char *data_hex;
        const char *mac;
    } cases[] = {
        {"0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "Hi There", NULL,
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
        {"4a656665", "what do ya want for nothing?", NULL,
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", NULL,
         "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
         "dddddddddddd",
         "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
        {"0102030405060708090a0b0c0d0e0f10111213141516171819", NULL,
         "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
         "cdcdcdcdcdcd",
         "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
        {NULL, "Test Using Larger Than Block-Size Key - Hash Key First", NULL,
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
        {NULL,
         "This is a test using a larger than block-size key and a larger than block-size data. "
         "The key needs to be hashed before being used by the HMAC algorithm.",
         NULL, "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t key[131], data[64], mac[FY_SHA256_LEN];
        size_t keylen, datalen;
        if (cases[i].key_hex) {
            keylen = unhex(cases[i].key_hex, key, sizeof key);
        } else {
            keylen = 131; /* cases 6 and 7: 131 bytes of 0xaa */
            memset(key, 0xaa, keylen);
        }
        const void *msg;
        if (cases[i].data) {
            msg = cases[i].data;
            datalen = strlen(cases[i].data);
        } else {
            datalen = unhex(cases[i].data_hex, data, sizeof data);
            msg = data;
        }
        assert_int_equal(fy_hmac_sha256(key, keylen, msg, datalen, mac), 0);
        assert_digest(mac, cases[i].mac);
        /* And byte by byte through the streaming interface. */
        fy_hmac_sha256_ctx c;
        assert_int_equal(fy_hmac_sha256_init(&c, key, keylen), 0);
        for (size_t k = 0; k < datalen; k++) {
            assert_int_equal(fy_hmac_sha256_update(&c, (const uint8_t *)msg + k, 1), 0);
        }
        memset(mac, 0, sizeof mac);
        assert_int_equal(fy_hmac_sha256_final(&c, mac), 0);
        fy_hmac_sha256_free(&c);
        assert_digest(mac, cases[i].mac);
    }
    /* Bad arguments; free is safe after a failed init. */
    fy_hmac_sha256_ctx c;
    uint8_t mac[FY_SHA256_LEN];
    assert_int_equal(fy_hmac_sha256_init(&c, NULL, 3), FY_EINVAL);
    fy_hmac_sha256_free(&c);
    assert_int_equal(fy_hmac_sha256(NULL, 3, "x", 1, mac), FY_EINVAL);
    assert_int_equal(fy_hmac_sha256("k", 1, NULL, 1, mac), FY_EINVAL);
    assert_int_equal(fy_hmac_sha256(NULL, 0, NULL, 0, mac), 0);
}

/* ---- comparison ----------------------------------------------------------- */

static void test_ct_equal(void **state)
{
    (void)state;
    uint8_t a[64], b[64];
    assert_int_equal(fy_random_bytes(a, sizeof a), 0);
    memcpy(b, a, sizeof a);
    assert_int_equal(fy_ct_equal(a, b, sizeof a), 1);
    assert_int_equal(fy_ct_equal(a, b, 0), 1);
    static const size_t where[] = {0, 1, 31, 62, 63};
    for (size_t i = 0; i < sizeof where / sizeof where[0]; i++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(b, a, sizeof a);
            b[where[i]] ^= (uint8_t)(1u << bit);
            assert_int_equal(fy_ct_equal(a, b, sizeof a), 0);
            /* A prefix that stops before the difference is still equal. */
            assert_int_equal(fy_ct_equal(a, b, where[i]), 1);
        }
    }
    assert_int_equal(fy_ct_equal(NULL, b, 4), 0);
    uint8_t z[8] = {1, 2, 3};
    fy_secure_zero(z, sizeof z);
    static const uint8_t zero[8];
    assert_memory_equal(z, zero, sizeof z);
    fy_secure_zero(NULL, 8);
}

/* ---- random numbers ------------------------------------------------------- */

static void test_rng_basic(void **state)
{
    (void)state;
    fy_rng *r1 = fy_rng_new("ferry-test");
    fy_rng *r2 = fy_rng_new(NULL);
    assert_non_null(r1);
    assert_non_null(r2);
    uint8_t a[32], b[32], c[32], d[32];
    assert_int_equal(fy_rng_bytes(r1, a, sizeof a), 0);
    assert_int_equal(fy_rng_bytes(r1, b, sizeof b), 0);
    assert_int_equal(fy_rng_bytes(r2, c, sizeof c), 0);
    assert_int_equal(fy_random_bytes(d, sizeof d), 0);
    assert_memory_not_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
    assert_memory_not_equal(b, c, sizeof a);
    assert_memory_not_equal(c, d, sizeof a);
    /* The mbedTLS callback, with an object and with the global generator. */
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    assert_int_equal(fy_rng_mbedtls(r1, a, sizeof a), 0);
    assert_int_equal(fy_rng_mbedtls(NULL, b, sizeof b), 0);
    static const uint8_t zero[32];
    assert_memory_not_equal(a, zero, sizeof a);
    assert_memory_not_equal(b, zero, sizeof b);
    assert_memory_not_equal(a, b, sizeof a);
    assert_int_equal(fy_rng_bytes(NULL, a, 1), FY_EINVAL);
    assert_int_equal(fy_rng_bytes(r1, NULL, 1), FY_EINVAL);
    assert_int_equal(fy_rng_bytes(r1, NULL, 0), 0);
    assert_int_equal(fy_random_bytes(NULL, 1), FY_EINVAL);
    fy_rng_free(r1);
    fy_rng_free(r2);
    fy_rng_free(NULL);
}

/* Big requests span many DRBG calls (1,024 bytes each): every chunk must be
 * filled, and the bytes must look uniform. */
static void check_big_buffer(const uint8_t *buf, size_t n)
{
    size_t counts[256] = {0};
    for (size_t i = 0; i < n; i++) {
        counts[buf[i]]++;
    }
    /* Chi-square with 255 degrees of freedom: mean 255, sd ~22.6; 400 is
     * more than six standard deviations out. */
    double expect = (double)n / 256, chi = 0;
    for (int v = 0; v < 256; v++) {
        double dlt = (double)counts[v] - expect;
        chi += dlt * dlt / expect;
    }
    assert_true(chi < 400.0);
    /* No 1 KiB block is left zeroed or repeated from the previous one. */
    static const uint8_t zero[1024];
    for (size_t off = 0; off + 2048 <= n; off += 1024) {
        assert_memory_not_equal(buf + off, zero, 1024);
        assert_memory_not_equal(buf + off, buf + off + 1024, 1024);
    }
}

static void test_rng_big_buffers(void **state)
{
    (void)state;
    size_t n = 1 << 20;
    uint8_t *buf = calloc(1, n + 5);
    assert_non_null(buf);
    fy_rng *r = fy_rng_new("big");
    assert_non_null(r);
    assert_int_equal(fy_rng_bytes(r, buf, n + 5), 0); /* not a multiple of 1024 */
    check_big_buffer(buf, n);
    memset(buf, 0, n + 5);
    assert_int_equal(fy_random_bytes(buf, n + 5), 0);
    check_big_buffer(buf, n);
    fy_rng_free(r);
    free(buf);
}

/* After fork the child must not replay the parent's stream. */
static void test_rng_fork(void **state)
{
    (void)state;
    fy_rng *r = fy_rng_new("fork");
    assert_non_null(r);
    uint8_t warm[16];
    assert_int_equal(fy_rng_bytes(r, warm, sizeof warm), 0);
    assert_int_equal(fy_random_bytes(warm, sizeof warm), 0);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        uint8_t out[64];
        int ok = fy_rng_bytes(r, out, 32) == 0 && fy_random_bytes(out + 32, 32) == 0;
        ssize_t w = ok ? write(fds[1], out, sizeof out) : -1;
        _exit(w == (ssize_t)sizeof out ? 0 : 1);
    }
    close(fds[1]);
    uint8_t mine[64], child[64];
    assert_int_equal(fy_rng_bytes(r, mine, 32), 0);
    assert_int_equal(fy_random_bytes(mine + 32, 32), 0);
    size_t got = 0;
    while (got < sizeof child) {
        ssize_t k = read(fds[0], child + got, sizeof child - got);
        assert_true(k > 0);
        got += (size_t)k;
    }
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_memory_not_equal(mine, child, 32);
    assert_memory_not_equal(mine + 32, child + 32, 32);
    fy_rng_free(r);
}

enum { THREADS = 4, CALLS = 2000 };

typedef struct {
    uint8_t out[CALLS][16];
    int failures;
} thread_result;

static void *rng_thread(void *arg)
{
    thread_result *t = arg;
    for (int i = 0; i < CALLS; i++) {
        uint8_t big[300];
        if (fy_random_bytes(t->out[i], sizeof t->out[i]) != 0 ||
            fy_random_bytes(big, sizeof big) != 0) {
            t->failures++;
        }
    }
    return NULL;
}

static int cmp16(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}

static void test_random_bytes_threads(void **state)
{
    (void)state;
    thread_result *res = calloc(THREADS, sizeof *res);
    assert_non_null(res);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, rng_thread, &res[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
    }
    /* No call failed and no 16-byte output repeated anywhere: a race on the
     * shared DRBG state would hand two callers the same block. */
    uint8_t(*all)[16] = malloc(sizeof(uint8_t[16]) * THREADS * CALLS);
    assert_non_null(all);
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(res[i].failures, 0);
        memcpy(all[i * CALLS], res[i].out, sizeof res[i].out);
    }
    qsort(all, (size_t)THREADS * CALLS, 16, cmp16);
    for (size_t i = 1; i < (size_t)THREADS * CALLS; i++) {
        assert_true(memcmp(all[i - 1], all[i], 16) != 0);
    }
    free(all);
    free(res);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex_vectors),
        cmocka_unit_test(test_hex_rejects),
        cmocka_unit_test(test_hex_roundtrip_random),
        cmocka_unit_test(test_b64url_vectors),
        cmocka_unit_test(test_b64url_rejects),
        cmocka_unit_test(test_b64url_roundtrip_random),
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_streaming_random_splits),
        cmocka_unit_test(test_hmac_rfc4231),
        cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_rng_basic),
        cmocka_unit_test(test_rng_big_buffers),
        cmocka_unit_test(test_rng_fork),
        cmocka_unit_test(test_random_bytes_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
