/* init.c: `ferry-gateway init`, which creates a data directory once. */
#include "gateway/datadir.h"

#include "common/args.h"
#include "common/crypto.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "common/limits.h"
#include "common/secret.h"
#include "common/x509.h"
#include "gateway/redis_sync.h"
#include "gateway/shared_seed.h"
#include "gateway/store.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CA_VALIDITY_S     (10LL * 365 * 86400)
#define SERVER_VALIDITY_S (2LL * 365 * 86400)

/* The mode follows the name: 0600 for keys and the token (datadir.h). */
static int write_file(const char *dir, const char *name, const char *data)
{
    char err[4200];
    int rc = fy_gw_datadir_write(dir, name, data, strlen(data), err, sizeof err);
    if (rc) {
        fprintf(stderr, "ferry-gateway init: %s\n", err);
    }
    return rc;
}

static const char init_help[] =
    "Usage: ferry-gateway init --data-dir DIR [--hostname NAME]... [--tls-cert FILE "
    "--tls-key FILE]\n"
    "       ferry-gateway init --data-dir DIR --shared URL [--shared-password-file "
    "FILE] [...]\n\n"
    "Creates, once, a gateway data directory: the runner CA, a server certificate for\n"
    "the public, tunnel and admin listeners (signed by a new dev CA, whose certificate\n"
    "is DIR/ca.crt, unless --tls-cert/--tls-key are given), the admin token\n"
    "(DIR/admin.token, mode 0600) and the store. Running it again on an initialised\n"
    "directory changes nothing.\n\n"
    "With --shared, DIR is one replica of a deployment whose state lives in Redis\n"
    "(redis://HOST[:PORT][/DB] or unix:///path.sock[?db=N]). When Redis already\n"
    "holds a deployment seed, DIR joins it: the seed's CAs, certificates, admin token\n"
    "and gateway.json are written into DIR. Otherwise DIR is created as above (or\n"
    "used as it is when initialised) and its files become the seed; of two replicas\n"
    "seeding at once, one wins and the other adopts its seed. The Redis password is\n"
    "read from --shared-password-file, never from the command line.\n\nOptions:\n";

typedef struct {
    const char *data_dir, *tls_cert, *tls_key, *shared, *shared_password_file;
    fy_strlist hostnames;
    int help;
} init_opts;

/* Parses ARGV into O. Returns -1 to go on, or the exit status (help, usage error). */
static int init_parse(int argc, char **argv, init_opts *o)
{
    const fy_opt opts[] = {
        {"data-dir", FY_OPT_STR, &o->data_dir, "DIR", "data directory to create (required)"},
        {"hostname", FY_OPT_STRLIST, &o->hostnames, "NAME",
         "DNS name or IP the server certificate is for (default: localhost, 127.0.0.1, ::1)"},
        {"tls-cert", FY_OPT_STR, &o->tls_cert, "FILE",
         "use this certificate chain (PEM) for the listeners instead of a dev CA"},
        {"tls-key", FY_OPT_STR, &o->tls_key, "FILE", "private key (PEM) for --tls-cert"},
        {"shared", FY_OPT_STR, &o->shared, "URL",
         "seed (or join) the shared deployment in this Redis"},
        {"shared-password-file", FY_OPT_STR, &o->shared_password_file, "FILE",
         "the Redis password: the first line of FILE"},
        {"help", FY_OPT_FLAG, &o->help, NULL, "show this help"},
        {0},
    };
    char *pos[argc > 0 ? argc : 1];
    int npos = 0;
    int status =
        fy_args_command(opts, argc, argv, pos, &npos, "ferry-gateway init", &o->help, init_help);
    if (status >= 0) {
        return status;
    }
    const char *why = !o->data_dir                      ? "--data-dir DIR is required"
                      : npos                            ? "unexpected argument (see --help)"
                      : (!o->tls_cert) != (!o->tls_key) ? "--tls-cert and --tls-key go together"
                      : o->shared_password_file && !o->shared
                          ? "--shared-password-file goes with --shared"
                          : NULL;
    if (why) {
        fprintf(stderr, "ferry-gateway init: %s\n", why);
        return 2;
    }
    return -1;
}

/* Creates O->data_dir as plain init does; *CREATED (may be NULL) says
 * whether it did (0: it was initialised already). Returns the exit status. */
