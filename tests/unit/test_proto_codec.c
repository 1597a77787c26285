/* Unit tests for proto/frame: golden byte vectors for every frame type,
 * split-independent decoding, and every malformed-frame rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "proto/frame.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Hex (spaces ignored) to bytes; returns the length. */
static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;
    int hi = -1;
    for (const char *p = hex; *p; p++) {
        int v;
        if (*p >= '0' && *p <= '9') {
            v = *p - '0';
        } else if (*p >= 'a' && *p <= 'f') {
            v = *p - 'a' + 10;
        } else {
            continue;
        }
        if (hi < 0) {
            hi = v;
        } else {
            assert_true(n < cap);
            out[n++] = (uint8_t)(hi << 4 | v);
            hi = -1;
        }
    }
    assert_int_equal(hi, -1);
    return n;
}

static void print_hex(const char *label, const void *p, size_t n)
{
    fprintf(stderr, "%s:", label);
    for (size_t i = 0; i < n; i++) {
        fprintf(stderr, "%s%02x", i % 4 ? "" : " ", ((const uint8_t *)p)[i]);
    }
    fprintf(stderr, "\n");
}

static int slice_eq(fy_slice a, fy_slice b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.base, b.base, a.len) == 0);
}

static int fields_eq(const fyp_fields *a, const fyp_fields *b)
{
    if (a->n != b->n) {
        return 0;
    }
    for (size_t i = 0; i < a->n; i++) {
        if (!slice_eq(a->v[i].name, b->v[i].name) || !slice_eq(a->v[i].value, b->v[i].value)) {
            return 0;
        }
    }
    return 1;
}

static int strs_eq(const fy_slice *a, size_t na, const fy_slice *b, size_t nb)
{
    if (na != nb) {
        return 0;
    }
    for (size_t i = 0; i < na; i++) {
        if (!slice_eq(a[i], b[i])) {
            return 0;
        }
    }
    return 1;
}

/* Deep comparison of two frames' meaningful fields. */
static int frames_eq(const fyp_frame *a, const fyp_frame *b)
{
    if (a->type != b->type || a->flags != b->flags || a->stream_id != b->stream_id) {
        return 0;
    }
    switch (a->type) {
    case FYP_FRAME_DATA:
        return slice_eq(a->u.data, b->u.data);
    case FYP_FRAME_REQUEST:
        return slice_eq(a->u.request.method, b->u.request.method) &&
               slice_eq(a->u.request.target, b->u.request.target) &&
               fields_eq(&a->u.request.meta, &b->u.request.meta) &&
               fields_eq(&a->u.request.headers, &b->u.request.headers);
    case FYP_FRAME_RESPONSE:
        return a->u.response.status == b->u.response.status &&
               fields_eq(&a->u.response.headers, &b->u.response.headers);
    case FYP_FRAME_TRAILERS:
        return a->u.trailers.has_usage == b->u.trailers.has_usage &&
               a->u.trailers.prompt_tokens == b->u.trailers.prompt_tokens &&
               a->u.trailers.completion_tokens == b->u.trailers.completion_tokens &&
               fields_eq(&a->u.trailers.fields, &b->u.trailers.fields);
    case FYP_FRAME_RST_STREAM:
        return a->u.error_code == b->u.error_code;
    case FYP_FRAME_WINDOW_UPDATE:
        return a->u.increment == b->u.increment;
    case FYP_FRAME_PING:
    case FYP_FRAME_PONG:
        return memcmp(a->u.opaque, b->u.opaque, 8) == 0;
    case FYP_FRAME_GOAWAY:
        return a->u.goaway.last_stream_id == b->u.goaway.last_stream_id &&
               a->u.goaway.error_code == b->u.goaway.error_code &&
               slice_eq(a->u.goaway.debug, b->u.goaway.debug);
    case FYP_FRAME_HELLO:
    case FYP_FRAME_HELLO_ACK:
        return a->u.hello.min_version == b->u.hello.min_version &&
               a->u.hello.max_version == b->u.hello.max_version &&
               a->u.hello.version == b->u.hello.version &&
               memcmp(&a->u.hello.settings, &b->u.hello.settings, sizeof(fyp_settings)) == 0 &&
               slice_eq(a->u.hello.name, b->u.hello.name) &&
               strs_eq(a->u.hello.models, a->u.hello.n_models, b->u.hello.models,
                       b->u.hello.n_models) &&
               strs_eq(a->u.hello.caps, a->u.hello.n_caps, b->u.hello.caps, b->u.hello.n_caps);
    }
    return 1;
}

typedef struct {
    const char *name;
    fyp_frame f;
    const char *hex;
} golden_t;

/* The vectors were written by hand from proto/PROTOCOL.md, not produced by the
 * encoder: header "length(3) type flags stream(4)", then the payload. */
