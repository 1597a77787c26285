/* attn_tile.h: one tile of attn.h's tiled attention, written once in plain C
 * with fixed-width inner loops and compiled by attn.c once per instruction
 * set (ATT_TARGET, ATT_SUFFIX; ATT_F16C when F16C is in the target), so the
 * compiler turns the loops over ATT_KC keys and ATT_VW columns into vector
 * code of that width. No include guard: included once per instruction set. */

#define ATT_CAT2(a, b) a##_##b
#define ATT_CAT(a, b)  ATT_CAT2(a, b)
#define ATT_NAME(n)    ATT_CAT(n, ATT_SUFFIX)

/* 16-lane vectors (GCC's vector extension: one zmm, two ymm or four xmm). */
#define att_ld    ATT_NAME(att_ld)
#define att_st    ATT_NAME(att_st)
#define att_splat ATT_NAME(att_splat)
#define att_iota  ATT_NAME(att_iota)
#define att_sel   ATT_NAME(att_sel)
#define att_hmax  ATT_NAME(att_hmax)
#define att_hsum  ATT_NAME(att_hsum)
#define att_exp   ATT_NAME(att_exp)
#define att_dot   ATT_NAME(att_dot)
#define ATT_INL   ATT_TARGET static inline __attribute__((always_inline))

ATT_INL att_v16 att_ld(const float *p)
{
    att_v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

ATT_INL void att_st(float *p, att_v16 v)
{
    memcpy(p, &v, sizeof v);
}

ATT_INL att_v16 att_splat(float x)
{
    return (att_v16){0} + x;
}

ATT_INL att_i16 att_iota(int base)
{
    return (att_i16){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15} + base;
}

/* MASK (lanes all ones or all zeros) ? A : B, lane by lane. */
ATT_INL att_v16 att_sel(att_i16 mask, att_v16 a, att_v16 b)
{
    att_i16 ia, ib;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    ia = (ia & mask) | (ib & ~mask);
    memcpy(&a, &ia, sizeof a);
    return a;
}

/* Lanes folded in halves (16 -> 8 -> 4 -> 2 -> 1), a tree of four steps. */
#define ATT_FOLD(v, op)                                                                            \
    do {                                                                                           \
        v = op(v, __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 0, 0, 0, 0, 0, 0, \
                                          0));                                                     \
        v = op(v, __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0));  \
        v = op(v, __builtin_shufflevector(v, v, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0));  \
        v = op(v, __builtin_shufflevector(v, v, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0));  \
    } while (0)
#define ATT_ADD(a, b) ((a) + (b))
#define ATT_MAX(a, b) att_sel((a) > (b), (a), (b))

ATT_INL float att_hmax(att_v16 v)
{
    ATT_FOLD(v, ATT_MAX);
    return v[0];
}

ATT_INL float att_hsum(att_v16 v)
{
    ATT_FOLD(v, ATT_ADD);
    return v[0];
}

/* e^X lane by lane for X <= 0 (0 below -87.3, where e^X is below FLT_MIN):
 * Cody and Waite's reduction to r in [-ln2/2, ln2/2], Cephes' degree-6
 * polynomial for e^r, within 2 ulp of expf. */
ATT_INL att_v16 att_exp(att_v16 x)
{
    x = att_sel(x > -87.3365f, x, att_splat(-87.3365f));
    att_v16 n = x * 1.44269504088896341f;
    n = (n + 12582912.0f) - 12582912.0f; /* round to nearest (|n| < 2^22) */
    att_v16 r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    att_v16 p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    att_i16 e = (__builtin_convertvector(n, att_i16) + 127) << 23; /* n >= -126: normal */
    att_v16 s;
    memcpy(&s, &e, sizeof s);
    return p * s;
}

/* The cache row at element OFF as f32: the row itself for an F32 cache, else
 * converted into BUF[0..n). */
ATT_TARGET static inline const float *ATT_NAME(att_row)(float *buf, const void *cache, fy_dtype dt,
                                                        size_t off, int n)
{
    if (dt == FY_DT_F32) {
        return (const float *)cache + off;
    }
    const uint16_t *s = (const uint16_t *)cache + off;
    int i = 0;
    if (dt == FY_DT_BF16) {
        uint32_t *u = (uint32_t *)(void *)buf;
        for (; i < n; i++) {
            u[i] = (uint32_t)s[i] << 16;
        }
        return buf;
    }
#ifdef ATT_F16C
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(buf + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
    }
#endif
    for (; i < n; i++) {
        buf[i] = fy_f16_to_f32(s[i]);
    }
    return buf;
}

/* Q . K over N floats. */
ATT_INL float att_dot(const float *q, const float *k, int n)
{
    att_v16 v = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        v += att_ld(q + i) * att_ld(k + i);
    }
    float d = att_hsum(v);
    for (; i < n; i++) {
        d += q[i] * k[i];
    }
    return d;
}

