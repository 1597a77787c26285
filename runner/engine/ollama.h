/* ollama.h: a model in Ollama's local store, found without Ollama running.
 *
 * The store is $OLLAMA_MODELS when set, else ~/.ollama/models when it
 * exists, else /usr/share/ollama/.ollama/models (where Ollama's Linux
 * service keeps it). A model NAME[:TAG] (TAG defaults to "latest") has a
 * manifest at manifests/HOST/NAMESPACE/MODEL/TAG: NAME is MODEL (namespace
 * "library"), NAMESPACE/MODEL, or HOST/NAMESPACE/MODEL, as Ollama reads it
 * (HOST defaults to registry.ollama.ai). Each part is 1 to
 * FY_OLLAMA_MAX_PART letters, digits, '.', '_' or '-', starting with a
 * letter or digit (so no part can be "." or ".."); the tag the same, also
 * starting with '_'.
 *
 * The manifest is JSON (at most FY_OLLAMA_MAX_MANIFEST bytes) with a
 * "layers" array of {"mediaType", "digest", "size"}. Ferry takes the one
 * layer of type application/vnd.ollama.image.model, a GGUF file, stored as
 * blobs/sha256-<64 lowercase hex digits> whose size must equal the layer's
 * "size". Ferry does not use the other layers: the chat template comes from
 * the GGUF (tokenizer.chat_template), not from Ollama's Go template layer;
 * params (default stop words and sampling options), system (a default
 * system prompt), messages and license are ignored (requests carry their
 * own options); a projector (vision) is ignored, so the model serves text
 * only; an adapter (a LoRA the model needs) is refused, since serving the
 * base weights without it would answer as another model. */
#ifndef FY_ENGINE_OLLAMA_H
#define FY_ENGINE_OLLAMA_H

#include <stddef.h>
#include <stdint.h>

#define FY_OLLAMA_PREFIX       "ollama:"
#define FY_OLLAMA_MAX_MANIFEST (1u << 20)
#define FY_OLLAMA_MAX_PART     128
#define FY_OLLAMA_MODEL_LAYER  "application/vnd.ollama.image.model"

typedef struct {
    char store[2048];    /* the models directory */
    char manifest[3072]; /* the manifest's path */
    char blob[3072];     /* the model layer's blob: a GGUF file */
    char name[512];      /* NAME:TAG, TAG defaulted to "latest": the served model name */
    uint64_t size;       /* the blob's size, as the manifest says and the file has */
} fy_ollama_model;

/* Finds REF ("NAME[:TAG]", without the "ollama:" prefix) in the store and
 * fills *OUT. Returns 0; FY_EINVAL for a malformed name; FY_ENOENT when
 * there is no store, no such model or tag, or the blob is missing; FY_EPARSE
 * for a manifest that is not JSON, lacks the model layer or has a bad
 * digest or size; FY_EIO when the blob's size differs from the manifest's;
 * FY_ENOTSUP for an adapter layer. ERR names the path and the reason. */
int fy_ollama_resolve(const char *ref, fy_ollama_model *out, char *err, size_t errlen);

#endif
