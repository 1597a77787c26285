/* tstream.h: a tunnel stream the gateway opened to a runner, the one core
 * every kind of proxied work sits on: public requests (px.c) and queued
 * webhook deliveries (hookq.c).
 *
 * The owner embeds a gw_ts and gives it an ops table; the session's stream
 * data is the gw_ts, so tunnel.c hands each stream event to
 * ts->ops->on_event without knowing whose stream it is. The core sends the
 * request body under the session's flow control, keeping what the windows
 * do not take (borrowed or owned, see gw_ts_send) until FYP_EV_WRITABLE,
 * returns response credit, and detaches: the connection's stream count
 * drops and the tunnel tells its subscribers a stream slot was freed.
 *
 * Calls go one way: owners call the core, the core calls tunnel.c
 * (fy_gw_conn_kick, fy_gw_tunnel_publish), tunnel.c calls owners only
 * through the ops table. Single threaded, like the whole gateway. */
#ifndef FY_GATEWAY_TSTREAM_H
#define FY_GATEWAY_TSTREAM_H

#include "gateway/gateway.h"

typedef struct gw_ts gw_ts;

typedef struct {
    /* A session event about the stream (RESPONSE, DATA, TRAILERS, WRITABLE,
     * STREAM_RESET). Only events of the stream TS is attached to arrive
     * (its connection and id); on STREAM_RESET the session has already
     * forgotten the stream, so the owner detaches with gw_ts_detach(ts, 0). */
    void (*on_event)(gw_ts *ts, const fyp_event *ev);
} gw_ts_ops;

struct gw_ts {
    const gw_ts_ops *ops;
    fy_gw *gw;
    gw_conn *conn; /* NULL when not attached */
    uint32_t id;
    /* Body bytes the windows did not take yet: PEND[OFF..LEN). */
    const char *pend;
    size_t pend_len, pend_off;
    unsigned pend_owned : 1; /* PEND is malloc'd by the core (freed by it) */
    unsigned end_sent : 1;   /* END_STREAM went to the runner */
};

/* Sets up TS (zeroed) for OPS on GW. */
void gw_ts_init(gw_ts *ts, fy_gw *gw, const gw_ts_ops *ops);

/* Sends REQ on C as a new stream (END_STREAM with it when END). Returns 0
 * (TS attached: the connection counts it), or fyp_session_request's error:
 * FY_ELIMIT / FY_ECLOSED / FY_EAGAIN when this connection cannot take it now,
 * anything else when the request itself is at fault. */
int gw_ts_open(gw_ts *ts, gw_conn *c, const fyp_request *req, int end);

/* Sends DATA[0..LEN) on the stream, after anything still pending. What the
 * windows do not take is kept: by reference when BORROW (DATA must then
 * outlive the stream, or gw_ts_clear), else copied. Returns 1 when all of it
 * went, 0 when some waits for FYP_EV_WRITABLE, FY_ENOMEM, or a negative
 * code when the stream is gone (its reset event follows). */
int gw_ts_send(gw_ts *ts, const char *data, size_t len, int borrow);

/* Sends what is pending (on FYP_EV_WRITABLE). Returns 1 when nothing is left
 * pending, 0 when some still waits, or a negative code when the stream is
 * gone. */
int gw_ts_flush(gw_ts *ts);

/* 1 when body bytes wait for the window. */
int gw_ts_pending(const gw_ts *ts);

/* Drops what is pending without sending it. */
void gw_ts_clear(gw_ts *ts);

/* Sends END_STREAM (once). Call when nothing is pending. */
void gw_ts_end(gw_ts *ts);

/* Returns LEN bytes of response credit to the runner. */
void gw_ts_consume(gw_ts *ts, size_t len);

/* Leaves the stream, resetting it (CANCEL) when RESET and the session still
 * has it, so no further event arrives for TS. The connection's count drops,
 * and the tunnel's subscribers hear a slot was freed. Pending bytes are
 * dropped. Nothing when TS is not attached. */
void gw_ts_detach(gw_ts *ts, int reset);

#endif
