#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <uv.h>

const char *fy_strerror(int err)
{
    switch (err) {
    case FY_OK:
        return "success";
#define FY__ERR_STR(name, value, msg) \
    case FY_E##name:                  \
        return msg;
        FY_ERR_MAP(FY__ERR_STR)
#undef FY__ERR_STR
    }
    return "unknown error";
}

const char *fy_err_name(int err)
{
    switch (err) {
    case FY_OK:
        return "OK";
#define FY__ERR_NAME(name, value, msg) \
    case FY_E##name:                   \
        return #name;
        FY_ERR_MAP(FY__ERR_NAME)
#undef FY__ERR_NAME
    }
    return "UNKNOWN";
}

int fy_err_from_uv(int uverr)
{
    switch (uverr) {
    case 0:
        return FY_OK;
    case UV_EAGAIN:
        return FY_EAGAIN;
    case UV_ENOMEM:
    case UV_ENOBUFS:
        return FY_ENOMEM;
    case UV_EINVAL:
        return FY_EINVAL;
    case UV_ETIMEDOUT:
        return FY_ETIMEDOUT;
    case UV_ECANCELED:
        return FY_ECANCELED;
    case UV_EOF:
        return FY_EEOF;
    case UV_ENOENT:
        return FY_ENOENT;
    case UV_EEXIST:
        return FY_EEXIST;
    case UV_EACCES:
    case UV_EPERM:
        return FY_EPERM;
    case UV_ECONNREFUSED:
        return FY_ECONNREFUSED;
    case UV_ECONNRESET:
    case UV_ECONNABORTED:
        return FY_ECONNRESET;
    case UV_EADDRINUSE:
        return FY_EADDRINUSE;
    case UV_EPIPE:
        return FY_EPIPE;
    case UV_EHOSTUNREACH:
    case UV_ENETUNREACH:
        return FY_EUNREACH;
    case UV_EMFILE:
    case UV_ENFILE:
        return FY_ELIMIT;
    case UV_EBUSY:
        return FY_EBUSY;
    case UV_ENOTSUP:
        return FY_ENOTSUP;
    case UV_EIO:
        return FY_EIO;
    }
    return FY_EUV;
}

int fy_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}
