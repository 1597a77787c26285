/* proto/session.h: one tunnel connection's protocol state, without I/O.
 *
 * A session tracks the handshake, every stream's state, both flow-control
 * windows, heartbeats and GOAWAY (proto/PROTOCOL.md sections 4-9). It never
 * touches a socket, a timer or a loop, so the gateway and the runner each drive
 * it from their libuv loop, and tests drive two of them back to back:
 *
 *   bytes read from TLS   ──▶ fyp_session_recv()  ──▶ events (callback)
 *   fyp_session_output()  ──▶ bytes to write to TLS ──▶ fyp_session_output_consume()
 *   application calls (request, respond, send_data, consume, reset, ping,
 *   goaway, tick) queue frames into the same output.
 *
 * Threading: a session belongs to one thread; no call is thread-safe.
 *
 * Callbacks: the event callback runs only inside fyp_session_recv(),
 * fyp_session_tick() and fyp_session_terminate(). From inside it the
 * application may call any function here, including fyp_session_free() (the
 * free is deferred until the outermost call returns) and fyp_session_terminate().
 *
 * Errors: functions return 0 (or a count) or a negative FY_E* code. When the
 * peer violates the protocol, fyp_session_recv() queues a GOAWAY with the wire
 * error code and returns FY_EPROTO; from then on the session is dead: flush
 * the output (it ends with that GOAWAY), then close the connection.
 *
 * Memory: per stream the session holds one small struct (about 64 bytes) and
 * one hash-table slot; received data is never buffered here (DATA events point
 * into the bytes being parsed), and the only other buffers are the decoder's
 * (at most this side's max_frame_size) and the output. */
#ifndef FYP_SESSION_H
#define FYP_SESSION_H

#include "proto/frame.h"

#include <stdint.h>
#include <sys/types.h>

typedef struct fyp_session fyp_session;

typedef enum {
    FYP_ROLE_GATEWAY = 1, /* TLS server; opens streams (odd ids); answers HELLO */
    FYP_ROLE_RUNNER = 2,  /* TLS client; sends HELLO; answers streams */
} fyp_role;

typedef enum {
    /* Handshake done. Gateway: the runner's HELLO (u.hello: name, models,
     * capabilities, settings), delivered before HELLO_ACK is queued; to refuse
     * the runner call fyp_session_terminate(s, FYP_ERR_REJECTED, ...) from the
     * callback. Runner: the gateway's HELLO_ACK. `version` is the negotiated
     * version. Streams may be opened once the callback has returned. */
    FYP_EV_HELLO = 1,
    /* Runner: a new stream (u.request). end_stream: the request has no body. */
    FYP_EV_REQUEST,
    /* Gateway: the runner's response head (u.response). */
    FYP_EV_RESPONSE,
    /* Body bytes (u.data, possibly empty when end_stream is set). The bytes are
     * valid only during the callback. Every byte delivered must later be passed
     * to fyp_session_consume() once the application has really consumed it:
     * that is what returns flow-control credit to the peer. */
    FYP_EV_DATA,
    /* The peer ended its half with trailers (u.trailers: usage and fields). */
    FYP_EV_TRAILERS,
    /* A stream whose fyp_session_send_data() was cut short may send again. */
    FYP_EV_WRITABLE,
    /* A stream ended abnormally, not by this application's fyp_session_reset():
     * the peer reset it (remote = 1), the peer's GOAWAY refused it (remote = 1,
     * error_code REFUSED_STREAM: never processed, safe to retry), or the
     * connection died (remote = 0 for a local cause such as a protocol error
     * or heartbeat timeout, 1 for the peer's error GOAWAY). Drop any unconsumed
     * data; its connection credit was already returned. The stream is gone. */
    FYP_EV_STREAM_RESET,
    /* The peer sent GOAWAY (u.goaway). Open no more streams on this session. */
    FYP_EV_GOAWAY,
    /* A PONG matched one of our PINGs: rtt_us is the round-trip time. */
    FYP_EV_PING_RTT,
} fyp_event_type;

typedef struct {
    fyp_event_type type;
    uint32_t stream_id;  /* 0 for connection events */
    void *stream_data;   /* the stream's fyp_session_set_stream_data() pointer */
    int end_stream;      /* REQUEST, RESPONSE, DATA: the peer's half ended */
    uint32_t error_code; /* STREAM_RESET */
    int remote;          /* STREAM_RESET */
    uint16_t version;    /* HELLO */
    uint64_t rtt_us;     /* PING_RTT */
    union {
        const fyp_hello *hello;
        const fyp_request *request;
        const fyp_response *response;
        fy_slice data;
        const fyp_trailers *trailers;
        const fyp_goaway *goaway;
    } u;
} fyp_event;

typedef void (*fyp_event_cb)(fyp_session *s, const fyp_event *ev, void *data);

