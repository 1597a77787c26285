/* run.c: `ferry-runner run`: options and config file, start-up checks,
 * signals, and the graceful drain on SIGTERM/SIGINT. */
#include "runner/runner.h"

#include "common/args.h"
#include "common/cli.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "kernels/backend.h"
#include "runner/api/chat_template.h"
#include "runner/api/jinja.h"
#include "runner/api/server.h"
#include "runner/api/toolcall.h"
#include "runner/engine/engine.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define RUN_MAX_CONNECTIONS 64

typedef struct {
    uv_loop_t loop;
    uv_signal_t sigterm, sigint;
    fy_rn_tunnel *tunnel;
    fy_rn_upstream *upstream;
    fy_rn_models *models; /* the upstream's /v1/models, announced in HELLO */
    /* Model mode: the engine, the API over it, the local listener. */
    fy_engine *engine;
    fy_chat_template *tmpl;
    fy_api *api;
    fy_http_server *http;
    fy_tls_config *tls; /* the tunnel's; outlives it */
    uint64_t drain_ms;
    int signals;
    int stopping; /* parts still closing: tunnel, listener */
    int drained;
    int signals_open; /* sigterm and sigint initialised */
} run_ctx;

static void usage(FILE *f, const fy_opt *opts)
{
    fprintf(f,
            "Usage: ferry-runner run --data-dir DIR --upstream http://127.0.0.1:PORT\n"
            "                        [--gateway HOST:PORT]... [OPTIONS]\n"
            "       ferry-runner run --model DIR|FILE.gguf|ollama:NAME[:TAG] [--data-dir DIR]\n"
            "                        [--listen ADDR:PORT] [OPTIONS]\n\n"
            "With --model, the runner loads a model into its own engine and serves the\n"
            "OpenAI API (/v1/models, /v1/completions,\n"
            "/v1/chat/completions, /health, /tokenize, /detokenize, /metrics): on --listen\n"
            "(default 127.0.0.1:8080 when there is no --data-dir, like 'vllm serve'), and,\n"
            "with an enrolled --data-dir, through the gateway's tunnel too. 'ferry-runner\n"
            "demo-model --out DIR' writes a small model with random weights to try it.\n\n"
            "The model is one of:\n"
            "  DIR            a Hugging Face directory: config.json, *.safetensors (F32, F16,\n"
            "                 BF16), tokenizer.json, the chat template of\n"
            "                 tokenizer_config.json or chat_template.jinja;\n"
            "  FILE.gguf      a GGUF file (v2 or v3, as llama.cpp, Ollama and LM Studio keep\n"
            "                 them) of architecture llama, qwen2 or qwen3, weights in F32, F16,\n"
            "                 BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K or Q6_K (kept\n"
            "                 packed, on --device cpu and cuda alike); the\n"
            "                 tokenizer and the chat template (tokenizer.chat_template) come\n"
            "                 from the file;\n"
            "  ollama:NAME[:TAG]  the GGUF of a model pulled with Ollama, read from its store\n"
            "                 ($OLLAMA_MODELS, else ~/.ollama/models, else\n"
            "                 /usr/share/ollama/.ollama/models) without Ollama running; TAG\n"
            "                 defaults to latest, NAME may be NAMESPACE/MODEL. Of the\n"
            "                 manifest's layers ferry takes the model (the GGUF) and uses no\n"
            "                 other: not the template (Ollama's Go template: the chat\n"
            "                 template comes from the GGUF, or --chat-template), not params\n"
            "                 (default stop words and sampling: requests set their own),\n"
            "                 not system or messages (no default system prompt or history),\n"
            "                 not license; a projector (vision) is ignored, so the model\n"
            "                 serves text only; a model with an adapter (LoRA) is refused.\n\n"
            "With --upstream, the runner publishes the local upstream HTTP server through\n"
            "the gateway(s): keeps\n"
            "--connections outbound mutual-TLS tunnel connections (spread over the gateways,\n"
            "which default to the one this runner enrolled with), reconnects with\n"
            "full-jitter exponential backoff (0.5 s doubling to 30 s), and forwards each\n"
            "request that arrives down a tunnel to the upstream. The models the upstream\n"
            "lists at /v1/models (vLLM, llama.cpp's server...) are announced to the\n"
            "gateways, which route /v1 requests to this runner by their model; the list is\n"
            "read again every --upstream-models-refresh. SIGTERM or SIGINT drains:\n"
            "the gateways stop sending new requests, requests in flight finish (for at most\n"
            "--drain-timeout), then the runner exits 0. A second signal stops at once.\n"
            "Every option may also come from a JSON --config file whose keys are the option\n"
            "names; the command line wins.\n\n"
            "Options:\n");
    fy_args_usage(f, opts);
}

static void on_closed_handle(uv_handle_t *h)
{
    (void)h;
}

