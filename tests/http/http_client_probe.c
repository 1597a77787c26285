/* http_client_probe: the HTTP client API driven from the command line, so
 * tests can run it as a real process against real servers (plain and TLS).
 *
 *   http_client_probe [options] URL
 *
 * Sends the request --count times, one after another (so pooled connections
 * are reused), prints one line per response
 *   status=200 bytes=17 sha256=<hex of the body>
 * and finally the client's counters
 *   connects=1 reused=2 retries=0
 * (--show-body prints each body before its line.)
 * Exits 0 when every call completed, 1 (with the error on stderr) otherwise. */
#include "common/args.h"
#include "common/err.h"
#include "common/http_client.h"
#include "common/log.h"
#include "common/tls.h"

#include <mbedtls/sha256.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    fy_http_client *cl;
    fy_http_call_options o;
    long long left;
    int failed;
    int status;
    uint64_t bytes;
    mbedtls_sha256_context sha;
    /* streamed upload */
    FILE *upload;
    int chunked;
    int show_body;
} probe;

static void start(probe *p);

/* Prints the counters and closes the client, so the loop ends. */
static void finish(probe *p)
{
    fy_http_client_stats st;
    fy_http_client_stats_get(p->cl, &st);
    printf("connects=%llu reused=%llu retries=%llu\n", (unsigned long long)st.connects,
           (unsigned long long)st.reused, (unsigned long long)st.retries);
    fy_http_client_close(p->cl);
    p->cl = NULL;
}

static void on_response(fy_http_call *call, const fy_http_response *res, void *arg)
{
    probe *p = arg;
    (void)call;
    p->status = res->status;
}

static void on_data(fy_http_call *call, const char *data, size_t len, void *arg)
{
    probe *p = arg;
    (void)call;
    p->bytes += len;
    if (p->show_body) {
        fwrite(data, 1, len, stdout);
    }
    mbedtls_sha256_update_ret(&p->sha, (const unsigned char *)data, len);
}

static void pump_upload(fy_http_call *call, void *arg)
{
    probe *p = arg;
    char buf[32768];
    for (;;) {
        size_t n = fread(buf, 1, sizeof buf, p->upload);
        if (n == 0) {
            fy_http_call_end(call);
            return;
        }
        int rc = fy_http_call_write(call, buf, n);
        if (rc < 0) {
            fprintf(stderr, "http_client_probe: write: %s\n", fy_strerror(rc));
            return;
        }
        if (rc == 1) {
            return; /* on_drain continues */
        }
    }
}

static void on_done(fy_http_call *call, int status, void *arg)
{
    probe *p = arg;
    (void)call;
    if (status) {
        fprintf(stderr, "http_client_probe: %s: %s (%s)\n", p->o.url, fy_strerror(status),
                fy_err_name(status));
        mbedtls_sha256_free(&p->sha);
        p->failed = 1;
        finish(p);
        return;
    }
    unsigned char d[32];
    mbedtls_sha256_finish_ret(&p->sha, d);
    mbedtls_sha256_free(&p->sha);
    printf("status=%d bytes=%llu sha256=", p->status, (unsigned long long)p->bytes);
    for (int i = 0; i < 32; i++) {
        printf("%02x", d[i]);
    }
    printf("\n");
    if (--p->left > 0) {
        start(p);
    } else {
        finish(p);
    }
}

static void start(probe *p)
{
    fy_http_call *call;
    p->bytes = 0;
    p->status = 0;
    mbedtls_sha256_init(&p->sha);
    mbedtls_sha256_starts_ret(&p->sha, 0);
    if (p->upload) {
        rewind(p->upload);
    }
    int rc = fy_http_call_start(p->cl, &p->o, &call);
    if (rc) {
        fprintf(stderr, "http_client_probe: %s: %s\n", p->o.url, fy_strerror(rc));
        mbedtls_sha256_free(&p->sha);
        p->failed = 1;
        finish(p);
        return;
    }
    if (p->upload) {
        pump_upload(call, p);
    }
}

int main(int argc, char **argv)
{
    const char *cacert = NULL, *cert = NULL, *key = NULL, *method = "GET", *data_file = NULL;
    long long count = 1;
    uint64_t read_timeout = 0;
    int chunked = 0, help = 0, show_body = 0;
    const fy_opt opts[] = {
        {"cacert", FY_OPT_STR, &cacert, "FILE", "CA certificates for https"},
        {"cert", FY_OPT_STR, &cert, "FILE", "client certificate (mTLS)"},
        {"key", FY_OPT_STR, &key, "FILE", "client key (mTLS)"},
        {"method", FY_OPT_STR, &method, "METHOD", "request method (default GET)"},
        {"data-file", FY_OPT_STR, &data_file, "FILE", "stream this file as the request body"},
        {"chunked", FY_OPT_FLAG, &chunked, NULL, "send the body chunked"},
        {"show-body", FY_OPT_FLAG, &show_body, NULL, "print response bodies"},
        {"count", FY_OPT_INT, &count, "N", "send the request N times in sequence"},
        {"read-timeout", FY_OPT_DURATION, &read_timeout, "TIME", "read timeout"},
        {"help", FY_OPT_FLAG, &help, NULL, "show this help"},
        {0},
    };
    char err[256];
    char *pos[argc > 0 ? argc : 1];
    int npos = 0;
    if (fy_args_parse(opts, argc - 1, argv + 1, pos, &npos, err, sizeof err) || npos != 1) {
        fprintf(stderr, "usage: http_client_probe [options] URL\n");
        fy_args_usage(stderr, opts);
        return 2;
    }
    if (help) {
        fy_args_usage(stdout, opts);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t *loop = uv_default_loop();
    fy_tls_config *tls = NULL;
    int rc = 0;
    probe p = {.left = count, .show_body = show_body};
    if (cacert) {
        fy_tls_options to = {.ca_file = cacert, .cert_file = cert, .key_file = key};
        if (fy_tls_config_new(&to, &tls, err, sizeof err)) {
            fprintf(stderr, "http_client_probe: %s\n", err);
            return 1;
        }
    }
    if (data_file) {
        p.upload = fopen(data_file, "rb");
        if (!p.upload) {
            perror(data_file);
            fy_tls_config_free(tls);
            return 1;
        }
        fseek(p.upload, 0, SEEK_END);
        p.o.content_length = chunked ? -1 : ftell(p.upload);
        p.o.stream_body = 1;
    }
    fy_http_client_options co = {.tls = tls, .read_timeout_ms = (unsigned)read_timeout};
    fy_http_client_new(loop, &co, &p.cl);
    p.o.method = method;
    p.o.url = pos[0];
    p.o.arg = &p;
    p.o.cbs = (fy_http_call_cbs){on_response, on_data, on_done, p.upload ? pump_upload : NULL};
    start(&p);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    if (p.upload) {
        fclose(p.upload);
    }
    fy_tls_config_free(tls);
    rc = p.failed || p.left > 0 ? 1 : 0;
    return rc;
}
