/* gateway/metrics and gateway/accesslog: the registry's rules, the text
 * exposition format parsed back line by line (HELP/TYPE before samples,
 * escaping, cumulative buckets), the gateway's own families, exact counts
 * from several threads; access log lines as JSON (fields, nulls, query and
 * key redaction, invalid UTF-8), the O_APPEND file with reopen after
 * rotation, and the stderr destination. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/log.h"
#include "gateway/accesslog.h"
#include "gateway/metrics.h"

#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --- a small parser for the text format ----------------------------------------- */

#define MAX_SAMPLES 512
#define MAX_FAMS    64

typedef struct {
    char name[128];
    char labels[8][2][256]; /* name, unescaped value */
    int nlabels;
    double value;
} sample;

typedef struct {
    char name[128];
    char help[512];
    char type[16];
} family;

typedef struct {
    sample s[MAX_SAMPLES];
    int ns;
    family f[MAX_FAMS];
    int nf;
} page;

static family *fam_find(page *p, const char *name)
{
    for (int i = 0; i < p->nf; i++) {
        if (strcmp(p->f[i].name, name) == 0) {
            return &p->f[i];
        }
    }
    return NULL;
}

/* Unescapes a HELP text (QUOTE 0) or a quoted label value (QUOTE 1, stops at
 * the closing quote). Returns the position after what was read. */
static const char *unescape(const char *p, char *out, size_t cap, int quote)
{
    size_t n = 0;
    while (*p && !(quote && *p == '"') && *p != '\n') {
        char c = *p++;
        if (c == '\\') {
            c = *p++;
            assert_true(c == '\\' || c == 'n' || (quote && c == '"'));
            c = c == 'n' ? '\n' : c;
        }
        assert_true(n + 1 < cap);
        out[n++] = c;
    }
    out[n] = 0;
    return p;
}

/* The family a sample belongs to: for histograms the name without
 * _bucket/_sum/_count. */
static family *owner(page *p, const char *name)
{
    family *f = fam_find(p, name);
    if (f) {
        return f;
    }
    static const char *const sfx[] = {"_bucket", "_sum", "_count"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(name), m = strlen(sfx[i]);
        if (n > m && strcmp(name + n - m, sfx[i]) == 0) {
            char base[128];
            snprintf(base, sizeof base, "%.*s", (int)(n - m), name);
            f = fam_find(p, base);
            if (f && strcmp(f->type, "histogram") == 0) {
                return f;
            }
        }
    }
    return NULL;
}

static void parse_page(const char *text, page *p)
{
    memset(p, 0, sizeof *p);
    const char *line = text;
    while (*line) {
        const char *end = strchr(line, '\n');
        assert_non_null(end); /* every line ends with \n */
        if (strncmp(line, "# HELP ", 7) == 0) {
            family *f = &p->f[p->nf++];
            const char *sp = strchr(line + 7, ' ');
            assert_true(sp && sp < end);
            snprintf(f->name, sizeof f->name, "%.*s", (int)(sp - line - 7), line + 7);
            unescape(sp + 1, f->help, sizeof f->help, 0);
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[128], type[16];
            assert_int_equal(sscanf(line + 7, "%127s %15s", name, type), 2);
            family *f = fam_find(p, name);
            assert_non_null(f); /* HELP comes first */
            assert_int_equal(f->type[0], 0);
            strcpy(f->type, type);
            assert_true(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                        strcmp(type, "histogram") == 0);
        } else {
            assert_int_not_equal(line[0], '#');
            sample *s = &p->s[p->ns++];
            const char *q = line;
            size_t n = strcspn(q, "{ ");
            snprintf(s->name, sizeof s->name, "%.*s", (int)n, q);
            q += n;
            if (*q == '{') {
                q++;
                while (*q != '}') {
                    size_t ln = strcspn(q, "=");
                    snprintf(s->labels[s->nlabels][0], 256, "%.*s", (int)ln, q);
                    q += ln;
                    assert_int_equal(q[0], '=');
                    assert_int_equal(q[1], '"');
                    q = unescape(q + 2, s->labels[s->nlabels][1], 256, 1);
                    assert_int_equal(*q, '"');
                    q++;
                    s->nlabels++;
                    if (*q == ',') {
                        q++;
                    }
                }
                q++;
            }
            assert_int_equal(*q, ' ');
            char *vend;
            const char *v = q + 1;
            if (strncmp(v, "+Inf", 4) == 0) {
                s->value = INFINITY, vend = (char *)v + 4;
            } else {
                s->value = strtod(v, &vend);
            }
            assert_ptr_equal(vend, end);
            family *f = owner(p, s->name);
            if (!f) {
                fail_msg("sample %s before its # HELP/# TYPE", s->name);
            }
            assert_true(f->type[0]);
        }
        line = end + 1;
    }
}

