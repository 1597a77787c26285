/* ollama.c: NAME[:TAG] -> the GGUF blob of its model layer in Ollama's
 * local store (see ollama.h). Nothing here talks to Ollama: the store is a
 * directory of JSON manifests and content-addressed blobs. */
#include "runner/engine/ollama.h"

#include "common/err.h"
#include "common/fsutil.h"

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define OLLAMA_HOST      "registry.ollama.ai"
#define OLLAMA_NAMESPACE "library"
#define OLLAMA_SYSTEM    "/usr/share/ollama/.ollama/models"

typedef struct {
    char host[FY_OLLAMA_MAX_PART + 1], ns[FY_OLLAMA_MAX_PART + 1], model[FY_OLLAMA_MAX_PART + 1];
    char tag[FY_OLLAMA_MAX_PART + 1];
    int has_tag; /* the name said its tag */
} ollama_name;

static int is_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* A name part or tag S[0..N): 1..FY_OLLAMA_MAX_PART of [A-Za-z0-9._-],
 * starting with a letter or digit (or '_' when FIRST_UNDERSCORE). */
static int part_ok(const char *s, size_t n, int first_underscore)
{
    if (n == 0 || n > FY_OLLAMA_MAX_PART ||
        !(is_alnum(s[0]) || (first_underscore && s[0] == '_'))) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (!is_alnum(s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-') {
            return 0;
        }
    }
    return 1;
}

static int name_parse(const char *ref, ollama_name *nm, char *err, size_t errlen)
{
    const char *slash = strrchr(ref, '/'), *colon = strrchr(ref, ':');
    if (colon && slash && colon < slash) {
        colon = NULL; /* a ':' before the last '/' is not a tag */
    }
    size_t nlen = colon ? (size_t)(colon - ref) : strlen(ref);
    const char *tag = colon ? colon + 1 : "latest";
    const char *parts[3];
    size_t lens[3];
    int n = 0;
    for (size_t i = 0, start = 0; i <= nlen; i++) {
        if (i == nlen || ref[i] == '/') {
            if (n == 3) {
                n = 4;
                break;
            }
            parts[n] = ref + start;
            lens[n++] = i - start;
            start = i + 1;
        }
    }
    int ok = n >= 1 && n <= 3 && part_ok(tag, strlen(tag), 1);
    for (int i = 0; ok && i < n; i++) {
        ok = part_ok(parts[i], lens[i], 0);
    }
    if (!ok) {
        return fy_fail(err, errlen, FY_EINVAL,
                       "ollama:%.300s: not a model name: expected NAME[:TAG], NAME being MODEL, "
                       "NAMESPACE/MODEL or HOST/NAMESPACE/MODEL, each part letters, digits, '.', "
                       "'_' or '-' (at most %d), starting with a letter or digit",
                       ref, FY_OLLAMA_MAX_PART);
    }
    snprintf(nm->host, sizeof nm->host, "%s", OLLAMA_HOST);
    snprintf(nm->ns, sizeof nm->ns, "%s", OLLAMA_NAMESPACE);
    char *dst[3] = {nm->host, nm->ns, nm->model};
    for (int i = 0; i < n; i++) {
        snprintf(dst[3 - n + i], FY_OLLAMA_MAX_PART + 1, "%.*s", (int)lens[i], parts[i]);
    }
    snprintf(nm->tag, sizeof nm->tag, "%s", tag);
    nm->has_tag = colon != NULL;
    return 0;
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The store directory, into OUT. */
static int store_find(char *out, size_t outlen, char *err, size_t errlen)
{
    const char *env = getenv("OLLAMA_MODELS");
    if (env && *env) {
        if (!is_dir(env)) {
            return fy_fail(err, errlen, FY_ENOENT,
                           "no Ollama store: OLLAMA_MODELS is %.1024s, which is not a directory",
                           env);
        }
        snprintf(out, outlen, "%s", env);
        return 0;
    }
    char home_store[2048] = "";
    const char *home = getenv("HOME");
    if (home && *home) {
        snprintf(home_store, sizeof home_store, "%s/.ollama/models", home);
        if (is_dir(home_store)) {
            snprintf(out, outlen, "%s", home_store);
            return 0;
        }
    }
    if (is_dir(OLLAMA_SYSTEM)) {
        snprintf(out, outlen, "%s", OLLAMA_SYSTEM);
        return 0;
    }
    return fy_fail(err, errlen, FY_ENOENT,
                   "no Ollama store: OLLAMA_MODELS is not set and neither %s nor %s is a "
                   "directory",
                   home_store[0] ? home_store : "~/.ollama/models (HOME is not set)",
                   OLLAMA_SYSTEM);
}

/* The tags of the model directory DIR, comma-separated into OUT ("" when
 * none can be listed). */
static void list_tags(const char *dir, char *out, size_t outlen)
{
    out[0] = 0;
    DIR *d = opendir(dir);
    if (!d) {
        return;
    }
    size_t o = 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && o + 4 < outlen) {
        if (de->d_name[0] == '.') {
            continue;
        }
        int w = snprintf(out + o, outlen - o, "%s%s", n++ ? ", " : "", de->d_name);
        o = w < 0 || (size_t)w >= outlen - o ? outlen - 1 : o + (size_t)w;
    }
    closedir(d);
}

/* "sha256:" and 64 lowercase hex digits. */
static int digest_ok(const char *d)
{
    if (strncmp(d, "sha256:", 7) != 0 || strlen(d) != 7 + 64) {
        return 0;
    }
    for (int i = 7; i < 7 + 64; i++) {
        if (!((d[i] >= '0' && d[i] <= '9') || (d[i] >= 'a' && d[i] <= 'f'))) {
            return 0;
        }
    }
    return 1;
}

