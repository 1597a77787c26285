/* The GGUF writer (runner/engine/gguf_write.h): what it writes, read back
 * through ferry's validating reader (runner/engine/gguf.h), and what it
 * refuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "kernels/cpu/quant.h"
#include "runner/engine/gguf.h"
#include "runner/engine/gguf_write.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[256];

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/fy_gguf_write.XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

/* Files left in the directory (a failed write must leave none). */
static int files_in_dir(void)
{
    DIR *d = opendir(g_dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        n += e->d_name[0] != '.';
    }
    if (d) {
        closedir(d);
    }
    return n;
}

static int teardown(void **state)
{
    (void)state;
    DIR *d = opendir(g_dir);
    char p[512];
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] != '.') {
            snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
            unlink(p);
        }
    }
    if (d) {
        closedir(d);
    }
    rmdir(g_dir);
    return 0;
}

static void write_and_read(uint32_t alignment)
{
    char path[320], err[512] = "";
    snprintf(path, sizeof path, "%s/m%u.gguf", g_dir, alignment);
    fy_gguf_writer *w;
    assert_int_equal(fy_gguf_w_new(alignment, &w), 0);
    assert_int_equal(fy_gguf_w_str(w, "general.architecture", "llama", 5), 0);
    assert_int_equal(fy_gguf_w_u32(w, "llama.block_count", 7), 0);
    assert_int_equal(fy_gguf_w_i32(w, "x.neg", -5), 0);
    assert_int_equal(fy_gguf_w_f32(w, "llama.rope.freq_base", 500000.0f), 0);
    assert_int_equal(fy_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", 1), 0);
    const char *toks[] = {"<s>", "", "\xe2\x96\x81the"};
    size_t lens[] = {3, 0, 6};
    assert_int_equal(fy_gguf_w_arr_str(w, "tokenizer.ggml.tokens", toks, lens, 3), 0);
    float sc[] = {0.0f, -1.5f, 3.25f};
    assert_int_equal(fy_gguf_w_arr_f32(w, "tokenizer.ggml.scores", sc, 3), 0);
    int32_t ty[] = {3, 1, 1};
    assert_int_equal(fy_gguf_w_arr_i32(w, "tokenizer.ggml.token_type", ty, 3), 0);
    assert_int_equal(fy_gguf_w_u32(w, "llama.block_count", 8), FY_EEXIST);

    /* A Q4_K matrix [3 rows x 512], a Q8_0 one [5 x 64] and an f32 vector of 7. */
    enum { R1 = 3, C1 = 512, R2 = 5, C2 = 64, N3 = 7 };
    static float x1[R1 * C1], x2[R2 * C2], x3[N3];
    for (int i = 0; i < R1 * C1; i++) {
        x1[i] = (float)((i * 37) % 101 - 50) / 64.0f;
    }
    for (int i = 0; i < R2 * C2; i++) {
        x2[i] = (float)((i * 11) % 23 - 11) / 8.0f;
    }
    for (int i = 0; i < N3; i++) {
        x3[i] = 1.0f + (float)i;
    }
    static uint8_t q1[R1 * C1], q2[R2 * C2 * 2];
    assert_int_equal(fy_q_quantize(FY_DT_Q4_K, x1, q1, R1 * C1), 0);
    assert_int_equal(fy_q_quantize(FY_DT_Q8_0, x2, q2, R2 * C2), 0);
    uint64_t d1[] = {C1, R1}, d2[] = {C2, R2}, d3[] = {N3};
    assert_int_equal(fy_gguf_w_tensor(w, "blk.0.attn_q.weight", FY_DT_Q4_K, 2, d1), 0);
    assert_int_equal(fy_gguf_w_tensor(w, "token_embd.weight", FY_DT_Q8_0, 2, d2), 0);
    assert_int_equal(fy_gguf_w_tensor(w, "output_norm.weight", FY_DT_F32, 1, d3), 0);
    assert_int_equal(fy_gguf_w_tensor(w, "output_norm.weight", FY_DT_F32, 1, d3), FY_EEXIST);
    uint64_t q1b = fy_gguf_w_tensor_bytes(w, 0), q2b = fy_gguf_w_tensor_bytes(w, 1);
    assert_int_equal(q1b, R1 * C1 / 256 * 144);
    assert_int_equal(q2b, R2 * C2 / 32 * 34);
    assert_int_equal(fy_gguf_w_begin(w, path, err, sizeof err), 0);
    assert_int_equal(fy_gguf_w_u32(w, "late.key", 1), FY_EINVAL); /* header is written */
    /* Data in pieces of any size. */
    assert_int_equal(fy_gguf_w_tensor_data(w, q1, 100, err, sizeof err), 0);
    assert_int_equal(fy_gguf_w_tensor_data(w, q1 + 100, (size_t)q1b - 100, err, sizeof err), 0);
    assert_int_equal(fy_gguf_w_tensor_data(w, q2, (size_t)q2b, err, sizeof err), 0);
    assert_int_equal(fy_gguf_w_tensor_data(w, x3, sizeof x3, err, sizeof err), 0);
    assert_int_equal(fy_gguf_w_tensor_data(w, x3, 4, err, sizeof err), FY_EINVAL);
    assert_non_null(strstr(err, "no tensor is waiting"));
    assert_int_equal(fy_gguf_w_commit(w, err, sizeof err), 0);
    fy_gguf_w_free(w);

    fy_gguf *g;
    if (fy_gguf_open(path, &g, err, sizeof err)) {
        fail_msg("reading back: %s", err);
    }
    assert_int_equal(g->version, 3);
    assert_int_equal(g->alignment, alignment ? alignment : 32);
    fy_gguf_str s;
    assert_int_equal(fy_gguf_get_str(g, "general.architecture", &s, err, sizeof err), 0);
    assert_true(s.len == 5 && memcmp(s.p, "llama", 5) == 0);
    uint32_t u;
    assert_int_equal(fy_gguf_get_u32(g, "llama.block_count", &u, err, sizeof err), 0);
    assert_int_equal(u, 7);
    assert_int_equal(fy_gguf_find(g, "x.neg")->v.i, -5);
    float f;
    assert_int_equal(fy_gguf_get_f32(g, "llama.rope.freq_base", &f, err, sizeof err), 0);
    assert_true(f == 500000.0f);
    assert_int_equal(fy_gguf_find(g, "tokenizer.ggml.add_bos_token")->v.b, 1);
    fy_gguf_arr a;
    assert_int_equal(fy_gguf_get_arr(g, "tokenizer.ggml.tokens", FY_GGUF_STR, &a, err, sizeof err),
                     0);
    assert_int_equal(a.n, 3);
    for (int i = 0; i < 3; i++) {
        fy_gguf_val v;
        assert_int_equal(fy_gguf_arr_get(&a, (uint64_t)i, &v), 0);
        assert_int_equal(v.s.len, lens[i]);
        assert_memory_equal(v.s.p, toks[i], lens[i]);
    }
    assert_int_equal(fy_gguf_get_arr(g, "tokenizer.ggml.scores", FY_GGUF_F32, &a, err, sizeof err),
                     0);
    fy_gguf_val v;
    assert_int_equal(fy_gguf_arr_get(&a, 2, &v), 0);
    assert_true(v.f == 3.25);
    assert_int_equal(
        fy_gguf_get_arr(g, "tokenizer.ggml.token_type", FY_GGUF_I32, &a, err, sizeof err), 0);
    assert_int_equal(fy_gguf_arr_get(&a, 0, &v), 0);
    assert_int_equal(v.i, 3);
    assert_int_equal(g->n_tensors, 3);
    const fy_gguf_tensor *t = fy_gguf_tensor_find(g, "blk.0.attn_q.weight");
    assert_non_null(t);
    assert_int_equal(t->type, FY_DT_Q4_K);
    assert_int_equal(t->dims[0], C1);
    assert_int_equal(t->dims[1], R1);
    assert_memory_equal(t->data, q1, (size_t)q1b);
    t = fy_gguf_tensor_find(g, "token_embd.weight");
    assert_int_equal(t->type, FY_DT_Q8_0);
    assert_memory_equal(t->data, q2, (size_t)q2b);
    t = fy_gguf_tensor_find(g, "output_norm.weight");
    assert_int_equal(t->type, FY_DT_F32);
    assert_int_equal(t->n_dims, 1);
    assert_memory_equal(t->data, x3, sizeof x3);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        assert_int_equal(g->t[i].offset % g->alignment, 0);
    }
    fy_gguf_free(g);
}

