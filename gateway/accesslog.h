/* accesslog.h: one JSON line per public request.
 *
 * Fields: time (RFC 3339, UTC, milliseconds), request_id, key_id (the
 * public "key_..." id, never the key), runner, model, method, path (without
 * the query string, which can carry secrets; at most FY_ACCESSLOG_PATH_MAX
 * bytes), status, bytes_in, bytes_out, latency_ms, ttfb_ms,
 * prompt_tokens, completion_tokens. Unknown values are JSON null. As a
 * backstop, anything shaped like a ferry key ("fy_" + 43 or more base64url
 * characters) in key_id or path is written as "fy_[redacted]", and bytes
 * that are not UTF-8 as '?'.
 *
 * Destination, chosen at open:
 *   - a file path: opened with O_APPEND (created 0640), each line written
 *     with one write(2), so lines from several threads or processes never
 *     interleave and log rotation by rename works with fy_accesslog_reopen
 *     (call it on SIGHUP);
 *   - NULL or "-": through fy_log_event (module "access", message
 *     "request") so the lines join the daemon's own log on stderr, and obey
 *     its format (JSON or text) and level (INFO).
 * A write that fails is counted (fy_accesslog_errors), never retried and
 * never fails the request.
 *
 * Integration (gateway/run.c, px.c):
 *   run.c:   fy_accesslog_open(gw->opt.access_log, &gw->access) at start-up,
 *            fy_accesslog_reopen on SIGHUP, fy_accesslog_close at exit;
 *   px.c:    when a request ends (finished, failed or aborted), fill a
 *            fy_accesslog_entry from the request and call
 *            fy_accesslog_write(gw->access, &e).
 *
 * Threads: fy_accesslog_write and fy_accesslog_reopen may be called from any
 * thread. */
#ifndef FY_GATEWAY_ACCESSLOG_H
#define FY_GATEWAY_ACCESSLOG_H

#include "common/buf.h"

#include <stdint.h>

#define FY_ACCESSLOG_PATH_MAX 2048  /* bytes of the path kept in a line */
#define FY_ACCESSLOG_LINE_MAX 16384 /* a longer line is not written */

typedef struct fy_accesslog fy_accesslog;

typedef struct {
    int64_t time_ms;        /* wall clock, unix milliseconds */
    const char *request_id; /* NULL = unknown */
    const char *key_id;     /* fy_key_id(); NULL before authentication */
    const char *runner;     /* NULL = not routed */
    const char *model;      /* NULL = none */
    const char *method;
    const char *path; /* the query ("?...") is dropped here */
    int status;
    uint64_t bytes_in, bytes_out;
    double latency_ms;
    double ttfb_ms;            /* < 0: no byte was sent */
    int64_t prompt_tokens;     /* < 0: not reported */
    int64_t completion_tokens; /* < 0: not reported */
} fy_accesslog_entry;

/* Opens the log at PATH (see above). Returns 0, FY_ENOMEM or the open(2)
 * error as an FY_E* code (FY_ENOENT, FY_EPERM, FY_EIO). */
int fy_accesslog_open(const char *path, fy_accesslog **out);

/* Reopens the file (after a rotation). No-op for the stderr log. Returns 0
 * or an FY_E* code (the old file stays in use then). */
int fy_accesslog_reopen(fy_accesslog *log);

void fy_accesslog_close(fy_accesslog *log); /* NULL is ok */

/* Appends E's JSON line, with its '\n', to OUT. Returns 0, FY_ENOMEM or
 * FY_ETOOBIG (OUT's cap). */
int fy_accesslog_format(const fy_accesslog_entry *e, fy_buf *out);

/* Writes E. Returns 0 or the error (also counted). */
int fy_accesslog_write(fy_accesslog *log, const fy_accesslog_entry *e);

/* Lines that could not be written since open. */
uint64_t fy_accesslog_errors(fy_accesslog *log);

#endif