static size_t golden_table(golden_t *g)
{
    static const fyp_field meta[] = {FYP_FIELD("key-id", "k1")};
    static const fyp_field accept[] = {FYP_FIELD("accept", "*/*")};
    static const fyp_field ctype[] = {FYP_FIELD("content-type", "text/event-stream")};
    static const fyp_field finish[] = {FYP_FIELD("x-finish", "stop")};
    static const fy_slice models[] = {{(char *)"m", 1}};
    static const fy_slice caps[] = {{(char *)"sse", 3}};
    size_t n = 0;
    fyp_frame f;

    memset(&f, 0, sizeof f);
    f.type = FYP_FRAME_DATA, f.flags = FYP_FLAG_END_STREAM, f.stream_id = 1;
    f.u.data = FY_SLICE_STR("hello");
    g[n++] = (golden_t){"DATA END_STREAM", f, "000005 00 01 00000001  68656c6c6f"};

    memset(&f, 0, sizeof f);
    f.type = FYP_FRAME_DATA, f.flags = FYP_FLAG_END_STREAM, f.stream_id = 3;
    g[n++] = (golden_t){"DATA empty END_STREAM", f, "000000 00 01 00000003"};

    memset(&f, 0, sizeof f);
    f.type = FYP_FRAME_DATA, f.stream_id = 0x7fffffff;
    f.u.data = FY_SLICE_STR("m");
    g[n++] = (golden_t){"DATA max stream id", f, "000001 00 00 7fffffff  6d"};

    memset(&f, 0, sizeof f);
    f.type = FYP_FRAME_REQUEST, f.flags = FYP_FLAG_END_STREAM, f.stream_id = 1;
    f.u.request.method = FY_SLICE_STR("GET");
    f.u.request.target = FY_SLICE_STR("/v1/models");
    f.u.request.meta = (fyp_fields){meta, 1};
    f.u.request.headers = (fyp_fields){accept, 1};
    g[n++] = (golden_t){"REQUEST", f,
                        "00002d 01 01 00000001  03 474554  000a 2f76312f6d6f64656c73"
                        "  0001 0006 6b65792d6964 0002 6b31"
                        "  0001 0006 616363657074 0003 2a2f2a"};

    memset(&f, 0, sizeof f);
    f.type = FYP_FRAME_RESPONSE, f.stream_id = 1;
    f.u.response.status = 200;
    f.u.response.headers = (fyp_fields){ctype, 1};
    g[n++] = (golden_t){"RESPONSE", f,
                        "000025 02 00 00000001  00c8  0001 000c 636f6e74656e742d74797065"
                        " 0011 746578742f6576656e742d73747265616d"};

    memset(&f, 0, sizeof f);
    f.type = FYP_FRAME_RESPONSE, f.flags = FYP_FLAG_END_STREAM, f.stream_id = 9;
    f.u.response.status = 503;
    g[n++] = (golden_t){"RESPONSE no headers END_STREAM", f, "000004 02 01 00000009  01f7 0000"};

    memset(&f, 0, sizeof f);
    f.type = FYP_FRAME_TRAILERS, f.flags = FYP_FLAG_END_STREAM | FYP_FLAG_USAGE, f.stream_id = 5;
    f.u.trailers.has_usage = 1;
    f.u.trailers.prompt_tokens = 12;
    f.u.trailers.completion_tokens = 34;
    f.u.trailers.fields = (fyp_fields){finish, 1};
    g[n++] = (golden_t){"TRAILERS with usage", f,
                        "00001a 03 03 00000005  0000000c 00000022"
                        "  0001 0008 782d66696e697368 0004 73746f70"};

    memset(&f, 0, sizeof f);
    f.type = FYP_FRAME_TRAILERS, f.flags = FYP_FLAG_END_STREAM, f.stream_id = 7;
    g[n++] = (golden_t){"TRAILERS without usage", f, "000002 03 01 00000007  0000"};

    memset(&f, 0, sizeof f);
    f.type = FYP_FRAME_RST_STREAM, f.stream_id = 9;
    f.u.error_code = FYP_ERR_CANCEL;
    g[n++] = (golden_t){"RST_STREAM CANCEL", f, "000004 04 00 00000009  00000007"};

    memset(&f, 0, sizeof f);
    f.type = FYP_FRAME_RST_STREAM, f.flags = FYP_FLAG_ACK, f.stream_id = 9;
    f.u.error_code = FYP_ERR_REFUSED_STREAM;
    g[n++] = (golden_t){"RST_STREAM ACK", f, "000004 04 01 00000009  00000006"};

    memset(&f, 0, sizeof f);
    f.type = FYP_FRAME_WINDOW_UPDATE;
    f.u.increment = 65536;
    g[n++] = (golden_t){"WINDOW_UPDATE connection", f, "000004 05 00 00000000  00010000"};

    memset(&f, 0, sizeof f);
    f.type = FYP_FRAME_WINDOW_UPDATE, f.stream_id = 3;
    f.u.increment = 0x7fffffff;
    g[n++] = (golden_t){"WINDOW_UPDATE stream max", f, "000004 05 00 00000003  7fffffff"};

    memset(&f, 0, sizeof f);
    f.type = FYP_FRAME_PING;
    memcpy(f.u.opaque, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
    g[n++] = (golden_t){"PING", f, "000008 06 00 00000000  0102030405060708"};

    f.type = FYP_FRAME_PONG;
    g[n++] = (golden_t){"PONG", f, "000008 07 00 00000000  0102030405060708"};

    memset(&f, 0, sizeof f);
    f.type = FYP_FRAME_GOAWAY;
    f.u.goaway.last_stream_id = 7;
    f.u.goaway.error_code = FYP_ERR_PROTOCOL;
    f.u.goaway.debug = FY_SLICE_STR("bad");
    g[n++] = (golden_t){"GOAWAY with debug", f, "00000b 08 00 00000000  00000007 00000001 626164"};

    memset(&f, 0, sizeof f);
    f.type = FYP_FRAME_GOAWAY;
    g[n++] = (golden_t){"GOAWAY drain", f, "000008 08 00 00000000  00000000 00000000"};

    memset(&f, 0, sizeof f);
    f.type = FYP_FRAME_HELLO;
    f.u.hello.min_version = 1;
    f.u.hello.max_version = 1;
    fyp_settings_default(&f.u.hello.settings);
    f.u.hello.name = FY_SLICE_STR("r1");
    f.u.hello.models = models;
    f.u.hello.n_models = 1;
    f.u.hello.caps = caps;
    f.u.hello.n_caps = 1;
    g[n++] = (golden_t){"HELLO", f,
                        "00003b 09 00 00000000  46595450 0001 0001"
                        "  0006 0001 00010000 0002 00010000 0003 00040000"
                        "       0004 01000000 0005 00001000 0006 00001388"
                        "  02 7231  0001 01 6d  0001 03 737365"};

    memset(&f, 0, sizeof f);
    f.type = FYP_FRAME_HELLO_ACK;
    f.u.hello.version = 1;
    fyp_settings_default(&f.u.hello.settings);
    f.u.hello.settings.heartbeat_ms = 10000;
    f.u.hello.name = FY_SLICE_STR("gw");
    g[n++] = (golden_t){"HELLO_ACK", f,
                        "000031 0a 00 00000000  46595450 0001"
                        "  0006 0001 00010000 0002 00010000 0003 00040000"
                        "       0004 01000000 0005 00001000 0006 00002710"
                        "  02 6777  0000"};
    return n;
}

#define MAX_GOLDEN 32

static void test_golden_vectors(void **state)
{
    (void)state;
    golden_t g[MAX_GOLDEN];
    size_t n = golden_table(g);
    int seen[FYP_FRAME_TYPE_COUNT] = {0};
    for (size_t i = 0; i < n; i++) {
        uint8_t want[512];
        size_t wlen = unhex(g[i].hex, want, sizeof want);

        /* Encode: exactly the bytes of the vector. */
        fy_buf b;
        fy_buf_init(&b, 4096);
        assert_int_equal(fyp_frame_encode(&b, &g[i].f), 0);
        assert_int_equal(fyp_frame_payload_size(&g[i].f) + FYP_FRAME_HEADER_SIZE, b.len);
        if (b.len != wlen || memcmp(b.data, want, wlen) != 0) {
            fprintf(stderr, "golden %s\n", g[i].name);
            print_hex("  want", want, wlen);
            print_hex("  got ", b.data, b.len);
            fail();
        }
        fy_buf_free(&b);

        /* Decode: the same fields back, consuming exactly the vector. */
        fyp_decoder d;
        fyp_decoder_init(&d, FYP_DEFAULT_MAX_FRAME_SIZE, FYP_DEFAULT_MAX_HEADER_BLOCK);
        const uint8_t *p = want;
        size_t left = wlen;
        fyp_frame f;
        assert_int_equal(fyp_decoder_next(&d, &p, &left, &f), 1);
        assert_int_equal(left, 0);
        assert_int_equal(f.length, wlen - FYP_FRAME_HEADER_SIZE);
        if (!frames_eq(&f, &g[i].f)) {
            fprintf(stderr, "golden %s decoded to different fields\n", g[i].name);
            fail();
        }
        assert_true(fyp_decoder_idle(&d));
        fyp_decoder_close(&d);
        seen[g[i].f.type] = 1;
    }
    for (int t = 0; t < FYP_FRAME_TYPE_COUNT; t++) {
        assert_true(seen[t]); /* every frame type has a vector */
    }
}

/* Decodes STREAM fed in pieces chosen by NEXT_SPLIT and re-encodes every frame,
 * so runs with different splits can be compared byte for byte. */
typedef size_t (*split_fn)(size_t left, uint32_t *rng);

static size_t split_one(size_t left, uint32_t *rng)
{
    (void)left, (void)rng;
    return 1;
}

static size_t split_all(size_t left, uint32_t *rng)
{
    (void)rng;
    return left;
}

static uint32_t xorshift(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static size_t split_random(size_t left, uint32_t *rng)
{
    size_t k = 1 + xorshift(rng) % 40;
    return k < left ? k : left;
}

static void decode_with(const uint8_t *stream, size_t len, split_fn split, uint32_t seed,
                        fy_buf *canon, int *frames)
{
    fyp_decoder d;
    fyp_decoder_init(&d, FYP_DEFAULT_MAX_FRAME_SIZE, FYP_DEFAULT_MAX_HEADER_BLOCK);
    size_t off = 0;
    *frames = 0;
    while (off < len) {
        size_t k = split(len - off, &seed);
        const uint8_t *p = stream + off;
        size_t n = k;
        for (;;) {
            fyp_frame f;
            int rc = fyp_decoder_next(&d, &p, &n, &f);
            assert_true(rc >= 0);
            if (rc == 0) {
                break;
            }
            (*frames)++;
            if (f.type >= FYP_FRAME_TYPE_COUNT) {
                char tag[32];
                snprintf(tag, sizeof tag, "[unknown %02x len %u]", f.type, f.length);
                assert_int_equal(fy_buf_append_str(canon, tag), 0);
                continue;
            }
            assert_int_equal(fyp_frame_encode(canon, &f), 0);
        }
        assert_int_equal(n, 0);
        off += k;
    }
    assert_true(fyp_decoder_idle(&d));
    /* The payload buffer never grows past this side's max frame size. */
    assert_true(d.buf_cap <= d.max_frame_size);
    fyp_decoder_close(&d);
}

static void test_split_independence(void **state)
{
    (void)state;
    golden_t g[MAX_GOLDEN];
    size_t n = golden_table(g);
    fy_buf stream;
    fy_buf_init(&stream, 1 << 20);
    for (size_t i = 0; i < n; i++) {
        uint8_t bytes[512];
        size_t len = unhex(g[i].hex, bytes, sizeof bytes);
        assert_int_equal(fy_buf_append(&stream, bytes, len), 0);
        if (i == 3) {
            /* An unknown frame type (0x42) with a payload: skipped. */
            uint8_t unk[] = {0, 0, 3, 0x42, 0xff, 0, 0, 0, 2, 1, 2, 3};
            assert_int_equal(fy_buf_append(&stream, unk, sizeof unk), 0);
        }
    }
    /* A large DATA frame that a random split surely cuts. */
    static uint8_t big[40000];
    for (size_t i = 0; i < sizeof big; i++) {
        big[i] = (uint8_t)(i * 7);
    }
    fyp_frame f = {.type = FYP_FRAME_DATA, .stream_id = 11};
    f.u.data = FY_SLICE(big, sizeof big);
    assert_int_equal(fyp_frame_encode(&stream, &f), 0);

    fy_buf ref;
    fy_buf_init(&ref, 1 << 20);
    int ref_frames;
    decode_with((uint8_t *)stream.data, stream.len, split_all, 1, &ref, &ref_frames);
    assert_int_equal(ref_frames, (int)n + 2);

    struct {
        split_fn fn;
        uint32_t seed;
    } runs[] = {{split_one, 1},
                {split_random, 1},
                {split_random, 2},
                {split_random, 0xdeadbeef},
                {split_random, 12345}};
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        fy_buf got;
        fy_buf_init(&got, 1 << 20);
        int frames;
        decode_with((uint8_t *)stream.data, stream.len, runs[r].fn, runs[r].seed, &got, &frames);
        assert_int_equal(frames, ref_frames);
        assert_int_equal(got.len, ref.len);
        assert_memory_equal(got.data, ref.data, ref.len);
        fy_buf_free(&got);
    }
    fy_buf_free(&ref);
    fy_buf_free(&stream);
}

static void test_zero_copy_and_many_frames(void **state)
{
    (void)state;
    /* Three whole frames in one chunk: all decoded, payloads not copied. */
    uint8_t in[64];
    size_t len = unhex("000002 00 00 00000001 6869  000008 06 00 00000000 0000000000000001"
                       "  000001 00 01 00000001 21",
                       in, sizeof in);
    fyp_decoder d;
    fyp_decoder_init(&d, FYP_MIN_FRAME_SIZE, FYP_MIN_HEADER_BLOCK);
    const uint8_t *p = in;
    size_t n = len;
    fyp_frame f;
    assert_int_equal(fyp_decoder_next(&d, &p, &n, &f), 1);
    assert_int_equal(f.type, FYP_FRAME_DATA);
    assert_ptr_equal(f.u.data.base, in + 9);
    assert_int_equal(fyp_decoder_next(&d, &p, &n, &f), 1);
    assert_int_equal(f.type, FYP_FRAME_PING);
    assert_int_equal(fyp_decoder_next(&d, &p, &n, &f), 1);
    assert_int_equal(f.flags, FYP_FLAG_END_STREAM);
    assert_int_equal(fyp_decoder_next(&d, &p, &n, &f), 0);
    assert_null(d.buf); /* nothing was ever buffered */
    fyp_decoder_close(&d);
}

typedef struct {
    const char *name;
    const char *hex;
    uint32_t code;
} bad_t;

/* Decoder limits for this table: max frame 65536, max header block 1024. */
static const bad_t bad_frames[] = {
    {"oversize length", "010001 00 00 00000001", FYP_ERR_FRAME_SIZE},
    {"unknown type oversize", "010001 7f 00 00000000", FYP_ERR_FRAME_SIZE},
    {"reserved stream bit", "000001 00 00 80000001 00", FYP_ERR_PROTOCOL},
    {"DATA unknown flag", "000001 00 02 00000001 00", FYP_ERR_PROTOCOL},
    {"REQUEST unknown flag", "000001 01 80 00000001 00", FYP_ERR_PROTOCOL},
    {"PING with flags", "000008 06 01 00000000 0000000000000000", FYP_ERR_PROTOCOL},
    {"RST_STREAM END_STREAM-like flag", "000004 04 02 00000001 00000000", FYP_ERR_PROTOCOL},
    {"DATA on stream 0", "000001 00 00 00000000 00", FYP_ERR_PROTOCOL},
    {"DATA on even stream", "000001 00 00 00000002 00", FYP_ERR_PROTOCOL},
    {"REQUEST on even stream", "000001 01 00 00000004 00", FYP_ERR_PROTOCOL},
    {"RST_STREAM on stream 0", "000004 04 00 00000000 00000000", FYP_ERR_PROTOCOL},
    {"PING on stream 1", "000008 06 00 00000001 0000000000000000", FYP_ERR_PROTOCOL},
    {"GOAWAY on stream 1", "000008 08 00 00000001 0000000000000000", FYP_ERR_PROTOCOL},
    {"HELLO on stream 1", "000000 09 00 00000001", FYP_ERR_PROTOCOL},
    {"WINDOW_UPDATE on even stream", "000004 05 00 00000002 00000001", FYP_ERR_PROTOCOL},
    {"empty DATA without END_STREAM", "000000 00 00 00000001", FYP_ERR_PROTOCOL},
    {"RST_STREAM short", "000003 04 00 00000001 000000", FYP_ERR_FRAME_SIZE},
    {"WINDOW_UPDATE long", "000005 05 00 00000000 0000000100", FYP_ERR_FRAME_SIZE},
    {"WINDOW_UPDATE increment 0", "000004 05 00 00000000 00000000", FYP_ERR_PROTOCOL},
    {"WINDOW_UPDATE stream increment 0", "000004 05 00 00000001 00000000", FYP_ERR_PROTOCOL},
    {"WINDOW_UPDATE reserved bit", "000004 05 00 00000000 80000001", FYP_ERR_PROTOCOL},
    {"PING short", "000007 06 00 00000000 00000000000000", FYP_ERR_FRAME_SIZE},
    {"PONG long", "000009 07 00 00000000 000000000000000000", FYP_ERR_FRAME_SIZE},
    {"GOAWAY short", "000007 08 00 00000000 00000000000000", FYP_ERR_FRAME_SIZE},
    {"GOAWAY debug over 1024", "000409 08 00 00000000", FYP_ERR_FRAME_SIZE},
    {"GOAWAY reserved bit", "000008 08 00 00000000 80000000 00000000", FYP_ERR_PROTOCOL},
    {"HELLO over 16384", "004001 09 00 00000000", FYP_ERR_FRAME_SIZE},
    {"REQUEST over header block", "000401 01 00 00000001", FYP_ERR_HEADER_TOO_LARGE},
    {"RESPONSE over header block", "000401 02 00 00000001", FYP_ERR_HEADER_TOO_LARGE},
    {"TRAILERS over header block", "000401 03 01 00000001", FYP_ERR_HEADER_TOO_LARGE},
    {"TRAILERS without END_STREAM", "000002 03 00 00000001 0000", FYP_ERR_PROTOCOL},
    {"TRAILERS usage truncated", "000006 03 03 00000001 000000010000", FYP_ERR_PROTOCOL},
    {"RESPONSE status 199", "000004 02 00 00000001 00c7 0000", FYP_ERR_PROTOCOL},
    {"RESPONSE status 600", "000004 02 00 00000001 0258 0000", FYP_ERR_PROTOCOL},
    {"RESPONSE truncated status", "000001 02 00 00000001 00", FYP_ERR_PROTOCOL},
    {"RESPONSE name past end", "000008 02 00 00000001 00c8 0001 0010 6162", FYP_ERR_PROTOCOL},
    {"RESPONSE value past end", "00000b 02 00 00000001 00c8 0001 0001 61 0005 6263",
     FYP_ERR_PROTOCOL},
    {"RESPONSE count past end", "000006 02 00 00000001 00c8 0002 0000", FYP_ERR_PROTOCOL},
    {"RESPONSE stray bytes", "000005 02 00 00000001 00c8 0000 ff", FYP_ERR_PROTOCOL},
    {"RESPONSE 257 headers", "000004 02 00 00000001 00c8 0101", FYP_ERR_HEADER_TOO_LARGE},
    {"header name empty", "00000a 02 00 00000001 00c8 0001 0000 0002 6869", FYP_ERR_PROTOCOL},
    {"header name with colon", "00000a 02 00 00000001 00c8 0001 0001 3a 0001 61", FYP_ERR_PROTOCOL},
    {"header name with space", "00000b 02 00 00000001 00c8 0001 0002 6120 0001 61",
     FYP_ERR_PROTOCOL},
    {"header value with CR LF", "00000b 02 00 00000001 00c8 0001 0001 61 0002 0d0a",
     FYP_ERR_PROTOCOL},
    {"header value with NUL", "00000a 02 00 00000001 00c8 0001 0001 61 0001 00", FYP_ERR_PROTOCOL},
    {"REQUEST empty method", "000008 01 00 00000001 00 0001 2f 0000 0000", FYP_ERR_PROTOCOL},
    {"REQUEST method 33 bytes",
     "000025 01 00 00000001 21 474747474747474747474747474747474747474747474747474747474747474747"
     " 0001 2f",
     FYP_ERR_PROTOCOL},
    {"REQUEST method not a token", "00000a 01 00 00000001 02 4728 0001 2f 0000 0000",
     FYP_ERR_PROTOCOL},
    {"REQUEST empty target", "000008 01 00 00000001 03 474554 0000 0000", FYP_ERR_PROTOCOL},
    {"REQUEST target with space", "00000c 01 00 00000001 03 474554 0002 2f20 0000 0000",
     FYP_ERR_PROTOCOL},
    {"REQUEST target past end", "000009 01 00 00000001 03 474554 0009 2f 0000", FYP_ERR_PROTOCOL},
    {"REQUEST 33 metadata", "000009 01 00 00000001 03 474554 0001 2f 0021",
     FYP_ERR_HEADER_TOO_LARGE},
    {"REQUEST headers missing", "000009 01 00 00000001 03 474554 0001 2f 0000", FYP_ERR_PROTOCOL},
    {"HELLO bad magic", "00000b 09 00 00000000 46595451 0001 0001 0000 00", FYP_ERR_PROTOCOL},
    {"HELLO version 0", "000010 09 00 00000000 46595450 0000 0001 0000 01 61 0000 0000",
     FYP_ERR_PROTOCOL},
    {"HELLO min above max", "000010 09 00 00000000 46595450 0003 0002 0000 01 61 0000 0000",
     FYP_ERR_PROTOCOL},
    {"HELLO truncated", "000006 09 00 00000000 46595450 0001", FYP_ERR_PROTOCOL},
    {"HELLO max frame too small",
     "000016 09 00 00000000 46595450 0001 0001 0001 0001 00000400 01 61 0000 0000",
     FYP_ERR_PROTOCOL},
    {"HELLO zero window",
     "000016 09 00 00000000 46595450 0001 0001 0001 0003 00000000 01 61 0000 0000",
     FYP_ERR_PROTOCOL},
    {"HELLO heartbeat 10 ms",
     "000016 09 00 00000000 46595450 0001 0001 0001 0006 0000000a 01 61 0000 0000",
     FYP_ERR_PROTOCOL},
    {"HELLO header block above frame size",
     "00001c 09 00 00000000 46595450 0001 0001 0002 0001 00004000 0002 00008000 01 61 0000 0000",
     FYP_ERR_PROTOCOL},
    {"HELLO repeated setting",
     "00001c 09 00 00000000 46595450 0001 0001 0002 0006 00001388 0006 00001388 01 61 0000 0000",
     FYP_ERR_PROTOCOL},
    {"HELLO 33 settings", "00000a 09 00 00000000 46595450 0001 0001 0021", FYP_ERR_PROTOCOL},
    {"HELLO empty name", "00000f 09 00 00000000 46595450 0001 0001 0000 00 0000 0000",
     FYP_ERR_PROTOCOL},
    {"HELLO name with space", "000011 09 00 00000000 46595450 0001 0001 0000 02 6120 0000 0000",
     FYP_ERR_PROTOCOL},
    {"HELLO 129 models", "00000e 09 00 00000000 46595450 0001 0001 0000 01 61 0081",
     FYP_ERR_PROTOCOL},
    {"HELLO empty model", "000011 09 00 00000000 46595450 0001 0001 0000 01 61 0001 00 0000",
     FYP_ERR_PROTOCOL},
    {"HELLO 65 capabilities", "000010 09 00 00000000 46595450 0001 0001 0000 01 61 0000 0041",
     FYP_ERR_PROTOCOL},
    {"HELLO_ACK version 0", "00000b 0a 00 00000000 46595450 0000 0000 00 0000", FYP_ERR_PROTOCOL},
};

static void test_malformed_frames(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_frames / sizeof bad_frames[0]; i++) {
        const bad_t *c = &bad_frames[i];
        uint8_t in[256];
        size_t len = unhex(c->hex, in, sizeof in);
        for (int bytewise = 0; bytewise < 2; bytewise++) {
            fyp_decoder d;
            fyp_decoder_init(&d, 65536, 1024);
            int rc = 0;
            /* Feed whole, then byte by byte: the same verdict either way, and
             * reached no later than the end of the offending frame's bytes. */
            size_t off = 0;
            while (off < len && rc >= 0) {
                const uint8_t *p = in + off;
                size_t n = bytewise ? 1 : len - off;
                size_t before = n;
                fyp_frame f;
                rc = fyp_decoder_next(&d, &p, &n, &f);
                off += before - n;
                if (rc == 1 && n == 0 && off == len) {
                    break;
                }
            }
            if (rc != FY_EPROTO || d.err_code != c->code) {
                fprintf(stderr, "case '%s' (bytewise %d): rc %d code %s msg '%s'\n", c->name,
                        bytewise, rc, fyp_errcode_name(d.err_code), d.err_msg);
                fail();
            }
            assert_true(d.err_msg[0] != '\0');
            /* A failed decoder stays failed. */
            const uint8_t *p = in;
            size_t n = len;
            fyp_frame f;
            assert_int_equal(fyp_decoder_next(&d, &p, &n, &f), FY_EPROTO);
            fyp_decoder_close(&d);
        }
    }
}