static const char *label(const sample *s, const char *name)
{
    for (int i = 0; i < s->nlabels; i++) {
        if (strcmp(s->labels[i][0], name) == 0) {
            return s->labels[i][1];
        }
    }
    return NULL;
}

/* The value of sample NAME with labels (k, v) pairs matching, or NaN. */
static double find_value(page *p, const char *name, const char *k1, const char *v1, const char *k2,
                         const char *v2)
{
    for (int i = 0; i < p->ns; i++) {
        sample *s = &p->s[i];
        if (strcmp(s->name, name) != 0) {
            continue;
        }
        if (k1 && (!label(s, k1) || strcmp(label(s, k1), v1) != 0)) {
            continue;
        }
        if (k2 && (!label(s, k2) || strcmp(label(s, k2), v2) != 0)) {
            continue;
        }
        return s->value;
    }
    return NAN;
}

static void render(fy_metrics *m, page *p)
{
    fy_buf b;
    fy_buf_init(&b, FY_METRICS_MAX_TEXT);
    assert_int_equal(fy_metrics_render(m, &b), 0);
    const char *text = fy_buf_cstr(&b);
    assert_non_null(text);
    parse_page(text, p);
    fy_buf_free(&b);
}

static void test_registry_rules(void **state)
{
    (void)state;
    fy_metrics *m = fy_metrics_new();
    static const char *const one[] = {"a"};
    static const char *const le[] = {"le"};
    static const char *const dunder[] = {"__x"};
    static const char *const twice[] = {"a", "a"};
    static const double b[] = {1, 2};
    static const double unsorted[] = {2, 1};
    assert_non_null(fy_metrics_counter(m, "ok_total", "h", 1, one));
    assert_null(fy_metrics_counter(m, "ok_total", "dup", 0, NULL));
    assert_null(fy_metrics_counter(m, "9bad", "h", 0, NULL));
    assert_null(fy_metrics_counter(m, "bad-name", "h", 0, NULL));
    assert_null(fy_metrics_counter(m, "", "h", 0, NULL));
    assert_null(fy_metrics_counter(m, "x", "h", 1, dunder));
    assert_null(fy_metrics_counter(m, "x", "h", 2, twice));
    assert_null(fy_metrics_histogram(m, "h1", "h", 1, le, 2, b));
    assert_null(fy_metrics_histogram(m, "h2", "h", 0, NULL, 2, unsorted));
    assert_null(fy_metrics_histogram(m, "h3", "h", 0, NULL, 0, b));
    assert_non_null(fy_metrics_gauge(m, "ns:gauge", "h", 0, NULL));

    fy_metric *c = fy_metrics_counter(m, "c_total", "h", 1, one);
    fy_metric *g = fy_metrics_gauge(m, "g", "h", 0, NULL);
    fy_metric *h = fy_metrics_histogram(m, "lat", "h", 0, NULL, 2, b);
    const char *v[] = {"x"};
    assert_int_equal(fy_metric_add(c, v, 1), 0);
    assert_int_equal(fy_metric_add(c, v, -1), FY_EINVAL);
    assert_int_equal(fy_metric_add(c, v, NAN), FY_EINVAL);
    assert_int_equal(fy_metric_set(c, v, 1), FY_EINVAL);
    assert_int_equal(fy_metric_observe(c, v, 1), FY_EINVAL);
    assert_int_equal(fy_metric_add(c, NULL, 1), FY_EINVAL);
    assert_int_equal(fy_metric_add(g, NULL, -3), 0);
    assert_int_equal(fy_metric_set(g, NULL, 7), 0);
    assert_int_equal(fy_metric_add(g, NULL, -2), 0);
    assert_true(fy_metric_value(g, NULL) == 5);
    assert_int_equal(fy_metric_add(h, NULL, 1), FY_EINVAL);
    assert_int_equal(fy_metric_observe(h, NULL, 1.5), 0);
    assert_true(fy_metric_value(h, NULL) == 1);

    /* Secret-shaped and over-long values are refused. */
    const char *secret[] = {"fy_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"};
    assert_int_equal(fy_metric_add(c, secret, 1), FY_EINVAL);
    char long_value[FY_METRICS_LABEL_VALUE_MAX + 1];
    memset(long_value, 'a', sizeof long_value - 1);
    for (size_t i = 0; i < sizeof long_value - 1; i += 10) {
        long_value[i] = '/'; /* no long base64url run: refused for length alone */
    }
    long_value[sizeof long_value - 1] = 0;
    const char *lv[] = {long_value};
    assert_int_equal(fy_metric_add(c, lv, 1), FY_EINVAL);
    const char *path_like[] = {"/v1/chat/completions"};
    assert_int_equal(fy_metric_add(c, path_like, 1), 0);

    /* The series cap. */
    for (int i = 0; i < FY_METRICS_MAX_SERIES + 5; i++) {
        char val[16];
        snprintf(val, sizeof val, "v%d", i);
        const char *vv[] = {val};
        int rc = fy_metric_add(c, vv, 1);
        assert_true(rc == 0 || rc == FY_ELIMIT);
    }
    const char *extra[] = {"one-more"};
    assert_int_equal(fy_metric_add(c, extra, 1), FY_ELIMIT);
    assert_true(fy_metric_value(c, v) == 1); /* existing series still count */
    assert_int_equal(fy_metric_add(c, v, 1), 0);
    assert_true(fy_metric_value(c, v) == 2);
    fy_metrics_free(m);
    fy_metrics_free(NULL);
}

