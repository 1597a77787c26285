/* redis_sync.c: a blocking Redis connection for CLI commands (see redis_sync.h). */
#include "gateway/redis_sync.h"

#include "common/err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

struct fy_redis_sync {
    redisContext *ctx;
    char where[FY_REDIS_MAX_PATH + 32]; /* "unix:///path" or "HOST:PORT", for messages */
};

/* The code for hiredis's error on CTX; E is errno right after the call. */
static int ctx_error(const fy_redis_sync *c, int e, char *err, size_t errlen)
{
    int rc;
    if (c->ctx->err == REDIS_ERR_EOF) {
        rc = FY_ECONNRESET;
    } else if (c->ctx->err == REDIS_ERR_OOM) {
        rc = FY_ENOMEM;
    } else if (c->ctx->err != REDIS_ERR_IO) {
        rc = FY_EIO;
    } else if (e == EAGAIN || e == EWOULDBLOCK || e == ETIMEDOUT || e == EINPROGRESS) {
        rc = FY_ETIMEDOUT;
    } else if (e == ECONNREFUSED) {
        rc = FY_ECONNREFUSED;
    } else if (e == ENOENT) {
        rc = FY_ENOENT;
    } else if (e == ECONNRESET || e == EPIPE) {
        rc = FY_ECONNRESET;
    } else if (e == EACCES || e == EPERM) {
        rc = FY_EPERM;
    } else {
        rc = FY_EIO;
    }
    return fy_fail(err, errlen, rc, "redis %s: %s", c->where,
                   rc == FY_ETIMEDOUT ? "timed out" : c->ctx->errstr);
}

/* Checks a reply hiredis returned (R NULL: the connection failed). */
static int take_reply(fy_redis_sync *c, void *r, int e, redisReply **out, char *err, size_t errlen)
{
    redisReply *rep = r;
    *out = NULL;
    if (!rep) {
        return ctx_error(c, e, err, errlen);
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        int rc = fy_fail(err, errlen, FY_EIO, "redis %s: %.200s", c->where, rep->str);
        freeReplyObject(rep);
        return rc;
    }
    *out = rep;
    return 0;
}

int fy_redis_sync_cmd(fy_redis_sync *c, redisReply **reply, int argc, const char *const *argv,
                      const size_t *argvlen, char *err, size_t errlen)
{
    errno = 0;
    void *r = redisCommandArgv(c->ctx, argc, (const char **)argv, argvlen);
    return take_reply(c, r, errno, reply, err, errlen);
}

int fy_redis_sync_append(fy_redis_sync *c, int argc, const char *const *argv, const size_t *argvlen)
{
    return redisAppendCommandArgv(c->ctx, argc, (const char **)argv, argvlen) == REDIS_OK
               ? 0
               : FY_ENOMEM;
}

int fy_redis_sync_get(fy_redis_sync *c, redisReply **reply, char *err, size_t errlen)
{
    void *r = NULL;
    errno = 0;
    if (redisGetReply(c->ctx, &r) != REDIS_OK) {
        r = NULL;
    }
    return take_reply(c, r, errno, reply, err, errlen);
}

/* One handshake command; an error reply is FY_EPERM for AUTH and for a
 * server that wants a password (NOAUTH), else FY_EIO. */
static int handshake(fy_redis_sync *c, int argc, const char *const *argv, const size_t *lens,
                     char *err, size_t errlen)
{
    redisReply *r = NULL;
    int rc = fy_redis_sync_cmd(c, &r, argc, argv, lens, err, errlen);
    freeReplyObject(r);
    if (rc == FY_EIO && strcmp(argv[0], "AUTH") == 0) {
        /* The server's text does not contain the password. */
        return fy_fail(err, errlen, FY_EPERM, "redis %s: password refused (AUTH failed)", c->where);
    }
    if (rc == FY_EIO && strstr(err, "NOAUTH")) {
        return fy_fail(err, errlen, FY_EPERM,
                       "redis %s: the server needs a password (--shared-password-file)", c->where);
    }
    return rc;
}

int fy_redis_sync_connect(const fy_redis_config *cfg, fy_redis_sync **out, char *err, size_t errlen)
{
    *out = NULL;
    fy_redis_sync *c = calloc(1, sizeof *c);
    if (!c) {
        return fy_fail(err, errlen, FY_ENOMEM, "redis: out of memory");
    }
    unsigned ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : 1;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    if (cfg->is_unix) {
        snprintf(c->where, sizeof c->where, "unix://%s", cfg->path);
        c->ctx = redisConnectUnixWithTimeout(cfg->path, tv);
    } else {
        snprintf(c->where, sizeof c->where, strchr(cfg->host, ':') ? "[%s]:%d" : "%s:%d", cfg->host,
                 cfg->port);
        c->ctx = redisConnectWithTimeout(cfg->host, cfg->port, tv);
    }
    int e = errno, rc = 0;
    if (!c->ctx) {
        rc = fy_fail(err, errlen, FY_ENOMEM, "redis: out of memory");
        goto out;
    }
    if (c->ctx->err) {
        rc = ctx_error(c, e, err, errlen);
        if (rc == FY_EIO && !strstr(err, c->ctx->errstr)) {
            rc = fy_fail(err, errlen, rc, "redis %s: cannot connect: %s", c->where, c->ctx->errstr);
        }
        goto out;
    }
    if (redisSetTimeout(c->ctx, tv) != REDIS_OK) {
        rc = ctx_error(c, errno, err, errlen);
        goto out;
    }
    if (cfg->password_len) {
        const char *argv[2] = {"AUTH", cfg->password};
        size_t lens[2] = {4, cfg->password_len};
        if ((rc = handshake(c, 2, argv, lens, err, errlen))) {
            goto out;
        }
    }
    if (cfg->db) {
        char db[16];
        const char *argv[2] = {"SELECT", db};
        size_t lens[2] = {6, (size_t)snprintf(db, sizeof db, "%d", cfg->db)};
        if ((rc = handshake(c, 2, argv, lens, err, errlen))) {
            goto out;
        }
    }
    const char *ping[1] = {"PING"};
    rc = handshake(c, 1, ping, NULL, err, errlen);
out:
    if (rc) {
        fy_redis_sync_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void fy_redis_sync_free(fy_redis_sync *c)
{
    if (c) {
        if (c->ctx) {
            redisFree(c->ctx);
        }
        free(c);
    }
}
