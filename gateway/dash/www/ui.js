// ui.js: DOM construction and formatting shared by every page. Values from
// the server only ever reach the page as text nodes or attribute values set
// through the DOM (never innerHTML), so nothing a key name or a header holds
// can become markup.

// h('tag.class', {attr: value, on: {event: fn}}, ...children): an element.
// Children are nodes, strings (as text), arrays of those, or null (skipped).
export function h(spec, attrs, ...children) {
  const [tag, ...classes] = spec.split('.');
  const e = document.createElement(tag || 'div');
  if (classes.length) e.className = classes.join(' ');
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'on') {
      for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    } else if (k === 'text') {
      e.textContent = String(v);
    } else if (k === 'dataset') {
      Object.assign(e.dataset, v);
    } else if (k in e && typeof v !== 'string') {
      e[k] = v; // booleans and numbers as properties (checked, disabled, value)
    } else {
      e.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(e, children);
  return e;
}

function append(e, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(e, c);
    else e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// clear(node): removes every child.
export function clear(node) {
  node.replaceChildren();
  return node;
}

const numberFmt = new Intl.NumberFormat();
const decimalFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const timeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const hourFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: 'numeric' });
const dayFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium' });
const clockFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

// num(n): grouped digits in the browser's locale; "—" for null.
export function num(n) {
  return n === null || n === undefined ? '—' : numberFmt.format(n);
}
// dec(x): one decimal at most, grouped.
export function dec(x) {
  return x === null || x === undefined ? '—' : decimalFmt.format(x);
}
// when(unix seconds): date and time in the browser's time zone.
export function when(s) {
  return s ? timeFmt.format(new Date(s * 1000)) : '—';
}
export function whenMs(ms) {
  return ms ? timeFmt.format(new Date(ms)) : '—';
}
export function clockMs(ms) {
  return clockFmt.format(new Date(ms));
}
export function hourLabel(s) {
  return hourFmt.format(new Date(s * 1000));
}
export function dayLabel(s) {
  return dayFmt.format(new Date(s * 1000));
}
// limit(n): a limit where 0 means none.
export function limit(n) {
  return n ? numberFmt.format(n) : 'no limit';
}
export function list(a) {
  return a && a.length ? a.join(', ') : 'any';
}

// section(title, ...children): a page section with a heading; the heading's
// id labels it.
let uid = 0;
export function nextId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}
export function section(title, ...children) {
  const id = nextId('sec');
  return h('section.card', { 'aria-labelledby': id }, h('h2', { id, text: title }), ...children);
}

// field(label, input, hint): a label bound to its control (for/id).
export function field(label, input, hint) {
  if (!input.id) input.id = nextId('f');
  let hintEl = null;
  if (hint) {
    hintEl = h('small.hint', { id: `${input.id}-hint`, text: hint });
    input.setAttribute('aria-describedby', hintEl.id);
  }
  return h('div.field', {}, h('label', { for: input.id, text: label }), input, hintEl);
}

// input(name, attrs): a text-like input.
export function input(name, attrs = {}) {
  return h('input', { name, type: 'text', spellcheck: 'false', ...attrs });
}

// select(name, options): options as [value, text] pairs.
export function select(name, options, value) {
  const s = h('select', { name }, options.map(([v, t]) => h('option', { value: v, text: t })));
  if (value !== undefined) s.value = value;
  return s;
}

// button(text, onClick, cls): a real button.
export function button(text, onClick, cls, attrs = {}) {
  return h(`button${cls ? `.${cls}` : ''}`, { type: 'button', text, on: { click: onClick }, ...attrs });
}

// empty(message): an empty state saying what to do next.
export function empty(message) {
  return h('p.empty', { text: message });
}

// table(caption, columns, rows, emptyMessage): columns are
// {label, cell(row) -> node or text, cls}. Wrapped in a focusable region so
// a wide table scrolls from the keyboard on a phone.
export function table(caption, columns, rows, emptyMessage, rowAttrs) {
  if (!rows.length) return empty(emptyMessage);
  const t = h(
    'table',
    {},
    h('caption', { text: caption }),
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', text: c.label, class: c.cls })))),
    h(
      'tbody',
      {},
      rows.map((r) =>
        h(
          'tr',
          rowAttrs ? rowAttrs(r) : {},
          columns.map((c) => {
            const v = c.cell(r);
            return h('td', { class: c.cls, 'data-label': c.label }, v instanceof Node ? v : String(v ?? '—'));
          }),
        ),
      ),
    ),
  );
  return h('div.scroll', { role: 'region', 'aria-label': caption, tabindex: '0' }, t);
}

// toast(message): a polite announcement in the page's status region.
export function toast(message) {
  const t = document.getElementById('toast');
  if (!t) return;
  t.textContent = message;
  t.classList.add('show');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove('show'), 4000);
}

// copyButton(getText, label): copies to the clipboard; falls back to
// selecting the text when the Clipboard API is not allowed.
export function copyButton(getText, label, target) {
  return button(label, async () => {
    const text = getText();
    try {
      await navigator.clipboard.writeText(text);
      toast('Copied to the clipboard');
    } catch {
      if (target) {
        const r = document.createRange();
        r.selectNodeContents(target);
        const s = window.getSelection();
        s.removeAllRanges();
        s.addRange(r);
      }
      toast('Copy was not allowed: the text is selected, press Ctrl+C');
    }
  }, 'secondary');
}

// errorText(e): what to tell the user about a failed call.
export function errorText(e) {
  return e && e.message ? e.message : String(e);
}

// formError(form): the alert paragraph at the end of FORM (made on demand).
export function formError(form) {
  let p = form.querySelector('.error');
  if (!p) {
    p = h('p.error', { role: 'alert' });
    form.append(p);
  }
  return p;
}

// intOrNull(value): a whole number from a text field; "" -> null; NaN -> throws.
export function intField(form, name) {
  const v = form.elements[name].value.trim();
  if (v === '') return undefined;
  if (!/^\d+$/.test(v)) throw new Error(`${form.elements[name].labels[0].textContent} must be a whole number`);
  return Number(v);
}

// csvCell(v): one CSV field (RFC 4180 quoting).
export function csvCell(v) {
  const s = v === null || v === undefined ? '' : String(v);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

// download(name, text, type): saves TEXT as a file through a Blob URL.
export function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
