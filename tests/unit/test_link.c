/* test_link.c: common/link between a gateway session and a runner session
 * over the in-memory stream pair: the handshake and a stream both ways, a
 * body larger than every window and write cap arriving whole and in order,
 * a drain, a close with a code, and a peer that vanishes with a stream open.
 * Each case runs until both links are freed (ASan proves once, and that
 * the sessions go with them). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/link/link.h"
#include "common/log.h"

#include <stdlib.h>
#include <string.h>

#define BIG (3 * 1024 * 1024 + 123) /* > FY_LINK_WRITE_CAP, the windows, the read pause */

typedef struct side {
    fy_link *l;
    int hello, goaways, resets, responses, freed, ended;
    uint32_t goaway_code;
    fy_link_end end;
    char end_msg[128];
    uint32_t req_id; /* runner: the stream it got */
    size_t got;      /* body bytes received */
    uint32_t sum;    /* over the body bytes, in order */
    int got_end;
    int reply;     /* runner: answer a request at once */
    int patterned; /* the body is pattern(0..): check every byte */
} side;

typedef struct {
    uv_loop_t loop;
    side gw, rn;
} fixture;

static uint8_t pattern(size_t i)
{
    return (uint8_t)(i * 31u + (i >> 12));
}

static void body_take(side *sd, fyp_session *s, const fyp_event *ev)
{
    const uint8_t *p = (const uint8_t *)ev->u.data.base;
    for (size_t i = 0; i < ev->u.data.len; i++) {
        if (sd->patterned) {
            assert_int_equal(p[i], pattern(sd->got + i));
        }
        sd->sum = sd->sum * 33u + p[i];
    }
    sd->got += ev->u.data.len;
    sd->got_end |= ev->end_stream;
    if (ev->u.data.len) {
        fyp_session_consume(s, ev->stream_id, ev->u.data.len);
    }
}

static void on_event(fy_link *l, const fyp_event *ev)
{
    side *sd = fy_link_data(l);
    fyp_session *s = fy_link_session(l);
    switch (ev->type) {
    case FYP_EV_HELLO:
        sd->hello++;
        break;
    case FYP_EV_REQUEST:
        sd->req_id = ev->stream_id;
        if (sd->reply) {
            fyp_response r = {.status = 200};
            assert_int_equal(fyp_session_respond(s, ev->stream_id, &r, 0), 0);
            assert_int_equal(fyp_session_send_data(s, ev->stream_id, "pong", 4, 1), 4);
        }
        break;
    case FYP_EV_RESPONSE:
        sd->responses++;
        break;
    case FYP_EV_DATA:
        body_take(sd, s, ev);
        break;
    case FYP_EV_STREAM_RESET:
        sd->resets++;
        break;
    case FYP_EV_GOAWAY:
        sd->goaways++;
        sd->goaway_code = ev->u.goaway->error_code;
        break;
    default:
        break;
    }
}

static void on_end(fy_link *l, const fy_link_end *end)
{
    side *sd = fy_link_data(l);
    assert_int_equal(sd->ended, 0); /* once */
    sd->ended = 1;
    sd->end = *end;
    snprintf(sd->end_msg, sizeof sd->end_msg, "%s", end->msg);
    sd->end.msg = sd->end_msg;
}

static void on_free(fy_link *l)
{
    side *sd = fy_link_data(l);
    assert_int_equal(sd->ended, 1);
    sd->freed++;
    sd->l = NULL;
}

static const fy_link_ops ops = {.on_event = on_event, .on_end = on_end, .on_free = on_free};

/* Runs the loop until COND holds, failing after many turns (the links' tick
 * timers keep the loop alive, so a turn always comes). */
#define RUN_UNTIL(fx, cond)                   \
    do {                                      \
        int turns_ = 0;                       \
        while (!(cond)) {                     \
            assert_true(++turns_ < 200000);   \
            uv_run(&(fx)->loop, UV_RUN_ONCE); \
        }                                     \
    } while (0)

static void start(fixture *fx, side *sd, fy_stream *s, fyp_role role)
{
    fy_link_config c = {.loop = &fx->loop, .stream = s, .ops = &ops, .data = sd, .linger_ms = 5000};
    c.session.role = role;
    c.session.name = role == FYP_ROLE_RUNNER ? "r1" : "gw";
    fyp_settings_default(&c.session.settings);
    c.session.settings.heartbeat_ms = 1000;
    assert_int_equal(fy_link_start(&c, &sd->l), 0);
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    assert_int_equal(uv_loop_init(&fx->loop), 0);
    fy_stream *a, *b;
    assert_int_equal(fy_stream_pair_new(&fx->loop, &a, &b), 0);
    start(fx, &fx->gw, a, FYP_ROLE_GATEWAY);
    start(fx, &fx->rn, b, FYP_ROLE_RUNNER);
    RUN_UNTIL(fx, fx->gw.hello && fx->rn.hello);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    /* Whatever the case left open ends here; every handle closes. */
    fy_link_abort(fx->gw.l, "test over");
    fy_link_abort(fx->rn.l, "test over");
    RUN_UNTIL(fx, fx->gw.freed && fx->rn.freed);
    assert_int_equal(fx->gw.freed, 1);
    assert_int_equal(fx->rn.freed, 1);
    assert_int_equal(uv_run(&fx->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&fx->loop), 0);
    free(fx);
    return 0;
}

