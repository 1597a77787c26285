/* proto/frame.c: frame encoder and incremental decoder (PROTOCOL.md 2-3). */
#include "proto/frame.h"

#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FYP_MAGIC 0x46595450u /* "FYTP" */

const char *fyp_errcode_name(uint32_t code)
{
    switch (code) {
#define FYP__ERRCODE_NAME(sym, wire, value, msg) \
    case (value):                                \
        return wire;
        FYP_ERRCODE_MAP(FYP__ERRCODE_NAME)
#undef FYP__ERRCODE_NAME
    }
    return "UNKNOWN";
}

void fyp_settings_default(fyp_settings *s)
{
    s->max_frame_size = FYP_DEFAULT_MAX_FRAME_SIZE;
    s->max_header_block = FYP_DEFAULT_MAX_HEADER_BLOCK;
    s->initial_stream_window = FYP_DEFAULT_STREAM_WINDOW;
    s->connection_window = FYP_DEFAULT_CONNECTION_WINDOW;
    s->max_concurrent_streams = FYP_DEFAULT_MAX_STREAMS;
    s->heartbeat_ms = FYP_DEFAULT_HEARTBEAT_MS;
}

int fyp_settings_validate(const fyp_settings *s)
{
    if (s->max_frame_size < FYP_MIN_FRAME_SIZE || s->max_frame_size > FYP_MAX_FRAME_SIZE_LIMIT) {
        return FY_EINVAL;
    }
    if (s->max_header_block < FYP_MIN_HEADER_BLOCK || s->max_header_block > s->max_frame_size) {
        return FY_EINVAL;
    }
    if (s->initial_stream_window < 1 || s->initial_stream_window > FYP_MAX_WINDOW) {
        return FY_EINVAL;
    }
    if (s->connection_window < 1 || s->connection_window > FYP_MAX_WINDOW) {
        return FY_EINVAL;
    }
    if (s->heartbeat_ms != 0 &&
        (s->heartbeat_ms < FYP_MIN_HEARTBEAT_MS || s->heartbeat_ms > FYP_MAX_HEARTBEAT_MS)) {
        return FY_EINVAL;
    }
    return 0;
}

const fyp_field *fyp_fields_get(const fyp_fields *fields, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < fields->n; i++) {
        const fyp_field *f = &fields->v[i];
        if (f->name.len == len && strncasecmp(f->name.base, name, len) == 0) {
            return f;
        }
    }
    return NULL;
}

/* ---- Character classes (PROTOCOL.md 2.2) ---- */

static int is_tchar(uint8_t c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
        return 1;
    }
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int is_text(uint8_t c)
{
    return c >= 0x21 && c <= 0x7e;
}

static int is_value(uint8_t c)
{
    return c != 0 && c != '\r' && c != '\n';
}

static int all_of(const void *p, size_t n, int (*cls)(uint8_t))
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        if (!cls(b[i])) {
            return 0;
        }
    }
    return 1;
}

/* Which flags each known type allows, and whether it needs stream 0. */
static const uint8_t allowed_flags[FYP_FRAME_TYPE_COUNT] = {
    [FYP_FRAME_DATA] = FYP_FLAG_END_STREAM,
    [FYP_FRAME_REQUEST] = FYP_FLAG_END_STREAM,
    [FYP_FRAME_RESPONSE] = FYP_FLAG_END_STREAM,
    [FYP_FRAME_TRAILERS] = FYP_FLAG_END_STREAM | FYP_FLAG_USAGE,
    [FYP_FRAME_RST_STREAM] = FYP_FLAG_ACK,
};

enum { SID_ZERO, SID_STREAM, SID_ANY };
static const uint8_t sid_rule[FYP_FRAME_TYPE_COUNT] = {
    [FYP_FRAME_DATA] = SID_STREAM,       [FYP_FRAME_REQUEST] = SID_STREAM,
    [FYP_FRAME_RESPONSE] = SID_STREAM,   [FYP_FRAME_TRAILERS] = SID_STREAM,
    [FYP_FRAME_RST_STREAM] = SID_STREAM, [FYP_FRAME_WINDOW_UPDATE] = SID_ANY,
    [FYP_FRAME_PING] = SID_ZERO,         [FYP_FRAME_PONG] = SID_ZERO,
    [FYP_FRAME_GOAWAY] = SID_ZERO,       [FYP_FRAME_HELLO] = SID_ZERO,
    [FYP_FRAME_HELLO_ACK] = SID_ZERO,
};

