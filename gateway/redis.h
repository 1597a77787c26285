/* redis.h: an asynchronous Redis client on the gateway's libuv loop, for
 * state shared by several gateways (keys, limits, usage, hooks, webhook
 * queue). Built on hiredis 0.14 and its libuv adapter; nothing here ever
 * blocks the loop, and no request path waits for Redis to come back.
 *
 * Configuration. fy_redis_config_parse() takes the --shared-store URL and the
 * --shared-password-file path:
 *   redis://HOST[:PORT][/DB]        HOST an IPv4 literal, [IPv6] or localhost
 *                                   (a name lookup would block the loop);
 *                                   PORT defaults to 6379, DB to 0
 *   unix:///path/redis.sock[?db=N]  an absolute socket path
 * The password is never part of the URL (a URL with user info is refused):
 * it is the first line of the password file, without its line ending, at
 * most FY_REDIS_MAX_PASSWORD bytes, in a file of at most
 * FY_REDIS_MAX_PASSWORD_FILE bytes.
 *
 * Connections. A client holds two connections to the server: one for
 * commands and one for pub/sub (a subscribed connection can run nothing
 * else). Each connection sends AUTH (when a password is set) and the command
 * connection SELECT (when DB is not 0), and both a PING (which also catches
 * a server that wants a password the client lacks), before the client
 * reports itself up, so no command ever runs unauthenticated or in the
 * wrong database; the pub/sub connection then subscribes to every channel
 * and UP waits for the server to confirm them all. When a
 * connection attempt fails, the handshake fails or times out, or either
 * connection drops, both are closed, the client reports itself down, and it
 * tries again after a delay that doubles from backoff_min_ms up to
 * backoff_max_ms (each delay drawn uniformly from [d/2, d], so replicas do
 * not reconnect in lockstep); a successful handshake resets the delay.
 *
 * States, as reported to ops->on_state: the client starts CONNECTING; the
 * first handshake makes it UP; any failure makes it DOWN until a later
 * handshake succeeds. on_state runs on every change between UP and DOWN and
 * once when the first attempt fails (CONNECTING -> DOWN); repeated failures
 * while DOWN are not reported again unless their error code changes (say
 * CONNREFUSED, then PERM after the server came back with another password).
 *
 * Commands. fy_redis_cmd() sends one command (binary-safe argv); several
 * commands issued in one loop turn go out in one write and their replies
 * come back in order (pipelining: hiredis never waits between commands).
 *   - UP: the command is written at once.
 *   - CONNECTING (only the first attempt after fy_redis_new): the command is
 *     held in a queue of at most cfg.max_queued commands and written when
 *     the handshake succeeds, or failed with FY_EUNREACH when it does not
 *     (max_queued 0: no queue, every such command gets FY_ELIMIT).
 *   - DOWN (including every reconnect attempt): fy_redis_cmd returns
 *     FY_EUNREACH at once; nothing is queued, so an outage costs the request
 *     path nothing and the caller falls back at once.
 * A server that stops answering is treated as gone: when the oldest command
 * in flight has waited cfg.command_timeout_ms, both connections close and
 * the client goes DOWN (FY_ETIMEDOUT), as if the connection had dropped.
 * A command in flight when its connection drops fails with FY_ECONNRESET:
 * it may or may not have run on the server.
 *
 * Ownership. fy_redis_cmd copies ARGV before it returns. A reply view is
 * owned by the client and valid only until the callback returns.
 *
 * Close path. fy_redis_free() fails every command still queued or in flight
 * with FY_ECANCELED before it returns (each callback runs exactly once in
 * all), and after it returns no callback of any kind runs (no reply, no
 * message, no state change). It may be called from inside any callback of
 * this client. The memory is released once the client's libuv handles have
 * closed, so the loop must run on after fy_redis_free (as with uv_close).
 *
 * Threads: a client belongs to its loop's thread; nothing is thread-safe. */
#ifndef FY_GATEWAY_REDIS_H
#define FY_GATEWAY_REDIS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define FY_REDIS_MAX_URL           1024 /* bytes in a --shared-store URL */
#define FY_REDIS_MAX_HOST          255  /* bytes in HOST (an IP literal) */
#define FY_REDIS_MAX_PATH          107  /* bytes in a unix socket path (sun_path - 1) */
#define FY_REDIS_MAX_PASSWORD      512  /* bytes in the password */
#define FY_REDIS_MAX_PASSWORD_FILE 4096 /* bytes read from the password file at most */
#define FY_REDIS_MAX_DB            1000000
#define FY_REDIS_MAX_CHANNELS      64     /* subscriptions per client */
#define FY_REDIS_MAX_CHANNEL       256    /* bytes in a channel name */
#define FY_REDIS_MAX_SCRIPT        65536  /* bytes of Lua source per script */
#define FY_REDIS_MAX_ARGS          1024   /* arguments per command (argc) */
#define FY_REDIS_MAX_REPLY_NODES   100000 /* nodes in one reply (arrays nest) */
#define FY_REDIS_DEFAULT_PORT      6379