/* Every part has stopped: log, close the signals, free what serves. */
static void run_stopped(run_ctx *r)
{
    r->drained = 1;
    if (r->upstream) {
        fy_rn_upstream_stats st;
        fy_rn_upstream_stats_get(r->upstream, &st);
        fy_log_event(FY_LOG_INFO, "runner", "stopped",
                     json_pack("{s:I, s:I, s:I, s:I}", "requests", (json_int_t)st.started,
                               "completed", (json_int_t)st.completed, "failed",
                               (json_int_t)st.failed, "canceled", (json_int_t)st.canceled));
    }
    if (r->api) {
        fy_api_stats st;
        fy_api_stats_get(r->api, &st);
        fy_log_event(FY_LOG_INFO, "runner", "stopped",
                     json_pack("{s:I, s:I, s:I, s:I}", "requests", (json_int_t)st.requests,
                               "completed", (json_int_t)st.completed, "errors",
                               (json_int_t)st.errors, "canceled", (json_int_t)st.canceled));
    }
    uv_close((uv_handle_t *)&r->sigterm, on_closed_handle);
    uv_close((uv_handle_t *)&r->sigint, on_closed_handle);
    fy_rn_upstream_free(r->upstream);
    r->upstream = NULL;
    fy_api_free(r->api); /* calls still running are aborted */
    r->api = NULL;
    if (r->engine) {
        fy_engine_destroy(r->engine);
        r->engine = NULL;
    }
}

static void on_drained(fy_rn_tunnel *t, void *arg)
{
    (void)t;
    run_ctx *r = arg;
    if (--r->stopping == 0) {
        run_stopped(r);
    }
}

static void on_http_closed(fy_http_server *srv, void *arg)
{
    (void)srv;
    run_ctx *r = arg;
    r->http = NULL;
    if (--r->stopping == 0) {
        run_stopped(r);
    }
}

/* The upstream's model list changed: the tunnel announces it. */
static void on_models(fy_rn_models *w, const char *const *models, size_t n, void *arg)
{
    (void)w;
    run_ctx *r = arg;
    if (r->tunnel && fy_rn_tunnel_set_models(r->tunnel, models, n)) {
        fy_log_event(FY_LOG_WARN, "runner", "out of memory: the tunnel keeps the old models", NULL);
    }
}

static void on_signal(uv_signal_t *h, int signum)
{
    run_ctx *r = h->data;
    r->signals++;
    fy_rn_models_free(r->models);
    r->models = NULL;
    if (r->signals == 1) {
        fy_log_event(FY_LOG_INFO, "runner", "shutting down: draining",
                     json_pack("{s:s, s:I}", "signal", signum == SIGTERM ? "SIGTERM" : "SIGINT",
                               "drain_timeout_ms", (json_int_t)r->drain_ms));
        r->stopping = (r->tunnel != NULL) + (r->http != NULL);
        if (r->http) {
            /* The local listener stops at once: its requests are aborted. */
            fy_http_server_close(r->http, on_http_closed, r);
        }
        if (r->tunnel) {
            fy_rn_tunnel_drain(r->tunnel, r->drain_ms, on_drained, r);
        }
    } else if (r->tunnel) {
        fy_log_event(FY_LOG_WARN, "runner", "second signal: stopping now", NULL);
        fy_rn_tunnel_drain(r->tunnel, 0, on_drained, r);
    }
}

/* The options of model mode (--model and what goes with it). */
typedef struct {
    const char *model, *served_name, *listen, *device, *chat_template, *gpu_util, *kv_dtype;
    const char *tool_parser; /* --tool-call-parser */
    uint64_t kv_bytes, ping_ms;
    long long max_seqs, max_batched, threads, max_queue, tensor_parallel;
    double kv_fraction; /* --gpu-memory-utilization, parsed */
} model_opts;

/* Checks --device before anything is loaded: "cpu", "cuda" or "cuda:N", and
 * for CUDA a build with the CUDA backend, its module loadable (this is where
 * the runner first loads it) and a usable device, so a box without a GPU
 * fails at once with why, not after loading the weights.
 * Returns 0, or FY_EINVAL / FY_ENOTSUP with ERR set. */
static int device_check(const char *device, char *err, size_t errlen)
{
    if (!device || strcmp(device, "cpu") == 0) {
        return 0;
    }
    if (strncmp(device, "cuda", 4) != 0 || (device[4] != '\0' && device[4] != ':')) {
        snprintf(err, errlen, "--device '%s': expected cpu, cuda or cuda:N", device);
        return FY_EINVAL;
    }
    if (device[4] == ':') {
        const char *d = device + 5;
        size_t n = strspn(d, "0123456789");
        if (n == 0 || n > 3 || d[n] != '\0' || atoi(d) > 255) {
            snprintf(err, errlen, "--device '%s': expected cuda:N with N a device number", device);
            return FY_EINVAL;
        }
    }
#ifdef FY_HAVE_CUDA
    fy_backend_info info;
    char why[400];
    if (fy_cuda_module_load(why, sizeof why)) {
        snprintf(err, errlen, "--device %s: the CUDA backend cannot be loaded: %s", device, why);
        return FY_ENOTSUP;
    }
    if (fy_cuda_probe(&info)) {
        snprintf(err, errlen, "--device %s: no usable GPU on this machine: CUDA %s", device,
                 info.detail);
        return FY_ENOTSUP;
    }
    return 0;
#else
    snprintf(err, errlen,
             "--device %s: this ferry-runner was built without CUDA (-DFERRY_CUDA=OFF); rebuild "
             "with nvcc on PATH, or use --device cpu",
             device);
    return FY_ENOTSUP;
#endif
}

/* Checks the engine's device and memory options. Returns NULL or what is
 * wrong (in ERR, or a constant). */