/* The tile: query heads [h0, h1) (all under KV head G) of the tokens [t0, t1)
 * of sequence S. SCRATCH holds (ATT_ROWS + 3 * ATT_KC) * head_dim floats. */
ATT_TARGET static void ATT_NAME(att_tile)(const att_job *j, int s, int g, int t0, int t1, int h0,
                                          int h1, float *scratch)
{
    const fy_attn_shape *sh = j->sh;
    const fy_attn_batch *b = j->b;
    const int hd = sh->head_dim, bs = sh->block_size, nkv = sh->n_kv_heads;
    const int nh = h1 - h0, rows = (t1 - t0) * nh;
    const float scale = sh->scale;
    const int32_t *bt = b->block_tables + (size_t)s * (size_t)b->max_blocks;
    float *acc = scratch, *kt = acc + (size_t)ATT_ROWS * hd, *kb = kt + (size_t)hd * ATT_KC;
    float *vb = kb + (size_t)ATT_KC * hd;
    const float *kp[ATT_KC], *vp[ATT_KC];
    float m[ATT_ROWS], l[ATT_ROWS];
    int lim[ATT_ROWS], maxlim = 0;
    const float *qr[ATT_ROWS];
    for (int r = 0; r < rows; r++) {
        int t = t0 + r / nh, h = h0 + r % nh, n = b->positions[t] + 1;
        lim[r] = n < b->host_ctx_len[s] ? n : b->host_ctx_len[s];
        maxlim = lim[r] > maxlim ? lim[r] : maxlim;
        qr[r] = j->q + ((size_t)t * (size_t)sh->n_heads + (size_t)h) * (size_t)hd;
        m[r] = -INFINITY;
        l[r] = 0.0f;
        memset(acc + (size_t)r * hd, 0, (size_t)hd * sizeof *acc);
    }
    for (int c0 = 0; c0 < maxlim; c0 += ATT_KC) {
        const int nk = maxlim - c0 < ATT_KC ? maxlim - c0 : ATT_KC;
        /* The chunk's rows (converted to f32 when the cache is not), and
         * for tiles of four rows or more the keys transposed, kt[d][key]. */
        for (int k = 0; k < nk; k++) {
            int p = c0 + k;
            size_t off =
                (((size_t)bt[p / bs] * (size_t)nkv + (size_t)g) * (size_t)bs + (size_t)(p % bs)) *
                (size_t)hd;
            kp[k] = ATT_NAME(att_row)(kb + (size_t)k * hd, j->kc, sh->kv_dtype, off, hd);
            vp[k] = ATT_NAME(att_row)(vb + (size_t)k * hd, j->vc, sh->kv_dtype, off, hd);
        }
        if (rows >= 4) {
            for (int k = 0; k < ATT_KC; k++) {
                for (int d = 0; d < hd; d++) {
                    kt[(size_t)d * ATT_KC + k] = k < nk ? kp[k][d] : 0.0f;
                }
            }
        }
        /* Four rows at a time: their scores share each load of kt and give
         * eight independent FMA chains. */
        for (int r0 = 0; r0 < rows; r0 += 4) {
            float p[4][ATT_KC], f[4];
            int nv[4];
            const float *q4[4];
            for (int i = 0; i < 4; i++) {
                int r = r0 + i < rows ? r0 + i : rows - 1;
                nv[i] = r0 + i < rows ? lim[r] - c0 : 0;
                nv[i] = nv[i] < 0 ? 0 : nv[i] > nk ? nk : nv[i];
                q4[i] = qr[r];
            }
            if (nv[0] + nv[1] + nv[2] + nv[3] == 0) {
                continue; /* none of the four sees the chunk */
            }
            att_v16 sc[4][2] = {{{0}}};
            if (rows >= 4) {
                for (int d = 0; d < hd; d++) {
                    const att_v16 k0 = att_ld(kt + (size_t)d * ATT_KC),
                                  k1 = att_ld(kt + (size_t)d * ATT_KC + 16);
                    for (int i = 0; i < 4; i++) {
                        sc[i][0] += q4[i][d] * k0;
                        sc[i][1] += q4[i][d] * k1;
                    }
                }
            } else { /* a decode's few rows: dots straight on the rows */
                for (int i = 0; i < rows; i++) {
                    float d[ATT_KC] = {0};
                    for (int k = 0; k < nv[i]; k++) {
                        d[k] = att_dot(q4[i], kp[k], hd);
                    }
                    sc[i][0] = att_ld(d);
                    sc[i][1] = att_ld(d + 16);
                }
            }
            for (int i = 0; i < 4; i++) {
                if (nv[i] == 0) { /* the row's accumulator stays as it is */
                    f[i] = 1.0f;
                    memset(p[i], 0, sizeof p[i]);
                    continue;
                }
                int r = r0 + i;
                att_i16 ok0 = att_iota(0) < nv[i], ok1 = att_iota(16) < nv[i];
                att_v16 s0 = att_sel(ok0, sc[i][0] * scale, att_splat(-INFINITY));
                att_v16 s1 = att_sel(ok1, sc[i][1] * scale, att_splat(-INFINITY));
                const float mx = att_hmax(att_sel(s0 > s1, s0, s1));
                const float mn = m[r] > mx ? m[r] : mx;
                f[i] = m[r] == -INFINITY ? 0.0f : expf(m[r] - mn);
                s0 = att_sel(ok0, att_exp(s0 - mn), att_splat(0.0f));
                s1 = att_sel(ok1, att_exp(s1 - mn), att_splat(0.0f));
                l[r] = l[r] * f[i] + att_hsum(s0 + s1);
                m[r] = mn;
                memcpy(p[i], &s0, sizeof s0);
                memcpy(p[i] + 16, &s1, sizeof s1);
            }
            /* acc = acc * f + p . V, two rows and 64 columns at a time in
             * registers (p is 0 past a row's keys, so a pair runs to the
             * longer of the two). */
            for (int i = 0; i < 4 && r0 + i < rows; i += 2) {
                const int two = r0 + i + 1 < rows, n = nv[i] > nv[i + 1] ? nv[i] : nv[i + 1];
                float *a = acc + (size_t)(r0 + i) * hd, *ar = two ? a + hd : a;
                const float *pa = p[i], *pb = p[i + 1];
                const float fa = f[i], fb = two ? f[i + 1] : f[i];
                int i0 = 0;
                for (; i0 + 64 <= hd; i0 += 64) {
                    att_v16 a0 = att_ld(a + i0) * fa, a1 = att_ld(a + i0 + 16) * fa;
                    att_v16 a2 = att_ld(a + i0 + 32) * fa, a3 = att_ld(a + i0 + 48) * fa;
                    att_v16 b0 = att_ld(ar + i0) * fb, b1 = att_ld(ar + i0 + 16) * fb;
                    att_v16 b2 = att_ld(ar + i0 + 32) * fb, b3 = att_ld(ar + i0 + 48) * fb;
                    for (int k = 0; k < n; k++) {
                        const float *vr = vp[k] + i0;
                        const att_v16 v0 = att_ld(vr), v1 = att_ld(vr + 16), v2 = att_ld(vr + 32),
                                      v3 = att_ld(vr + 48);
                        a0 += pa[k] * v0;
                        a1 += pa[k] * v1;
                        a2 += pa[k] * v2;
                        a3 += pa[k] * v3;
                        b0 += pb[k] * v0;
                        b1 += pb[k] * v1;
                        b2 += pb[k] * v2;
                        b3 += pb[k] * v3;
                    }
                    if (two) {
                        att_st(ar + i0, b0);
                        att_st(ar + i0 + 16, b1);
                        att_st(ar + i0 + 32, b2);
                        att_st(ar + i0 + 48, b3);
                    }
                    att_st(a + i0, a0);
                    att_st(a + i0 + 16, a1);
                    att_st(a + i0 + 32, a2);
                    att_st(a + i0 + 48, a3);
                }
                for (; i0 + 16 <= hd; i0 += 16) {
                    att_v16 a0 = att_ld(a + i0) * fa, b0 = att_ld(ar + i0) * fb;
                    for (int k = 0; k < n; k++) {
                        const att_v16 v0 = att_ld(vp[k] + i0);
                        a0 += pa[k] * v0;
                        b0 += pb[k] * v0;
                    }
                    if (two) {
                        att_st(ar + i0, b0);
                    }
                    att_st(a + i0, a0);
                }
                for (int c = i0; c < hd; c++) {
                    float va = a[c] * fa, vbb = ar[c] * fb;
                    for (int k = 0; k < n; k++) {
                        va += pa[k] * vp[k][c];
                        vbb += pb[k] * vp[k][c];
                    }
                    if (two) {
                        ar[c] = vbb;
                    }
                    a[c] = va;
                }
            }
        }
    }
    for (int r = 0; r < rows; r++) {
        int t = t0 + r / nh, h = h0 + r % nh;
        float *o = j->out + ((size_t)t * (size_t)sh->n_heads + (size_t)h) * (size_t)hd;
        const float *a = acc + (size_t)r * hd;
        float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
        for (int i = 0; i < hd; i++) {
            o[i] = a[i] * inv;
        }
    }
}

#undef att_ld
#undef att_st
#undef att_splat
#undef att_iota
#undef att_sel
#undef att_hmax
#undef att_hsum
#undef att_exp
#undef att_dot
#undef ATT_INL
#undef ATT_FOLD
#undef ATT_ADD
#undef ATT_MAX
#undef ATT_NAME
#undef ATT_CAT
#undef ATT_CAT2
