#include "log.h"

#include "err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* The parsed configuration: set once before threads start. */
static fy_log_level g_level = FY_LOG_INFO;
static fy_log_format g_format = FY_LOG_TEXT;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void fy_log_setup(fy_log_level level, fy_log_format format)
{
    g_level = level;
    g_format = format;
}

int fy_log_level_parse(const char *s, fy_log_level *out)
{
    for (int i = 0; i <= FY_LOG_OFF; i++) {
        if (s && strcmp(s, level_names[i]) == 0) {
            *out = (fy_log_level)i;
            return 0;
        }
    }
    return FY_EINVAL;
}

int fy_log_format_parse(const char *s, fy_log_format *out)
{
    if (s && strcmp(s, "text") == 0) {
        *out = FY_LOG_TEXT;
    } else if (s && strcmp(s, "json") == 0) {
        *out = FY_LOG_JSON;
    } else {
        return FY_EINVAL;
    }
    return 0;
}

int fy_log_enabled(fy_log_level level)
{
    return level >= g_level && level < FY_LOG_OFF;
}

static void format_time(char *out, size_t n)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + k, n - k, ".%03ldZ", (long)(tv.tv_usec / 1000));
}

/* One write(2) per line so concurrent writers never interleave within a line. */
static void write_line(const char *s, size_t len)
{
    while (len > 0) {
        ssize_t w = write(STDERR_FILENO, s, len);
        if (w <= 0) {
            return;
        }
        s += w;
        len -= (size_t)w;
    }
}

static void emit(fy_log_level level, const char *module, const char *msg, json_t *fields)
{
    char ts[40];
    format_time(ts, sizeof ts);
    if (g_format == FY_LOG_JSON) {
        json_t *o = json_object();
        json_object_set_new(o, "ts", json_string(ts));
        json_object_set_new(o, "level", json_string(level_names[level]));
        json_object_set_new(o, "module", json_string(module ? module : "-"));
        json_object_set_new(o, "msg", json_string(msg));
        if (fields) {
            json_object_update(o, fields);
        }
        char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
        json_decref(o);
        if (s) {
            size_t n = strlen(s);
            char *line = malloc(n + 2);
            if (line) {
                memcpy(line, s, n);
                line[n] = '\n';
                write_line(line, n + 1);
                free(line);
            }
            free(s);
        }
        return;
    }
    char line[4096];
    int n = snprintf(line, sizeof line, "%s %-5s [%s] %s", ts, level_names[level],
                     module ? module : "-", msg);
    if (n < 0) {
        return;
    }
    size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    if (fields) {
        const char *key;
        json_t *val;
        json_object_foreach(fields, key, val)
        {
            char *v = json_is_string(val) ? NULL : json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);
            int k = snprintf(line + len, sizeof line - len, " %s=%s", key,
                             v ? v : json_string_value(val));
            free(v);
            if (k < 0 || (size_t)k >= sizeof line - len) {
                len = sizeof line - 1;
                break;
            }
            len += (size_t)k;
        }
    }
    if (len >= sizeof line - 1) {
        len = sizeof line - 2;
    }
    line[len++] = '\n';
    write_line(line, len);
}

void fy_logv(fy_log_level level, const char *module, const char *fmt, va_list ap)
{
    if (!fy_log_enabled(level)) {
        return;
    }
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    emit(level, module, msg, NULL);
}

void fy_logf(fy_log_level level, const char *module, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fy_logv(level, module, fmt, ap);
    va_end(ap);
}

void fy_log_event(fy_log_level level, const char *module, const char *msg, json_t *fields)
{
    if (fy_log_enabled(level)) {
        emit(level, module, msg, fields);
    }
    json_decref(fields);
}