static const char *model_opts_check(model_opts *m, char *err, size_t errlen)
{
    if (m->tensor_parallel < 0 || m->tensor_parallel > FY_COMM_MAX) {
        snprintf(err, errlen, "--tensor-parallel must be 1 to %d", FY_COMM_MAX);
        return err;
    }
    if (m->gpu_util) {
        char *end = NULL;
        double f = strtod(m->gpu_util, &end);
        if (end == m->gpu_util || *end || !(f > 0.0 && f <= 1.0)) {
            snprintf(err, errlen, "--gpu-memory-utilization '%s': must be a fraction in (0, 1]",
                     m->gpu_util);
            return err;
        }
        if (m->kv_bytes) {
            return "give --gpu-memory-utilization or --kv-cache-memory, not both";
        }
        if (!m->device || strcmp(m->device, "cpu") == 0) {
            return "--gpu-memory-utilization sizes the KV cache from a GPU's free memory: it "
                   "needs --device cuda[:N] (on the CPU, use --kv-cache-memory)";
        }
        m->kv_fraction = f;
    }
    fy_toolcall_family fam;
    if (m->tool_parser && fy_toolcall_family_parse(m->tool_parser, &fam) < 0) {
        snprintf(err, errlen, "--tool-call-parser '%s': expected hermes, llama3 or mistral",
                 m->tool_parser);
        return err;
    }
    fy_dtype kv;
    if (fy_kv_dtype_parse(m->kv_dtype, NULL, &kv, err, errlen) < 0) {
        return err; /* the backend's own refusals come when the engine is made */
    }
    if (device_check(m->device, err, errlen)) {
        return err;
    }
    return NULL;
}

/* The chat template of a GGUF model: OVERRIDE (--chat-template) or the
 * file's tokenizer.chat_template, with the tokenizer's BOS and EOS tokens.
 * Returns 0, FY_ENOENT when the file has none, or what
 * fy_chat_template_new refuses. */
static int gguf_template(const fy_engine *e, const char *override, fy_chat_template **out,
                         char *err, size_t errlen)
{
    const fy_gguf *g = fy_engine_model(e)->gguf;
    const fy_tokenizer *tok = fy_engine_tokenizer(e);
    const char *bos = fy_tokenizer_piece(tok, fy_tokenizer_bos(tok));
    const char *eos = fy_tokenizer_piece(tok, fy_tokenizer_eos(tok));
    char *text = NULL;
    size_t len = 0;
    int rc;
    if (override) {
        if ((rc = fy_file_read(override, FY_JINJA_MAX_SOURCE, &text, &len)) < 0) {
            return fy_fail(err, errlen, rc, "%s: %s", override, fy_strerror(rc));
        }
    } else {
        fy_gguf_str src;
        if (!fy_gguf_find(g, "tokenizer.chat_template")) {
            return FY_ENOENT;
        }
        if ((rc = fy_gguf_get_str(g, "tokenizer.chat_template", &src, err, errlen)) < 0) {
            return rc;
        }
        if (src.len > FY_JINJA_MAX_SOURCE) {
            return fy_fail(err, errlen, FY_ETOOBIG,
                           "%s: key 'tokenizer.chat_template' is %llu bytes (at most %d)", g->label,
                           (unsigned long long)src.len, FY_JINJA_MAX_SOURCE);
        }
        if (!(text = malloc((size_t)src.len + 1))) {
            return fy_fail(err, errlen, FY_ENOMEM, "out of memory");
        }
        memcpy(text, src.p, (size_t)src.len);
        text[src.len] = 0;
        len = (size_t)src.len;
    }
    char msg[768];
    rc = fy_chat_template_new(text, len, bos, eos, out, msg, sizeof msg);
    free(text);
    if (rc < 0) {
        return fy_fail(err, errlen, rc, "%s: %s", override ? override : g->label, msg);
    }
    return 0;
}

/* Loads the engine and the chat template (into r->engine, r->tmpl; a model
 * without a template is served without chat). *T0 is when loading began.
 * Returns 0, or 1/2 (exit status) after printing why. */
static int model_load(run_ctx *r, const model_opts *m, uint64_t *t0)
{
    char err[1024];
    fy_engine_options eo = {
        .model_dir = m->model,
        .device = m->device,
        .threads = (int)m->threads,
        .kv_bytes = (size_t)m->kv_bytes,
        .max_seqs = (int)m->max_seqs,
        .max_step_tokens = (int)m->max_batched,
        .max_waiting = (int)m->max_queue,
        .tensor_parallel = (int)m->tensor_parallel,
        .kv_mem_fraction = m->kv_fraction,
        .kv_dtype = m->kv_dtype,
        .loop = &r->loop,
    };
    /* A directory's template is checked before its weights load; a GGUF
     * file's comes from inside it, once it is loaded. */
    struct stat st;
    int hf_dir = stat(m->model, &st) == 0 && S_ISDIR(st.st_mode), rc = 0;
    if (hf_dir) {
        rc = fy_chat_template_load(m->model, m->chat_template, &r->tmpl, err, sizeof err);
    }
    *t0 = uv_hrtime();
    if (rc == 0 || rc == FY_ENOENT) {
        int lrc = fy_engine_create(&eo, &r->engine, err, sizeof err);
        if (lrc) {
            fprintf(stderr, "ferry-runner run: cannot load the model: %s\n", err);
            return lrc == FY_ENOMEM ? 1 : 2;
        }
        if (!hf_dir) {
            rc = gguf_template(r->engine, m->chat_template, &r->tmpl, err, sizeof err);
        }
    }
    if (rc == FY_ENOENT && !m->chat_template) {
        fy_log_event(FY_LOG_WARN, "runner",
                     "the model has no chat template: /v1/chat/completions answers 400 (give "
                     "--chat-template FILE)",
                     json_pack("{s:s}", "model", m->model));
        r->tmpl = NULL;
    } else if (rc) {
        fprintf(stderr,
                "ferry-runner run: chat template refused: %s (--chat-template FILE replaces it)\n",
                err);
        return 2;
    }
    return 0;
}

