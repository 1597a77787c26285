// app.js: the admin dashboard, one page with hash routes (#/overview, ...).
// Plain ES modules, no framework and no build step: the gateway serves these
// files from its own binary. Sign-in exchanges the admin token for an
// HttpOnly session cookie; the token itself is never stored by the page.
import { api, setCsrf, whenSignedOut } from './api.js';
import { clear, errorText, h, toast } from './ui.js';
import * as overview from './overview.js';
import * as runners from './runners.js';
import * as keys from './keys.js';
import * as usage from './usage.js';
import * as hooks from './hooks.js';
import * as traffic from './traffic.js';

const routes = { overview, runners, keys, usage, hooks, traffic };
const $ = (id) => document.getElementById(id);
let stop = null; // the current page's cleanup (timers, event streams)
let signedIn = false;

function showSignIn(message) {
  signedIn = false;
  setCsrf(null);
  leavePage();
  clear($('view'));
  $('nav').hidden = true;
  $('signout').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message || '';
  $('signin-token').focus();
}

function showApp(session) {
  signedIn = true;
  setCsrf(session.csrf);
  $('signin').hidden = true;
  $('nav').hidden = false;
  $('signout').hidden = false;
  route();
}

function leavePage() {
  if (stop) {
    try {
      stop();
    } catch (e) {
      console.error(e);
    }
  }
  stop = null;
}

async function route() {
  if (!signedIn) return;
  const name = (location.hash.match(/^#\/([a-z]+)/) || [])[1] || 'overview';
  const page = routes[name] || overview;
  leavePage();
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.getAttribute('href') === `#/${name}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const view = clear($('view'));
  const root = h('div.page', { dataset: { page: name } });
  view.append(root);
  document.title = `${page.title} · ferry gateway`;
  try {
    stop = (await page.render(root)) || null;
  } catch (e) {
    root.append(h('p.error', { role: 'alert', text: `Could not load this page: ${errorText(e)}` }));
  }
}

async function signIn(ev) {
  ev.preventDefault();
  const tokenInput = $('signin-token');
  const err = $('signin-error');
  err.textContent = '';
  try {
    const s = await api('POST', '/admin/v1/session', { token: tokenInput.value.trim() });
    tokenInput.value = '';
    showApp(s);
  } catch (e) {
    err.textContent =
      e.status === 401
        ? 'That token is not the admin token.'
        : e.status === 429
          ? 'Too many failed sign-ins: wait a minute and try again.'
          : `Sign-in failed: ${errorText(e)}`;
    tokenInput.select();
  }
}

async function signOut() {
  try {
    await api('DELETE', '/admin/v1/session');
  } catch (e) {
    toast(`Sign-out: ${errorText(e)}`);
  }
  showSignIn('You are signed out.');
}

async function start() {
  $('signin-form').addEventListener('submit', signIn);
  $('signout').addEventListener('click', signOut);
  window.addEventListener('hashchange', route);
  whenSignedOut(() => {
    if (signedIn) showSignIn('Your session has ended: sign in again.');
  });
  try {
    showApp(await api('GET', '/admin/v1/session'));
  } catch {
    showSignIn();
  }
}

start();
