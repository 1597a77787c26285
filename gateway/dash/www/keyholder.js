// keyholder.js: the key holders' page on the public listener (/dashboard).
// The user's own key lives in one variable of this module, never in
// localStorage, sessionStorage or a cookie; /dashboard/api/me answers with
// that key's own limits, remaining quota and usage, and nothing else.
import { canvasBox, chart } from './charts.js';
import { clear, dayLabel, empty, h, hourLabel, limit, list, num, section, when } from './ui.js';

let apiKey = null;
let charts = [];
let timer = null;
const $ = (id) => document.getElementById(id);

async function me() {
  const r = await fetch('/dashboard/api/me', {
    headers: { Authorization: `Bearer ${apiKey}`, Accept: 'application/json' },
    credentials: 'omit',
    cache: 'no-store',
  });
  const j = await r.json().catch(() => null);
  if (!r.ok) {
    const msg = j && j.error && j.error.message;
    throw Object.assign(new Error(msg || `HTTP ${r.status}`), { status: r.status });
  }
  return j;
}

function forget(message) {
  apiKey = null;
  clearTimeout(timer);
  charts.forEach((c) => c.destroy());
  charts = [];
  clear($('kh-view'));
  $('kh-forget').hidden = true;
  $('kh-error').textContent = message || '';
}

function show(d) {
  charts.forEach((c) => c.destroy());
  charts = [];
  const k = d.key;
  const L = k.limits || {};
  const R = d.remaining || {};
  const facts = (pairs) => h('dl.facts', {}, pairs.map(([a, b]) => h('div', {}, h('dt', { text: a }), h('dd', { text: b }))));
  const scopes = k.scopes || {};
  const hourly = (d.usage && d.usage.hourly) || [];
  const daily = (d.usage && d.usage.daily) || [];
  const hourBox = canvasBox('Your requests and tokens per hour, last 48 hours');
  const dayBox = canvasBox('Your requests and tokens per day, last 30 days');
  const sum = (rows, m) => rows.reduce((t, r) => t + (r[m] || 0), 0);
  clear($('kh-view')).append(
    section(`Key “${k.name}”`, facts([
      ['Prefix', k.prefix], ['Expires', k.expires_at ? when(k.expires_at) : 'never'],
      ['Models', list(scopes.models)], ['Runners', list(scopes.runners)], ['Hooks', list(scopes.hooks)],
    ])),
    h('div.grid2', {},
      section('Limits', facts([
        ['Requests per minute', limit(L.rpm)], ['Tokens per minute', limit(L.tpm)],
        ['Concurrent requests', limit(L.concurrency)], ['Burst', L.burst ? num(L.burst) : '—'],
      ])),
      section('Remaining now', facts([
        ['Requests this minute', R.requests_this_minute === null ? 'no limit' : num(R.requests_this_minute)],
        ['Tokens this minute', R.tokens_this_minute === null ? 'no limit' : num(R.tokens_this_minute)],
        ['Concurrent requests', R.concurrency === null ? 'no limit' : num(R.concurrency)],
      ]))),
    section('Usage',
      h('p', { id: 'kh-total' }, `Last 30 days: ${num(sum(daily, 'requests'))} requests, ${num(sum(daily, 'prompt_tokens'))} prompt tokens, ${num(sum(daily, 'completion_tokens'))} completion tokens.`),
      hourly.length || daily.length
        ? h('div.grid2', {}, h('div', {}, h('h3', { text: 'Per hour' }), hourBox.box), h('div', {}, h('h3', { text: 'Per day' }), dayBox.box))
        : empty('No usage yet — calls you make with this key show up here.')),
  );
  const series = (rows) => [
    { label: 'requests', data: rows.map((r) => r.requests) },
    { label: 'prompt tokens', data: rows.map((r) => r.prompt_tokens) },
    { label: 'completion tokens', data: rows.map((r) => r.completion_tokens) },
  ];
  if (hourly.length || daily.length) {
    charts.push(chart(hourBox.canvas, 'bar', hourly.map((r) => hourLabel(r.hour)), series(hourly)));
    charts.push(chart(dayBox.canvas, 'bar', daily.map((r) => dayLabel(r.day ?? r.hour)), series(daily)));
  }
}

async function refresh() {
  if (!apiKey) return;
  try {
    show(await me());
    $('kh-error').textContent = '';
  } catch (e) {
    if (e.status === 401 || e.status === 429) {
      forget(e.status === 401 ? 'That key is not valid (unknown, revoked or expired).' : 'Too many attempts: wait a minute.');
      return;
    }
    $('kh-error').textContent = `Could not refresh: ${e.message}`;
  }
  timer = setTimeout(refresh, 10000);
}

$('kh-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  clearTimeout(timer);
  const input = $('kh-key');
  apiKey = input.value.trim();
  input.value = '';
  $('kh-forget').hidden = false;
  await refresh();
});
$('kh-forget').addEventListener('click', () => {
  forget('Your key is forgotten.');
  $('kh-key').focus();
});
