/* tstream.c: the tunnel stream core (tstream.h). */
#include "gateway/tstream.h"

#include "common/err.h"

#include <stdlib.h>
#include <string.h>

void gw_ts_init(gw_ts *ts, fy_gw *gw, const gw_ts_ops *ops)
{
    memset(ts, 0, sizeof *ts);
    ts->gw = gw;
    ts->ops = ops;
}

int gw_ts_open(gw_ts *ts, gw_conn *c, const fyp_request *req, int end)
{
    uint32_t id = 0;
    int rc = fyp_session_request(c->sess, req, end, ts, &id);
    if (rc) {
        return rc;
    }
    ts->conn = c;
    ts->id = id;
    ts->end_sent = end != 0;
    c->n_px++;
    fy_metric_add(ts->gw->metrics.active_streams, NULL, 1);
    fy_gw_conn_kick(c);
    return 0;
}

int gw_ts_pending(const gw_ts *ts)
{
    return ts->pend != NULL;
}

void gw_ts_clear(gw_ts *ts)
{
    if (ts->pend_owned) {
        free((char *)ts->pend);
    }
    ts->pend = NULL;
    ts->pend_owned = 0;
    ts->pend_len = ts->pend_off = 0;
}

/* Writes DATA[0..LEN) while the windows take it: bytes sent, or a negative
 * code when the stream is gone. */
static ssize_t ts_write(gw_ts *ts, const char *data, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = fyp_session_send_data(ts->conn->sess, ts->id, data + off, len - off, 0);
        if (n < 0) {
            return n;
        }
        if (n == 0) {
            break;
        }
        off += (size_t)n;
    }
    return (ssize_t)off;
}

int gw_ts_flush(gw_ts *ts)
{
    if (!ts->pend) {
        return 1;
    }
    if (!ts->conn) {
        return FY_ECLOSED;
    }
    ssize_t n = ts_write(ts, ts->pend + ts->pend_off, ts->pend_len - ts->pend_off);
    fy_gw_conn_kick(ts->conn);
    if (n < 0) {
        return (int)n;
    }
    ts->pend_off += (size_t)n;
    if (ts->pend_off < ts->pend_len) {
        return 0;
    }
    gw_ts_clear(ts);
    return 1;
}

int gw_ts_send(gw_ts *ts, const char *data, size_t len, int borrow)
{
    if (!ts->conn) {
        return FY_ECLOSED;
    }
    if (ts->pend) { /* behind what already waits (does not happen while paused) */
        int rc = gw_ts_flush(ts);
        if (rc != 1) {
            return rc < 0 ? rc : FY_EAGAIN;
        }
    }
    ssize_t n = ts_write(ts, data, len);
    fy_gw_conn_kick(ts->conn);
    if (n < 0) {
        return (int)n;
    }
    if ((size_t)n == len) {
        return 1;
    }
    size_t left = len - (size_t)n;
    if (borrow) {
        ts->pend = data + n;
    } else {
        char *copy = malloc(left);
        if (!copy) {
            return FY_ENOMEM;
        }
        memcpy(copy, data + n, left);
        ts->pend = copy;
        ts->pend_owned = 1;
    }
    ts->pend_len = left;
    ts->pend_off = 0;
    return 0;
}

void gw_ts_end(gw_ts *ts)
{
    if (ts->end_sent || !ts->conn) {
        return;
    }
    /* Not NULL: the session computes data + 0, which is undefined for NULL. */
    if (fyp_session_send_data(ts->conn->sess, ts->id, "", 0, 1) >= 0) {
        ts->end_sent = 1;
    }
    fy_gw_conn_kick(ts->conn);
}

void gw_ts_consume(gw_ts *ts, size_t len)
{
    if (ts->conn && len) {
        fyp_session_consume(ts->conn->sess, ts->id, len);
        fy_gw_conn_kick(ts->conn);
    }
}

void gw_ts_detach(gw_ts *ts, int reset)
{
    gw_conn *c = ts->conn;
    if (!c) {
        return;
    }
    if (c->sess && ts->id) {
        if (reset) {
            fyp_session_reset(c->sess, ts->id, FYP_ERR_CANCEL);
        }
        fyp_session_set_stream_data(c->sess, ts->id, NULL);
        fy_gw_conn_kick(c);
    }
    gw_ts_clear(ts);
    c->n_px--;
    ts->conn = NULL;
    ts->id = 0;
    fy_metric_add(ts->gw->metrics.active_streams, NULL, -1);
    fy_gw_tunnel_publish(ts->gw, GW_TUN_SLOT_FREED);
}