static int init_local(init_opts *o, int *created)
{
    const char *data_dir = o->data_dir, *tls_cert = o->tls_cert, *tls_key = o->tls_key;
    fy_strlist hostnames = o->hostnames;
    char err[512];
    int rc = 0, status = 1;
    char *runner_ca = NULL, *runner_ca_key = NULL, *dev_ca = NULL, *dev_ca_key = NULL;
    char *server = NULL, *server_key = NULL, *chain = NULL, *cfg_text = NULL;
    fy_store *store = NULL;
    json_t *cfg = NULL;
    char token[FY_SECRET_MAX + 2] = "";

    if (created) {
        *created = 0;
    }
    char path[4096];
    fy_path_join(path, sizeof path, data_dir, FY_GW_RUNNER_CA_CERT);
    if (fy_file_exists(path)) {
        if (!o->shared) {
            printf("%s is already initialised; nothing changed\n", data_dir);
        }
        return 0;
    }
    if ((rc = fy_mkdir_p(data_dir, 0700))) {
        fprintf(stderr, "ferry-gateway init: cannot create %s: %s\n", data_dir, fy_strerror(rc));
        return 1;
    }

    if (fy_x509_ca_create("CN=ferry runner CA,O=ferry", CA_VALIDITY_S, NULL, &runner_ca,
                          &runner_ca_key, err, sizeof err)) {
        fprintf(stderr, "ferry-gateway init: runner CA: %s\n", err);
        goto out;
    }

    if (!tls_cert) {
        /* Names the server certificate covers. mbedTLS clients (runners) match
         * only DNS SANs, so IPv4 addresses are listed as DNS names as well
         * (an IPv6 literal is not a valid DNS name; runners dial v4 or names). */
        const char *dns[FY_STRLIST_MAX + 4] = {0}, *ips[FY_STRLIST_MAX + 4] = {0};
        size_t nd = 0, ni = 0;
        if (hostnames.n == 0) {
            hostnames.v[hostnames.n++] = "localhost";
            hostnames.v[hostnames.n++] = "127.0.0.1";
            hostnames.v[hostnames.n++] = "::1";
        }
        for (size_t i = 0; i < hostnames.n; i++) {
            unsigned char tmp[16];
            const char *h = hostnames.v[i];
            if (inet_pton(AF_INET6, h, tmp) == 1) {
                ips[ni++] = h; /* not a valid DNS name: IP SAN only */
                continue;
            }
            if (inet_pton(AF_INET, h, tmp) == 1) {
                ips[ni++] = h;
            }
            dns[nd++] = h;
        }
        if (fy_x509_ca_create("CN=ferry dev CA,O=ferry", CA_VALIDITY_S, NULL, &dev_ca, &dev_ca_key,
                              err, sizeof err)) {
            fprintf(stderr, "ferry-gateway init: dev CA: %s\n", err);
            goto out;
        }
        char subject[300];
        snprintf(subject, sizeof subject, "CN=%s,O=ferry", hostnames.v[0]);
        fy_x509_server_options so = {
            .ca_cert_pem = dev_ca,
            .ca_key_pem = dev_ca_key,
            .subject = subject,
            .dns_names = dns,
            .ip_addrs = ni ? ips : NULL,
            .valid_seconds = SERVER_VALIDITY_S,
        };
        if (fy_x509_server_issue(&so, &server, &server_key, err, sizeof err)) {
            fprintf(stderr, "ferry-gateway init: server certificate: %s\n", err);
            goto out;
        }
        /* The chain carries the dev CA so a runner enrolling with
         * --ca-fingerprint can find the certificate it pins. */
        size_t n = strlen(server) + strlen(dev_ca) + 1;
        chain = malloc(n);
        if (!chain) {
            goto out;
        }
        snprintf(chain, n, "%s%s", server, dev_ca);
    }

    /* Secrets first, public files after, runner-ca.crt last: its presence
     * marks a completed init. */
    if (fy_secret_new(FY_GW_ADMIN_TOKEN_PREFIX, token, sizeof token - 1)) {
        goto out;
    }
    strcat(token, "\n");
    if (write_file(data_dir, FY_GW_ADMIN_TOKEN, token) ||
        write_file(data_dir, FY_GW_RUNNER_CA_KEY, runner_ca_key)) {
        goto out;
    }
    if (!tls_cert && (write_file(data_dir, FY_GW_CA_KEY, dev_ca_key) ||
                      write_file(data_dir, FY_GW_SERVER_KEY, server_key) ||
                      write_file(data_dir, FY_GW_CA_CERT, dev_ca) ||
                      write_file(data_dir, FY_GW_SERVER_CERT, chain))) {
        goto out;
    }
    fy_path_join(path, sizeof path, data_dir, FY_GW_DB);
    if (fy_store_open(path, &store, err, sizeof err)) {
        fprintf(stderr, "ferry-gateway init: %s\n", err);
        goto out;
    }
    /* gateway.json records where the listeners' certificate lives, so `run`
     * needs only --data-dir. */
    cfg = json_object();
    if (tls_cert) {
        char abs_cert[4096], abs_key[4096];
        if (!realpath(tls_cert, abs_cert) || !realpath(tls_key, abs_key)) {
            fprintf(stderr, "ferry-gateway init: cannot find %s or %s\n", tls_cert, tls_key);
            goto out;
        }
        json_object_set_new(cfg, "tls-cert", json_string(abs_cert));
        json_object_set_new(cfg, "tls-key", json_string(abs_key));
    }
    cfg_text = json_dumps(cfg, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!cfg_text || write_file(data_dir, FY_GW_CONFIG, cfg_text) ||
        write_file(data_dir, FY_GW_RUNNER_CA_CERT, runner_ca)) {
        goto out;
    }
    printf("initialised %s\n", data_dir);
    printf("  runner CA      %s/%s\n", data_dir, FY_GW_RUNNER_CA_CERT);
    if (!tls_cert) {
        fy_x509_info info;
        fy_x509_info_get(dev_ca, strlen(dev_ca), &info, err, sizeof err);
        printf("  trust (dev CA) %s/%s  %s\n", data_dir, FY_GW_CA_CERT, info.fingerprint_str);
    }
    printf("  admin token    %s/%s\n", data_dir, FY_GW_ADMIN_TOKEN);
    if (!o->shared) {
        printf("next: ferry-gateway run --data-dir %s\n", data_dir);
    }
    if (created) {
        *created = 1;
    }
    status = 0;
out:
    fy_secure_zero(token, sizeof token);
    fy_x509_key_pem_free(runner_ca_key);
    fy_x509_key_pem_free(dev_ca_key);
    fy_x509_key_pem_free(server_key);
    free(runner_ca);
    free(dev_ca);
    free(server);
    free(chain);
    free(cfg_text);
    json_decref(cfg);
    fy_store_close(store);
    return status;
}

