// runners.js: enrolled runners and their tunnel connections; revoke; a new
// enrollment token with the exact `ferry-runner enroll` command to run on
// the runner's machine (the same command `ferry tokens create` prints).
import { get, post } from './api.js';
import {
  button, clear, copyButton, dec, empty, errorText, field, formError, h, input, num, section,
  select, table, toast, when,
} from './ui.js';

export const title = 'Runners';

// enrollCommand(status, token): what `ferry tokens create` prints. The
// gateway CA is pinned by its fingerprint when the gateway tells it, else
// by the CA file from the gateway's data dir.
export function enrollCommand(status, token) {
  const pin = status.ca_fingerprint ? `--ca-fingerprint ${status.ca_fingerprint}` : '--ca ca.crt';
  return `ferry-runner enroll --gateway ${status.listeners.tunnel} --token ${token} ${pin} --data-dir RUNNER_DIR`;
}

export async function render(root) {
  const listBox = h('div');
  const enrollBox = h('div');
  root.append(h('h1', { text: 'Runners' }), section('Enroll a runner', enrollForm(enrollBox), enrollBox),
    section('Enrolled runners', listBox));
  async function refresh() {
    try {
      const r = await get('/admin/v1/runners');
      clear(listBox).append(runnerList(r.runners, refresh));
    } catch (e) {
      clear(listBox).append(h('p.error', { role: 'alert', text: errorText(e) }));
    }
  }
  await refresh();
  const timer = setInterval(refresh, 5000);
  return () => clearInterval(timer);
}

function enrollForm(out) {
  const name = input('runner', { required: true, pattern: '[a-z0-9][a-z0-9-]{0,62}', autocomplete: 'off' });
  const ttl = select('ttl', [['15m', '15 minutes'], ['1h', '1 hour'], ['1d', '1 day'], ['7d', '7 days']], '1h');
  const form = h('form.inline', {},
    field('Runner name', name, 'lower-case letters, digits and dashes, e.g. gpu-box'),
    field('Token valid for', ttl),
    h('button', { type: 'submit', text: 'Create enrollment token' }));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const err = formError(form);
    err.textContent = '';
    try {
      const [tok, status] = await Promise.all([
        post('/admin/v1/tokens', { runner: name.value.trim(), ttl: ttl.value }),
        get('/admin/v1/status'),
      ]);
      showCommand(out, tok, status);
      form.reset();
    } catch (e) {
      err.textContent = errorText(e);
    }
  });
  return form;
}

function showCommand(out, tok, status) {
  const cmd = enrollCommand(status, tok.token);
  const code = h('code', { id: 'enroll-command', text: cmd });
  clear(out).append(
    h('div.secret', { role: 'group', 'aria-label': 'Enrollment command' },
      h('p', {}, `Token for runner “${tok.runner}”, one use, expires ${when(tok.expires_at)}. `,
        'Run this on the runner’s machine (RUNNER_DIR is where it keeps its key):'),
      h('pre', {}, code),
      h('div.row', {}, copyButton(() => cmd, 'Copy command', code)),
      status.ca_fingerprint ? null
        : h('p.muted', { text: 'Copy ca.crt from the gateway’s data directory next to the command.' })),
  );
  code.focus();
}

function state(r) {
  if (r.revoked_at) return h('span.badge.bad', { text: 'revoked' });
  return r.connected ? h('span.badge.ok', { text: 'connected' }) : h('span.badge', { text: 'offline' });
}

function runnerList(runners, refresh) {
  if (!runners.length) return empty('No runners yet — create an enrollment token above and run the command on the GPU box.');
  return h('div', {}, runners.map((r) => runnerCard(r, refresh)));
}

function runnerCard(r, refresh) {
  const revoke = r.revoked_at ? null : button(`Revoke ${r.name}`, async () => {
    if (!window.confirm(`Revoke runner “${r.name}”? Its connections drop at once and it cannot reconnect.`)) return;
    try {
      const a = await post(`/admin/v1/runners/${encodeURIComponent(r.name)}/revoke`);
      toast(`Runner ${r.name} revoked (${a.connections_dropped} connections dropped)`);
      refresh();
    } catch (e) {
      toast(`Revoke failed: ${errorText(e)}`);
    }
  }, 'danger');
  return h('article.runner', { dataset: { runner: r.name } },
    h('div.row.spread', {}, h('h3', {}, r.name, ' ', state(r)), revoke),
    h('p.muted', {},
      `enrolled ${when(r.enrolled_at)} · ${num(r.in_flight)} in flight · certificate ${r.fingerprint.slice(0, 23)}…`),
    table(`Connections of ${r.name}`, [
      { label: 'Peer', cell: (c) => c.peer },
      { label: 'Since', cell: (c) => when(c.since) },
      { label: 'RTT (ms)', cell: (c) => dec(c.rtt_ms), cls: 'n' },
      { label: 'Open streams', cell: (c) => num(c.streams), cls: 'n' },
      { label: 'Models', cell: (c) => (c.models.length ? c.models.join(', ') : 'none') },
    ], r.connections, r.revoked_at ? 'Revoked: it cannot connect.' : 'No connection now — start the runner with `ferry-runner run`.'));
}
