#include "gateway/keys.h"

#include "common/crypto.h"
#include "common/err.h"
#include "common/log.h"
#include "common/secret.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ID_RANDOM_BYTES 12 /* "key_" + 16 base64url chars */
#define N_SCOPES        3

/* The fields a check reads first (reference count, revocation, expiry,
 * digest) come first, so they usually share a cache line. */
struct fy_key {
    atomic_int refs;    /* the index holds one */
    atomic_int revoked; /* set by fy_keys_revoke; read without the lock */
    int64_t expires_at; /* under the keyring lock */
    uint8_t hash[FY_SHA256_LEN];
    char id[FY_STORE_KEY_ID_MAX];
    /* Scope lists packed as "a\0b\0\0", NULL = any; under the keyring lock.
     * One allocation holds all three. */
    char *scopes[N_SCOPES];
    char *scope_mem;
    fy_rl_limits full; /* the record's limits, before the keyring's share */
    fy_rl rl;
};

/* A slot carries the first 8 bytes of the key's digest so probing rarely
 * touches an entry that is not the one sought. */
typedef struct {
    uint64_t tag;
    fy_key *k; /* NULL = empty */
} slot;

struct fy_keys {
    fy_store *st;
    pthread_mutex_t mu;
    slot *slots;
    size_t cap; /* power of two; at most 3/4 full */
    size_t count;
    size_t scope_bytes;
    int64_t share; /* limiters enforce limit / share (fy_keys_set_share) */
};

/* --- outcomes ------------------------------------------------------------------- */

int fy_auth_error(fy_auth_outcome o, const char **code, const char **message)
{
    int status;
    const char *c, *m;
    switch (o) {
    case FY_AUTH_OK:
        status = 200, c = "ok", m = "ok";
        break;
    case FY_AUTH_MISSING:
        status = 401, c = "missing_api_key";
        m = "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' or "
            "'x-api-key: KEY'.";
        break;
    case FY_AUTH_MALFORMED:
        status = 401, c = "invalid_api_key";
        m = "Malformed API key: expected 'Authorization: Bearer fy_...' or 'x-api-key: fy_...' "
            "with one ferry API key.";
        break;
    case FY_AUTH_FORBIDDEN_MODEL:
        status = 403, c = "permission_denied";
        m = "This API key is not allowed to use this model.";
        break;
    case FY_AUTH_FORBIDDEN_RUNNER:
        status = 403, c = "permission_denied";
        m = "This API key is not allowed to use this runner.";
        break;
    case FY_AUTH_FORBIDDEN_HOOK:
        status = 403, c = "permission_denied";
        m = "This API key is not allowed to use this hook.";
        break;
    case FY_AUTH_UNKNOWN:
    case FY_AUTH_REVOKED:
    case FY_AUTH_EXPIRED:
    default:
        /* One answer for all three, so a caller cannot probe which. */
        status = 401, c = "invalid_api_key";
        m = "Incorrect API key provided.";
        break;
    }
    if (code) {
        *code = c;
    }
    if (message) {
        *message = m;
    }
    return status;
}

const char *fy_auth_reason(fy_auth_outcome o)
{
    static const char *const names[] = {
        [FY_AUTH_OK] = "ok",
        [FY_AUTH_MISSING] = "missing",
        [FY_AUTH_MALFORMED] = "malformed",
        [FY_AUTH_UNKNOWN] = "unknown",
        [FY_AUTH_REVOKED] = "revoked",
        [FY_AUTH_EXPIRED] = "expired",
        [FY_AUTH_FORBIDDEN_MODEL] = "forbidden_model",
        [FY_AUTH_FORBIDDEN_RUNNER] = "forbidden_runner",
        [FY_AUTH_FORBIDDEN_HOOK] = "forbidden_hook",
    };
    return (unsigned)o < sizeof names / sizeof names[0] ? names[o] : "unknown";
}

/* --- parsing ---------------------------------------------------------------------- */

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Trims spaces and tabs around (P, N). */
static void trim(const char **p, size_t *n)
{
    while (*n && is_ows(**p)) {
        (*p)++, (*n)--;
    }
    while (*n && is_ows((*p)[*n - 1])) {
        (*n)--;
    }
}

static size_t hlen(const char *s, size_t n)
{
    return n ? n : (s ? strlen(s) : 0);
}

typedef enum { CRED_ABSENT, CRED_EMPTY, CRED_BAD, CRED_TOKEN } cred_state;

