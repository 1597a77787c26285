/* Unit tests for proto/session: handshake, stream states, malformed input
 * (each must produce the right error code and a GOAWAY), flow control, GOAWAY
 * drain, heartbeats, memory per stream, and a gateway and a runner wired back
 * to back exchanging 1,000 concurrent streams. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "proto/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Fixture: a session with a recording event callback ---- */

static uint64_t fake_now = 1000000;

static uint64_t fake_clock(void *data)
{
    (void)data;
    return fake_now;
}

typedef struct {
    fyp_event_type type;
    uint32_t id;
    int end, remote;
    uint32_t code;
    size_t len;
    uint64_t rtt;
    uint16_t status, version;
    int has_usage;
    uint32_t pt, ct;
    char text[64];
} rec_t;

#define MAX_REC 8192

typedef struct peer peer_t;
struct peer {
    fyp_session *s;
    rec_t *ev;
    size_t nev;
    int auto_consume;       /* consume DATA as soon as it arrives */
    int reject_hello;       /* refuse the runner from the HELLO event */
    fyp_event_type free_on; /* free the session from this event */
    void (*hook)(peer_t *, fyp_session *, const fyp_event *);
    void *ctx;
};

static void copy_text(char *dst, fy_slice s)
{
    size_t n = s.len < 63 ? s.len : 63;
    memcpy(dst, s.base, n);
    dst[n] = '\0';
}

static void on_event(fyp_session *s, const fyp_event *ev, void *data)
{
    peer_t *p = data;
    rec_t r;
    memset(&r, 0, sizeof r);
    r.type = ev->type;
    r.id = ev->stream_id;
    r.end = ev->end_stream;
    r.remote = ev->remote;
    r.code = ev->error_code;
    r.rtt = ev->rtt_us;
    r.version = ev->version;
    switch (ev->type) {
    case FYP_EV_HELLO:
        copy_text(r.text, ev->u.hello->name);
        break;
    case FYP_EV_REQUEST:
        copy_text(r.text, ev->u.request->target);
        break;
    case FYP_EV_RESPONSE:
        r.status = ev->u.response->status;
        break;
    case FYP_EV_DATA:
        r.len = ev->u.data.len;
        break;
    case FYP_EV_TRAILERS:
        r.has_usage = ev->u.trailers->has_usage;
        r.pt = ev->u.trailers->prompt_tokens;
        r.ct = ev->u.trailers->completion_tokens;
        break;
    case FYP_EV_GOAWAY:
        r.code = ev->u.goaway->error_code;
        r.len = ev->u.goaway->last_stream_id;
        copy_text(r.text, ev->u.goaway->debug);
        break;
    default:
        break;
    }
    if (p->nev < MAX_REC) {
        p->ev[p->nev++] = r;
    }
    if (ev->type == FYP_EV_DATA && p->auto_consume && ev->u.data.len) {
        assert_int_equal(fyp_session_consume(s, ev->stream_id, ev->u.data.len), 0);
    }
    if (ev->type == FYP_EV_HELLO && p->reject_hello) {
        fyp_session_terminate(s, FYP_ERR_REJECTED, "not enrolled");
    }
    if (p->hook) {
        p->hook(p, s, ev);
    }
    if (p->free_on && ev->type == p->free_on) {
        fyp_session_free(s);
        p->s = NULL;
    }
}

static void peer_init_cfg(peer_t *p, fyp_role role, const fyp_settings *st, size_t output_max)
{
    static const char *const models[] = {"llama-3-8b", "qwen2-7b"};
    static const char *const caps[] = {"engine", "sse"};
    memset(p, 0, sizeof *p);
    p->ev = calloc(MAX_REC, sizeof *p->ev);
    assert_non_null(p->ev);
    fyp_session_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.role = role;
    if (st) {
        cfg.settings = *st;
    } else {
        fyp_settings_default(&cfg.settings);
    }
    cfg.name = role == FYP_ROLE_RUNNER ? "r1" : "gw";
    if (role == FYP_ROLE_RUNNER) {
        cfg.models = models;
        cfg.n_models = 2;
    }
    cfg.caps = caps;
    cfg.n_caps = 2;
    cfg.output_max = output_max;
    cfg.on_event = on_event;
    cfg.data = p;
    cfg.clock = fake_clock;
    assert_int_equal(fyp_session_new(&cfg, &p->s), 0);
}

static void peer_init(peer_t *p, fyp_role role, const fyp_settings *st)
{
    peer_init_cfg(p, role, st, 0);
}

static void peer_free(peer_t *p)
{
    fyp_session_free(p->s);
    free(p->ev);
    p->s = NULL;
    p->ev = NULL;
}

static size_t count_ev(const peer_t *p, fyp_event_type type)
{
    size_t n = 0;
    for (size_t i = 0; i < p->nev; i++) {
        n += p->ev[i].type == type;
    }
    return n;
}

static const rec_t *find_ev(const peer_t *p, fyp_event_type type, uint32_t id)
{
    for (size_t i = 0; i < p->nev; i++) {
        if (p->ev[i].type == type && p->ev[i].id == id) {
            return &p->ev[i];
        }
    }
    return NULL;
}

