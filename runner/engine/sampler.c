/* sampler.c: penalties, truncation and the seeded draw. */
#include "runner/engine/sampler.h"

#include "common/err.h"
#include "kernels/math.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Tokens further than this below the maximum logit are dropped before the
 * top-p sort (see sampler.h). */
#define FY_SAMPLER_TOP_P_WINDOW 30.0f

typedef struct {
    float v;
    int32_t id;
} cand;

struct fy_sampler {
    int vocab;
    int32_t *count; /* [vocab] occurrences in the generated tokens (zero between calls) */
    uint8_t *seen;  /* [vocab] 1: in prompt or generated (zero between calls) */
    float *raw;     /* [vocab] the logits before any transform (logprobs) */
    cand *c;        /* [vocab] candidates */
};

int fy_sampler_new(int vocab, fy_sampler **out)
{
    *out = NULL;
    if (vocab < 1) {
        return FY_EINVAL;
    }
    fy_sampler *sm = calloc(1, sizeof *sm);
    if (!sm) {
        return FY_ENOMEM;
    }
    sm->vocab = vocab;
    sm->count = calloc((size_t)vocab, sizeof *sm->count);
    sm->seen = calloc((size_t)vocab, 1);
    sm->raw = malloc((size_t)vocab * sizeof *sm->raw);
    sm->c = malloc((size_t)vocab * sizeof *sm->c);
    if (!sm->count || !sm->seen || !sm->raw || !sm->c) {
        fy_sampler_free(sm);
        return FY_ENOMEM;
    }
    *out = sm;
    return 0;
}

void fy_sampler_free(fy_sampler *sm)
{
    if (!sm) {
        return;
    }
    free(sm->count);
    free(sm->seen);
    free(sm->raw);
    free(sm->c);
    free(sm);
}

void fy_sampling_defaults(fy_sampling *s)
{
    memset(s, 0, sizeof *s);
    s->temperature = 1.0f;
    s->top_p = 1.0f;
    s->repetition_penalty = 1.0f;
    s->max_tokens = 16;
    s->logprobs = -1;
    s->prompt_logprobs = -1;
}

static int bad(char *err, size_t errlen, const char *field, const char *range)
{
    if (err && errlen) {
        snprintf(err, errlen, "%s must be %s", field, range);
    }
    return FY_EINVAL;
}

int fy_sampling_validate(const fy_sampling *s, char *err, size_t errlen)
{
    if (!isfinite(s->temperature) || s->temperature < 0.0f || s->temperature > 100.0f) {
        return bad(err, errlen, "temperature", "between 0 and 100");
    }
    if (!isfinite(s->top_p) || s->top_p <= 0.0f || s->top_p > 1.0f) {
        return bad(err, errlen, "top_p", "in (0, 1]");
    }
    if (s->top_k < 0) {
        return bad(err, errlen, "top_k", ">= 0 (0 = off)");
    }
    if (!isfinite(s->min_p) || s->min_p < 0.0f || s->min_p > 1.0f) {
        return bad(err, errlen, "min_p", "in [0, 1]");
    }
    if (!isfinite(s->presence_penalty) || fabsf(s->presence_penalty) > 2.0f) {
        return bad(err, errlen, "presence_penalty", "between -2 and 2");
    }
    if (!isfinite(s->frequency_penalty) || fabsf(s->frequency_penalty) > 2.0f) {
        return bad(err, errlen, "frequency_penalty", "between -2 and 2");
    }
    if (!isfinite(s->repetition_penalty) || s->repetition_penalty <= 0.0f ||
        s->repetition_penalty > 100.0f) {
        return bad(err, errlen, "repetition_penalty", "in (0, 100]");
    }
    if (s->max_tokens < 0) {
        return bad(err, errlen, "max_tokens", ">= 0");
    }
    if (s->logprobs < -1 || s->logprobs > FY_MAX_LOGPROBS) {
        return bad(err, errlen, "logprobs", "between 0 and 20");
    }
    if (s->prompt_logprobs < -1 || s->prompt_logprobs > FY_MAX_LOGPROBS) {
        return bad(err, errlen, "prompt_logprobs", "between 0 and 20");
    }
    if (s->n_logit_bias < 0 || s->n_logit_bias > FY_MAX_LOGIT_BIAS ||
        (s->n_logit_bias > 0 && !s->logit_bias)) {
        return bad(err, errlen, "logit_bias", "at most 1024 entries");
    }
    for (int i = 0; i < s->n_logit_bias; i++) {
        float b = s->logit_bias[i].bias;
        if (!isfinite(b) || b < -100.0f || b > 100.0f) {
            return bad(err, errlen, "logit_bias", "values between -100 and 100");
        }
    }
    return 0;
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

double fy_sampler_uniform(uint64_t seed, int index, int pos)
{
    uint64_t h = mix64(seed);
    h = mix64(h ^ (uint64_t)(uint32_t)index);
    h = mix64(h ^ ((uint64_t)(uint32_t)pos << 32));
    return (double)(h >> 11) * (1.0 / 9007199254740992.0);
}

/* Larger value first, lower id on ties: a total order, so results don't
 * depend on the sort's stability. */
static int cand_cmp(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->v != y->v) {
        return x->v > y->v ? -1 : 1;
    }
    return x->id < y->id ? -1 : x->id > y->id;
}

