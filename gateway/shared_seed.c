/* shared_seed.c: the deployment seed in Redis (see shared_seed.h). */
#include "gateway/shared_seed.h"

#include "common/crypto.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "common/x509.h"
#include "gateway/datadir.h"
#include "gateway/shared_layout.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The seed's files; runner-ca.crt is last, so writing in this order leaves
 * it for the end. */
static const char *const seed_names[] = {
    FY_GW_ADMIN_TOKEN, FY_GW_RUNNER_CA_KEY, FY_GW_CA_KEY, FY_GW_SERVER_KEY,
    FY_GW_CA_CERT,     FY_GW_SERVER_CERT,   FY_GW_CONFIG, FY_GW_RUNNER_CA_CERT,
};
#define NSEED     ((int)(sizeof seed_names / sizeof seed_names[0]))
#define RUNNER_CA (NSEED - 1)

static int seed_required(int i)
{
    const char *n = seed_names[i];
    return strcmp(n, FY_GW_RUNNER_CA_CERT) == 0 || strcmp(n, FY_GW_RUNNER_CA_KEY) == 0 ||
           strcmp(n, FY_GW_ADMIN_TOKEN) == 0 || strcmp(n, FY_GW_CONFIG) == 0;
}

typedef struct {
    char *data[NSEED]; /* NULL: absent */
    size_t len[NSEED];
    char fingerprint[72];
} seed;

static void seed_free(seed *s)
{
    for (int i = 0; i < NSEED; i++) {
        if (s->data[i]) {
            fy_secure_zero(s->data[i], s->len[i]);
            free(s->data[i]);
        }
    }
    memset(s, 0, sizeof *s);
}

/* Checks that S is complete and takes its runner CA's fingerprint. */
static int seed_check(seed *s, const char *where, char *err, size_t errlen)
{
    for (int i = 0; i < NSEED; i++) {
        if (seed_required(i) && !s->data[i]) {
            return fy_fail(err, errlen, FY_EINVAL, "%s: the seed has no %s", where, seed_names[i]);
        }
    }
    fy_x509_info info;
    char why[256];
    if (fy_x509_info_get(s->data[RUNNER_CA], s->len[RUNNER_CA], &info, why, sizeof why)) {
        return fy_fail(err, errlen, FY_EINVAL, "%s: %s: %s", where, FY_GW_RUNNER_CA_CERT, why);
    }
    snprintf(s->fingerprint, sizeof s->fingerprint, "%s", info.fingerprint_str);
    return 0;
}

/* Reads the seed from Redis: 0, FY_ENOENT (none) or an error. */
static int seed_get(fy_redis_sync *c, seed *s, char *err, size_t errlen)
{
    const char *argv[2] = {"HGETALL", FY_SH_DEPLOY};
    redisReply *r = NULL;
    memset(s, 0, sizeof *s);
    int rc = fy_redis_sync_cmd(c, &r, 2, argv, NULL, err, errlen);
    if (rc) {
        return rc;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2) {
        rc = fy_fail(err, errlen, FY_EPROTO, "redis: %s is not a hash", FY_SH_DEPLOY);
        goto out;
    }
    if (r->elements == 0) {
        rc = fy_fail(err, errlen, FY_ENOENT,
                     "no deployment seed in redis (run `ferry-gateway init --shared` first)");
        goto out;
    }
    for (size_t e = 0; e + 1 < r->elements && !rc; e += 2) {
        const redisReply *k = r->element[e], *v = r->element[e + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            rc = fy_fail(err, errlen, FY_EPROTO, "redis: %s: not a hash of strings", FY_SH_DEPLOY);
            break;
        }
        for (int i = 0; i < NSEED; i++) {
            if (k->len != strlen(seed_names[i]) || memcmp(k->str, seed_names[i], k->len) != 0) {
                continue;
            }
            if (v->len == 0 || v->len > FY_SHARED_SEED_FILE_MAX || s->data[i]) {
                rc = fy_fail(err, errlen, FY_EPROTO, "redis: %s: %s is empty or over %d bytes",
                             FY_SH_DEPLOY, seed_names[i], FY_SHARED_SEED_FILE_MAX);
                break;
            }
            if (!(s->data[i] = malloc(v->len + 1))) {
                rc = FY_ENOMEM;
                break;
            }
            memcpy(s->data[i], v->str, v->len);
            s->data[i][v->len] = 0;
            s->len[i] = v->len;
        }
    }
    if (!rc) {
        rc = seed_check(s, "redis " FY_SH_DEPLOY, err, errlen);
    }
out:
    if (r) {
        for (size_t e = 0; r->type == REDIS_REPLY_ARRAY && e < r->elements; e++) {
            if (r->element[e]->str) {
                fy_secure_zero(r->element[e]->str, r->element[e]->len);
            }
        }
        freeReplyObject(r);
    }
    if (rc) {
        seed_free(s);
    }
    return rc;
}

/* Reads the seed's files from DATA_DIR: 0, FY_ENOENT (not initialised) or an error. */
static int seed_load(const char *data_dir, seed *s, char *err, size_t errlen)
{
    char path[4096];
    memset(s, 0, sizeof *s);
    int rc = fy_path_join(path, sizeof path, data_dir, FY_GW_RUNNER_CA_CERT);
    if (rc == 0 && !fy_file_exists(path)) {
        return fy_fail(err, errlen, FY_ENOENT, "%s is not initialised", data_dir);
    }
    for (int i = 0; i < NSEED && !rc; i++) {
        if ((rc = fy_path_join(path, sizeof path, data_dir, seed_names[i]))) {
            break;
        }
        rc = fy_file_read(path, FY_SHARED_SEED_FILE_MAX, &s->data[i], &s->len[i]);
        if (rc == FY_ENOENT && !seed_required(i)) {
            rc = 0;
        } else if (rc) {
            rc = fy_fail(err, errlen, rc == FY_ENOENT ? FY_EIO : rc, "cannot read %s: %s", path,
                         fy_strerror(rc));
        }
    }
    if (!rc) {
        rc = seed_check(s, data_dir, err, errlen);
    }
    if (rc) {
        seed_free(s);
    }
    return rc;
}

