/**
 * What the dashboard needs of the API, over HTTP on fake job operations: its files (fixed table, types,
 * CSP), sessions (cookie attributes, signed tokens, roles, cross-site refusal), the task list, the
 * thumbnail, the operators' retry and cancel, and the queue history. Every answer is checked against the
 * OpenAPI document.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyEvent } from '@mesh/jobs';
import { openApiContract } from '@mesh/testkit/contract';
import { createLogger } from '@mesh/common';
import { DASHBOARD_CSP } from '../src/dashboard.ts';
import { openApiDocument } from '../src/openapi.ts';
import { startQueueHistory } from '../src/queue-history.ts';
import { SESSION_COOKIE, sessionSigner } from '../src/session.ts';
import { ADMIN, KEY, SESSION_SECRET, startFakeApi, THUMBNAIL, type FakeApi } from './fakes.ts';

const contract = openApiContract(openApiDocument());
let api: FakeApi;
let origin: string;

beforeAll(async () => {
  api = await startFakeApi();
  origin = api.base;
});
afterAll(() => api.close());

const call = (path: string, init: RequestInit = {}) => contract.fetch(api.base + path, init);

/** Signs in as the page does (same origin), and answers the cookie's value. */
async function signIn(key: string): Promise<{ res: Response; cookie: string; token: string }> {
  const res = await call('/session', { method: 'POST', headers: { 'content-type': 'application/json', Origin: origin, 'Sec-Fetch-Site': 'same-origin' }, body: JSON.stringify({ key }) });
  const cookie = res.headers.get('set-cookie') ?? '';
  return { res, cookie, token: /^mesh_session=([^;]*)/.exec(cookie)?.[1] ?? '' };
}
const withSession = (token: string, headers: Record<string, string> = {}) => ({ Cookie: `${SESSION_COOKIE}=${token}`, ...headers });

let tasks = 0;
/** A task in the fake store, created `minutesAgo`, with a thumbnail or not. */
function addTask(o: { minutesAgo: number; videoId?: string; objectKey?: string; thumbnail?: string; state?: 'failed' }): string {
  const jobId = `00000000-0000-4000-a000-${String(++tasks).padStart(12, '0')}`;
  const at = new Date(Date.now() - o.minutesAgo * 60_000).toISOString();
  let view = applyEvent(null, { type: 'job.created', jobId, at, spec: { jobId, objectKey: o.objectKey ?? `list/${tasks}.mp4`, baseUrl: 'https://cdn.test/', videoId: o.videoId ?? `v${tasks}`, hasAudio: true, attempt: 1 } }, tasks * 10)!;
  if (o.thumbnail) view = applyEvent(view, { type: 'thumbnail.ready', jobId, at, object: { bucket: 'thumbs', key: o.thumbnail } }, tasks * 10 + 1)!;
  if (o.state === 'failed') view = applyEvent(view, { type: 'job.failed', jobId, at, stage: 'download', code: 'SOURCE_NOT_FOUND', reason: 'no such object' }, tasks * 10 + 2)!;
  api.views.set(jobId, view);
  return jobId;
}