static void test_truncated_header(void **state)
{
    (void)state;
    /* Five bytes of a header: no frame and no error yet, but not at a frame
     * boundary (the session turns this into PROTOCOL_ERROR at end of stream). */
    uint8_t in[] = {0, 0, 5, 0, 1};
    fyp_decoder d;
    fyp_decoder_init(&d, 65536, 1024);
    const uint8_t *p = in;
    size_t n = sizeof in;
    fyp_frame f;
    assert_int_equal(fyp_decoder_next(&d, &p, &n, &f), 0);
    assert_int_equal(n, 0);
    assert_false(fyp_decoder_idle(&d));
    fyp_decoder_close(&d);
}

static void test_hello_extensions(void **state)
{
    (void)state;
    /* Unknown setting ids are ignored, absent ones default, and bytes after the
     * capability list (a later version's fields) are ignored. */
    uint8_t in[128];
    size_t len = unhex("00001e 09 00 00000000 46595450 0001 0003 0002 0099 12345678 0005 00000010"
                       " 01 61 0000 0000 deadbeef",
                       in, sizeof in);
    fyp_decoder d;
    fyp_decoder_init(&d, 65536, 1024);
    const uint8_t *p = in;
    size_t n = len;
    fyp_frame f;
    assert_int_equal(fyp_decoder_next(&d, &p, &n, &f), 1);
    assert_int_equal(f.u.hello.max_version, 3);
    assert_int_equal(f.u.hello.settings.max_concurrent_streams, 16);
    assert_int_equal(f.u.hello.settings.max_frame_size, FYP_DEFAULT_MAX_FRAME_SIZE);
    assert_int_equal(f.u.hello.settings.heartbeat_ms, FYP_DEFAULT_HEARTBEAT_MS);
    fyp_decoder_close(&d);
}