static void test_text_format(void **state)
{
    (void)state;
    fy_metrics *m = fy_metrics_new();
    static const char *const labels[] = {"route", "status"};
    static const double bounds[] = {0.005, 0.1, 1, 2.5};
    fy_metric *c =
        fy_metrics_counter(m, "t_requests_total", "Requests \\ with \"odd\"\nhelp.", 2, labels);
    fy_metric *g = fy_metrics_gauge(m, "t_streams", "Streams.", 0, NULL);
    fy_metric *h = fy_metrics_histogram(m, "t_seconds", "Latency.", 1, labels, 4, bounds);
    const char *a[] = {"/r", "200"};
    const char *odd[] = {"we\"ird\\ro\nute", "500"};
    assert_int_equal(fy_metric_add(c, a, 1), 0);
    assert_int_equal(fy_metric_add(c, a, 2), 0);
    assert_int_equal(fy_metric_add(c, odd, 1), 0);
    assert_int_equal(fy_metric_set(g, NULL, 0.25), 0);
    static const double obs[] = {0.001, 0.005, 0.05, 0.5, 2, 100};
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(fy_metric_observe(h, a, obs[i]), 0);
    }
    page *p = malloc(sizeof *p);
    render(m, p);
    assert_int_equal(p->nf, 3);
    assert_string_equal(p->f[0].help, "Requests \\ with \"odd\"\nhelp.");
    assert_string_equal(p->f[0].type, "counter");
    assert_string_equal(p->f[2].type, "histogram");
    assert_true(find_value(p, "t_requests_total", "route", "/r", "status", "200") == 3);
    assert_true(find_value(p, "t_requests_total", "route", "we\"ird\\ro\nute", "status", "500") ==
                1);
    assert_true(find_value(p, "t_streams", NULL, NULL, NULL, NULL) == 0.25);
    /* Buckets are cumulative, le includes its bound, +Inf equals count. */
    static const struct {
        const char *le;
        double n;
    } want[] = {{"0.005", 2}, {"0.1", 3}, {"1", 4}, {"2.5", 5}, {"+Inf", 6}};
    for (size_t i = 0; i < 5; i++) {
        assert_true(find_value(p, "t_seconds_bucket", "route", "/r", "le", want[i].le) ==
                    want[i].n);
    }
    assert_true(find_value(p, "t_seconds_count", "route", "/r", NULL, NULL) == 6);
    assert_true(fabs(find_value(p, "t_seconds_sum", "route", "/r", NULL, NULL) - 102.556) < 1e-9);
    /* The histogram's label set is the family's first label only. */
    assert_int_equal(p->ns, 2 + 1 + 5 + 2);
    free(p);
    fy_metrics_free(m);
}