static uint32_t xorshift(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* Moves FROM's pending output into TO, in random pieces when RNG is set. */
static int pump(peer_t *from, peer_t *to, uint32_t *rng)
{
    fy_slice out;
    int rc = 0;
    while (rc == 0 && from->s && to->s && fyp_session_output(from->s, &out)) {
        size_t n = out.len;
        if (rng) {
            size_t k = 1 + xorshift(rng) % 3000;
            n = k < n ? k : n;
        }
        rc = fyp_session_recv(to->s, out.base, n);
        if (from->s) {
            fyp_session_output_consume(from->s, n);
        }
    }
    return rc;
}

static void exchange(peer_t *a, peer_t *b)
{
    for (int i = 0; i < 100; i++) {
        assert_int_equal(pump(a, b, NULL), 0);
        assert_int_equal(pump(b, a, NULL), 0);
        if (!fyp_session_output_size(a->s) && !fyp_session_output_size(b->s)) {
            return;
        }
    }
    fail_msg("exchange did not settle");
}

static void connect_pair(peer_t *gw, peer_t *rn, const fyp_settings *gs, const fyp_settings *rs)
{
    peer_init(gw, FYP_ROLE_GATEWAY, gs);
    peer_init(rn, FYP_ROLE_RUNNER, rs);
    exchange(gw, rn);
    assert_true(fyp_session_ready(gw->s));
    assert_true(fyp_session_ready(rn->s));
}

/* ---- Input builders ---- */

static void put(fy_buf *b, const fyp_frame *f)
{
    assert_int_equal(fyp_frame_encode(b, f), 0);
}

static void b_hello(fy_buf *b, uint16_t lo, uint16_t hi)
{
    fyp_frame f = {.type = FYP_FRAME_HELLO};
    f.u.hello.min_version = lo;
    f.u.hello.max_version = hi;
    fyp_settings_default(&f.u.hello.settings);
    f.u.hello.name = FY_SLICE_STR("r1");
    put(b, &f);
}

static void b_ack(fy_buf *b, uint16_t v)
{
    fyp_frame f = {.type = FYP_FRAME_HELLO_ACK};
    f.u.hello.version = v;
    fyp_settings_default(&f.u.hello.settings);
    put(b, &f);
}

static void b_req(fy_buf *b, uint32_t id, uint8_t flags)
{
    fyp_frame f = {.type = FYP_FRAME_REQUEST, .stream_id = id, .flags = flags};
    f.u.request.method = FY_SLICE_STR("POST");
    f.u.request.target = FY_SLICE_STR("/v1/completions");
    put(b, &f);
}

static void b_resp(fy_buf *b, uint32_t id, uint8_t flags)
{
    fyp_frame f = {.type = FYP_FRAME_RESPONSE, .stream_id = id, .flags = flags};
    f.u.response.status = 200;
    put(b, &f);
}

static void b_data(fy_buf *b, uint32_t id, uint8_t flags, size_t len)
{
    static char zeros[1 << 17];
    fyp_frame f = {.type = FYP_FRAME_DATA, .stream_id = id, .flags = flags};
    f.u.data = FY_SLICE(zeros, len);
    put(b, &f);
}

static void b_trl(fy_buf *b, uint32_t id)
{
    fyp_frame f = {.type = FYP_FRAME_TRAILERS, .stream_id = id, .flags = FYP_FLAG_END_STREAM};
    put(b, &f);
}

static void b_rst(fy_buf *b, uint32_t id, uint8_t flags, uint32_t code)
{
    fyp_frame f = {.type = FYP_FRAME_RST_STREAM, .stream_id = id, .flags = flags};
    f.u.error_code = code;
    put(b, &f);
}

static void b_wu(fy_buf *b, uint32_t id, uint32_t inc)
{
    fyp_frame f = {.type = FYP_FRAME_WINDOW_UPDATE, .stream_id = id};
    f.u.increment = inc;
    put(b, &f);
}

static void b_ping(fy_buf *b, int pong, uint64_t v)
{
    fyp_frame f = {.type = pong ? FYP_FRAME_PONG : FYP_FRAME_PING};
    for (int i = 0; i < 8; i++) {
        f.u.opaque[i] = (uint8_t)(v >> (56 - 8 * i));
    }
    put(b, &f);
}

static void b_goaway(fy_buf *b, uint32_t last, uint32_t code)
{
    fyp_frame f = {.type = FYP_FRAME_GOAWAY};
    f.u.goaway.last_stream_id = last;
    f.u.goaway.error_code = code;
    put(b, &f);
}

static void b_hex(fy_buf *b, const char *hex)
{
    int hi = -1;
    for (const char *p = hex; *p; p++) {
        int v = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
        if (v < 0) {
            continue;
        }
        if (hi < 0) {
            hi = v;
        } else {
            char c = (char)(hi << 4 | v);
            assert_int_equal(fy_buf_append(b, &c, 1), 0);
            hi = -1;
        }
    }
}

/* ---- Output inspection ---- */

typedef struct {
    uint8_t type, flags;
    uint32_t id, code, last, inc;
    size_t len;
} ofr_t;

/* Decodes S's pending output (without consuming it) into O. */
static size_t out_frames(fyp_session *s, ofr_t *o, size_t max)
{
    fy_slice out;
    fyp_session_output(s, &out);
    fyp_decoder d;
    fyp_decoder_init(&d, FYP_MAX_FRAME_SIZE_LIMIT, FYP_MAX_FRAME_SIZE_LIMIT);
    const uint8_t *p = (const uint8_t *)out.base;
    size_t n = out.len, k = 0;
    fyp_frame f;
    int rc;
    while ((rc = fyp_decoder_next(&d, &p, &n, &f)) == 1) {
        if (k < max) {
            ofr_t *r = &o[k];
            memset(r, 0, sizeof *r);
            r->type = f.type;
            r->flags = f.flags;
            r->id = f.stream_id;
            r->len = f.length;
            if (f.type == FYP_FRAME_GOAWAY) {
                r->code = f.u.goaway.error_code;
                r->last = f.u.goaway.last_stream_id;
            } else if (f.type == FYP_FRAME_RST_STREAM) {
                r->code = f.u.error_code;
            } else if (f.type == FYP_FRAME_WINDOW_UPDATE) {
                r->inc = f.u.increment;
            }
        }
        k++;
    }
    assert_int_equal(rc, 0);
    assert_true(fyp_decoder_idle(&d)); /* the session only writes whole frames */
    fyp_decoder_close(&d);
    return k < max ? k : max;
}

static void drain_output(fyp_session *s)
{
    fyp_session_output_consume(s, fyp_session_output_size(s));
}

/* ---- Malformed input: the right code and a GOAWAY carrying it ---- */

#define END FYP_FLAG_END_STREAM

static void bld_req1(fy_buf *b)
{
    b_req(b, 1, END);
}
static void bld_ping(fy_buf *b)
{
    b_ping(b, 0, 1);
}
static void bld_unknown(fy_buf *b)
{
    b_hex(b, "000000 42 00 00000000");
}
static void bld_hello(fy_buf *b)
{
    b_hello(b, 1, 1);
}
static void bld_ack(fy_buf *b)
{
    b_ack(b, 1);
}
static void bld_req_even(fy_buf *b)
{
    b_hex(b, "00000b 01 01 00000002 03 474554 0001 2f 0000 0000");
}
static void bld_req_decreasing(fy_buf *b)
{
    b_req(b, 3, END);
    b_req(b, 1, END);
}
static void bld_req_repeated(fy_buf *b)
{
    b_req(b, 3, 0);
    b_req(b, 3, 0);
}
static void bld_data_idle(fy_buf *b)
{
    b_data(b, 5, END, 4);
}
static void bld_data_after_end(fy_buf *b)
{
    b_req(b, 1, END);
    b_data(b, 1, 0, 4);
}
static void bld_trl_after_end(fy_buf *b)
{
    b_req(b, 1, 0);
    b_data(b, 1, END, 4);
    b_trl(b, 1);
}
static void bld_data_before_resp(fy_buf *b)
{
    b_data(b, 1, 0, 4);
}
static void bld_trl_before_resp(fy_buf *b)
{
    b_trl(b, 1);
}
static void bld_resp_twice(fy_buf *b)
{
    b_resp(b, 1, 0);
    b_resp(b, 1, 0);
}
static void bld_resp_idle(fy_buf *b)
{
    b_resp(b, 3, 0);
}
static void bld_gw_data_after_end(fy_buf *b)
{
    b_resp(b, 1, END);
    b_data(b, 1, 0, 4);
}
static void bld_wu0(fy_buf *b)
{
    b_hex(b, "000004 05 00 00000000 00000000");
}
static void bld_wu_stream0(fy_buf *b)
{
    b_req(b, 1, 0);
    b_hex(b, "000004 05 00 00000001 00000000");
}
static void bld_wu_conn_overflow(fy_buf *b)
{
    b_wu(b, 0, 0x7fffffff);
}
static void bld_wu_stream_overflow(fy_buf *b)
{
    b_req(b, 1, 0);
    b_wu(b, 1, 0x7fffffff);
}
static void bld_wu_idle(fy_buf *b)
{
    b_wu(b, 7, 1);
}
static void bld_over_stream_window(fy_buf *b)
{
    b_req(b, 1, 0);
    b_data(b, 1, 0, 1001);
}
static void bld_over_conn_window(fy_buf *b)
{
    b_req(b, 1, 0);
    b_req(b, 3, 0);
    b_data(b, 1, 0, 600);
    b_data(b, 3, 0, 600);
}
static void bld_big_header(fy_buf *b)
{
    static char big[1100];
    memset(big, 'v', sizeof big);
    fyp_field h = {FY_SLICE_STR("x-big"), FY_SLICE(big, sizeof big)};
    fyp_frame f = {.type = FYP_FRAME_REQUEST, .stream_id = 1};
    f.u.request.method = FY_SLICE_STR("GET");
    f.u.request.target = FY_SLICE_STR("/");
    f.u.request.headers = (fyp_fields){&h, 1};
    put(b, &f);
}
static void bld_oversize(fy_buf *b)
{
    b_req(b, 1, 0);
    b_data(b, 1, 0, 16385);
}
static void bld_too_many(fy_buf *b)
{
    for (uint32_t i = 0; i < 80; i++) {
        b_req(b, 1 + 2 * i, 0);
    }
}
static void bld_rst_ack_open(fy_buf *b)
{
    b_req(b, 1, 0);
    b_rst(b, 1, FYP_FLAG_ACK, FYP_ERR_CANCEL);
}
static void bld_rst_idle(fy_buf *b)
{
    b_rst(b, 9, 0, FYP_ERR_CANCEL);
}
static void bld_goaway_raise(fy_buf *b)
{
    b_goaway(b, 1, 0);
    b_goaway(b, 3, 0);
}
static void bld_hello_v23(fy_buf *b)
{
    b_hello(b, 2, 3);
}
static void bld_ack_v2(fy_buf *b)
{
    b_ack(b, 2);
}
static void bld_bad_flags(fy_buf *b)
{
    b_req(b, 1, 0);
    b_hex(b, "000001 00 04 00000001 61");
}
static void bld_data_stream0(fy_buf *b)
{
    b_hex(b, "000001 00 00 00000000 61");
}
static void bld_req_after_goaway(fy_buf *b)
{
    b_goaway(b, 0, 0);
    b_req(b, 1, END);
}
static void bld_ping_flood(fy_buf *b)
{
    for (int i = 0; i < 200; i++) {
        b_ping(b, 0, (uint64_t)i);
    }
}
static void bld_field_past_end(fy_buf *b)
{
    b_req(b, 1, 0);
    b_hex(b, "000006 03 01 00000001 0001 0010 6162");
}
static void bld_truncated_header(fy_buf *b)
{
    b_hex(b, "000004 05");
}

static void bld_resp_to_runner(fy_buf *b)
{
    b_req(b, 1, 0);
    b_resp(b, 1, 0);
}
static void bld_resp_closed(fy_buf *b)
{
    b_resp(b, 1, END);
    b_resp(b, 1, 0);
}
static void bld_trl_closed(fy_buf *b)
{
    b_resp(b, 1, END);
    b_trl(b, 1);
}
static void bld_trl_idle(fy_buf *b)
{
    b_trl(b, 5);
}

static void tw_stream_window(fyp_settings *s)
{
    s->initial_stream_window = 1000;
}
static void tw_conn_window(fyp_settings *s)
{
    s->connection_window = 1000;
}
static void tw_header_block(fyp_settings *s)
{
    s->max_header_block = 1024;
}
static void tw_frame_size(fyp_settings *s)
{
    s->max_frame_size = 16384;
    s->max_header_block = 16384;
}
static void tw_one_stream(fyp_settings *s)
{
    s->max_concurrent_streams = 1;
}

typedef struct {
    const char *name;
    fyp_role role;
    int handshake;
    int gw_open; /* gateway: streams to open after the handshake */
    void (*tweak)(fyp_settings *);
    size_t output_max;
    void (*build)(fy_buf *);
    uint32_t code;
    int eof;    /* then call fyp_session_recv_eof */
    int gw_end; /* the gateway's streams are opened with END_STREAM */
} scase_t;

#define R FYP_ROLE_RUNNER
#define G FYP_ROLE_GATEWAY

static const scase_t session_cases[] = {
    {"REQUEST before HELLO_ACK", R, 0, 0, NULL, 0, bld_req1, FYP_ERR_PROTOCOL, 0, 0},
    {"PING before HELLO", G, 0, 0, NULL, 0, bld_ping, FYP_ERR_PROTOCOL, 0, 0},
    {"unknown frame before HELLO", G, 0, 0, NULL, 0, bld_unknown, FYP_ERR_PROTOCOL, 0, 0},
    {"HELLO twice", G, 1, 0, NULL, 0, bld_hello, FYP_ERR_PROTOCOL, 0, 0},
    {"HELLO_ACK twice", R, 1, 0, NULL, 0, bld_ack, FYP_ERR_PROTOCOL, 0, 0},
    {"HELLO to the runner", R, 1, 0, NULL, 0, bld_hello, FYP_ERR_PROTOCOL, 0, 0},
    {"HELLO_ACK to the gateway", G, 1, 0, NULL, 0, bld_ack, FYP_ERR_PROTOCOL, 0, 0},
    {"HELLO with no common version", G, 0, 0, NULL, 0, bld_hello_v23, FYP_ERR_VERSION_MISMATCH, 0,
     0},
    {"HELLO_ACK with a version not offered", R, 0, 0, NULL, 0, bld_ack_v2, FYP_ERR_VERSION_MISMATCH,
     0, 0},
    {"REQUEST from the runner (odd id)", G, 1, 0, NULL, 0, bld_req1, FYP_ERR_PROTOCOL, 0, 0},
    {"REQUEST with even id", R, 1, 0, NULL, 0, bld_req_even, FYP_ERR_PROTOCOL, 0, 0},
    {"REQUEST id not increasing", R, 1, 0, NULL, 0, bld_req_decreasing, FYP_ERR_PROTOCOL, 0, 0},
    {"REQUEST id repeated", R, 1, 0, NULL, 0, bld_req_repeated, FYP_ERR_PROTOCOL, 0, 0},
    {"REQUEST after the gateway's GOAWAY", R, 1, 0, NULL, 0, bld_req_after_goaway, FYP_ERR_PROTOCOL,
     0, 0},
    {"DATA on an idle stream", R, 1, 0, NULL, 0, bld_data_idle, FYP_ERR_PROTOCOL, 0, 0},
    {"DATA on stream 0", R, 1, 0, NULL, 0, bld_data_stream0, FYP_ERR_PROTOCOL, 0, 0},
    {"DATA with an unknown flag", R, 1, 0, NULL, 0, bld_bad_flags, FYP_ERR_PROTOCOL, 0, 0},
    {"DATA after END_STREAM (runner)", R, 1, 0, NULL, 0, bld_data_after_end, FYP_ERR_STREAM_CLOSED,
     0, 0},
    {"DATA after END_STREAM (gateway)", G, 1, 1, NULL, 0, bld_gw_data_after_end,
     FYP_ERR_STREAM_CLOSED, 0, 0},
    {"TRAILERS after END_STREAM", R, 1, 0, NULL, 0, bld_trl_after_end, FYP_ERR_STREAM_CLOSED, 0, 0},
    {"DATA before RESPONSE", G, 1, 1, NULL, 0, bld_data_before_resp, FYP_ERR_PROTOCOL, 0, 0},
    {"TRAILERS before RESPONSE", G, 1, 1, NULL, 0, bld_trl_before_resp, FYP_ERR_PROTOCOL, 0, 0},
    {"RESPONSE twice", G, 1, 1, NULL, 0, bld_resp_twice, FYP_ERR_PROTOCOL, 0, 0},
    {"RESPONSE on an idle stream", G, 1, 1, NULL, 0, bld_resp_idle, FYP_ERR_PROTOCOL, 0, 0},
    {"WINDOW_UPDATE increment 0 (connection)", R, 1, 0, NULL, 0, bld_wu0, FYP_ERR_PROTOCOL, 0, 0},
    {"WINDOW_UPDATE increment 0 (stream)", R, 1, 0, NULL, 0, bld_wu_stream0, FYP_ERR_PROTOCOL, 0,
     0},
    {"WINDOW_UPDATE connection overflow", R, 1, 0, NULL, 0, bld_wu_conn_overflow,
     FYP_ERR_FLOW_CONTROL, 0, 0},
    {"WINDOW_UPDATE stream overflow", R, 1, 0, NULL, 0, bld_wu_stream_overflow,
     FYP_ERR_FLOW_CONTROL, 0, 0},
    {"WINDOW_UPDATE on an idle stream", R, 1, 0, NULL, 0, bld_wu_idle, FYP_ERR_PROTOCOL, 0, 0},
    {"DATA beyond the stream window", R, 1, 0, tw_stream_window, 0, bld_over_stream_window,
     FYP_ERR_FLOW_CONTROL, 0, 0},
    {"DATA beyond the connection window", R, 1, 0, tw_conn_window, 0, bld_over_conn_window,
     FYP_ERR_FLOW_CONTROL, 0, 0},
    {"header block over the limit", R, 1, 0, tw_header_block, 0, bld_big_header,
     FYP_ERR_HEADER_TOO_LARGE, 0, 0},
    {"frame over max frame size", R, 1, 0, tw_frame_size, 0, bld_oversize, FYP_ERR_FRAME_SIZE, 0,
     0},
    {"field length past the frame end", R, 1, 0, NULL, 0, bld_field_past_end, FYP_ERR_PROTOCOL, 0,
     0},
    {"too many streams (flood past refusals)", R, 1, 0, tw_one_stream, 0, bld_too_many,
     FYP_ERR_OVERLOAD, 0, 0},
    {"RST_STREAM ACK for a stream not reset", R, 1, 0, NULL, 0, bld_rst_ack_open, FYP_ERR_PROTOCOL,
     0, 0},
    {"RST_STREAM on an idle stream", R, 1, 0, NULL, 0, bld_rst_idle, FYP_ERR_PROTOCOL, 0, 0},
    {"GOAWAY raising the last stream id", G, 1, 2, NULL, 0, bld_goaway_raise, FYP_ERR_PROTOCOL, 0,
     0},
    {"PINGs while not reading the PONGs", R, 1, 0, NULL, 100, bld_ping_flood, FYP_ERR_OVERLOAD, 0,
     0},
    {"truncated header at end of stream", R, 1, 0, NULL, 0, bld_truncated_header, FYP_ERR_PROTOCOL,
     1, 0},
    {"RESPONSE to the runner", R, 1, 0, NULL, 0, bld_resp_to_runner, FYP_ERR_PROTOCOL, 0, 0},
    {"RESPONSE on a closed stream", G, 1, 1, NULL, 0, bld_resp_closed, FYP_ERR_STREAM_CLOSED, 0, 1},
    {"TRAILERS on a closed stream", G, 1, 1, NULL, 0, bld_trl_closed, FYP_ERR_STREAM_CLOSED, 0, 1},
    {"TRAILERS on an idle stream", G, 1, 1, NULL, 0, bld_trl_idle, FYP_ERR_PROTOCOL, 0, 0},
};

static void run_session_case(const scase_t *c, int bytewise)
{
    fyp_settings st;
    fyp_settings_default(&st);
    if (c->tweak) {
        c->tweak(&st);
    }
    peer_t p;
    peer_init_cfg(&p, c->role, &st, c->output_max);
    drain_output(p.s); /* the runner's HELLO */
    if (c->handshake) {
        fy_buf hs;
        fy_buf_init(&hs, 1 << 16);
        if (c->role == R) {
            b_ack(&hs, 1);
        } else {
            b_hello(&hs, 1, 1);
        }
        assert_int_equal(fyp_session_recv(p.s, hs.data, hs.len), 0);
        fy_buf_free(&hs);
        assert_true(fyp_session_ready(p.s));
        for (int i = 0; i < c->gw_open; i++) {
            fyp_request req = {FY_SLICE_STR("GET"), FY_SLICE_STR("/"), {0}, {0}};
            uint32_t id;
            assert_int_equal(fyp_session_request(p.s, &req, c->gw_end, NULL, &id), 0);
            assert_int_equal(id, 1 + 2 * (uint32_t)i);
        }
        drain_output(p.s);
    }
    fy_buf in;
    fy_buf_init(&in, 1 << 20);
    c->build(&in);
    int first_err = 0;
    size_t step = bytewise ? 1 : in.len;
    for (size_t off = 0; off < in.len; off += step) {
        size_t n = in.len - off < step ? in.len - off : step;
        int rc = fyp_session_recv(p.s, in.data + off, n);
        if (rc < 0 && !first_err) {
            first_err = rc;
        }
        if (rc < 0) {
            assert_true(fyp_session_dead(p.s));
            /* Once dead, nothing more is read. */
            assert_int_equal(fyp_session_recv(p.s, in.data, 1), FY_ECLOSED);
            break;
        }
    }
    if (c->eof) {
        assert_int_equal(first_err, 0);
        first_err = fyp_session_recv_eof(p.s);
    }
    if (first_err != FY_EPROTO || fyp_session_error_code(p.s) != c->code) {
        fprintf(stderr, "case '%s' (bytewise %d): rc %s, code %s (%s)\n", c->name, bytewise,
                fy_err_name(first_err), fyp_errcode_name(fyp_session_error_code(p.s)),
                fyp_session_error_msg(p.s));
        fail();
    }
    /* The last frame queued is a GOAWAY carrying that code and a reason. */
    ofr_t o[256];
    size_t n = out_frames(p.s, o, 256);
    assert_true(n > 0);
    assert_int_equal(o[n - 1].type, FYP_FRAME_GOAWAY);
    assert_int_equal(o[n - 1].code, c->code);
    assert_true(o[n - 1].len > 8);
    assert_true(fyp_session_want_close(p.s));
    fy_buf_free(&in);
    peer_free(&p);
}

static void test_malformed_session_input(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof session_cases / sizeof session_cases[0]; i++) {
        run_session_case(&session_cases[i], 0);
        run_session_case(&session_cases[i], 1);
    }
}

