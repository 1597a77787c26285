/* engine.h: the inference engine -- requests in, streamed tokens out.
 *
 * One engine serves one model on one backend. Its step loop runs on its own
 * thread: each step the scheduler (runner/engine/sched.h) picks the running
 * sequences' decode tokens plus as many prefill tokens as the step's token
 * budget allows (chunked prefill), the forward pass (forward.h) runs them
 * over the paged KV cache (kvcache.h), and the sampler (sampler.h) picks the
 * next tokens. Requests are submitted and aborted from the libuv loop
 * thread given in the options; their events are delivered on that same
 * thread (through a uv_async_t), so callers never see the engine thread.
 *
 * A request with n > 1 runs n sequences that share the prompt's KV blocks.
 * Waiting requests are admitted first-come first-served, round-robin
 * across key ids, into a bounded waiting queue. */
#ifndef FY_ENGINE_ENGINE_H
#define FY_ENGINE_ENGINE_H

#include "runner/engine/model.h"
#include "runner/engine/tokenizer.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct fy_engine fy_engine;

typedef struct {
    const char *model_dir;  /* what fy_model_load takes: a Hugging Face directory, a GGUF
                             * file or ollama:NAME[:TAG] (model.h) */
    const char *tokenizer;  /* tokenizer.json or its directory; NULL = the model's own
                             * (model_dir's tokenizer.json, or the GGUF's vocabulary) */
    const char *device;     /* "cpu" (NULL) or "cuda[:N]" */
    int threads;            /* CPU backend threads; 0 = one per core */
    size_t kv_bytes;        /* KV cache memory; 0 = 1 GiB on the CPU */
    int block_size;         /* tokens per KV block; 0 = 16 */
    int max_seqs;           /* sequences per step; 0 = 64 */
    int max_step_tokens;    /* token budget per step; 0 = 512 */
    int max_waiting;        /* waiting-queue bound (requests); 0 = 256 */
    int no_prefix_caching;  /* 1 turns automatic prefix caching off */
    int tensor_parallel;    /* ranks the forward pass is split over (forward.h); 0/1 = one */
    double kv_mem_fraction; /* (0, 1]: the KV cache takes this fraction of each GPU's free
                             * memory after the weights, and kv_bytes is ignored; 0 = kv_bytes.
                             * Refused on the CPU (forward.h). */
    const char *kv_dtype;   /* KV cache element type: "auto" (NULL), "f32", "f16", "bf16"
                             * (fy_kv_dtype_parse; auto is F32 on the CPU, F16 on CUDA) */
    uv_loop_t *loop;        /* events are delivered on this loop's thread */
} fy_engine_options;

/* Loads the model and tokenizer and starts the engine thread. On failure
 * returns an FY_E* code and ERR says why (file, tensor, field); FY_ENOTSUP
 * when a CUDA device is asked for a model with ggml block-type weights
 * (checked before anything is placed on the device). */
int fy_engine_create(const fy_engine_options *o, fy_engine **out, char *err, size_t errlen);
/* Stops the thread; requests still running get no further events. Call on
 * the loop thread, not from inside an event callback; the loop must run
 * afterwards to close the async handle (fy_engine_destroy closes it and
 * frees in its close callback). */
void fy_engine_destroy(fy_engine *e);

const fy_model_config *fy_engine_config(const fy_engine *e);
const fy_tokenizer *fy_engine_tokenizer(const fy_engine *e);
const fy_model *fy_engine_model(const fy_engine *e);  /* its config, tensors, GGUF file */
const char *fy_engine_model_name(const fy_engine *e); /* the model id the API shows */
int fy_engine_max_context(const fy_engine *e);        /* prompt + generated tokens */
int fy_engine_tensor_parallel(const fy_engine *e);    /* ranks the model runs on */

/* --- Requests ----------------------------------------------------------------------- */

#define FY_MAX_LOGPROBS    20
#define FY_MAX_PROMPT_ROWS 64   /* prompt positions' logits per step beyond one per sequence */
#define FY_MAX_LOGIT_BIAS  1024 /* logit_bias entries (OpenAI takes 300, vLLM any number) */

/* A bias added to one token's logit before sampling (OpenAI's logit_bias):
 * -100 all but bans the token, 100 all but forces it. */
typedef struct {
    int32_t id;
    float bias; /* [-100, 100] */
} fy_logit_bias;

typedef struct fy_grammar fy_grammar; /* runner/engine/grammar.h */

