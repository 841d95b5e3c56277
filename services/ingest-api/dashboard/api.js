// Calls to the API with the session cookie (same origin: the browser sends it, scripts never see it).
// A problem (RFC 9457) becomes an ApiError carrying its detail, for the page to show.

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail ?? `the API answered ${status}`);
    this.status = status;
    this.type = problem?.type ?? '';
  }
  /** The session is gone (expired, or signed out elsewhere): the page asks to sign in again. */
  get signedOut() {
    return this.status === 401;
  }
}

/** Whoever wants to know that the session ended (app.js shows the sign-in form). */
let onSignedOut = () => {};
export function whenSignedOut(fn) {
  onSignedOut = fn;
}

export async function api(path, { method = 'GET', body } = {}) {
  const init = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 204) return null;
  const type = res.headers.get('content-type') ?? '';
  const data = type.includes('json') ? await res.json() : null;
  if (!res.ok) {
    const err = new ApiError(res.status, data);
    if (err.signedOut) onSignedOut();
    throw err;
  }
  return data;
}

export const session = {
  get: () => api('/session'),
  signIn: (key) => api('/session', { method: 'POST', body: { key } }),
  signOut: () => api('/session', { method: 'DELETE' }),
};

export const tasks = {
  list: (q) => api(`/video/encoding?${new URLSearchParams(Object.entries(q).filter(([, v]) => v !== undefined && v !== ''))}`),
  get: (id) => api(`/video/encoding/${encodeURIComponent(id)}`),
  retry: (id) => api(`/admin/jobs/${encodeURIComponent(id)}/retry`, { method: 'POST' }),
  cancel: (id) => api(`/admin/jobs/${encodeURIComponent(id)}/cancel`, { method: 'POST' }),
  thumbnailUrl: (id) => `/video/encoding/${encodeURIComponent(id)}/thumbnail`,
};

export const admin = {
  queues: () => api('/admin/queues'),
  history: () => api('/admin/queues/history'),
  deadLetters: () => api('/admin/dead-letters'),
  redrive: (seq) => api(`/admin/dead-letters/${encodeURIComponent(seq)}/redrive`, { method: 'POST' }),
};