/* Reads the Authorization value (V, N): "Bearer" 1*SP token. */
static cred_state parse_authorization(const char *v, size_t n, const char **tok, size_t *tlen)
{
    trim(&v, &n);
    if (n == 0) {
        return CRED_EMPTY;
    }
    if (n < 6 || strncasecmp(v, "bearer", 6) != 0) {
        return CRED_BAD;
    }
    if (n == 6) {
        return CRED_EMPTY; /* "Bearer" and nothing: no key was given */
    }
    if (!is_ows(v[6])) {
        return CRED_BAD; /* "Bearerfy_..." or another scheme starting the same */
    }
    v += 6, n -= 6;
    trim(&v, &n);
    if (n == 0) {
        return CRED_EMPTY;
    }
    *tok = v, *tlen = n;
    return CRED_TOKEN;
}

fy_auth_outcome fy_keys_parse(const fy_http_header *h, size_t n, const char **key, size_t *len)
{
    cred_state a = CRED_ABSENT, x = CRED_ABSENT;
    const char *at = NULL, *xt = NULL;
    size_t al = 0, xl = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name = h[i].name;
        size_t nl = hlen(name, h[i].name_len);
        const char *v = h[i].value ? h[i].value : "";
        size_t vl = h[i].value ? hlen(h[i].value, h[i].value_len) : 0;
        if (!name) {
            continue;
        }
        if (nl == 13 && strncasecmp(name, "authorization", 13) == 0) {
            if (a != CRED_ABSENT) {
                return FY_AUTH_MALFORMED; /* which one would we believe? */
            }
            a = parse_authorization(v, vl, &at, &al);
        } else if (nl == 9 && strncasecmp(name, "x-api-key", 9) == 0) {
            if (x != CRED_ABSENT) {
                return FY_AUTH_MALFORMED;
            }
            trim(&v, &vl);
            x = vl ? CRED_TOKEN : CRED_EMPTY;
            xt = v, xl = vl;
        }
    }
    if (a == CRED_BAD) {
        return FY_AUTH_MALFORMED;
    }
    const char *t = NULL;
    size_t tl = 0;
    if (a == CRED_TOKEN && x == CRED_TOKEN) {
        /* Both given: fine when they agree. Both are the caller's own
         * bytes, so an ordinary comparison leaks nothing. */
        if (al != xl || memcmp(at, xt, al) != 0) {
            return FY_AUTH_MALFORMED;
        }
        t = at, tl = al;
    } else if (a == CRED_TOKEN) {
        t = at, tl = al;
    } else if (x == CRED_TOKEN) {
        t = xt, tl = xl;
    } else {
        return FY_AUTH_MISSING;
    }
    if (!fy_secret_well_formed(FY_KEY_PREFIX, t, tl)) {
        return FY_AUTH_MALFORMED;
    }
    *key = t;
    *len = tl;
    return FY_AUTH_OK;
}

/* --- entries ---------------------------------------------------------------------- */

/* Packs the comma-separated lists of R into one allocation. */
static int pack_scopes(const fy_store_key *r, char *scopes[N_SCOPES], char **mem, size_t *bytes)
{
    const char *lists[N_SCOPES] = {r->models, r->runners, r->hooks};
    size_t total = 0;
    for (int i = 0; i < N_SCOPES; i++) {
        total += lists[i][0] ? strlen(lists[i]) + 2 : 0;
    }
    *mem = NULL;
    *bytes = total;
    memset(scopes, 0, N_SCOPES * sizeof scopes[0]);
    if (total == 0) {
        return 0;
    }
    char *p = *mem = malloc(total);
    if (!p) {
        return FY_ENOMEM;
    }
    for (int i = 0; i < N_SCOPES; i++) {
        if (!lists[i][0]) {
            continue;
        }
        scopes[i] = p;
        for (const char *s = lists[i]; *s; s++) {
            *p++ = *s == ',' ? 0 : *s;
        }
        *p++ = 0;
        *p++ = 0;
    }
    return 0;
}

/* Bytes of the packed lists (what pack_scopes allocated). */
static size_t packed_size(char *const scopes[N_SCOPES])
{
    size_t n = 0;
    for (int i = 0; i < N_SCOPES; i++) {
        const char *p = scopes[i];
        if (!p) {
            continue;
        }
        for (; *p; p += strlen(p) + 1) {
            n += strlen(p) + 1;
        }
        n++;
    }
    return n;
}

