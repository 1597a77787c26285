/* http_util.c: what the HTTP server and client share: header lookup, status
 * texts, the JSON error body, URL parsing and head serialization helpers. */
#include "err.h"
#include "http.h"
#include "http_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static int name_eq(const fy_http_header *h, const char *name, size_t len)
{
    size_t hl = h->name_len ? h->name_len : strlen(h->name);
    return hl == len && strncasecmp(h->name, name, len) == 0;
}

const char *fy_http_header_next(const fy_http_header *h, size_t n, const char *name, size_t *iter)
{
    size_t len = strlen(name);
    for (size_t i = *iter; i < n; i++) {
        if (name_eq(&h[i], name, len)) {
            *iter = i + 1;
            return h[i].value;
        }
    }
    *iter = n;
    return NULL;
}

const char *fy_http_header_find(const fy_http_header *h, size_t n, const char *name)
{
    size_t it = 0;
    return fy_http_header_next(h, n, name, &it);
}

int fy_http_has_token(const char *value, const char *token)
{
    size_t tl = strlen(token);
    const char *p = value;
    while (p && *p) {
        while (*p == ' ' || *p == '\t' || *p == ',') {
            p++;
        }
        const char *start = p;
        while (*p && *p != ',') {
            p++;
        }
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t')) {
            end--;
        }
        if ((size_t)(end - start) == tl && strncasecmp(start, token, tl) == 0) {
            return 1;
        }
    }
    return 0;
}

const char *fy_http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 499:
        return "Client Closed Request";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    }
    return "Unknown";
}

/* Appends S JSON-escaped to OUT[*pos..cap-reserve); stops early rather than
 * split an escape or a character, so the result stays valid JSON. Bytes that
 * are not valid UTF-8 become U+FFFD, one per byte. */
static void json_escape(char *out, size_t cap, size_t *pos, const char *s, size_t reserve)
{
    static const char hex[] = "0123456789abcdef";
    while (s && *s) {
        const unsigned char *u = (const unsigned char *)s;
        char esc[7];
        size_t n, used = 1;
        if (u[0] == '"' || u[0] == '\\') {
            esc[0] = '\\';
            esc[1] = (char)u[0];
            n = 2;
        } else if (u[0] < 0x20 || u[0] == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[u[0] >> 4];
            esc[5] = hex[u[0] & 15];
            n = 6;
        } else if (u[0] < 0x80) {
            esc[0] = (char)u[0];
            n = 1;
        } else {
            /* A whole valid sequence is copied; anything else is U+FFFD. */
            size_t len = u[0] >= 0xc2 && u[0] <= 0xdf   ? 2
                         : u[0] >= 0xe0 && u[0] <= 0xef ? 3
                         : u[0] >= 0xf0 && u[0] <= 0xf4 ? 4
                                                        : 0;
            unsigned lo = u[0] == 0xe0 ? 0xa0 : u[0] == 0xf0 ? 0x90 : 0x80;
            unsigned hi = u[0] == 0xed ? 0x9f : u[0] == 0xf4 ? 0x8f : 0xbf;
            size_t k = len ? 1 : 0;
            if (len && u[1] >= lo && u[1] <= hi) {
                for (k = 2; k < len && (u[k] & 0xc0) == 0x80; k++) {
                }
            }
            if (len && k == len) {
                memcpy(esc, s, len);
                n = used = len;
            } else {
                memcpy(esc, "\xef\xbf\xbd", 3);
                n = 3;
            }
        }
        if (*pos + n + reserve >= cap) {
            return;
        }
        memcpy(out + *pos, esc, n);
        *pos += n;
        s += used;
    }
}

static void put(char *out, size_t cap, size_t *pos, const char *s)
{
    size_t n = strlen(s);
    if (*pos + n < cap) {
        memcpy(out + *pos, s, n);
        *pos += n;
    }
}

static void put_string_or_null(char *out, size_t cap, size_t *pos, const char *s)
{
    if (s && *s) {
        put(out, cap, pos, "\"");
        json_escape(out, cap, pos, s, 6);
        put(out, cap, pos, "\"");
    } else {
        put(out, cap, pos, "null");
    }
}

const char *fy_http_error_type(int status)
{
    return status >= 500 ? "server_error" : "invalid_request_error";
}