static void test_gateway_families(void **state)
{
    (void)state;
    fy_metrics_gw g;
    assert_int_equal(fy_metrics_gw_init(&g), 0);
    fy_metrics_gw_request(&g, "/v1/chat/completions", 200, 1.2, 0.3, 512, 4096);
    fy_metrics_gw_request(&g, "/v1/chat/completions", 200, 0.2, -1, 10, 20);
    fy_metrics_gw_request(&g, "/r", 429, 0.001, 0.001, 0, 100);
    fy_metrics_gw_auth_failure(&g, "missing");
    fy_metrics_gw_auth_failure(&g, "revoked");
    fy_metrics_gw_ratelimited(&g, "tokens");
    fy_metrics_gw_tokens(&g, 100, 50);
    fy_metric_add(g.active_streams, NULL, 1);
    fy_metric_add(g.tunnel_connections, NULL, 4);
    fy_metric_set(g.connected_runners, NULL, 2);
    page *p = malloc(sizeof *p);
    render(g.reg, p);
    static const char *const families[] = {
        "ferry_requests_total",       "ferry_request_duration_seconds",
        "ferry_request_ttfb_seconds", "ferry_bytes_received_total",
        "ferry_bytes_sent_total",     "ferry_tokens_total",
        "ferry_active_streams",       "ferry_connected_runners",
        "ferry_tunnel_connections",   "ferry_ratelimit_rejections_total",
        "ferry_auth_failures_total",
    };
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
        assert_non_null(fam_find(p, families[i]));
    }
    assert_true(find_value(p, "ferry_requests_total", "route", "/v1/chat/completions", "status",
                           "200") == 2);
    assert_true(find_value(p, "ferry_requests_total", "route", "/r", "status", "429") == 1);
    assert_true(find_value(p, "ferry_request_duration_seconds_count", "route",
                           "/v1/chat/completions", NULL, NULL) == 2);
    assert_true(find_value(p, "ferry_request_ttfb_seconds_count", "route", "/v1/chat/completions",
                           NULL, NULL) == 1);
    assert_true(find_value(p, "ferry_bytes_sent_total", "route", "/v1/chat/completions", NULL,
                           NULL) == 4116);
    assert_true(find_value(p, "ferry_auth_failures_total", "reason", "missing", NULL, NULL) == 1);
    assert_true(find_value(p, "ferry_auth_failures_total", "reason", "expired", NULL, NULL) == 0);
    assert_true(find_value(p, "ferry_ratelimit_rejections_total", "kind", "tokens", NULL, NULL) ==
                1);
    assert_true(
        find_value(p, "ferry_ratelimit_rejections_total", "kind", "concurrency", NULL, NULL) == 0);
    assert_true(find_value(p, "ferry_tokens_total", "kind", "completion", NULL, NULL) == 50);
    assert_true(find_value(p, "ferry_tunnel_connections", NULL, NULL, NULL, NULL) == 4);
    assert_true(find_value(p, "ferry_connected_runners", NULL, NULL, NULL, NULL) == 2);
    /* No label value anywhere looks like a key. */
    for (int i = 0; i < p->ns; i++) {
        for (int j = 0; j < p->s[i].nlabels; j++) {
            assert_null(strstr(p->s[i].labels[j][1], "fy_"));
        }
    }
    free(p);
    fy_metrics_gw_close(&g);
}

