/* init.c: `ferry-gateway init`, which creates a data directory once. */
#include "gateway/datadir.h"

#include "common/args.h"
#include "common/crypto.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "common/limits.h"
#include "common/secret.h"
#include "common/x509.h"
#include "gateway/store.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CA_VALIDITY_S     (10LL * 365 * 86400)
#define SERVER_VALIDITY_S (2LL * 365 * 86400)

static int write_file(const char *dir, const char *name, const char *data, int secret)
{
    char path[4096];
    int rc = fy_path_join(path, sizeof path, dir, name);
    if (rc == 0) {
        rc = fy_file_write_atomic(path, data, strlen(data), secret ? 0600 : 0644);
    }
    if (rc) {
        fprintf(stderr, "ferry-gateway init: cannot write %s: %s\n", path, fy_strerror(rc));
    }
    return rc;
}

static void usage(FILE *f, const fy_opt *opts)
{
    fprintf(f, "Usage: ferry-gateway init --data-dir DIR [--hostname NAME]... [--tls-cert FILE "
               "--tls-key FILE]\n\n"
               "Creates, once, a gateway data directory: the runner CA, a server certificate for\n"
               "the public, tunnel and admin listeners (signed by a new dev CA, whose certificate\n"
               "is DIR/ca.crt, unless --tls-cert/--tls-key are given), the admin token\n"
               "(DIR/admin.token, mode 0600) and the store. Running it again on an initialised\n"
               "directory changes nothing.\n\nOptions:\n");
    fy_args_usage(f, opts);
}

int fy_gw_init_main(int argc, char **argv)
{
    const char *data_dir = NULL, *tls_cert = NULL, *tls_key = NULL;
    fy_strlist hostnames = {0};
    int help = 0;
    const fy_opt opts[] = {
        {"data-dir", FY_OPT_STR, &data_dir, "DIR", "data directory to create (required)"},
        {"hostname", FY_OPT_STRLIST, &hostnames, "NAME",
         "DNS name or IP the server certificate is for (default: localhost, 127.0.0.1, ::1)"},
        {"tls-cert", FY_OPT_STR, &tls_cert, "FILE",
         "use this certificate chain (PEM) for the listeners instead of a dev CA"},
        {"tls-key", FY_OPT_STR, &tls_key, "FILE", "private key (PEM) for --tls-cert"},
        {"help", FY_OPT_FLAG, &help, NULL, "show this help"},
        {0},
    };
    char err[512];
    char *pos[argc > 0 ? argc : 1];
    int npos = 0, rc = 0, status = 1;
    char *runner_ca = NULL, *runner_ca_key = NULL, *dev_ca = NULL, *dev_ca_key = NULL;
    char *server = NULL, *server_key = NULL, *chain = NULL, *cfg_text = NULL;
    fy_store *store = NULL;
    json_t *cfg = NULL;
    char token[FY_SECRET_MAX + 2] = "";

    if (fy_args_parse(opts, argc - 1, argv + 1, pos, &npos, err, sizeof err)) {
        fprintf(stderr, "ferry-gateway init: %s\n", err);
        return 2;
    }
    if (help) {
        usage(stdout, opts);
        return 0;
    }
    if (!data_dir || npos > 0 || (!tls_cert) != (!tls_key)) {
        fprintf(stderr, "ferry-gateway init: %s\n",
                !data_dir ? "--data-dir DIR is required"
                : npos    ? "unexpected argument (see --help)"
                          : "--tls-cert and --tls-key go together");
        return 2;
    }
    char path[4096];
    fy_path_join(path, sizeof path, data_dir, FY_GW_RUNNER_CA_CERT);
    if (fy_file_exists(path)) {
        printf("%s is already initialised; nothing changed\n", data_dir);
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
    if (write_file(data_dir, FY_GW_ADMIN_TOKEN, token, 1) ||
        write_file(data_dir, FY_GW_RUNNER_CA_KEY, runner_ca_key, 1)) {
        goto out;
    }
    if (!tls_cert && (write_file(data_dir, FY_GW_CA_KEY, dev_ca_key, 1) ||
                      write_file(data_dir, FY_GW_SERVER_KEY, server_key, 1) ||
                      write_file(data_dir, FY_GW_CA_CERT, dev_ca, 0) ||
                      write_file(data_dir, FY_GW_SERVER_CERT, chain, 0))) {
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
    if (!cfg_text || write_file(data_dir, FY_GW_CONFIG, cfg_text, 0) ||
        write_file(data_dir, FY_GW_RUNNER_CA_CERT, runner_ca, 0)) {
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
    printf("next: ferry-gateway run --data-dir %s\n", data_dir);
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
