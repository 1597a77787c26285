/* Fuzz target: a JSON Schema (the input's JSON) through the schema compiler
 * and the grammar builder's checks. A refused schema has a message; an
 * accepted one gives a grammar from which a walk (bytes chosen by the input's
 * hash from those the state allows, closing as soon as the state can) ends
 * in a text that parses as JSON; no walk step may be refused. */
#include "runner/api/jsonschema.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *schema = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (!schema) {
        return 0;
    }
    fy_gbuild *b = NULL;
    if (fy_gbuild_new(&b) < 0) {
        json_decref(schema);
        return 0;
    }
    fy_jsonschema_error e;
    int root = fy_jsonschema_compile(b, schema, 1, &e);
    fy_grammar *g = NULL;
    char err[256];
    if (root < 0) {
        if (!e.message[0]) {
            __builtin_trap();
        }
    } else if (fy_gbuild_finish(b, root, &g, err, sizeof err) == 0) {
        fy_gstate *st = NULL;
        uint64_t h = 1469598103934665603ull;
        for (size_t i = 0; i < size; i++) {
            h = (h ^ data[i]) * 1099511628211ull;
        }
        if (fy_gstate_new(g, &st) == 0) {
            char text[4096];
            size_t len = 0;
            for (int steps = 0; steps < 8192 && len < sizeof text - 1 && fy_gstate_can_continue(st);
                 steps++) {
                if (fy_gstate_accepting(st) && (h & 3) == 0) {
                    break;
                }
                fy_byteset next;
                fy_gstate_next_bytes(st, &next);
                int allowed[256], n = 0;
                for (int c = 0; c < 256; c++) {
                    if (fy_byteset_has(&next, (unsigned)c)) {
                        allowed[n++] = c;
                    }
                }
                if (n == 0) {
                    __builtin_trap(); /* can continue, yet no byte */
                }
                h = h * 6364136223846793005ull + 1442695040888963407ull;
                /* Prefer closing bytes, so walks end: the last allowed byte
                 * half of the time (']' and '}' sort late). */
                char c = (char)allowed[(h >> 40) & 1 ? n - 1 : (int)((h >> 33) % (uint64_t)n)];
                if (fy_gstate_feed(st, &c, 1) == 0) {
                    text[len++] = c;
                }
            }
            if (fy_gstate_accepting(st)) {
                json_t *v = json_loadb(text, len, JSON_DECODE_ANY, NULL);
                if (!v) {
                    __builtin_trap();
                }
                json_decref(v);
            }
            fy_gstate_free(st);
        }
        fy_grammar_unref(g);
    }
    fy_gbuild_free(b);
    json_decref(schema);
    return 0;
}