typedef struct {
    fy_metric *c, *h;
} hammer_arg;

static void *hammer(void *arg)
{
    hammer_arg *a = arg;
    const char *v[] = {"x"};
    for (int i = 0; i < 10000; i++) {
        fy_metric_add(a->c, v, 1);
        fy_metric_observe(a->h, NULL, 0.5);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    fy_metrics *m = fy_metrics_new();
    static const char *const l[] = {"k"};
    static const double b[] = {1};
    hammer_arg a = {fy_metrics_counter(m, "n_total", "n", 1, l),
                    fy_metrics_histogram(m, "d", "d", 0, NULL, 1, b)};
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        pthread_create(&th[i], NULL, hammer, &a);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
    }
    const char *v[] = {"x"};
    assert_true(fy_metric_value(a.c, v) == 80000);
    assert_true(fy_metric_value(a.h, NULL) == 80000);
    fy_metrics_free(m);
}

/* --- access log --------------------------------------------------------------------- */

static fy_accesslog_entry sample_entry(void)
{
    return (fy_accesslog_entry){
        .time_ms = 1700000000123LL,
        .request_id = "req_1",
        .key_id = "key_abc",
        .runner = "gpu0",
        .model = "llama",
        .method = "POST",
        .path = "/v1/chat/completions?api_key=secret",
        .status = 200,
        .bytes_in = 321,
        .bytes_out = 4567,
        .latency_ms = 12.3000004,
        .ttfb_ms = 1.5,
        .prompt_tokens = 10,
        .completion_tokens = 20,
    };
}

static json_t *format_json(const fy_accesslog_entry *e, char **line)
{
    fy_buf b;
    fy_buf_init(&b, FY_ACCESSLOG_LINE_MAX);
    assert_int_equal(fy_accesslog_format(e, &b), 0);
    assert_true(b.len > 0 && b.data[b.len - 1] == '\n');
    assert_null(memchr(b.data, '\n', b.len - 1)); /* one line */
    json_error_t err;
    json_t *j = json_loadb(b.data, b.len, 0, &err);
    assert_non_null(j);
    if (line) {
        *line = strndup(b.data, b.len);
    }
    fy_buf_free(&b);
    return j;
}

static void test_accesslog_format(void **state)
{
    (void)state;
    fy_accesslog_entry e = sample_entry();
    char *line = NULL;
    json_t *j = format_json(&e, &line);
    assert_string_equal(json_string_value(json_object_get(j, "time")), "2023-11-14T22:13:20.123Z");
    assert_string_equal(json_string_value(json_object_get(j, "request_id")), "req_1");
    assert_string_equal(json_string_value(json_object_get(j, "key_id")), "key_abc");
    assert_string_equal(json_string_value(json_object_get(j, "runner")), "gpu0");
    assert_string_equal(json_string_value(json_object_get(j, "method")), "POST");
    assert_string_equal(json_string_value(json_object_get(j, "path")), "/v1/chat/completions");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 200);
    assert_int_equal(json_integer_value(json_object_get(j, "bytes_in")), 321);
    assert_int_equal(json_integer_value(json_object_get(j, "bytes_out")), 4567);
    assert_int_equal(json_integer_value(json_object_get(j, "prompt_tokens")), 10);
    assert_int_equal(json_integer_value(json_object_get(j, "completion_tokens")), 20);
    assert_true(json_real_value(json_object_get(j, "ttfb_ms")) == 1.5);
    assert_non_null(strstr(line, "\"latency_ms\":12.3,"));
    assert_null(strstr(line, "secret"));
    free(line);
    json_decref(j);

    /* Unknowns are null; a key in key_id or the path is redacted; bytes that
     * are not UTF-8 become '?'. */
    e.key_id = NULL;
    e.runner = NULL;
    e.model = NULL;
    e.request_id = NULL;
    e.ttfb_ms = -1;
    e.prompt_tokens = -1;
    e.completion_tokens = -1;
    e.path = "/r/x/fy_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/\xff\xfe";
    j = format_json(&e, &line);
    static const char *const nulls[] = {
        "key_id", "runner", "model", "request_id", "ttfb_ms", "prompt_tokens", "completion_tokens"};
    for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++) {
        assert_true(json_is_null(json_object_get(j, nulls[i])));
    }
    assert_string_equal(json_string_value(json_object_get(j, "path")), "/r/x/fy_[redacted]/??");
    free(line);
    json_decref(j);
    e.key_id = "fy_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    j = format_json(&e, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "key_id")), "fy_[redacted]");
    json_decref(j);
    /* A path over the cap is cut; the line stays valid. */
    char *long_path = malloc(FY_ACCESSLOG_PATH_MAX * 2);
    memset(long_path, 'a', FY_ACCESSLOG_PATH_MAX * 2 - 1);
    long_path[FY_ACCESSLOG_PATH_MAX * 2 - 1] = 0;
    e.path = long_path;
    j = format_json(&e, NULL);
    assert_int_equal(strlen(json_string_value(json_object_get(j, "path"))), FY_ACCESSLOG_PATH_MAX);
    json_decref(j);
    free(long_path);
}

