/* shared_seed.h: the deployment seed of a shared gateway (FY_SH_DEPLOY in
 * gateway/shared_layout.h): the data-dir files every replica of one
 * deployment shares (runner CA, dev CA, server certificate, admin token,
 * gateway.json), kept in Redis so replicas can be started from an empty data
 * dir. A deployment is identified by its runner CA: two data dirs hold the
 * same deployment when their runner-ca.crt files are identical.
 *
 * What a seed read from Redis may hold is bounded: only the eight seed
 * files (runner-ca.crt/.key, ca.crt/.key, server.crt/.key, admin.token,
 * gateway.json: datadir.h's names) are ever written; any other field is
 * ignored, so nothing from the server names a path. Each value is at most
 * FY_SHARED_SEED_FILE_MAX bytes; runner-ca.crt, runner-ca.key, admin.token
 * and gateway.json are required and runner-ca.crt must be a certificate.
 *
 * Files are written with fy_gw_datadir_write (atomic; 0600 for keys and
 * admin.token, 0644 for the rest), runner-ca.crt last: its presence marks a
 * complete data dir, as with `ferry-gateway init`.
 *
 * All functions block (gateway/redis_sync.h): for CLI commands and for
 * `run --shared` before its loop starts. */
#ifndef FY_GATEWAY_SHARED_SEED_H
#define FY_GATEWAY_SHARED_SEED_H

#include "gateway/redis.h"
#include "gateway/redis_sync.h"

#include <stddef.h>

#define FY_SHARED_SEED_FILE_MAX 65536 /* bytes of one seed file */

/* What fy_shared_seed_sync did. */
typedef enum {
    FY_SEED_UPLOADED = 1, /* Redis had no seed: DATA_DIR's files are the seed now */
    FY_SEED_JOINED,       /* DATA_DIR had no deployment: the seed was written into it */
    FY_SEED_SAME,         /* DATA_DIR already holds Redis's deployment: nothing changed */
    FY_SEED_ADOPTED,      /* REPLACE: DATA_DIR's own deployment was replaced by Redis's */
} fy_seed_outcome;

/* Makes DATA_DIR and Redis (connection C) hold one deployment:
 *   - Redis has a seed: DATA_DIR without one gets it written (JOINED); the
 *     same deployment changes nothing (SAME); a different one is refused
 *     (FY_EEXIST, ERR naming both fingerprints) unless REPLACE, when the
 *     seed's files replace DATA_DIR's (ADOPTED; REPLACE is for a data dir
 *     the caller has just created and nothing uses yet);
 *   - Redis has none and DATA_DIR is initialised: its files are uploaded
 *     with created_at, only if Redis still has no seed then (one Lua
 *     script): of two replicas seeding at once one wins (UPLOADED) and the
 *     other goes on as above with the winner's seed;
 *   - neither has one: FY_ENOENT (create DATA_DIR, then call again).
 * On success *OUTCOME says which, and FINGERPRINT (may be NULL) gets the
 * runner CA's "sha256:..." fingerprint. Returns 0 or an FY_E* code with ERR. */
int fy_shared_seed_sync(fy_redis_sync *c, const char *data_dir, int replace,
                        fy_seed_outcome *outcome, char fingerprint[72], char *err, size_t errlen);

/* For `run --shared`: connects with CFG, reads FY_SH_DEPLOY and writes each
 * file into DATA_DIR unless the data dir already holds the same deployment:
 * then nothing changes. A data dir that holds a DIFFERENT deployment
 * (runner-ca.crt differs) is an error (FY_EEXIST) naming both fingerprints.
 * Returns 0, FY_ENOENT (no seed in Redis: run `ferry-gateway init --shared`
 * first), or an error (ERR says which). Never uploads anything. */
int fy_shared_seed_fetch(const fy_redis_config *cfg, const char *data_dir, char *err,
                         size_t errlen);

#endif