static const char *const type_names[FYP_FRAME_TYPE_COUNT] = {
    "DATA", "REQUEST", "RESPONSE", "TRAILERS", "RST_STREAM", "WINDOW_UPDATE",
    "PING", "PONG",    "GOAWAY",   "HELLO",    "HELLO_ACK",
};

static const char *type_name(uint8_t t)
{
    return t < FYP_FRAME_TYPE_COUNT ? type_names[t] : "unknown";
}

/* ---- Encoder ---- */

static int check_fields(const fyp_fields *fl, size_t max)
{
    if (fl->n > max || (fl->n && !fl->v)) {
        return FY_EINVAL;
    }
    for (size_t i = 0; i < fl->n; i++) {
        const fyp_field *f = &fl->v[i];
        if (f->name.len < 1 || f->name.len > 0xffff || f->value.len > 0xffff ||
            !all_of(f->name.base, f->name.len, is_tchar) ||
            !all_of(f->value.base, f->value.len, is_value)) {
            return FY_EINVAL;
        }
    }
    return 0;
}

static int check_strs(const fy_slice *v, size_t n, size_t max)
{
    if (n > max || (n && !v)) {
        return FY_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (v[i].len < 1 || v[i].len > 255 || !all_of(v[i].base, v[i].len, is_text)) {
            return FY_EINVAL;
        }
    }
    return 0;
}

static int check_frame(const fyp_frame *f)
{
    if (f->type >= FYP_FRAME_TYPE_COUNT || (f->flags & ~allowed_flags[f->type])) {
        return FY_EINVAL;
    }
    if (f->stream_id > FYP_MAX_STREAM_ID) {
        return FY_EINVAL;
    }
    switch (sid_rule[f->type]) {
    case SID_ZERO:
        if (f->stream_id != 0) {
            return FY_EINVAL;
        }
        break;
    case SID_STREAM:
        /* Version 1: streams are opened by the gateway only, with odd ids. */
        if (f->stream_id == 0 || (f->stream_id & 1) == 0) {
            return FY_EINVAL;
        }
        break;
    default:
        if (f->stream_id != 0 && (f->stream_id & 1) == 0) {
            return FY_EINVAL;
        }
        break;
    }
    switch (f->type) {
    case FYP_FRAME_DATA:
        if (f->u.data.len == 0 && !(f->flags & FYP_FLAG_END_STREAM)) {
            return FY_EINVAL;
        }
        if (f->u.data.len > FYP_MAX_FRAME_SIZE_LIMIT || (f->u.data.len && !f->u.data.base)) {
            return FY_EINVAL;
        }
        return 0;
    case FYP_FRAME_REQUEST: {
        const fyp_request *r = &f->u.request;
        if (r->method.len < 1 || r->method.len > FYP_MAX_METHOD_LEN ||
            !all_of(r->method.base, r->method.len, is_tchar)) {
            return FY_EINVAL;
        }
        if (r->target.len < 1 || r->target.len > 0xffff ||
            !all_of(r->target.base, r->target.len, is_text)) {
            return FY_EINVAL;
        }
        int rc = check_fields(&r->meta, FYP_MAX_META_FIELDS);
        return rc ? rc : check_fields(&r->headers, FYP_MAX_HEADER_FIELDS);
    }
    case FYP_FRAME_RESPONSE:
        if (f->u.response.status < 200 || f->u.response.status > 599) {
            return FY_EINVAL;
        }
        return check_fields(&f->u.response.headers, FYP_MAX_HEADER_FIELDS);
    case FYP_FRAME_TRAILERS:
        if (!(f->flags & FYP_FLAG_END_STREAM) ||
            ((f->flags & FYP_FLAG_USAGE) && !f->u.trailers.has_usage)) {
            return FY_EINVAL;
        }
        return check_fields(&f->u.trailers.fields, FYP_MAX_HEADER_FIELDS);
    case FYP_FRAME_WINDOW_UPDATE:
        return f->u.increment >= 1 && f->u.increment <= FYP_MAX_WINDOW ? 0 : FY_EINVAL;
    case FYP_FRAME_GOAWAY:
        if (f->u.goaway.last_stream_id > FYP_MAX_STREAM_ID ||
            f->u.goaway.debug.len > FYP_MAX_GOAWAY_DEBUG ||
            (f->u.goaway.debug.len && !f->u.goaway.debug.base)) {
            return FY_EINVAL;
        }
        return 0;
    case FYP_FRAME_HELLO:
    case FYP_FRAME_HELLO_ACK: {
        const fyp_hello *h = &f->u.hello;
        int ack = f->type == FYP_FRAME_HELLO_ACK;
        if (ack ? h->version < 1 : (h->min_version < 1 || h->min_version > h->max_version)) {
            return FY_EINVAL;
        }
        if (fyp_settings_validate(&h->settings)) {
            return FY_EINVAL;
        }
        if (h->name.len < (ack ? 0u : 1u) || h->name.len > 255 ||
            !all_of(h->name.base, h->name.len, is_text)) {
            return FY_EINVAL;
        }
        if (ack && h->n_models) {
            return FY_EINVAL;
        }
        int rc = check_strs(h->models, h->n_models, FYP_MAX_MODELS);
        if (!rc) {
            rc = check_strs(h->caps, h->n_caps, FYP_MAX_CAPS);
        }
        if (!rc && fyp_frame_payload_size(f) > FYP_MAX_HELLO_SIZE) {
            rc = FY_EINVAL;
        }
        return rc;
    }
    default:
        return 0;
    }
}

