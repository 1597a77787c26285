// usage.js: requests, prompt tokens and completion tokens per key, per hour
// (the last 48 hours) and per day (the last 30 days, days in the browser's
// time zone), from /admin/v1/usage?by=hour; CSV export of the same rows.
import { get } from './api.js';
import { canvasBox, chart } from './charts.js';
import {
  button, clear, csvCell, dayLabel, download, empty, errorText, field, h, hourLabel, num, section, select, table,
} from './ui.js';

export const title = 'Usage';
const METRICS = [['requests', 'Requests'], ['prompt_tokens', 'Prompt tokens'], ['completion_tokens', 'Completion tokens']];

// dayStart(unix s): the start of that day in the browser's time zone.
function dayStart(s) {
  const d = new Date(s * 1000);
  d.setHours(0, 0, 0, 0);
  return Math.floor(d.getTime() / 1000);
}

// buckets(rows, key, width): per-key series over the last N buckets.
function buckets(rows, keyOf, count, step, startOf) {
  const now = Math.floor(Date.now() / 1000);
  const times = [];
  let t = startOf(now);
  for (let i = 0; i < count; i++) {
    times.unshift(t);
    t = startOf(t - step / 2 - 1);
  }
  const index = new Map(times.map((x, i) => [x, i]));
  const per = new Map();
  for (const r of rows) {
    const i = index.get(startOf(r.hour));
    if (i === undefined) continue;
    const k = keyOf(r);
    if (!per.has(k)) per.set(k, METRICS.map(() => new Array(count).fill(0)));
    METRICS.forEach(([m], j) => { per.get(k)[j][i] += r[m]; });
  }
  return { times, per };
}

export async function render(root) {
  let rows = [];
  let charts = [];
  const metric = select('metric', METRICS);
  const keySel = select('key', [['', 'every key']]);
  const hourBox = canvasBox('Usage per key per hour over the last 48 hours');
  const dayBox = canvasBox('Usage per key per day over the last 30 days');
  const totals = h('div');
  const note = h('p.muted', { role: 'status' });
  const controls = h('form.inline', { 'aria-label': 'Chart options' },
    field('Show', metric), field('Key', keySel),
    button('Refresh', () => load(), 'secondary'),
    button('Export CSV (per hour)', () => exportCsv(rows, 'hour'), 'secondary'),
    button('Export CSV (per day)', () => exportCsv(rows, 'day'), 'secondary'));
  controls.addEventListener('submit', (ev) => ev.preventDefault());
  metric.addEventListener('change', draw);
  keySel.addEventListener('change', draw);
  const chartsBox = h('div');
  root.append(h('h1', { text: 'Usage' }), section('Charts', controls, note, chartsBox), section('Totals per key', totals));

  function draw() {
    charts.forEach((c) => c.destroy());
    charts = [];
    const shown = rows.filter((r) => !keySel.value || r.key_id === keySel.value);
    if (!shown.length) {
      clear(chartsBox).append(empty('No usage yet — requests made with a key show up here (create keys on the Keys page).'));
      return;
    }
    clear(chartsBox).append(h('div.grid2', {}, h('div', {}, h('h3', { text: 'Per hour' }), hourBox.box),
      h('div', {}, h('h3', { text: 'Per day' }), dayBox.box)));
    const j = METRICS.findIndex(([m]) => m === metric.value);
    const name = (r) => r.name || r.key_id;
    const hourly = buckets(shown, name, 48, 3600, (s) => s - (s % 3600));
    const daily = buckets(shown, name, 30, 86400, dayStart);
    const series = (b) => [...b.per].map(([k, m]) => ({ label: k, data: m[j] }));
    charts.push(chart(hourBox.canvas, 'bar', hourly.times.map(hourLabel), series(hourly), { stacked: true }));
    charts.push(chart(dayBox.canvas, 'bar', daily.times.map(dayLabel), series(daily), { stacked: true }));
  }

  async function load() {
    try {
      const u = await get('/admin/v1/usage?by=hour');
      rows = u.usage;
      note.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
    } catch (e) {
      note.textContent = `Could not load usage: ${errorText(e)}`;
    }
    const keys = new Map(rows.map((r) => [r.key_id, r.name || r.key_id]));
    const was = keySel.value;
    clear(keySel).append(h('option', { value: '', text: 'every key' }),
      [...keys].map(([id, n]) => h('option', { value: id, text: n })));
    keySel.value = keys.has(was) ? was : '';
    draw();
    clear(totals).append(totalsTable(rows));
  }

  await load();
  return () => charts.forEach((c) => c.destroy());
}

function totalsTable(rows) {
  const per = new Map();
  for (const r of rows) {
    const t = per.get(r.key_id) || { name: r.name || r.key_id, id: r.key_id, requests: 0, prompt_tokens: 0, completion_tokens: 0 };
    METRICS.forEach(([m]) => { t[m] += r[m]; });
    per.set(r.key_id, t);
  }
  return table('Usage totals per key', [
    { label: 'Key', cell: (t) => t.name },
    { label: 'Id', cell: (t) => h('code', { text: t.id }) },
    ...METRICS.map(([m, l]) => ({ label: l, cell: (t) => num(t[m]), cls: 'n' })),
  ], [...per.values()], 'No usage yet — requests made with a key show up here.');
}

// exportCsv(rows, by): the same rows as the charts, per hour or summed per
// local day, as a CSV file built in the page.
export function exportCsv(rows, by) {
  const group = new Map();
  for (const r of rows) {
    const t = by === 'day' ? dayStart(r.hour) : r.hour;
    const k = `${r.key_id}\u0000${t}`;
    const g = group.get(k) || { key_id: r.key_id, name: r.name || '', t, requests: 0, prompt_tokens: 0, completion_tokens: 0 };
    METRICS.forEach(([m]) => { g[m] += r[m]; });
    group.set(k, g);
  }
  const lines = [['key_id', 'key_name', by === 'day' ? 'day_start' : 'hour_start', 'requests', 'prompt_tokens', 'completion_tokens']];
  for (const g of [...group.values()].sort((a, b) => a.t - b.t || a.key_id.localeCompare(b.key_id))) {
    lines.push([g.key_id, g.name, new Date(g.t * 1000).toISOString(), g.requests, g.prompt_tokens, g.completion_tokens]);
  }
  const text = lines.map((l) => l.map(csvCell).join(',')).join('\r\n') + '\r\n';
  download(`ferry-usage-per-${by}.csv`, text, 'text/csv');
}
