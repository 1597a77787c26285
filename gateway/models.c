/* models.c: the model index.
 *
 * A runner announces the models it serves in HELLO, once per connection (a
 * second HELLO is a protocol error, so a connection's models never change;
 * a runner that starts serving something else reconnects). The index maps
 * each model name to the registered connections that announced it: a
 * connection joins when its HELLO is accepted and leaves when it leaves the
 * registry (drain, close, death), so a model no live connection serves is
 * not in the index at all.
 *
 * The pick is "least outstanding": the runner with the fewest requests in
 * flight over all its connections (an engine's load is per runner, not per
 * connection), then its connection with the fewest, among connections that
 * can open a stream now (below the runner's MAX_CONCURRENT_STREAMS). The
 * index is small (models are few) and a lookup is a walk of it. */
#include "gateway/gateway.h"

#include "common/err.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

gw_model *fy_gw_model_find(fy_gw *gw, const char *name)
{
    for (gw_model *m = gw->tun.models; m; m = m->next) {
        if (strcmp(m->name, name) == 0) {
            return m;
        }
    }
    return NULL;
}

static int model_attach(fy_gw *gw, const char *name, gw_conn *c)
{
    gw_model *m = fy_gw_model_find(gw, name);
    int fresh = 0;
    if (!m) {
        m = calloc(1, sizeof *m);
        if (!m) {
            return FY_ENOMEM;
        }
        snprintf(m->name, sizeof m->name, "%s", name);
        m->created = (int64_t)time(NULL);
        fresh = 1;
    }
    if (m->n_conns == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 4;
        gw_conn **v = realloc(m->conns, cap * sizeof *v);
        if (!v) {
            if (fresh) {
                free(m);
            }
            return FY_ENOMEM;
        }
        m->conns = v;
        m->cap = cap;
    }
    m->conns[m->n_conns++] = c;
    if (fresh) {
        m->next = gw->tun.models;
        gw->tun.models = m;
    }
    return 0;
}

static void model_detach(fy_gw *gw, const char *name, gw_conn *c)
{
    gw_model **pp = &gw->tun.models;
    while (*pp && strcmp((*pp)->name, name) != 0) {
        pp = &(*pp)->next;
    }
    gw_model *m = *pp;
    if (!m) {
        return;
    }
    for (size_t i = 0; i < m->n_conns; i++) {
        if (m->conns[i] == c) {
            m->conns[i] = m->conns[--m->n_conns];
            break;
        }
    }
    if (m->n_conns == 0 && m->n_waiting == 0) {
        /* Requests waiting for it keep the entry (their count lives here);
         * the queue frees it once the last one leaves. */
        *pp = m->next;
        free(m->conns);
        free(m);
    }
}

void fy_gw_models_remove(gw_conn *c)
{
    for (size_t i = 0; i < c->n_models; i++) {
        model_detach(c->gw, c->models[i], c);
        free(c->models[i]);
    }
    free(c->models);
    c->models = NULL;
    c->n_models = 0;
}

int fy_gw_models_add(gw_conn *c, const fy_slice *models, size_t n)
{
    if (n == 0) {
        return 0;
    }
    c->models = calloc(n, sizeof *c->models);
    if (!c->models) {
        return FY_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        /* HELLO text is 1..255 visible ASCII bytes (checked by the codec). */
        char name[FY_GW_V1_MODEL_MAX];
        size_t len = models[i].len < sizeof name - 1 ? models[i].len : sizeof name - 1;
        memcpy(name, models[i].base, len);
        name[len] = '\0';
        int dup = 0;
        for (size_t k = 0; k < c->n_models && !dup; k++) {
            dup = strcmp(c->models[k], name) == 0;
        }
        if (dup || len == 0) {
            continue;
        }
        char *copy = strdup(name);
        if (!copy || model_attach(c->gw, name, c)) {
            free(copy);
            fy_gw_models_remove(c);
            return FY_ENOMEM;
        }
        c->models[c->n_models++] = copy;
    }
    return 0;
}

void fy_gw_model_waiters(fy_gw *gw, gw_model *m, int delta)
{
    if (delta > 0) {
        m->n_waiting++;
        return;
    }
    if (m->n_waiting > 0) {
        m->n_waiting--;
    }
    if (m->n_waiting == 0 && m->n_conns == 0) {
        for (gw_model **pp = &gw->tun.models; *pp; pp = &(*pp)->next) {
            if (*pp == m) {
                *pp = m->next;
                break;
            }
        }
        free(m->conns);
        free(m);
    }
}
