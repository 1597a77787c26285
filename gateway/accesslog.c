#include "gateway/accesslog.h"

#include "common/err.h"
#include "common/utf8.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct fy_accesslog {
    char *path; /* NULL: through fy_log_event */
    pthread_mutex_t mu;
    int fd;
    atomic_uint_fast64_t errors;
};

static int err_from_errno(int e)
{
    switch (e) {
    case ENOENT:
    case ENOTDIR:
        return FY_ENOENT;
    case EACCES:
    case EPERM:
    case EROFS:
        return FY_EPERM;
    case ENOMEM:
        return FY_ENOMEM;
    default:
        return FY_EIO;
    }
}

static int open_file(const char *path, int *fd)
{
    int f = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (f < 0) {
        return err_from_errno(errno);
    }
    *fd = f;
    return 0;
}

int fy_accesslog_open(const char *path, fy_accesslog **out)
{
    fy_accesslog *log = calloc(1, sizeof *log);
    if (!log) {
        return FY_ENOMEM;
    }
    log->fd = -1;
    pthread_mutex_init(&log->mu, NULL);
    atomic_init(&log->errors, 0);
    if (path && strcmp(path, "-") != 0) {
        int rc = (log->path = strdup(path)) ? open_file(path, &log->fd) : FY_ENOMEM;
        if (rc) {
            fy_accesslog_close(log);
            return rc;
        }
    }
    *out = log;
    return 0;
}

int fy_accesslog_reopen(fy_accesslog *log)
{
    if (!log->path) {
        return 0;
    }
    int fd, rc = open_file(log->path, &fd);
    if (rc) {
        return rc;
    }
    pthread_mutex_lock(&log->mu);
    int old = log->fd;
    log->fd = fd;
    pthread_mutex_unlock(&log->mu);
    close(old);
    return 0;
}

void fy_accesslog_close(fy_accesslog *log)
{
    if (!log) {
        return;
    }
    if (log->fd >= 0) {
        close(log->fd);
    }
    pthread_mutex_destroy(&log->mu);
    free(log->path);
    free(log);
}

uint64_t fy_accesslog_errors(fy_accesslog *log)
{
    return atomic_load(&log->errors);
}

/* A JSON string for S (LEN bytes), or null. Bytes that are not part of a
 * valid UTF-8 character (a stranger's path can hold anything) become '?', so
 * the line stays valid JSON. */
static json_t *jstr(const char *s, size_t len)
{
    return s ? fy_utf8_json(s, len, "?", 1) : json_null();
}

static json_t *jstr0(const char *s)
{
    return jstr(s, s ? strlen(s) : 0);
}

static int is_b64url(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

/* Copies (S, N) into OUT (N + 1 bytes) with every "fy_" followed by 43 or
 * more base64url characters (a key pasted into a URL by mistake) replaced
 * by "fy_[redacted]", and returns the new length. */
static size_t redact(const char *s, size_t n, char *out)
{
    static const char mark[] = "fy_[redacted]";
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (i + 3 <= n && memcmp(s + i, "fy_", 3) == 0 && (i == 0 || !is_b64url(s[i - 1]))) {
            size_t j = i + 3;
            while (j < n && is_b64url(s[j])) {
                j++;
            }
            if (j - i - 3 >= 43) {
                memcpy(out + o, mark, sizeof mark - 1);
                o += sizeof mark - 1;
                i = j;
                continue;
            }
        }
        out[o++] = s[i++];
    }
    out[o] = 0;
    return o;
}

/* jstr of a redacted copy. */
static json_t *jstr_redacted(const char *s, size_t n)
{
    if (!s) {
        return json_null();
    }
    char *c = malloc(n + 1);
    if (!c) {
        return NULL;
    }
    json_t *j = jstr(c, redact(s, n, c));
    free(c);
    return j;
}

/* Milliseconds rounded to the microsecond, or null when negative. */
static json_t *jms(double ms)
{
    if (!(ms >= 0) || !isfinite(ms)) {
        return json_null();
    }
    if (ms > 1e12) {
        ms = 1e12; /* 30 years: keeps the conversion below in range */
    }
    /* Rounded by hand: the gateway library does not link libm. */
    return json_real((double)(int64_t)(ms * 1000.0 + 0.5) / 1000.0);
}