static void limits_of(const fy_store_key *r, fy_rl_limits *lim)
{
    *lim = (fy_rl_limits){
        .rpm = r->rpm, .tpm = r->tpm, .concurrency = r->concurrency, .burst = r->burst};
}

/* V / SHARE, rounded down so SHARE limiters together never exceed V, but at
 * least 1 so a limit that is on stays on. */
static int64_t share_of(int64_t v, int64_t share)
{
    return v <= 0 || share <= 1 ? v : v / share > 0 ? v / share : 1;
}

/* The limits K's limiter enforces: its record's, divided by the share. */
static void shared_limits(const fy_rl_limits *full, int64_t share, fy_rl_limits *lim)
{
    *lim = (fy_rl_limits){.rpm = share_of(full->rpm, share),
                          .tpm = share_of(full->tpm, share),
                          .concurrency = share_of(full->concurrency, share),
                          .burst = share_of(full->burst, share)};
    /* A default burst is ceil(rpm / 6) of the whole rpm, shared too: SHARE
     * default bursts of the divided rpm could add up to more than it. */
    if (share > 1 && full->rpm > 0) {
        lim->burst = share_of(fy_rl_burst(full->rpm, full->burst), share);
    }
}

/* The checks create and update share: scopes, expiry, a burst that fits rpm. */
static int template_valid(const fy_store_key *r)
{
    return r->expires_at >= 0 && fy_store_scope_valid(r->models) &&
           fy_store_scope_valid(r->runners) && fy_store_scope_valid(r->hooks) &&
           fy_rl_check_burst(r->rpm, r->burst, NULL, 0) == 0;
}

static fy_key *entry_new(const fy_store_key *r, int64_t share, size_t *scope_bytes)
{
    fy_key *k = calloc(1, sizeof *k);
    if (!k) {
        return NULL;
    }
    if (pack_scopes(r, k->scopes, &k->scope_mem, scope_bytes)) {
        free(k);
        return NULL;
    }
    atomic_init(&k->refs, 1);
    atomic_init(&k->revoked, r->revoked_at != 0);
    k->expires_at = r->expires_at;
    memcpy(k->hash, r->hash, sizeof k->hash);
    snprintf(k->id, sizeof k->id, "%s", r->id);
    fy_rl_limits lim;
    limits_of(r, &k->full);
    shared_limits(&k->full, share, &lim);
    fy_rl_init(&k->rl, &lim);
    return k;
}

void fy_key_release(fy_key *k)
{
    if (k && atomic_fetch_sub_explicit(&k->refs, 1, memory_order_acq_rel) == 1) {
        free(k->scope_mem);
        fy_secure_zero(k->hash, sizeof k->hash);
        free(k);
    }
}

const char *fy_key_id(const fy_key *k)
{
    return k->id;
}

fy_rl *fy_key_rl(fy_key *k)
{
    return &k->rl;
}

/* --- the table ---------------------------------------------------------------- */

static uint64_t tag_of(const uint8_t hash[FY_SHA256_LEN])
{
    uint64_t t;
    memcpy(&t, hash, sizeof t);
    return t;
}

/* The slot holding HASH, or the empty slot where it would go. The tag
 * comparison only decides which entries get the full comparison; the full
 * 32 bytes are always compared in constant time. Lock held. */
static slot *find(slot *slots, size_t cap, const uint8_t hash[FY_SHA256_LEN])
{
    uint64_t tag = tag_of(hash);
    size_t i = (size_t)(tag ^ (tag >> 32)) & (cap - 1);
    for (;;) {
        slot *s = &slots[i];
        if (!s->k || (s->tag == tag && fy_ct_equal(s->k->hash, hash, FY_SHA256_LEN))) {
            return s;
        }
        i = (i + 1) & (cap - 1);
    }
}

/* Makes room for one more entry. Lock held. */
static int reserve(fy_keys *kr)
{
    if ((kr->count + 1) * 4 <= kr->cap * 3) {
        return 0;
    }
    size_t cap = kr->cap ? kr->cap * 2 : 1024;
    slot *slots = calloc(cap, sizeof *slots);
    if (!slots) {
        return FY_ENOMEM;
    }
    for (size_t i = 0; i < kr->cap; i++) {
        if (kr->slots[i].k) {
            *find(slots, cap, kr->slots[i].k->hash) = kr->slots[i];
        }
    }
    free(kr->slots);
    kr->slots = slots;
    kr->cap = cap;
    return 0;
}

