// overview.js: the gateway at a glance, polled every 2 s from
// /admin/v1/overview. Requests/s and tokens/s are the differences between
// successive polls' totals, over the time between them.
import { get } from './api.js';
import { canvasBox, chart, update } from './charts.js';
import { clear, clockMs, dec, empty, errorText, h, num, section, table } from './ui.js';

export const title = 'Overview';
const POLL_MS = 2000;
const POINTS = 60; // two minutes of history

export async function render(root) {
  const stats = h('dl.stats');
  const models = h('div');
  const errors = h('div');
  const status = h('p.muted', { role: 'status' });
  const rps = canvasBox('Requests per second over the last two minutes');
  const tps = canvasBox('Tokens per second (prompt and completion) over the last two minutes');
  root.append(
    h('h1', { text: 'Overview' }),
    section('Now', stats, status),
    h('div.grid2', {}, section('Requests per second', rps.box), section('Tokens per second', tps.box)),
    h('div.grid2', {}, section('Models served', models), section('Errors by status', errors)),
  );
  const labels = [];
  const series = { rps: [], prompt: [], completion: [] };
  const rpsChart = chart(rps.canvas, 'line', labels, [{ label: 'requests/s', data: series.rps }]);
  const tpsChart = chart(tps.canvas, 'line', labels, [
    { label: 'prompt tokens/s', data: series.prompt },
    { label: 'completion tokens/s', data: series.completion },
  ]);
  let last = null;
  let timer = null;
  let stopped = false;

  async function poll() {
    try {
      const o = await get('/admin/v1/overview');
      const now = performance.now();
      if (last) {
        const dt = (now - last.t) / 1000;
        push(labels, clockMs(Date.now()));
        push(series.rps, Math.max(0, (o.requests_total - last.o.requests_total) / dt));
        push(series.prompt, Math.max(0, (o.tokens_total.prompt - last.o.tokens_total.prompt) / dt));
        push(series.completion, Math.max(0, (o.tokens_total.completion - last.o.tokens_total.completion) / dt));
        update(rpsChart, labels, [{ data: series.rps }]);
        update(tpsChart, labels, [{ data: series.prompt }, { data: series.completion }]);
      }
      last = { o, t: now };
      showStats(o);
      status.textContent = '';
    } catch (e) {
      status.textContent = `Could not refresh: ${errorText(e)}`;
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }

  function showStats(o) {
    const rate = series.rps.length ? series.rps[series.rps.length - 1] : null;
    const tok = series.prompt.length
      ? series.prompt[series.prompt.length - 1] + series.completion[series.completion.length - 1]
      : null;
    clear(stats).append(
      stat('Runners connected', num(o.runners_connected), 'runners-connected'),
      stat('Models served', num(o.models.length), 'models-served'),
      stat('Requests/s', rate === null ? 'measuring…' : dec(rate), 'rps'),
      stat('Tokens/s', tok === null ? 'measuring…' : dec(tok), 'tps'),
      stat('Requests waiting', num(o.requests_waiting), 'waiting'),
      stat('In flight', num(o.requests_in_flight), 'in-flight'),
      stat('Requests since start', num(o.requests_total), 'requests-total'),
    );
    clear(models).append(
      o.models.length
        ? h('ul.tags', {}, o.models.map((m) => h('li', { text: m })))
        : empty('No model is served yet — enroll a runner on the Runners page and start it.'),
    );
    const errs = Object.entries(o.errors_by_status || {}).filter(([, n]) => n > 0);
    clear(errors).append(
      table('Errors by HTTP status', [
        { label: 'Status', cell: ([s]) => s },
        { label: 'Requests', cell: ([, n]) => num(n), cls: 'n' },
      ], errs, 'No errors since the gateway started.'),
    );
  }

  await poll();
  return () => {
    stopped = true;
    clearTimeout(timer);
    rpsChart.destroy();
    tpsChart.destroy();
  };
}

function push(a, v) {
  a.push(v);
  if (a.length > POINTS) a.shift();
}

function stat(label, value, id) {
  return h('div.stat', { dataset: { stat: id } }, h('dt', { text: label }), h('dd', { text: value }));
}