static int count_lines(const char *file, const char *needle)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        return -1;
    }
    char line[FY_ACCESSLOG_LINE_MAX];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        json_error_t err;
        json_t *j = json_loads(line, 0, &err);
        assert_non_null(j);
        json_decref(j);
        n += !needle || strstr(line, needle) != NULL;
    }
    fclose(f);
    return n;
}

static void test_accesslog_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/fy-access-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char file[64], rotated[72];
    snprintf(file, sizeof file, "%s/access.log", dir);
    snprintf(rotated, sizeof rotated, "%s.1", file);
    fy_accesslog *log = NULL;
    assert_int_equal(fy_accesslog_open(file, &log), 0);
    fy_accesslog_entry e = sample_entry();
    assert_int_equal(fy_accesslog_write(log, &e), 0);
    e.status = 404;
    assert_int_equal(fy_accesslog_write(log, &e), 0);
    assert_int_equal(count_lines(file, NULL), 2);
    /* Rotation: rename, reopen, and new lines go to the new file. */
    assert_int_equal(rename(file, rotated), 0);
    assert_int_equal(fy_accesslog_reopen(log), 0);
    e.status = 500;
    assert_int_equal(fy_accesslog_write(log, &e), 0);
    assert_int_equal(count_lines(rotated, NULL), 2);
    assert_int_equal(count_lines(file, "\"status\":500"), 1);
    assert_int_equal(fy_accesslog_errors(log), 0);
    fy_accesslog_close(log);
    /* Appending across opens keeps what was there. */
    assert_int_equal(fy_accesslog_open(file, &log), 0);
    assert_int_equal(fy_accesslog_write(log, &e), 0);
    fy_accesslog_close(log);
    assert_int_equal(count_lines(file, NULL), 2);
    assert_int_equal(fy_accesslog_open("/nonexistent-dir/a.log", &log), FY_ENOENT);
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_accesslog_stderr(void **state)
{
    (void)state;
    char tmp[] = "/tmp/fy-access-stderr-XXXXXX";
    int fd = mkstemp(tmp);
    assert_true(fd >= 0);
    int saved = dup(2);
    dup2(fd, 2);
    fy_log_setup(FY_LOG_INFO, FY_LOG_JSON);
    fy_accesslog *log = NULL;
    assert_int_equal(fy_accesslog_open("-", &log), 0);
    fy_accesslog_entry e = sample_entry();
    assert_int_equal(fy_accesslog_write(log, &e), 0);
    fy_accesslog_close(log);
    dup2(saved, 2);
    close(saved);
    close(fd);
    fy_log_setup(FY_LOG_INFO, FY_LOG_TEXT);
    assert_int_equal(count_lines(tmp, "\"key_id\":\"key_abc\""), 1);
    unlink(tmp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_rules),   cmocka_unit_test(test_text_format),
        cmocka_unit_test(test_gateway_families), cmocka_unit_test(test_threads),
        cmocka_unit_test(test_accesslog_format), cmocka_unit_test(test_accesslog_file),
        cmocka_unit_test(test_accesslog_stderr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