static size_t fields_size(const fyp_fields *fl)
{
    size_t n = 2;
    for (size_t i = 0; i < fl->n; i++) {
        n += 4 + fl->v[i].name.len + fl->v[i].value.len;
    }
    return n;
}

static size_t strs_size(const fy_slice *v, size_t count)
{
    size_t n = 2;
    for (size_t i = 0; i < count; i++) {
        n += 1 + v[i].len;
    }
    return n;
}

#define SETTINGS_SIZE (2 + 6 * 6)

size_t fyp_frame_payload_size(const fyp_frame *f)
{
    switch (f->type) {
    case FYP_FRAME_DATA:
        return f->u.data.len;
    case FYP_FRAME_REQUEST:
        return 1 + f->u.request.method.len + 2 + f->u.request.target.len +
               fields_size(&f->u.request.meta) + fields_size(&f->u.request.headers);
    case FYP_FRAME_RESPONSE:
        return 2 + fields_size(&f->u.response.headers);
    case FYP_FRAME_TRAILERS:
        return (f->u.trailers.has_usage ? 8 : 0) + fields_size(&f->u.trailers.fields);
    case FYP_FRAME_RST_STREAM:
    case FYP_FRAME_WINDOW_UPDATE:
        return 4;
    case FYP_FRAME_PING:
    case FYP_FRAME_PONG:
        return 8;
    case FYP_FRAME_GOAWAY:
        return 8 + f->u.goaway.debug.len;
    case FYP_FRAME_HELLO:
        return 4 + 4 + SETTINGS_SIZE + 1 + f->u.hello.name.len +
               strs_size(f->u.hello.models, f->u.hello.n_models) +
               strs_size(f->u.hello.caps, f->u.hello.n_caps);
    case FYP_FRAME_HELLO_ACK:
        return 4 + 2 + SETTINGS_SIZE + 1 + f->u.hello.name.len +
               strs_size(f->u.hello.caps, f->u.hello.n_caps);
    }
    return 0;
}

static uint8_t *put_u8(uint8_t *p, uint8_t v)
{
    *p = v;
    return p + 1;
}

static uint8_t *put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return p + 2;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    return p + 4;
}

static uint8_t *put_bytes(uint8_t *p, const void *b, size_t n)
{
    if (n) {
        memcpy(p, b, n);
    }
    return p + n;
}

static uint8_t *put_fields(uint8_t *p, const fyp_fields *fl)
{
    p = put_u16(p, (uint16_t)fl->n);
    for (size_t i = 0; i < fl->n; i++) {
        p = put_u16(p, (uint16_t)fl->v[i].name.len);
        p = put_bytes(p, fl->v[i].name.base, fl->v[i].name.len);
        p = put_u16(p, (uint16_t)fl->v[i].value.len);
        p = put_bytes(p, fl->v[i].value.base, fl->v[i].value.len);
    }
    return p;
}

static uint8_t *put_strs(uint8_t *p, const fy_slice *v, size_t n)
{
    p = put_u16(p, (uint16_t)n);
    for (size_t i = 0; i < n; i++) {
        p = put_u8(p, (uint8_t)v[i].len);
        p = put_bytes(p, v[i].base, v[i].len);
    }
    return p;
}

static uint8_t *put_settings(uint8_t *p, const fyp_settings *s)
{
    const uint32_t vals[6] = {s->max_frame_size,         s->max_header_block,
                              s->initial_stream_window,  s->connection_window,
                              s->max_concurrent_streams, s->heartbeat_ms};
    p = put_u16(p, 6);
    for (int i = 0; i < 6; i++) {
        p = put_u16(p, (uint16_t)(FYP_SETTING_MAX_FRAME_SIZE + i));
        p = put_u32(p, vals[i]);
    }
    return p;
}

