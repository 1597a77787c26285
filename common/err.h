/* err.h: ferry's one error type.
 *
 * Every fallible function returns 0 (FY_OK) or a negative code from the table
 * below (or a non-negative count where its header says so). Codes are stable
 * within a build; fy_strerror() names them for people. libuv's negative errno
 * values are translated with fy_err_from_uv() at the boundary so callers see
 * one vocabulary. */
#ifndef FY_ERR_H
#define FY_ERR_H

#include <stddef.h>

/* X(name, value, message) */
#define FY_ERR_MAP(X)                                                     \
    X(AGAIN, -1, "try again later (non-blocking operation would block)")  \
    X(NOMEM, -2, "out of memory")                                         \
    X(INVAL, -3, "invalid argument")                                      \
    X(IO, -4, "input/output error")                                       \
    X(TIMEDOUT, -5, "operation timed out")                                \
    X(CANCELED, -6, "operation canceled")                                 \
    X(EOF, -7, "end of stream")                                           \
    X(CLOSED, -8, "connection or object already closed")                  \
    X(TOOBIG, -9, "value exceeds its configured limit")                   \
    X(PROTO, -10, "protocol violation by peer")                           \
    X(TLS, -11, "TLS failure")                                            \
    X(CERT, -12, "certificate rejected")                                  \
    X(NOENT, -13, "no such file, key or object")                          \
    X(EXIST, -14, "already exists")                                       \
    X(PERM, -15, "permission denied")                                     \
    X(CONNREFUSED, -16, "connection refused")                             \
    X(CONNRESET, -17, "connection reset by peer")                         \
    X(ADDRINUSE, -18, "address already in use")                           \
    X(PARSE, -19, "malformed input")                                      \
    X(LIMIT, -20, "too many (connection, stream or queue limit reached)") \
    X(CRYPTO, -21, "cryptographic operation failed")                      \
    X(NOTSUP, -22, "not supported")                                       \
    X(BUSY, -23, "resource busy")                                         \
    X(UV, -24, "event loop error")                                        \
    X(UNREACH, -25, "host or network unreachable")                        \
    X(PIPE, -26, "broken pipe")

enum {
    FY_OK = 0,
#define FY__ERR_ENUM(name, value, msg) FY_E##name = (value),
    FY_ERR_MAP(FY__ERR_ENUM)
#undef FY__ERR_ENUM
};

/* Human-readable text for an error code; never NULL. Unknown codes get a
 * generic string. */
const char *fy_strerror(int err);

/* Short symbolic name ("TIMEDOUT"); never NULL. */
const char *fy_err_name(int err);

/* Maps a libuv error (UV_E*) to a FY_E* code. 0 stays 0. */
int fy_err_from_uv(int uverr);

/* Writes the printf-style message to ERR (when ERR and ERRLEN are set) and
 * returns RC: `return fy_fail(err, errlen, FY_EINVAL, "x: %s", why);`. */
int fy_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
