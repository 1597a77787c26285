/* runner/engine/ollama: models in an Ollama store the test builds (a
 * manifest naming a GGUF blob by its SHA-256, as `ollama pull` leaves it).
 *   - NAME, NAME:TAG, NAMESPACE/NAME:TAG and HOST/NAMESPACE/NAME resolve to
 *     their blob, and fy_model_load("ollama:...") serves it named NAME:TAG;
 *   - the store is $OLLAMA_MODELS, else ~/.ollama/models;
 *   - every refusal names its path and reason: no store, no such model, no
 *     such tag (listing the tags), a missing blob, a blob of the wrong size,
 *     a manifest that is not JSON, one without layers or without the model
 *     layer, a bad digest, an adapter layer, a malformed name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/crypto.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "runner/engine/ollama.h"
#include "support/gguf_model.h"
#include "support/model_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_tmp[256], g_store[512], g_digest[80];
static uint64_t g_size;

static void put_file(const char *path, const void *p, size_t n)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = 0;
    assert_int_equal(fy_mkdir_p(dir, 0700), 0);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* A manifest like Ollama's: config, then the model layer (digest D, size
 * N), then template, params and license layers; EXTRA appended verbatim. */
static void put_manifest(const char *rel, const char *d, uint64_t n, const char *extra)
{
    char path[1024], text[4096];
    snprintf(path, sizeof path, "%s/manifests/%s", g_store, rel);
    snprintf(text, sizeof text,
             "{\"schemaVersion\":2,\"mediaType\":\"application/"
             "vnd.docker.distribution.manifest.v2+json\",\"config\":{\"mediaType\":\"application/"
             "vnd.docker.container.image.v1+json\",\"digest\":\"sha256:%064d\",\"size\":485},"
             "\"layers\":[{\"mediaType\":\"application/vnd.ollama.image.model\",\"digest\":\"%s\","
             "\"size\":%llu},{\"mediaType\":\"application/"
             "vnd.ollama.image.template\",\"digest\":\"sha256:%064d\",\"size\":10},{\"mediaType\":"
             "\"application/vnd.ollama.image.params\",\"digest\":\"sha256:%064d\",\"size\":20},{"
             "\"mediaType\":\"application/vnd.ollama.image.license\",\"digest\":\"sha256:%064d\","
             "\"size\":30}%s]}",
             1, d, (unsigned long long)n, 2, 3, 4, extra ? extra : "");
    put_file(path, text, strlen(text));
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/fy_ollama.XXXXXX");
    if (!mkdtemp(g_tmp)) {
        return -1;
    }
    snprintf(g_store, sizeof g_store, "%s/store", g_tmp);
    /* The blob: a small random llama model as GGUF, named by its SHA-256. */
    char dir[512], gguf[600];
    snprintf(dir, sizeof dir, "%s/hf", g_tmp);
    snprintf(gguf, sizeof gguf, "%s/model.gguf", g_tmp);
    if (gm_write_small(dir, gguf, 5, NULL) != 0) {
        return -1;
    }
    char *data = NULL;
    size_t len = 0;
    uint8_t h[FY_SHA256_LEN];
    if (fy_file_read(gguf, 64u << 20, &data, &len) || fy_sha256(data, len, h)) {
        return -1;
    }
    int o = snprintf(g_digest, sizeof g_digest, "sha256:");
    for (int i = 0; i < FY_SHA256_LEN; i++) {
        o += snprintf(g_digest + o, sizeof g_digest - (size_t)o, "%02x", h[i]);
    }
    g_size = len;
    char blob[700];
    snprintf(blob, sizeof blob, "%s/blobs/sha256-%s", g_store, g_digest + 7);
    put_file(blob, data, len);
    free(data);
    put_manifest("registry.ollama.ai/library/tiny/latest", g_digest, g_size, NULL);
    put_manifest("registry.ollama.ai/library/tiny/q8", g_digest, g_size, NULL);
    put_manifest("registry.ollama.ai/someone/tiny/v2", g_digest, g_size, NULL);
    put_manifest("hf.co/org/tiny-GGUF/latest", g_digest, g_size, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static int use_store(void **state)
{
    (void)state;
    return setenv("OLLAMA_MODELS", g_store, 1);
}

static void test_resolve(void **state)
{
    (void)state;
    const struct {
        const char *ref, *name, *manifest;
    } cases[] = {
        {"tiny", "tiny:latest", "registry.ollama.ai/library/tiny/latest"},
        {"tiny:q8", "tiny:q8", "registry.ollama.ai/library/tiny/q8"},
        {"someone/tiny:v2", "someone/tiny:v2", "registry.ollama.ai/someone/tiny/v2"},
        {"hf.co/org/tiny-GGUF", "hf.co/org/tiny-GGUF:latest", "hf.co/org/tiny-GGUF/latest"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fy_ollama_model om;
        char err[1024] = "", want[1024];
        if (fy_ollama_resolve(cases[i].ref, &om, err, sizeof err) != 0) {
            fail_msg("%s: %s", cases[i].ref, err);
        }
        assert_string_equal(om.name, cases[i].name);
        assert_string_equal(om.store, g_store);
        snprintf(want, sizeof want, "%s/manifests/%s", g_store, cases[i].manifest);
        assert_string_equal(om.manifest, want);
        snprintf(want, sizeof want, "%s/blobs/sha256-%s", g_store, g_digest + 7);
        assert_string_equal(om.blob, want);
        assert_int_equal(om.size, g_size);
    }
    fy_model *m = NULL;
    char err[1024] = "";
    if (fy_model_load("ollama:tiny:q8", &m, err, sizeof err) != 0) {
        fail_msg("%s", err);
    }
    assert_string_equal(m->name, "tiny:q8");
    assert_int_equal(m->cfg.vocab_size, 64);
    assert_non_null(m->gguf);
    fy_model_free(m);
}

/* Without OLLAMA_MODELS the store is ~/.ollama/models. */
static void test_home_store(void **state)
{
    (void)state;
    char home[512], link[600];
    snprintf(home, sizeof home, "%s/home", g_tmp);
    snprintf(link, sizeof link, "%s/.ollama", home);
    assert_int_equal(fy_mkdir_p(link, 0700), 0);
    strcat(link, "/models");
    if (access(link, F_OK) != 0) {
        assert_int_equal(symlink(g_store, link), 0);
    }
    const char *old_home = getenv("HOME");
    char saved[1024];
    snprintf(saved, sizeof saved, "%s", old_home ? old_home : "");
    unsetenv("OLLAMA_MODELS");
    setenv("HOME", home, 1);
    fy_ollama_model om;
    char err[1024] = "";
    int rc = fy_ollama_resolve("tiny", &om, err, sizeof err);
    if (old_home) {
        setenv("HOME", saved, 1);
    }
    setenv("OLLAMA_MODELS", g_store, 1);
    if (rc != 0) {
        fail_msg("%s", err);
    }
    assert_string_equal(om.store, link);
}

/* The refusals, each checked word for word. */
static void test_refusals(void **state)
{
    (void)state;
    char bad_d[80];
    snprintf(bad_d, sizeof bad_d, "%s", g_digest);
    bad_d[10] = 'G';
    char missing_d[80] = "sha256:";
    memset(missing_d + 7, 'e', 64);
    missing_d[71] = 0;
    put_manifest("registry.ollama.ai/library/nojson/latest", g_digest, g_size, ",oops");
    put_manifest("registry.ollama.ai/library/noblob/latest", missing_d, 10, NULL);
    put_manifest("registry.ollama.ai/library/size/latest", g_digest, g_size + 1, NULL);
    put_manifest("registry.ollama.ai/library/digest/latest", bad_d, g_size, NULL);
    put_manifest("registry.ollama.ai/library/adapter/latest", g_digest, g_size,
                 ",{\"mediaType\":\"application/vnd.ollama.image.adapter\",\"digest\":"
                 "\"sha256:0000000000000000000000000000000000000000000000000000000000000005\","
                 "\"size\":1}");
    char path[1024];
    snprintf(path, sizeof path, "%s/manifests/registry.ollama.ai/library/nolayer/latest", g_store);
    const char *nolayer = "{\"schemaVersion\":2,\"layers\":[{\"mediaType\":\"application/"
                          "vnd.ollama.image.license\",\"digest\":\"sha256:1\",\"size\":1}]}";
    put_file(path, nolayer, strlen(nolayer));
    snprintf(path, sizeof path, "%s/manifests/registry.ollama.ai/library/nolayers/latest", g_store);
    put_file(path, "{\"schemaVersion\":2}", strlen("{\"schemaVersion\":2}"));
    const char *S = g_store;
    char M[1024], B[1024];
    snprintf(B, sizeof B, "%s/blobs/sha256-%s", S, g_digest + 7);
    const struct {
        const char *ref;
        int rc;
        const char *fmt; /* %1$s: the store; %2$s: the manifest; %3$s: the blob */
    } cases[] = {
        {"nosuch", FY_ENOENT,
         "ollama:nosuch:latest: no such model in the Ollama store %1$s (no "
         "%1$s/manifests/registry.ollama.ai/library/nosuch)"},
        {"tiny:v9", FY_ENOENT, "ollama:tiny:v9: no tag 'v9' (no %2$s; tags: "},
        {"nojson", FY_EPARSE, "%2$s: the manifest is not JSON: "},
        {"nolayers", FY_EPARSE, "%2$s: the manifest has no \"layers\" array"},
        {"nolayer", FY_EPARSE,
         "%2$s: the manifest has no application/vnd.ollama.image.model layer"},
        {"noblob", FY_ENOENT,
         "%1$s/blobs/sha256-eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee: "
         "missing (the model layer of %2$s; 'ollama pull noblob:latest' fetches it again)"},
        {"size", FY_EIO, "%3$s: "},
        {"digest", FY_EPARSE, "%2$s: the model layer's digest '"},
        {"adapter", FY_ENOTSUP,
         "%2$s: the model has an adapter layer (a LoRA applied to the base weights); ferry does "
         "not apply adapters"},
        {"../etc/passwd", FY_EINVAL, "ollama:../etc/passwd: not a model name: expected NAME[:TAG]"},
        {"a/b/c/d", FY_EINVAL, "ollama:a/b/c/d: not a model name"},
        {"tiny:", FY_EINVAL, "ollama:tiny:: not a model name"},
        {"", FY_EINVAL, "ollama:: not a model name"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *ref = cases[i].ref;
        char name[256], want[2048], err[2048] = "";
        snprintf(name, sizeof name, "%.*s", (int)strcspn(ref, ":"), ref);
        snprintf(M, sizeof M, "%s/manifests/registry.ollama.ai/library/%s/%s", S, name,
                 strchr(ref, ':') ? strchr(ref, ':') + 1 : "latest");
        const char *args[3] = {S, M, B};
        /* Expand the positional %N$s by hand: only three, all strings. */
        size_t o = 0;
        for (const char *p = cases[i].fmt; *p && o < sizeof want - 1; p++) {
            if (p[0] == '%' && p[1] >= '1' && p[1] <= '3' && p[2] == '$' && p[3] == 's') {
                o += (size_t)snprintf(want + o, sizeof want - o, "%s", args[p[1] - '1']);
                p += 3;
            } else {
                want[o++] = *p;
            }
        }
        want[o] = 0;
        fy_ollama_model om;
        int rc = fy_ollama_resolve(ref, &om, err, sizeof err);
        if (rc != cases[i].rc || strncmp(err, want, strlen(want)) != 0) {
            fail_msg("'%s': rc %d (want %d)\n  got:  %s\n  want: %s...", ref, rc, cases[i].rc, err,
                     want);
        }
    }
    /* The tag refusal lists the tags; the size refusal says both sizes. */
    fy_ollama_model om;
    char err[2048];
    fy_ollama_resolve("tiny:v9", &om, err, sizeof err);
    assert_non_null(strstr(err, "latest"));
    assert_non_null(strstr(err, "q8"));
    fy_ollama_resolve("size", &om, err, sizeof err);
    char sizes[128];
    snprintf(sizes, sizeof sizes, "%llu bytes, but the manifest ", (unsigned long long)g_size);
    assert_non_null(strstr(err, sizes));
    snprintf(sizes, sizeof sizes, "says %llu (an incomplete download?)",
             (unsigned long long)g_size + 1);
    assert_non_null(strstr(err, sizes));
    /* Through fy_model_load, the same message. */
    fy_model *m = NULL;
    assert_int_equal(fy_model_load("ollama:nosuch", &m, err, sizeof err), FY_ENOENT);
    assert_non_null(strstr(err, "ollama:nosuch:latest: no such model"));
}

/* No store: OLLAMA_MODELS naming nothing, or no HOME store and no system one. */
static void test_no_store(void **state)
{
    (void)state;
    char gone[600], err[2048], want[2048];
    snprintf(gone, sizeof gone, "%s/nothing-here", g_tmp);
    setenv("OLLAMA_MODELS", gone, 1);
    fy_ollama_model om;
    int rc = fy_ollama_resolve("tiny", &om, err, sizeof err);
    snprintf(want, sizeof want, "no Ollama store: OLLAMA_MODELS is %s, which is not a directory",
             gone);
    setenv("OLLAMA_MODELS", g_store, 1);
    assert_int_equal(rc, FY_ENOENT);
    assert_string_equal(err, want);
    if (access("/usr/share/ollama/.ollama/models", F_OK) == 0) {
        print_message("the system store exists here: the no-store case without "
                      "OLLAMA_MODELS is not checked\n");
        return;
    }
    const char *old_home = getenv("HOME");
    char saved[1024];
    snprintf(saved, sizeof saved, "%s", old_home ? old_home : "");
    unsetenv("OLLAMA_MODELS");
    setenv("HOME", gone, 1);
    rc = fy_ollama_resolve("tiny", &om, err, sizeof err);
    if (old_home) {
        setenv("HOME", saved, 1);
    }
    setenv("OLLAMA_MODELS", g_store, 1);
    snprintf(want, sizeof want,
             "no Ollama store: OLLAMA_MODELS is not set and neither %s/.ollama/models nor "
             "/usr/share/ollama/.ollama/models is a directory",
             gone);
    assert_int_equal(rc, FY_ENOENT);
    assert_string_equal(err, want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_resolve, use_store),
        cmocka_unit_test_setup(test_home_store, use_store),
        cmocka_unit_test_setup(test_refusals, use_store),
        cmocka_unit_test_setup(test_no_store, use_store),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
