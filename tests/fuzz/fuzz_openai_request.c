/* Fuzz target: an OpenAI request body through fy_oai_parse (the first byte
 * picks /v1/completions or /v1/chat/completions). An accepted request keeps
 * every cap (prompts, choices, token ids, logit_bias) and its sampling
 * parameters pass the engine's own validation; a refused one has a status, a
 * message and an error body. */
#include "runner/api/openai.h"
#include "runner/engine/sampler.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    fy_oai_kind kind = data[0] & 1 ? FY_OAI_CHAT : FY_OAI_COMPLETION;
    fy_oai_request r;
    fy_oai_error e;
    if (fy_oai_parse(kind, (const char *)data + 1, size - 1, &r, &e) == 0) {
        char err[128];
        if (fy_sampling_validate(&r.sampling, err, sizeof err) != 0 || r.n < 1 ||
            r.n > FY_OAI_MAX_N || r.n_logit_bias > FY_OAI_MAX_LOGIT_BIAS) {
            __builtin_trap();
        }
        if (kind == FY_OAI_COMPLETION) {
            size_t ids = 0;
            if (r.n_prompts < 1 || r.n_prompts > FY_OAI_MAX_PROMPTS ||
                r.n_prompts * r.n > FY_OAI_MAX_CHOICES) {
                __builtin_trap();
            }
            for (int i = 0; i < r.n_prompts; i++) {
                if (!r.prompts[i].text && r.prompts[i].n_ids == 0) {
                    __builtin_trap();
                }
                ids += r.prompts[i].n_ids;
            }
            if (ids > FY_OAI_MAX_PROMPT_IDS || (r.max_tokens == 0 && r.has_max_tokens && !r.echo)) {
                __builtin_trap();
            }
        } else if (!r.messages || (r.has_max_tokens && r.max_tokens < 1)) {
            __builtin_trap();
        }
    } else {
        size_t len = 0;
        char *body = fy_oai_error_json(&e, &len);
        if (!body || len == 0 || e.status < 400 || e.status > 599 || !e.message[0]) {
            __builtin_trap();
        }
        free(body);
    }
    fy_oai_request_free(&r);
    return 0;
}
