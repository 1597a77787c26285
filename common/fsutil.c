#include "fsutil.h"

#include "err.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int from_errno(int e)
{
    switch (e) {
    case ENOENT:
        return FY_ENOENT;
    case EEXIST:
        return FY_EEXIST;
    case EACCES:
    case EPERM:
        return FY_EPERM;
    case ENOMEM:
        return FY_ENOMEM;
    case ENAMETOOLONG:
        return FY_ETOOBIG;
    }
    return FY_EIO;
}

int fy_path_join(char *out, size_t outlen, const char *dir, const char *name)
{
    int n = snprintf(out, outlen, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= outlen ? FY_ETOOBIG : 0;
}

int fy_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int fy_atomic_open(const char *path, mode_t mode, fy_atomic_file *f)
{
    memset(f, 0, sizeof *f);
    f->fd = -1;
    if (snprintf(f->path, sizeof f->path, "%s", path) >= (int)sizeof f->path ||
        snprintf(f->tmp, sizeof f->tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof f->tmp) {
        return FY_ETOOBIG;
    }
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (f->fd < 0) {
        return from_errno(errno);
    }
    /* open() applies the umask; secrets must end up exactly at MODE. */
    if (fchmod(f->fd, mode) != 0) {
        int rc = from_errno(errno);
        fy_atomic_abort(f);
        return rc;
    }
    return 0;
}

int fy_atomic_write(fy_atomic_file *f, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(f->fd, p, len);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return from_errno(errno);
        }
        p += w;
        len -= (size_t)w;
        f->written += (uint64_t)w;
    }
    return 0;
}

int fy_atomic_commit(fy_atomic_file *f)
{
    int rc = 0;
    if (fsync(f->fd) != 0) {
        rc = from_errno(errno);
    }
    close(f->fd);
    f->fd = -1;
    if (rc == 0 && rename(f->tmp, f->path) != 0) {
        rc = from_errno(errno);
    }
    if (rc) {
        unlink(f->tmp);
        return rc;
    }
    /* Make the rename itself durable. */
    char dirbuf[4096];
    snprintf(dirbuf, sizeof dirbuf, "%s", f->path);
    int dfd = open(dirname(dirbuf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

void fy_atomic_abort(fy_atomic_file *f)
{
    if (f->fd >= 0) {
        close(f->fd);
        f->fd = -1;
        unlink(f->tmp);
    }
}

int fy_file_write_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
    fy_atomic_file f;
    int rc = fy_atomic_open(path, mode, &f);
    if (rc == 0 && (rc = fy_atomic_write(&f, data, len)) < 0) {
        fy_atomic_abort(&f);
    }
    return rc ? rc : fy_atomic_commit(&f);
}

int fy_file_read(const char *path, size_t max, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return from_errno(errno);
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int rc = from_errno(errno);
        close(fd);
        return rc;
    }
    if ((size_t)st.st_size > max) {
        close(fd);
        return FY_ETOOBIG;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        close(fd);
        return FY_ENOMEM;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    *out = buf;
    if (len) {
        *len = got;
    }
    return 0;
}

int fy_mkdir_p(const char *dir, mode_t mode)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) {
        return FY_ETOOBIG;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, mode) != 0 && errno != EEXIST) {
                return from_errno(errno);
            }
            *p = '/';
        }
    }
    if (mkdir(buf, mode) != 0 && errno != EEXIST) {
        return from_errno(errno);
    }
    return 0;
}

int fy_file_map(const char *path, void **map, size_t *len, char *err, size_t errlen)
{
    *map = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return fy_fail(err, errlen, e == ENOENT ? FY_ENOENT : from_errno(e), "%s: %s", path,
                       strerror(e));
    }
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        rc = fy_fail(err, errlen, FY_EIO, "%s: not a regular file", path);
    } else if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            rc = fy_fail(err, errlen, FY_EIO, "%s: mmap: %s", path, strerror(errno));
        } else {
            *map = p;
            *len = (size_t)st.st_size;
        }
    }
    close(fd);
    return rc;
}

void fy_file_unmap(void *map, size_t len)
{
    if (map) {
        munmap(map, len);
    }
}