/* ---- Handshake ---- */

static void test_handshake(void **state)
{
    (void)state;
    fyp_settings gs, rs;
    fyp_settings_default(&gs);
    fyp_settings_default(&rs);
    gs.heartbeat_ms = 20000;
    rs.heartbeat_ms = 3000;
    rs.max_concurrent_streams = 7;
    peer_t gw, rn;
    peer_init(&gw, G, &gs);
    peer_init(&rn, R, &rs);
    /* Nothing may be sent before the handshake. */
    fyp_request req = {FY_SLICE_STR("GET"), FY_SLICE_STR("/"), {0}, {0}};
    uint32_t id;
    assert_int_equal(fyp_session_request(gw.s, &req, 1, NULL, &id), FY_EAGAIN);
    assert_int_equal(fyp_session_ping(rn.s), FY_EAGAIN);
    assert_null(fyp_session_peer_settings(gw.s));
    assert_int_equal(fyp_session_output_size(gw.s), 0);
    assert_true(fyp_session_output_size(rn.s) > 0); /* HELLO */
    exchange(&gw, &rn);

    const rec_t *h = find_ev(&gw, FYP_EV_HELLO, 0);
    assert_non_null(h);
    assert_string_equal(h->text, "r1");
    assert_int_equal(h->version, 1);
    h = find_ev(&rn, FYP_EV_HELLO, 0);
    assert_non_null(h);
    assert_string_equal(h->text, "gw");
    assert_int_equal(fyp_session_version(gw.s), 1);
    assert_int_equal(fyp_session_version(rn.s), 1);
    assert_int_equal(fyp_session_peer_settings(gw.s)->max_concurrent_streams, 7);
    assert_int_equal(fyp_session_peer_settings(rn.s)->heartbeat_ms, 20000);
    /* The effective heartbeat is the smaller preference, the same on both sides. */
    assert_int_equal(fyp_session_heartbeat_ms(gw.s), 3000);
    assert_int_equal(fyp_session_heartbeat_ms(rn.s), 3000);
    assert_int_equal(fyp_session_send_window(gw.s, 0), FYP_DEFAULT_CONNECTION_WINDOW);
    assert_false(fyp_session_want_close(gw.s));
    peer_free(&gw);
    peer_free(&rn);

    /* A side without a preference (0) takes the other's. */
    rs.heartbeat_ms = 0;
    connect_pair(&gw, &rn, &gs, &rs);
    assert_int_equal(fyp_session_heartbeat_ms(rn.s), 20000);
    assert_int_equal(fyp_session_heartbeat_ms(gw.s), 20000);
    peer_free(&gw);
    peer_free(&rn);
}

static void models_hook(peer_t *p, fyp_session *s, const fyp_event *ev)
{
    (void)s;
    if (ev->type == FYP_EV_HELLO) {
        const fyp_hello *h = ev->u.hello;
        assert_int_equal(h->n_models, 2);
        assert_memory_equal(h->models[1].base, "qwen2-7b", 8);
        assert_int_equal(h->n_caps, 2);
        assert_memory_equal(h->caps[0].base, "engine", 6);
        *(int *)p->ctx = 1;
    }
}

static void test_hello_models_and_reject(void **state)
{
    (void)state;
    /* The gateway sees models and capabilities, and can refuse the runner:
     * no HELLO_ACK, a GOAWAY REJECTED instead. */
    peer_t gw, rn;
    int seen = 0;
    peer_init(&gw, G, NULL);
    peer_init(&rn, R, NULL);
    gw.hook = models_hook;
    gw.ctx = &seen;
    gw.reject_hello = 1;
    assert_int_equal(pump(&rn, &gw, NULL), 0);
    assert_int_equal(seen, 1);
    assert_true(fyp_session_dead(gw.s));
    ofr_t o[4];
    assert_int_equal(out_frames(gw.s, o, 4), 1);
    assert_int_equal(o[0].type, FYP_FRAME_GOAWAY);
    assert_int_equal(o[0].code, FYP_ERR_REJECTED);
    assert_int_equal(pump(&gw, &rn, NULL), 0);
    const rec_t *g = find_ev(&rn, FYP_EV_GOAWAY, 0);
    assert_non_null(g);
    assert_int_equal(g->code, FYP_ERR_REJECTED);
    assert_string_equal(g->text, "not enrolled");
    assert_true(fyp_session_dead(rn.s));
    assert_true(fyp_session_want_close(rn.s));
    assert_int_equal(fyp_session_error_code(rn.s), FYP_ERR_REJECTED);
    peer_free(&gw);
    peer_free(&rn);
}

