/* log.h: leveled logging to stderr, as text or as JSON lines.
 *
 * The log configuration is process-wide (set once at start-up from the parsed
 * arguments, before threads start); writes are whole lines, each emitted with
 * one write(2) so lines from several threads never interleave.
 * Secrets (API keys, tokens, private keys) must never be passed to a log call. */
#ifndef FY_LOG_H
#define FY_LOG_H

#include <jansson.h>
#include <stdarg.h>

typedef enum { FY_LOG_DEBUG = 0, FY_LOG_INFO, FY_LOG_WARN, FY_LOG_ERROR, FY_LOG_OFF } fy_log_level;
typedef enum { FY_LOG_TEXT = 0, FY_LOG_JSON } fy_log_format;

/* Sets the minimum level and output format. Defaults: INFO, TEXT. */
void fy_log_setup(fy_log_level level, fy_log_format format);

/* Parses "debug|info|warn|error|off" and "text|json". Return 0 or FY_EINVAL. */
int fy_log_level_parse(const char *s, fy_log_level *out);
int fy_log_format_parse(const char *s, fy_log_format *out);

/* 1 when a message at LEVEL would be written (to skip building costly ones). */
int fy_log_enabled(fy_log_level level);

/* Writes one line. MODULE is a short static tag ("tls", "http"). */
void fy_logf(fy_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void fy_logv(fy_log_level level, const char *module, const char *fmt, va_list ap);

/* Writes one structured event: MSG plus the members of FIELDS (an object, may
 * be NULL) as top-level keys in JSON mode, or as key=value pairs in text mode.
 * Takes ownership of FIELDS (decrefs it). */
void fy_log_event(fy_log_level level, const char *module, const char *msg, json_t *fields);

#define FY_DEBUG(mod, ...) fy_logf(FY_LOG_DEBUG, mod, __VA_ARGS__)
#define FY_INFO(mod, ...)  fy_logf(FY_LOG_INFO, mod, __VA_ARGS__)
#define FY_WARN(mod, ...)  fy_logf(FY_LOG_WARN, mod, __VA_ARGS__)
#define FY_ERROR(mod, ...) fy_logf(FY_LOG_ERROR, mod, __VA_ARGS__)

#endif
