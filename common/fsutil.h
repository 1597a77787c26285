/* fsutil.h: small, careful file helpers for data dirs (certificates, keys,
 * tokens, state files). */
#ifndef FY_FSUTIL_H
#define FY_FSUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Writes DATA to PATH atomically and durably: a temporary file in the same
 * directory is written with MODE, fsynced, renamed over PATH, and the
 * directory is fsynced. Readers see the old or the new file, never a torn
 * one. Returns 0 or an FY_E* code. */
int fy_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode);

/* The same, streamed: fy_atomic_open() creates the temporary file, any
 * number of fy_atomic_write()s fill it, fy_atomic_commit() fsyncs and
 * renames it over PATH (or removes it on failure), fy_atomic_abort() removes
 * it (a committed or aborted file: nothing to do). Each returns 0 or an
 * FY_E* code; after a failed open or write, call fy_atomic_abort(). */
typedef struct {
    int fd;
    uint64_t written;
    char path[4096], tmp[4096];
} fy_atomic_file;

int fy_atomic_open(const char *path, mode_t mode, fy_atomic_file *f);
int fy_atomic_write(fy_atomic_file *f, const void *data, size_t len);
int fy_atomic_commit(fy_atomic_file *f);
void fy_atomic_abort(fy_atomic_file *f);

/* Reads PATH whole into a new NUL-terminated buffer (caller frees; *LEN gets
 * the byte count without the NUL). Files over MAX bytes give FY_ETOOBIG;
 * missing ones FY_ENOENT. */
int fy_file_read(const char *path, size_t max, char **out, size_t *len);

/* Maps PATH whole, read-only and private (model weights: the page cache
 * shares them, nothing is copied). Returns 0 with *MAP and *LEN set (*MAP
 * NULL for an empty file, which mmap cannot map), or FY_ENOENT (missing),
 * FY_EIO (not a regular file, mmap failed) or another FY_E* from errno, with
 * ERR naming PATH. Release with fy_file_unmap(*MAP, *LEN). */
int fy_file_map(const char *path, void **map, size_t *len, char *err, size_t errlen);
/* Unmaps what fy_file_map() mapped; a NULL MAP is fine. */
void fy_file_unmap(void *map, size_t len);

/* Creates DIR and its parents with MODE when missing. Returns 0 or FY_E*. */
int fy_mkdir_p(const char *dir, mode_t mode);

/* Writes DIR/NAME into OUT. Returns 0 or FY_ETOOBIG. */
int fy_path_join(char *out, size_t outlen, const char *dir, const char *name);

/* 1 when PATH exists. */
int fy_file_exists(const char *path);

#endif
