/* fwdhead.c: the relayed header blocks (fwdhead.h). */
#include "gateway/fwdhead.h"

#include "common/err.h"

#include <string.h>
#include <strings.h>

static int name_is(const char *name, size_t len, const char *lit)
{
    return fy_slice_ieq(FY_SLICE(name, len), lit);
}

static int name_has_prefix(const char *name, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return len >= n && strncasecmp(name, lit, n) == 0;
}

static void req_add(gw_fwd_request *r, const char *name, size_t nl, const char *value, size_t vl)
{
    if (r->n < sizeof r->f / sizeof r->f[0]) {
        r->f[r->n].name = FY_SLICE(name, nl);
        r->f[r->n].value = FY_SLICE(value, vl);
        r->n++;
    }
}

/* 1 when the client's header H is not forwarded as it is. */
static int req_dropped(const fy_http_header *h, const char *connection, int keep_auth)
{
    const char *hn = h->name;
    size_t nl = h->name_len;
    return fy_http_hop_by_hop(hn, nl, connection) || name_is(hn, nl, "x-forwarded-for") ||
           name_is(hn, nl, "x-forwarded-proto") || name_is(hn, nl, "x-forwarded-host") ||
           name_is(hn, nl, "expect") ||
           (!keep_auth && (name_is(hn, nl, "authorization") || name_is(hn, nl, "x-api-key"))) ||
           name_has_prefix(hn, nl, "x-ferry-");
}

int fy_gw_fwd_request(gw_fwd_request *out, const fy_http_header *h, size_t n,
                      const gw_fwd_info *info)
{
    out->n = 0;
    /* Twice the client's whole header block: the chain always fits. */
    fy_buf_init(&out->xff, 2 * FY_HTTP_MAX_HEADER_BYTES);
    const char *connection = fy_http_header_find(h, n, "connection");
    const char *host = fy_http_header_find(h, n, "host");
    int nomem = 0;
    for (size_t i = 0; i < n; i++) {
        if (name_is(h[i].name, h[i].name_len, "x-forwarded-for")) {
            nomem |= fy_buf_append(&out->xff, h[i].value, h[i].value_len) == FY_ENOMEM;
            nomem |= fy_buf_append(&out->xff, ", ", 2) == FY_ENOMEM;
        }
        if (!req_dropped(&h[i], connection, info->keep_auth)) {
            req_add(out, h[i].name, h[i].name_len, h[i].value, h[i].value_len);
        }
    }
    nomem |= fy_buf_append_str(&out->xff, info->peer_host) == FY_ENOMEM;
    if (nomem) {
        fy_buf_free(&out->xff);
        return FY_ENOMEM;
    }
    if (info->key_id) {
        req_add(out, "x-ferry-key-id", 14, info->key_id, strlen(info->key_id));
    }
    req_add(out, "x-forwarded-for", 15, out->xff.data ? out->xff.data : "", out->xff.len);
    req_add(out, "x-forwarded-proto", 17, info->proto, strlen(info->proto));
    if (host && host[0]) {
        req_add(out, "x-forwarded-host", 16, host, strlen(host));
    }
    return 0;
}

void fy_gw_fwd_request_free(gw_fwd_request *r)
{
    fy_buf_free(&r->xff);
}

/* A plain decimal Content-Length, or -1. */
static int64_t parse_length(fy_slice v)
{
    int64_t x = 0;
    size_t k;
    for (k = 0; k < v.len && v.base[k] >= '0' && v.base[k] <= '9' && x < (INT64_MAX - 9) / 10;
         k++) {
        x = x * 10 + (v.base[k] - '0');
    }
    return k == v.len && k > 0 ? x : -1;
}

/* 1 when the runner's field F is not relayed. */
static int resp_dropped(const fyp_field *f, const char *connection, int own_limits)
{
    const char *fn = f->name.base;
    size_t nl = f->name.len;
    return fy_http_hop_by_hop(fn, nl, connection) || name_is(fn, nl, "date") ||
           (own_limits && nl > 12 && name_has_prefix(fn, nl, "x-ratelimit-"));
}

void fy_gw_fwd_response(gw_fwd_response *out, const fyp_field *f, size_t n, int own_limits)
{
    char connection[512] = "";
    out->n = 0;
    out->content_length = -1;
    out->sse = 0;
    for (size_t i = 0; i < n; i++) {
        if (name_is(f[i].name.base, f[i].name.len, "connection") &&
            f[i].value.len < sizeof connection) {
            memcpy(connection, f[i].value.base, f[i].value.len);
            connection[f[i].value.len] = '\0';
        }
    }
    for (size_t i = 0; i < n && out->n < FYP_MAX_HEADER_FIELDS; i++) {
        const fyp_field *fi = &f[i];
        if (name_is(fi->name.base, fi->name.len, "content-length")) {
            int64_t v = parse_length(fi->value);
            out->content_length = v >= 0 ? v : out->content_length;
            continue;
        }
        if (resp_dropped(fi, connection[0] ? connection : NULL, own_limits)) {
            continue;
        }
        if (name_is(fi->name.base, fi->name.len, "content-type") && fi->value.len >= 17 &&
            strncasecmp(fi->value.base, "text/event-stream", 17) == 0) {
            out->sse = 1;
        }
        out->h[out->n++] = (fy_http_header){fi->name.base, fi->value.len ? fi->value.base : "",
                                            fi->name.len, fi->value.len};
    }
    if (!out->sse) {
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < out->n; i++) {
        const fy_http_header *x = &out->h[i];
        if (!name_is(x->name, x->name_len, "cache-control") &&
            !name_is(x->name, x->name_len, "x-accel-buffering")) {
            out->h[k++] = *x;
        }
    }
    out->h[k++] = (fy_http_header){"Cache-Control", "no-cache", 13, 8};
    out->h[k++] = (fy_http_header){"X-Accel-Buffering", "no", 17, 2};
    out->n = k;
}
