#include "buf.h"

#include "err.h"

#include <mbedtls/platform_util.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void fy_buf_init(fy_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void fy_buf_free(fy_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void fy_buf_wipe(fy_buf *b)
{
    if (b->data) {
        mbedtls_platform_zeroize(b->data, b->cap);
    }
    fy_buf_free(b);
}

int fy_buf_reserve(fy_buf *b, size_t n)
{
    if (n > b->max || b->len > b->max - n) {
        return FY_ETOOBIG;
    }
    size_t need = b->len + n;
    if (need <= b->cap) {
        return 0;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    }
    /* One spare byte past max lets fy_buf_cstr terminate a full buffer. */
    if (cap > b->max + 1) {
        cap = b->max + 1;
    }
    char *p = realloc(b->data, cap);
    if (!p) {
        return FY_ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int fy_buf_append(fy_buf *b, const void *p, size_t n)
{
    if (n == 0) {
        return 0;
    }
    int rc = fy_buf_reserve(b, n);
    if (rc) {
        return rc;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int fy_buf_append_str(fy_buf *b, const char *s)
{
    return fy_buf_append(b, s, strlen(s));
}

int fy_buf_appendf(fy_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return FY_EINVAL;
    }
    /* Reserve one extra byte for vsnprintf's terminator; it is not counted. */
    int rc = fy_buf_reserve(b, (size_t)n);
    if (rc) {
        return rc;
    }
    if (b->cap < b->len + (size_t)n + 1) {
        char *p = realloc(b->data, b->len + (size_t)n + 1);
        if (!p) {
            return FY_ENOMEM;
        }
        b->data = p;
        b->cap = b->len + (size_t)n + 1;
    }
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void fy_buf_consume(fy_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

const char *fy_buf_cstr(fy_buf *b)
{
    if (b->cap < b->len + 1) {
        char *p = realloc(b->data, b->len + 1);
        if (!p) {
            return NULL;
        }
        b->data = p;
        b->cap = b->len + 1;
    }
    b->data[b->len] = '\0';
    return b->data;
}

char *fy_buf_steal(fy_buf *b, size_t *len)
{
    char *p = b->data;
    if (len) {
        *len = b->len;
    }
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}

int fy_slice_ieq(fy_slice s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && strncasecmp(s.base, lit, n) == 0;
}