/* Defaults fy_redis_config_parse() sets; a caller may change them after. */
#define FY_REDIS_DEFAULT_BACKOFF_MIN_MS     100
#define FY_REDIS_DEFAULT_BACKOFF_MAX_MS     10000
#define FY_REDIS_DEFAULT_CONNECT_TIMEOUT_MS 5000 /* connect + AUTH + SELECT */
#define FY_REDIS_DEFAULT_MAX_QUEUED         1024 /* commands held while first connecting */
#define FY_REDIS_DEFAULT_COMMAND_TIMEOUT_MS 2000 /* an unanswered command: the server is down */

typedef struct fy_redis_config {
    int is_unix;                      /* 1: PATH; 0: HOST and PORT */
    char host[FY_REDIS_MAX_HOST + 1]; /* IP literal, no brackets */
    int port;                         /* 1..65535 */
    char path[FY_REDIS_MAX_PATH + 1]; /* absolute socket path */
    int db;                           /* 0..FY_REDIS_MAX_DB */
    char password[FY_REDIS_MAX_PASSWORD + 1];
    size_t password_len;         /* 0: no AUTH */
    unsigned backoff_min_ms;     /* first reconnect delay, >= 1 */
    unsigned backoff_max_ms;     /* cap on the delay, >= backoff_min_ms */
    unsigned connect_timeout_ms; /* a handshake slower than this fails */
    unsigned max_queued;         /* commands held while first connecting */
    unsigned command_timeout_ms; /* a command unanswered this long fails the
                                  * connection like a drop (FY_ETIMEDOUT); 0: never */
} fy_redis_config;

/* Parses URL and reads PASSWORD_FILE (NULL or "" for none) into *CFG, with
 * the defaults above for the rest. Returns 0, or FY_EINVAL (malformed URL,
 * with ERR saying which part), FY_ETOOBIG (URL, host, path, password or
 * password file over its limit), FY_ENOTSUP (another scheme, e.g. rediss),
 * FY_ENOENT (no password file) or FY_EIO. On failure *CFG holds no
 * password. Call fy_redis_config_wipe() when done with *CFG. */
int fy_redis_config_parse(const char *url, const char *password_file, fy_redis_config *cfg,
                          char *err, size_t errlen);

/* Zeroes *CFG, password included. NULL is ok. */
void fy_redis_config_wipe(fy_redis_config *cfg);

/* ---- replies ----------------------------------------------------------- */

typedef enum {
    FY_REDIS_REPLY_STRING = 1, /* bulk string: STR, LEN */
    FY_REDIS_REPLY_ARRAY,      /* ELEM[0..N) */
    FY_REDIS_REPLY_INTEGER,    /* INTEGER */
    FY_REDIS_REPLY_NIL,        /* null bulk string or null array */
    FY_REDIS_REPLY_STATUS,     /* simple string ("OK"): STR, LEN */
    FY_REDIS_REPLY_ERROR,      /* error reply ("ERR ..."): STR, LEN */
} fy_redis_reply_type;

typedef struct fy_redis_reply fy_redis_reply;
struct fy_redis_reply {
    fy_redis_reply_type type;
    long long integer;
    const char *str; /* NUL-terminated as well, but may hold NULs: use LEN */
    size_t len;
    const fy_redis_reply *elem;
    size_t n;
};

/* A reply callback. STATUS is:
 *   0               REPLY is the server's reply (never an error reply);
 *   FY_EIO          the server answered with an error: REPLY has type
 *                   FY_REDIS_REPLY_ERROR and its text;
 *   FY_EUNREACH     the client went down before the command was written
 *                   (it was queued during the first connect);
 *   FY_ECONNRESET   the connection dropped with the command in flight;
 *   FY_ECANCELED    fy_redis_free() ran first;
 *   FY_ETOOBIG      the reply had more than FY_REDIS_MAX_REPLY_NODES nodes;
 *   FY_ENOMEM.
 * REPLY is NULL unless STATUS is 0 or FY_EIO. */
typedef void (*fy_redis_reply_cb)(void *data, int status, const fy_redis_reply *reply);