static void test_version_range(void **state)
{
    (void)state;
    /* A runner offering 1..5 gets 1 from this gateway. */
    peer_t gw;
    peer_init(&gw, G, NULL);
    fy_buf in;
    fy_buf_init(&in, 1 << 16);
    b_hello(&in, 1, 5);
    assert_int_equal(fyp_session_recv(gw.s, in.data, in.len), 0);
    assert_int_equal(fyp_session_version(gw.s), 1);
    ofr_t o[2];
    assert_int_equal(out_frames(gw.s, o, 2), 1);
    assert_int_equal(o[0].type, FYP_FRAME_HELLO_ACK);
    fy_buf_free(&in);
    peer_free(&gw);

    /* Sessions refuse version ranges they do not speak. */
    fyp_session_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.role = R;
    cfg.name = "r";
    fyp_settings_default(&cfg.settings);
    cfg.min_version = 2;
    cfg.max_version = 3;
    fyp_session *s = NULL;
    assert_int_equal(fyp_session_new(&cfg, &s), FY_EINVAL);
    cfg.min_version = 0;
    cfg.max_version = 0;
    cfg.name = NULL;
    assert_int_equal(fyp_session_new(&cfg, &s), FY_EINVAL); /* runner without a name */
    cfg.name = "bad name";
    assert_int_equal(fyp_session_new(&cfg, &s), FY_EINVAL);
    cfg.name = "r";
    cfg.settings.max_frame_size = 100;
    assert_int_equal(fyp_session_new(&cfg, &s), FY_EINVAL);
    assert_null(s);
}

/* ---- Streams ---- */

static void test_request_response_trailers(void **state)
{
    (void)state;
    peer_t gw, rn;
    connect_pair(&gw, &rn, NULL, NULL);
    gw.auto_consume = rn.auto_consume = 1;
    static const fyp_field meta[] = {FYP_FIELD("key-id", "k_123"), FYP_FIELD("priority", "7")};
    static const fyp_field hdrs[] = {FYP_FIELD("content-type", "application/json")};
    fyp_request req = {
        FY_SLICE_STR("POST"), FY_SLICE_STR("/v1/chat/completions"), {meta, 2}, {hdrs, 1}};
    uint32_t id = 0;
    int marker;
    assert_int_equal(fyp_session_request(gw.s, &req, 0, &marker, &id), 0);
    assert_int_equal(id, 1);
    assert_ptr_equal(fyp_session_stream_data(gw.s, 1), &marker);
    assert_int_equal(fyp_session_stream_state(gw.s, 1), FYP_STREAM_OPEN);
    assert_int_equal(fyp_session_stream_state(gw.s, 3), FYP_STREAM_IDLE);
    assert_int_equal(fyp_session_send_data(gw.s, 1, "{\"a\":1}", 7, 1), 7);
    assert_int_equal(fyp_session_stream_state(gw.s, 1), FYP_STREAM_HALF_CLOSED_LOCAL);
    exchange(&gw, &rn);
    const rec_t *r = find_ev(&rn, FYP_EV_REQUEST, 1);
    assert_non_null(r);
    assert_string_equal(r->text, "/v1/chat/completions");
    assert_false(r->end);
    r = find_ev(&rn, FYP_EV_DATA, 1);
    assert_non_null(r);
    assert_int_equal(r->len, 7);
    assert_true(r->end);
    assert_int_equal(fyp_session_stream_state(rn.s, 1), FYP_STREAM_HALF_CLOSED_REMOTE);

    /* The runner cannot send DATA before its RESPONSE. */
    assert_int_equal(fyp_session_send_data(rn.s, 1, "x", 1, 0), FY_EINVAL);
    fyp_response resp = {200, {hdrs, 1}};
    assert_int_equal(fyp_session_respond(rn.s, 1, &resp, 0), 0);
    assert_int_equal(fyp_session_respond(rn.s, 1, &resp, 0), FY_EINVAL);
    assert_int_equal(fyp_session_send_data(rn.s, 1, "data: hi\n\n", 10, 0), 10);
    /* Bytes without a pointer are refused; NULL is fine for an empty piece. */
    assert_int_equal(fyp_session_send_data(rn.s, 1, NULL, 5, 0), FY_EINVAL);
    assert_int_equal(fyp_session_send_data(rn.s, 1, NULL, 0, 0), 0);
    static const fyp_field fin[] = {FYP_FIELD("x-finish-reason", "stop")};
    fyp_trailers tr = {1, 12, 34, {fin, 1}};
    assert_int_equal(fyp_session_send_trailers(rn.s, 1, &tr), 0);
    assert_int_equal(fyp_session_send_data(rn.s, 1, "x", 1, 0), FY_ENOENT);
    assert_int_equal(fyp_session_stream_count(rn.s), 0);
    exchange(&gw, &rn);
    r = find_ev(&gw, FYP_EV_RESPONSE, 1);
    assert_non_null(r);
    assert_int_equal(r->status, 200);
    r = find_ev(&gw, FYP_EV_TRAILERS, 1);
    assert_non_null(r);
    assert_true(r->has_usage);
    assert_int_equal(r->pt, 12);
    assert_int_equal(r->ct, 34);
    assert_int_equal(fyp_session_stream_count(gw.s), 0);
    assert_int_equal(fyp_session_stream_state(gw.s, 1), FYP_STREAM_CLOSED);
    assert_null(fyp_session_stream_data(gw.s, 1));
    peer_free(&gw);
    peer_free(&rn);
}

static void test_data_on_closed_stream(void **state)
{
    (void)state;
    /* Both halves ended: the stream is closed at the runner, and DATA on it is
     * STREAM_CLOSED (not a race: resets are acknowledged). A late
     * WINDOW_UPDATE and an RST_STREAM are tolerated. */
    peer_t rn;
    peer_init(&rn, R, NULL);
    rn.auto_consume = 1;
    fy_buf in;
    fy_buf_init(&in, 1 << 16);
    b_ack(&in, 1);
    b_req(&in, 1, END);
    assert_int_equal(fyp_session_recv(rn.s, in.data, in.len), 0);
    fyp_response resp = {204, {0}};
    assert_int_equal(fyp_session_respond(rn.s, 1, &resp, 1), 0);
    assert_int_equal(fyp_session_stream_state(rn.s, 1), FYP_STREAM_CLOSED);
    drain_output(rn.s);
    in.len = 0;
    b_wu(&in, 1, 100);
    b_rst(&in, 1, 0, FYP_ERR_CANCEL);
    assert_int_equal(fyp_session_recv(rn.s, in.data, in.len), 0);
    ofr_t o[4];
    assert_int_equal(out_frames(rn.s, o, 4), 1);
    assert_int_equal(o[0].type, FYP_FRAME_RST_STREAM);
    assert_int_equal(o[0].flags, FYP_FLAG_ACK);
    assert_int_equal(count_ev(&rn, FYP_EV_STREAM_RESET), 0);
    in.len = 0;
    b_data(&in, 1, 0, 3);
    assert_int_equal(fyp_session_recv(rn.s, in.data, in.len), FY_EPROTO);
    assert_int_equal(fyp_session_error_code(rn.s), FYP_ERR_STREAM_CLOSED);
    fy_buf_free(&in);
    peer_free(&rn);
}

static void test_unknown_frames_ignored(void **state)
{
    (void)state;
    peer_t rn;
    peer_init(&rn, R, NULL);
    fy_buf in;
    fy_buf_init(&in, 1 << 16);
    b_ack(&in, 1);
    b_hex(&in, "000004 7f ff 00000000 01020304"); /* unknown type, any flags */
    b_hex(&in, "000000 0b 00 00000003");          /* unknown type on a stream */
    b_req(&in, 1, END);
    assert_int_equal(fyp_session_recv(rn.s, in.data, in.len), 0);
    assert_non_null(find_ev(&rn, FYP_EV_REQUEST, 1));
    fy_buf_free(&in);
    peer_free(&rn);
}

static void test_reset_and_ack(void **state)
{
    (void)state;
    fyp_settings gs;
    fyp_settings_default(&gs);
    gs.connection_window = 10000; /* credit goes back once 5000 bytes are freed */
    peer_t gw, rn;
    connect_pair(&gw, &rn, &gs, NULL);
    rn.auto_consume = 1;
    fyp_request req = {FY_SLICE_STR("POST"), FY_SLICE_STR("/"), {0}, {0}};
    uint32_t id;
    assert_int_equal(fyp_session_request(gw.s, &req, 1, NULL, &id), 0);
    exchange(&gw, &rn);
    fyp_response resp = {200, {0}};
    assert_int_equal(fyp_session_respond(rn.s, id, &resp, 0), 0);
    static char chunk[5000];
    assert_int_equal(fyp_session_send_data(rn.s, id, chunk, sizeof chunk, 0), 5000);
    exchange(&gw, &rn); /* the gateway holds 5000 unconsumed bytes */
    assert_int_equal(count_ev(&gw, FYP_EV_DATA), 1);

    /* The public client hangs up: the gateway resets. Unconsumed data is
     * dropped; the stream waits in reset-sent for the runner's ACK. */
    assert_int_equal(fyp_session_reset(gw.s, id, FYP_ERR_CANCEL), 0);
    assert_int_equal(fyp_session_stream_state(gw.s, id), FYP_STREAM_RESET_SENT);
    assert_int_equal(fyp_session_stream_count(gw.s), 1);
    assert_int_equal(fyp_session_reset(gw.s, id, FYP_ERR_CANCEL), FY_ENOENT);
    assert_int_equal(fyp_session_consume(gw.s, id, 1), FY_ENOENT);
    /* Meanwhile the runner, not yet aware, sends more. */
    assert_int_equal(fyp_session_send_data(rn.s, id, chunk, 1000, 0), 1000);
    assert_int_equal(pump(&rn, &gw, NULL), 0); /* ignored by the gateway */
    assert_int_equal(count_ev(&gw, FYP_EV_DATA), 1);
    assert_int_equal(pump(&gw, &rn, NULL), 0); /* RST reaches the runner */
    const rec_t *r = find_ev(&rn, FYP_EV_STREAM_RESET, id);
    assert_non_null(r);
    assert_int_equal(r->code, FYP_ERR_CANCEL);
    assert_true(r->remote);
    assert_int_equal(fyp_session_stream_count(rn.s), 0);
    assert_int_equal(fyp_session_send_data(rn.s, id, "x", 1, 0), FY_ENOENT);
    ofr_t o[4];
    assert_int_equal(out_frames(rn.s, o, 4), 1);
    assert_int_equal(o[0].type, FYP_FRAME_RST_STREAM);
    assert_int_equal(o[0].flags, FYP_FLAG_ACK);
    assert_int_equal(pump(&rn, &gw, NULL), 0); /* the ACK */
    assert_int_equal(fyp_session_stream_count(gw.s), 0);
    assert_int_equal(fyp_session_stream_state(gw.s, id), FYP_STREAM_CLOSED);
    /* The gateway did not report its own reset back to itself. */
    assert_int_equal(count_ev(&gw, FYP_EV_STREAM_RESET), 0);
    /* The dropped 5000 bytes were credited without any consume call (a
     * WINDOW_UPDATE went out with the RST), and the ignored 1000 are counted
     * toward the next one. */
    exchange(&gw, &rn);
    assert_int_equal(fyp_session_send_window(rn.s, 0), 10000 - 6000 + 5000);
    assert_int_equal(fyp_session_reset(gw.s, 99, FYP_ERR_CANCEL), FY_ENOENT);

    /* Crossing resets acknowledge each other: no ACK frames, both forget it. */
    assert_int_equal(fyp_session_request(gw.s, &req, 1, NULL, &id), 0);
    exchange(&gw, &rn);
    assert_int_equal(fyp_session_reset(gw.s, id, FYP_ERR_CANCEL), 0);
    assert_int_equal(fyp_session_reset(rn.s, id, FYP_ERR_INTERNAL), 0);
    exchange(&gw, &rn);
    assert_int_equal(fyp_session_stream_count(gw.s), 0);
    assert_int_equal(fyp_session_stream_count(rn.s), 0);
    assert_null(find_ev(&gw, FYP_EV_STREAM_RESET, id));
    assert_null(find_ev(&rn, FYP_EV_STREAM_RESET, id));
    peer_free(&gw);
    peer_free(&rn);
}

