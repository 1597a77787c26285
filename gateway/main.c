/* ferry-gateway: the public side of ferry. */
#include "common/args.h"
#include "common/cli.h"
#include "common/err.h"
#include "gateway/datadir.h"
#include "gateway/gateway.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f, const fy_opt *opts)
{
    fprintf(f, "Usage: ferry-gateway [OPTIONS] COMMAND\n\n"
               "The gateway is ferry's public side: it terminates HTTPS, authenticates\n"
               "callers and proxies their requests down runners' outbound tunnels.\n\n"
               "Commands:\n"
               "  init     create a data directory (CAs, server certificate, admin token, store)\n"
               "  run      serve: public, tunnel and admin listeners on an initialised directory\n"
               "  migrate  copy a data directory's store into a shared Redis (for run --shared)\n\n"
               "Run 'ferry-gateway COMMAND --help' for a command's options.\n\n"
               "Options:\n");
    fy_args_usage(f, opts);
}

int main(int argc, char **argv)
{
    int help = 0, version = 0;
    /* Everything the gateway writes (store, state, keys) is for its user only. */
    umask(077);
    /* Options before the command are global; the command parses the rest. */
    int cmd = 1;
    while (cmd < argc && strncmp(argv[cmd], "-", 1) == 0) {
        cmd++;
    }
    if (cmd < argc && strcmp(argv[cmd], "init") == 0) {
        return fy_gw_init_main(argc - cmd, argv + cmd);
    }
    if (cmd < argc && strcmp(argv[cmd], "migrate") == 0) {
        return fy_gw_migrate_main(argc - cmd, argv + cmd);
    }
    if (cmd < argc && strcmp(argv[cmd], "run") == 0) {
        return fy_gw_run_main(argc - cmd, argv + cmd);
    }
    fy_cli_log_opts log = {0};
    const fy_opt opts[] = {
        {"help", FY_OPT_FLAG, &help, NULL, "show this help and exit"},
        {"version", FY_OPT_FLAG, &version, NULL, "show version and library versions and exit"},
        FY_CLI_LOG_OPTS(&log),
        {0},
    };
    char err[256];
    char *pos[argc > 0 ? argc : 1];
    int npos = 0;
    if (fy_args_parse(opts, argc - 1, argv + 1, pos, &npos, err, sizeof err) ||
        fy_cli_log_apply(&log, err, sizeof err)) {
        fprintf(stderr, "ferry-gateway: %s\n", err);
        return 2;
    }
    if (help) {
        usage(stdout, opts);
        return 0;
    }
    if (version) {
        fy_cli_print_version(stdout, "ferry-gateway");
        return 0;
    }
    if (npos == 0) {
        usage(stderr, opts);
        return 2;
    }
    fprintf(stderr, "ferry-gateway: unknown command '%s' (see --help)\n", pos[0]);
    return 2;
}
