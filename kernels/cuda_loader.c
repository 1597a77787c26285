/* cuda_loader.c: the CUDA entry points of kernels/backend.h and
 * kernels/cuda/cuda_api.h, as thin wrappers that load the CUDA backend
 * module (libferry_cuda.so, kernels/cuda/module.h) on first use and call
 * into it, the way ggml's GGML_BACKEND_DL does. Built into ferry_kernels
 * when the module is built (FY_HAVE_CUDA).
 *
 * Why a module: the CUDA libraries it links (cudart, cuBLAS, cuBLASLt,
 * NCCL) add ~200 MB of resident memory to any process that maps them, even
 * one that only prints --version or serves on the CPU. Loading them only
 * when CUDA is asked for keeps those processes small.
 *
 * Functions that create CUDA objects (probe, axpy, backend and group
 * creation) load the module; the others take an object only the module can
 * have made, so they never load it and do nothing (or return 0) when it is
 * not loaded. The module is never unloaded: its backends may live until
 * exit, and the CUDA runtime does not support being unloaded. */
#include "kernels/backend.h"
#include "kernels/cuda/cuda_api.h"
#include "kernels/cuda/module.h"

#include "common/err.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Process-wide by nature (one dlopen per process): the table once loaded,
 * or why it could not be. Written once under pthread_once. */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static _Atomic(const fy_cuda_module *) g_module;
static char g_path[PATH_MAX + 64];
static char g_why[PATH_MAX + 512];

/* <dir of the running executable>/../lib/libferry_cuda.so, or the bare
 * file name (the dynamic linker's search path) when /proc/self/exe cannot
 * be read. */
static void default_path(char *out, size_t outlen)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0'; /* the executable's directory */
            slash = strrchr(exe, '/');
        }
        if (slash) {
            *slash = '\0'; /* its parent */
            snprintf(out, outlen, "%s/lib/%s", exe, FY_CUDA_MODULE_FILE);
            return;
        }
    }
    snprintf(out, outlen, "%s", FY_CUDA_MODULE_FILE);
}

static void module_path(char *out, size_t outlen)
{
    const char *env = getenv(FY_CUDA_MODULE_ENV);
    if (env && *env) {
        snprintf(out, outlen, "%s", env);
    } else {
        default_path(out, outlen);
    }
}

/* Checks that the module was built against the same structs as this
 * binary. Returns NULL or what differs. */
static const char *module_mismatch(const fy_cuda_module *m)
{
    if (m->version != FY_CUDA_MODULE_VERSION) {
        return "its table version differs";
    }
    if (m->info_size != sizeof(fy_backend_info) || m->ops_size != sizeof(fy_backend_ops) ||
        m->backend_size != sizeof(fy_backend) || m->comm_size != sizeof(fy_comm) ||
        m->params_size != sizeof(fy_sample_params)) {
        return "its structs differ in size";
    }
    return NULL;
}

static void module_load(void)
{
    module_path(g_path, sizeof g_path);
    void *h = dlopen(g_path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(g_why, sizeof g_why,
                 "CUDA backend module %s: cannot open: %s (set %s to its path)", g_path,
                 e ? e : "unknown error", FY_CUDA_MODULE_ENV);
        return;
    }
    fy_cuda_module_fn fn = (fy_cuda_module_fn)dlsym(h, FY_CUDA_MODULE_SYMBOL);
    if (!fn) {
        snprintf(g_why, sizeof g_why, "CUDA backend module %s: no %s: not a ferry CUDA module",
                 g_path, FY_CUDA_MODULE_SYMBOL);
        dlclose(h);
        return;
    }
    const fy_cuda_module *m = fn();
    const char *bad = m ? module_mismatch(m) : "it returned no table";
    if (bad) {
        /* Not closed: its constructors ran, and unloading CUDA is unsafe. */
        snprintf(g_why, sizeof g_why,
                 "CUDA backend module %s: built from another ferry (%s): rebuild it with this "
                 "ferry-runner",
                 g_path, bad);
        return;
    }
    atomic_store_explicit(&g_module, m, memory_order_release);
}

/* Loads the module once; returns its table or NULL (g_why says why). */
static const fy_cuda_module *module_get(void)
{
    pthread_once(&g_once, module_load);
    return atomic_load_explicit(&g_module, memory_order_acquire);
}

/* The table if some earlier call loaded it, else NULL; never loads. */
static const fy_cuda_module *module_if_loaded(void)
{
    return atomic_load_explicit(&g_module, memory_order_acquire);
}

