/* link.h: a tunnel session (proto/session.h) driven over a byte stream
 * (common/stream.h) on a libuv loop. Both daemons' tunnel connections are
 * links: the gateway's accepted ones (gateway/tunnel.c) and the runner's
 * dialled ones (runner/tunnel.c). The session stays pure (no I/O); this is
 * the I/O half, written once, with one policy:
 *
 * - Output is written at the end of the loop turn in which it was queued
 *   (fy_link_kick), so the frames of every stream a turn touched leave in
 *   one TLS write. Each write is at most FY_LINK_WRITE_CAP bytes.
 * - Backpressure, out: nothing more is handed to the stream while its write
 *   queue is at or above FY_STREAM_HIGH_WATERMARK; the session keeps the rest
 *   (bounded by the peer's flow-control windows) until a write completes.
 * - Backpressure, in: while the stream cannot take more and the session's
 *   pending output is at or above FY_LINK_READ_PAUSE, reading stops, so a
 *   peer that sends but does not read cannot make us buffer without bound.
 * - A timer ticks the session (heartbeats, PING deadlines) every quarter of
 *   the heartbeat interval, at least every 50 ms.
 * - Ending: a link ends once, for one fy_link_reason; ops->on_end runs
 *   first, before the session is terminated (its streams then get their
 *   STREAM_RESET events through ops->on_event). A link whose transport is
 *   gone is released at once; any other writes its last output (a GOAWAY),
 *   sends close_notify and FIN, and waits up to linger_ms for the peer's
 *   end. When every handle has closed, ops->on_free runs; the link and its
 *   session are freed right after it.
 *
 * Every call may be made from inside the link's own callbacks. */
#ifndef FY_LINK_H
#define FY_LINK_H

#include "common/stream.h"
#include "proto/session.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define FY_LINK_WRITE_CAP  (256 * 1024)  /* bytes per stream write */
#define FY_LINK_READ_PAUSE (1024 * 1024) /* pending output that pauses reading */
/* The stream window both daemons announce (the protocol's default is 256
 * KiB). A stream moves at most a window per round trip through both loops
 * and their TLS; at 256 KiB a large download through the tunnel spent a
 * third of its time with the sender waiting for credit. */
#define FY_LINK_STREAM_WINDOW (1024 * 1024)

typedef struct fy_link fy_link;

/* Why a link ended. */
typedef enum {
    FY_LINK_PEER_CLOSED,  /* the read side ended: EOF or reset (err says which) */
    FY_LINK_READ_FAILED,  /* a read error other than those (err) */
    FY_LINK_WRITE_FAILED, /* a write failed (err) */
    FY_LINK_HEARTBEAT,    /* the peer stopped answering (msg: the session's words) */
    FY_LINK_FINISHED,     /* the session is done: drained, or dead after a
                             protocol error (fyp_session_dead tells; msg) */
    FY_LINK_LOCAL,        /* fy_link_close or fy_link_abort (msg: the reason given) */
} fy_link_reason;

typedef struct {
    fy_link_reason reason;
    int err;         /* FY_E* for the read and write reasons, else 0 */
    const char *msg; /* never NULL; valid during on_end only */
} fy_link_end;

typedef struct {
    /* Every session event, as fyp_event_cb gets them. */
    void (*on_event)(fy_link *l, const fyp_event *ev);
    /* Optional: bytes read were fed to the session; RC is fyp_session_recv's
     * (their events have run). */
    void (*on_recv)(fy_link *l, int rc);
    /* The link stopped serving (once, for any reason). The session is still
     * as it was: resets of its streams follow through on_event. */
    void (*on_end)(fy_link *l, const fy_link_end *end);
    /* Every handle closed: the owner lets go of the link (and may free
     * itself). The link and its session are freed after this returns. */
    void (*on_free)(fy_link *l);
} fy_link_ops;

typedef struct {
    uv_loop_t *loop;
    fy_stream *stream; /* taken by fy_link_start on success: the link closes it */
    /* The session to make; its on_event and data are the link's own (use ops). */
    fyp_session_config session;
    uint64_t linger_ms; /* after our end, how long the peer's may take; 0: 1000 */
    const fy_link_ops *ops;
    void *data; /* the owner's, for fy_link_data */
} fy_link_config;

/* Makes the session, starts reading and ticking, and writes the first
 * output (the runner's HELLO) at the end of this loop turn. Returns 0, or an
 * FY_E* code (the stream then stays the caller's, untouched but for its
 * data and on_read). */
int fy_link_start(const fy_link_config *cfg, fy_link **out);

fyp_session *fy_link_session(const fy_link *l);
void *fy_link_data(const fy_link *l);

/* Output was queued on the session: write it at the end of this loop turn.
 * Cheap when called many times in one turn. Safe on NULL. */
void fy_link_kick(fy_link *l);

/* Drains: GOAWAY NO_ERROR, the streams open finish, then the link ends
 * (FY_LINK_FINISHED) once the session wants to close. */
void fy_link_goaway(fy_link *l, const char *debug);

/* Ends now (FY_LINK_LOCAL with REASON): unless the session already finished
 * gracefully, GOAWAY CODE and every stream reset; then the graceful close
 * described above. No-op once ended. */
void fy_link_close(fy_link *l, uint32_t code, const char *reason);

/* Ends now as fy_link_close does, but releases the transport at once
 * without writing anything more. Also releases a link that already ended
 * gracefully and is lingering. */
void fy_link_abort(fy_link *l, const char *reason);

#endif
