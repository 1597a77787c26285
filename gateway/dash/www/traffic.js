// traffic.js: the last requests as they happen. The table starts from
// /admin/v1/traffic and grows from the SSE stream /admin/v1/traffic/stream;
// filters by key, status, model and runner; a row opens its headers (the
// gateway redacts secrets, and never sends a body or a key).
import { get } from './api.js';
import { button, clear, clockMs, dec, empty, errorText, field, h, input, num, section, select, whenMs } from './ui.js';

export const title = 'Live traffic';
const KEEP = 200;

function matches(r, f) {
  if (f.key && r.key_name !== f.key && r.key_id !== f.key) return false;
  if (f.model && r.model !== f.model) return false;
  if (f.runner && r.runner !== f.runner) return false;
  if (f.status === '200' && r.status !== 200) return false;
  if (f.status === '4xx' && !(r.status >= 400 && r.status < 500)) return false;
  if (f.status === '5xx' && !(r.status >= 500 && r.status < 600)) return false;
  return true;
}

export async function render(root) {
  let records = [];
  const filters = h('form.inline', { 'aria-label': 'Filters' },
    field('Key', input('key', { placeholder: 'name or id' })),
    field('Status', select('status', [['', 'any'], ['200', '200'], ['4xx', '4xx'], ['5xx', '5xx']])),
    field('Model', input('model')),
    field('Runner', input('runner')),
    button('Clear filters', () => { filters.reset(); draw(); }, 'secondary'));
  const live = h('p.muted', { id: 'traffic-live', role: 'status' }, 'Connecting…');
  const body = h('tbody');
  const tableBox = h('div');
  const detail = h('div', { id: 'traffic-detail' });
  filters.addEventListener('input', draw);
  filters.addEventListener('change', draw);
  filters.addEventListener('submit', (ev) => ev.preventDefault());
  root.append(h('h1', { text: 'Live traffic' }), section('Requests', filters, live, tableBox), detail);

  const f = () => Object.fromEntries(['key', 'status', 'model', 'runner'].map((n) => [n, filters.elements[n].value.trim()]));

  function draw() {
    const shown = records.filter((r) => matches(r, f()));
    if (!shown.length) {
      clear(tableBox).append(empty(records.length ? 'No request matches these filters — clear them to see every request.'
        : 'No requests yet — they appear here the moment a client calls the gateway with a key.'));
      return;
    }
    clear(body).append(...shown.map(row));
    if (!tableBox.contains(body)) {
      clear(tableBox).append(h('div.scroll', { role: 'region', 'aria-label': 'Recent requests', tabindex: '0' },
        h('table.traffic', {}, h('caption', { text: 'Recent requests, newest first' }),
          h('thead', {}, h('tr', {}, ['Time', 'Key', 'Runner', 'Model', 'Path', 'Status', 'Latency (ms)', 'Tokens', 'Details']
            .map((t) => h('th', { scope: 'col', text: t })))), body)));
    }
  }

  function row(r) {
    const tokens = r.prompt_tokens === null && r.completion_tokens === null ? '—'
      : `${num(r.prompt_tokens ?? 0)} + ${num(r.completion_tokens ?? 0)}`;
    const open = () => showDetail(r.id, detail);
    const tr = h('tr', { dataset: { request: r.id, status: String(r.status) }, on: { click: open } },
      h('td', { text: clockMs(r.time), title: whenMs(r.time) }),
      h('td', { text: r.key_name ?? r.key_id ?? '—' }),
      h('td', { text: r.runner ?? '—' }),
      h('td', { text: r.model ?? '—' }),
      h('td', {}, h('code', { text: `${r.method} ${r.path}` })),
      h('td', {}, h(`span.badge${r.status < 400 ? '.ok' : '.bad'}`, { text: String(r.status) })),
      h('td.n', { text: dec(r.latency_ms) }),
      h('td.n', { text: tokens }),
      h('td', {}, button('Details', (ev) => { ev.stopPropagation(); open(); }, 'secondary',
        { 'aria-label': `Details of ${r.method} ${r.path} at ${clockMs(r.time)}` })));
    return tr;
  }

  try {
    records = (await get(`/admin/v1/traffic?limit=${KEEP}`)).requests;
  } catch (e) {
    live.textContent = `Could not load recent requests: ${errorText(e)}`;
  }
  draw();
  const es = new EventSource('/admin/v1/traffic/stream');
  es.addEventListener('open', () => { live.textContent = 'Live: new requests appear at the top.'; });
  es.addEventListener('error', () => { live.textContent = 'The live stream dropped; reconnecting…'; });
  es.addEventListener('request', (ev) => {
    let r;
    try {
      r = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (records.some((x) => x.id === r.id)) return;
    records.unshift(r);
    if (records.length > KEEP) records.length = KEEP;
    draw();
  });
  return () => es.close();
}

async function showDetail(id, box) {
  let d;
  try {
    d = await get(`/admin/v1/traffic/${encodeURIComponent(id)}`);
  } catch (e) {
    clear(box).append(section('Request', h('p.error', { role: 'alert', text: errorText(e) })));
    return;
  }
  const headers = (caption, list) => (list && list.length
    ? h('div.scroll', { role: 'region', 'aria-label': caption, tabindex: '0' },
      h('table.headers', {}, h('caption', { text: caption }),
        h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'Name' }), h('th', { scope: 'col', text: 'Value' }))),
        h('tbody', {}, list.map(([n, v]) => h('tr', {}, h('td', {}, h('code', { text: n })), h('td', {}, h('code', { text: v })))))))
    : empty(`No ${caption.toLowerCase()}.`));
  const sec = section(`${d.method} ${d.path}`,
    h('dl.facts', {},
      [['Time', whenMs(d.time)], ['Status', String(d.status)], ['Key', d.key_name ?? d.key_id ?? '—'], ['Runner', d.runner ?? '—'],
        ['Model', d.model ?? '—'], ['Kind', d.kind], ['Latency (ms)', dec(d.latency_ms)],
        ['Prompt tokens', num(d.prompt_tokens)], ['Completion tokens', num(d.completion_tokens)]]
        .map(([k, v]) => h('div', {}, h('dt', { text: k }), h('dd', { text: v })))),
    h('p.muted', { text: 'Secrets in headers are redacted by the gateway; bodies and keys are never shown.' }),
    headers('Request headers', d.request_headers), headers('Response headers', d.response_headers),
    button('Close', () => clear(box), 'secondary'));
  sec.dataset.detail = id;
  clear(box).append(sec);
  const h2 = sec.querySelector('h2');
  h2.setAttribute('tabindex', '-1');
  h2.focus();
}