static uint32_t open_stream(fixture *fx, int end)
{
    fyp_request req = {.method = FY_SLICE_STR("POST"), .target = FY_SLICE_STR("/x")};
    uint32_t id = 0;
    assert_int_equal(fyp_session_request(fy_link_session(fx->gw.l), &req, end, NULL, &id), 0);
    fy_link_kick(fx->gw.l);
    return id;
}

static void test_roundtrip_then_drain(void **state)
{
    fixture *fx = *state;
    fx->rn.reply = 1;
    open_stream(fx, 1);
    RUN_UNTIL(fx, fx->gw.got_end);
    assert_int_equal(fx->gw.responses, 1);
    assert_int_equal(fx->gw.got, 4);
    /* The gateway drains: GOAWAY NO_ERROR, and with no stream left the
     * session is done; the gateway's link finishes and the runner's sees it. */
    fy_link_goaway(fx->gw.l, "draining");
    RUN_UNTIL(fx, fx->gw.freed && fx->rn.ended);
    assert_int_equal(fx->rn.goaways, 1);
    assert_int_equal(fx->rn.goaway_code, FYP_ERR_NONE);
    assert_int_equal(fx->gw.end.reason, FY_LINK_FINISHED);
    assert_int_equal(fx->gw.resets + fx->rn.resets, 0);
}

static void test_big_body_in_order(void **state)
{
    fixture *fx = *state;
    fx->rn.patterned = 1;
    uint32_t id = open_stream(fx, 0);
    uint8_t *body = malloc(BIG);
    assert_non_null(body);
    uint32_t sum = 0;
    for (size_t i = 0; i < BIG; i++) {
        body[i] = pattern(i);
        sum = sum * 33u + body[i];
    }
    size_t off = 0;
    fyp_session *s = fy_link_session(fx->gw.l);
    while (off < BIG) {
        /* The stream window takes what it can; the rest after the runner
         * consumed (the loop turns in between). */
        ssize_t n = fyp_session_send_data(s, id, body + off, BIG - off, 1);
        assert_true(n >= 0);
        off += (size_t)n;
        fy_link_kick(fx->gw.l);
        if (off < BIG) {
            size_t had = fx->rn.got;
            RUN_UNTIL(fx, fx->rn.got > had && fyp_session_send_window(s, id) > 0);
        }
    }
    RUN_UNTIL(fx, fx->rn.got_end);
    assert_int_equal(fx->rn.got, BIG);
    assert_int_equal(fx->rn.sum, sum);
    free(body);
}

static void test_close_with_code(void **state)
{
    fixture *fx = *state;
    open_stream(fx, 0);
    RUN_UNTIL(fx, fx->rn.req_id != 0);
    fy_link_close(fx->gw.l, FYP_ERR_REJECTED, "runner is revoked");
    assert_int_equal(fx->gw.ended, 1);
    assert_int_equal(fx->gw.end.reason, FY_LINK_LOCAL);
    assert_string_equal(fx->gw.end_msg, "runner is revoked");
    assert_int_equal(fx->gw.resets, 1); /* its stream went with the session */
    /* Closing again is a no-op. */
    fy_link_close(fx->gw.l, FYP_ERR_INTERNAL, "again");
    RUN_UNTIL(fx, fx->rn.ended && fx->gw.freed);
    assert_int_equal(fx->rn.goaway_code, FYP_ERR_REJECTED);
    assert_int_equal(fx->rn.resets, 1);
}

static void test_peer_vanishes(void **state)
{
    fixture *fx = *state;
    open_stream(fx, 0);
    RUN_UNTIL(fx, fx->rn.req_id != 0);
    fy_link_abort(fx->rn.l, "gone");
    RUN_UNTIL(fx, fx->gw.ended);
    assert_int_equal(fx->gw.end.reason, FY_LINK_PEER_CLOSED);
    assert_int_equal(fx->gw.resets, 1);
    RUN_UNTIL(fx, fx->gw.freed && fx->rn.freed);
}

int main(void)
{
    fy_log_setup(FY_LOG_ERROR, FY_LOG_TEXT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip_then_drain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_big_body_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_with_code, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_vanishes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
