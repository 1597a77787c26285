/* proto/frame.h: the tunnel protocol's frames, their encoder and an
 * incremental, validating decoder (proto/PROTOCOL.md, sections 2 and 3).
 *
 * Pure code: no sockets, no event loop, no logging. Names start with fyp_.
 *
 * Ownership: a decoded frame points into either the bytes the caller fed or the
 * decoder's own buffer; it stays valid until the next fyp_decoder_next() or
 * fyp_decoder_close() call. Encoded frames are appended to a caller's fy_buf
 * (whose mandatory cap bounds the output). */
#ifndef FYP_FRAME_H
#define FYP_FRAME_H

#include "common/buf.h"
#include "proto/limits.h"

#include <stddef.h>
#include <stdint.h>

/* Frame types (PROTOCOL.md 2.1). Other values are unknown types, ignored
 * after the handshake. */
enum {
    FYP_FRAME_DATA = 0x00,
    FYP_FRAME_REQUEST = 0x01,
    FYP_FRAME_RESPONSE = 0x02,
    FYP_FRAME_TRAILERS = 0x03,
    FYP_FRAME_RST_STREAM = 0x04,
    FYP_FRAME_WINDOW_UPDATE = 0x05,
    FYP_FRAME_PING = 0x06,
    FYP_FRAME_PONG = 0x07,
    FYP_FRAME_GOAWAY = 0x08,
    FYP_FRAME_HELLO = 0x09,
    FYP_FRAME_HELLO_ACK = 0x0a,
    FYP_FRAME_TYPE_COUNT
};

/* Flags. END_STREAM on DATA, REQUEST, RESPONSE, TRAILERS; USAGE on TRAILERS;
 * ACK on RST_STREAM. */
#define FYP_FLAG_END_STREAM 0x01
#define FYP_FLAG_USAGE      0x02
#define FYP_FLAG_ACK        0x01

/* Wire error codes for RST_STREAM and GOAWAY (PROTOCOL.md section 8).
 * X(symbol, wire name, value, description). These are values on the wire,
 * not function results: functions return FY_E* codes from common/err.h. */
#define FYP_ERRCODE_MAP(X)                                                                  \
    X(NONE, "NO_ERROR", 0x0, "no error (graceful shutdown)")                                \
    X(PROTOCOL, "PROTOCOL_ERROR", 0x1, "protocol violation")                                \
    X(INTERNAL, "INTERNAL_ERROR", 0x2, "internal error")                                    \
    X(FLOW_CONTROL, "FLOW_CONTROL_ERROR", 0x3, "flow-control window violated")              \
    X(STREAM_CLOSED, "STREAM_CLOSED", 0x4, "frame on a closed stream")                      \
    X(FRAME_SIZE, "FRAME_SIZE_ERROR", 0x5, "frame too large or of the wrong size")          \
    X(REFUSED_STREAM, "REFUSED_STREAM", 0x6, "stream refused before processing; retryable") \
    X(CANCEL, "CANCEL", 0x7, "stream no longer needed")                                     \
    X(TIMEOUT, "TIMEOUT", 0x8, "deadline passed")                                           \
    X(VERSION_MISMATCH, "VERSION_MISMATCH", 0x9, "no common protocol version")              \
    X(HEADER_TOO_LARGE, "HEADER_TOO_LARGE", 0xa, "header block over the limit")             \
    X(OVERLOAD, "OVERLOAD", 0xb, "peer is flooding")                                        \
    X(REJECTED, "REJECTED", 0xc, "peer not accepted")

enum {
#define FYP__ERRCODE_ENUM(sym, wire, value, msg) FYP_ERR_##sym = (value),
    FYP_ERRCODE_MAP(FYP__ERRCODE_ENUM)
#undef FYP__ERRCODE_ENUM
};

/* Wire name of an error code ("PROTOCOL_ERROR"); "UNKNOWN" for others. Never NULL. */
const char *fyp_errcode_name(uint32_t code);

/* Setting ids (PROTOCOL.md 3.11). */
enum {
    FYP_SETTING_MAX_FRAME_SIZE = 0x1,
    FYP_SETTING_MAX_HEADER_BLOCK = 0x2,
    FYP_SETTING_INITIAL_STREAM_WINDOW = 0x3,
    FYP_SETTING_CONNECTION_WINDOW = 0x4,
    FYP_SETTING_MAX_CONCURRENT_STREAMS = 0x5,
    FYP_SETTING_HEARTBEAT_MS = 0x6,
};

/* What one side is willing to receive. */
typedef struct {
    uint32_t max_frame_size;         /* 16384..16777215 */
    uint32_t max_header_block;       /* 1024..max_frame_size */
    uint32_t initial_stream_window;  /* 1..2^31-1 */
    uint32_t connection_window;      /* 1..2^31-1 */
    uint32_t max_concurrent_streams; /* any */
    uint32_t heartbeat_ms;           /* 0 or 1000..600000 */
} fyp_settings;

/* Fills in the defaults of PROTOCOL.md 3.11. */
void fyp_settings_default(fyp_settings *s);

/* Returns 0 when every value is in its valid range, FY_EINVAL otherwise. */
int fyp_settings_validate(const fyp_settings *s);

/* One header, trailer or metadata field. Not NUL-terminated. */
typedef struct {
    fy_slice name;
    fy_slice value;
} fyp_field;

/* Initializer for a field from two string literals (usable in static arrays). */
#define FYP_FIELD(n, v)                \
    {                                  \
        {(char *)(n), sizeof(n) - 1},  \
        {                              \
            (char *)(v), sizeof(v) - 1 \
        }                              \
    }

typedef struct {
    const fyp_field *v;
    size_t n;
} fyp_fields;

