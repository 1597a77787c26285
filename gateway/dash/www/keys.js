// keys.js: API keys. Create with limits, scopes and expiry (the key is shown
// once, here, with a copy button); edit limits; revoke; each key's usage
// per hour as a chart, from /admin/v1/usage?key=ID&by=hour.
import { get, patch, post } from './api.js';
import { canvasBox, chart } from './charts.js';
import {
  button, clear, copyButton, empty, errorText, field, formError, h, hourLabel, input, intField, limit,
  list, num, section, table, toast, when,
} from './ui.js';

export const title = 'Keys';
const LIMITS = [
  ['rpm', 'Requests per minute'],
  ['tpm', 'Tokens per minute'],
  ['concurrency', 'Concurrent requests'],
  ['burst', 'Burst (requests)'],
];

export async function render(root) {
  const created = h('div', { id: 'key-created' });
  const listBox = h('div');
  const detail = h('div', { id: 'key-detail' });
  let charts = [];
  const ctx = { refresh, showUsage, listBox };
  root.append(h('h1', { text: 'API keys' }), section('Create a key', createForm(created, ctx), created),
    section('Keys', listBox), detail);

  async function refresh() {
    try {
      const r = await get('/admin/v1/keys');
      clear(listBox).append(keyTable(r.keys, ctx));
    } catch (e) {
      clear(listBox).append(h('p.error', { role: 'alert', text: errorText(e) }));
    }
  }

  async function showUsage(k) {
    charts.forEach((c) => c.destroy());
    charts = [];
    const u = await get(`/admin/v1/usage?key=${encodeURIComponent(k.id)}&by=hour`);
    const rows = u.usage.slice().sort((a, b) => a.hour - b.hour).slice(-48);
    const total = rows.reduce((t, r) => ({
      requests: t.requests + r.requests,
      prompt: t.prompt + r.prompt_tokens,
      completion: t.completion + r.completion_tokens,
    }), { requests: 0, prompt: 0, completion: 0 });
    const box = canvasBox(`Requests and tokens per hour for key ${k.name}`);
    const sec = section(`Usage of “${k.name}”`,
      h('p', { dataset: { usageTotal: k.id } },
        `${num(total.requests)} requests, ${num(total.prompt)} prompt tokens, ${num(total.completion)} completion tokens.`),
      rows.length ? box.box : empty('No usage yet — calls made with this key show up here within seconds.'),
      button('Refresh usage', () => showUsage(k), 'secondary'),
      button('Close', () => { charts.forEach((c) => c.destroy()); charts = []; clear(detail); }, 'secondary'));
    sec.dataset.usageKey = k.id;
    clear(detail).append(sec);
    if (rows.length) {
      charts.push(chart(box.canvas, 'bar', rows.map((r) => hourLabel(r.hour)), [
        { label: 'requests', data: rows.map((r) => r.requests) },
        { label: 'prompt tokens', data: rows.map((r) => r.prompt_tokens) },
        { label: 'completion tokens', data: rows.map((r) => r.completion_tokens) },
      ]));
    }
    sec.querySelector('h2').setAttribute('tabindex', '-1');
    sec.querySelector('h2').focus();
  }

  await refresh();
  return () => charts.forEach((c) => c.destroy());
}

function scopesValue(v) {
  const parts = v.split(',').map((s) => s.trim()).filter(Boolean);
  return parts.length ? parts : null;
}

function createForm(out, ctx) {
  const form = h('form.grid-form', {},
    field('Name', input('name', { required: true, maxlength: '127', autocomplete: 'off' })),
    field('Owner', input('owner', { maxlength: '127', autocomplete: 'off' }), 'optional: who holds the key'),
    LIMITS.map(([n, l]) => field(l, input(n, { inputmode: 'numeric', pattern: '[0-9]*' }), 'empty or 0: no limit')),
    field('Models', input('models'), 'comma-separated; empty: any model'),
    field('Runners', input('runners'), 'comma-separated; empty: any runner'),
    field('Hooks', input('hooks'), 'comma-separated hook ids; empty: any'),
    field('Expires in', input('expires', { placeholder: 'never' }), 'e.g. 30d, 12h, or never'),
    h('div.actions', {}, h('button', { type: 'submit', text: 'Create key' })));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const err = formError(form);
    err.textContent = '';
    try {
      const body = { name: form.elements.name.value.trim() };
      if (form.elements.owner.value.trim()) body.owner = form.elements.owner.value.trim();
      for (const [n] of LIMITS) {
        const v = intField(form, n);
        if (v !== undefined) body[n] = v;
      }
      for (const s of ['models', 'runners', 'hooks']) {
        const v = scopesValue(form.elements[s].value);
        if (v) body[s] = v;
      }
      if (form.elements.expires.value.trim()) body.expires = form.elements.expires.value.trim();
      const k = await post('/admin/v1/keys', body);
      form.reset();
      showOnce(out, k);
      ctx.refresh();
    } catch (e) {
      err.textContent = errorText(e);
    }
  });
  return form;
}