/* ---- the client -------------------------------------------------------- */

typedef struct fy_redis fy_redis;

typedef struct fy_redis_ops {
    /* The client went UP (ERR 0, REASON "") or DOWN (ERR the cause:
     * FY_ECONNREFUSED, FY_ENOENT (no socket), FY_ECONNRESET, FY_ETIMEDOUT,
     * FY_EPERM (AUTH refused: a wrong password, or a password the server
     * needs but the client lacks), FY_EIO (SELECT refused) ..., REASON a
     * sentence for the log). May be NULL. */
    void (*on_state)(void *data, int up, int err, const char *reason);
} fy_redis_ops;

/* Creates a client on LOOP and starts connecting (from the loop: no callback
 * runs before fy_redis_new returns). CFG is copied; OPS must outlive the
 * client; DATA is passed to OPS. Returns 0 with *OUT set, FY_EINVAL (bad
 * config) or FY_ENOMEM. */
int fy_redis_new(uv_loop_t *loop, const fy_redis_config *cfg, const fy_redis_ops *ops, void *data,
                 fy_redis **out);

/* Cancels everything pending (see "Close path" above) and closes the client.
 * NULL and a second call are ok. */
void fy_redis_free(fy_redis *cl);

/* 1 while the client is UP. */
int fy_redis_is_up(const fy_redis *cl);

/* Sends the command ARGV[0..ARGC) (ARGVLEN[i] bytes each; ARGVLEN NULL for
 * NUL-terminated strings). Returns 0, and then CB runs exactly once, or a
 * negative code, and then CB never runs: FY_EUNREACH (DOWN), FY_ELIMIT
 * (CONNECTING with a full queue), FY_ECLOSED (after fy_redis_free), FY_EINVAL
 * (ARGC 0 or over FY_REDIS_MAX_ARGS), FY_ENOMEM. */
int fy_redis_cmd(fy_redis *cl, fy_redis_reply_cb cb, void *data, int argc, const char *const *argv,
                 const size_t *argvlen);

/* ---- Lua scripts ------------------------------------------------------- */

typedef struct fy_redis_script fy_redis_script;

/* Registers SOURCE (NUL-terminated, at most FY_REDIS_MAX_SCRIPT bytes) and
 * computes its SHA1. The script belongs to the client and is freed with it.
 * Returns 0 with *OUT set, FY_ETOOBIG, FY_EINVAL, FY_ECLOSED or FY_ENOMEM. */
int fy_redis_script_new(fy_redis *cl, const char *source, fy_redis_script **out);

/* The script's SHA1 in lowercase hex (40 digits and a NUL). */
const char *fy_redis_script_sha(const fy_redis_script *s);

/* Runs the script with KEYS[0..NKEYS) and ARGS[0..NARGS) (lengths as for
 * fy_redis_cmd). It is sent as EVALSHA; when the server answers NOSCRIPT
 * (its script cache was flushed or restarted) the same call is sent once
 * more as EVAL, which also loads the script, and CB sees only that second
 * reply. Returns and calls back as fy_redis_cmd. */
int fy_redis_eval(fy_redis_script *s, fy_redis_reply_cb cb, void *data, int nkeys,
                  const char *const *keys, const size_t *keylens, int nargs,
                  const char *const *args, const size_t *arglens);

/* ---- pub/sub ----------------------------------------------------------- */

/* A message on a subscribed channel. The bytes are valid until it returns. */
typedef void (*fy_redis_message_cb)(void *data, const char *channel, size_t channel_len,
                                    const char *msg, size_t msg_len);

/* Subscribes to CHANNEL (CHANNEL_LEN bytes, at most FY_REDIS_MAX_CHANNEL)
 * for the life of the client: CB runs for every message published on it
 * while the pub/sub connection is up, and the client subscribes again after
 * every reconnect (messages published while it was down are lost, as
 * always with Redis pub/sub). Subscribing works in any state; the channel is
 * sent when the client is next UP. Returns 0, FY_EEXIST (already
 * subscribed), FY_ELIMIT (FY_REDIS_MAX_CHANNELS), FY_ETOOBIG, FY_EINVAL,
 * FY_ECLOSED or FY_ENOMEM. */
int fy_redis_subscribe(fy_redis *cl, const char *channel, size_t channel_len,
                       fy_redis_message_cb cb, void *data);

/* Channels the server has confirmed on the current pub/sub connection (0
 * while DOWN): a caller that must not miss a message published right after
 * subscribing waits until this counts its channel. */
int fy_redis_subscribed(const fy_redis *cl);

#endif
