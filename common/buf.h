/* buf.h: slices and bounded growable buffers.
 *
 * fy_slice is shaped like uv_buf_t (base, len) and never owns its bytes.
 * fy_buf owns its bytes and has a mandatory cap: an append that would grow it
 * past `max` fails with FY_ETOOBIG and leaves the buffer unchanged, so nothing
 * a stranger sends can grow memory without bound. */
#ifndef FY_BUF_H
#define FY_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *base;
    size_t len;
} fy_slice;

#define FY_SLICE(p, n)  ((fy_slice){(char *)(p), (n)})
#define FY_SLICE_STR(s) ((fy_slice){(char *)(s), sizeof(s) - 1})

/* 1 when S holds exactly the bytes of LIT, ASCII letters compared without
 * case (as HTTP field names are), else 0. */
int fy_slice_ieq(fy_slice s, const char *lit);

typedef struct {
    char *data; /* NULL until the first append */
    size_t len; /* bytes in use */
    size_t cap; /* bytes allocated */
    size_t max; /* hard limit on len; set by fy_buf_init */
} fy_buf;

/* Initialises an empty buffer that will never hold more than MAX bytes. */
void fy_buf_init(fy_buf *b, size_t max);

/* Frees the storage (wiping it when the buffer held secrets is the caller's
 * job: call fy_buf_wipe first). Safe on a zeroed or already-freed buffer. */
void fy_buf_free(fy_buf *b);

/* Zeroes the whole allocation, then frees it. */
void fy_buf_wipe(fy_buf *b);

/* Ensures room for N more bytes. Returns 0, FY_ETOOBIG (len + n > max) or FY_ENOMEM. */
int fy_buf_reserve(fy_buf *b, size_t n);

/* Appends N bytes. Returns 0, FY_ETOOBIG or FY_ENOMEM; on error b is unchanged. */
int fy_buf_append(fy_buf *b, const void *p, size_t n);
int fy_buf_append_str(fy_buf *b, const char *s);
int fy_buf_appendf(fy_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Removes the first N bytes (N is clamped to len). */
void fy_buf_consume(fy_buf *b, size_t n);

/* Empties the buffer, keeping its allocation. */
static inline void fy_buf_reset(fy_buf *b)
{
    b->len = 0;
}

/* Returns a NUL-terminated view of the contents (the NUL is not counted in
 * len), or NULL when out of memory. */
const char *fy_buf_cstr(fy_buf *b);

/* Detaches the storage: returns it (caller frees) and leaves b empty. */
char *fy_buf_steal(fy_buf *b, size_t *len);

#endif