/* Uploads S with created_at, only if Redis holds no seed: *WON says whether
 * it did. One script, so two replicas cannot both seed. */
static int seed_put(fy_redis_sync *c, const seed *s, int *won, char *err, size_t errlen)
{
    static const char script[] =
        "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n"
        "for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end\n"
        "return 1\n";
    const char *argv[4 + 2 * NSEED + 2];
    size_t lens[4 + 2 * NSEED + 2];
    char created[24];
    int argc = 0;
    argv[argc++] = "EVAL";
    argv[argc++] = script;
    argv[argc++] = "1";
    argv[argc++] = FY_SH_DEPLOY;
    for (int i = 0; i < argc; i++) {
        lens[i] = strlen(argv[i]);
    }
    for (int i = 0; i < NSEED; i++) {
        if (s->data[i]) {
            lens[argc] = strlen(seed_names[i]);
            argv[argc++] = seed_names[i];
            lens[argc] = s->len[i];
            argv[argc++] = s->data[i];
        }
    }
    lens[argc] = strlen("created_at");
    argv[argc++] = "created_at";
    lens[argc] = (size_t)snprintf(created, sizeof created, "%" PRId64, (int64_t)time(NULL));
    argv[argc++] = created;
    redisReply *r = NULL;
    int rc = fy_redis_sync_cmd(c, &r, argc, argv, lens, err, errlen);
    if (!rc && r->type != REDIS_REPLY_INTEGER) {
        rc = fy_fail(err, errlen, FY_EPROTO, "redis: unexpected reply to the seed script");
    }
    *won = !rc && r->integer == 1;
    freeReplyObject(r);
    return rc;
}

/* Writes S into DATA_DIR (see fy_shared_seed_sync for REPLACE). */
static int seed_write(const seed *s, const char *data_dir, int replace, fy_seed_outcome *outcome,
                      char *err, size_t errlen)
{
    seed local;
    int rc = seed_load(data_dir, &local, err, errlen);
    if (rc == 0) {
        int same = local.len[RUNNER_CA] == s->len[RUNNER_CA] &&
                   memcmp(local.data[RUNNER_CA], s->data[RUNNER_CA], s->len[RUNNER_CA]) == 0;
        if (!same && !replace) {
            rc = fy_fail(err, errlen, FY_EEXIST,
                         "%s holds another deployment (runner CA %s) than redis (runner CA %s)",
                         data_dir, local.fingerprint, s->fingerprint);
        }
        seed_free(&local);
        if (same || rc) {
            *outcome = FY_SEED_SAME;
            return rc;
        }
        *outcome = FY_SEED_ADOPTED;
    } else if (rc == FY_ENOENT) {
        *outcome = FY_SEED_JOINED;
    } else {
        return rc;
    }
    if ((rc = fy_mkdir_p(data_dir, 0700))) {
        return fy_fail(err, errlen, rc, "cannot create %s: %s", data_dir, fy_strerror(rc));
    }
    for (int i = 0; i < NSEED && !rc; i++) {
        if (s->data[i]) {
            rc = fy_gw_datadir_write(data_dir, seed_names[i], s->data[i], s->len[i], err, errlen);
        } else if (*outcome == FY_SEED_ADOPTED) {
            /* A file of the replaced deployment the seed lacks (its dev CA,
             * say, when the seed's listeners use --tls-cert) must not stay. */
            char path[4096];
            if (fy_path_join(path, sizeof path, data_dir, seed_names[i]) == 0 &&
                unlink(path) != 0 && errno != ENOENT) {
                rc = fy_fail(err, errlen, FY_EIO, "cannot remove %s", path);
            }
        }
    }
    return rc;
}

int fy_shared_seed_sync(fy_redis_sync *c, const char *data_dir, int replace,
                        fy_seed_outcome *outcome, char fingerprint[72], char *err, size_t errlen)
{
    seed s;
    int rc = seed_get(c, &s, err, errlen);
    if (rc == FY_ENOENT) {
        int won = 0;
        if ((rc = seed_load(data_dir, &s, err, errlen)) == 0 &&
            (rc = seed_put(c, &s, &won, err, errlen)) == 0 && won) {
            *outcome = FY_SEED_UPLOADED;
            goto out;
        }
        seed_free(&s);
        if (rc) {
            return rc;
        }
        /* Another replica seeded first: go on with its seed. */
        rc = seed_get(c, &s, err, errlen);
    }
    if (rc == 0) {
        rc = seed_write(&s, data_dir, replace, outcome, err, errlen);
    }
out:
    if (rc == 0 && fingerprint) {
        memcpy(fingerprint, s.fingerprint, sizeof s.fingerprint);
    }
    seed_free(&s);
    return rc;
}

int fy_shared_seed_fetch(const fy_redis_config *cfg, const char *data_dir, char *err, size_t errlen)
{
    fy_redis_sync *c = NULL;
    seed s = {0};
    fy_seed_outcome outcome;
    int rc = fy_redis_sync_connect(cfg, &c, err, errlen);
    if (rc == 0 && (rc = seed_get(c, &s, err, errlen)) == 0) {
        rc = seed_write(&s, data_dir, 0, &outcome, err, errlen);
    }
    seed_free(&s);
    fy_redis_sync_free(c);
    return rc;
}
