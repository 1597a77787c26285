// test_quant_host.cu: the CUDA kernels' dequantizer (kernels/cuda/quant.cuh,
// fy_q_dequant8) run on the host against the CPU reference fy_q_dequant, bit
// for bit, for every block type, on blocks of random bytes with random finite
// f16 scales (every quant, scale and min pattern the layouts allow), and on
// blocks fy_q_quantize wrote; and the decode kernel's staging copy
// (fy_q_stage) at every alignment. The sizes quant.cuh repeats must equal
// kernels/backend.c's. Needs no GPU: it checks the arithmetic the matmul and
// embedding kernels share wherever the module builds.
extern "C" {
#include "kernels/backend.h"
#include "kernels/cpu/quant.h"
}
#include "kernels/cuda/quant.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static float frand(void) // [-1, 1)
{
    return (float)(rnd() % 2000001) / 1000000.0f - 1.0f;
}

static void put_half(uint8_t *p, float v)
{
    uint16_t h = fy_f32_to_f16(v);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

// Offsets of the f16 fields (scale, and min where there is one) of each type.
static void sane_scales(fy_dtype dt, uint8_t *b)
{
    if (dt == FY_DT_Q6_K) {
        put_half(b + 208, 0.05f * frand());
        return;
    }
    put_half(b, 0.05f * frand());
    if (dt == FY_DT_Q4_1 || dt == FY_DT_Q5_1 || dt == FY_DT_Q4_K || dt == FY_DT_Q5_K) {
        put_half(b + 2, 0.05f * frand());
    }
}

template <int DT> static int check_blocks(const uint8_t *blocks, int nb, const char *what)
{
    constexpr int BW = fy_cu_block_weights(DT), BB = fy_cu_block_bytes(DT);
    float want[256];
    int bad = 0;
    for (int i = 0; i < nb && !bad; i++) {
        const uint8_t *b = blocks + (size_t)i * BB;
        if (fy_q_dequant((fy_dtype)DT, b, want, BW) != 0) {
            printf("FAIL %s: fy_q_dequant refused a block\n", fy_dtype_name((fy_dtype)DT));
            return 1;
        }
        for (int j = 0; j < BW && !bad; j += 8) {
            fy_w8 got = fy_q_dequant8<DT>(b, j);
            if (memcmp(got.v, want + j, sizeof got.v) != 0) {
                for (int k = 0; k < 8; k++) {
                    if (memcmp(&got.v[k], &want[j + k], sizeof(float)) != 0) {
                        printf("FAIL %s %s: block %d weight %d is %.9g, fy_q_dequant has %.9g\n",
                               fy_dtype_name((fy_dtype)DT), what, i, j + k, got.v[k], want[j + k]);
                        break;
                    }
                }
                bad = 1;
            }
        }
    }
    if (!bad) {
        printf("ok   %s %s: %d blocks, every weight bit for bit\n", fy_dtype_name((fy_dtype)DT),
               what, nb);
    }
    return bad;
}

template <int DT> static int check_type(void)
{
    constexpr int BW = fy_cu_block_weights(DT), BB = fy_cu_block_bytes(DT);
    if ((uint32_t)BW != fy_dtype_block_weights((fy_dtype)DT) ||
        (uint32_t)BB != fy_dtype_block_bytes((fy_dtype)DT) ||
        strcmp(fy_cu_dtype_name(DT), fy_dtype_name((fy_dtype)DT)) != 0 ||
        fy_cu_row_bytes(DT, 4 * BW) != fy_dtype_row_bytes((fy_dtype)DT, 4 * BW)) {
        printf("FAIL %s: quant.cuh's sizes or name differ from kernels/backend.c's\n",
               fy_dtype_name((fy_dtype)DT));
        return 1;
    }
    enum { NB = 512 };
    static uint8_t blocks[NB * 210];
    for (int i = 0; i < NB * BB; i++) {
        blocks[i] = (uint8_t)rnd();
    }
    for (int i = 0; i < NB; i++) {
        sane_scales((fy_dtype)DT, blocks + (size_t)i * BB);
    }
    int bad = check_blocks<DT>(blocks, NB, "random bytes");
    static float w[NB / 8 * 256];
    const int n = NB / 8 * 256 / BW * BW;
    for (int i = 0; i < n; i++) {
        w[i] = frand() * (0.02f + 0.1f * (float)(i / 32 % 7)) + 0.03f * (float)(i / 32 % 3 - 1);
    }
    if (fy_q_quantize((fy_dtype)DT, w, blocks, (size_t)n) != 0) {
        printf("FAIL %s: fy_q_quantize\n", fy_dtype_name((fy_dtype)DT));
        return 1;
    }
    return bad | check_blocks<DT>(blocks, n / BW, "quantized");
}

// fy_q_stage as a warp of 32 lanes runs it (each lane's 16-byte units are
// its own), for every offset in 16 bytes and sizes around the unit: the
// bytes land at the offset it returns, and nothing else of the stage is
// written, so nothing outside the source run was copied.
static int check_stage(void)
{
    static const int sizes[] = {1, 15, 16, 17, 18, 20, 22, 24, 34, 144, 176, 210, 16 * 34, 2 * 210};
    alignas(16) static uint8_t src[16 * 40], st[16 * 40];
    for (size_t i = 0; i < sizeof src; i++) {
        src[i] = (uint8_t)rnd();
    }
    for (int off = 0; off < 16; off++) {
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            const int n = sizes[si];
            memset(st, 0xa5, sizeof st);
            int got = 0;
            for (int lane = 0; lane < 32; lane++) {
                got = fy_q_stage(st, src + 16 + off, n, lane, 32);
            }
            int ok = got == off && memcmp(st + off, src + 16 + off, (size_t)n) == 0;
            for (size_t i = 0; ok && i < sizeof st; i++) {
                ok = ((int)i >= off && (int)i < off + n) || st[i] == 0xa5;
            }
            if (!ok) {
                printf("FAIL fy_q_stage: %d bytes at offset %d (returned %d)\n", n, off, got);
                return 1;
            }
        }
    }
    printf("ok   fy_q_stage: every offset in 16 bytes, %zu sizes\n",
           sizeof sizes / sizeof sizes[0]);
    return 0;
}

int main(void)
{
    int bad = check_stage();
    bad |= check_type<FY_DT_Q8_0>();
    bad |= check_type<FY_DT_Q4_0>();
    bad |= check_type<FY_DT_Q4_1>();
    bad |= check_type<FY_DT_Q5_0>();
    bad |= check_type<FY_DT_Q5_1>();
    bad |= check_type<FY_DT_Q4_K>();
    bad |= check_type<FY_DT_Q5_K>();
    bad |= check_type<FY_DT_Q6_K>();
    // The plain types are not block types to the kernels' dispatch.
    if (fy_cu_is_block(FY_DT_F32) || fy_cu_is_block(FY_DT_F16) || fy_cu_is_block(FY_DT_BF16) ||
        !fy_cu_is_block(FY_DT_Q6_K)) {
        printf("FAIL: fy_cu_is_block\n");
        bad = 1;
    }
    return bad;
}