/* Starts the local listener on m->listen for the API. Returns 0, or 2 after
 * printing why not. */
static int model_listen(run_ctx *r, const model_opts *m, const char *name)
{
    fy_http_server_options ho = {
        .listen = m->listen,
        .on_request = fy_api_http_handler,
        .data = r->api,
        .max_body = FY_API_MAX_BODY,
        /* A long generation may send nothing for a while between
         * tokens; pings keep streams alive, so only idle keep-alive
         * connections time out. */
        .server_header = "ferry-runner",
    };
    int rc = fy_http_server_new(&r->loop, &ho, &r->http);
    if (rc) {
        fprintf(stderr, "ferry-runner run: cannot listen on %s: %s\n", m->listen, fy_strerror(rc));
        return 2;
    }
    fy_log_event(FY_LOG_INFO, "runner", "listening",
                 json_pack("{s:s, s:i, s:s}", "listen", m->listen, "port",
                           fy_http_server_port(r->http), "model", name));
    return 0;
}

/* Loads the model, makes the API over it and starts the local listener when
 * m->listen is set. Returns 0, or 1/2 (exit status) after printing why. */
static int model_start(run_ctx *r, const model_opts *m)
{
    uint64_t t0 = 0;
    int rc = model_load(r, m, &t0);
    if (rc) {
        return rc;
    }
    const char *name = m->served_name ? m->served_name : fy_engine_model_name(r->engine);
    fy_api_options ao = {
        .loop = &r->loop,
        .engine = r->engine,
        .tmpl = r->tmpl,
        .model_name = name,
        .ping_ms = (unsigned)m->ping_ms,
        .tool_call_parser = m->tool_parser,
    };
    if (fy_api_new(&ao, &r->api)) {
        fprintf(stderr, "ferry-runner run: out of memory\n");
        return 1;
    }
    fy_engine_stats es;
    fy_engine_get_stats(r->engine, &es);
    fy_log_event(FY_LOG_INFO, "runner", "model loaded",
                 json_pack("{s:s, s:s, s:s, s:I, s:i, s:s, s:i, s:I}", "model", name, "path",
                           m->model, "device", m->device ? m->device : "cpu", "tensor_parallel",
                           (json_int_t)fy_engine_tensor_parallel(r->engine), "max_context",
                           fy_engine_max_context(r->engine), "kv_cache_dtype", es.kv_dtype,
                           "kv_cache_blocks", es.blocks_total, "load_ms",
                           (json_int_t)((uv_hrtime() - t0) / 1000000)));
    return m->listen ? model_listen(r, m, name) : 0;
}

/* What `run` was asked: filled by run_parse (the config file, then the
 * command line), checked by run_validate, used by run_start. */
typedef struct {
    const char *data_dir, *upstream, *config, *port_file;
    fy_strlist gateways;
    long long connections, max_streams;
    uint64_t hb_timeout, drain, up_timeout, models_refresh;
    int help, check;
    int npos; /* positional arguments given (none is accepted) */
    model_opts mo;
    fy_cli_log_opts log;
    json_t *cfg_root; /* the config file: its strings are what O points to */
} run_opts;

#define RUN_NOPTS 40 /* room in the option table, its end included */

