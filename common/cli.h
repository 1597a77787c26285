/* cli.h: what the three binaries share at start-up: --version text and the
 * common logging options. */
#ifndef FY_CLI_H
#define FY_CLI_H

#include "args.h"

#include <stdio.h>

/* Prints "PROG VERSION (git REV, BUILD)" and the versions of the libraries it
 * was built against, one per line. */
void fy_cli_print_version(FILE *f, const char *prog);

/* The logging options every binary accepts; the strings stay NULL until set. */
typedef struct {
    const char *level;  /* --log-level debug|info|warn|error */
    const char *format; /* --log-format text|json */
} fy_cli_log_opts;

#define FY_CLI_LOG_OPTS(o)                                                                        \
    {"log-level", FY_OPT_STR, &(o)->level, "LEVEL", "debug, info, warn or error (default info)"}, \
    {                                                                                             \
        "log-format", FY_OPT_STR, &(o)->format, "FORMAT", "text or json (default text)"           \
    }

/* Applies the logging options; returns 0 or FY_EINVAL with a message in ERR. */
int fy_cli_log_apply(const fy_cli_log_opts *o, char *err, size_t errlen);

#endif
