/* stop.c: the hold-back stop-string matcher. */
#include "runner/engine/stop.h"

#include "common/err.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int fy_stop_init(fy_stop *st, const char *const *stops, int n)
{
    memset(st, 0, sizeof *st);
    fy_buf_init(&st->held, (size_t)FY_STOP_MAX_BYTES * 64);
    if (n < 0 || n > FY_STOP_MAX || (n > 0 && !stops)) {
        return FY_EINVAL;
    }
    if (n == 0) {
        return 0;
    }
    st->stops = calloc((size_t)n, sizeof *st->stops);
    st->lens = calloc((size_t)n, sizeof *st->lens);
    if (!st->stops || !st->lens) {
        fy_stop_free(st);
        return FY_ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        size_t len = stops[i] ? strlen(stops[i]) : 0;
        if (len == 0 || len > FY_STOP_MAX_BYTES || !fy_utf8_valid(stops[i], len)) {
            fy_stop_free(st);
            return FY_EINVAL;
        }
        if (!(st->stops[i] = malloc(len + 1))) {
            fy_stop_free(st);
            return FY_ENOMEM;
        }
        memcpy(st->stops[i], stops[i], len + 1);
        st->lens[i] = len;
        st->n = i + 1;
    }
    return 0;
}

void fy_stop_free(fy_stop *st)
{
    for (int i = 0; i < st->n; i++) {
        free(st->stops[i]);
    }
    free(st->stops);
    free(st->lens);
    fy_buf_free(&st->held);
    memset(st, 0, sizeof *st);
}

/* Length of the longest suffix of H[0..N) that is a proper prefix of a stop string. */
static size_t held_suffix(const fy_stop *st, const char *h, size_t n)
{
    size_t best = 0;
    for (int i = 0; i < st->n; i++) {
        size_t max = st->lens[i] - 1 < n ? st->lens[i] - 1 : n;
        for (size_t k = max; k > best; k--) {
            if (memcmp(h + n - k, st->stops[i], k) == 0) {
                best = k;
                break;
            }
        }
    }
    return best;
}

int fy_stop_push(fy_stop *st, const char *text, size_t len, fy_buf *out)
{
    if (st->n == 0) {
        return fy_buf_append(out, text, len);
    }
    int rc = fy_buf_append(&st->held, text, len);
    if (rc < 0) {
        return rc;
    }
    const char *h = st->held.data;
    size_t n = st->held.len;
    size_t cut = n;
    for (int i = 0; i < st->n; i++) {
        if (st->lens[i] > n) {
            continue;
        }
        /* Only a match starting before the best so far matters. */
        size_t span = cut + st->lens[i] - 1 < n ? cut + st->lens[i] - 1 : n;
        const char *m = memmem(h, span, st->stops[i], st->lens[i]);
        if (m && (size_t)(m - h) < cut) {
            cut = (size_t)(m - h);
        }
    }
    if (cut < n) {
        rc = fy_buf_append(out, h, cut);
        fy_buf_reset(&st->held);
        return rc < 0 ? rc : 1;
    }
    size_t keep = held_suffix(st, h, n);
    rc = fy_buf_append(out, h, n - keep);
    if (rc < 0) {
        return rc;
    }
    fy_buf_consume(&st->held, n - keep);
    return 0;
}

int fy_stop_flush(fy_stop *st, fy_buf *out)
{
    int rc = fy_buf_append(out, st->held.data ? st->held.data : "", st->held.len);
    fy_buf_reset(&st->held);
    return rc;
}