int fyp_frame_encode(fy_buf *out, const fyp_frame *f)
{
    int rc = check_frame(f);
    if (rc) {
        return rc;
    }
    size_t len = fyp_frame_payload_size(f);
    if (len > FYP_MAX_FRAME_SIZE_LIMIT) {
        return FY_ETOOBIG;
    }
    rc = fy_buf_reserve(out, FYP_FRAME_HEADER_SIZE + len);
    if (rc) {
        return rc;
    }
    uint8_t flags = f->flags;
    if (f->type == FYP_FRAME_TRAILERS && f->u.trailers.has_usage) {
        flags |= FYP_FLAG_USAGE;
    }
    uint8_t *p = (uint8_t *)out->data + out->len;
    p = put_u8(p, (uint8_t)(len >> 16));
    p = put_u16(p, (uint16_t)len);
    p = put_u8(p, f->type);
    p = put_u8(p, flags);
    p = put_u32(p, f->stream_id);
    switch (f->type) {
    case FYP_FRAME_DATA:
        p = put_bytes(p, f->u.data.base, f->u.data.len);
        break;
    case FYP_FRAME_REQUEST:
        p = put_u8(p, (uint8_t)f->u.request.method.len);
        p = put_bytes(p, f->u.request.method.base, f->u.request.method.len);
        p = put_u16(p, (uint16_t)f->u.request.target.len);
        p = put_bytes(p, f->u.request.target.base, f->u.request.target.len);
        p = put_fields(p, &f->u.request.meta);
        p = put_fields(p, &f->u.request.headers);
        break;
    case FYP_FRAME_RESPONSE:
        p = put_u16(p, f->u.response.status);
        p = put_fields(p, &f->u.response.headers);
        break;
    case FYP_FRAME_TRAILERS:
        if (f->u.trailers.has_usage) {
            p = put_u32(p, f->u.trailers.prompt_tokens);
            p = put_u32(p, f->u.trailers.completion_tokens);
        }
        p = put_fields(p, &f->u.trailers.fields);
        break;
    case FYP_FRAME_RST_STREAM:
        p = put_u32(p, f->u.error_code);
        break;
    case FYP_FRAME_WINDOW_UPDATE:
        p = put_u32(p, f->u.increment);
        break;
    case FYP_FRAME_PING:
    case FYP_FRAME_PONG:
        p = put_bytes(p, f->u.opaque, 8);
        break;
    case FYP_FRAME_GOAWAY:
        p = put_u32(p, f->u.goaway.last_stream_id);
        p = put_u32(p, f->u.goaway.error_code);
        p = put_bytes(p, f->u.goaway.debug.base, f->u.goaway.debug.len);
        break;
    case FYP_FRAME_HELLO:
    case FYP_FRAME_HELLO_ACK:
        p = put_u32(p, FYP_MAGIC);
        if (f->type == FYP_FRAME_HELLO) {
            p = put_u16(p, f->u.hello.min_version);
            p = put_u16(p, f->u.hello.max_version);
        } else {
            p = put_u16(p, f->u.hello.version);
        }
        p = put_settings(p, &f->u.hello.settings);
        p = put_u8(p, (uint8_t)f->u.hello.name.len);
        p = put_bytes(p, f->u.hello.name.base, f->u.hello.name.len);
        if (f->type == FYP_FRAME_HELLO) {
            p = put_strs(p, f->u.hello.models, f->u.hello.n_models);
        }
        p = put_strs(p, f->u.hello.caps, f->u.hello.n_caps);
        break;
    }
    out->len = (size_t)((char *)p - out->data);
    return 0;
}

/* ---- Decoder ---- */

void fyp_decoder_init(fyp_decoder *d, uint32_t max_frame_size, uint32_t max_header_block)
{
    memset(d, 0, sizeof *d);
    d->max_frame_size = max_frame_size;
    d->max_header_block = max_header_block;
}

void fyp_decoder_close(fyp_decoder *d)
{
    free(d->buf);
    d->buf = NULL;
    d->buf_len = 0;
    d->buf_cap = 0;
}

int fyp_decoder_idle(const fyp_decoder *d)
{
    return d->hdr_len == 0 && !d->in_payload && d->skip == 0;
}

__attribute__((format(printf, 3, 4))) static int dec_fail(fyp_decoder *d, uint32_t code,
                                                          const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->err_msg, sizeof d->err_msg, fmt, ap);
    va_end(ap);
    d->err_code = code;
    d->failed = 1;
    return FY_EPROTO;
}

/* A bounds-checked reader over one payload. */
typedef struct {
    const uint8_t *p;
    size_t n;
} rd;