/* Adds K (taking the caller's reference) unless its hash is present.
 * Room must have been reserved. Lock held. */
static int insert(fy_keys *kr, fy_key *k)
{
    slot *s = find(kr->slots, kr->cap, k->hash);
    if (s->k) {
        return FY_EEXIST;
    }
    s->tag = tag_of(k->hash);
    s->k = k;
    kr->count++;
    return 0;
}

static int add_record(fy_keys *kr, const fy_store_key *r)
{
    size_t sb = 0;
    fy_key *k = entry_new(r, kr->share, &sb);
    if (!k) {
        return FY_ENOMEM;
    }
    pthread_mutex_lock(&kr->mu);
    int rc = reserve(kr);
    if (!rc) {
        rc = insert(kr, k);
    }
    if (!rc) {
        kr->scope_bytes += sb;
    }
    pthread_mutex_unlock(&kr->mu);
    if (rc) {
        fy_key_release(k);
    }
    return rc;
}

typedef struct {
    fy_keys *kr;
    int rc;
} load_ctx;

static void load_one(const fy_store_key *r, void *arg)
{
    load_ctx *c = arg;
    if (!c->rc) {
        c->rc = add_record(c->kr, r);
    }
}

int fy_keys_new(fy_store *st, fy_keys **out)
{
    fy_keys *kr = calloc(1, sizeof *kr);
    if (!kr) {
        return FY_ENOMEM;
    }
    kr->st = st;
    kr->share = 1;
    pthread_mutex_init(&kr->mu, NULL);
    int rc = reserve(kr);
    if (!rc && st) {
        load_ctx c = {kr, 0};
        rc = fy_store_key_list(st, load_one, &c);
        if (!rc) {
            rc = c.rc;
        }
    }
    if (rc) {
        fy_keys_free(kr);
        return rc;
    }
    *out = kr;
    return 0;
}

void fy_keys_free(fy_keys *kr)
{
    if (!kr) {
        return;
    }
    for (size_t i = 0; i < kr->cap; i++) {
        fy_key_release(kr->slots[i].k);
    }
    free(kr->slots);
    pthread_mutex_destroy(&kr->mu);
    free(kr);
}

size_t fy_keys_count(fy_keys *kr)
{
    pthread_mutex_lock(&kr->mu);
    size_t n = kr->count;
    pthread_mutex_unlock(&kr->mu);
    return n;
}

size_t fy_keys_memory(fy_keys *kr)
{
    pthread_mutex_lock(&kr->mu);
    size_t n = sizeof *kr + kr->cap * sizeof(slot) + kr->count * sizeof(fy_key) + kr->scope_bytes;
    pthread_mutex_unlock(&kr->mu);
    return n;
}

/* --- checks ---------------------------------------------------------------------- */

fy_auth_outcome fy_keys_lookup(fy_keys *kr, const char *key, size_t len, int64_t now, fy_key **out)
{
    *out = NULL;
    if (!fy_secret_well_formed(FY_KEY_PREFIX, key, len)) {
        return FY_AUTH_MALFORMED;
    }
    uint8_t h[FY_SHA256_LEN];
    fy_secret_hash(key, len, h);
    fy_auth_outcome o = FY_AUTH_UNKNOWN;
    pthread_mutex_lock(&kr->mu);
    fy_key *k = find(kr->slots, kr->cap, h)->k;
    if (k) {
        if (atomic_load_explicit(&k->revoked, memory_order_acquire)) {
            o = FY_AUTH_REVOKED;
        } else if (k->expires_at != 0 && now >= k->expires_at) {
            o = FY_AUTH_EXPIRED;
        } else {
            atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
            *out = k;
            o = FY_AUTH_OK;
        }
    }
    pthread_mutex_unlock(&kr->mu);
    fy_secure_zero(h, sizeof h);
    return o;
}

fy_auth_outcome fy_keys_authenticate(fy_keys *kr, const fy_http_header *h, size_t n, int64_t now,
                                     fy_key **out)
{
    const char *key = NULL;
    size_t len = 0;
    *out = NULL;
    fy_auth_outcome o = fy_keys_parse(h, n, &key, &len);
    return o == FY_AUTH_OK ? fy_keys_lookup(kr, key, len, now, out) : o;
}