/* Sets O to the defaults and OPTS to the option table writing into O. */
static void run_opts_init(run_opts *o, fy_opt opts[RUN_NOPTS])
{
    memset(o, 0, sizeof *o);
    o->connections = 2;
    o->max_streams = 4096;
    o->hb_timeout = 30000;
    o->drain = 30000;
    o->up_timeout = 300000;
    o->models_refresh = 60000;
    o->mo.ping_ms = FY_API_PING_MS;
    const fy_opt v[] = {
        {"data-dir", FY_OPT_STR, &o->data_dir, "DIR",
         "the enrolled runner directory (required with --upstream)"},
        {"upstream", FY_OPT_STR, &o->upstream, "URL",
         "the local HTTP server to publish, http://127.0.0.1:PORT[/base]"},
        {"model", FY_OPT_STR, &o->mo.model, "DIR|FILE.gguf|ollama:NAME[:TAG]",
         "serve this model with the built-in engine: a Hugging Face directory, a GGUF file, "
         "or a model in Ollama's store"},
        {"served-model-name", FY_OPT_STR, &o->mo.served_name, "NAME",
         "the model id clients use (default: the directory's name; for GGUF, NAME:TAG from "
         "Ollama, else general.name, else the file's name without .gguf)"},
        {"listen", FY_OPT_STR, &o->mo.listen, "ADDR:PORT",
         "serve the API locally too (default 127.0.0.1:8080 without --data-dir)"},
        {"device", FY_OPT_STR, &o->mo.device, "cpu|cuda[:N]",
         "where the engine runs (default cpu)"},
        {"kv-cache-memory", FY_OPT_SIZE, &o->mo.kv_bytes, "SIZE",
         "KV cache memory, e.g. 4GiB (default 1GiB)"},
        {"gpu-memory-utilization", FY_OPT_STR, &o->mo.gpu_util, "F",
         "on a GPU, give the KV cache this fraction (0 < F <= 1) of the memory left free "
         "after the weights, instead of --kv-cache-memory"},
        {"kv-cache-dtype", FY_OPT_STR, &o->mo.kv_dtype, "auto|f32|f16|bf16",
         "the KV cache's element type; auto is f32 on the CPU (f16 keeps greedy outputs but "
         "moves logits ~5e-4 off the exact reference) and f16 on CUDA. "
         "f16 and bf16 take half of f32's bytes, so a given --kv-cache-memory holds twice the "
         "sequences"},
        {"tensor-parallel", FY_OPT_INT, &o->mo.tensor_parallel, "N",
         "split the model over N ranks: GPUs cuda:D..D+N-1 with --device cuda:D, or N CPU "
         "ranks (default 1)"},
        {"max-num-seqs", FY_OPT_INT, &o->mo.max_seqs, "N",
         "sequences per engine step (default 64)"},
        {"max-num-batched-tokens", FY_OPT_INT, &o->mo.max_batched, "N",
         "token budget per engine step (default 512)"},
        {"max-queue", FY_OPT_INT, &o->mo.max_queue, "N",
         "requests waiting for the engine before 503 (default 256)"},
        {"chat-template", FY_OPT_STR, &o->mo.chat_template, "FILE",
         "a Jinja chat template replacing the model's"},
        {"tool-call-parser", FY_OPT_STR, &o->mo.tool_parser, "hermes|llama3|mistral",
         "how tool calls are read from the model's text (default: from the chat template)"},
        {"threads", FY_OPT_INT, &o->mo.threads, "N", "CPU engine threads (default: one per core)"},
        {"sse-ping-interval", FY_OPT_DURATION, &o->mo.ping_ms, "DURATION",
         "SSE ': ping' comment after this long without a token (default 5s)"},
        {"listen-port-file", FY_OPT_STR, &o->port_file, "FILE",
         "write the local listener's port here once bound (for scripts using port 0)"},
        {"gateway", FY_OPT_STRLIST, &o->gateways, "HOST:PORT",
         "a gateway's tunnel listener; repeat for several (default: the enrolled one)"},
        {"connections", FY_OPT_INT, &o->connections, "N",
         "tunnel connections to keep, spread over the gateways (default 2)"},
        {"heartbeat-timeout", FY_OPT_DURATION, &o->hb_timeout, "DURATION",
         "declare a silent gateway dead after this (default 30s, at least 3s)"},
        {"drain-timeout", FY_OPT_DURATION, &o->drain, "DURATION",
         "on SIGTERM, wait at most this for requests in flight (default 30s)"},
        {"upstream-timeout", FY_OPT_DURATION, &o->up_timeout, "DURATION",
         "answer 504 when the upstream sends nothing for this long (default 5m)"},
        {"upstream-models-refresh", FY_OPT_DURATION, &o->models_refresh, "DURATION",
         "read the upstream's /v1/models again this often and announce its models "
         "(default 1m; 0s: only at start)"},
        {"max-streams", FY_OPT_INT, &o->max_streams, "N",
         "concurrent requests accepted per connection (default 4096)"},
        {"config", FY_OPT_STR, &o->config, "FILE", "read options from this JSON file first"},
        {"check-config", FY_OPT_FLAG, &o->check, NULL,
         "check the options and the config file, print them and exit"},
        FY_CLI_LOG_OPTS(&o->log),
        {"help", FY_OPT_FLAG, &o->help, NULL, "show this help"},
        {0},
    };
    _Static_assert(sizeof v / sizeof v[0] <= RUN_NOPTS, "RUN_NOPTS is too small");
    memcpy(opts, v, sizeof v);
}

/* Reads the config file (with --config) and then the command line into O:
 * gateways on the command line replace the file's list. Returns -1 to go
 * on, or the exit status: 0 after --help, 2 after printing why the options
 * were refused. */
static int run_parse(run_opts *o, const fy_opt *opts, int argc, char **argv)
{
    char err[512];
    char *pos[argc > 0 ? argc : 1];
    const char *cfg_path = fy_args_find(argc - 1, argv + 1, "config");
    if (cfg_path) {
        o->cfg_root = fy_config_load(cfg_path, opts, err, sizeof err);
        if (!o->cfg_root) {
            fprintf(stderr, "ferry-runner run: %s\n", err);
            return 2;
        }
    }
    fy_strlist from_cfg = o->gateways;
    memset(&o->gateways, 0, sizeof o->gateways);
    if (fy_args_parse(opts, argc - 1, argv + 1, pos, &o->npos, err, sizeof err) ||
        fy_cli_log_apply(&o->log, err, sizeof err)) {
        fprintf(stderr, "ferry-runner run: %s\n", err);
        return 2;
    }
    if (o->gateways.n == 0) {
        o->gateways = from_cfg;
    }
    if (o->help) {
        usage(stdout, opts);
        return 0;
    }
    return -1;
}