/* Finds the model layer of ROOT (the parsed manifest at PATH). */
static int manifest_model_layer(const char *path, json_t *root, const char **digest,
                                json_int_t *size, char *err, size_t errlen)
{
    json_t *layers = json_is_object(root) ? json_object_get(root, "layers") : NULL;
    if (!json_is_array(layers)) {
        return fy_fail(err, errlen, FY_EPARSE, "%s: the manifest has no \"layers\" array", path);
    }
    json_t *model = NULL;
    size_t i;
    json_t *l;
    json_array_foreach(layers, i, l)
    {
        const char *mt = json_string_value(json_object_get(l, "mediaType"));
        if (!mt) {
            return fy_fail(err, errlen, FY_EPARSE, "%s: layer %zu has no \"mediaType\" string",
                           path, i);
        }
        if (strcmp(mt, "application/vnd.ollama.image.adapter") == 0) {
            return fy_fail(err, errlen, FY_ENOTSUP,
                           "%s: the model has an adapter layer (a LoRA applied to the base "
                           "weights); ferry does not apply adapters",
                           path);
        }
        if (strcmp(mt, FY_OLLAMA_MODEL_LAYER) == 0) {
            if (model) {
                return fy_fail(err, errlen, FY_EPARSE, "%s: more than one %s layer", path,
                               FY_OLLAMA_MODEL_LAYER);
            }
            model = l;
        }
    }
    if (!model) {
        return fy_fail(err, errlen, FY_EPARSE, "%s: the manifest has no %s layer", path,
                       FY_OLLAMA_MODEL_LAYER);
    }
    const char *d = json_string_value(json_object_get(model, "digest"));
    json_t *sz = json_object_get(model, "size");
    if (!d || !digest_ok(d)) {
        return fy_fail(err, errlen, FY_EPARSE,
                       "%s: the model layer's digest %s%.80s%s is not \"sha256:\" and 64 "
                       "lowercase hex digits",
                       path, d ? "'" : "", d ? d : "(missing)", d ? "'" : "");
    }
    if (!json_is_integer(sz) || json_integer_value(sz) < 0) {
        return fy_fail(err, errlen, FY_EPARSE,
                       "%s: the model layer's \"size\" is missing or not a byte count", path);
    }
    *digest = d;
    *size = json_integer_value(sz);
    return 0;
}

int fy_ollama_resolve(const char *ref, fy_ollama_model *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    ollama_name nm;
    int rc;
    if ((rc = name_parse(ref, &nm, err, errlen)) < 0 ||
        (rc = store_find(out->store, sizeof out->store, err, errlen)) < 0) {
        return rc;
    }
    snprintf(out->name, sizeof out->name, "%s%s%s", ref, nm.has_tag ? "" : ":",
             nm.has_tag ? "" : nm.tag);
    char model_dir[2600];
    snprintf(model_dir, sizeof model_dir, "%s/manifests/%s/%s/%s", out->store, nm.host, nm.ns,
             nm.model);
    snprintf(out->manifest, sizeof out->manifest, "%s/%s", model_dir, nm.tag);
    char *text = NULL;
    size_t len = 0;
    rc = fy_file_read(out->manifest, FY_OLLAMA_MAX_MANIFEST, &text, &len);
    if (rc == FY_ENOENT || (rc < 0 && !fy_file_exists(out->manifest))) {
        if (!is_dir(model_dir)) {
            return fy_fail(err, errlen, FY_ENOENT,
                           "ollama:%s: no such model in the Ollama store %s (no %s)", out->name,
                           out->store, model_dir);
        }
        char tags[512];
        list_tags(model_dir, tags, sizeof tags);
        return fy_fail(err, errlen, FY_ENOENT, "ollama:%s: no tag '%s' (no %s; tags: %s)",
                       out->name, nm.tag, out->manifest, tags[0] ? tags : "none");
    }
    if (rc < 0) {
        return fy_fail(err, errlen, rc, "%s: %s", out->manifest, fy_strerror(rc));
    }
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root) {
        return fy_fail(err, errlen, FY_EPARSE, "%s: the manifest is not JSON: %s at line %d",
                       out->manifest, jerr.text, jerr.line);
    }
    const char *digest = NULL;
    json_int_t size = 0;
    rc = manifest_model_layer(out->manifest, root, &digest, &size, err, errlen);
    if (rc == 0) {
        snprintf(out->blob, sizeof out->blob, "%s/blobs/sha256-%s", out->store, digest + 7);
        out->size = (uint64_t)size;
    }
    json_decref(root);
    if (rc < 0) {
        return rc;
    }
    struct stat st;
    if (stat(out->blob, &st) != 0) {
        return fy_fail(err, errlen, FY_ENOENT,
                       "%s: missing (the model layer of %s; 'ollama pull %s' fetches it again)",
                       out->blob, out->manifest, out->name);
    }
    if (!S_ISREG(st.st_mode)) {
        return fy_fail(err, errlen, FY_EIO, "%s: not a regular file", out->blob);
    }
    if ((uint64_t)st.st_size != out->size) {
        return fy_fail(err, errlen, FY_EIO,
                       "%s: %llu bytes, but the manifest %s says %llu (an incomplete download?)",
                       out->blob, (unsigned long long)st.st_size, out->manifest,
                       (unsigned long long)out->size);
    }
    return 0;
}
