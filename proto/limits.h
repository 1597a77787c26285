/* proto/limits.h: every cap of the tunnel protocol, in one place.
 *
 * These are wire limits from proto/PROTOCOL.md (section 10) plus the defaults
 * a session announces in HELLO. A check in proto/ names its limit from here,
 * never a bare number. Daemons may pick other settings within the valid
 * ranges through fyp_settings. */
#ifndef FYP_LIMITS_H
#define FYP_LIMITS_H

/* Protocol versions this implementation speaks (inclusive range). */
#define FYP_VERSION_MIN 1
#define FYP_VERSION_MAX 1

/* Framing. */
#define FYP_FRAME_HEADER_SIZE    9
#define FYP_MIN_FRAME_SIZE       16384    /* smallest MAX_FRAME_SIZE; the limit before HELLO */
#define FYP_MAX_FRAME_SIZE_LIMIT 16777215 /* 24-bit length field */
#define FYP_MAX_HELLO_SIZE       16384    /* HELLO / HELLO_ACK payload */
#define FYP_MIN_HEADER_BLOCK     1024
#define FYP_MAX_GOAWAY_DEBUG     1024
#define FYP_MAX_STREAM_ID        0x7fffffffu

/* Counts inside frames. */
#define FYP_MAX_HEADER_FIELDS 256 /* headers or trailers per list; over it: HEADER_TOO_LARGE */
#define FYP_MAX_META_FIELDS   32  /* REQUEST metadata fields; over it: HEADER_TOO_LARGE */
#define FYP_MAX_METHOD_LEN    32
#define FYP_MAX_SETTINGS      32
#define FYP_MAX_MODELS        128
#define FYP_MAX_CAPS          64

/* Flow control. */
#define FYP_MAX_WINDOW 0x7fffffff /* 2^31 - 1 */

/* Heartbeats. */
#define FYP_MIN_HEARTBEAT_MS  1000
#define FYP_MAX_HEARTBEAT_MS  600000
#define FYP_HEARTBEAT_MISSES  3     /* silence for this many intervals = dead peer */
#define FYP_HELLO_TIMEOUT_MS  10000 /* handshake must finish within this */
#define FYP_PINGS_OUTSTANDING 4     /* PINGs remembered for RTT matching */

/* Defaults announced in HELLO / HELLO_ACK (see fyp_settings_default). The
 * header block matches FY_HTTP_CLIENT_MAX_RESPONSE_HEADER, so a response head
 * the runner's HTTP client accepts from an upstream also fits the tunnel. */
#define FYP_DEFAULT_MAX_FRAME_SIZE    65536
#define FYP_DEFAULT_MAX_HEADER_BLOCK  65536
#define FYP_DEFAULT_STREAM_WINDOW     (256 * 1024)
#define FYP_DEFAULT_CONNECTION_WINDOW (16 * 1024 * 1024)
#define FYP_DEFAULT_MAX_STREAMS       4096
#define FYP_DEFAULT_HEARTBEAT_MS      5000

/* Session-local caps (not on the wire). */
#define FYP_STREAMS_HARD_CAP 1000000 /* local table bound whatever a peer announces */
#define FYP_DATA_CHUNK       16384   /* DATA frames are cut at this size so streams interleave */
#define FYP_DEFAULT_OUTPUT_MAX \
    (64 * 1024 * 1024)      /* pending output above which peer-triggered replies = OVERLOAD */
#define FYP_STREAM_SLACK 64 /* held streams may reach 2 * max_concurrent + this */

#endif
