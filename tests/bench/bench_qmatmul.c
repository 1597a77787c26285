/* bench_qmatmul: the CPU backend's matmul on each weight type, against the
 * machine's read bandwidth measured in the same run.
 *
 *   build-dir/bench/bench_qmatmul [THREADS [TYPE...]]     (default: 2 threads, every type)
 *
 * Figures:
 *  - read roofline: THREADS threads reading a 1 GiB buffer (larger than any
 *    cache), each its own half as 4 concurrent streams with software
 *    prefetch and 256-bit loads, best of 10 passes;
 *  - matrix-vector (decode, T = 1) at the shapes of a Llama 110M model
 *    (hidden 768, FFN 2048, vocab 32000): GB/s of weight bytes read, cycling
 *    through enough distinct matrices that they come from memory (>= 384 MB;
 *    the best 48 MB segment, see matvec_gbs), and the % of the roofline;
 *  - GEMM (prefill, T = 512): the 12 layers' matmuls of that model (q, k, v,
 *    o 768x768; gate, up 2048x768; down 768x2048) on a 512-token batch, as
 *    tokens/s, against llama.cpp's whole-prefill figures quoted in issue 12
 *    (llama-bench -p 512 -t 2 on this machine, build of 2025-02-21), which
 *    include attention and the rest of the forward pass: a ratio above 1 is
 *    necessary for the prefill goal, not sufficient;
 *  - for the ratio between paths, the same on every narrower ISA path
 *    (FERRY_CPU_ISA's), once for F32 and Q4_0.
 * Not a test: nothing here fails on speed. */
#include "kernels/backend.h"
#include "kernels/cpu/mm.h"
#include "tests/bench/bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fy__cpu_backend_isa(fy_backend *be, int isa);

static uint32_t rng = 88172645u;

static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

/* --- Weights ------------------------------------------------------------------------------ */

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* A ROWS x COLS matrix of DT with random values (valid f16 scales). */
static fy_tensor rand_matrix(fy_dtype dt, int rows, int cols)
{
    uint64_t bytes = 0;
    fy_dtype_bytes(dt, (uint64_t)rows * (uint64_t)cols, &bytes);
    uint8_t *d = aligned_alloc(64, (size_t)(bytes + 63) / 64 * 64);
    if (!d) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (uint64_t i = 0; i < bytes; i++) {
        d[i] = (uint8_t)rnd();
    }
    uint32_t bw = fy_dtype_block_weights(dt), bb = fy_dtype_block_bytes(dt);
    uint64_t nblk = bytes / bb;
    for (uint64_t b = 0; b < nblk; b++) {
        uint8_t *p = d + b * bb;
        uint16_t s = fy_f32_to_f16((float)(rnd() % 1000 + 1) / 32768.0f);
        switch (dt) {
        case FY_DT_F32: {
            float v = (float)(int)(rnd() % 2001 - 1000) / 1000.0f;
            memcpy(p, &v, 4);
            break;
        }
        case FY_DT_F16:
            put16(p, fy_f32_to_f16((float)(int)(rnd() % 2001 - 1000) / 1000.0f));
            break;
        case FY_DT_BF16:
            put16(p, fy_f32_to_bf16((float)(int)(rnd() % 2001 - 1000) / 1000.0f));
            break;
        case FY_DT_Q6_K:
            put16(p + 208, s);
            break;
        case FY_DT_Q4_1:
        case FY_DT_Q5_1:
        case FY_DT_Q4_K:
        case FY_DT_Q5_K:
            put16(p + 2, s);
            put16(p, s);
            break;
        default:
            put16(p, s);
            break;
        }
    }
    (void)bw;
    return (fy_tensor){d, dt, rows, cols};
}

/* --- Measurements ------------------------------------------------------------------------- */

/* Decode GB/s of weight bytes over distinct ROWS x COLS matrices (>= 384 MB
 * in all, cycled so each comes from memory). Timed in segments of >= 48 MB
 * and the best segment reported: on a shared machine a worker descheduled
 * for a few ms stalls every fork-join it is part of, and a whole-pass
 * average would measure the neighbours. */
static double matvec_gbs(fy_backend *be, fy_dtype dt, int rows, int cols)
{
    uint64_t bytes = 0;
    fy_dtype_bytes(dt, (uint64_t)rows * (uint64_t)cols, &bytes);
    int n = (int)((384ull << 20) / bytes) + 1, seg = (int)((48ull << 20) / bytes) + 1;
    fy_tensor *w = malloc((size_t)n * sizeof *w);
    float *x = malloc((size_t)cols * 4), *y = malloc((size_t)rows * 4);
    for (int i = 0; i < n; i++) {
        w[i] = rand_matrix(dt, rows, cols);
    }
    for (int i = 0; i < cols; i++) {
        x[i] = (float)(int)(rnd() % 2001 - 1000) / 1000.0f;
    }
    double best = 0;
    for (int pass = 0; pass < 4; pass++) {
        for (int i0 = 0; i0 + seg <= n; i0 += seg) {
            double t0 = bench_now_s();
            for (int i = i0; i < i0 + seg; i++) {
                be->ops->matmul(be, y, x, &w[i], NULL, 1);
            }
            double gbs = (double)bytes * seg / (bench_now_s() - t0) / 1e9;
            best = pass > 0 && gbs > best ? gbs : best; /* pass 0 warms up */
        }
    }
    for (int i = 0; i < n; i++) {
        free((void *)w[i].data);
    }
    free(w);
    free(x);
    free(y);
    return best;
}