typedef struct {
    float temperature;        /* 0 = greedy; default 1 */
    float top_p;              /* (0,1]; default 1 */
    int top_k;                /* 0 = off */
    float min_p;              /* [0,1]; 0 = off */
    float presence_penalty;   /* [-2,2]; 0 */
    float frequency_penalty;  /* [-2,2]; 0 */
    float repetition_penalty; /* > 0; 1 = off */
    int has_seed;
    uint64_t seed;  /* same seed, same prompt, same output */
    int max_tokens; /* >= 0; the engine clamps to the context. 0: nothing is generated, the
                     * request ends (FY_FINISH_LENGTH) once its prompt ran (prompt_logprobs) */
    int logprobs;   /* -1: none; 0..FY_MAX_LOGPROBS: sampled token + that many alternatives */
    /* -1: none; 0..FY_MAX_LOGPROBS: the logprob of each prompt token after the
     * first given the ones before it, and that many alternatives (vLLM's
     * prompt_logprobs). Only such requests pay for the logits of every prompt
     * position; their prompt is computed, not taken from the prefix cache. */
    int prompt_logprobs;
    const char *const
        *stop; /* stop strings (copied at submit); matched across tokens, never emitted */
    int n_stop;
    const int32_t *stop_ids; /* extra stop token ids (copied) */
    int n_stop_ids;
    int ignore_eos;
    const fy_logit_bias *logit_bias; /* added to the logits before penalties (copied) */
    int n_logit_bias;                /* 0 .. FY_MAX_LOGIT_BIAS */
    /* Constrained decoding (NULL: none). Each sample's text is a sentence of
     * the grammar's, or a prefix of one when max_tokens, the context or a
     * stop string cut it short: at each step only tokens whose bytes keep
     * the text inside the language are allowed (grammar.h's masker, before
     * logit_bias, penalties and temperature), EOS only once the text is a
     * whole sentence, and a sample whose sentence can't continue finishes
     * (FY_FINISH_STOP) without waiting for EOS. Each of the n samples has
     * its own parse state; it lives with the sample, so preemption and
     * recompute leave it as it was. The engine takes a reference at submit. */
    fy_grammar *grammar;
    /* A lazy grammar (NULL: it applies from the first token): the text is
     * free until this marker appears in it (across tokens); the grammar then
     * applies to what follows, and once its sentence is whole the text is
     * free again until the next marker (tool_choice auto with strict tools:
     * each call is constrained from its marker on). Copied at submit. */
    const char *grammar_trigger;
    /* 1: a sample's text includes special tokens' text (tool-call markers
     * such as "[TOOL_CALLS]" or "<|python_tag|>"); EOS and stop tokens stay
     * out of it. */
    int keep_special;
} fy_sampling;

/* Fills S with the defaults above (max_tokens 16, logprobs and prompt_logprobs -1). */
void fy_sampling_defaults(fy_sampling *s);

typedef enum {
    FY_FINISH_NONE = 0, /* more events follow */
    FY_FINISH_STOP,     /* EOS, a stop token or a stop string */
    FY_FINISH_LENGTH,   /* max_tokens or the context end */
    FY_FINISH_ABORT,    /* engine shutting down */
    FY_FINISH_ERROR,    /* see event.error */
} fy_finish;

typedef struct {
    int32_t id;
    float logprob;
} fy_token_logprob;

typedef struct {
    int32_t id;
    float logprob;                         /* of the sampled token (0 when not asked) */
    fy_token_logprob top[FY_MAX_LOGPROBS]; /* most likely alternatives, best first */
    int n_top;
    size_t text_offset; /* bytes of the sample's text before this token's text */
} fy_gen_token;

/* A sample's text is what its tokens add to the prompt's text: decode(prompt
 * + generated) minus decode(prompt) (fy_detok_prime), so it keeps the
 * leading space of a first "▁word" token that a decode of the generated
 * tokens alone would drop. */
typedef struct {
    uint64_t request_id;
    int index;        /* which of the request's n samples */
    const char *text; /* new final text (valid UTF-8; stop strings withheld) */
    size_t text_len;
    const fy_gen_token *tokens; /* tokens generated since this sample's last event */
    int n_tokens;
    /* prompt_logprobs: the next prompt tokens' logprobs, in prompt order from
     * the second token (text_offset 0). Only on sample 0's events, and all of
     * them before the first generated token of any sample (in the same event
     * at the latest, ahead of its tokens). */
    const fy_gen_token *prompt_logprobs;
    int n_prompt_logprobs;
    fy_finish finish;      /* != NONE on this sample's last event */
    const char *error;     /* FY_FINISH_ERROR: why */
    int prompt_tokens;     /* the request's prompt */
    int cached_tokens;     /* prompt tokens served from the prefix cache */
    int completion_tokens; /* this sample's, so far */
} fy_engine_event;

/* Runs on the loop thread. EV and what it points at are valid during the call.
 * It may call fy_engine_submit and fy_engine_abort (for any id).
 *
 * Tokens: every sampled token is reported, an EOS or stop token included
 * (it counts in completion_tokens) but its text is not. Logprobs are of the
 * raw model distribution (log-softmax of the logits before logit_bias,
 * penalties and temperature), as vLLM returns them. A request whose sequence can't fit in
 * the whole KV cache ends with FY_FINISH_LENGTH. */
typedef void (*fy_engine_cb)(const fy_engine_event *ev, void *arg);

typedef struct {
    const int32_t *prompt; /* token ids (copied); n_prompt >= 1 */
    int n_prompt;
    int n; /* parallel samples, >= 1 */
    fy_sampling sampling;
    const char *key_id; /* fairness class (the gateway's API key id); NULL = anonymous */
    fy_engine_cb cb;
    void *arg;
} fy_engine_request;

/* Queues R (loop thread). Returns 0 and *ID; FY_ELIMIT when the waiting
 * queue is full; FY_ETOOBIG when prompt + 1 exceeds the context (prompt
 * alone with max_tokens 0);
 * FY_EINVAL for parameters out of range (ERR names it). */
int fy_engine_submit(fy_engine *e, const fy_engine_request *r, uint64_t *id, char *err,
                     size_t errlen);
/* Aborts ID (loop thread): its sequences leave at the next step and their
 * blocks are freed; no callback for ID runs after this returns. */
void fy_engine_abort(fy_engine *e, uint64_t id);

typedef struct {
    int blocks_total, blocks_used, blocks_cached, blocks_free;
    uint64_t prefix_queries, prefix_hits; /* full-block lookups and hits */
    double prefix_hit_rate;
    uint64_t kv_bytes_wasted; /* allocated minus used token slots, in bytes, now */
    int running, waiting;
    uint64_t steps, preemptions;
    uint64_t prompt_tokens, generated_tokens; /* totals */
    int block_size;
    size_t block_bytes;
    const char *kv_dtype; /* the KV cache's element type, "F32", "F16" or "BF16" (static) */
} fy_engine_stats;

/* A consistent snapshot (any thread). */
void fy_engine_get_stats(fy_engine *e, fy_engine_stats *s);

#endif