static void test_refused_when_full(void **state)
{
    (void)state;
    fyp_settings rs;
    fyp_settings_default(&rs);
    rs.max_concurrent_streams = 2;
    peer_t gw, rn;
    connect_pair(&gw, &rn, NULL, &rs);
    /* The gateway respects the runner's limit on its own. */
    fyp_request req = {FY_SLICE_STR("GET"), FY_SLICE_STR("/"), {0}, {0}};
    uint32_t id;
    assert_int_equal(fyp_session_request(gw.s, &req, 1, NULL, &id), 0);
    assert_int_equal(fyp_session_request(gw.s, &req, 1, NULL, &id), 0);
    assert_int_equal(fyp_session_request(gw.s, &req, 1, NULL, &id), FY_ELIMIT);
    exchange(&gw, &rn);
    assert_int_equal(count_ev(&rn, FYP_EV_REQUEST), 2);

    /* A gateway that ignores it gets REFUSED_STREAM, and the refused stream
     * counts until the gateway acknowledges. */
    fy_buf in;
    fy_buf_init(&in, 1 << 16);
    b_req(&in, 5, END);
    b_data(&in, 5, END, 0); /* ignored: the stream is reset-sent */
    assert_int_equal(fyp_session_recv(rn.s, in.data, in.len), 0);
    assert_null(find_ev(&rn, FYP_EV_REQUEST, 5));
    assert_int_equal(fyp_session_stream_state(rn.s, 5), FYP_STREAM_RESET_SENT);
    assert_int_equal(fyp_session_stream_count(rn.s), 3);
    ofr_t o[4];
    assert_int_equal(out_frames(rn.s, o, 4), 1);
    assert_int_equal(o[0].type, FYP_FRAME_RST_STREAM);
    assert_int_equal(o[0].id, 5);
    assert_int_equal(o[0].code, FYP_ERR_REFUSED_STREAM);
    drain_output(rn.s);
    in.len = 0;
    b_rst(&in, 5, FYP_FLAG_ACK, FYP_ERR_REFUSED_STREAM);
    assert_int_equal(fyp_session_recv(rn.s, in.data, in.len), 0);
    assert_int_equal(fyp_session_stream_count(rn.s), 2);
    fy_buf_free(&in);
    peer_free(&gw);
    peer_free(&rn);
}

/* ---- Flow control ---- */

static void test_flow_blocked_resumes(void **state)
{
    (void)state;
    /* A sender at window 0 stops, and resumes on WINDOW_UPDATE, which the
     * receiver sends only as the application consumes (half a window at a time). */
    fyp_settings rs;
    fyp_settings_default(&rs);
    rs.initial_stream_window = 1024;
    peer_t gw, rn;
    connect_pair(&gw, &rn, NULL, &rs);
    fyp_request req = {FY_SLICE_STR("POST"), FY_SLICE_STR("/"), {0}, {0}};
    uint32_t id;
    assert_int_equal(fyp_session_request(gw.s, &req, 0, NULL, &id), 0);
    static char body[3000];
    for (size_t i = 0; i < sizeof body; i++) {
        body[i] = (char)i;
    }
    size_t sent = (size_t)fyp_session_send_data(gw.s, id, body, sizeof body, 1);
    assert_int_equal(sent, 1024);
    assert_int_equal(fyp_session_send_window(gw.s, id), 0);
    assert_int_equal(fyp_session_send_data(gw.s, id, body + sent, sizeof body - sent, 1), 0);
    exchange(&gw, &rn);
    assert_int_equal(count_ev(&gw, FYP_EV_WRITABLE), 0);
    /* Consuming less than half a window returns nothing yet. */
    assert_int_equal(fyp_session_consume(rn.s, id, 500), 0);
    exchange(&gw, &rn);
    assert_int_equal(count_ev(&gw, FYP_EV_WRITABLE), 0);
    assert_int_equal(fyp_session_consume(rn.s, id, 100), 0);
    assert_int_equal(fyp_session_consume(rn.s, id, 1000), FY_EINVAL); /* more than delivered */
    exchange(&gw, &rn);
    /* 600 consumed >= 512: WINDOW_UPDATE(600), the gateway may send again. */
    assert_int_equal(count_ev(&gw, FYP_EV_WRITABLE), 1);
    assert_int_equal(fyp_session_send_window(gw.s, id), 600);
    size_t total = 1024, consumed = 600;
    int rounds = 0;
    while (total < sizeof body) {
        ssize_t n = fyp_session_send_data(gw.s, id, body + total, sizeof body - total, 1);
        assert_true(n >= 0);
        total += (size_t)n;
        exchange(&gw, &rn);
        /* The runner consumes everything it has. */
        size_t have = 0;
        for (size_t i = 0; i < rn.nev; i++) {
            if (rn.ev[i].type == FYP_EV_DATA) {
                have += rn.ev[i].len;
            }
        }
        if (have > consumed) {
            assert_int_equal(fyp_session_consume(rn.s, id, have - consumed), 0);
            consumed = have;
        }
        exchange(&gw, &rn);
        assert_true(++rounds < 50);
    }
    assert_true(find_ev(&rn, FYP_EV_DATA, id) != NULL);
    assert_int_equal(fyp_session_stream_state(gw.s, id), FYP_STREAM_HALF_CLOSED_LOCAL);
    peer_free(&gw);
    peer_free(&rn);
}

static void test_flow_connection_window_shared(void **state)
{
    (void)state;
    /* The connection window is shared: one stream can use it all, the next is
     * blocked by it, and credit from the first wakes both. */
    fyp_settings rs;
    fyp_settings_default(&rs);
    rs.connection_window = 8192;
    peer_t gw, rn;
    connect_pair(&gw, &rn, NULL, &rs);
    fyp_request req = {FY_SLICE_STR("POST"), FY_SLICE_STR("/"), {0}, {0}};
    uint32_t a, b;
    assert_int_equal(fyp_session_request(gw.s, &req, 0, NULL, &a), 0);
    assert_int_equal(fyp_session_request(gw.s, &req, 0, NULL, &b), 0);
    static char buf[10000];
    assert_int_equal(fyp_session_send_data(gw.s, a, buf, 10000, 0), 8192);
    assert_int_equal(fyp_session_send_window(gw.s, 0), 0);
    assert_true(fyp_session_send_window(gw.s, b) > 0);
    assert_int_equal(fyp_session_send_data(gw.s, b, buf, 100, 0), 0);
    exchange(&gw, &rn);
    assert_int_equal(fyp_session_consume(rn.s, a, 4096), 0);
    exchange(&gw, &rn);
    assert_non_null(find_ev(&gw, FYP_EV_WRITABLE, a));
    assert_non_null(find_ev(&gw, FYP_EV_WRITABLE, b));
    assert_int_equal(fyp_session_send_window(gw.s, 0), 4096);
    assert_int_equal(fyp_session_send_data(gw.s, b, buf, 100, 0), 100);
    peer_free(&gw);
    peer_free(&rn);
}

static void test_flow_slow_stream_does_not_stall_others(void **state)
{
    (void)state;
    /* A slow public client: the gateway never consumes stream A's response.
     * A stalls at its stream window, and stream B still moves 1 MiB. */
    fyp_settings gs;
    fyp_settings_default(&gs);
    gs.initial_stream_window = 65536;
    gs.connection_window = 262144;
    peer_t gw, rn;
    connect_pair(&gw, &rn, &gs, NULL);
    fyp_request req = {FY_SLICE_STR("GET"), FY_SLICE_STR("/"), {0}, {0}};
    uint32_t a, b;
    assert_int_equal(fyp_session_request(gw.s, &req, 1, NULL, &a), 0);
    assert_int_equal(fyp_session_request(gw.s, &req, 1, NULL, &b), 0);
    exchange(&gw, &rn);
    fyp_response resp = {200, {0}};
    assert_int_equal(fyp_session_respond(rn.s, a, &resp, 0), 0);
    assert_int_equal(fyp_session_respond(rn.s, b, &resp, 0), 0);
    static char buf[1 << 20];
    size_t a_sent = 0, b_sent = 0, b_consumed = 0;
    for (int round = 0; round < 200 && b_sent < sizeof buf; round++) {
        ssize_t n = fyp_session_send_data(rn.s, a, buf, sizeof buf - a_sent, 0);
        assert_true(n >= 0);
        a_sent += (size_t)n;
        n = fyp_session_send_data(rn.s, b, buf, sizeof buf - b_sent, 1);
        assert_true(n >= 0);
        b_sent += (size_t)n;
        exchange(&gw, &rn);
        size_t b_have = 0;
        for (size_t i = 0; i < gw.nev; i++) {
            if (gw.ev[i].type == FYP_EV_DATA && gw.ev[i].id == b) {
                b_have += gw.ev[i].len;
            }
        }
        if (b_have > b_consumed) {
            assert_int_equal(fyp_session_consume(gw.s, b, b_have - b_consumed), 0);
            b_consumed = b_have;
        }
        exchange(&gw, &rn);
    }
    assert_int_equal(b_sent, sizeof buf);
    assert_int_equal(b_consumed, sizeof buf);
    /* A is stuck at exactly one stream window: the gateway buffers no more. */
    assert_int_equal(a_sent, 65536);
    assert_int_equal(fyp_session_send_window(rn.s, a), 0);
    assert_int_equal(fyp_session_send_data(rn.s, a, buf, 1, 0), 0);
    peer_free(&gw);
    peer_free(&rn);
}

