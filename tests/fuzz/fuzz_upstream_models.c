/* fuzz_upstream_models: an upstream's /v1/models answer through
 * fy_rn_model_list_parse (runner/upmodels.c), then the list into a tunnel
 * HELLO exactly as the runner sends it.
 *
 * Oracles: a parse either fails with the list empty or gives at most
 * FYP_MAX_MODELS distinct ids, each 1..255 visible ASCII bytes, together
 * within FY_RN_MODELS_BYTES, every one pointing into the list's text; and a
 * runner session made with that list encodes its HELLO (the bounds are the
 * ones HELLO needs, so this never fails). */
#include "common/err.h"
#include "proto/session.h"
#include "runner/runner.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static fy_rn_model_list list;

static void check_list(void)
{
    size_t used = 0;
    if (list.n > FYP_MAX_MODELS) {
        abort();
    }
    for (size_t i = 0; i < list.n; i++) {
        const char *id = list.v[i];
        if (id < list.text || id >= list.text + sizeof list.text) {
            abort();
        }
        size_t n = strnlen(id, (size_t)(list.text + sizeof list.text - id));
        if (n < 1 || n > 255) {
            abort();
        }
        for (size_t k = 0; k < n; k++) {
            if ((unsigned char)id[k] < 0x21 || (unsigned char)id[k] > 0x7e) {
                abort();
            }
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(list.v[j], id) == 0) {
                abort();
            }
        }
        used += n + 1;
    }
    if (used > FY_RN_MODELS_BYTES) {
        abort();
    }
}

static void on_event(fyp_session *s, const fyp_event *ev, void *data)
{
    (void)s;
    (void)ev;
    (void)data;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[200];
    if (fy_rn_model_list_parse((const char *)data, size, &list, err, sizeof err)) {
        if (list.n != 0 || !err[0]) {
            abort();
        }
        return 0;
    }
    check_list();
    /* The longest runner name and every capability the runner sends. */
    char name[FY_RN_NAME_MAX];
    memset(name, 'r', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    static const char *const caps[] = {"upstream", "openai"};
    fyp_session_config sc;
    memset(&sc, 0, sizeof sc);
    sc.role = FYP_ROLE_RUNNER;
    fyp_settings_default(&sc.settings);
    sc.name = name;
    sc.caps = caps;
    sc.n_caps = 2;
    sc.models = list.v;
    sc.n_models = list.n;
    sc.on_event = on_event;
    fyp_session *s = NULL;
    if (fyp_session_new(&sc, &s)) {
        abort(); /* the HELLO did not fit */
    }
    fyp_session_free(s);
    return 0;
}