/* Monotonic clock in microseconds (e.g. uv_hrtime() / 1000). */
typedef uint64_t (*fyp_clock_cb)(void *data);

typedef struct {
    fyp_role role;
    /* What this side accepts (announced in HELLO / HELLO_ACK). Start from
     * fyp_settings_default(). Must pass fyp_settings_validate(). */
    fyp_settings settings;
    /* Versions to speak; 0 means FYP_VERSION_MIN / FYP_VERSION_MAX. */
    uint16_t min_version, max_version;
    /* Runner: HELLO name (required), models and capabilities. Gateway: name
     * and capabilities for HELLO_ACK (name may be NULL). Text: visible ASCII,
     * 1..255 bytes each. Copied; need not outlive fyp_session_new(). */
    const char *name;
    const char *const *models;
    size_t n_models;
    const char *const *caps;
    size_t n_caps;
    /* Pending output above which a reply the peer provokes (PONG, RST ACK) is
     * refused with GOAWAY OVERLOAD; 0 = FYP_DEFAULT_OUTPUT_MAX. Frames the
     * application queues are not capped here: DATA is bounded by the peer's
     * windows, and the application should pause above its own watermark of
     * fyp_session_output_size(). */
    size_t output_max;
    fyp_event_cb on_event;
    void *data;
    /* NULL = CLOCK_MONOTONIC. */
    fyp_clock_cb clock;
    void *clock_data;
} fyp_session_config;

/* Creates a session. The runner's HELLO is queued at once. Returns 0,
 * FY_EINVAL (bad settings, missing runner name, invalid text) or FY_ENOMEM. */
int fyp_session_new(const fyp_session_config *cfg, fyp_session **out);

/* Frees the session and every stream, without events. Safe on NULL. Inside a
 * callback the free is deferred until the outermost session call returns. */
void fyp_session_free(fyp_session *s);

/* Feeds LEN bytes read from the connection (any split: partial frames are kept,
 * many frames are handled in one call). Events run from inside.
 * Returns 0, FY_EPROTO (the peer violated the protocol: a GOAWAY is queued and
 * the session is dead; see fyp_session_error_code), FY_ENOMEM (GOAWAY
 * INTERNAL_ERROR queued, dead) or FY_ECLOSED (already dead; nothing read). */
int fyp_session_recv(fyp_session *s, const void *data, size_t len);

/* The transport's read side ended (EOF or error). The session dies: a frame
 * cut in half is a protocol error (FY_EPROTO); otherwise every live stream
 * gets FYP_EV_STREAM_RESET INTERNAL_ERROR (remote = 1) and FY_EEOF is
 * returned, or 0 when no stream was left (a clean close). FY_ECLOSED when
 * already dead. */
int fyp_session_recv_eof(fyp_session *s);

/* The pending output as one contiguous slice (empty when nothing is pending).
 * Valid until the next call on S. Returns its length. */
size_t fyp_session_output(fyp_session *s, fy_slice *out);

/* Marks N bytes of the pending output as written. */
void fyp_session_output_consume(fyp_session *s, size_t n);

/* Bytes of output pending. */
size_t fyp_session_output_size(const fyp_session *s);

/* Gateway: opens a stream with REQUEST (END_STREAM when END_STREAM is set) and
 * stores its id in *ID. STREAM_DATA is the stream's application pointer.
 * Returns 0, FY_EAGAIN (handshake not done), FY_ELIMIT (the runner's
 * MAX_CONCURRENT_STREAMS reached: wait for a stream to finish), FY_ECLOSED (dead,
 * GOAWAY sent or received, or stream ids exhausted: use another connection),
 * FY_ETOOBIG (above the runner's MAX_HEADER_BLOCK), FY_EINVAL (invalid request
 * or called by the runner) or FY_ENOMEM. */
int fyp_session_request(fyp_session *s, const fyp_request *req, int end_stream, void *stream_data,
                        uint32_t *id);

/* Runner: sends the response head. Returns 0, FY_ENOENT (no such stream),
 * FY_ECLOSED (stream reset or this half ended), FY_EINVAL (already responded,
 * invalid response, or called by the gateway), FY_ETOOBIG or FY_ENOMEM. */
int fyp_session_respond(fyp_session *s, uint32_t id, const fyp_response *resp, int end_stream);

/* Sends up to LEN body bytes as DATA, as far as both send windows allow, and
 * returns how many were queued (0..LEN). When fewer than LEN were queued, send
 * the rest after a FYP_EV_WRITABLE event for this stream. END_STREAM is sent
 * only when all LEN bytes were queued (LEN 0 with END_STREAM ends the half
 * without data). Errors: FY_ENOENT, FY_ECLOSED, FY_EINVAL (runner before
 * fyp_session_respond), FY_ENOMEM. */