/* ---- GOAWAY ---- */

static void test_goaway_drain(void **state)
{
    (void)state;
    peer_t gw, rn;
    connect_pair(&gw, &rn, NULL, NULL);
    gw.auto_consume = rn.auto_consume = 1;
    fyp_request req = {FY_SLICE_STR("POST"), FY_SLICE_STR("/"), {0}, {0}};
    uint32_t ids[3], late;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fyp_session_request(gw.s, &req, 0, NULL, &ids[i]), 0);
    }
    exchange(&gw, &rn);
    /* The runner drains; before the gateway sees it, it opens one more. */
    assert_int_equal(fyp_session_goaway(rn.s, FYP_ERR_NONE, "restarting"), 0);
    assert_false(fyp_session_want_close(rn.s));
    assert_int_equal(fyp_session_request(gw.s, &req, 0, NULL, &late), 0);
    assert_int_equal(fyp_session_send_data(gw.s, late, "body", 4, 1), 4);
    assert_int_equal(pump(&gw, &rn, NULL), 0);
    assert_null(find_ev(&rn, FYP_EV_REQUEST, late)); /* above last id: ignored */
    assert_int_equal(pump(&rn, &gw, NULL), 0);
    const rec_t *g = find_ev(&gw, FYP_EV_GOAWAY, 0);
    assert_non_null(g);
    assert_int_equal(g->len, ids[2]); /* last stream id */
    assert_int_equal(g->code, FYP_ERR_NONE);
    const rec_t *r = find_ev(&gw, FYP_EV_STREAM_RESET, late);
    assert_non_null(r);
    assert_int_equal(r->code, FYP_ERR_REFUSED_STREAM);
    assert_int_equal(fyp_session_stream_count(gw.s), 3);
    assert_int_equal(fyp_session_request(gw.s, &req, 0, NULL, &late), FY_ECLOSED);
    /* Existing streams finish normally. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fyp_session_send_data(gw.s, ids[i], "q", 1, 1), 1);
        fyp_response resp = {200, {0}};
        assert_int_equal(fyp_session_respond(rn.s, ids[i], &resp, 0), 0);
        assert_int_equal(fyp_session_send_data(rn.s, ids[i], "answer", 6, 1), 6);
        exchange(&gw, &rn);
        assert_int_equal(fyp_session_want_close(rn.s), i == 2);
    }
    assert_int_equal(count_ev(&gw, FYP_EV_RESPONSE), 3);
    assert_true(fyp_session_want_close(gw.s));
    assert_true(fyp_session_want_close(rn.s));
    assert_false(fyp_session_dead(gw.s));
    assert_int_equal(fyp_session_recv_eof(gw.s), 0); /* clean close */
    peer_free(&gw);
    peer_free(&rn);
}

static void test_goaway_from_gateway(void **state)
{
    (void)state;
    peer_t gw, rn;
    connect_pair(&gw, &rn, NULL, NULL);
    rn.auto_consume = 1;
    fyp_request req = {FY_SLICE_STR("GET"), FY_SLICE_STR("/"), {0}, {0}};
    uint32_t id;
    assert_int_equal(fyp_session_request(gw.s, &req, 1, NULL, &id), 0);
    assert_int_equal(fyp_session_goaway(gw.s, FYP_ERR_NONE, NULL), 0);
    assert_int_equal(fyp_session_request(gw.s, &req, 1, NULL, &id), FY_ECLOSED);
    exchange(&gw, &rn);
    const rec_t *g = find_ev(&rn, FYP_EV_GOAWAY, 0);
    assert_non_null(g);
    assert_int_equal(g->len, 0);
    assert_false(fyp_session_want_close(rn.s)); /* stream 1 still open */
    fyp_response resp = {200, {0}};
    assert_int_equal(fyp_session_respond(rn.s, id, &resp, 1), 0);
    exchange(&gw, &rn);
    assert_true(fyp_session_want_close(rn.s));
    assert_true(fyp_session_want_close(gw.s));
    peer_free(&gw);
    peer_free(&rn);
}

static void test_goaway_error_resets_all(void **state)
{
    (void)state;
    peer_t gw, rn;
    connect_pair(&gw, &rn, NULL, NULL);
    fyp_request req = {FY_SLICE_STR("GET"), FY_SLICE_STR("/"), {0}, {0}};
    uint32_t id;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fyp_session_request(gw.s, &req, 1, NULL, &id), 0);
    }
    exchange(&gw, &rn);
    assert_int_equal(fyp_session_goaway(rn.s, FYP_ERR_INTERNAL, "engine crashed"), 0);
    assert_string_equal(fyp_session_error_msg(rn.s), "engine crashed");
    assert_int_equal(fyp_session_goaway(rn.s, FYP_ERR_NONE, NULL), FY_ECLOSED);
    assert_int_equal(count_ev(&rn, FYP_EV_STREAM_RESET), 3); /* local, remote = 0 */
    assert_false(rn.ev[rn.nev - 1].remote);
    assert_int_equal(pump(&rn, &gw, NULL), 0);
    assert_int_equal(count_ev(&gw, FYP_EV_STREAM_RESET), 3);
    const rec_t *r = find_ev(&gw, FYP_EV_STREAM_RESET, 5);
    assert_non_null(r);
    assert_int_equal(r->code, FYP_ERR_INTERNAL);
    assert_true(r->remote);
    assert_true(fyp_session_dead(gw.s));
    assert_int_equal(fyp_session_stream_count(gw.s), 0);
    assert_int_equal(fyp_session_ping(gw.s), FY_ECLOSED);
    peer_free(&gw);
    peer_free(&rn);
}

/* ---- Heartbeats, EOF, callbacks ---- */

static void test_ping_rtt(void **state)
{
    (void)state;
    peer_t gw, rn;
    connect_pair(&gw, &rn, NULL, NULL);
    fake_now = 5000000;
    assert_int_equal(fyp_session_ping(gw.s), 0);
    assert_int_equal(pump(&gw, &rn, NULL), 0); /* the runner answers PONG */
    fake_now += 1234;
    assert_int_equal(pump(&rn, &gw, NULL), 0);
    const rec_t *r = find_ev(&gw, FYP_EV_PING_RTT, 0);
    assert_non_null(r);
    assert_int_equal(r->rtt, 1234);
    /* An unmatched PONG is ignored. */
    fy_buf in;
    fy_buf_init(&in, 64);
    b_ping(&in, 1, 0xabcdef);
    assert_int_equal(fyp_session_recv(gw.s, in.data, in.len), 0);
    assert_int_equal(count_ev(&gw, FYP_EV_PING_RTT), 1);
    fy_buf_free(&in);
    peer_free(&gw);
    peer_free(&rn);
}

static void test_heartbeat_timeout(void **state)
{
    (void)state;
    fake_now = 10000000;
    peer_t gw, rn;
    connect_pair(&gw, &rn, NULL, NULL);
    fyp_request req = {FY_SLICE_STR("GET"), FY_SLICE_STR("/"), {0}, {0}};
    uint32_t id;
    assert_int_equal(fyp_session_request(gw.s, &req, 1, NULL, &id), 0);
    exchange(&gw, &rn);
    uint64_t hb = (uint64_t)fyp_session_heartbeat_ms(gw.s) * 1000;
    assert_int_equal(hb, FYP_DEFAULT_HEARTBEAT_MS * 1000);
    assert_int_equal(fyp_session_tick(gw.s), 0);
    assert_int_equal(fyp_session_output_size(gw.s), 0);
    /* One interval: a PING; the live runner answers and keeps it alive. */
    fake_now += hb;
    assert_int_equal(fyp_session_tick(gw.s), 0);
    ofr_t o[4];
    assert_int_equal(out_frames(gw.s, o, 4), 1);
    assert_int_equal(o[0].type, FYP_FRAME_PING);
    exchange(&gw, &rn);
    assert_int_equal(count_ev(&gw, FYP_EV_PING_RTT), 1);
    fake_now += 2 * hb;
    assert_int_equal(fyp_session_tick(gw.s), 0);
    drain_output(gw.s);
    /* The runner has been silent since the PONG: dead after 3 intervals. */
    fake_now += hb - 1;
    assert_int_equal(fyp_session_tick(gw.s), 0);
    fake_now += 1;
    assert_int_equal(fyp_session_tick(gw.s), FY_ETIMEDOUT);
    assert_true(fyp_session_dead(gw.s));
    assert_int_equal(fyp_session_error_code(gw.s), FYP_ERR_TIMEOUT);
    const rec_t *r = find_ev(&gw, FYP_EV_STREAM_RESET, id);
    assert_non_null(r);
    assert_int_equal(r->code, FYP_ERR_TIMEOUT);
    assert_false(r->remote);
    size_t n = out_frames(gw.s, o, 4);
    assert_int_equal(o[n - 1].type, FYP_FRAME_GOAWAY);
    assert_int_equal(o[n - 1].code, FYP_ERR_TIMEOUT);
    assert_int_equal(fyp_session_tick(gw.s), FY_ECLOSED);
    peer_free(&gw);
    peer_free(&rn);

    /* A handshake that never completes times out too. */
    peer_t lone;
    peer_init(&lone, G, NULL);
    fake_now += (uint64_t)FYP_HELLO_TIMEOUT_MS * 1000 - 1;
    assert_int_equal(fyp_session_tick(lone.s), 0);
    fake_now += 1;
    assert_int_equal(fyp_session_tick(lone.s), FY_ETIMEDOUT);
    peer_free(&lone);
}

static void test_recv_eof(void **state)
{
    (void)state;
    peer_t gw, rn;
    connect_pair(&gw, &rn, NULL, NULL);
    fyp_request req = {FY_SLICE_STR("GET"), FY_SLICE_STR("/"), {0}, {0}};
    uint32_t id;
    assert_int_equal(fyp_session_request(gw.s, &req, 1, NULL, &id), 0);
    exchange(&gw, &rn);
    /* The runner's connection drops with a stream open. */
    assert_int_equal(fyp_session_recv_eof(rn.s), FY_EEOF);
    const rec_t *r = find_ev(&rn, FYP_EV_STREAM_RESET, id);
    assert_non_null(r);
    assert_true(r->remote);
    assert_int_equal(fyp_session_recv_eof(rn.s), FY_ECLOSED);
    peer_free(&gw);
    peer_free(&rn);
}

