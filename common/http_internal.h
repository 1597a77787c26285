/* http_internal.h: helpers shared by http_server.c and http_client.c. Not
 * for use outside common/http*. */
#ifndef FY_HTTP_INTERNAL_H
#define FY_HTTP_INTERNAL_H

#include "buf.h"
#include "http.h"

#include <stdint.h>
#include <time.h>

/* 1 when NAME is a token and VALUE has no CR, LF or NUL. */
int fy__http_header_ok(const char *name, size_t nl, const char *value, size_t vl);

/* 1 for the headers a sender of a message must set itself: Connection,
 * Content-Length, Transfer-Encoding. */
int fy__http_is_hop_header(const char *name, size_t nl);

/* Appends "Name: value\r\n" for each header except hop-by-hop ones and SKIP
 * (may be NULL). Returns 0, FY_EINVAL (bad header), FY_ETOOBIG, FY_ENOMEM. */
int fy__http_append_headers(fy_buf *b, const fy_http_header *h, size_t n, const char *skip);

/* Writes "<hex len>\r\n" into OUT (room for 20 bytes); returns its length. */
size_t fy__http_chunk_head(char *out, size_t len);

/* An IMF-fixdate, formatted at most once a second. */
typedef struct {
    time_t when;
    size_t len;
    char text[32];
} fy__http_date_cache;
void fy__http_date(fy__http_date_cache *dc, char out[32]);

/* Header block accumulation for llhttp's split callbacks. */
typedef struct {
    uint32_t name_off, name_len, value_off, value_len;
} fy__http_hdr_off;

typedef struct {
    fy_buf arena; /* names and values, NUL-terminated, plus whatever else the owner puts */
    fy__http_hdr_off *offs;
    fy_http_header *h;
    size_t n, max;
    /* Entries offs[] and h[] have room for. An owner that gives no arrays
     * (cap 0) gets them grown on demand, up to MAX, and frees them with
     * fy__http_hdr_free: a connection that waits holds room for the fields
     * its requests had, not for FY_HTTP_MAX_HEADERS of them. */
    size_t cap;
    int grown; /* offs and h are ours (fy__http_hdr_free) */
    int state; /* 0 none, 1 in name, 2 in value, 3 value done */
} fy__http_hdrs;

int fy__http_hdr_field(fy__http_hdrs *hp, const char *at, size_t len);
int fy__http_hdr_field_done(fy__http_hdrs *hp);
int fy__http_hdr_value(fy__http_hdrs *hp, const char *at, size_t len);
int fy__http_hdr_value_done(fy__http_hdrs *hp);
/* Points h[] at the arena; call once the block is complete. */
void fy__http_hdr_fixup(fy__http_hdrs *hp);
void fy__http_hdr_reset(fy__http_hdrs *hp);
/* Frees the arrays grown by fy__http_hdr_field (not the arena). */
void fy__http_hdr_free(fy__http_hdrs *hp);

#endif
