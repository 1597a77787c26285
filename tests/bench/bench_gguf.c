/* bench_gguf: the CPU forward pass on GGUF files of each weight type, against
 * the machine's read bandwidth and, when it is given, llama.cpp's llama-bench
 * on the same files, all in one run.
 *
 *   build-dir/bench/bench_gguf [THREADS] [DIR] [TYPE]
 *   LLAMA_BENCH=/path/to/llama-bench build-dir/bench/bench_gguf 2
 *
 * Model: the Llama shape, hidden 768, 12 layers, FFN 2048, 12 heads,
 * vocab 32000, untied head (~110M parameters), random weights (normal, sd
 * 0.02), with a synthetic SentencePiece vocabulary so llama.cpp loads it too.
 * ferry writes it as F32 and BF16 GGUF files and quantizes the F32 one with
 * `ferry-runner quantize`'s code to Q8_0, Q4_0 and Q4_K_M (in DIR, a
 * temporary directory by default; files already there are reused). TYPE
 * (F32, BF16, Q8_0, Q4_0 or Q4_K_M) measures that type alone.
 *
 * Figures, per type:
 *  - prefill tokens/s of a 512-token prompt (one 512-token step, as
 *    llama-bench -p 512 does with its default batch of 512; best of 2);
 *  - single-stream decode tokens/s over 128 tokens from an empty context
 *    (llama-bench -n 128), and its share of the roofline: read bandwidth /
 *    bytes of weights read per token (every weight but the embedding table);
 *  - decode tokens/s with 4, 16 and 64 sequences per step, and the ratio to 1;
 *  - llama-bench's pp512 and tg128 on the same file, and ferry / llama.cpp.
 * The roofline is the best of bench_util.h's two read loops over 1 GiB (a
 * plain summing loop and four AVX2 streams with software prefetch), THREADS
 * threads, best of 5. */
#include "common/err.h"
#include "kernels/cpu/quant.h"
#include "runner/engine/forward.h"
#include "runner/engine/gguf_quantize.h"
#include "runner/engine/gguf_write.h"
#include "runner/engine/model.h"
#include "tests/bench/bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { HID = 768, LAYERS = 12, FFN = 2048, HEADS = 12, VOCAB = 32000, CTX = 2048 };

/* --- The model files ------------------------------------------------------------------ */

static uint32_t g_seed = 12345;