size_t fy_http_error_json(char *out, size_t outlen, int status, const char *code, const char *param,
                          const char *message)
{
    /* Room kept for the tail ","type":"invalid_request_error","param":..,"code":..}}\n
     * with PARAM and CODE escaped (at most 6 bytes each per byte), so they
     * are never the part that is cut. */
    size_t pl = param ? strnlen(param, FY_HTTP_ERROR_MAX_PARAM) : 0;
    size_t cl = code ? strnlen(code, FY_HTTP_ERROR_MAX_CODE) : 0;
    const size_t tail = 6 * (pl + cl) + 72;
    size_t pos = 0;
    if (outlen == 0) {
        return 0;
    }
    put(out, outlen, &pos, "{\"error\":{\"message\":\"");
    json_escape(out, outlen, &pos, message, tail);
    put(out, outlen, &pos, "\",\"type\":\"");
    put(out, outlen, &pos, fy_http_error_type(status));
    put(out, outlen, &pos, "\",\"param\":");
    put_string_or_null(out, outlen, &pos, param);
    put(out, outlen, &pos, ",\"code\":");
    put_string_or_null(out, outlen, &pos, code);
    put(out, outlen, &pos, "}}\n");
    out[pos < outlen ? pos : outlen - 1] = '\0';
    return pos;
}

int fy_http_url_parse(const char *url, fy_http_url *out)
{
    memset(out, 0, sizeof *out);
    if (!url) {
        return FY_EINVAL;
    }
    const char *p;
    if (strncasecmp(url, "http://", 7) == 0) {
        p = url + 7;
        out->port = 80;
    } else if (strncasecmp(url, "https://", 8) == 0) {
        p = url + 8;
        out->tls = 1;
        out->port = 443;
    } else {
        return FY_EINVAL;
    }
    for (const char *q = url; *q; q++) {
        if ((unsigned char)*q <= 0x20 || *q == 0x7f || *q == '#') {
            return FY_EINVAL;
        }
    }
    const char *auth_end = p + strcspn(p, "/?");
    const char *hs = p, *he;
    const char *portp = NULL;
    if (memchr(p, '@', (size_t)(auth_end - p))) {
        return FY_EINVAL;
    }
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(auth_end - p));
        if (!rb) {
            return FY_EINVAL;
        }
        hs = p + 1;
        he = rb;
        if (rb + 1 < auth_end) {
            if (rb[1] != ':') {
                return FY_EINVAL;
            }
            portp = rb + 2;
        }
    } else {
        const char *colon = memchr(p, ':', (size_t)(auth_end - p));
        he = colon ? colon : auth_end;
        portp = colon ? colon + 1 : NULL;
    }
    if (he <= hs || (size_t)(he - hs) >= sizeof out->host) {
        return FY_EINVAL;
    }
    for (const char *q = hs; q < he; q++) {
        char ch = *q;
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '.' || ch == '-' || ch == '_' || (ch == ':' && *p == '[');
        if (!ok) {
            return FY_EINVAL;
        }
    }
    memcpy(out->host, hs, (size_t)(he - hs));
    out->host[he - hs] = '\0';
    out->default_port = 1;
    if (portp) {
        if (portp == auth_end || auth_end - portp > 5) {
            return FY_EINVAL;
        }
        int port = 0;
        for (const char *q = portp; q < auth_end; q++) {
            if (*q < '0' || *q > '9') {
                return FY_EINVAL;
            }
            port = port * 10 + (*q - '0');
        }
        if (port < 1 || port > 65535) {
            return FY_EINVAL;
        }
        out->default_port = port == out->port;
        out->port = port;
    }
    out->target = *auth_end ? auth_end : "/";
    /* "http://h?q" has a query but no path: the target must start with '/'. */
    if (out->target[0] == '?') {
        return FY_EINVAL;
    }
    return 0;
}

