/* ferry-runner: the private side of ferry. */
#include "common/args.h"
#include "common/cli.h"
#include "common/err.h"
#include "kernels/backend.h"
#include "runner/runner.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f, const fy_opt *opts)
{
    fprintf(f,
            "Usage: ferry-runner [OPTIONS] COMMAND [COMMAND OPTIONS]\n\n"
            "The runner is ferry's private side: it dials out to a gateway over\n"
            "mutual TLS and serves the requests that arrive down that tunnel. It never\n"
            "opens an inbound port.\n\n"
            "Commands:\n"
            "  enroll   make this runner's key pair and get its certificate from a gateway\n"
            "           with a one-time token (from 'ferry tokens create')\n"
            "  run      serve a model with the built-in engine (OpenAI API, locally and/or\n"
            "           through the gateway), or keep tunnel connections to the gateway(s)\n"
            "           and forward requests to a local upstream HTTP server\n"
            "  demo-model  write a small demo model (random weights) to try 'run --model'\n"
            "  quantize write a model as a GGUF file of quantized weights (q8_0, q4_k_m, ...)\n\n"
            "Run 'ferry-runner COMMAND --help' for a command's options.\n\n"
            "Options:\n");
    fy_args_usage(f, opts);
}

/* Index of the command word in ARGV (skipping global options and their
 * values), or ARGC when there is none. */
static int find_command(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if ((strcmp(a, "--log-level") == 0 || strcmp(a, "--log-format") == 0) && i + 1 < argc) {
            i++;
            continue;
        }
        if (a[0] != '-') {
            return i;
        }
    }
    return argc;
}

int main(int argc, char **argv)
{
    int help = 0, version = 0;
    fy_cli_log_opts log = {0};
    const fy_opt opts[] = {
        {"help", FY_OPT_FLAG, &help, NULL, "show this help and exit"},
        {"version", FY_OPT_FLAG, &version, NULL, "show version and library versions and exit"},
        FY_CLI_LOG_OPTS(&log),
        {0},
    };
    /* Keys and certificates the runner writes are for its user only. */
    umask(077);
    int cmd = find_command(argc, argv);
    char err[256];
    char *pos[argc > 0 ? argc : 1];
    int npos = 0;
    if (fy_args_parse(opts, cmd - 1, argv + 1, pos, &npos, err, sizeof err) ||
        fy_cli_log_apply(&log, err, sizeof err)) {
        fprintf(stderr, "ferry-runner: %s\n", err);
        return 2;
    }
    if (help) {
        usage(stdout, opts);
        return 0;
    }
    if (version) {
        fy_cli_print_version(stdout, "ferry-runner");
        fy_backend_info be[4];
        int nbe = fy_backend_list(be, 4);
        for (int i = 0; i < nbe; i++) {
            printf("  backend %s: %s\n", be[i].name, be[i].detail);
        }
        return 0;
    }
    if (cmd >= argc) {
        usage(stderr, opts);
        return 2;
    }
    if (strcmp(argv[cmd], "enroll") == 0) {
        return fy_rn_enroll_main(argc - cmd, argv + cmd);
    }
    if (strcmp(argv[cmd], "run") == 0) {
        return fy_rn_run_main(argc - cmd, argv + cmd);
    }
    if (strcmp(argv[cmd], "demo-model") == 0) {
        return fy_rn_demo_model_main(argc - cmd, argv + cmd);
    }
    if (strcmp(argv[cmd], "quantize") == 0) {
        return fy_rn_quantize_main(argc - cmd, argv + cmd);
    }
    if (strcmp(argv[cmd], "perplexity") == 0) {
        return fy_rn_perplexity_main(argc - cmd, argv + cmd);
    }
    fprintf(stderr, "ferry-runner: unknown command '%s' (see --help)\n", argv[cmd]);
    return 2;
}
