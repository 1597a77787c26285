#include "backend.h"

#include "common/err.h"

#include <math.h>
#include <stdlib.h>

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

void fy__cpu_probe(fy_backend_info *info);

int fy_backend_list(fy_backend_info *out, int max)
{
    int n = 0;
    if (n < max) {
        fy__cpu_probe(&out[n++]);
    }
#ifdef FY_HAVE_CUDA
    if (n < max) {
        /* Not probed: that would load the CUDA libraries (see backend.h). */
        fy_backend_info *c = &out[n++];
        char path[512];
        fy_cuda_module_path(path, sizeof path);
        memset(c, 0, sizeof *c);
        c->name = "cuda";
        c->compiled = 1;
        /* A bare name is for the dynamic linker's search path: not checked. */
        int missing = strchr(path, '/') && access(path, R_OK) != 0;
        snprintf(c->detail, sizeof c->detail, "compiled, not probed (module %.120s%s)", path,
                 missing ? ": missing" : "");
    }
#else
    if (n < max) {
        fy_backend_info *c = &out[n++];
        memset(c, 0, sizeof *c);
        c->name = "cuda";
        snprintf(c->detail, sizeof c->detail, "not compiled (configure with nvcc on PATH)");
    }
#endif
    return n;
}

/* --- dtypes --------------------------------------------------------------------- */

static const struct {
    const char *name;
    uint32_t block, bytes;
} dtypes[FY_DT_COUNT] = {
    [FY_DT_F32] = {"F32", 1, 4},       [FY_DT_F16] = {"F16", 1, 2},
    [FY_DT_BF16] = {"BF16", 1, 2},     [FY_DT_Q8_0] = {"Q8_0", 32, 34},
    [FY_DT_Q4_0] = {"Q4_0", 32, 18},   [FY_DT_Q4_1] = {"Q4_1", 32, 20},
    [FY_DT_Q5_0] = {"Q5_0", 32, 22},   [FY_DT_Q5_1] = {"Q5_1", 32, 24},
    [FY_DT_Q4_K] = {"Q4_K", 256, 144}, [FY_DT_Q5_K] = {"Q5_K", 256, 176},
    [FY_DT_Q6_K] = {"Q6_K", 256, 210},
};

size_t fy_dtype_size(fy_dtype dt)
{
    return (unsigned)dt < FY_DT_COUNT && dtypes[dt].block == 1 ? dtypes[dt].bytes : 0;
}

const char *fy_dtype_name(fy_dtype dt)
{
    return (unsigned)dt < FY_DT_COUNT ? dtypes[dt].name : "?";
}

int fy_dtype_is_block(fy_dtype dt)
{
    return (unsigned)dt < FY_DT_COUNT && dtypes[dt].block > 1;
}

uint32_t fy_dtype_block_weights(fy_dtype dt)
{
    return (unsigned)dt < FY_DT_COUNT ? dtypes[dt].block : 0;
}

uint32_t fy_dtype_block_bytes(fy_dtype dt)
{
    return (unsigned)dt < FY_DT_COUNT ? dtypes[dt].bytes : 0;
}

size_t fy_dtype_row_bytes(fy_dtype dt, int64_t cols)
{
    uint32_t bw = fy_dtype_block_weights(dt);
    return bw ? (size_t)cols / bw * fy_dtype_block_bytes(dt) : 0;
}

int fy_dtype_bytes(fy_dtype dt, uint64_t n, uint64_t *bytes)
{
    if ((unsigned)dt >= FY_DT_COUNT || n % dtypes[dt].block) {
        return FY_EINVAL;
    }
    uint64_t blocks = n / dtypes[dt].block;
    if (blocks > UINT64_MAX / dtypes[dt].bytes) {
        return FY_ETOOBIG;
    }
    *bytes = blocks * dtypes[dt].bytes;
    return 0;
}

static float bits_to_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f32_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