static void test_encoder_rejects(void **state)
{
    (void)state;
    static const fyp_field bad_name[] = {FYP_FIELD("a b", "x")};
    static const fyp_field bad_value[] = {FYP_FIELD("x-a", "1\r\nx-b: 2")};
    static const fyp_field ok[] = {FYP_FIELD("x-a", "1")};
    static const fy_slice empty_model[] = {{(char *)"", 0}};
    static char big_debug[FYP_MAX_GOAWAY_DEBUG + 1];
    fyp_frame cases[24];
    size_t n = 0;
    memset(cases, 0, sizeof cases);

    cases[n].type = 0x0b; /* unknown */
    n++;
    cases[n].type = FYP_FRAME_DATA, cases[n].stream_id = 1; /* empty without END_STREAM */
    n++;
    cases[n].type = FYP_FRAME_DATA, cases[n].stream_id = 2, cases[n].flags = 1; /* even id */
    n++;
    cases[n].type = FYP_FRAME_DATA, cases[n].stream_id = 0, cases[n].flags = 1; /* stream 0 */
    n++;
    cases[n].type = FYP_FRAME_DATA, cases[n].stream_id = 1, cases[n].flags = 0x04;
    n++;
    cases[n].type = FYP_FRAME_PING, cases[n].stream_id = 1;
    n++;
    cases[n].type = FYP_FRAME_WINDOW_UPDATE; /* increment 0 */
    n++;
    cases[n].type = FYP_FRAME_WINDOW_UPDATE, cases[n].u.increment = 0x80000000u;
    n++;
    cases[n].type = FYP_FRAME_RESPONSE, cases[n].stream_id = 1, cases[n].u.response.status = 101;
    n++;
    cases[n].type = FYP_FRAME_RESPONSE, cases[n].stream_id = 1, cases[n].u.response.status = 200;
    cases[n].u.response.headers = (fyp_fields){bad_name, 1};
    n++;
    cases[n].type = FYP_FRAME_RESPONSE, cases[n].stream_id = 1, cases[n].u.response.status = 200;
    cases[n].u.response.headers = (fyp_fields){bad_value, 1};
    n++;
    cases[n].type = FYP_FRAME_TRAILERS, cases[n].stream_id = 1; /* no END_STREAM */
    cases[n].u.trailers.fields = (fyp_fields){ok, 1};
    n++;
    cases[n].type = FYP_FRAME_TRAILERS, cases[n].stream_id = 1;
    cases[n].flags = FYP_FLAG_END_STREAM | FYP_FLAG_USAGE; /* USAGE flag without usage */
    n++;
    cases[n].type = FYP_FRAME_REQUEST, cases[n].stream_id = 1;
    cases[n].u.request.method = FY_SLICE_STR("GETGETGETGETGETGETGETGETGETGETGET");
    cases[n].u.request.target = FY_SLICE_STR("/");
    n++;
    cases[n].type = FYP_FRAME_REQUEST, cases[n].stream_id = 1;
    cases[n].u.request.method = FY_SLICE_STR("GET");
    cases[n].u.request.target = FY_SLICE_STR("/a b");
    n++;
    cases[n].type = FYP_FRAME_REQUEST, cases[n].stream_id = 1;
    cases[n].u.request.method = FY_SLICE_STR("GET");
    cases[n].u.request.target = FY_SLICE_STR("/");
    cases[n].u.request.meta = (fyp_fields){ok, FYP_MAX_META_FIELDS + 1};
    n++;
    cases[n].type = FYP_FRAME_GOAWAY;
    cases[n].u.goaway.debug = FY_SLICE(big_debug, sizeof big_debug);
    n++;
    cases[n].type = FYP_FRAME_HELLO, cases[n].u.hello.min_version = 1;
    cases[n].u.hello.max_version = 1;
    fyp_settings_default(&cases[n].u.hello.settings); /* empty name */
    n++;
    cases[n].type = FYP_FRAME_HELLO, cases[n].u.hello.min_version = 2;
    cases[n].u.hello.max_version = 1;
    fyp_settings_default(&cases[n].u.hello.settings);
    cases[n].u.hello.name = FY_SLICE_STR("r");
    n++;
    cases[n].type = FYP_FRAME_HELLO, cases[n].u.hello.min_version = 1;
    cases[n].u.hello.max_version = 1;
    fyp_settings_default(&cases[n].u.hello.settings);
    cases[n].u.hello.name = FY_SLICE_STR("r");
    cases[n].u.hello.models = empty_model;
    cases[n].u.hello.n_models = 1;
    n++;
    cases[n].type = FYP_FRAME_HELLO_ACK, cases[n].u.hello.version = 1;
    fyp_settings_default(&cases[n].u.hello.settings);
    cases[n].u.hello.settings.initial_stream_window = 0x80000000u;
    n++;
    for (size_t i = 0; i < n; i++) {
        fy_buf b;
        fy_buf_init(&b, 1 << 16);
        assert_int_equal(fy_buf_append(&b, "x", 1), 0);
        int rc = fyp_frame_encode(&b, &cases[i]);
        if (rc != FY_EINVAL) {
            fprintf(stderr, "encoder case %zu: rc %d\n", i, rc);
            fail();
        }
        assert_int_equal(b.len, 1); /* unchanged on error */
        fy_buf_free(&b);
    }

    /* The output buffer's cap is honoured and leaves it unchanged. */
    fy_buf small;
    fy_buf_init(&small, 12);
    fyp_frame f = {.type = FYP_FRAME_DATA, .stream_id = 1};
    f.u.data = FY_SLICE_STR("hello");
    assert_int_equal(fyp_frame_encode(&small, &f), FY_ETOOBIG);
    assert_int_equal(small.len, 0);
    fy_buf_free(&small);
}

