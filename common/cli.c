#include "cli.h"

#include "err.h"
#include "fy_version.h"
#include "log.h"

#include <jansson.h>
#include <llhttp.h>
#include <mbedtls/version.h>
#include <uv.h>

void fy_cli_print_version(FILE *f, const char *prog)
{
    char mbed[32];
    mbedtls_version_get_string(mbed);
    fprintf(f, "%s %s (git %s, %s build)\n", prog, FY_VERSION, FY_GIT_REV, FY_BUILD_TYPE);
    fprintf(f, "  libuv %s, mbedTLS %s, llhttp %d.%d.%d, jansson %s\n", uv_version_string(), mbed,
            LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH, JANSSON_VERSION);
}

int fy_cli_log_apply(const fy_cli_log_opts *o, char *err, size_t errlen)
{
    fy_log_level level = FY_LOG_INFO;
    fy_log_format format = FY_LOG_TEXT;
    if (o->level && fy_log_level_parse(o->level, &level)) {
        snprintf(err, errlen, "--log-level: '%s' is not debug, info, warn, error or off", o->level);
        return FY_EINVAL;
    }
    if (o->format && fy_log_format_parse(o->format, &format)) {
        snprintf(err, errlen, "--log-format: '%s' is not text or json", o->format);
        return FY_EINVAL;
    }
    fy_log_setup(level, format);
    return 0;
}