/* `init --shared`: joins the deployment Redis holds, or seeds it from
 * O->data_dir (created first when needed). Returns the exit status. */
static int init_shared(init_opts *o)
{
    fy_redis_config cfg;
    fy_redis_sync *c = NULL;
    fy_store *store = NULL;
    fy_seed_outcome outcome = 0;
    char err[4400], fp[72] = "", path[4096];
    int status = 1, created = 0;
    int rc = fy_redis_config_parse(o->shared, o->shared_password_file, &cfg, err, sizeof err);
    if (rc == 0) {
        rc = fy_redis_sync_connect(&cfg, &c, err, sizeof err);
    }
    if (rc) {
        /* Not FY_ENOENT below: a missing socket is not a missing seed. */
        fprintf(stderr, "ferry-gateway init: %s\n", err);
        goto out;
    }
    rc = fy_shared_seed_sync(c, o->data_dir, 0, &outcome, fp, err, sizeof err);
    if (rc == FY_ENOENT) {
        /* Neither Redis nor DIR has a deployment: make one, then seed it;
         * a DIR made just now may be replaced if another replica won. */
        if ((status = init_local(o, &created)) != 0) {
            goto out;
        }
        status = 1;
        rc = fy_shared_seed_sync(c, o->data_dir, created, &outcome, fp, err, sizeof err);
    }
    if (rc) {
        fprintf(stderr, "ferry-gateway init: %s\n", err);
        goto out;
    }
    /* The local store: this replica's cache of the shared state. */
    if ((rc = fy_path_join(path, sizeof path, o->data_dir, FY_GW_DB)) == 0) {
        rc = fy_store_open(path, &store, err, sizeof err);
    }
    if (rc) {
        fprintf(stderr, "ferry-gateway init: %s\n", rc == FY_ETOOBIG ? "path too long" : err);
        goto out;
    }
    switch (outcome) {
    case FY_SEED_UPLOADED:
        printf("seeded the shared deployment in %s from %s (runner CA %s)\n", o->shared,
               o->data_dir, fp);
        break;
    case FY_SEED_JOINED:
        printf("joined the shared deployment of %s: wrote %s (runner CA %s)\n", o->shared,
               o->data_dir, fp);
        break;
    case FY_SEED_ADOPTED:
        printf("another replica seeded %s first: %s now holds its deployment (runner CA %s)\n",
               o->shared, o->data_dir, fp);
        break;
    default:
        printf("%s already holds the shared deployment of %s (runner CA %s); nothing changed\n",
               o->data_dir, o->shared, fp);
        break;
    }
    printf("next: ferry-gateway run --data-dir %s --shared %s%s%s\n", o->data_dir, o->shared,
           o->shared_password_file ? " --shared-password-file " : "",
           o->shared_password_file ? o->shared_password_file : "");
    status = 0;
out:
    fy_store_close(store);
    fy_redis_sync_free(c);
    fy_redis_config_wipe(&cfg);
    return status;
}

int fy_gw_init_main(int argc, char **argv)
{
    init_opts o = {0};
    int status = init_parse(argc, argv, &o);
    if (status >= 0) {
        return status;
    }
    return o.shared ? init_shared(&o) : init_local(&o, NULL);
}
