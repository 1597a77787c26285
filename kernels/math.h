/* math.h: the per-element math both backends share.
 *
 * Compiled by the C compiler for the CPU backend (static inline) and by nvcc
 * for the CUDA kernels (__host__ __device__), so RoPE angles, RMSNorm
 * scaling, the online-softmax rescaling used across attention partitions and
 * the sampling transforms are written once and tested on the CPU path. */
#ifndef FY_KERNELS_MATH_H
#define FY_KERNELS_MATH_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define FY_HD __host__ __device__ __forceinline__
#else
#define FY_HD static inline
#endif

/* SiLU: x * sigmoid(x). */
FY_HD float fy_silu(float x)
{
    return x / (1.0f + expf(-x));
}

/* RMSNorm's multiplier for a row whose squares sum to SUMSQ over N elements. */
FY_HD float fy_rms_scale(float sumsq, int n, float eps)
{
    return 1.0f / sqrtf(sumsq / (float)n + eps);
}

/* RoPE: the pair (x0, x1) (see fy_rope_first) of frequency I at
 * angle POS * INV_FREQ is rotated in place. The angle is computed in double
 * so long positions keep their precision on both backends. fy_rope_cos_sin
 * gives the angle's cosine and sine. */
FY_HD void fy_rope_cos_sin(int pos, float inv_freq, float *c, float *s)
{
    double a = (double)pos * (double)inv_freq;
    *c = (float)cos(a);
    *s = (float)sin(a);
}

/* Rotates (x0, x1) by the angle whose cosine and sine are C and S (one
 * fy_rope_cos_sin() serves every head of a token). */
FY_HD void fy_rope_rotate(float *x0, float *x1, float c, float s)
{
    float a0 = *x0, a1 = *x1;
    *x0 = a0 * c - a1 * s;
    *x1 = a1 * c + a0 * s;
}

/* The elements of rotated pair I (of HALF = head_dim/2) in a head, for
 * backend.h's FY_ROPE_PAIRS_* layouts: (i, i + half), or (2i, 2i + 1). */
FY_HD int fy_rope_first(int i, int half, int pairs)
{
    (void)half;
    return pairs ? 2 * i : i;
}

FY_HD int fy_rope_second(int i, int half, int pairs)
{
    return pairs ? 2 * i + 1 : i + half;
}

/* Both steps for one pair. */
FY_HD void fy_rope_pair(float *x0, float *x1, int pos, float inv_freq)
{
    float c, s;
    fy_rope_cos_sin(pos, inv_freq, &c, &s);
    fy_rope_rotate(x0, x1, c, s);
}

/* Online softmax state for one query row: running max M, running sum of
 * exp(score - M) L. Scores arrive one at a time or as whole partitions. */
typedef struct {
    float m, l;
} fy_softmax_state;

FY_HD fy_softmax_state fy_softmax_init(void)
{
    fy_softmax_state s = {-INFINITY, 0.0f};
    return s;
}

/* Adds SCORE; returns the factor by which the accumulated output (weighted
 * values so far) must be multiplied, and writes the new score's weight to *W. */
FY_HD float fy_softmax_push(fy_softmax_state *s, float score, float *w)
{
    float m = s->m > score ? s->m : score;
    float scale = s->m == -INFINITY ? 0.0f : expf(s->m - m);
    *w = expf(score - m);
    s->l = s->l * scale + *w;
    s->m = m;
    return scale;
}

/* Merges partition state B into A (the reduce of a partitioned attention):
 * returns the factors for A's and B's accumulated outputs. */
FY_HD void fy_softmax_merge(fy_softmax_state *a, fy_softmax_state b, float *fa, float *fb)
{
    float m = a->m > b.m ? a->m : b.m;
    *fa = a->m == -INFINITY ? 0.0f : expf(a->m - m);
    *fb = b.m == -INFINITY ? 0.0f : expf(b.m - m);
    a->l = a->l * *fa + b.l * *fb;
    a->m = m;
}

/* Sampling transforms on one logit. */
FY_HD float fy_logit_temperature(float logit, float inv_temperature)
{
    return logit * inv_temperature;
}

/* Repetition penalty (CTRL / HF): a seen token's positive logit is divided by
 * PENALTY, a negative one multiplied. */
FY_HD float fy_logit_repetition(float logit, float penalty)
{
    return logit > 0.0f ? logit / penalty : logit * penalty;
}

/* OpenAI presence and frequency penalties for a token seen COUNT times. */
FY_HD float fy_logit_presence_frequency(float logit, int count, float presence, float frequency)
{
    return count > 0 ? logit - presence - frequency * (float)count : logit;
}

#endif