fy_auth_outcome fy_keys_authorize(fy_keys *kr, fy_key *k, fy_scope_kind kind, const char *name)
{
    static const fy_auth_outcome denied[N_SCOPES] = {
        FY_AUTH_FORBIDDEN_MODEL, FY_AUTH_FORBIDDEN_RUNNER, FY_AUTH_FORBIDDEN_HOOK};
    if (!k || (unsigned)kind >= N_SCOPES) {
        return FY_AUTH_FORBIDDEN_MODEL;
    }
    fy_auth_outcome o = denied[kind];
    pthread_mutex_lock(&kr->mu);
    const char *p = k->scopes[kind];
    if (!p) {
        o = FY_AUTH_OK;
    } else if (name && *name) {
        for (; *p; p += strlen(p) + 1) {
            if (strcmp(p, name) == 0) {
                o = FY_AUTH_OK;
                break;
            }
        }
    }
    pthread_mutex_unlock(&kr->mu);
    return o;
}

/* --- admin operations ---------------------------------------------------------- */

int fy_keys_mint(const fy_store_key *t, int64_t now, char secret[FY_SECRET_MAX], fy_store_key *out)
{
    secret[0] = 0;
    *out = *t;
    out->created_at = now;
    out->revoked_at = 0;
    out->last_used_at = 0;
    if (!template_valid(out)) {
        return FY_EINVAL;
    }
    uint8_t idraw[ID_RANDOM_BYTES];
    memcpy(out->id, "key_", 4);
    int rc = fy_random_bytes(idraw, sizeof idraw);
    if (!rc) {
        rc = fy_b64url_encode(idraw, sizeof idraw, out->id + 4, sizeof out->id - 4);
    }
    if (!rc) {
        rc = fy_secret_new(FY_KEY_PREFIX, secret, FY_SECRET_MAX);
    }
    if (rc) {
        fy_secure_zero(secret, FY_SECRET_MAX);
        return rc;
    }
    memcpy(out->prefix, secret, FY_STORE_KEY_PREFIX_LEN);
    out->prefix[FY_STORE_KEY_PREFIX_LEN] = 0;
    fy_secret_hash(secret, strlen(secret), out->hash);
    return 0;
}

int fy_keys_create(fy_keys *kr, const fy_store_key *t, int64_t now, char secret[FY_SECRET_MAX],
                   fy_store_key *out)
{
    fy_store_key *r = malloc(sizeof *r);
    fy_key *k = NULL;
    size_t sb = 0;
    int rc = 0;
    secret[0] = 0;
    if (!r) {
        return FY_ENOMEM;
    }
    /* A fresh id and secret per attempt; a collision (EEXIST) is as likely
     * as guessing a key, but retrying costs nothing. */
    for (int attempt = 0; attempt < 3; attempt++) {
        if ((rc = fy_keys_mint(t, now, secret, r))) {
            goto out;
        }
        fy_key_release(k);
        if (!(k = entry_new(r, kr->share, &sb))) {
            rc = FY_ENOMEM;
            goto out;
        }
        /* Room first, so nothing can fail between the store write and the
         * index insert. */
        pthread_mutex_lock(&kr->mu);
        rc = reserve(kr);
        pthread_mutex_unlock(&kr->mu);
        if (rc) {
            goto out;
        }
        rc = kr->st ? fy_store_key_create(kr->st, r) : 0;
        if (rc != FY_EEXIST) {
            break;
        }
    }
    if (rc) {
        goto out;
    }
    pthread_mutex_lock(&kr->mu);
    rc = reserve(kr); /* another thread may have used the room */
    if (!rc) {
        rc = insert(kr, k);
    }
    if (!rc) {
        kr->scope_bytes += sb;
        k = NULL; /* the index owns it */
    }
    pthread_mutex_unlock(&kr->mu);
    if (rc) {
        /* Durable in the store but not indexed: only possible out of memory
         * or with an index-only duplicate; the key will load on restart. */
        FY_ERROR("keys", "key %s stored but not indexed: %s", r->id, fy_strerror(rc));
        goto out;
    }
    if (out) {
        *out = *r;
    }
out:
    if (rc) {
        fy_secure_zero(secret, FY_SECRET_MAX);
    }
    fy_key_release(k);
    fy_secure_zero(r->hash, sizeof r->hash);
    free(r);
    return rc;
}

/* Gives entry K the mutable fields of record R: limits (history kept),
 * expiry, and the packed scope lists SCOPES in MEM (SB bytes), which K takes. */