static int rd_u8(rd *r, uint8_t *v)
{
    if (r->n < 1) {
        return -1;
    }
    *v = r->p[0];
    r->p++;
    r->n--;
    return 0;
}

static int rd_u16(rd *r, uint16_t *v)
{
    if (r->n < 2) {
        return -1;
    }
    *v = (uint16_t)(r->p[0] << 8 | r->p[1]);
    r->p += 2;
    r->n -= 2;
    return 0;
}

static int rd_u32(rd *r, uint32_t *v)
{
    if (r->n < 4) {
        return -1;
    }
    *v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 | r->p[3];
    r->p += 4;
    r->n -= 4;
    return 0;
}

static int rd_bytes(rd *r, size_t len, fy_slice *out)
{
    if (r->n < len) {
        return -1;
    }
    *out = FY_SLICE(r->p, len);
    r->p += len;
    r->n -= len;
    return 0;
}

static int rd_str8(rd *r, fy_slice *out)
{
    uint8_t len;
    return rd_u8(r, &len) || rd_bytes(r, len, out) ? -1 : 0;
}

static int rd_str16(rd *r, fy_slice *out)
{
    uint16_t len;
    return rd_u16(r, &len) || rd_bytes(r, len, out) ? -1 : 0;
}

#define TRUNCATED(d, what) dec_fail(d, FYP_ERR_PROTOCOL, "%s runs past the end of the frame", what)

/* Parses a field list into d->fields[base..base+max). */
static int rd_fields(fyp_decoder *d, rd *r, size_t base, size_t max, const char *what,
                     fyp_fields *out)
{
    uint16_t count;
    if (rd_u16(r, &count)) {
        return TRUNCATED(d, what);
    }
    if (count > max) {
        return dec_fail(d, FYP_ERR_HEADER_TOO_LARGE, "%u %s fields (max %zu)", count, what, max);
    }
    for (size_t i = 0; i < count; i++) {
        fyp_field *f = &d->fields[base + i];
        if (rd_str16(r, &f->name) || rd_str16(r, &f->value)) {
            return TRUNCATED(d, what);
        }
        if (f->name.len == 0 || !all_of(f->name.base, f->name.len, is_tchar)) {
            return dec_fail(d, FYP_ERR_PROTOCOL, "invalid %s field name", what);
        }
        if (!all_of(f->value.base, f->value.len, is_value)) {
            return dec_fail(d, FYP_ERR_PROTOCOL, "invalid %s field value", what);
        }
    }
    out->v = &d->fields[base];
    out->n = count;
    return 0;
}

/* Parses list<str8> of text into d->strs[base..base+max). */
static int rd_strs(fyp_decoder *d, rd *r, size_t base, size_t max, const char *what,
                   const fy_slice **v, size_t *n)
{
    uint16_t count;
    if (rd_u16(r, &count)) {
        return TRUNCATED(d, what);
    }
    if (count > max) {
        return dec_fail(d, FYP_ERR_PROTOCOL, "%u %s (max %zu)", count, what, max);
    }
    for (size_t i = 0; i < count; i++) {
        fy_slice *s = &d->strs[base + i];
        if (rd_str8(r, s)) {
            return TRUNCATED(d, what);
        }
        if (s->len == 0 || !all_of(s->base, s->len, is_text)) {
            return dec_fail(d, FYP_ERR_PROTOCOL, "invalid %s entry", what);
        }
    }
    *v = &d->strs[base];
    *n = count;
    return 0;
}

static int rd_settings(fyp_decoder *d, rd *r, fyp_settings *s)
{
    uint16_t count;
    fyp_settings_default(s);
    if (rd_u16(r, &count)) {
        return TRUNCATED(d, "settings");
    }
    if (count > FYP_MAX_SETTINGS) {
        return dec_fail(d, FYP_ERR_PROTOCOL, "%u settings (max %d)", count, FYP_MAX_SETTINGS);
    }
    unsigned seen = 0;
    for (unsigned i = 0; i < count; i++) {
        uint16_t id;
        uint32_t v;
        if (rd_u16(r, &id) || rd_u32(r, &v)) {
            return TRUNCATED(d, "settings");
        }
        if (id < FYP_SETTING_MAX_FRAME_SIZE || id > FYP_SETTING_HEARTBEAT_MS) {
            continue; /* unknown settings are ignored */
        }
        if (seen & (1u << id)) {
            return dec_fail(d, FYP_ERR_PROTOCOL, "setting 0x%x repeated", id);
        }
        seen |= 1u << id;
        switch (id) {
        case FYP_SETTING_MAX_FRAME_SIZE:
            s->max_frame_size = v;
            break;
        case FYP_SETTING_MAX_HEADER_BLOCK:
            s->max_header_block = v;
            break;
        case FYP_SETTING_INITIAL_STREAM_WINDOW:
            s->initial_stream_window = v;
            break;
        case FYP_SETTING_CONNECTION_WINDOW:
            s->connection_window = v;
            break;
        case FYP_SETTING_MAX_CONCURRENT_STREAMS:
            s->max_concurrent_streams = v;
            break;
        default:
            s->heartbeat_ms = v;
            break;
        }
    }
    if (fyp_settings_validate(s)) {
        return dec_fail(d, FYP_ERR_PROTOCOL, "setting value out of range");
    }
    return 0;
}

