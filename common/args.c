#include "args.h"

#include "err.h"
#include "limits.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int fy_parse_int(const char *s, long long *out)
{
    if (!s || !*s) {
        return FY_EINVAL;
    }
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end != '\0') {
        return FY_EINVAL;
    }
    *out = v;
    return 0;
}

/* Parses "<digits>[.<digits>]<unit>" where UNITS maps suffixes to multipliers. */
typedef struct {
    const char *suffix;
    uint64_t mult;
} unit;

static int parse_scaled(const char *s, const unit *units, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9') {
        return FY_EINVAL;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || v < 0) {
        return FY_EINVAL;
    }
    for (const unit *u = units; u->suffix; u++) {
        if (strcmp(end, u->suffix) == 0) {
            double r = v * (double)u->mult;
            if (r > 1.8e19) {
                return FY_EINVAL;
            }
            *out = (uint64_t)r;
            return 0;
        }
    }
    return FY_EINVAL;
}

int fy_parse_size(const char *s, uint64_t *out)
{
    static const unit units[] = {
        {"", 1},
        {"B", 1},
        {"K", 1024},
        {"KB", 1000},
        {"KiB", 1024},
        {"M", 1024 * 1024},
        {"MB", 1000 * 1000},
        {"MiB", 1024 * 1024},
        {"G", 1024ull * 1024 * 1024},
        {"GB", 1000ull * 1000 * 1000},
        {"GiB", 1024ull * 1024 * 1024},
        {"TiB", 1024ull * 1024 * 1024 * 1024},
        {NULL, 0},
    };
    return parse_scaled(s, units, out);
}

int fy_parse_duration_ms(const char *s, uint64_t *out)
{
    static const unit units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 3600 * 1000}, {"d", 86400ull * 1000},
        {NULL, 0},
    };
    return parse_scaled(s, units, out);
}

static const fy_opt *find_opt(const fy_opt *opts, const char *name, size_t len)
{
    for (const fy_opt *o = opts; o->name; o++) {
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0) {
            return o;
        }
    }
    return NULL;
}

static int apply_value(const fy_opt *o, const char *v, char *err, size_t errlen)
{
    int rc = 0;
    switch (o->type) {
    case FY_OPT_FLAG:
        *(int *)o->dst = 1;
        break;
    case FY_OPT_STR:
        *(const char **)o->dst = v;
        break;
    case FY_OPT_INT:
        rc = fy_parse_int(v, (long long *)o->dst);
        break;
    case FY_OPT_SIZE:
        rc = fy_parse_size(v, (uint64_t *)o->dst);
        break;
    case FY_OPT_DURATION:
        rc = fy_parse_duration_ms(v, (uint64_t *)o->dst);
        break;
    case FY_OPT_STRLIST: {
        fy_strlist *l = o->dst;
        if (l->n >= FY_STRLIST_MAX) {
            snprintf(err, errlen, "--%s given more than %d times", o->name, FY_STRLIST_MAX);
            return FY_EINVAL;
        }
        l->v[l->n++] = v;
        break;
    }
    }
    if (rc) {
        static const char *const what[] = {
            "", "", "an integer", "a size like 4GiB", "a duration like 30s", ""};
        snprintf(err, errlen, "--%s: '%s' is not %s", o->name, v, what[o->type]);
    }
    return rc;
}

/* What the scan does with each option it reads: 0 goes on; anything else
 * stops the scan and is returned. */
typedef int (*args_visit)(const fy_opt *o, const char *v, void *arg, char *err, size_t errlen);

/* Reads ARGV as fy_args_parse() describes, storing positionals into POS
 * (when not NULL) and handing each option with its value to VISIT. */
static int args_scan(const fy_opt *opts, int argc, char **argv, char **pos, int *npos,
                     args_visit visit, void *arg, char *err, size_t errlen)
{
    int np = 0;
    for (int i = 0; i < argc; i++) {
        char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            while (++i < argc) {
                if (pos) {
                    pos[np] = argv[i];
                }
                np++;
            }
            break;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            if (a[0] == '-' && a[1] == 'h' && a[2] == '\0') {
                a = "--help";
            } else {
                if (pos) {
                    pos[np] = a;
                }
                np++;
                continue;
            }
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const fy_opt *o = find_opt(opts, name, nlen);
        if (!o) {
            snprintf(err, errlen, "unknown option '--%.*s' (see --help)", (int)nlen, name);
            return FY_EINVAL;
        }
        const char *v = NULL;
        if (o->type == FY_OPT_FLAG) {
            if (eq) {
                snprintf(err, errlen, "--%s takes no value", o->name);
                return FY_EINVAL;
            }
        } else if (eq) {
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            snprintf(err, errlen, "--%s needs a value (%s)", o->name,
                     o->metavar ? o->metavar : "VALUE");
            return FY_EINVAL;
        }
        int rc = visit(o, v, arg, err, errlen);
        if (rc) {
            return rc;
        }
    }
    *npos = np;
    return 0;
}

static int visit_apply(const fy_opt *o, const char *v, void *arg, char *err, size_t errlen)
{
    (void)arg;
    return apply_value(o, v, err, errlen);
}

