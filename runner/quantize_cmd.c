/* quantize_cmd.c: `ferry-runner quantize IN OUT.gguf --type MIX`. */
#include "common/args.h"
#include "common/err.h"
#include "runner/engine/gguf_quantize.h"
#include "runner/runner.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    int tty;
    size_t n_fallback;
    char fallback[4096];
} qprog;

static void on_step(void *data, const fy_quantize_step *s)
{
    qprog *p = data;
    if (!s->name) {
        if (p->tty) {
            fprintf(stderr, "\r\033[K");
        }
        fprintf(stderr, "[%zu/%zu] done\n", s->total, s->total);
        return;
    }
    fprintf(stderr, "%s[%zu/%zu] %-28s %-4s -> %-4s%s%s", p->tty ? "\r\033[K" : "", s->index + 1,
            s->total, s->name, fy_dtype_name(s->from), fy_dtype_name(s->to),
            s->fallback ? " (rows do not fit the mix's type)" : "", p->tty ? "" : "\n");
    if (s->fallback) {
        size_t n = strlen(p->fallback);
        snprintf(p->fallback + n, sizeof p->fallback - n, "  %s: %s\n", s->name,
                 fy_dtype_name(s->to));
        p->n_fallback++;
    }
}

int fy_rn_quantize_main(int argc, char **argv)
{
    const char *type = NULL;
    long long threads = 0;
    int help = 0;
    char names[160];
    snprintf(names, sizeof names, "%s", fy_qmix_names());
    const fy_opt opts[] = {
        {"type", FY_OPT_STR, &type, names, "the quantization mix (required)"},
        {"threads", FY_OPT_INT, &threads, "N", "threads that quantize (default: one per core)"},
        {"help", FY_OPT_FLAG, &help, NULL, "show this help"},
        {0},
    };
    char err[1024], help_text[3072];
    char *pos[argc > 0 ? argc : 1];
    int npos = 0;
    snprintf(help_text, sizeof help_text,
             "Usage: ferry-runner quantize IN OUT.gguf --type %s\n\n"
             "Writes the model IN as OUT.gguf with its weights quantized, so ferry,\n"
             "llama.cpp and Ollama can load it. IN is a .gguf file (its metadata:\n"
             "architecture, tokenizer, chat template, is kept) or a Hugging Face\n"
             "directory (Llama, Mistral or Qwen2: config.json, safetensors,\n"
             "tokenizer.json), converted as llama.cpp's convert_hf_to_gguf.py does.\n"
             "The mixes choose tensor types as llama.cpp's llama-quantize does:\n"
             "  f16     every matrix F16\n"
             "  q8_0    every matrix Q8_0 (8.5 bits per weight)\n"
             "  q4_0    Q4_0 (4.5 bits), the output head Q6_K\n"
             "  q4_k_m  Q4_K (4.5 bits); Q6_K for the output head and for attn_v and\n"
             "          ffn_down in the first and last eighth of the layers and every\n"
             "          third one between\n"
             "  q5_k_m  the same with Q5_K (5.5 bits)\n"
             "  q6_k    every matrix Q6_K (6.6 bits)\n"
             "Norms stay F32. A matrix whose rows do not divide into the type's blocks\n"
             "(256 weights for the K types, 32 for the others) keeps a wider type and\n"
             "is listed at the end. Quantizing an already quantized file works, but\n"
             "each pass loses precision: start from F32, F16 or BF16 when you can.\n"
             "See what a mix costs with 'ferry-runner perplexity'.\n\n"
             "Options:\n",
             fy_qmix_names());
    int rc =
        fy_args_command(opts, argc, argv, pos, &npos, "ferry-runner quantize", &help, help_text);
    if (rc >= 0) {
        return rc;
    }
    fy_qmix mix;
    if (npos != 2 || !type) {
        fprintf(stderr, "ferry-runner quantize: give IN, OUT.gguf and --type %s\n",
                fy_qmix_names());
        return 2;
    }
    if (fy_qmix_parse(type, &mix)) {
        fprintf(stderr, "ferry-runner quantize: --type '%s' is not one of %s\n", type,
                fy_qmix_names());
        return 2;
    }
    struct stat st;
    if (threads < 0 || threads > 64) {
        fprintf(stderr, "ferry-runner quantize: --threads takes 0..64\n");
        return 2;
    }
    qprog p = {.tty = isatty(2)};
    rc = fy_quantize_gguf(pos[0], pos[1], mix, (int)threads, on_step, &p, err, sizeof err);
    if (rc) {
        if (p.tty) {
            fprintf(stderr, "\n");
        }
        fprintf(stderr, "ferry-runner quantize: %s\n", err);
        return rc == FY_ENOMEM ? 1 : 2;
    }
    if (stat(pos[1], &st) == 0) {
        printf("wrote %s (%s, %.1f MiB)\n", pos[1], fy_qmix_name(mix),
               (double)st.st_size / (1024.0 * 1024.0));
    }
    if (p.n_fallback) {
        printf("%zu tensor%s kept a wider type (rows not a whole number of blocks):\n%s",
               p.n_fallback, p.n_fallback == 1 ? "" : "s", p.fallback);
    }
    return 0;
}
