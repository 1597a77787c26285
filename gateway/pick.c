/* pick.c: the one connection picker: which tunnel connection a new stream
 * goes on, for a runner (/r/ requests, webhooks) or for a model (/v1). */
#include "gateway/gateway.h"

int fy_gw_conn_usable(const gw_conn *c)
{
    return c->runner && !c->draining && !c->closing && c->sess && fyp_session_ready(c->sess);
}

int fy_gw_conn_has_room(const gw_conn *c)
{
    if (!fy_gw_conn_usable(c)) {
        return 0;
    }
    const fyp_settings *ps = fyp_session_peer_settings(c->sess);
    return !ps || fyp_session_stream_count(c->sess) < ps->max_concurrent_streams;
}

static size_t runner_outstanding(const gw_runner *r)
{
    size_t n = 0;
    for (const gw_conn *c = r->conns; c; c = c->rnext) {
        n += c->n_px;
    }
    return n;
}

typedef struct {
    const gw_conn *exclude;
    int room;
    gw_conn **out;
    size_t *load;
    size_t n, max, usable;
} picker;

/* Considers C: kept in P's OUT (insertion sort by runner load, then
 * connection load; MAX is small) when usable, with room if asked. */
static void pick_offer(picker *p, gw_conn *c)
{
    if (c == p->exclude || !fy_gw_conn_usable(c)) {
        return;
    }
    p->usable++;
    if (p->room && !fy_gw_conn_has_room(c)) {
        return;
    }
    size_t l = runner_outstanding(c->runner);
    size_t k = p->n < p->max ? p->n++ : p->max;
    while (k > 0 &&
           (p->load[k - 1] > l || (p->load[k - 1] == l && p->out[k - 1]->n_px > c->n_px))) {
        if (k < p->max) {
            p->out[k] = p->out[k - 1];
            p->load[k] = p->load[k - 1];
        }
        k--;
    }
    if (k < p->max) {
        p->out[k] = c;
        p->load[k] = l;
    }
}

size_t fy_gw_model_pick(gw_model *m, const gw_conn *exclude, gw_conn **out, size_t max,
                        size_t *usable)
{
    size_t load[max ? max : 1];
    picker p = {exclude, 1, out, load, 0, max, 0};
    for (size_t i = 0; m && i < m->n_conns; i++) {
        pick_offer(&p, m->conns[i]);
    }
    if (usable) {
        *usable = p.usable;
    }
    return p.n;
}

size_t fy_gw_runner_pick(gw_runner *r, const gw_conn *exclude, int room, gw_conn **out, size_t max,
                         size_t *usable)
{
    size_t load[max ? max : 1];
    picker p = {exclude, room, out, load, 0, max, 0};
    for (gw_conn *c = r ? r->conns : NULL; c; c = c->rnext) {
        pick_offer(&p, c);
    }
    if (usable) {
        *usable = p.usable;
    }
    return p.n;
}

gw_conn *fy_gw_conn_pick(gw_runner *r, const gw_conn *exclude)
{
    gw_conn *c = NULL;
    return fy_gw_runner_pick(r, exclude, 0, &c, 1, NULL) ? c : NULL;
}
