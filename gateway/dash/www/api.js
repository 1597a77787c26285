// api.js: the admin API from the dashboard. The session cookie (HttpOnly,
// set by POST /admin/v1/session) authenticates every call; every call other
// than GET carries the session's CSRF token in X-CSRF-Token.

let csrf = null;
let onSignedOut = () => {};

export class ApiError extends Error {
  constructor(status, body) {
    const e = body && body.error;
    super(e && e.message ? e.message : `the gateway answered HTTP ${status}`);
    this.status = status;
    this.code = e && e.code;
  }
}

export function setCsrf(token) {
  csrf = token;
}
// whenSignedOut(fn): FN runs when a call finds the session gone (401).
export function whenSignedOut(fn) {
  onSignedOut = fn;
}

// api(method, path, body): the parsed JSON answer (null for 204); throws
// ApiError for any status >= 400.
export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD' && csrf) headers['X-CSRF-Token'] = csrf;
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
    cache: 'no-store',
  });
  const text = await r.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (r.status === 401 && path !== '/admin/v1/session') onSignedOut();
  if (!r.ok) throw new ApiError(r.status, json);
  return json;
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body ?? {});
export const patch = (path, body) => api('PATCH', path, body);
export const del = (path) => api('DELETE', path);