static void test_free_inside_callback(void **state)
{
    (void)state;
    /* Freeing the session from inside its own callback is deferred until the
     * outermost call returns (ASan checks there is no use after free). */
    peer_t gw, rn;
    connect_pair(&gw, &rn, NULL, NULL);
    fyp_request req = {FY_SLICE_STR("GET"), FY_SLICE_STR("/"), {0}, {0}};
    uint32_t id;
    assert_int_equal(fyp_session_request(gw.s, &req, 1, NULL, &id), 0);
    assert_int_equal(fyp_session_request(gw.s, &req, 1, NULL, &id), 0);
    exchange(&gw, &rn);
    fyp_response resp = {200, {0}};
    assert_int_equal(fyp_session_respond(rn.s, 1, &resp, 1), 0);
    assert_int_equal(fyp_session_respond(rn.s, 3, &resp, 1), 0);
    gw.free_on = FYP_EV_RESPONSE;
    fy_slice out;
    fyp_session_output(rn.s, &out);
    assert_int_equal(fyp_session_recv(gw.s, out.base, out.len), FY_ECLOSED);
    assert_null(gw.s);
    assert_int_equal(count_ev(&gw, FYP_EV_RESPONSE), 1);

    /* And from a reset event emitted while the session dies. */
    peer_t g2;
    peer_init(&g2, G, NULL);
    g2.free_on = FYP_EV_STREAM_RESET;
    fy_buf in;
    fy_buf_init(&in, 1 << 16);
    b_hello(&in, 1, 1);
    assert_int_equal(fyp_session_recv(g2.s, in.data, in.len), 0);
    assert_int_equal(fyp_session_request(g2.s, &req, 1, NULL, &id), 0);
    assert_int_equal(fyp_session_request(g2.s, &req, 1, NULL, &id), 0);
    in.len = 0;
    b_goaway(&in, 0, FYP_ERR_INTERNAL);
    assert_int_equal(fyp_session_recv(g2.s, in.data, in.len), FY_ECLOSED);
    assert_null(g2.s);
    fy_buf_free(&in);
    peer_free(&g2);
    peer_free(&gw);
    peer_free(&rn);
}

static void test_memory_per_stream(void **state)
{
    (void)state;
    /* The gateway holds 10,000 idle streams: well under 1 KiB each. */
    fyp_settings rs;
    fyp_settings_default(&rs);
    rs.max_concurrent_streams = 10000;
    peer_t gw, rn;
    connect_pair(&gw, &rn, NULL, &rs);
    drain_output(gw.s);
    size_t base = fyp_session_memory(gw.s);
    fyp_request req = {FY_SLICE_STR("GET"), FY_SLICE_STR("/"), {0}, {0}};
    for (uint32_t i = 0; i < 10000; i++) {
        uint32_t id;
        assert_int_equal(fyp_session_request(gw.s, &req, 1, NULL, &id), 0);
        fyp_session_output_consume(gw.s, fyp_session_output_size(gw.s));
    }
    uint32_t over;
    assert_int_equal(fyp_session_request(gw.s, &req, 1, NULL, &over), FY_ELIMIT);
    size_t per = (fyp_session_memory(gw.s) - base) / 10000;
    print_message("proto state per idle stream: %zu bytes\n", per);
    assert_true(per < 256);
    /* Every stream is found by id (hash table, not a list). */
    for (uint32_t id = 1; id < 20000; id += 2) {
        assert_int_equal(fyp_session_stream_state(gw.s, id), FYP_STREAM_HALF_CLOSED_LOCAL);
    }
    /* Resetting them all and taking the ACKs frees the memory again. */
    for (uint32_t id = 1; id < 20000; id += 2) {
        assert_int_equal(fyp_session_reset(gw.s, id, FYP_ERR_CANCEL), 0);
    }
    fy_buf in;
    fy_buf_init(&in, 1 << 20);
    for (uint32_t id = 1; id < 20000; id += 2) {
        b_rst(&in, id, FYP_FLAG_ACK, FYP_ERR_CANCEL);
    }
    assert_int_equal(fyp_session_recv(gw.s, in.data, in.len), 0);
    assert_int_equal(fyp_session_stream_count(gw.s), 0);
    drain_output(gw.s);
    /* The table shrank back: what remains is the output buffer's capacity. */
    assert_true(fyp_session_memory(gw.s) < base + 16 * 1024 + (1 << 18));
    fy_buf_free(&in);
    peer_free(&gw);
    peer_free(&rn);
}

/* ---- Back to back: 1,000 concurrent streams with data ---- */

#define NSTREAMS 1000

static uint32_t fnv(uint32_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 16777619u;
    }
    return h;
}

static uint8_t body_byte(size_t i, size_t k)
{
    return (uint8_t)(i * 31 + k * 7 + (k >> 9));
}

static uint8_t resp_byte(uint32_t sum, size_t k)
{
    return (uint8_t)(sum + k * 13 + (k >> 7));
}

typedef struct {
    /* gateway side */
    uint32_t id;
    size_t body_len, body_sent;
    int g_blocked, g_done;
    uint32_t g_resp_sum;
    size_t g_resp_len, g_owed;
    int g_status, g_trailers, g_end;
    uint32_t g_sum_header;
    /* runner side */
    uint32_t r_sum;
    size_t r_len, r_owed;
    int r_have_end, r_responded, r_blocked, r_done;
    size_t r_resp_len, r_resp_sent;
} b2b_t;

static b2b_t *b2b;

static b2b_t *b2b_of(uint32_t id)
{
    assert_true(id % 2 == 1 && id < 2 * NSTREAMS);
    return &b2b[id / 2];
}

static void gw_hook(peer_t *p, fyp_session *s, const fyp_event *ev)
{
    (void)p, (void)s;
    b2b_t *b = ev->stream_id ? b2b_of(ev->stream_id) : NULL;
    /* The stream pointer given at request time comes back in every event. */
    if (b) {
        assert_ptr_equal(ev->stream_data, b);
    }
    switch (ev->type) {
    case FYP_EV_RESPONSE: {
        b->g_status = ev->u.response->status;
        const fyp_field *f = fyp_fields_get(&ev->u.response->headers, "x-body-fnv");
        assert_non_null(f);
        char tmp[16] = "";
        memcpy(tmp, f->value.base, f->value.len < 15 ? f->value.len : 15);
        b->g_sum_header = (uint32_t)strtoul(tmp, NULL, 16);
        b->g_end |= ev->end_stream;
        break;
    }
    case FYP_EV_DATA:
        b->g_resp_sum = fnv(b->g_resp_sum, ev->u.data.base, ev->u.data.len);
        b->g_resp_len += ev->u.data.len;
        b->g_owed += ev->u.data.len;
        b->g_end |= ev->end_stream;
        break;
    case FYP_EV_TRAILERS:
        b->g_trailers = 1;
        b->g_end = 1;
        assert_true(ev->u.trailers->has_usage);
        assert_int_equal(ev->u.trailers->prompt_tokens, b->body_len);
        assert_int_equal(ev->u.trailers->completion_tokens, b->g_resp_len);
        break;
    case FYP_EV_WRITABLE:
        b->g_blocked = 0;
        break;
    case FYP_EV_STREAM_RESET:
    case FYP_EV_GOAWAY:
        fail_msg("unexpected event %d on stream %u", ev->type, ev->stream_id);
        break;
    default:
        break;
    }
}

static void rn_hook(peer_t *p, fyp_session *s, const fyp_event *ev)
{
    (void)p;
    b2b_t *b = ev->stream_id ? b2b_of(ev->stream_id) : NULL;
    switch (ev->type) {
    case FYP_EV_REQUEST:
        assert_int_equal(fyp_session_set_stream_data(s, ev->stream_id, b), 0);
        b->r_sum = 2166136261u;
        b->r_have_end = ev->end_stream;
        break;
    case FYP_EV_DATA:
        assert_ptr_equal(ev->stream_data, b);
        b->r_sum = fnv(b->r_sum, ev->u.data.base, ev->u.data.len);
        b->r_len += ev->u.data.len;
        b->r_owed += ev->u.data.len;
        b->r_have_end |= ev->end_stream;
        break;
    case FYP_EV_WRITABLE:
        b->r_blocked = 0;
        break;
    case FYP_EV_STREAM_RESET:
    case FYP_EV_GOAWAY:
        fail_msg("unexpected event %d on stream %u", ev->type, ev->stream_id);
        break;
    default:
        break;
    }
}

