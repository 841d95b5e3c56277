// A few helpers to build the page from data: elements are made with text nodes, never from HTML
// strings, so nothing a job carries (an object key, a reason) can become markup.

/** h('a', {href, class: 'x', on: {click}}, 'text', child, ...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'on') for (const [event, fn] of Object.entries(value)) el.addEventListener(event, fn);
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name in el && typeof value !== 'string') el[name] = value;
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  el.append(...children.flat(Infinity).filter((c) => c !== undefined && c !== null && c !== false).map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter(Boolean));
  return el;
}

/** "12 s", "4 min", "3 h", "2 d". */
export function age(iso, now = Date.now()) {
  return duration(Math.max(0, now - Date.parse(iso)), { coarse: true });
}

/** "850 ms", "12.4 s", "2 min 05 s", "1 h 03 min". */
export function duration(ms, { coarse = false } = {}) {
  if (!Number.isFinite(ms)) return '';
  const s = ms / 1000;
  if (s < 1 && !coarse) return `${Math.round(ms)} ms`;
  if (s < 60) return coarse ? `${Math.floor(s)} s` : `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return coarse ? `${m} min` : `${m} min ${String(Math.round(s % 60)).padStart(2, '0')} s`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return coarse ? `${hours} h` : `${hours} h ${String(m % 60).padStart(2, '0')} min`;
  return `${Math.floor(hours / 24)} d`;
}

export function time(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return d.toLocaleString(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** "13:02:41": a time within a day shown elsewhere. */
export function clock(iso) {
  return iso ? new Date(iso).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' }) : '';
}

export function bytes(n) {
  if (!Number.isFinite(n)) return '';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n < 10 && i > 0 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

/** Renders the age of every [data-since] element again (ages move on without events). */
export function refreshAges(root) {
  for (const el of root.querySelectorAll('[data-since]')) el.textContent = age(el.dataset.since);
}

const scripts = new Map();
/** Loads a library's script once, when a page first needs it (Shaka Player is 830 KB: only a job's page plays). */
export function loadScript(src) {
  if (!scripts.has(src)) {
    scripts.set(src, new Promise((resolve, reject) => document.head.append(h('script', { src, on: { load: resolve, error: () => reject(new Error(`${src} did not load`)) } }))));
  }
  return scripts.get(src);
}
