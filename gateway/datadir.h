/* datadir.h: the gateway's data directory, created by `ferry-gateway init`.
 *
 *   runner-ca.crt / .key  CA that signs runner client certificates (enrollment)
 *   ca.crt / ca.key       dev CA that signed server.crt (absent with --tls-cert);
 *                         ca.crt is what public clients and runners trust
 *   server.crt / .key     certificate of all three listeners (chain: leaf + dev CA)
 *   admin.token           the admin API bearer token (mode 0600)
 *   gateway.db            the SQLite store
 *   gateway.json          config written by init, loaded by run (option names as keys)
 *   state.json            written by run: the addresses it actually listens on,
 *                         so `ferry --data-dir` and tests find them
 * Private keys and the token are mode 0600; the directory is 0700. */
#ifndef FY_GATEWAY_DATADIR_H
#define FY_GATEWAY_DATADIR_H

#define FY_GW_RUNNER_CA_CERT "runner-ca.crt"
#define FY_GW_RUNNER_CA_KEY  "runner-ca.key"
#define FY_GW_CA_CERT        "ca.crt"
#define FY_GW_CA_KEY         "ca.key"
#define FY_GW_SERVER_CERT    "server.crt"
#define FY_GW_SERVER_KEY     "server.key"
#define FY_GW_ADMIN_TOKEN    "admin.token"
#define FY_GW_DB             "gateway.db"
#define FY_GW_CONFIG         "gateway.json"
#define FY_GW_STATE          "state.json"

#define FY_GW_ADMIN_TOKEN_PREFIX  "fya"
#define FY_GW_ENROLL_TOKEN_PREFIX "fyt"

#include <stddef.h>

/* 1 when the data-dir file NAME holds a secret (the private keys and the
 * admin token): written mode 0600, the others 0644. */
int fy_gw_datadir_secret(const char *name);

/* Writes LEN bytes of DATA to DIR/NAME atomically and durably, with NAME's
 * mode. Returns 0 or an FY_E* code with ERR naming the path. */
int fy_gw_datadir_write(const char *dir, const char *name, const void *data, size_t len, char *err,
                        size_t errlen);

/* `ferry-gateway init ARGS...` (ARGV[0] is "init"). Returns the exit status. */
int fy_gw_init_main(int argc, char **argv);

/* `ferry-gateway migrate ARGS...`: copies DIR's store into a shared Redis. */
int fy_gw_migrate_main(int argc, char **argv);

#endif