int fy_http_hop_by_hop(const char *name, size_t len, const char *connection)
{
    static const char *const fixed[] = {"connection", "keep-alive",        "te",      "trailer",
                                        "trailers",   "transfer-encoding", "upgrade", NULL};
    for (size_t i = 0; fixed[i]; i++) {
        if (strlen(fixed[i]) == len && strncasecmp(name, fixed[i], len) == 0) {
            return 1;
        }
    }
    if (len >= 6 && strncasecmp(name, "proxy-", 6) == 0) {
        return 1;
    }
    if (connection && len > 0 && len < 128) {
        char tmp[128];
        memcpy(tmp, name, len);
        tmp[len] = '\0';
        return fy_http_has_token(connection, tmp);
    }
    return 0;
}

/* --- internal helpers ---------------------------------------------------- */

int fy__http_header_ok(const char *name, size_t nl, const char *value, size_t vl)
{
    if (nl == 0) {
        return 0;
    }
    for (size_t i = 0; i < nl; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == ':') {
            return 0;
        }
    }
    for (size_t i = 0; i < vl; i++) {
        unsigned char ch = (unsigned char)value[i];
        if (ch == '\r' || ch == '\n' || ch == '\0') {
            return 0;
        }
    }
    return 1;
}

int fy__http_is_hop_header(const char *name, size_t nl)
{
    switch (nl) {
    case 10:
        return strncasecmp(name, "connection", 10) == 0;
    case 14:
        return strncasecmp(name, "content-length", 14) == 0;
    case 17:
        return strncasecmp(name, "transfer-encoding", 17) == 0;
    }
    return 0;
}

int fy__http_append_headers(fy_buf *b, const fy_http_header *h, size_t n, const char *skip)
{
    size_t skl = skip ? strlen(skip) : 0;
    for (size_t i = 0; i < n; i++) {
        size_t nl = h[i].name_len ? h[i].name_len : strlen(h[i].name);
        size_t vl = h[i].value_len ? h[i].value_len : strlen(h[i].value);
        if (!fy__http_header_ok(h[i].name, nl, h[i].value, vl)) {
            return FY_EINVAL;
        }
        if (fy__http_is_hop_header(h[i].name, nl) ||
            (skip && nl == skl && strncasecmp(h[i].name, skip, nl) == 0)) {
            continue;
        }
        int rc = fy_buf_reserve(b, nl + vl + 4);
        if (rc) {
            return rc;
        }
        char *w = b->data + b->len;
        memcpy(w, h[i].name, nl);
        w += nl;
        *w++ = ':';
        *w++ = ' ';
        memcpy(w, h[i].value, vl);
        w += vl;
        *w++ = '\r';
        *w++ = '\n';
        b->len = (size_t)(w - b->data);
    }
    return 0;
}

size_t fy__http_chunk_head(char *out, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = hex[len & 15];
        len >>= 4;
    } while (len);
    for (size_t i = 0; i < n; i++) {
        out[i] = tmp[n - 1 - i];
    }
    out[n] = '\r';
    out[n + 1] = '\n';
    return n + 2;
}

void fy__http_date(fy__http_date_cache *dc, char out[32])
{
    time_t now = time(NULL);
    if (now != dc->when) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(dc->text, sizeof dc->text, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        dc->len = strlen(dc->text);
        dc->when = now;
    }
    memcpy(out, dc->text, dc->len + 1);
}

/* RFC 9110 tchar: the bytes allowed in a token (header names, methods). */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,  ['~'] = 1, ['0'] = 1,
    ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,  ['7'] = 1, ['8'] = 1,
    ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,  ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1,  ['N'] = 1, ['O'] = 1,
    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1,
    ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1,  ['d'] = 1, ['e'] = 1,
    ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1,  ['l'] = 1, ['m'] = 1,
    ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,  ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

/* Shared header-arena parsing. During parsing, names and values are appended
 * to the arena with offsets recorded; pointers are fixed up once the block is
 * complete because the arena may move while it grows. */
/* Room for one more field: the owner's arrays, or ours grown. */
static int hdr_room(fy__http_hdrs *hp)
{
    if (hp->n >= hp->max) {
        return FY_ELIMIT;
    }
    if (hp->n < hp->cap) {
        return 0;
    }
    if (hp->cap && !hp->grown) {
        return FY_ELIMIT; /* fixed arrays smaller than max: the owner's cap */
    }
    size_t cap = hp->cap ? hp->cap * 2 : 16;
    if (cap > hp->max) {
        cap = hp->max;
    }
    fy__http_hdr_off *offs = realloc(hp->offs, cap * sizeof *offs);
    if (!offs) {
        return FY_ENOMEM;
    }
    hp->offs = offs;
    fy_http_header *h = realloc(hp->h, cap * sizeof *h);
    if (!h) {
        return FY_ENOMEM;
    }
    hp->h = h;
    hp->cap = cap;
    hp->grown = 1;
    return 0;
}