ssize_t fyp_session_send_data(fyp_session *s, uint32_t id, const void *data, size_t len,
                              int end_stream);

/* Ends this side's half with TRAILERS. Errors as fyp_session_respond. */
int fyp_session_send_trailers(fyp_session *s, uint32_t id, const fyp_trailers *t);

/* Resets a stream with CODE (FYP_ERR_CANCEL, ...). Unconsumed received data is
 * dropped and its connection credit returned; no further events arrive for the
 * stream. On a stream that already finished on the wire but still held
 * unconsumed data, that data is dropped and no frame is sent. Returns 0,
 * FY_ENOENT (unknown, already reset or finished: nothing to do) or FY_ECLOSED
 * (session dead). */
int fyp_session_reset(fyp_session *s, uint32_t id, uint32_t code);

/* The application consumed N bytes of a stream's DATA: credit is returned to
 * the peer (WINDOW_UPDATE once half a window has been consumed). Returns 0,
 * FY_ENOENT (unknown stream, or reset: nothing to return), FY_EINVAL (more than
 * was delivered) or FY_ECLOSED. */
int fyp_session_consume(fyp_session *s, uint32_t id, size_t n);

/* Sends a PING; its PONG yields FYP_EV_PING_RTT. Returns 0, FY_EAGAIN (before
 * the handshake), FY_ECLOSED or FY_ENOMEM. */
int fyp_session_ping(fyp_session *s);

/* Heartbeat and handshake timer: call at least every heartbeat interval / 4
 * (fyp_session_heartbeat_ms). Sends a PING every interval; when nothing was
 * received for 3 intervals (or the handshake took over 10 s) the peer is
 * declared dead: GOAWAY TIMEOUT is queued, every stream gets
 * FYP_EV_STREAM_RESET, and FY_ETIMEDOUT is returned. Otherwise 0, or
 * FY_ECLOSED when already dead. */
int fyp_session_tick(fyp_session *s);

/* Graceful drain (CODE = FYP_ERR_NONE): queues GOAWAY with the last stream id
 * processed; no new streams are opened or accepted, existing ones finish. With
 * any other CODE this is fyp_session_terminate. Returns 0 or FY_ECLOSED. */
int fyp_session_goaway(fyp_session *s, uint32_t code, const char *debug);

/* Ends the session now: queues GOAWAY CODE (with DEBUG, may be NULL) and
 * emits FYP_EV_STREAM_RESET (remote = 0) for every live stream. Use it too when
 * the transport failed, before fyp_session_free, to get the per-stream events.
 * No-op when already dead. */
void fyp_session_terminate(fyp_session *s, uint32_t code, const char *debug);

/* 1 when the connection should be closed once the output is flushed: the
 * session is dead, or a GOAWAY was sent or received and no stream is left. */
int fyp_session_want_close(const fyp_session *s);

/* ---- Queries ---- */

/* 1 once the handshake completed (streams may be opened). */
int fyp_session_ready(const fyp_session *s);
int fyp_session_dead(const fyp_session *s);
uint16_t fyp_session_version(const fyp_session *s);
/* The peer's settings, or NULL before the handshake. */
const fyp_settings *fyp_session_peer_settings(const fyp_session *s);
/* Effective heartbeat interval in ms (PROTOCOL.md section 7). */
uint32_t fyp_session_heartbeat_ms(const fyp_session *s);
/* Streams counted toward the concurrency limit (open, half-closed, reset-sent). */
size_t fyp_session_stream_count(const fyp_session *s);
/* Send window of stream ID, or of the connection when ID is 0; -1 if unknown. */
int64_t fyp_session_send_window(const fyp_session *s, uint32_t id);
/* Bytes this session holds (struct, decoder, output, table, streams). */
size_t fyp_session_memory(const fyp_session *s);
/* After death: the wire error code sent or received, and its reason. */
uint32_t fyp_session_error_code(const fyp_session *s);
const char *fyp_session_error_msg(const fyp_session *s);

typedef enum {
    FYP_STREAM_IDLE = 0, /* never opened */
    FYP_STREAM_OPEN,
    FYP_STREAM_HALF_CLOSED_LOCAL,
    FYP_STREAM_HALF_CLOSED_REMOTE,
    FYP_STREAM_RESET_SENT,
    FYP_STREAM_CLOSED,
} fyp_stream_state;

fyp_stream_state fyp_session_stream_state(const fyp_session *s, uint32_t id);
const char *fyp_stream_state_name(fyp_stream_state st);

/* The application pointer of a stream (NULL when unknown). Setting it on an
 * unknown stream returns FY_ENOENT. */
int fyp_session_set_stream_data(fyp_session *s, uint32_t id, void *data);
void *fyp_session_stream_data(const fyp_session *s, uint32_t id);

#endif