typedef struct {
    fy_slice method;    /* 1..32 tchar bytes */
    fy_slice target;    /* 1..65535 visible ASCII bytes */
    fyp_fields meta;    /* gateway metadata, <= FYP_MAX_META_FIELDS */
    fyp_fields headers; /* <= FYP_MAX_HEADER_FIELDS */
} fyp_request;

typedef struct {
    uint16_t status; /* 200..599 */
    fyp_fields headers;
} fyp_response;

typedef struct {
    int has_usage; /* the USAGE flag: the counters below are meaningful */
    uint32_t prompt_tokens;
    uint32_t completion_tokens;
    fyp_fields fields;
} fyp_trailers;

typedef struct {
    uint32_t last_stream_id;
    uint32_t error_code;
    fy_slice debug; /* <= FYP_MAX_GOAWAY_DEBUG bytes */
} fyp_goaway;

/* HELLO and HELLO_ACK. HELLO uses min_version..max_version and models;
 * HELLO_ACK uses version and has no models. */
typedef struct {
    uint16_t min_version, max_version; /* HELLO */
    uint16_t version;                  /* HELLO_ACK */
    fyp_settings settings;
    fy_slice name; /* HELLO: 1..255 text bytes; HELLO_ACK: 0..255 */
    const fy_slice *models;
    size_t n_models; /* <= FYP_MAX_MODELS */
    const fy_slice *caps;
    size_t n_caps; /* <= FYP_MAX_CAPS */
} fyp_hello;

typedef struct {
    uint8_t type;
    uint8_t flags;
    uint32_t stream_id;
    uint32_t length; /* payload length; set by the decoder, ignored by the encoder */
    union {
        fy_slice data;         /* DATA */
        fyp_request request;   /* REQUEST */
        fyp_response response; /* RESPONSE */
        fyp_trailers trailers; /* TRAILERS */
        uint32_t error_code;   /* RST_STREAM */
        uint32_t increment;    /* WINDOW_UPDATE */
        uint8_t opaque[8];     /* PING, PONG */
        fyp_goaway goaway;     /* GOAWAY */
        fyp_hello hello;       /* HELLO, HELLO_ACK */
    } u;
} fyp_frame;

/* ---- Encoder ---- */

/* Payload size F would encode to (without the 9-byte header). F must be a
 * known type; the result is meaningful only for a frame fyp_frame_encode
 * accepts. */
size_t fyp_frame_payload_size(const fyp_frame *f);

/* Appends F (header and payload) to OUT. F->length is ignored (computed).
 * Validates F with the same rules the decoder applies (types, flags, stream id
 * rules, field characters, counts, fixed sizes); limits that depend on the
 * peer's settings (its max frame size and header block) are the caller's to
 * check with fyp_frame_payload_size. For TRAILERS the USAGE flag is set from
 * u.trailers.has_usage.
 * Returns 0, FY_EINVAL (F is not a valid frame), FY_ETOOBIG (payload above
 * 2^24-1, or OUT's cap) or FY_ENOMEM. On error OUT is unchanged. */
int fyp_frame_encode(fy_buf *out, const fyp_frame *f);

/* ---- Decoder ---- */

/* Incremental decoder: feed it byte chunks of any size (a frame split across
 * reads, or many frames in one read) and pull validated frames out. Its only
 * allocation is one payload buffer that never exceeds max_frame_size; frames
 * that arrive whole in one chunk are not copied. Plain struct so it can live
 * inside a session; treat the fields after the limits as private. */
typedef struct {
    uint32_t max_frame_size;   /* this side's MAX_FRAME_SIZE */
    uint32_t max_header_block; /* this side's MAX_HEADER_BLOCK */
    /* On FY_EPROTO: the wire error code for GOAWAY and a short reason. */
    uint32_t err_code;
    char err_msg[96];

    uint8_t hdr[FYP_FRAME_HEADER_SIZE];
    uint8_t hdr_len;
    uint8_t in_payload; /* header parsed, collecting cur_len payload bytes */
    uint8_t failed;
    fyp_frame cur;
    uint32_t skip; /* payload bytes of an unknown frame still to discard */
    uint8_t *buf;
    size_t buf_len, buf_cap;
    fyp_field fields[FYP_MAX_META_FIELDS + FYP_MAX_HEADER_FIELDS];
    fy_slice strs[FYP_MAX_MODELS + FYP_MAX_CAPS];
} fyp_decoder;

/* Initialises D for a receiver whose settings allow frames of up to
 * MAX_FRAME_SIZE bytes and header blocks of up to MAX_HEADER_BLOCK. */
void fyp_decoder_init(fyp_decoder *d, uint32_t max_frame_size, uint32_t max_header_block);

/* Frees the payload buffer. Safe on a zeroed or closed decoder. */
void fyp_decoder_close(fyp_decoder *d);

/* Consumes bytes from *P / *N (advancing them) until one frame is complete.
 * Returns 1 with the frame in F (valid until the next call), 0 when all input
 * was consumed without completing a frame, FY_EPROTO when the peer sent
 * something invalid (d->err_code and d->err_msg say what; the decoder stays
 * failed and keeps returning FY_EPROTO), or FY_ENOMEM.
 * An unknown frame type is returned once, as soon as its header is read, with
 * F->u.data empty; its payload is then skipped without being buffered. */
int fyp_decoder_next(fyp_decoder *d, const uint8_t **p, size_t *n, fyp_frame *f);

/* 1 when no partial frame is buffered (the stream is at a frame boundary). */
int fyp_decoder_idle(const fyp_decoder *d);

/* ---- Helpers ---- */

/* Case-insensitive lookup of NAME in FIELDS: the first match, or NULL. */
const fyp_field *fyp_fields_get(const fyp_fields *fields, const char *name);

#endif
