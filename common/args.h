/* args.h: table-driven command-line and config-file options.
 *
 * Each binary describes its options once in an fy_opt table; the same table
 * parses argv ("--name VALUE", "--name=VALUE", flags as "--name"), loads a
 * JSON config file whose keys are the option names, and prints --help.
 * Command-line values override the config file when the file is loaded first. */
#ifndef FY_ARGS_H
#define FY_ARGS_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#define FY_STRLIST_MAX 16

typedef struct {
    const char *v[FY_STRLIST_MAX];
    size_t n;
} fy_strlist;

typedef enum {
    FY_OPT_FLAG,     /* int *: set to 1 */
    FY_OPT_STR,      /* const char **: points into argv or the config root */
    FY_OPT_INT,      /* long long * */
    FY_OPT_SIZE,     /* uint64_t *: bytes, "4GiB", "512MiB", "64KiB", "1000" */
    FY_OPT_DURATION, /* uint64_t *: milliseconds, "250ms", "30s", "5m", "1h", "30d" */
    FY_OPT_STRLIST,  /* fy_strlist *: repeatable, values appended in order */
} fy_opt_type;

typedef struct {
    const char *name; /* long name without the dashes; NULL ends the table */
    fy_opt_type type;
    void *dst;
    const char *metavar; /* shown in --help ("ADDR:PORT"); NULL for flags */
    const char *help;
} fy_opt;

/* Parses ARGV[0..ARGC) against OPTS. Positional arguments (and everything
 * after "--") are stored, in order, into POS (room for ARGC entries); *NPOS
 * gets their count. Returns 0, or FY_EINVAL with a message for the user in
 * ERR (unknown option, missing or malformed value, too many list values). */
int fy_args_parse(const fy_opt *opts, int argc, char **argv, char **pos, int *npos, char *err,
                  size_t errlen);

/* The first option given in ARGV[0..ARGC) (read as fy_args_parse() reads
 * it against OPTS; values are not applied) whose name ALLOWED refuses
 * (returns 0 for), or NULL when none is. For tools whose commands each take
 * some of one table's options: parse with the whole table, then ask which
 * option the chosen command does not take. */
const fy_opt *fy_args_refused(const fy_opt *opts, int argc, char **argv,
                              int (*allowed)(const char *name, void *arg), void *arg);

/* Returns the value given for option NAME in argv ("--NAME V" or
 * "--NAME=V"), or NULL. Used to find --config before the full parse. */
const char *fy_args_find(int argc, char **argv, const char *name);

/* Loads a JSON object from PATH (at most FY_CONFIG_MAX_BYTES) and applies each
 * key to the option of that name (strings, numbers, booleans for flags, arrays
 * for lists; sizes and durations as numbers or strings). Unknown keys are
 * errors. Returns the parsed root, which owns the strings the options now
 * point to: the caller keeps it until done with them, then json_decref()s it.
 * On error returns NULL and writes a message into ERR. */
json_t *fy_config_load(const char *path, const fy_opt *opts, char *err, size_t errlen);

/* Prints "  --name METAVAR   help" lines for every option. */
void fy_args_usage(FILE *f, const fy_opt *opts);

/* A subcommand's start: parses ARGV[1..ARGC) (ARGV[0] is the command word)
 * into OPTS and POS as fy_args_parse() does. On a parse error prints
 * "PROG: message" to stderr and returns 2; when *HELP was set, prints HELP_TEXT
 * and the options to stdout and returns 0; otherwise returns -1: go on. */
int fy_args_command(const fy_opt *opts, int argc, char **argv, char **pos, int *npos,
                    const char *prog, const int *help, const char *help_text);

/* Value parsers; each returns 0 or FY_EINVAL and rejects trailing junk. */
int fy_parse_size(const char *s, uint64_t *out);
int fy_parse_duration_ms(const char *s, uint64_t *out);
int fy_parse_int(const char *s, long long *out);

#endif
