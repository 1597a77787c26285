/* fuzz_jinja: random templates through the whole interpreter: compile, then
 * render with a fixed conversation under small limits.
 *
 * Input: the first byte picks the compile flags (bit 0 trim_blocks, bit 1
 * lstrip_blocks); the rest is the template. Oracles: compile and render
 * return only their documented codes, with a message on failure; a failed
 * compile yields no template; a rendered string is NUL-terminated at its
 * length and within the output limit; memory is released (leaks are
 * findings) and every loop, string and list stays within the limits, so a
 * slow or huge input is a finding too. */
#include "common/err.h"
#include "runner/api/jinja.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static json_t *vars;

static void setup_once(void)
{
    if (vars) {
        return;
    }
    vars = json_loads(
        "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
        " {\"role\": \"user\", \"content\": \" Hi \\u00e9 \"},"
        " {\"role\": \"assistant\", \"content\": \"Hello\", \"tool_calls\": [{\"id\": "
        "\"abcdefghi\","
        " \"function\": {\"name\": \"f\", \"arguments\": {\"x\": [1, 2.5, null, true]}}}]},"
        " {\"role\": \"user\", \"content\": \"2+2?\"}],"
        " \"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"add_generation_prompt\": true,"
        " \"tools\": null, \"n\": 7, \"d\": {\"a\": {\"b\": [1, \"x\"]}}}",
        0, NULL);
    if (!vars) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup_once();
    if (size == 0) {
        return 0;
    }
    unsigned flags = data[0] & 3u;
    char err[256];
    fy_jinja *t = (fy_jinja *)&err; /* must be overwritten */
    int rc = fy_jinja_compile((const char *)data + 1, size - 1, flags, &t, err, sizeof err);
    if (rc) {
        if ((rc != FY_EPARSE && rc != FY_ENOTSUP && rc != FY_ETOOBIG) || t || !err[0]) {
            abort();
        }
        return 0;
    }
    fy_jinja_limits lim = {.max_output = 64 * 1024, .max_steps = 20000, .max_work_bytes = 4 << 20};
    char *out = (char *)err;
    size_t len = 1;
    rc = fy_jinja_render(t, vars, &lim, &out, &len, err, sizeof err);
    if (rc) {
        if ((rc != FY_EINVAL && rc != FY_ETOOBIG) || out || !err[0]) {
            abort();
        }
    } else if (!out || out[len] != 0 || len > lim.max_output) {
        abort();
    }
    free(out);
    fy_jinja_free(t);
    return 0;
}