/* Tokens/s of the 12 layers' matmuls of the 110M model on a T-token batch. */
static double gemm_tps(fy_backend *be, fy_dtype dt, int T, int layers)
{
    static const int shapes[7][2] = {{768, 768},  {768, 768},  {768, 768}, {768, 768},
                                     {2048, 768}, {2048, 768}, {768, 2048}};
    fy_tensor *w = malloc((size_t)layers * 7 * sizeof *w);
    float *x = malloc((size_t)T * 2048 * 4), *y = malloc((size_t)T * 2048 * 4);
    for (int i = 0; i < layers * 7; i++) {
        w[i] = rand_matrix(dt, shapes[i % 7][0], shapes[i % 7][1]);
    }
    for (int i = 0; i < T * 2048; i++) {
        x[i] = (float)(int)(rnd() % 2001 - 1000) / 1000.0f;
    }
    double best = 0;
    for (int pass = 0; pass < 3; pass++) {
        double t0 = bench_now_s();
        for (int i = 0; i < layers * 7; i++) {
            be->ops->matmul(be, y, x, &w[i], NULL, T);
        }
        double tps = T / (bench_now_s() - t0);
        best = pass > 0 && tps > best ? tps : best;
    }
    for (int i = 0; i < layers * 7; i++) {
        free((void *)w[i].data);
    }
    free(w);
    free(x);
    free(y);
    return best;
}

/* llama.cpp's 512-token prefill on this machine (issue 12), 0 where not measured. */
static double llama_prefill(fy_dtype dt)
{
    switch (dt) {
    case FY_DT_F32:
        return 985;
    case FY_DT_Q8_0:
        return 926;
    case FY_DT_Q4_0:
        return 1392;
    case FY_DT_Q4_K:
        return 636; /* Q4_K_M: mostly Q4_K, some Q6_K */
    default:
        return 0;
    }
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    int want[FY_DT_COUNT] = {0}, any = 0;
    for (int i = 2; i < argc; i++) {
        for (int t = 0; t < FY_DT_COUNT; t++) {
            if (strcmp(argv[i], fy_dtype_name((fy_dtype)t)) == 0) {
                want[t] = any = 1;
            }
        }
    }
    char err[256];
    fy_backend *be = NULL;
    if (fy_backend_create("cpu", threads, &be, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    fy_cpu_isa isa = (fy_cpu_isa)fy__cpu_backend_isa(be, FY_ISA_COUNT);
    fy_backend_info info[2];
    fy_backend_list(info, 2);
    printf("cpu backend: %d threads; %s\n", threads, info[0].detail);
    double roof = bench_read_bandwidth((size_t)1 << 30, threads, 10, 1);
    printf(
        "read roofline (%d threads, 1 GiB, 4 streams/thread, prefetch, best of 10): %.2f GB/s\n\n",
        threads, roof / 1e9);

    static const int mv[3][2] = {{2048, 768}, {768, 2048}, {32000, 768}};
    printf("%-5s %-30s %-30s %-30s %s\n", "type", "matvec 2048x768 GB/s (roof%)", "768x2048",
           "32000x768", "GEMM T=512 tok/s (vs llama.cpp prefill)");
    for (int t = 0; t < FY_DT_COUNT; t++) {
        if (any && !want[t]) {
            continue;
        }
        printf("%-5s", fy_dtype_name((fy_dtype)t));
        fflush(stdout);
        for (int s = 0; s < 3; s++) {
            double g = matvec_gbs(be, (fy_dtype)t, mv[s][0], mv[s][1]);
            char cell[64];
            snprintf(cell, sizeof cell, "%.1f (%.0f%%)", g, 100 * g * 1e9 / roof);
            printf(" %-30s", cell);
            fflush(stdout);
        }
        double tps = gemm_tps(be, (fy_dtype)t, 512, 12), peer = llama_prefill((fy_dtype)t);
        if (peer > 0) {
            printf(" %.0f (%.2fx of %.0f)\n", tps, tps / peer, peer);
        } else {
            printf(" %.0f\n", tps);
        }
    }

    printf("\nby path, GEMM T=512 tok/s (ratio to %s):\n", fy__cpu_isa_name(isa));
    static const fy_dtype cmp[] = {FY_DT_F32, FY_DT_Q4_0};
    for (size_t i = 0; i < sizeof cmp / sizeof cmp[0]; i++) {
        if (any && !want[cmp[i]]) {
            continue;
        }
        double top = 0;
        printf("  %-5s", fy_dtype_name(cmp[i]));
        for (int p = (int)isa; p >= 0; p--) {
            if (fy__cpu_backend_isa(be, p) != p) {
                continue;
            }
            /* One layer for the narrow paths: the portable one is slow. */
            double tps = gemm_tps(be, cmp[i], 512, p == FY_ISA_PORTABLE ? 1 : 4) *
                         (p == FY_ISA_PORTABLE ? 1.0 / 12 : 4.0 / 12);
            top = p == (int)isa ? tps : top;
            printf("  %s %.0f (%.2fx)", fy__cpu_isa_name((fy_cpu_isa)p), tps, tps / top);
            fflush(stdout);
        }
        printf("\n");
        fy__cpu_backend_isa(be, isa);
    }
    fy_backend_destroy(be);
    return 0;
}