static int32_t argmax(const float *l, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++) {
        if (l[i] > l[best]) {
            best = i;
        }
    }
    return best;
}

static void apply_penalties(fy_sampler *sm, const fy_sampling *s, float *l, const int32_t *tokens,
                            int n_tokens, int n_prompt)
{
    int rep = s->repetition_penalty != 1.0f;
    int pf = s->presence_penalty != 0.0f || s->frequency_penalty != 0.0f;
    if (!rep && !pf) {
        return;
    }
    for (int i = 0; i < n_tokens; i++) {
        int32_t t = tokens[i];
        if (t < 0 || t >= sm->vocab) {
            continue;
        }
        if (rep && !sm->seen[t]) {
            sm->seen[t] = 1;
            l[t] = fy_logit_repetition(l[t], s->repetition_penalty);
        }
        if (pf && i >= n_prompt) {
            sm->count[t]++;
        }
    }
    for (int i = 0; i < n_tokens; i++) {
        int32_t t = tokens[i];
        if (t < 0 || t >= sm->vocab) {
            continue;
        }
        if (sm->count[t]) {
            l[t] = fy_logit_presence_frequency(l[t], sm->count[t], s->presence_penalty,
                                               s->frequency_penalty);
            sm->count[t] = 0;
        }
        sm->seen[t] = 0;
    }
}

/* Log-softmax of the raw logits R for token ID and the top N. */
static void fill_logprobs(const fy_sampler *sm, const float *r, int n_top, int32_t id,
                          fy_gen_token *out)
{
    float m = r[argmax(r, sm->vocab)];
    double sum = 0.0;
    for (int i = 0; i < sm->vocab; i++) {
        sum += exp((double)(r[i] - m));
    }
    float lse = m + (float)log(sum);
    out->logprob = r[id] - lse;
    /* Insertion into a short sorted list: N <= 20. */
    int n = 0;
    for (int i = 0; i < sm->vocab && n_top > 0; i++) {
        if (n == n_top && r[i] <= r[out->top[n - 1].id]) {
            continue;
        }
        int j = n < n_top ? n++ : n - 1;
        while (j > 0 && r[out->top[j - 1].id] < r[i]) {
            out->top[j] = out->top[j - 1];
            j--;
        }
        out->top[j].id = i;
    }
    for (int i = 0; i < n; i++) {
        out->top[i].logprob = r[out->top[i].id] - lse;
    }
    out->n_top = n;
}

/* Quickselect: moves the K best candidates (cand_cmp order) to c[0..K). */
static void select_top(cand *c, int n, int k)
{
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        cand pivot = c[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (cand_cmp(&c[i], &pivot) < 0) {
                i++;
            }
            while (cand_cmp(&c[j], &pivot) > 0) {
                j--;
            }
            if (i <= j) {
                cand t = c[i];
                c[i] = c[j];
                c[j] = t;
                i++;
                j--;
            }
        }
        if (k - 1 <= j) {
            hi = j;
        } else if (k - 1 >= i) {
            lo = i;
        } else {
            break;
        }
    }
}