static float gauss(void)
{
    g_seed = g_seed * 1664525u + 1013904223u;
    double u1 = ((g_seed >> 8) + 1.0) / 16777217.0;
    g_seed = g_seed * 1664525u + 1013904223u;
    double u2 = (g_seed >> 8) / 16777216.0;
    return (float)(0.02 * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static int add_vocab(fy_gguf_writer *w)
{
    static char store[VOCAB][16];
    static const char *tok[VOCAB];
    static size_t len[VOCAB];
    static float score[VOCAB];
    static int32_t type[VOCAB];
    for (int i = 0; i < VOCAB; i++) {
        if (i < 3) {
            snprintf(store[i], 16, "%s", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>");
            type[i] = i == 0 ? 2 : 3;
        } else if (i < 259) {
            snprintf(store[i], 16, "<0x%02X>", i - 3);
            type[i] = 6;
        } else {
            snprintf(store[i], 16, "\xe2\x96\x81t%d", i); /* "▁t<i>" */
            type[i] = 1;
        }
        tok[i] = store[i];
        len[i] = strlen(store[i]);
        score[i] = -(float)i;
    }
    int rc = fy_gguf_w_str(w, "tokenizer.ggml.model", "llama", 5);
    rc = rc ? rc : fy_gguf_w_arr_str(w, "tokenizer.ggml.tokens", tok, len, VOCAB);
    rc = rc ? rc : fy_gguf_w_arr_f32(w, "tokenizer.ggml.scores", score, VOCAB);
    rc = rc ? rc : fy_gguf_w_arr_i32(w, "tokenizer.ggml.token_type", type, VOCAB);
    rc = rc ? rc : fy_gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 1);
    rc = rc ? rc : fy_gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 2);
    return rc ? rc : fy_gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", 0);
}

typedef struct {
    char name[64];
    uint64_t dims[2];
    int n_dims;
} tdesc;

/* Writes the model as TYPE (F32 or BF16) to PATH. */
static int write_model(const char *path, fy_dtype type)
{
    tdesc t[3 + 9 * LAYERS];
    int n = 0;
    t[n++] = (tdesc){"token_embd.weight", {HID, VOCAB}, 2};
    t[n++] = (tdesc){"output_norm.weight", {HID, 1}, 1};
    t[n++] = (tdesc){"output.weight", {HID, VOCAB}, 2};
    for (int l = 0; l < LAYERS; l++) {
        static const struct {
            const char *nm;
            uint64_t c, r;
            int nd;
        } per[] = {
            {"attn_norm", HID, 1, 1},  {"attn_q", HID, HID, 2},      {"attn_k", HID, HID, 2},
            {"attn_v", HID, HID, 2},   {"attn_output", HID, HID, 2}, {"ffn_norm", HID, 1, 1},
            {"ffn_gate", HID, FFN, 2}, {"ffn_up", HID, FFN, 2},      {"ffn_down", FFN, HID, 2},
        };
        for (size_t k = 0; k < sizeof per / sizeof per[0]; k++) {
            snprintf(t[n].name, sizeof t[n].name, "blk.%d.%s.weight", l, per[k].nm);
            t[n].dims[0] = per[k].c;
            t[n].dims[1] = per[k].r;
            t[n].n_dims = per[k].nd;
            n++;
        }
    }
    fy_gguf_writer *w;
    char err[512];
    int rc = fy_gguf_w_new(0, &w);
    rc = rc ? rc : fy_gguf_w_str(w, "general.architecture", "llama", 5);
    rc = rc ? rc : fy_gguf_w_str(w, "general.name", "bench110m", 9);
    rc = rc ? rc : fy_gguf_w_u32(w, "general.file_type", type == FY_DT_F32 ? 0 : 32);
    rc = rc ? rc : fy_gguf_w_u32(w, "llama.context_length", CTX);
    rc = rc ? rc : fy_gguf_w_u32(w, "llama.embedding_length", HID);
    rc = rc ? rc : fy_gguf_w_u32(w, "llama.block_count", LAYERS);
    rc = rc ? rc : fy_gguf_w_u32(w, "llama.feed_forward_length", FFN);
    rc = rc ? rc : fy_gguf_w_u32(w, "llama.rope.dimension_count", HID / HEADS);
    rc = rc ? rc : fy_gguf_w_u32(w, "llama.attention.head_count", HEADS);
    rc = rc ? rc : fy_gguf_w_u32(w, "llama.attention.head_count_kv", HEADS);
    rc = rc ? rc : fy_gguf_w_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    rc = rc ? rc : fy_gguf_w_f32(w, "llama.rope.freq_base", 10000.0f);
    rc = rc ? rc : add_vocab(w);
    for (int i = 0; rc == 0 && i < n; i++) {
        fy_dtype tt = t[i].n_dims == 1 ? FY_DT_F32 : type;
        rc = fy_gguf_w_tensor(w, t[i].name, tt, t[i].n_dims, t[i].dims);
    }
    if (rc || (rc = fy_gguf_w_begin(w, path, err, sizeof err)) < 0) {
        fprintf(stderr, "%s: %s\n", path, rc ? err : "");
        fy_gguf_w_free(w);
        return rc;
    }
    float *row = malloc(FFN * sizeof *row);
    uint8_t *out = malloc(FFN * 4);
    for (int i = 0; rc == 0 && i < n; i++) {
        uint64_t rows = t[i].n_dims == 1 ? 1 : t[i].dims[1];
        fy_dtype tt = t[i].n_dims == 1 ? FY_DT_F32 : type;
        for (uint64_t r = 0; rc == 0 && r < rows; r++) {
            for (uint64_t c = 0; c < t[i].dims[0]; c++) {
                row[c] = t[i].n_dims == 1 ? 1.0f : gauss();
            }
            fy_q_quantize(tt, row, out, (size_t)t[i].dims[0]);
            rc = fy_gguf_w_tensor_data(w, out, (size_t)(t[i].dims[0] * fy_dtype_size(tt)), err,
                                       sizeof err);
        }
    }
    free(row);
    free(out);
    rc = rc ? rc : fy_gguf_w_commit(w, err, sizeof err);
    if (rc) {
        fprintf(stderr, "%s: %s\n", path, err);
    }
    fy_gguf_w_free(w);
    return rc;
}

/* --- Measurements ----------------------------------------------------------------------- */

typedef struct {
    double prefill, decode, multi[3];
} figures;

static int run_steps(fy_fwd *f, fy_fwd_seq *q, int n, float *logits)
{
    if (fy_fwd_step(f, q, n, logits) < 0) {
        fprintf(stderr, "a forward step failed\n");
        exit(1);
    }
    return 0;
}

static void measure(const char *path, int threads, double bw, figures *out, double *per_tok)
{
    char err[512];
    fy_model *m = NULL;
    fy_backend *be = NULL;
    fy_fwd *f = NULL;
    if (fy_model_load(path, &m, err, sizeof err) < 0 ||
        fy_backend_create("cpu", threads, &be, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    enum { BS = 16, NSEQ = 64, BPS = 40 }; /* 640 tokens per sequence */
    fy_fwd_options o = {.block_size = BS,
                        .kv_bytes = fy_fwd_block_bytes(m, be, BS) * NSEQ * BPS,
                        .max_batch_tokens = 512,
                        .max_seqs = NSEQ};
    if (fy_fwd_create(m, be, &o, &f, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    const fy_tensor *e = &m->embed;
    *per_tok =
        (double)m->weight_bytes - (double)e->rows * (double)fy_dtype_row_bytes(e->dtype, e->cols);
    int32_t *tok = malloc(512 * sizeof *tok), *bt = malloc(NSEQ * BPS * sizeof *bt);
    float *logits = malloc((size_t)NSEQ * VOCAB * sizeof *logits);
    for (int i = 0; i < 512; i++) {
        tok[i] = 3 + (i * 131) % (VOCAB - 3);
    }
    for (int i = 0; i < NSEQ * BPS; i++) {
        bt[i] = i;
    }
    out->prefill = 0;
    for (int r = 0; r < 2; r++) {
        fy_fwd_seq q = {tok, 512, 0, bt, BPS, 1};
        double t0 = bench_now_s();
        run_steps(f, &q, 1, logits);
        double tps = 512 / (bench_now_s() - t0);
        out->prefill = tps > out->prefill ? tps : out->prefill;
    }
    /* Single stream: 128 tokens from an empty context. */
    double t0 = bench_now_s();
    for (int k = 0; k < 128; k++) {
        fy_fwd_seq q = {&tok[k], 1, k, bt, BPS, 1};
        run_steps(f, &q, 1, logits);
    }
    out->decode = 128 / (bench_now_s() - t0);
    /* N sequences at context 64..: each step decodes one token of each. */
    static const int ns[] = {4, 16, 64};
    fy_fwd_seq *qs = calloc(NSEQ, sizeof *qs);
    int32_t *st = calloc(NSEQ, sizeof *st);
    for (int k = 0; k < 3; k++) {
        int n = ns[k], steps = 16;
        for (int s = 0; s < n; s++) { /* a 64-token context each (not timed) */
            fy_fwd_seq q = {tok, 64, 0, bt + s * BPS, BPS, 1};
            run_steps(f, &q, 1, logits);
        }
        t0 = bench_now_s();
        for (int j = 0; j < steps; j++) {
            for (int s = 0; s < n; s++) {
                st[s] = tok[(s + j) % 512];
                qs[s] = (fy_fwd_seq){&st[s], 1, 64 + j, bt + s * BPS, BPS, 1};
            }
            run_steps(f, qs, n, logits);
        }
        out->multi[k] = (double)n * steps / (bench_now_s() - t0);
    }
    (void)bw;
    free(qs);
    free(st);
    free(tok);
    free(bt);
    free(logits);
    fy_fwd_destroy(f);
    fy_backend_destroy(be);
    fy_model_free(m);
}

/* llama-bench's pp512 and tg128 tokens/s on PATH (0 when unavailable). */
static void llama_bench(const char *bin, const char *path, int threads, double *pp, double *tg)
{
    *pp = *tg = 0;
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' -m '%s' -p 512 -n 128 -t %d -r 2 -o csv 2>/dev/null", bin, path,
             threads);
    FILE *p = popen(cmd, "r");
    if (!p) {
        return;
    }
    char line[8192];
    int col_ts = -1, col_p = -1, col_n = -1;
    while (fgets(line, sizeof line, p)) {
        char *fields[128];
        int nf = 0;
        for (char *s = line, *tokp; nf < 128 && (tokp = strsep(&s, ",")); nf++) {
            fields[nf] = tokp;
        }
        if (col_ts < 0) {
            for (int i = 0; i < nf; i++) {
                if (strstr(fields[i], "avg_ts")) {
                    col_ts = i;
                } else if (strcmp(fields[i], "n_prompt") == 0) {
                    col_p = i;
                } else if (strcmp(fields[i], "n_gen") == 0) {
                    col_n = i;
                }
            }
            continue;
        }
        if (col_ts >= nf || col_p >= nf || col_n >= nf || col_p < 0 || col_n < 0) {
            continue;
        }
        double ts = atof(fields[col_ts] + (fields[col_ts][0] == '"'));
        int np = atoi(fields[col_p] + (fields[col_p][0] == '"'));
        int ng = atoi(fields[col_n] + (fields[col_n][0] == '"'));
        if (np > 0 && ng == 0) {
            *pp = ts;
        } else if (ng > 0 && np == 0) {
            *tg = ts;
        }
    }
    pclose(p);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    char dir[512], path[700], err[1024];
    if (argc > 2) {
        snprintf(dir, sizeof dir, "%s", argv[2]);
        mkdir(dir, 0755);
    } else {
        snprintf(dir, sizeof dir, "/tmp/fy_bench_gguf_XXXXXX");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            return 1;
        }
    }
    static const struct {
        const char *name;
        fy_dtype write; /* written directly, or FY_DT_COUNT: quantized from F32 */
        fy_qmix mix;
    } types[] = {
        {"F32", FY_DT_F32, FY_QMIX_COUNT},       {"BF16", FY_DT_BF16, FY_QMIX_COUNT},
        {"Q8_0", FY_DT_COUNT, FY_QMIX_Q8_0},     {"Q4_0", FY_DT_COUNT, FY_QMIX_Q4_0},
        {"Q4_K_M", FY_DT_COUNT, FY_QMIX_Q4_K_M},
    };
    char f32[700];
    snprintf(f32, sizeof f32, "%s/bench-F32.gguf", dir);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        snprintf(path, sizeof path, "%s/bench-%s.gguf", dir, types[i].name);
        if (access(path, R_OK) == 0) {
            continue;
        }
        printf("writing %s ...\n", path);
        fflush(stdout);
        int rc = types[i].write != FY_DT_COUNT ? write_model(path, types[i].write)
                                               : fy_quantize_gguf(f32, path, types[i].mix, threads,
                                                                  NULL, NULL, err, sizeof err);
        if (rc) {
            fprintf(stderr, "%s: %s\n", path, types[i].write != FY_DT_COUNT ? "" : err);
            return 1;
        }
    }
    size_t bytes = (size_t)1 << 30;
    double bw_plain = bench_read_bandwidth(bytes, threads, 5, 0);
    double bw_avx = bench_read_bandwidth(bytes, threads, 5, 1);
    double bw = bw_avx > bw_plain ? bw_avx : bw_plain;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("read bandwidth, %d threads, 1 GiB, best of 5: %.2f GB/s (summing loop %.2f, four "
           "AVX2 streams with prefetch %.2f)\n",
           threads, bw / 1e9, bw_plain / 1e9, bw_avx / 1e9);
    const char *lb = getenv("LLAMA_BENCH");
    printf("%-7s %9s %9s %8s %7s %9s %9s %9s %8s %8s %7s %7s\n", "type", "MB/token", "decode",
           "roofline", "%roof", "prefill", "4 seqs", "16 seqs", "64 seqs", "64/1", "llama tg",
           "llama pp");
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        if (argc > 3 && strcmp(argv[3], types[i].name) != 0) {
            continue;
        }
        snprintf(path, sizeof path, "%s/bench-%s.gguf", dir, types[i].name);
        figures fg;
        double per_tok;
        measure(path, threads, bw, &fg, &per_tok);
        double roof = bw / per_tok, pp = 0, tg = 0;
        if (lb) {
            llama_bench(lb, path, threads, &pp, &tg);
        }
        printf("%-7s %9.1f %9.1f %8.1f %6.0f%% %9.0f %9.1f %9.1f %8.1f %7.1fx", types[i].name,
               per_tok / 1e6, fg.decode, roof, 100 * fg.decode / roof, fg.prefill, fg.multi[0],
               fg.multi[1], fg.multi[2], fg.multi[2] / fg.decode);
        if (lb) {
            printf(" %7.1f %7.0f   decode %.2fx, prefill %.2fx llama.cpp", tg, pp,
                   tg > 0 ? fg.decode / tg : 0, pp > 0 ? fg.prefill / pp : 0);
        }
        printf("\n");
        fflush(stdout);
    }
    if (!lb) {
        printf("(set LLAMA_BENCH to llama.cpp's llama-bench to measure it on the same files)\n");
    }
    if (argc <= 2) {
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
            snprintf(path, sizeof path, "%s/bench-%s.gguf", dir, types[i].name);
            unlink(path);
        }
        rmdir(dir);
    }
    return 0;
}