static void entry_set(fy_keys *kr, fy_key *k, const fy_store_key *r, char *scopes[N_SCOPES],
                      char *mem, size_t sb)
{
    fy_rl_limits lim;
    pthread_mutex_lock(&kr->mu);
    limits_of(r, &k->full);
    shared_limits(&k->full, kr->share, &lim);
    fy_rl_set_limits(&k->rl, &lim, fy_rl_now());
    char *old = k->scope_mem;
    kr->scope_bytes = kr->scope_bytes - packed_size(k->scopes) + sb;
    memcpy(k->scopes, scopes, N_SCOPES * sizeof *scopes);
    k->scope_mem = mem;
    k->expires_at = r->expires_at;
    pthread_mutex_unlock(&kr->mu);
    /* Readers of scopes hold the lock, so the old lists are unreachable. */
    free(old);
}

/* The entry for key ID, with a reference, or NULL. With a store the hash
 * comes from it; an index-only keyring scans. */
static fy_key *entry_by_id(fy_keys *kr, const char *id)
{
    fy_key *k = NULL;
    fy_store_key *r = NULL;
    if (kr->st) {
        r = malloc(sizeof *r);
        if (!r || fy_store_key_get(kr->st, id, r)) {
            free(r);
            return NULL;
        }
    }
    pthread_mutex_lock(&kr->mu);
    if (r) {
        k = find(kr->slots, kr->cap, r->hash)->k;
    } else {
        for (size_t i = 0; i < kr->cap && !k; i++) {
            if (kr->slots[i].k && strcmp(kr->slots[i].k->id, id) == 0) {
                k = kr->slots[i].k;
            }
        }
    }
    if (k) {
        atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&kr->mu);
    free(r);
    return k;
}

int fy_keys_update(fy_keys *kr, const fy_store_key *upd)
{
    char *scopes[N_SCOPES], *mem = NULL;
    size_t sb = 0;
    if (!template_valid(upd)) {
        return FY_EINVAL;
    }
    int rc = pack_scopes(upd, scopes, &mem, &sb);
    if (rc) {
        return rc;
    }
    fy_key *k = NULL;
    if (kr->st) {
        rc = fy_store_key_update(kr->st, upd);
    }
    if (!rc && !(k = entry_by_id(kr, upd->id))) {
        rc = kr->st ? FY_EIO : FY_ENOENT; /* stored but never indexed: see create */
    }
    if (rc) {
        free(mem);
        return rc;
    }
    entry_set(kr, k, upd, scopes, mem, sb);
    fy_key_release(k);
    return 0;
}

int fy_keys_apply(fy_keys *kr, const fy_store_key *r)
{
    char *scopes[N_SCOPES], *mem = NULL;
    size_t sb = 0;
    if (!template_valid(r) || r->revoked_at < 0) {
        return FY_EINVAL;
    }
    int rc = kr->st ? fy_store_key_put(kr->st, r) : 0;
    if (rc) {
        return rc;
    }
    pthread_mutex_lock(&kr->mu);
    fy_key *k = find(kr->slots, kr->cap, r->hash)->k;
    if (k) {
        atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&kr->mu);
    if (!k) {
        return add_record(kr, r);
    }
    if ((rc = pack_scopes(r, scopes, &mem, &sb)) == 0) {
        entry_set(kr, k, r, scopes, mem, sb);
        if (r->revoked_at) {
            atomic_store_explicit(&k->revoked, 1, memory_order_release);
        }
    }
    fy_key_release(k);
    return rc;
}

void fy_keys_set_share(fy_keys *kr, int64_t share)
{
    share = share < 1 ? 1 : share;
    int64_t now = fy_rl_now();
    pthread_mutex_lock(&kr->mu);
    if (share != kr->share) {
        kr->share = share;
        for (size_t i = 0; i < kr->cap; i++) {
            fy_key *k = kr->slots[i].k;
            if (k) {
                fy_rl_limits lim;
                shared_limits(&k->full, share, &lim);
                fy_rl_set_limits(&k->rl, &lim, now);
            }
        }
    }
    pthread_mutex_unlock(&kr->mu);
}

int fy_keys_revoke(fy_keys *kr, const char *id, int64_t now)
{
    int rc = kr->st ? fy_store_key_revoke(kr->st, id, now) : 0;
    if (rc) {
        return rc;
    }
    fy_key *k = entry_by_id(kr, id);
    if (!k) {
        return kr->st ? FY_EIO : FY_ENOENT;
    }
    atomic_store_explicit(&k->revoked, 1, memory_order_release);
    fy_key_release(k);
    return 0;
}