/* Checks what the 9-byte header alone can tell, before any payload is read,
 * so an oversized frame is refused without buffering it. */
static int check_header(fyp_decoder *d)
{
    const uint8_t *h = d->hdr;
    fyp_frame *f = &d->cur;
    memset(f, 0, sizeof *f);
    f->length = (uint32_t)h[0] << 16 | (uint32_t)h[1] << 8 | h[2];
    f->type = h[3];
    f->flags = h[4];
    uint32_t sid = (uint32_t)h[5] << 24 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 8 | h[8];
    if (sid & 0x80000000u) {
        return dec_fail(d, FYP_ERR_PROTOCOL, "reserved bit set in stream id");
    }
    f->stream_id = sid;
    if (f->length > d->max_frame_size) {
        return dec_fail(d, FYP_ERR_FRAME_SIZE, "%s frame of %u bytes (max %u)", type_name(f->type),
                        f->length, d->max_frame_size);
    }
    if (f->type >= FYP_FRAME_TYPE_COUNT) {
        return 0;
    }
    const char *tn = type_name(f->type);
    if (f->flags & ~allowed_flags[f->type]) {
        return dec_fail(d, FYP_ERR_PROTOCOL, "unknown flags 0x%02x on %s", f->flags, tn);
    }
    switch (sid_rule[f->type]) {
    case SID_ZERO:
        if (sid != 0) {
            return dec_fail(d, FYP_ERR_PROTOCOL, "%s on stream %u (must be 0)", tn, sid);
        }
        break;
    case SID_STREAM:
        if (sid == 0) {
            return dec_fail(d, FYP_ERR_PROTOCOL, "%s on stream 0", tn);
        }
        /* fall through */
    default:
        if (sid != 0 && (sid & 1) == 0) {
            return dec_fail(d, FYP_ERR_PROTOCOL, "%s on even stream %u", tn, sid);
        }
        break;
    }
    switch (f->type) {
    case FYP_FRAME_DATA:
        if (f->length == 0 && !(f->flags & FYP_FLAG_END_STREAM)) {
            return dec_fail(d, FYP_ERR_PROTOCOL, "empty DATA without END_STREAM");
        }
        break;
    case FYP_FRAME_TRAILERS:
        if (!(f->flags & FYP_FLAG_END_STREAM)) {
            return dec_fail(d, FYP_ERR_PROTOCOL, "TRAILERS without END_STREAM");
        }
        /* fall through */
    case FYP_FRAME_REQUEST:
    case FYP_FRAME_RESPONSE:
        if (f->length > d->max_header_block) {
            return dec_fail(d, FYP_ERR_HEADER_TOO_LARGE, "%s header block of %u bytes (max %u)", tn,
                            f->length, d->max_header_block);
        }
        break;
    case FYP_FRAME_RST_STREAM:
    case FYP_FRAME_WINDOW_UPDATE:
        if (f->length != 4) {
            return dec_fail(d, FYP_ERR_FRAME_SIZE, "%s of %u bytes (must be 4)", tn, f->length);
        }
        break;
    case FYP_FRAME_PING:
    case FYP_FRAME_PONG:
        if (f->length != 8) {
            return dec_fail(d, FYP_ERR_FRAME_SIZE, "%s of %u bytes (must be 8)", tn, f->length);
        }
        break;
    case FYP_FRAME_GOAWAY:
        if (f->length < 8 || f->length > 8 + FYP_MAX_GOAWAY_DEBUG) {
            return dec_fail(d, FYP_ERR_FRAME_SIZE, "GOAWAY of %u bytes", f->length);
        }
        break;
    case FYP_FRAME_HELLO:
    case FYP_FRAME_HELLO_ACK:
        if (f->length > FYP_MAX_HELLO_SIZE) {
            return dec_fail(d, FYP_ERR_FRAME_SIZE, "%s of %u bytes (max %d)", tn, f->length,
                            FYP_MAX_HELLO_SIZE);
        }
        break;
    }
    return 0;
}