// showOnce(out, k): the new key, the only time the gateway ever shows it.
function showOnce(out, k) {
  const code = h('code', { id: 'new-key', text: k.key });
  const dismiss = button('I have saved it', () => clear(out), 'secondary');
  clear(out).append(h('div.secret', { role: 'group', 'aria-label': 'New API key' },
    h('p', {}, h('strong', { text: `Key “${k.name}” created.` }),
      ' Copy it now: it is shown only this once and the gateway keeps only its hash.'),
    h('pre', {}, code),
    h('div.row', {}, copyButton(() => k.key, 'Copy key', code), dismiss)));
  dismiss.focus();
  k.key = null;
}

function keyState(k) {
  if (k.revoked_at) return h('span.badge.bad', { text: 'revoked' });
  if (k.expires_at && k.expires_at * 1000 < Date.now()) return h('span.badge.bad', { text: 'expired' });
  return h('span.badge.ok', { text: 'active' });
}

function keyTable(keys, ctx) {
  return table('API keys', [
    { label: 'Name', cell: (k) => h('span', {}, h('strong', { text: k.name }), ' ', keyState(k)) },
    { label: 'Prefix', cell: (k) => h('code', { text: k.prefix }) },
    { label: 'Limits', cell: (k) => `${limit(k.rpm)} rpm · ${limit(k.tpm)} tpm · ${limit(k.concurrency)} at once · burst ${k.burst === null ? '—' : num(k.burst)}` },
    { label: 'Scopes', cell: (k) => `models: ${list(k.models)}; runners: ${list(k.runners)}; hooks: ${list(k.hooks)}` },
    { label: 'Expires', cell: (k) => (k.expires_at ? when(k.expires_at) : 'never') },
    { label: 'Last used', cell: (k) => when(k.last_used_at) },
    { label: 'Requests', cell: (k) => num(k.usage.requests), cls: 'n' },
    { label: 'Tokens', cell: (k) => num(k.usage.prompt_tokens + k.usage.completion_tokens), cls: 'n' },
    { label: 'Actions', cell: (k) => keyActions(k, ctx) },
  ], keys, 'No keys yet — create one above.', (k) => ({ dataset: { key: k.id } }));
}

function keyActions(k, ctx) {
  const usage = button('Usage', () => ctx.showUsage(k).catch((e) => toast(errorText(e))), 'secondary',
    { 'aria-label': `Usage of ${k.name}` });
  if (k.revoked_at) return h('div.row', {}, usage);
  const edit = button('Edit limits', () => editLimits(k, edit, ctx), 'secondary', { 'aria-label': `Edit limits of ${k.name}` });
  const revoke = button('Revoke', async () => {
    if (!window.confirm(`Revoke key “${k.name}”? Requests with it are refused from the next one.`)) return;
    try {
      await post(`/admin/v1/keys/${encodeURIComponent(k.id)}/revoke`);
      toast(`Key ${k.name} revoked`);
      ctx.refresh();
    } catch (e) {
      toast(`Revoke failed: ${errorText(e)}`);
    }
  }, 'danger', { 'aria-label': `Revoke ${k.name}` });
  return h('div.row', {}, usage, edit, revoke);
}

function editLimits(k, anchor, ctx) {
  const form = h('form.grid-form.edit', { 'aria-label': `Limits of ${k.name}` },
    LIMITS.map(([n, l]) => field(l, input(n, {
      inputmode: 'numeric', pattern: '[0-9]*',
      value: n === 'burst' ? (k.burst_default ? '' : String(k.burst ?? '')) : String(k[n] || ''),
    }), n === 'burst' ? 'empty: the default, rpm/6' : 'empty or 0: no limit')),
    h('div.actions', {}, h('button', { type: 'submit', text: 'Save limits' }),
      button('Cancel', () => row.remove(), 'secondary')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const err = formError(form);
    try {
      const body = {};
      for (const [n] of LIMITS) body[n] = intField(form, n) ?? 0;
      await patch(`/admin/v1/keys/${encodeURIComponent(k.id)}`, body);
      toast(`Limits of ${k.name} saved`);
      ctx.refresh();
    } catch (e) {
      err.textContent = errorText(e);
    }
  });
  const host = anchor.closest('tr');
  const row = h('tr.edit-row', {}, h('td', { colspan: '9' }, form));
  host.after(row);
  form.elements.rpm.focus();
}