static int32_t draw(fy_sampler *sm, const fy_sampling *s, float *l, double u)
{
    int vocab = sm->vocab;
    float inv_t = 1.0f / s->temperature;
    float m = l[argmax(l, vocab)] * inv_t;
    int top_k = s->top_k > 0 && s->top_k < vocab ? s->top_k : 0;
    int sort = top_k > 0 || s->top_p < 1.0f;
    int n = 0;
    for (int i = 0; i < vocab; i++) {
        float v = fy_logit_temperature(l[i], inv_t);
        if (sort && !top_k && v < m - FY_SAMPLER_TOP_P_WINDOW) {
            continue;
        }
        sm->c[n].v = v;
        sm->c[n].id = i;
        n++;
    }
    if (top_k && top_k < n) {
        select_top(sm->c, n, top_k);
        n = top_k;
    }
    if (sort) {
        qsort(sm->c, (size_t)n, sizeof *sm->c, cand_cmp);
    }
    /* Relative probabilities (the maximum's is 1). */
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        sm->c[i].v = expf(sm->c[i].v - m);
        total += sm->c[i].v;
    }
    if (s->top_p < 1.0f) {
        double cum = 0.0, lim = (double)s->top_p * total;
        int keep = n;
        for (int i = 0; i < n; i++) {
            cum += sm->c[i].v;
            if (cum >= lim) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
        total = cum;
    }
    if (s->min_p > 0.0f) {
        int k = 0;
        total = 0.0;
        for (int i = 0; i < n; i++) {
            if (sm->c[i].v >= s->min_p) {
                sm->c[k++] = sm->c[i];
                total += sm->c[i].v;
            }
        }
        n = k;
    }
    double target = u * total, cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += sm->c[i].v;
        if (target < cum) {
            return sm->c[i].id;
        }
    }
    return sm->c[n - 1].id;
}

static int is_greedy(const fy_sampling *s)
{
    return s->temperature == 0.0f || s->top_k == 1;
}

int fy_sampling_is_plain_argmax(const fy_sampling *s)
{
    return is_greedy(s) && s->logprobs < 0 && s->n_logit_bias == 0 &&
           s->repetition_penalty == 1.0f && s->presence_penalty == 0.0f &&
           s->frequency_penalty == 0.0f;
}

/* Tokens ALLOW does not have get -inf: whatever follows can't pick them. */
static void apply_mask(float *l, int vocab, const uint32_t *allow)
{
    for (int w = 0; w * 32 < vocab; w++) {
        uint32_t m = allow[w];
        if (m == UINT32_MAX) {
            continue;
        }
        int end = w * 32 + 32 < vocab ? w * 32 + 32 : vocab;
        for (int i = w * 32; i < end; i++) {
            if (!((m >> (i & 31)) & 1)) {
                l[i] = -INFINITY;
            }
        }
    }
}

int32_t fy_sampler_pick(fy_sampler *sm, const fy_sampling *s, uint64_t seed, int index,
                        float *logits, const int32_t *tokens, int n_tokens, int n_prompt,
                        fy_gen_token *out)
{
    return fy_sampler_pick_masked(sm, s, NULL, seed, index, logits, tokens, n_tokens, n_prompt,
                                  out);
}

int32_t fy_sampler_pick_masked(fy_sampler *sm, const fy_sampling *s, const uint32_t *allow,
                               uint64_t seed, int index, float *logits, const int32_t *tokens,
                               int n_tokens, int n_prompt, fy_gen_token *out)
{
    memset(out, 0, sizeof *out);
    if (s->logprobs >= 0) {
        memcpy(sm->raw, logits, (size_t)sm->vocab * sizeof *logits);
    }
    if (allow) {
        apply_mask(logits, sm->vocab, allow);
    }
    for (int i = 0; i < s->n_logit_bias; i++) {
        int32_t t = s->logit_bias[i].id;
        if (t >= 0 && t < sm->vocab) {
            logits[t] += s->logit_bias[i].bias;
        }
    }
    apply_penalties(sm, s, logits, tokens, n_tokens, n_prompt);
    int32_t id;
    if (is_greedy(s)) {
        id = argmax(logits, sm->vocab);
    } else {
        id = draw(sm, s, logits, fy_sampler_uniform(seed, index, n_tokens));
    }
    out->id = id;
    if (s->logprobs >= 0) {
        fill_logprobs(sm, sm->raw, s->logprobs, id, out);
    }
    return id;
}

void fy_sampler_logprobs(const fy_sampler *sm, const float *logits, int32_t id, int n_top,
                         fy_gen_token *out)
{
    memset(out, 0, sizeof *out);
    out->id = id;
    fill_logprobs(sm, logits, n_top, id, out);
}