static int parse_hello(fyp_decoder *d, rd *r, fyp_frame *f)
{
    fyp_hello *h = &f->u.hello;
    int ack = f->type == FYP_FRAME_HELLO_ACK;
    const char *tn = ack ? "HELLO_ACK" : "HELLO";
    uint32_t magic;
    if (rd_u32(r, &magic)) {
        return TRUNCATED(d, tn);
    }
    if (magic != FYP_MAGIC) {
        return dec_fail(d, FYP_ERR_PROTOCOL, "%s with bad magic 0x%08x", tn, magic);
    }
    if (ack) {
        if (rd_u16(r, &h->version)) {
            return TRUNCATED(d, tn);
        }
        if (h->version < 1) {
            return dec_fail(d, FYP_ERR_PROTOCOL, "HELLO_ACK version 0");
        }
    } else {
        if (rd_u16(r, &h->min_version) || rd_u16(r, &h->max_version)) {
            return TRUNCATED(d, tn);
        }
        if (h->min_version < 1 || h->min_version > h->max_version) {
            return dec_fail(d, FYP_ERR_PROTOCOL, "HELLO version range %u..%u", h->min_version,
                            h->max_version);
        }
    }
    int rc = rd_settings(d, r, &h->settings);
    if (rc) {
        return rc;
    }
    if (rd_str8(r, &h->name)) {
        return TRUNCATED(d, "name");
    }
    if ((!ack && h->name.len == 0) || !all_of(h->name.base, h->name.len, is_text)) {
        return dec_fail(d, FYP_ERR_PROTOCOL, "%s with invalid name", tn);
    }
    if (!ack) {
        rc = rd_strs(d, r, 0, FYP_MAX_MODELS, "models", &h->models, &h->n_models);
        if (rc) {
            return rc;
        }
    }
    /* Trailing bytes are reserved for later versions and ignored (PROTOCOL.md 3.10). */
    return rd_strs(d, r, FYP_MAX_MODELS, FYP_MAX_CAPS, "capabilities", &h->caps, &h->n_caps);
}

static int parse_payload(fyp_decoder *d, const uint8_t *payload, fyp_frame *f)
{
    *f = d->cur;
    rd r = {payload, f->length};
    int rc = 0;
    switch (f->type) {
    case FYP_FRAME_DATA:
        f->u.data = FY_SLICE(payload, f->length);
        return 0;
    case FYP_FRAME_REQUEST: {
        fyp_request *q = &f->u.request;
        if (rd_str8(&r, &q->method) || rd_str16(&r, &q->target)) {
            return TRUNCATED(d, "REQUEST");
        }
        if (q->method.len < 1 || q->method.len > FYP_MAX_METHOD_LEN ||
            !all_of(q->method.base, q->method.len, is_tchar)) {
            return dec_fail(d, FYP_ERR_PROTOCOL, "invalid REQUEST method");
        }
        if (q->target.len < 1 || !all_of(q->target.base, q->target.len, is_text)) {
            return dec_fail(d, FYP_ERR_PROTOCOL, "invalid REQUEST target");
        }
        rc = rd_fields(d, &r, 0, FYP_MAX_META_FIELDS, "metadata", &q->meta);
        if (!rc) {
            rc =
                rd_fields(d, &r, FYP_MAX_META_FIELDS, FYP_MAX_HEADER_FIELDS, "header", &q->headers);
        }
        break;
    }
    case FYP_FRAME_RESPONSE:
        if (rd_u16(&r, &f->u.response.status)) {
            return TRUNCATED(d, "RESPONSE");
        }
        if (f->u.response.status < 200 || f->u.response.status > 599) {
            return dec_fail(d, FYP_ERR_PROTOCOL, "RESPONSE status %u", f->u.response.status);
        }
        rc = rd_fields(d, &r, 0, FYP_MAX_HEADER_FIELDS, "header", &f->u.response.headers);
        break;
    case FYP_FRAME_TRAILERS:
        if (f->flags & FYP_FLAG_USAGE) {
            f->u.trailers.has_usage = 1;
            if (rd_u32(&r, &f->u.trailers.prompt_tokens) ||
                rd_u32(&r, &f->u.trailers.completion_tokens)) {
                return TRUNCATED(d, "usage");
            }
        }
        rc = rd_fields(d, &r, 0, FYP_MAX_HEADER_FIELDS, "trailer", &f->u.trailers.fields);
        break;
    case FYP_FRAME_RST_STREAM:
        rd_u32(&r, &f->u.error_code);
        return 0;
    case FYP_FRAME_WINDOW_UPDATE:
        rd_u32(&r, &f->u.increment);
        if (f->u.increment & 0x80000000u) {
            return dec_fail(d, FYP_ERR_PROTOCOL, "reserved bit set in WINDOW_UPDATE");
        }
        if (f->u.increment == 0) {
            return dec_fail(d, FYP_ERR_PROTOCOL, "WINDOW_UPDATE increment 0 on stream %u",
                            f->stream_id);
        }
        return 0;
    case FYP_FRAME_PING:
    case FYP_FRAME_PONG:
        memcpy(f->u.opaque, payload, 8);
        return 0;
    case FYP_FRAME_GOAWAY:
        rd_u32(&r, &f->u.goaway.last_stream_id);
        rd_u32(&r, &f->u.goaway.error_code);
        if (f->u.goaway.last_stream_id & 0x80000000u) {
            return dec_fail(d, FYP_ERR_PROTOCOL, "reserved bit set in GOAWAY");
        }
        f->u.goaway.debug = FY_SLICE(r.p, r.n);
        return 0;
    case FYP_FRAME_HELLO:
    case FYP_FRAME_HELLO_ACK:
        return parse_hello(d, &r, f);
    }
    if (rc) {
        return rc;
    }
    if (r.n != 0) {
        return dec_fail(d, FYP_ERR_PROTOCOL, "%zu stray bytes after %s", r.n, type_name(f->type));
    }
    return 0;
}