static void test_names_and_helpers(void **state)
{
    (void)state;
    assert_string_equal(fyp_errcode_name(FYP_ERR_NONE), "NO_ERROR");
    assert_string_equal(fyp_errcode_name(FYP_ERR_FLOW_CONTROL), "FLOW_CONTROL_ERROR");
    assert_string_equal(fyp_errcode_name(FYP_ERR_REJECTED), "REJECTED");
    assert_string_equal(fyp_errcode_name(0x1234), "UNKNOWN");
    static const fyp_field fl[] = {FYP_FIELD("Content-Type", "a"), FYP_FIELD("x", "b")};
    fyp_fields fs = {fl, 2};
    assert_ptr_equal(fyp_fields_get(&fs, "content-type"), &fl[0]);
    assert_ptr_equal(fyp_fields_get(&fs, "X"), &fl[1]);
    assert_null(fyp_fields_get(&fs, "y"));

    fyp_settings s;
    fyp_settings_default(&s);
    assert_int_equal(fyp_settings_validate(&s), 0);
    s.max_header_block = s.max_frame_size + 1;
    assert_int_equal(fyp_settings_validate(&s), FY_EINVAL);
    fyp_settings_default(&s);
    s.max_frame_size = FYP_MAX_FRAME_SIZE_LIMIT + 1;
    assert_int_equal(fyp_settings_validate(&s), FY_EINVAL);
    fyp_settings_default(&s);
    s.heartbeat_ms = 0;
    assert_int_equal(fyp_settings_validate(&s), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_vectors),
        cmocka_unit_test(test_split_independence),
        cmocka_unit_test(test_zero_copy_and_many_frames),
        cmocka_unit_test(test_malformed_frames),
        cmocka_unit_test(test_truncated_header),
        cmocka_unit_test(test_hello_extensions),
        cmocka_unit_test(test_encoder_rejects),
        cmocka_unit_test(test_names_and_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