static json_t *jcount(int64_t v)
{
    return v < 0 ? json_null() : json_integer(v);
}

static json_t *entry_json(const fy_accesslog_entry *e)
{
    char when[40];
    time_t secs = (time_t)(e->time_ms / 1000);
    int ms = (int)(e->time_ms % 1000);
    struct tm tm;
    if (ms < 0) {
        secs--, ms += 1000;
    }
    gmtime_r(&secs, &tm);
    size_t n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof when - n, ".%03dZ", ms);

    size_t plen = 0;
    if (e->path) {
        plen = strcspn(e->path, "?");
        if (plen > FY_ACCESSLOG_PATH_MAX) {
            plen = FY_ACCESSLOG_PATH_MAX;
        }
    }
    json_t *o = json_object();
    if (!o) {
        return NULL;
    }
    /* json_object_set_new takes each value (also NULL, then failing), so a
     * failure anywhere leaves no leak; it is reported once at the end. */
    int bad = 0;
    bad |= json_object_set_new(o, "time", json_string(when));
    bad |= json_object_set_new(o, "request_id", jstr0(e->request_id));
    bad |= json_object_set_new(o, "key_id",
                               jstr_redacted(e->key_id, e->key_id ? strlen(e->key_id) : 0));
    bad |= json_object_set_new(o, "runner", jstr0(e->runner));
    bad |= json_object_set_new(o, "model", jstr0(e->model));
    bad |= json_object_set_new(o, "method", jstr0(e->method));
    bad |= json_object_set_new(o, "path", jstr_redacted(e->path, plen));
    bad |= json_object_set_new(o, "status", json_integer(e->status));
    bad |= json_object_set_new(o, "bytes_in", json_integer((json_int_t)e->bytes_in));
    bad |= json_object_set_new(o, "bytes_out", json_integer((json_int_t)e->bytes_out));
    bad |= json_object_set_new(o, "latency_ms", jms(e->latency_ms));
    bad |= json_object_set_new(o, "ttfb_ms", jms(e->ttfb_ms));
    bad |= json_object_set_new(o, "prompt_tokens", jcount(e->prompt_tokens));
    bad |= json_object_set_new(o, "completion_tokens", jcount(e->completion_tokens));
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* 12 significant digits: latencies rounded to the microsecond print as
 * "12.3", not "12.300000000000001". */
#define DUMP_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12))

int fy_accesslog_format(const fy_accesslog_entry *e, fy_buf *out)
{
    json_t *o = entry_json(e);
    char *s = o ? json_dumps(o, DUMP_FLAGS) : NULL;
    json_decref(o);
    if (!s) {
        return FY_ENOMEM;
    }
    size_t n = strlen(s);
    int rc = fy_buf_reserve(out, n + 1);
    if (!rc) {
        fy_buf_append(out, s, n);
        fy_buf_append(out, "\n", 1);
    }
    free(s);
    return rc;
}

int fy_accesslog_write(fy_accesslog *log, const fy_accesslog_entry *e)
{
    int rc;
    if (!log->path) {
        json_t *o = entry_json(e);
        if (!o) {
            atomic_fetch_add(&log->errors, 1);
            return FY_ENOMEM;
        }
        fy_log_event(FY_LOG_INFO, "access", "request", o);
        return 0;
    }
    fy_buf b;
    fy_buf_init(&b, FY_ACCESSLOG_LINE_MAX);
    rc = fy_accesslog_format(e, &b);
    if (!rc) {
        pthread_mutex_lock(&log->mu);
        ssize_t w;
        do {
            w = write(log->fd, b.data, b.len);
        } while (w < 0 && errno == EINTR);
        int saved = errno;
        pthread_mutex_unlock(&log->mu);
        rc = w == (ssize_t)b.len ? 0 : w < 0 ? err_from_errno(saved) : FY_EIO;
    }
    fy_buf_free(&b);
    if (rc) {
        atomic_fetch_add(&log->errors, 1);
    }
    return rc;
}