float fy_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) { /* inf / nan */
        return bits_to_f32(sign | 0x7f800000u | (man << 13));
    }
    if (exp == 0) { /* zero / subnormal: man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t fy_f32_to_f16(float f)
{
    uint32_t u = f32_to_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) { /* inf / nan (keep a quiet nan) */
        return sign | 0x7c00 | (a > 0x7f800000u ? 0x200 : 0);
    }
    if (a >= 0x477ff000u) { /* rounds to >= 65520: overflow to inf */
        return sign | 0x7c00;
    }
    if (a < 0x38800000u) { /* below the smallest normal (2^-14): subnormal or zero */
        float v = bits_to_f32(a) * 16777216.0f; /* in units of 2^-24; exact */
        /* Round to nearest even via the FPU's default rounding of float->int. */
        float r = nearbyintf(v);
        return sign | (uint16_t)r;
    }
    /* Normal: rebias, round the 13 dropped bits to nearest even. */
    uint32_t m = a - 0x38000000u; /* exponent rebased from 127 to 15 */
    uint32_t r = (m + 0x0fffu + ((m >> 13) & 1)) >> 13;
    return sign | (uint16_t)r;
}

float fy_bf16_to_f32(uint16_t h)
{
    return bits_to_f32((uint32_t)h << 16);
}

uint16_t fy_f32_to_bf16(float f)
{
    uint32_t u = f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) { /* nan stays a quiet nan */
        return (uint16_t)((u >> 16) | 0x40);
    }
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* --- Creating a backend by device name ------------------------------------------ */

int fy_backend_create(const char *device, int threads, fy_backend **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!device || strcmp(device, "cpu") == 0) {
        return fy_cpu_backend_create(threads, out, err, errlen);
    }
    if (strncmp(device, "cuda", 4) == 0 && (device[4] == 0 || device[4] == ':')) {
        long dev = 0;
        if (device[4] == ':') {
            char *end = NULL;
            dev = strtol(device + 5, &end, 10);
            if (end == device + 5 || *end || dev < 0 || dev > 255) {
                snprintf(err, errlen, "device '%s': expected cuda or cuda:N", device);
                return FY_EINVAL;
            }
        }
#ifdef FY_HAVE_CUDA
        return fy_cuda_backend_create((int)dev, out, err, errlen);
#else
        snprintf(err, errlen,
                 "device '%s': this build has no CUDA backend (configure with nvcc "
                 "on PATH)",
                 device);
        return FY_ENOTSUP;
#endif
    }
    snprintf(err, errlen, "device '%s' is unknown (cpu, cuda or cuda:N)", device);
    return FY_EINVAL;
}

void fy_backend_destroy(fy_backend *be)
{
    if (be) {
        be->ops->destroy(be);
    }
}

int fy_kv_dtype_parse(const char *name, const fy_backend_ops *ops, fy_dtype *out, char *err,
                      size_t errlen)
{
    static const struct {
        const char *name;
        fy_dtype dt;
    } kv[] = {{"f32", FY_DT_F32}, {"f16", FY_DT_F16}, {"bf16", FY_DT_BF16}};
    fy_dtype dt = ops ? ops->kv_dtype : FY_DT_F32;
    if (name && strcasecmp(name, "auto") != 0) {
        size_t i = 0;
        while (i < sizeof kv / sizeof kv[0] && strcasecmp(name, kv[i].name) != 0) {
            i++;
        }
        if (i == sizeof kv / sizeof kv[0]) {
            return fy_fail(err, errlen, FY_EINVAL,
                           "--kv-cache-dtype '%s' is unknown (auto, f32, f16 or bf16)", name);
        }
        dt = kv[i].dt;
    }
    if (ops && !(ops->kv_dtypes & (1u << dt))) {
        return fy_fail(err, errlen, FY_ENOTSUP,
                       "--kv-cache-dtype %s: the %s backend has no kernels for a %s KV cache", name,
                       ops->name, fy_dtype_name(dt));
    }
    *out = dt;
    return 0;
}