int fyp_decoder_next(fyp_decoder *d, const uint8_t **pp, size_t *pn, fyp_frame *f)
{
    if (d->failed) {
        return FY_EPROTO;
    }
    if (*pn == 0) {
        return 0; /* a frame only completes as bytes arrive */
    }
    const uint8_t *p = *pp;
    size_t n = *pn;
    int rc = 0;
    for (;;) {
        if (d->skip) {
            size_t k = n < d->skip ? n : d->skip;
            p += k;
            n -= k;
            d->skip -= (uint32_t)k;
            if (d->skip) {
                goto out;
            }
        }
        if (!d->in_payload) {
            if (d->hdr_len == 0 && n >= FYP_FRAME_HEADER_SIZE) {
                memcpy(d->hdr, p, FYP_FRAME_HEADER_SIZE);
                p += FYP_FRAME_HEADER_SIZE;
                n -= FYP_FRAME_HEADER_SIZE;
            } else {
                size_t k = FYP_FRAME_HEADER_SIZE - d->hdr_len;
                if (k > n) {
                    k = n;
                }
                if (k) {
                    memcpy(d->hdr + d->hdr_len, p, k);
                }
                p += k;
                n -= k;
                d->hdr_len = (uint8_t)(d->hdr_len + k);
                if (d->hdr_len < FYP_FRAME_HEADER_SIZE) {
                    goto out;
                }
            }
            d->hdr_len = 0;
            rc = check_header(d);
            if (rc) {
                goto out;
            }
            if (d->cur.type >= FYP_FRAME_TYPE_COUNT) {
                /* Unknown type: report it, then discard its payload unbuffered. */
                *f = d->cur;
                d->skip = d->cur.length;
                rc = 1;
                goto out;
            }
            d->in_payload = 1;
            d->buf_len = 0;
        }
        uint32_t need = d->cur.length;
        const uint8_t *payload;
        if (d->buf_len == 0 && n >= need) {
            payload = p; /* whole payload in this chunk: no copy */
            p += need;
            n -= need;
        } else {
            if (d->buf_cap < need) {
                size_t cap = d->buf_cap ? d->buf_cap : 4096;
                while (cap < need) {
                    cap *= 2;
                }
                if (cap > d->max_frame_size) {
                    cap = d->max_frame_size;
                }
                uint8_t *nb = realloc(d->buf, cap);
                if (!nb) {
                    rc = FY_ENOMEM;
                    goto out;
                }
                d->buf = nb;
                d->buf_cap = cap;
            }
            size_t k = need - d->buf_len;
            if (k > n) {
                k = n;
            }
            if (k) {
                memcpy(d->buf + d->buf_len, p, k);
            }
            p += k;
            n -= k;
            d->buf_len += k;
            if (d->buf_len < need) {
                goto out;
            }
            payload = d->buf;
        }
        d->in_payload = 0;
        d->buf_len = 0;
        rc = parse_payload(d, payload, f);
        if (rc == 0) {
            rc = 1;
        }
        goto out;
    }
out:
    *pp = p;
    *pn = n;
    return rc;
}