static void test_roundtrip(void **state)
{
    (void)state;
    write_and_read(0);
    write_and_read(64);
    write_and_read(4096);
    assert_int_equal(files_in_dir(), 3);
}

static void test_refusals(void **state)
{
    (void)state;
    fy_gguf_writer *w;
    char path[320], err[512] = "";
    assert_int_equal(fy_gguf_w_new(48, &w), FY_EINVAL); /* not a power of two */
    assert_int_equal(fy_gguf_w_new(0, &w), 0);
    assert_int_equal(fy_gguf_w_u32(w, "", 1), FY_EINVAL);
    uint64_t odd[] = {100, 2}, zero[] = {32, 0}, ok[] = {64, 2};
    assert_int_equal(fy_gguf_w_tensor(w, "a", FY_DT_Q8_0, 2, odd), FY_EINVAL); /* 100 % 32 */
    assert_int_equal(fy_gguf_w_tensor(w, "a", FY_DT_F32, 2, zero), FY_EINVAL);
    assert_int_equal(fy_gguf_w_tensor(w, "a", FY_DT_F32, 5, ok), FY_EINVAL);
    assert_int_equal(fy_gguf_w_tensor(w, "", FY_DT_F32, 2, ok), FY_EINVAL);
    assert_int_equal(fy_gguf_w_tensor(w,
                                      "a-name-that-is-longer-than-sixty-four-bytes-which-gguf-"
                                      "does-not-allow",
                                      FY_DT_F32, 2, ok),
                     FY_EINVAL);
    uint64_t huge[] = {1ull << 40, 1ull << 40};
    assert_int_equal(fy_gguf_w_tensor(w, "h", FY_DT_F32, 2, huge), FY_ETOOBIG);
    assert_int_equal(fy_gguf_w_tensor(w, "a", FY_DT_F32, 2, ok), 0);
    assert_int_equal(fy_gguf_w_commit(w, err, sizeof err), FY_EINVAL); /* not begun */
    snprintf(path, sizeof path, "%s/partial.gguf", g_dir);
    int before = files_in_dir();
    assert_int_equal(fy_gguf_w_begin(w, path, err, sizeof err), 0);
    float x[128] = {0};
    assert_int_equal(fy_gguf_w_tensor_data(w, x, 600, err, sizeof err), FY_EINVAL);
    assert_non_null(strstr(err, "takes 512 bytes"));
    assert_int_equal(fy_gguf_w_tensor_data(w, x, 100, err, sizeof err), 0);
    assert_int_equal(fy_gguf_w_commit(w, err, sizeof err), FY_EINVAL);
    assert_non_null(strstr(err, "tensor 'a' has 100 of its 512 bytes"));
    fy_gguf_w_free(w); /* an uncommitted file leaves nothing behind */
    assert_int_equal(files_in_dir(), before);
    /* A directory that does not exist. */
    assert_int_equal(fy_gguf_w_new(0, &w), 0);
    assert_int_equal(fy_gguf_w_begin(w, "/nonexistent-dir/x.gguf", err, sizeof err), FY_ENOENT);
    assert_non_null(strstr(err, "/nonexistent-dir/x.gguf: cannot create the file"));
    fy_gguf_w_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