/* What is wrong with the choice between --model and --upstream and the
 * options that go with each, or NULL. ERR holds the message when it is not
 * a constant. */
static const char *mode_problem(run_opts *o, char *err, size_t errlen)
{
    const model_opts *m = &o->mo;
    if (o->npos) {
        return "unexpected argument (see --help)";
    }
    if (m->model && o->upstream) {
        return "give --model or --upstream, not both";
    }
    if (!m->model && (!o->data_dir || !o->upstream)) {
        return "--data-dir and --upstream are required (see --help)";
    }
    if (!m->model && (m->listen || m->served_name || m->chat_template || m->device || m->gpu_util ||
                      m->tensor_parallel || m->kv_bytes || m->kv_dtype || m->tool_parser)) {
        return "--listen, --served-model-name, --chat-template, --tool-call-parser, --device, "
               "--kv-cache-memory, --kv-cache-dtype, --gpu-memory-utilization and "
               "--tensor-parallel need --model";
    }
    return m->model ? model_opts_check(&o->mo, err, errlen) : NULL;
}

/* The first option out of its range, or NULL. */
static const char *range_problem(const run_opts *o)
{
    const model_opts *m = &o->mo;
    if (m->threads < 0 || m->threads > 1024) {
        return "--threads must be 0 to 1024";
    }
    if (m->max_seqs < 0 || m->max_seqs > 4096 || m->max_batched < 0 || m->max_batched > 1048576 ||
        m->max_queue < 0 || m->max_queue > 1000000) {
        return "--max-num-seqs, --max-num-batched-tokens or --max-queue out of range";
    }
    if (m->ping_ms < 100 || m->ping_ms > 600000) {
        return "--sse-ping-interval must be 100ms to 10m";
    }
    if (o->connections < 1 || o->connections > RUN_MAX_CONNECTIONS) {
        return "--connections must be 1 to 64";
    }
    if (o->hb_timeout < 3000 || o->hb_timeout > 1800000) {
        return "--heartbeat-timeout must be 3s to 30m";
    }
    if (o->drain > 3600000) {
        return "--drain-timeout must be at most 1h";
    }
    if (o->up_timeout < 1000 || o->up_timeout > 86400000) {
        return "--upstream-timeout must be 1s to 24h";
    }
    if (o->models_refresh != 0 && (o->models_refresh < 1000 || o->models_refresh > 86400000)) {
        return "--upstream-models-refresh must be 0s or 1s to 24h";
    }
    if (o->max_streams < 1 || o->max_streams > 100000) {
        return "--max-streams must be 1 to 100000";
    }
    return NULL;
}

/* Checks O: the mode, the ranges, then each --gateway. Then fills the
 * default that depends on the mode (a model without a gateway serves
 * locally, like vllm serve). Returns -1 to go on, or 2 after printing what
 * is wrong. */
static int run_validate(run_opts *o)
{
    char err[512], host[256];
    int port;
    const char *problem = mode_problem(o, err, sizeof err);
    if (!problem) {
        problem = range_problem(o);
    }
    for (size_t i = 0; !problem && i < o->gateways.n; i++) {
        if (fy_rn_hostport_parse(o->gateways.v[i], host, sizeof host, &port)) {
            snprintf(err, sizeof err, "--gateway '%s' is not HOST:PORT", o->gateways.v[i]);
            problem = err;
        }
    }
    if (problem) {
        fprintf(stderr, "ferry-runner run: %s\n", problem);
        return 2;
    }
    if (o->mo.model && !o->data_dir && !o->mo.listen) {
        o->mo.listen = "127.0.0.1:8080";
    }
    return -1;
}

/* --check-config: the options as they will be used. */
static void run_print_config(const run_opts *o)
{
    const model_opts *m = &o->mo;
    if (m->model) {
        printf("config ok\n  model              %s\n  listen             %s\n  data-dir           "
               "%s\n  device             %s\n  tensor-parallel    %lld\n",
               m->model, m->listen ? m->listen : "(none)", o->data_dir ? o->data_dir : "(none)",
               m->device ? m->device : "cpu", m->tensor_parallel > 1 ? m->tensor_parallel : 1);
        if (m->kv_fraction > 0) {
            printf("  gpu-memory-utilization %g\n", m->kv_fraction);
        }
        printf("  kv-cache-dtype     %s\n", m->kv_dtype ? m->kv_dtype : "auto");
        return;
    }
    printf("config ok\n  data-dir           %s\n  upstream           %s\n", o->data_dir,
           o->upstream);
    for (size_t i = 0; i < o->gateways.n; i++) {
        printf("  gateway            %s\n", o->gateways.v[i]);
    }
    if (o->gateways.n == 0) {
        printf("  gateway            (the enrolled one, from %s/%s)\n", o->data_dir, FY_RN_CONFIG);
    }
    printf("  connections        %lld\n  heartbeat-timeout  %llu ms\n"
           "  drain-timeout      %llu ms\n  upstream-timeout   %llu ms\n"
           "  max-streams        %lld\n  upstream-models-refresh %llu ms\n",
           o->connections, (unsigned long long)o->hb_timeout, (unsigned long long)o->drain,
           (unsigned long long)o->up_timeout, o->max_streams,
           (unsigned long long)o->models_refresh);
}