static void test_back_to_back_1000_streams(void **state)
{
    (void)state;
    b2b = calloc(NSTREAMS, sizeof *b2b);
    assert_non_null(b2b);
    /* Small windows so every stream blocks and resumes many times, and the
     * connection window (shared by 1,000 streams) is the tightest limit. */
    fyp_settings gs, rs;
    fyp_settings_default(&gs);
    fyp_settings_default(&rs);
    gs.initial_stream_window = rs.initial_stream_window = 16384;
    gs.connection_window = rs.connection_window = 262144;
    rs.max_concurrent_streams = NSTREAMS;
    peer_t gw, rn;
    connect_pair(&gw, &rn, &gs, &rs);
    gw.hook = gw_hook;
    rn.hook = rn_hook;

    static uint8_t scratch[1 << 17];
    for (size_t i = 0; i < NSTREAMS; i++) {
        b2b_t *b = &b2b[i];
        b->body_len = (i * 7919) % 70001;
        b->g_resp_sum = 2166136261u;
        fyp_field meta = {FY_SLICE_STR("request-id"), FY_SLICE_STR("r")};
        fyp_request req = {FY_SLICE_STR("POST"), FY_SLICE_STR("/v1/completions"), {&meta, 1}, {0}};
        assert_int_equal(fyp_session_request(gw.s, &req, b->body_len == 0, b, &b->id), 0);
        assert_int_equal(b->id, 2 * i + 1);
    }
    assert_int_equal(fyp_session_stream_count(gw.s), NSTREAMS);
    uint32_t rng = 42;
    size_t iters;
    for (iters = 0; iters < 20000; iters++) {
        size_t done = 0;
        for (size_t i = 0; i < NSTREAMS; i++) {
            b2b_t *b = &b2b[i];
            /* Gateway: push request bodies as windows allow. */
            if (b->body_sent < b->body_len && !b->g_blocked) {
                size_t want = b->body_len - b->body_sent;
                want = want < sizeof scratch ? want : sizeof scratch;
                for (size_t k = 0; k < want; k++) {
                    scratch[k] = body_byte(i, b->body_sent + k);
                }
                ssize_t n = fyp_session_send_data(gw.s, b->id, scratch, want,
                                                  b->body_sent + want == b->body_len);
                assert_true(n >= 0);
                b->body_sent += (size_t)n;
                if ((size_t)n < want) {
                    b->g_blocked = 1; /* wait for FYP_EV_WRITABLE */
                }
            }
            /* Runner: once the body is in, answer with a body of its own. */
            if (b->r_have_end && !b->r_responded) {
                char sum[16];
                snprintf(sum, sizeof sum, "%08x", b->r_sum);
                fyp_field h = {FY_SLICE_STR("x-body-fnv"), FY_SLICE(sum, 8)};
                fyp_response resp = {200, {&h, 1}};
                b->r_resp_len = (b->r_len / 2 + i % 1000) * (i % 7 != 3);
                assert_int_equal(fyp_session_respond(rn.s, b->id, &resp, b->r_resp_len == 0), 0);
                b->r_responded = 1;
                b->r_done = b->r_resp_len == 0;
            }
            if (b->r_responded && !b->r_done && !b->r_blocked) {
                size_t want = b->r_resp_len - b->r_resp_sent;
                want = want < sizeof scratch ? want : sizeof scratch;
                for (size_t k = 0; k < want; k++) {
                    scratch[k] = resp_byte(b->r_sum, b->r_resp_sent + k);
                }
                int use_trailers = i % 2;
                int last = b->r_resp_sent + want == b->r_resp_len;
                ssize_t n =
                    fyp_session_send_data(rn.s, b->id, scratch, want, last && !use_trailers);
                assert_true(n >= 0);
                b->r_resp_sent += (size_t)n;
                if ((size_t)n < want) {
                    b->r_blocked = 1;
                } else if (last) {
                    if (use_trailers) {
                        fyp_trailers tr = {1, (uint32_t)b->r_len, (uint32_t)b->r_resp_len, {0}};
                        assert_int_equal(fyp_session_send_trailers(rn.s, b->id, &tr), 0);
                    }
                    b->r_done = 1;
                }
            }
            /* Consumers: some streams are slow readers (a third of rounds). */
            if ((i + iters) % 3 != 0 || i % 5 != 0) {
                if (b->g_owed) {
                    assert_int_equal(fyp_session_consume(gw.s, b->id, b->g_owed), 0);
                    b->g_owed = 0;
                }
                if (b->r_owed) {
                    assert_int_equal(fyp_session_consume(rn.s, b->id, b->r_owed), 0);
                    b->r_owed = 0;
                }
            }
            b->g_done = b->g_end && b->g_owed == 0;
            done += b->g_done && b->r_done;
        }
        assert_int_equal(pump(&gw, &rn, &rng), 0);
        assert_int_equal(pump(&rn, &gw, &rng), 0);
        if (done == NSTREAMS && !fyp_session_output_size(gw.s) && !fyp_session_output_size(rn.s)) {
            break;
        }
    }
    print_message("1000 streams done in %zu rounds\n", iters);
    assert_true(iters < 20000);
    for (size_t i = 0; i < NSTREAMS; i++) {
        b2b_t *b = &b2b[i];
        uint32_t body_sum = 2166136261u;
        for (size_t k = 0; k < b->body_len; k++) {
            uint8_t c = body_byte(i, k);
            body_sum = fnv(body_sum, &c, 1);
        }
        uint32_t resp_sum = 2166136261u;
        for (size_t k = 0; k < b->r_resp_len; k++) {
            uint8_t c = resp_byte(body_sum, k);
            resp_sum = fnv(resp_sum, &c, 1);
        }
        assert_int_equal(b->r_len, b->body_len);
        assert_int_equal(b->r_sum, body_sum);
        assert_int_equal(b->g_status, 200);
        assert_int_equal(b->g_sum_header, body_sum);
        assert_int_equal(b->g_resp_len, b->r_resp_len);
        assert_int_equal(b->g_resp_sum, resp_sum);
        assert_int_equal(b->g_trailers, b->r_resp_len > 0 && i % 2);
    }
    /* Everything is closed and freed; windows are whole again. */
    assert_int_equal(fyp_session_stream_count(gw.s), 0);
    assert_int_equal(fyp_session_stream_count(rn.s), 0);
    assert_false(fyp_session_dead(gw.s));
    assert_false(fyp_session_dead(rn.s));
    assert_false(fyp_session_want_close(gw.s));
    free(b2b);
    b2b = NULL;
    peer_free(&gw);
    peer_free(&rn);
}

static void test_header_limits_and_zombies(void **state)
{
    (void)state;
    /* Header blocks above the peer's limit are refused before anything is
     * queued; a finished stream with unconsumed data stays until consumed or
     * reset. */
    fyp_settings small;
    fyp_settings_default(&small);
    small.max_header_block = 1024;
    peer_t gw, rn;
    connect_pair(&gw, &rn, &small, &small);
    static char big[1100];
    memset(big, 'v', sizeof big);
    fyp_field h = {FY_SLICE_STR("x-big"), FY_SLICE(big, sizeof big)};
    fyp_request big_req = {FY_SLICE_STR("GET"), FY_SLICE_STR("/"), {0}, {&h, 1}};
    uint32_t id;
    assert_int_equal(fyp_session_request(gw.s, &big_req, 1, NULL, &id), FY_ETOOBIG);
    assert_int_equal(fyp_session_output_size(gw.s), 0);
    assert_int_equal(fyp_session_stream_count(gw.s), 0);
    fyp_request req = {FY_SLICE_STR("GET"), FY_SLICE_STR("/"), {0}, {0}};
    assert_int_equal(fyp_session_request(gw.s, &req, 1, NULL, &id), 0);
    assert_int_equal(id, 1); /* the refused request used no id */
    uint32_t id2;
    assert_int_equal(fyp_session_request(gw.s, &req, 1, NULL, &id2), 0);
    exchange(&gw, &rn);
    fyp_response big_resp = {200, {&h, 1}};
    assert_int_equal(fyp_session_respond(rn.s, id, &big_resp, 1), FY_ETOOBIG);
    fyp_response resp = {200, {0}};
    assert_int_equal(fyp_session_respond(rn.s, id, &resp, 0), 0);
    fyp_trailers big_tr = {0, 0, 0, {&h, 1}};
    assert_int_equal(fyp_session_send_trailers(rn.s, id, &big_tr), FY_ETOOBIG);
    assert_int_equal(fyp_session_send_data(rn.s, id, "abc", 3, 1), 3);
    assert_int_equal(fyp_session_respond(rn.s, id2, &resp, 0), 0);
    assert_int_equal(fyp_session_send_data(rn.s, id2, "xyz", 3, 1), 3);
    exchange(&gw, &rn);
    /* Both finished on the wire, but the gateway still holds their bytes. */
    assert_int_equal(fyp_session_stream_count(gw.s), 0);
    assert_int_equal(fyp_session_stream_state(gw.s, id), FYP_STREAM_CLOSED);
    assert_int_equal(fyp_session_consume(gw.s, id, 2), 0);
    assert_int_equal(fyp_session_consume(gw.s, id, 1), 0); /* last byte: freed */
    assert_int_equal(fyp_session_consume(gw.s, id, 1), FY_ENOENT);
    assert_int_equal(fyp_session_reset(gw.s, id2, FYP_ERR_CANCEL), 0); /* drops, no frame */
    assert_int_equal(fyp_session_output_size(gw.s), 0);
    assert_int_equal(fyp_session_consume(gw.s, id2, 1), FY_ENOENT);
    assert_string_equal(fyp_stream_state_name(FYP_STREAM_RESET_SENT), "reset-sent");
    assert_string_equal(fyp_stream_state_name((fyp_stream_state)42), "unknown");
    assert_int_equal(fyp_session_set_stream_data(gw.s, 99, NULL), FY_ENOENT);
    assert_int_equal(fyp_session_send_window(gw.s, 99), -1);
    peer_free(&gw);
    peer_free(&rn);
}

static void test_stream_table_stress(void **state)
{
    (void)state;
    /* Random id gaps make hash collisions, growth, shrinking and
     * backward-shift deletion happen; every live stream must stay findable. */
    fyp_settings rs;
    fyp_settings_default(&rs);
    rs.max_concurrent_streams = 100000;
    peer_t rn;
    peer_init(&rn, R, &rs);
    fy_buf in;
    fy_buf_init(&in, 1 << 20);
    b_ack(&in, 1);
    assert_int_equal(fyp_session_recv(rn.s, in.data, in.len), 0);
    enum { MAXLIVE = 3000 };
    static uint32_t live[MAXLIVE];
    size_t nlive = 0;
    uint32_t next = 1, rng = 7;
    for (int op = 0; op < 40000; op++) {
        in.len = 0;
        int grow = (op / 5000) % 2 == 0; /* phases of growth and of shrinking */
        if (nlive == 0 || (nlive < MAXLIVE && xorshift(&rng) % 100 < (grow ? 75u : 25u))) {
            next += 2 * (1 + xorshift(&rng) % 5000);
            b_req(&in, next, 0);
            assert_int_equal(fyp_session_recv(rn.s, in.data, in.len), 0);
            assert_int_equal(fyp_session_set_stream_data(rn.s, next, (void *)(uintptr_t)(next * 3)),
                             0);
            live[nlive++] = next;
        } else {
            size_t k = xorshift(&rng) % nlive;
            b_rst(&in, live[k], 0, FYP_ERR_CANCEL);
            assert_int_equal(fyp_session_recv(rn.s, in.data, in.len), 0);
            assert_int_equal(fyp_session_stream_state(rn.s, live[k]), FYP_STREAM_CLOSED);
            live[k] = live[--nlive];
        }
        drain_output(rn.s);
        if (op % 997 == 0) {
            for (size_t i = 0; i < nlive; i++) {
                assert_ptr_equal(fyp_session_stream_data(rn.s, live[i]),
                                 (void *)(uintptr_t)(live[i] * 3));
            }
            assert_int_equal(fyp_session_stream_count(rn.s), nlive);
        }
    }
    for (size_t i = 0; i < nlive; i++) {
        assert_int_equal(fyp_session_stream_state(rn.s, live[i]), FYP_STREAM_OPEN);
    }
    fy_buf_free(&in);
    peer_free(&rn);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malformed_session_input),
        cmocka_unit_test(test_handshake),
        cmocka_unit_test(test_hello_models_and_reject),
        cmocka_unit_test(test_version_range),
        cmocka_unit_test(test_request_response_trailers),
        cmocka_unit_test(test_data_on_closed_stream),
        cmocka_unit_test(test_unknown_frames_ignored),
        cmocka_unit_test(test_reset_and_ack),
        cmocka_unit_test(test_refused_when_full),
        cmocka_unit_test(test_flow_blocked_resumes),
        cmocka_unit_test(test_flow_connection_window_shared),
        cmocka_unit_test(test_flow_slow_stream_does_not_stall_others),
        cmocka_unit_test(test_goaway_drain),
        cmocka_unit_test(test_goaway_from_gateway),
        cmocka_unit_test(test_goaway_error_resets_all),
        cmocka_unit_test(test_ping_rtt),
        cmocka_unit_test(test_heartbeat_timeout),
        cmocka_unit_test(test_recv_eof),
        cmocka_unit_test(test_free_inside_callback),
        cmocka_unit_test(test_memory_per_stream),
        cmocka_unit_test(test_header_limits_and_zombies),
        cmocka_unit_test(test_stream_table_stress),
        cmocka_unit_test(test_back_to_back_1000_streams),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
