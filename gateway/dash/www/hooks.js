// hooks.js: webhooks. Create with a provider and secret, rotate the secret,
// turn body capture on or off with a retention; each hook's recent
// deliveries (status, latency, verification), requeue of dead ones and
// replay of any delivery whose body the gateway still has.
import { del, get, patch, post } from './api.js';
import {
  button, clear, dec, empty, errorText, field, formError, h, input, num, section, select, table, toast, whenMs,
} from './ui.js';

export const title = 'Hooks';
const PROVIDERS = [['github', 'GitHub'], ['stripe', 'Stripe'], ['slack', 'Slack'], ['hmac-sha256', 'Generic HMAC-SHA256'], ['none', 'None (no signature)']];

export async function render(root) {
  const listBox = h('div');
  const detail = h('div', { id: 'hook-detail' });
  let status = null;
  let open = null;
  let timer = null;
  root.append(h('h1', { text: 'Webhooks' }), section('Create a hook', createForm(() => refresh())),
    section('Hooks', listBox), detail);

  async function refresh() {
    try {
      const [r, s] = await Promise.all([get('/admin/v1/hooks'), status ? status : get('/admin/v1/status')]);
      status = s;
      clear(listBox).append(hookTable(r.hooks, s, { refresh, openHook }));
      if (open) {
        const fresh = r.hooks.find((x) => x.id === open.id);
        if (fresh) open = fresh;
      }
    } catch (e) {
      clear(listBox).append(h('p.error', { role: 'alert', text: errorText(e) }));
    }
  }

  async function openHook(hk, focus = true) {
    open = hk;
    const box = h('div');
    const sec = section(`Hook “${hk.name}”`, hookSettings(hk, refresh), box);
    sec.dataset.hook = hk.id;
    clear(detail).append(sec);
    await deliveries(hk, box);
    if (focus) {
      const h2 = sec.querySelector('h2');
      h2.setAttribute('tabindex', '-1');
      h2.focus();
    }
  }

  await refresh();
  timer = setInterval(async () => {
    await refresh();
    if (open && !detail.contains(document.activeElement)) await openHook(open, false);
  }, 3000);
  return () => clearInterval(timer);
}

function hookUrl(hk, status) {
  const l = status && status.listeners;
  return l ? `${status.public_scheme}://${l.public}${hk.url}` : hk.url;
}

function createForm(refresh) {
  const verify = select('verify', PROVIDERS);
  const header = field('Signature header', input('header'), 'generic HMAC only, e.g. X-Signature');
  const encoding = field('Signature encoding', select('encoding', [['hex', 'hex'], ['base64', 'base64']]), 'generic HMAC only');
  const form = h('form.grid-form', {},
    field('Name', input('name', { required: true, autocomplete: 'off' })),
    field('Provider', verify),
    field('Secret', input('secret', { type: 'password', autocomplete: 'new-password' }), 'the signing secret the provider shows you'),
    field('Runner', input('runner', { required: true }), 'the runner that receives the deliveries'),
    field('Runner path', input('path', { required: true, value: '/' }), 'where on the runner, e.g. /github'),
    header, encoding,
    h('div.field.check', {}, h('input', { type: 'checkbox', name: 'async', id: 'hook-async' }),
      h('label', { for: 'hook-async', text: 'Queue deliveries (answer the provider at once, retry on failure)' })),
    h('div.actions', {}, h('button', { type: 'submit', text: 'Create hook' })));
  const generic = () => {
    const g = verify.value === 'hmac-sha256';
    header.hidden = !g;
    encoding.hidden = !g;
  };
  verify.addEventListener('change', generic);
  generic();
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const err = formError(form);
    err.textContent = '';
    const f = form.elements;
    const body = { name: f.name.value.trim(), verify: f.verify.value, runner: f.runner.value.trim(), path: f.path.value.trim() };
    if (f.secret.value) body.secret = f.secret.value;
    if (f.async.checked) body.async = true;
    if (body.verify === 'hmac-sha256') {
      body.header = f.header.value.trim();
      body.encoding = f.encoding.value;
    }
    try {
      const hk = await post('/admin/v1/hooks', body);
      form.reset();
      generic();
      toast(`Hook ${hk.name} created: ${hk.url}`);
      refresh();
    } catch (e) {
      err.textContent = errorText(e);
    }
  });
  return form;
}

function hookTable(hooks, status, ctx) {
  return table('Webhooks', [
    { label: 'Name', cell: (k) => h('strong', { text: k.name }) },
    { label: 'URL', cell: (k) => h('code', { text: hookUrl(k, status) }) },
    { label: 'Provider', cell: (k) => k.verify },
    { label: 'To', cell: (k) => `${k.runner} ${k.path}` },
    { label: 'Mode', cell: (k) => (k.async ? 'queued' : 'direct') },
    { label: 'Delivered', cell: (k) => num(k.delivered), cls: 'n' },
    { label: 'Queued', cell: (k) => num(k.queued), cls: 'n' },
    { label: 'Dead', cell: (k) => num(k.dead), cls: 'n' },
    { label: 'Capture', cell: (k) => (k.capture ? 'on' : 'off') },
    { label: 'Actions', cell: (k) => button('Deliveries and settings', () => ctx.openHook(k), 'secondary', { 'aria-label': `Deliveries and settings of ${k.name}` }) },
  ], hooks, 'No hooks yet — create one above, then give its URL to GitHub, Stripe or Slack.', (k) => ({ dataset: { hook: k.id } }));
}