int fy_args_parse(const fy_opt *opts, int argc, char **argv, char **pos, int *npos, char *err,
                  size_t errlen)
{
    return args_scan(opts, argc, argv, pos, npos, visit_apply, NULL, err, errlen);
}

typedef struct {
    int (*allowed)(const char *name, void *arg);
    void *arg;
    const fy_opt *refused;
} refuse_ctx;

static int visit_refuse(const fy_opt *o, const char *v, void *arg, char *err, size_t errlen)
{
    (void)v, (void)err, (void)errlen;
    refuse_ctx *r = arg;
    if (r->allowed(o->name, r->arg)) {
        return 0;
    }
    r->refused = o;
    return 1;
}

const fy_opt *fy_args_refused(const fy_opt *opts, int argc, char **argv,
                              int (*allowed)(const char *name, void *arg), void *arg)
{
    refuse_ctx r = {allowed, arg, NULL};
    char err[256]; /* unused: ARGV parsed already */
    int npos;
    args_scan(opts, argc, argv, NULL, &npos, visit_refuse, &r, err, sizeof err);
    return r.refused;
}

const char *fy_args_find(int argc, char **argv, const char *name)
{
    size_t nlen = strlen(name);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            break;
        }
        if (strncmp(a, "--", 2) != 0 || strncmp(a + 2, name, nlen) != 0) {
            continue;
        }
        if (a[2 + nlen] == '=') {
            return a + 3 + nlen;
        }
        if (a[2 + nlen] == '\0' && i + 1 < argc) {
            return argv[i + 1];
        }
    }
    return NULL;
}

static int apply_json(const fy_opt *o, json_t *v, char *err, size_t errlen)
{
    char num[32];
    if (o->type == FY_OPT_FLAG) {
        if (!json_is_boolean(v)) {
            snprintf(err, errlen, "config key '%s' must be true or false", o->name);
            return FY_EINVAL;
        }
        *(int *)o->dst = json_is_true(v);
        return 0;
    }
    if (o->type == FY_OPT_STRLIST) {
        json_t *item;
        size_t i;
        if (json_is_string(v)) {
            return apply_value(o, json_string_value(v), err, errlen);
        }
        if (!json_is_array(v)) {
            snprintf(err, errlen, "config key '%s' must be a string or a list of strings", o->name);
            return FY_EINVAL;
        }
        json_array_foreach(v, i, item)
        {
            if (!json_is_string(item)) {
                snprintf(err, errlen, "config key '%s' must list strings", o->name);
                return FY_EINVAL;
            }
            int rc = apply_value(o, json_string_value(item), err, errlen);
            if (rc) {
                return rc;
            }
        }
        return 0;
    }
    if (json_is_integer(v) && o->type != FY_OPT_STR) {
        snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
        if (o->type == FY_OPT_DURATION) {
            /* A bare number in a config file means seconds, as most configs do. */
            strncat(num, "s", sizeof num - strlen(num) - 1);
        }
        return apply_value(o, num, err, errlen);
    }
    if (!json_is_string(v)) {
        snprintf(err, errlen, "config key '%s' must be a string", o->name);
        return FY_EINVAL;
    }
    return apply_value(o, json_string_value(v), err, errlen);
}

json_t *fy_config_load(const char *path, const fy_opt *opts, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, errlen, "config %s: %s", path, strerror(errno));
        return NULL;
    }
    if (st.st_size > FY_CONFIG_MAX_BYTES) {
        snprintf(err, errlen, "config %s: larger than %d bytes", path, FY_CONFIG_MAX_BYTES);
        return NULL;
    }
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(err, errlen, "config %s:%d:%d: %s", path, je.line, je.column, je.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        snprintf(err, errlen, "config %s: top level must be a JSON object", path);
        json_decref(root);
        return NULL;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        const fy_opt *o = find_opt(opts, key, strlen(key));
        if (!o || strcmp(key, "config") == 0 || strcmp(key, "help") == 0) {
            snprintf(err, errlen, "config %s: unknown key '%s'", path, key);
            json_decref(root);
            return NULL;
        }
        char sub[256];
        if (apply_json(o, v, sub, sizeof sub)) {
            snprintf(err, errlen, "config %s: %s", path, sub);
            json_decref(root);
            return NULL;
        }
    }
    return root;
}

int fy_args_command(const fy_opt *opts, int argc, char **argv, char **pos, int *npos,
                    const char *prog, const int *help, const char *help_text)
{
    char err[512];
    if (fy_args_parse(opts, argc - 1, argv + 1, pos, npos, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return 2;
    }
    if (*help) {
        fputs(help_text, stdout);
        fy_args_usage(stdout, opts);
        return 0;
    }
    return -1;
}

void fy_args_usage(FILE *f, const fy_opt *opts)
{
    for (const fy_opt *o = opts; o->name; o++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", o->name, o->metavar ? " " : "",
                 o->metavar ? o->metavar : "");
        fprintf(f, "  %-30s %s%s\n", left, o->help ? o->help : "",
                o->type == FY_OPT_STRLIST ? " (repeatable)" : "");
    }
}
