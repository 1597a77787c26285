/* utf8.c: well-formed UTF-8 (utf8.h). */
#include "common/utf8.h"

#include <stdlib.h>
#include <string.h>

/* How many bytes at S (N > 0) form a valid prefix of one character: the
 * whole character, or the maximal subpart of an ill-formed one (0 when the
 * first byte cannot start a character). *NEED gets the character's full
 * length (0 for such a byte). Table 3-7's second-byte ranges exclude the
 * overlongs (E0, F0), the surrogates (ED) and what lies past U+10FFFF (F4). */
static size_t utf8_prefix(const unsigned char *s, size_t n, size_t *need)
{
    unsigned c = s[0], lo = 0x80, hi = 0xbf;
    size_t len;
    if (c < 0x80) {
        *need = 1;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else {
        *need = 0;
        return 0;
    }
    *need = len;
    size_t i = 1;
    if (i < n && s[i] >= lo && s[i] <= hi) {
        i++;
        while (i < len && i < n && (s[i] & 0xc0) == 0x80) {
            i++;
        }
    }
    return i;
}

size_t fy_utf8_char(const char *s, size_t n, uint32_t *cp)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t need, m;
    if (n == 0 || (m = utf8_prefix(p, n, &need)) != need || need == 0) {
        return 0;
    }
    static const unsigned char lead_mask[5] = {0, 0x7f, 0x1f, 0x0f, 0x07};
    uint32_t v = p[0] & lead_mask[m];
    for (size_t i = 1; i < m; i++) {
        v = (v << 6) | (p[i] & 0x3f);
    }
    if (cp) {
        *cp = v;
    }
    return m;
}

int fy_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t need, m = utf8_prefix(p + i, n - i, &need);
        if (need == 0 || m != need) {
            return 0;
        }
        i += m;
    }
    return 1;
}

long fy_utf8_sanitize(const char *s, size_t n, int final, fy_buf *out)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0; /* run: start of valid bytes not yet copied */
    int rc;
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t need, m = utf8_prefix(p + i, n - i, &need);
        if (need && m == need) {
            i += m;
            continue;
        }
        if ((rc = fy_buf_append(out, s + run, i - run))) {
            return rc;
        }
        if (need && i + m == n && !final) {
            return (long)i; /* incomplete: wait for more bytes */
        }
        if ((rc = fy_buf_append(out, "\xef\xbf\xbd", 3))) {
            return rc;
        }
        i += m ? m : 1;
        run = i;
    }
    if ((rc = fy_buf_append(out, s + run, n - run))) {
        return rc;
    }
    return (long)n;
}

size_t fy_utf8_scrub(const char *s, size_t n, const char *repl, size_t repl_len, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t len = s[i] ? fy_utf8_char(s + i, n - i, NULL) : 0;
        if (len) {
            memcpy(out + k, s + i, len);
            k += len;
            i += len;
        } else {
            memcpy(out + k, repl, repl_len);
            k += repl_len;
            i++;
        }
    }
    out[k] = '\0';
    return k;
}

json_t *fy_utf8_json(const char *s, size_t n, const char *repl, size_t repl_len)
{
    json_t *j = json_stringn(s, n);
    if (j) {
        return j;
    }
    char *o = malloc(n * (repl_len > 1 ? repl_len : 1) + 1);
    if (!o) {
        return NULL;
    }
    j = json_stringn(o, fy_utf8_scrub(s, n, repl, repl_len, o));
    free(o);
    return j;
}