describe('the dashboard page', () => {
  it('is served at / without a key, under a CSP that allows no inline script and scripts from this server only', async () => {
    const res = await call('/');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(res.headers.get('content-security-policy')).toBe(DASHBOARD_CSP);
    expect(DASHBOARD_CSP).toContain("script-src 'self';");
    expect(DASHBOARD_CSP).not.toMatch(/unsafe-inline|unsafe-eval/);
    const html = await res.text();
    expect(html).not.toMatch(/<script(?![^>]*\ssrc=)[^>]*>/);
    expect(html).not.toMatch(/\sstyle=|\son\w+=/);
  });

  it('loads every file it names, and every module those import, from /dashboard/ with its type', async () => {
    const seen = new Set<string>();
    const types: Record<string, string> = { js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8', svg: 'image/svg+xml' };
    const queue = [...(await (await call('/')).text()).matchAll(/(?:src|href)="(\/dashboard\/[^"]+)"/g)].map((m) => m[1]!);
    expect(queue).toEqual(expect.arrayContaining(['/dashboard/app.js', '/dashboard/uPlot.min.css', '/dashboard/app.css']));
    while (queue.length > 0) {
      const path = queue.shift()!;
      if (seen.has(path)) continue;
      seen.add(path);
      const res = await call(path);
      expect(res.status, path).toBe(200);
      expect(res.headers.get('content-type'), path).toBe(types[path.split('.').pop()!]);
      expect(res.headers.get('x-content-type-options'), path).toBe('nosniff');
      expect(res.headers.get('cache-control'), path).toBe(/shaka|uPlot/.test(path) ? 'public, max-age=86400' : 'no-cache');
      const text = await res.text();
      // The dashboard's own modules import each other by relative path, and load the libraries by theirs: each must be served too.
      if (path.endsWith('.js') && !/shaka|uPlot/.test(path)) {
        for (const m of text.matchAll(/^import [^;]*? from '\.\/([\w-]+\.js)';$/gm)) queue.push(`/dashboard/${m[1]}`);
        for (const m of text.matchAll(/'(\/dashboard\/[\w.-]+)'/g)) queue.push(m[1]!);
      }
    }
    expect([...seen]).toEqual(expect.arrayContaining(['/dashboard/shaka-player.compiled.js', '/dashboard/uPlot.iife.min.js', '/dashboard/player.js', '/dashboard/queues.js']));
    expect(seen.size).toBeGreaterThanOrEqual(12);
  });

  it.each(['/dashboard/index.html', '/dashboard/..%2Fsrc%2Fmain.ts', '/dashboard/uPlot.d.ts', '/dashboard/__proto__', '/dashboard/constructor', '/dashboard/shaka-player.uncompiled.js'])('serves no other file: %s is 404', async (path) => {
    expect((await call(path)).status).toBe(404);
  });
});

describe('dashboard sessions', () => {
  it('sign in with the key in the body: an HttpOnly, SameSite=Strict cookie with an expiry, and the role', async () => {
    const { res, cookie, token } = await signIn(ADMIN);
    expect(res.status).toBe(201);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = (await res.json()) as { signed_in: boolean; role: string; expires_at: string; jaeger_ui_url: string };
    expect(body).toMatchObject({ signed_in: true, role: 'admin', jaeger_ui_url: 'http://jaeger.test:16686' });
    expect(Date.parse(body.expires_at) - Date.now()).toBeGreaterThan(3590_000);
    expect(cookie).toMatch(new RegExp(`^${SESSION_COOKIE}=[\\w.-]+; Path=/; Max-Age=3600; HttpOnly; SameSite=Strict$`));
    // The key is nowhere in what the browser keeps.
    expect(cookie).not.toContain(ADMIN);
    expect(token.split('.')).toHaveLength(5);
    expect(await (await call('/session', { headers: withSession(token) })).json()).toMatchObject({ signed_in: true, role: 'admin' });
    expect(await (await call('/session')).json()).toEqual({ signed_in: false });
  });

  it('marks the cookie Secure when the request came over https through a proxy', async () => {
    const res = await call('/session', { method: 'POST', headers: { 'content-type': 'application/json', 'Sec-Fetch-Site': 'same-origin', 'X-Forwarded-Proto': 'https' }, body: JSON.stringify({ key: KEY }) });
    expect(res.headers.get('set-cookie')).toMatch(/; HttpOnly; SameSite=Strict; Secure$/);
  });

  it('refuses a wrong key (403), a missing one (400 naming it), and a sign-in from another origin', async () => {
    const wrong = await signIn('nope');
    expect(wrong.res.status).toBe(403);
    expect(wrong.cookie).toBe('');
    const missing = await call('/session', { method: 'POST', headers: { 'content-type': 'application/json', 'Sec-Fetch-Site': 'same-origin' }, body: '{}' });
    expect(missing.status).toBe(400);
    expect(await missing.json()).toMatchObject({ field: 'key', detail: 'key: is required' });
    const crossSite = await call('/session', { method: 'POST', headers: { 'content-type': 'application/json', Origin: 'https://evil.test' }, body: JSON.stringify({ key: ADMIN }) });
    expect(crossSite.status).toBe(403);
    expect(await crossSite.json()).toMatchObject({ type: 'tag:video-mesh,2026:problems/cross-site' });
    expect(crossSite.headers.get('set-cookie')).toBeNull();
  });

  it('authenticates the keyed routes (the event streams too: test/dashboard.test.ts follows them with an EventSource)', async () => {
    const { token } = await signIn(KEY);
    const taskId = addTask({ minutesAgo: 1 });
    expect((await call(`/video/encoding/${taskId}`, { headers: withSession(token) })).status).toBe(200);
    expect((await call('/video/encoding', { headers: withSession(token) })).status).toBe(200);
  });

  it("gives a session the role of its key: the client key's is refused the operators' routes and actions", async () => {
    const client = (await signIn(KEY)).token;
    const taskId = addTask({ minutesAgo: 1 });
    const same = { Origin: origin, 'Sec-Fetch-Site': 'same-origin' };
    for (const [method, path] of [['GET', '/admin/queues'], ['GET', '/admin/queues/history'], ['GET', '/admin/dead-letters'], ['POST', `/admin/jobs/${taskId}/cancel`], ['POST', `/admin/jobs/${taskId}/retry`], ['POST', '/admin/dead-letters/1/redrive']] as const) {
      const res = await call(path, { method, headers: withSession(client, same) });
      expect(res.status, `${method} ${path}`).toBe(403);
      expect(((await res.json()) as { detail: string }).detail).toBe("this route needs the operators' key (ADMIN_API_KEY)");
    }
    const operator = (await signIn(ADMIN)).token;
    expect((await call(`/admin/jobs/${taskId}/cancel`, { method: 'POST', headers: withSession(operator, same) })).status).toBe(202);
    expect((await call('/admin/queues', { headers: withSession(operator) })).status).toBe(200);
  });

  it.each<[string, Record<string, string>]>([
    ['another origin', { Origin: 'https://evil.test' }],
    ['a sibling subdomain (same site)', { 'Sec-Fetch-Site': 'same-site', Origin: 'https://other.video-mesh.test' }],
    ['a cross-site fetch', { 'Sec-Fetch-Site': 'cross-site' }],
    ['an opaque origin', { Origin: 'null' }],
    ['no Origin nor Sec-Fetch-Site', {}],
  ])('refuses a state-changing request riding on the session from %s', async (_name, headers) => {
    const operator = (await signIn(ADMIN)).token;
    const taskId = addTask({ minutesAgo: 1 });
    const res = await call(`/admin/jobs/${taskId}/cancel`, { method: 'POST', headers: withSession(operator, headers) });
    expect(res.status).toBe(403);
    expect(await res.json()).toMatchObject({ type: 'tag:video-mesh,2026:problems/cross-site' });
    // Reading is not state-changing, and a request with the key is no browser's: both go through.
    expect((await call(`/video/encoding/${taskId}`, { headers: withSession(operator, headers) })).status).toBe(200);
    expect((await call(`/admin/jobs/${taskId}/cancel`, { method: 'POST', headers: { ApiKey: ADMIN, ...headers } })).status).toBe(202);
  });

  it('refuses a token that is forged, changed, expired or signed for other keys or another secret (401, sign in again)', async () => {
    const signer = sessionSigner({ secret: SESSION_SECRET, apiKey: KEY, adminApiKey: ADMIN, ttlSec: 3600 });
    const good = signer.issue('client').token;
    const [v, , exp, nonce, mac] = good.split('.');
    const bad = [
      `${v}.admin.${exp}.${nonce}.${mac}`,
      `${v}.client.${Number(exp) + 3600}.${nonce}.${mac}`,
      signer.issue('admin', Date.now() - 3601_000).token,
      sessionSigner({ secret: SESSION_SECRET, apiKey: 'rotated-key', adminApiKey: ADMIN, ttlSec: 3600 }).issue('admin').token,
      sessionSigner({ secret: 'another-secret-0123456789abcdef0123', apiKey: KEY, adminApiKey: ADMIN, ttlSec: 3600 }).issue('admin').token,
      sessionSigner({ apiKey: KEY, adminApiKey: ADMIN, ttlSec: 3600 }).issue('admin').token,
      'garbage',
      '',
    ];
    expect((await call('/video/encoding', { headers: withSession(good) })).status).toBe(200);
    for (const token of bad) {
      const res = await call('/video/encoding', { headers: withSession(token) });
      expect(res.status, token).toBe(401);
      expect(await res.json()).toMatchObject({ type: 'tag:video-mesh,2026:problems/session-expired' });
      expect(await (await call('/session', { headers: withSession(token) })).json()).toEqual({ signed_in: false });
    }
    // No cookie and no key: as before.
    expect(await (await call('/video/encoding')).json()).toMatchObject({ status: 401, detail: 'missing ApiKey header' });
  });

  it('signs out by removing the cookie (from its own origin only)', async () => {
    expect((await call('/session', { method: 'DELETE', headers: { Origin: 'https://evil.test' } })).status).toBe(403);
    const res = await call('/session', { method: 'DELETE', headers: { 'Sec-Fetch-Site': 'same-origin' } });
    expect(res.status).toBe(204);
    expect(res.headers.get('set-cookie')).toBe(`${SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict`);
  });
});

describe('GET /video/encoding: the task list', () => {
  const list = async (query: string) => {
    const res = await call(`/video/encoding${query}`, { headers: { ApiKey: KEY } });
    expect(res.status, query).toBe(200);
    return (await res.json()) as { tasks: { task_id: string; video_id: string; state: string }[]; next_before: string | null };
  };

  it('answers recent tasks newest first, a page at a time, filtered by state and searched', async () => {
    const old = addTask({ minutesAgo: 500, videoId: 'list-old', objectKey: 'cats/Old Cat.mp4' });
    const mid = addTask({ minutesAgo: 400, videoId: 'list-mid', state: 'failed' });
    const fresh = addTask({ minutesAgo: 300, videoId: 'list-fresh', objectKey: 'cats/fresh.mp4' });
    const all = await list('?limit=100');
    const ids = all.tasks.map((t) => t.task_id);
    expect(ids.indexOf(fresh)).toBeLessThan(ids.indexOf(mid));
    expect(ids.indexOf(mid)).toBeLessThan(ids.indexOf(old));
    expect(all.next_before).toBeNull();

    const first = await list(`?limit=2&before=${encodeURIComponent(new Date(Date.now() - 299 * 60_000).toISOString())}`);
    expect(first.tasks.map((t) => t.task_id)).toEqual([fresh, mid]);
    expect(first.next_before).not.toBeNull();
    const second = await list(`?limit=2&before=${encodeURIComponent(first.next_before!)}`);
    expect(second.tasks.map((t) => t.task_id)).toEqual([old]);

    expect((await list('?state=failed')).tasks.map((t) => t.task_id)).toContain(mid);
    expect((await list('?state=failed')).tasks.every((t) => t.state === 'failed')).toBe(true);
    expect((await list('?search=CATS/')).tasks.map((t) => t.task_id).sort()).toEqual([old, fresh].sort());
    expect((await list(`?search=${mid.toUpperCase()}`)).tasks.map((t) => t.task_id)).toEqual([mid]);
    expect((await list('?search=list-fre')).tasks.map((t) => t.video_id)).toEqual(['list-fresh']);
  });

  it.each([
    ['?limit=0', 'limit', 'limit: must be at least 1'],
    ['?limit=500', 'limit', 'limit: must be at most 100'],
    ['?limit=1000', 'limit', 'limit: must be a whole number'],
    ['?limit=ten', 'limit', 'limit: must be a whole number'],
    ['?state=done', 'state', 'state: must be one of queued, processing, playable, complete, failed, cancelled'],
    ['?before=yesterday', 'before', /^before: /],
    ['?state=failed&state=complete', 'state', 'state: give it once'],
    ['?order=asc', 'order', 'unknown field order'],
  ])('refuses %s, naming the parameter', async (query, field, detail) => {
    const res = await call(`/video/encoding${query}`, { headers: { ApiKey: KEY } });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { field: string; detail: string };
    expect(body.field).toBe(field);
    expect(body.detail).toMatch(detail);
  });
});

describe('the thumbnail, the operators\' actions and the queue history', () => {
  it("serves a task's thumbnail as image/jpeg, and 404 while it has none", async () => {
    const withThumb = addTask({ minutesAgo: 2, thumbnail: 'v-thumb' });
    const res = await call(`/video/encoding/${withThumb}/thumbnail`, { headers: { ApiKey: KEY } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('image/jpeg');
    expect(new Uint8Array(await res.arrayBuffer())).toEqual(THUMBNAIL);
    const without = addTask({ minutesAgo: 2 });
    expect(await (await call(`/video/encoding/${without}/thumbnail`, { headers: { ApiKey: KEY } })).json()).toMatchObject({ status: 404, detail: `no thumbnail for task ${without} yet` });
    const gone = addTask({ minutesAgo: 2, thumbnail: 'missing' });
    expect((await call(`/video/encoding/${gone}/thumbnail`, { headers: { ApiKey: KEY } })).status).toBe(404);
  });

  it('retries and cancels through the operators\' routes as through the client\'s', async () => {
    const failed = addTask({ minutesAgo: 1, state: 'failed' });
    // The fake refuses every retry as the real one refuses a task that is not FAILED: the same answer on both routes.
    const viaClient = await call(`/video/encoding/${failed}/retry`, { method: 'POST', headers: { ApiKey: KEY } });
    const viaAdmin = await call(`/admin/jobs/${failed}/retry`, { method: 'POST', headers: { ApiKey: ADMIN } });
    expect(viaAdmin.status).toBe(viaClient.status);
    expect(await viaAdmin.json()).toEqual(await viaClient.json());
    expect((await call(`/admin/jobs/${failed}/cancel`, { method: 'POST', headers: { ApiKey: KEY } })).status).toBe(403);
    expect((await call(`/admin/jobs/${failed}/cancel`, { method: 'POST', headers: { ApiKey: ADMIN } })).status).toBe(202);
    expect((await call('/admin/jobs/00000000-0000-4000-8000-00000000dead/cancel', { method: 'POST', headers: { ApiKey: ADMIN } })).status).toBe(404);
  });

  it('answers the queue history in seconds', async () => {
    const res = await call('/admin/queues/history', { headers: { ApiKey: ADMIN } });
    expect(await res.json()).toEqual({ interval_sec: 10, window_sec: 900, samples: [{ at: '2026-11-30T10:00:00.000Z', queues: [{ consumer: 'downloader', pending: 2, ack_pending: 1, redelivered: 0, waiting: 0, attached: true }] }] });
  });
});

describe('session signing', () => {
  it('needs no SESSION_SECRET for replicas to agree: the API keys make the signing key, and any change to one ends the sessions', () => {
    const make = (o: { secret?: string; apiKey?: string; adminApiKey?: string }) => sessionSigner({ apiKey: KEY, adminApiKey: ADMIN, ttlSec: 60, ...o });
    const token = make({}).issue('admin').token;
    // Another replica (another process, same config) accepts it.
    expect(make({}).verify(token)).toMatchObject({ role: 'admin' });
    for (const other of [{ apiKey: 'rotated' }, { adminApiKey: 'rotated' }, { secret: 'now-set-0123456789abcdef0123456789' }]) expect(make(other).verify(token), JSON.stringify(other)).toBeNull();
    // Only the operators' key makes an admin session: the client key alone cannot sign one.
    const withoutAdminKey = sessionSigner({ apiKey: KEY, ttlSec: 60 }).issue('admin').token;
    expect(make({}).verify(withoutAdminKey)).toBeNull();
  });
});

describe('the queue history', () => {
  it('keeps a sample per interval for the window, oldest first, and says once that the queues cannot be read', async () => {
    let now = Date.parse('2026-11-30T10:00:00.000Z');
    let pending = 0;
    let failing = false;
    const lines: string[] = [];
    const log = createLogger('test', 'warn', { write: (l: string) => void lines.push(l) });
    const depth = { consumer: 'transcoder-720', stream: 'WORK', subject: 'work.transcode.720p', ack_pending: 1, redelivered: 0, waiting: 0, exists: true, attached: true, stalled: false, last_active: null };
    const history = startQueueHistory(
      async () => {
        if (failing) throw new Error('NATS away');
        return [{ ...depth, pending: pending++ }];
      },
      { intervalMs: 60_000, windowMs: 5 * 60_000, log, now: () => now },
    );
    try {
      for (let i = 0; i < 8; i++) {
        now += 60_000;
        await history.sample();
      }
      const samples = history.samples();
      // The window holds five intervals: the newest six samples (the first at its very edge).
      expect(samples.map((s) => s.queues[0]!.pending)).toEqual([3, 4, 5, 6, 7, 8]);
      expect(samples).toHaveLength(6);
      expect(samples[0]).toEqual({ at: new Date(now - 5 * 60_000).toISOString(), queues: [{ consumer: 'transcoder-720', pending: 3, ack_pending: 1, redelivered: 0, waiting: 0, attached: true }] });
      failing = true;
      now += 60_000;
      await history.sample();
      now += 60_000;
      await history.sample();
      expect(lines.filter((l) => l.includes('could not read the queues'))).toHaveLength(1);
      // A gap, not made-up points: the samples that aged out are gone, none were added.
      expect(history.samples().map((s) => s.queues[0]!.pending)).toEqual([5, 6, 7, 8]);
    } finally {
      history.stop();
    }
  });
});