static void run_signals_start(run_ctx *r)
{
    uv_signal_start(&r->sigterm, on_signal, SIGTERM);
    uv_signal_start(&r->sigint, on_signal, SIGINT);
}

/* Reads the enrollment of O's data dir and picks the gateways: the command
 * line's, else the enrolled ones (into GW, *NGW of them). Returns -1 to go
 * on, or the exit status after printing why not. */
static int run_enrollment(const run_opts *o, fy_rn_enrollment *e, const char **gw, size_t *ngw)
{
    char err[512];
    int rc = fy_rn_enrollment_load(o->data_dir, e, err, sizeof err);
    if (rc == FY_ENOENT) {
        fprintf(stderr,
                "ferry-runner run: %s is not an enrolled runner directory (no %s); run "
                "'ferry-runner enroll' first\n",
                o->data_dir, FY_RN_CONFIG);
        return 1;
    } else if (rc) {
        fprintf(stderr, "ferry-runner run: %s\n", err);
        return 1;
    }
    *ngw = 0;
    for (size_t i = 0; i < o->gateways.n; i++) {
        gw[(*ngw)++] = o->gateways.v[i];
    }
    for (size_t i = 0; o->gateways.n == 0 && i < e->ngateways; i++) {
        gw[(*ngw)++] = e->gateways[i];
    }
    if (*ngw == 0) {
        fprintf(stderr, "ferry-runner run: no gateway: give --gateway HOST:PORT\n");
        return 2;
    }
    return -1;
}

/* The tunnel's TLS configuration from DIR's key, certificate and CA (into
 * r->tls). Returns 0, or 1 after printing why not. */
static int run_tls(run_ctx *r, const char *dir)
{
    char key[4096], cert[4096], ca[4096], err[512];
    fy_path_join(key, sizeof key, dir, FY_RN_KEY);
    fy_path_join(cert, sizeof cert, dir, FY_RN_CERT);
    fy_path_join(ca, sizeof ca, dir, FY_RN_CA);
    struct stat sb;
    if (stat(key, &sb) == 0 && (sb.st_mode & 077)) {
        fy_log_event(FY_LOG_WARN, "runner", "the private key is readable by other users",
                     json_pack("{s:s, s:s}", "file", key, "fix", "chmod 600"));
    }
    static const char *const alpn[] = {"ferry/1", NULL};
    fy_tls_options to = {
        .cert_file = cert,
        .key_file = key,
        .ca_file = ca,
        .alpn = (const char **)alpn,
        .prefer_chacha = 1, /* the tunnel: see fy_tls_options */
    };
    if (fy_tls_config_new(&to, &r->tls, err, sizeof err)) {
        fprintf(stderr, "ferry-runner run: %s\n", err);
        return 1;
    }
    return 0;
}

/* Announces what the upstream serves from the first HELLO on: reads its
 * /v1/models (bounded by the read's deadline) before dialling, and keeps
 * reading it every --upstream-models-refresh. Returns 0, or 1 after
 * printing why not. */
static int run_upstream_models(run_ctx *r, const run_opts *o, const char *const **models, size_t *n)
{
    fy_rn_models_options mw = {
        .base = fy_rn_upstream_base(r->upstream),
        .refresh_ms = o->models_refresh,
        .on_change = on_models,
        .arg = r,
    };
    int rc = fy_rn_models_new(&r->loop, &mw, &r->models);
    if (rc) {
        fprintf(stderr, "ferry-runner run: cannot read the upstream's models: %s\n",
                fy_strerror(rc));
        return 1;
    }
    while (!fy_rn_models_ready(r->models)) {
        uv_run(&r->loop, UV_RUN_ONCE);
    }
    *n = fy_rn_models_get(r->models, models);
    return 0;
}

static void log_started(const run_opts *o, const fy_rn_tunnel_options *tno, const char *served)
{
    json_t *gwj = json_array();
    for (size_t i = 0; i < tno->ngateways; i++) {
        json_array_append_new(gwj, json_string(tno->gateways[i]));
    }
    fy_log_event(FY_LOG_INFO, "runner", "started",
                 json_pack("{s:s, s:o, s:I, s:s, s:I}", "runner", tno->name, "gateways", gwj,
                           "connections", (json_int_t)o->connections,
                           o->upstream ? "upstream" : "model", o->upstream ? o->upstream : served,
                           "heartbeat_timeout_ms", (json_int_t)o->hb_timeout));
}

/* The tunnel's options that come from O and what R serves with. */
static void tunnel_options(fy_rn_tunnel_options *tno, const run_ctx *r, const run_opts *o)
{
    *tno = (fy_rn_tunnel_options){
        .connections = (unsigned)o->connections,
        .tls = r->tls,
        .heartbeat_timeout_ms = o->hb_timeout,
        .max_streams = (uint32_t)o->max_streams,
        .opener = r->api ? fy_rn_apistream_opener(r->api) : fy_rn_upstream_opener(r->upstream),
        .api = r->api != NULL,
    };
    /* For tests: a faster reconnect policy. */
    const char *tb = getenv("FERRY_TEST_BACKOFF_MS");
    if (tb) {
        tno->backoff_base_ms = strtoull(tb, NULL, 10);
        tno->backoff_max_ms = tno->backoff_base_ms * 8;
        tno->stable_ms = tno->backoff_base_ms * 4;
    }
}