void fy__http_hdr_free(fy__http_hdrs *hp)
{
    if (hp->grown) {
        free(hp->offs);
        free(hp->h);
        hp->offs = NULL;
        hp->h = NULL;
        hp->cap = 0;
        hp->grown = 0;
    }
}

int fy__http_hdr_field(fy__http_hdrs *hp, const char *at, size_t len)
{
    if (hp->state != 1) {
        int rc = hdr_room(hp);
        if (rc) {
            return rc;
        }
        hp->offs[hp->n].name_off = (uint32_t)hp->arena.len;
        hp->offs[hp->n].name_len = 0;
        hp->offs[hp->n].value_off = 0;
        hp->offs[hp->n].value_len = 0;
        hp->n++;
        hp->state = 1;
    }
    int rc = fy_buf_append(&hp->arena, at, len);
    if (rc) {
        return rc;
    }
    hp->offs[hp->n - 1].name_len += (uint32_t)len;
    return 0;
}

int fy__http_hdr_field_done(fy__http_hdrs *hp)
{
    /* Terminate the name; the value starts right after. */
    int rc = fy_buf_append(&hp->arena, "", 1);
    if (rc) {
        return rc;
    }
    if (hp->state != 1) {
        /* An empty name cannot happen (llhttp refuses it); be safe anyway. */
        return FY_EPROTO;
    }
    /* llhttp's loose mode lets odd bytes (spaces, controls) into names; a
     * name that is not a token is refused, as RFC 9112 5.1 asks. */
    const unsigned char *nm = (const unsigned char *)hp->arena.data + hp->offs[hp->n - 1].name_off;
    for (uint32_t i = 0; i < hp->offs[hp->n - 1].name_len; i++) {
        if (!tchar[nm[i]]) {
            return FY_EPROTO;
        }
    }
    hp->offs[hp->n - 1].value_off = (uint32_t)hp->arena.len;
    hp->state = 2;
    return 0;
}

int fy__http_hdr_value(fy__http_hdrs *hp, const char *at, size_t len)
{
    if (hp->state != 2) {
        return FY_EPROTO;
    }
    int rc = fy_buf_append(&hp->arena, at, len);
    if (rc) {
        return rc;
    }
    hp->offs[hp->n - 1].value_len += (uint32_t)len;
    return 0;
}

int fy__http_hdr_value_done(fy__http_hdrs *hp)
{
    if (hp->state == 1) {
        /* "Name:" with no value: llhttp skips on_header_value entirely. */
        int rc = fy__http_hdr_field_done(hp);
        if (rc) {
            return rc;
        }
    }
    if (hp->state != 2) {
        return FY_EPROTO;
    }
    /* Trailing whitespace is not part of the value (RFC 9110 5.5). */
    uint32_t *vl = &hp->offs[hp->n - 1].value_len;
    const char *v = hp->arena.data + hp->offs[hp->n - 1].value_off;
    while (*vl > 0 && (v[*vl - 1] == ' ' || v[*vl - 1] == '\t')) {
        (*vl)--;
        hp->arena.len--;
    }
    int rc = fy_buf_append(&hp->arena, "", 1);
    if (rc) {
        return rc;
    }
    hp->state = 3;
    return 0;
}

void fy__http_hdr_fixup(fy__http_hdrs *hp)
{
    for (size_t i = 0; i < hp->n; i++) {
        hp->h[i].name = hp->arena.data + hp->offs[i].name_off;
        hp->h[i].name_len = hp->offs[i].name_len;
        hp->h[i].value = hp->arena.data + hp->offs[i].value_off;
        hp->h[i].value_len = hp->offs[i].value_len;
    }
}

void fy__http_hdr_reset(fy__http_hdrs *hp)
{
    hp->n = 0;
    hp->state = 0;
    fy_buf_reset(&hp->arena);
}