int fy_cuda_module_load(char *err, size_t errlen)
{
    if (module_get()) {
        return 0;
    }
    return fy_fail(err, errlen, FY_ENOTSUP, "%s", g_why);
}

void fy_cuda_module_path(char *out, size_t outlen)
{
    if (module_if_loaded()) {
        snprintf(out, outlen, "%s", g_path);
    } else {
        module_path(out, outlen);
    }
}

/* --- kernels/backend.h ----------------------------------------------------------- */

int fy_cuda_probe(fy_backend_info *info)
{
    const fy_cuda_module *m = module_get();
    if (m) {
        return m->probe(info);
    }
    memset(info, 0, sizeof *info);
    info->name = "cuda";
    info->compiled = 1;
    snprintf(info->detail, sizeof info->detail, "%.*s", (int)sizeof info->detail - 1, g_why);
    return FY_ENOTSUP;
}

int fy_cuda_axpy(size_t n, float a, const float *x, float *y, char *msg, size_t msglen)
{
    const fy_cuda_module *m = module_get();
    if (m) {
        return m->axpy(n, a, x, y, msg, msglen);
    }
    return fy_fail(msg, msglen, FY_ENOTSUP, "%s", g_why);
}

int fy_cuda_backend_create(int device, fy_backend **out, char *err, size_t errlen)
{
    const fy_cuda_module *m = module_get();
    if (m) {
        return m->backend_create(device, out, err, errlen);
    }
    *out = NULL;
    return fy_fail(err, errlen, FY_ENOTSUP, "%s", g_why);
}

int fy_cuda_comm_create(fy_backend *rank0, int n, fy_comm **out, char *err, size_t errlen)
{
    const fy_cuda_module *m = module_get();
    if (m) {
        return m->comm_create(rank0, n, out, err, errlen);
    }
    *out = NULL;
    return fy_fail(err, errlen, FY_ENOTSUP, "%s", g_why);
}

/* --- kernels/cuda/cuda_api.h --------------------------------------------------------- */

void fy_cuda_sample_filter(fy_backend *be, float *logits, const int32_t *counts,
                           const fy_sample_params *params, int n, int vocab)
{
    const fy_cuda_module *m = module_if_loaded();
    if (m) {
        m->sample_filter(be, logits, counts, params, n, vocab);
    }
}

size_t fy_cuda_kv_budget(fy_backend *be, double fraction)
{
    const fy_cuda_module *m = module_if_loaded();
    return m ? m->kv_budget(be, fraction) : 0;
}

int fy_cuda_attention_variant(fy_backend *be, int max_ctx, int n_tokens, int n_heads)
{
    const fy_cuda_module *m = module_if_loaded();
    return m ? m->attention_variant(be, max_ctx, n_tokens, n_heads) : 0;
}

int fy_cuda_tp_create(int n, const int *devices, fy_cuda_tp **out, char *err, size_t errlen)
{
    const fy_cuda_module *m = module_get();
    if (m) {
        return m->tp_create(n, devices, out, err, errlen);
    }
    *out = NULL;
    return fy_fail(err, errlen, FY_ENOTSUP, "%s", g_why);
}

void fy_cuda_tp_destroy(fy_cuda_tp *tp)
{
    const fy_cuda_module *m = module_if_loaded();
    if (m) {
        m->tp_destroy(tp);
    }
}

int fy_cuda_tp_size(const fy_cuda_tp *tp)
{
    const fy_cuda_module *m = module_if_loaded();
    return m ? m->tp_size(tp) : 0;
}

fy_backend *fy_cuda_tp_backend(fy_cuda_tp *tp, int r)
{
    const fy_cuda_module *m = module_if_loaded();
    return m ? m->tp_backend(tp, r) : NULL;
}

void fy_cuda_tp_all_reduce(fy_backend *be, float *buf, size_t n)
{
    const fy_cuda_module *m = module_if_loaded();
    if (m) {
        m->tp_all_reduce(be, buf, n);
    }
}

int fy_cuda_tp_shard(fy_backend *be, const fy_tensor *w, int column, int rank, int n,
                     fy_tensor *out, char *err, size_t errlen)
{
    const fy_cuda_module *m = module_if_loaded();
    if (m) {
        return m->tp_shard(be, w, column, rank, n, out, err, errlen);
    }
    return fy_fail(err, errlen, FY_EINVAL,
                   "cuda tp shard: not a CUDA backend (the CUDA module is not loaded)");
}