/* Serves through the gateways until drained: enrollment, TLS, the models to
 * announce, the tunnel. Returns the exit status. */
static int run_tunnel(run_ctx *r, const run_opts *o)
{
    fy_rn_enrollment e;
    const char *gw[FY_STRLIST_MAX > FY_RN_MAX_GATEWAYS ? FY_STRLIST_MAX : FY_RN_MAX_GATEWAYS];
    size_t ngw = 0;
    int status = run_enrollment(o, &e, gw, &ngw);
    if (status >= 0) {
        return status;
    }
    if (run_tls(r, o->data_dir)) {
        return 1;
    }
    const char *served =
        r->api ? (o->mo.served_name ? o->mo.served_name : fy_engine_model_name(r->engine)) : NULL;
    const char *const *models = served ? &served : NULL;
    size_t n_models = served ? 1 : 0;
    if (r->upstream && run_upstream_models(r, o, &models, &n_models)) {
        return 1;
    }
    run_signals_start(r);
    fy_rn_tunnel_options tno;
    tunnel_options(&tno, r, o);
    tno.name = e.name;
    tno.gateways = gw;
    tno.ngateways = ngw;
    tno.models = models;
    tno.n_models = n_models;
    int rc = fy_rn_tunnel_new(&r->loop, &tno, &r->tunnel);
    if (rc) {
        fprintf(stderr, "ferry-runner run: cannot start the tunnel: %s\n", fy_strerror(rc));
        return 1;
    }
    log_started(o, &tno, served);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    return r->drained ? 0 : 1;
}

/* Everything after the loop exists: the upstream (checked by
 * --check-config too), the signals, the model, then the tunnel unless the
 * model serves only locally. Returns the exit status. */
static int run_serve(run_ctx *r, const run_opts *o)
{
    char err[512];
    if (o->upstream) {
        fy_rn_upstream_options uo = {.url = o->upstream, .timeout_ms = (unsigned)o->up_timeout};
        int rc = fy_rn_upstream_new(&r->loop, &uo, &r->upstream, err, sizeof err);
        if (rc) {
            fprintf(stderr, "ferry-runner run: %s\n", err);
            return rc == FY_ENOMEM ? 1 : 2;
        }
    }
    if (o->check) {
        run_print_config(o);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    uv_signal_init(&r->loop, &r->sigterm);
    uv_signal_init(&r->loop, &r->sigint);
    r->sigterm.data = r->sigint.data = r;
    r->signals_open = 1;
    r->drain_ms = o->drain;
    if (o->mo.model) {
        int rc = model_start(r, &o->mo);
        if (rc) {
            return rc;
        }
        if (o->port_file) {
            char pb[16];
            snprintf(pb, sizeof pb, "%d\n", r->http ? fy_http_server_port(r->http) : 0);
            fy_file_write_atomic(o->port_file, pb, strlen(pb), 0644);
        }
        if (!o->data_dir) {
            run_signals_start(r);
            uv_run(&r->loop, UV_RUN_DEFAULT);
            return r->drained ? 0 : 1;
        }
    }
    return run_tunnel(r, o);
}

/* Frees what run_serve left: when it did not run until stopped, what model
 * mode opened first; then the loop is run until every handle closed. */
static void run_close(run_ctx *r)
{
    if (r->signals_open && !r->drained) {
        uv_close((uv_handle_t *)&r->sigterm, NULL);
        uv_close((uv_handle_t *)&r->sigint, NULL);
        if (r->http) {
            fy_http_server_close(r->http, NULL, NULL);
            r->http = NULL;
        }
        fy_api_free(r->api);
        r->api = NULL;
        if (r->engine) {
            fy_engine_destroy(r->engine);
            r->engine = NULL;
        }
    }
    fy_rn_models_free(r->models);
    r->models = NULL;
    fy_rn_upstream_free(r->upstream);
    r->upstream = NULL;
    uv_run(&r->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&r->loop)) {
        fy_log_event(FY_LOG_WARN, "runner", "event loop closed with handles open", NULL);
    }
    fy_rn_tunnel_free(r->tunnel);
    fy_chat_template_free(r->tmpl);
    fy_tls_config_free(r->tls);
}

/* Makes the loop, serves, and frees it all. Returns the exit status. */
static int run_start(const run_opts *o)
{
    run_ctx r;
    memset(&r, 0, sizeof r);
    if (uv_loop_init(&r.loop)) {
        fprintf(stderr, "ferry-runner run: cannot create an event loop\n");
        return 1;
    }
    int status = run_serve(&r, o);
    run_close(&r);
    return status;
}

int fy_rn_run_main(int argc, char **argv)
{
    run_opts o;
    fy_opt opts[RUN_NOPTS] = {{0}};
    run_opts_init(&o, opts);
    int status = run_parse(&o, opts, argc, argv);
    if (status < 0) {
        status = run_validate(&o);
    }
    if (status < 0) {
        status = run_start(&o);
    }
    json_decref(o.cfg_root);
    return status;
}