function hookSettings(hk, refresh) {
  const rotate = h('form.inline', { 'aria-label': `Rotate the secret of ${hk.name}` },
    field('New secret', input('secret', { type: 'password', required: true, autocomplete: 'new-password' })),
    field('Old secret still valid for', select('grace', [['1h', '1 hour'], ['1d', '1 day'], ['7d', '7 days']], '1d')),
    h('button', { type: 'submit', text: 'Rotate secret' }));
  rotate.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const err = formError(rotate);
    try {
      const r = await post(`/admin/v1/hooks/${encodeURIComponent(hk.id)}/rotate-secret`,
        { secret: rotate.elements.secret.value, grace: rotate.elements.grace.value });
      rotate.reset();
      err.textContent = '';
      toast(`Secret rotated; the old one works until ${whenMs(r.previous_secret_until * 1000)}`);
    } catch (e) {
      err.textContent = errorText(e);
    }
  });
  const cap = h('input', { type: 'checkbox', name: 'capture', id: `cap-${hk.id}`, checked: !!hk.capture });
  const capture = h('form.inline', { 'aria-label': `Body capture of ${hk.name}` },
    h('div.field.check', {}, cap, h('label', { for: cap.id, text: 'Keep the first 10 KiB of each body (needed to replay)' })),
    field('Keep bodies for', select('retention', [['3600', '1 hour'], ['86400', '1 day'], ['604800', '7 days']],
      String(hk.capture_retention_s || 86400))),
    h('button', { type: 'submit', text: 'Save capture' }));
  capture.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const err = formError(capture);
    try {
      await patch(`/admin/v1/hooks/${encodeURIComponent(hk.id)}`,
        { capture: cap.checked, capture_retention_s: Number(capture.elements.retention.value) });
      err.textContent = '';
      toast(`Capture ${cap.checked ? 'on' : 'off'} for ${hk.name}`);
      refresh();
    } catch (e) {
      err.textContent = errorText(e);
    }
  });
  const remove = button(`Delete hook ${hk.name}`, async () => {
    if (!window.confirm(`Delete hook “${hk.name}”? Its URL stops working at once.`)) return;
    try {
      await del(`/admin/v1/hooks/${encodeURIComponent(hk.id)}`);
      toast(`Hook ${hk.name} deleted`);
      refresh();
    } catch (e) {
      toast(errorText(e));
    }
  }, 'danger');
  return h('div', {}, h('h3', { text: 'Secret' }), rotate, h('h3', { text: 'Capture' }), capture, h('div.row', {}, remove));
}

async function deliveries(hk, box) {
  const heading = h('h3', { text: 'Recent deliveries' });
  let list;
  try {
    list = (await get(`/admin/v1/hooks/${encodeURIComponent(hk.id)}/deliveries?limit=50`)).deliveries;
  } catch (e) {
    clear(box).append(heading, h('p.error', { role: 'alert', text: `Could not list deliveries: ${errorText(e)}` }));
    return;
  }
  clear(box).append(heading, table(`Recent deliveries of ${hk.name}`, [
    { label: 'Time', cell: (d) => whenMs(d.time) },
    { label: 'Delivery', cell: (d) => h('code', { text: d.id }) },
    { label: 'State', cell: (d) => h(`span.badge${d.state === 'delivered' ? '.ok' : d.state === 'queued' ? '' : '.bad'}`, { text: d.state }) },
    { label: 'Verification', cell: (d) => d.verified },
    { label: 'Status', cell: (d) => (d.status === null ? '—' : String(d.status)) },
    { label: 'Latency (ms)', cell: (d) => dec(d.latency_ms), cls: 'n' },
    { label: 'Attempts', cell: (d) => num(d.attempts), cls: 'n' },
    { label: 'Replay of', cell: (d) => (d.replay_of ? h('code', { text: d.replay_of }) : '—') },
    { label: 'Actions', cell: (d) => deliveryActions(hk, d, box) },
  ], list, 'No deliveries yet — they appear here as the provider calls the hook URL.', (d) => ({ dataset: { delivery: d.id, state: d.state, verified: d.verified } })));
}

function deliveryActions(hk, d, box) {
  const base = `/admin/v1/hooks/${encodeURIComponent(hk.id)}/deliveries/${encodeURIComponent(d.id)}`;
  const act = (what, label) => button(label, async () => {
    try {
      const r = await post(`${base}/${what}`);
      toast(what === 'replay' ? `Replayed as delivery ${r.id}` : 'Requeued');
      await deliveries(hk, box);
    } catch (e) {
      toast(`${label} failed: ${errorText(e)}`);
    }
  }, 'secondary', { 'aria-label': `${label} delivery ${d.id}` });
  const can = d.captured || d.state === 'queued' || d.state === 'dead';
  return h('div.row', {}, can && d.state !== 'refused' ? act('replay', 'Replay') : null,
    d.state === 'dead' ? act('requeue', 'Requeue') : null,
    !can ? h('span.muted', { text: hk.capture ? 'body not kept' : 'capture off' }) : null);
}
