import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { Webhook } from 'standardwebhooks';
import { MeshError } from '@mesh/common';
import { freePort, startWebhookReceiver, type Answer, type ReceivedRequest, type WebhookReceiver } from '@mesh/testkit';
import { signingKey } from '../src/config.ts';
import { sendWebhook, signature, webhookRequest, whyNoAnswer, type EventWebhook, type Notification, type WebhookTarget } from '../src/webhook.ts';

const taskId = '11111111-2222-4333-8444-555555555555';
const success: Notification = { taskId, attempt: 1, status: 'SUCCESS' };
let backend: WebhookReceiver;
let answer: (req: ReceivedRequest) => Answer | Promise<Answer> = () => 200;

beforeAll(async () => {
  backend = await startWebhookReceiver({ respond: (req) => answer(req) });
});
afterAll(() => backend.stop());
afterEach(() => {
  answer = () => 200;
});

const target = (o: Partial<WebhookTarget> = {}): WebhookTarget => ({ endpoint: backend.url, apiKey: 'the-backend-key', timeoutMs: 2000, ...o });
const failure = (t: WebhookTarget, n: Notification = success) => sendWebhook(t, n).then(
  () => expect.unreachable('the try should have failed'),
  (e: unknown) => e as MeshError & { httpStatus: number },
);

describe('backend webhook', () => {
  it('is the original PUT with ApiKey and {taskId, status}, and follows no redirect', () => {
    const { url, init } = webhookRequest({ endpoint: 'https://api.example.test/v1/', apiKey: 'k', timeoutMs: 1000 }, success);
    expect(url).toBe('https://api.example.test/v1/video/processing/result');
    expect(init).toMatchObject({ method: 'PUT', redirect: 'manual', body: `{"taskId":"${taskId}","status":"SUCCESS"}` });
    expect(init.headers).toEqual({ 'content-type': 'application/json', ApiKey: 'k', 'Idempotency-Key': `${taskId}:SUCCESS` });
  });

  it('an event is POSTed to /video/processing/events with its body, keyed by its id', () => {
    const ready: EventWebhook = {
      taskId,
      attempt: 2,
      event: 'rendition.ready',
      rendition: '360p',
      body: { type: 'rendition.ready', taskId, attempt: 2, at: '2026-11-30T12:00:00.000Z', rendition: '360p', renditions: ['720p', '360p'], urls: { dash: 'https://cdn.test/v/manifest.mpd', hls: 'https://cdn.test/v/master.m3u8', storyboard: null } },
    };
    const { url, init } = webhookRequest({ endpoint: 'https://api.example.test/v1/', apiKey: 'k', timeoutMs: 1000 }, ready);
    expect(url).toBe('https://api.example.test/v1/video/processing/events');
    expect(init).toMatchObject({ method: 'POST', redirect: 'manual', body: JSON.stringify(ready.body) });
    expect(init.headers).toEqual({ 'content-type': 'application/json', ApiKey: 'k', 'Idempotency-Key': `${taskId}:2:rendition.ready:360p` });
    const { rendition: _rung, ...body } = ready.body;
    const completed = webhookRequest({ endpoint: 'https://api.example.test', apiKey: 'k', timeoutMs: 1000 }, { taskId, attempt: 2, event: 'job.completed', body: { ...body, type: 'job.completed' } });
    expect(completed.init.headers['Idempotency-Key']).toBe(`${taskId}:2:job.completed`);
  });

  it('delivers to a live backend', async () => {
    answer = () => 204;
    expect(await sendWebhook(target(), { ...success, status: 'FAILED' })).toBe(204);
    expect(backend.received.at(-1)).toMatchObject({ method: 'PUT', path: '/video/processing/result', body: { taskId, status: 'FAILED' } });
    expect(backend.received.at(-1)!.headers['apikey']).toBe('the-backend-key');
  });

  it.each([
    [400, true],
    [404, true],
    [410, true],
    [408, false],
    [429, false],
    [500, false],
    [503, false],
  ])('an answer %i is permanent: %s, and the reason names the status, not the backend', async (status, permanent) => {
    answer = () => status;
    const err = await failure(target());
    expect(err).toBeInstanceOf(MeshError);
    expect(err.permanent).toBe(permanent);
    expect(err.httpStatus).toBe(status);
    expect(err.message).toBe(`the backend answered ${status}`);
  });

  it('an unreachable backend is retryable, and the reason shows neither its address nor its port', async () => {
    const port = await freePort();
    const err = await failure(target({ endpoint: `http://127.0.0.1:${port}/hooks` }));
    expect(err.permanent).toBe(false);
    expect(err.httpStatus).toBe(0);
    expect(err.message).toBe('the backend did not answer: connection refused');
  });

  it('a backend that does not answer in time is retryable, with the time it was given', async () => {
    answer = () => new Promise((r) => setTimeout(() => r(200), 1000));
    const err = await failure(target({ timeoutMs: 200 }));
    expect(err.permanent).toBe(false);
    expect(err.message).toBe('the backend did not answer: no answer within 200 ms');
  });

  it('a host name that does not resolve is not named in the reason', async () => {
    const err = await failure(target({ endpoint: 'http://backend.does-not-exist.invalid' }));
    expect(err.message).toMatch(/^the backend did not answer: its host name (does not resolve|could not be looked up)/);
    expect(err.message).not.toContain('invalid');
  });

  it.each<[string, unknown, string]>([
    ['a refused connection', Object.assign(new TypeError('fetch failed'), { cause: Object.assign(new Error('connect ECONNREFUSED 10.0.0.7:8090'), { code: 'ECONNREFUSED' }) }), 'connection refused'],
    ['a host with several addresses, all refused', Object.assign(new TypeError('fetch failed'), { cause: new AggregateError([Object.assign(new Error('connect ECONNREFUSED ::1:8090'), { code: 'ECONNREFUSED' })], 'x') }), 'connection refused'],
    ['a reset', Object.assign(new TypeError('fetch failed'), { cause: Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }) }), 'connection reset'],
    ['a bad certificate', Object.assign(new TypeError('fetch failed'), { cause: Object.assign(new Error("Hostname/IP does not match certificate's altnames: Host: api.internal."), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' }) }), 'its TLS certificate was not accepted (ERR_TLS_CERT_ALTNAME_INVALID)'],
    ['an unknown code', Object.assign(new TypeError('fetch failed'), { cause: Object.assign(new Error('weird 10.1.1.1'), { code: 'EWEIRD' }) }), 'network error EWEIRD'],
    ['no code at all', new TypeError('fetch failed: https://api.internal/x'), 'the request failed'],
  ])('says why there was no answer from the error code alone: %s', (_what, err, reason) => {
    expect(whyNoAnswer(err, 1000)).toBe(reason);
  });
});

describe('a backend that redirects', () => {
  let elsewhere: WebhookReceiver;
  beforeAll(async () => {
    elsewhere = await startWebhookReceiver();
  });
  afterAll(() => elsewhere.stop());

  it.each([301, 302, 307, 308])('%i: nothing reaches where it points, and the try fails for good', async (status) => {
    answer = () => ({ status, headers: { location: `${elsewhere.url}/steal` } });
    const before = backend.received.length;
    const err = await failure(target());
    expect(backend.received).toHaveLength(before + 1);
    expect(elsewhere.received).toEqual([]);
    expect(err.permanent).toBe(true);
    expect(err.httpStatus).toBe(status);
    expect(err.message).toMatch(new RegExp(`^the backend redirected \\(${status}\\)`));
    expect(err.message).not.toContain('127.0.0.1');
  });
});

describe('Standard Webhooks signature (WEBHOOK_SECRET)', () => {
  const secret = `whsec_${randomBytes(32).toString('base64')}`;
  const signed = () => target({ signingKey: signingKey(secret) });
  const headersOf = (r: ReceivedRequest) => r.headers as Record<string, string>;

  it('matches the specification libraries\' own test vector', () => {
    const key = signingKey('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
    expect(signature(key, 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{"test": 2432232314}')).toBe('v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=');
  });

  it('signs what the backend receives so that the standardwebhooks library verifies it, beside the ApiKey and the original body', async () => {
    const n: Notification = { taskId, attempt: 2, status: 'FAILED' };
    await sendWebhook(signed(), n);
    const got = backend.received.at(-1)!;
    expect(new Webhook(secret).verify(got.text, headersOf(got))).toEqual({ taskId, status: 'FAILED' });
    expect(got.text).toBe(`{"taskId":"${taskId}","status":"FAILED"}`);
    expect(got.headers).toMatchObject({ apikey: 'the-backend-key', 'idempotency-key': `${taskId}:FAILED`, 'webhook-id': `${taskId}:2:FAILED` });
    expect(Math.abs(Number(got.headers['webhook-timestamp']) - Date.now() / 1000)).toBeLessThan(5);
  });

  it('signs an event webhook the same way, with its own id', async () => {
    const failed: EventWebhook = {
      taskId,
      attempt: 3,
      event: 'job.failed',
      body: { type: 'job.failed', taskId, attempt: 3, at: '2026-11-30T12:00:00.000Z', renditions: [], urls: { dash: null, hls: null, storyboard: null }, error: { stage: 'download', code: 'NOT_A_VIDEO', reason: 'not a video' } },
    };
    await sendWebhook(signed(), failed);
    const got = backend.received.at(-1)!;
    expect(got).toMatchObject({ method: 'POST', path: '/video/processing/events' });
    expect(new Webhook(secret).verify(got.text, headersOf(got))).toEqual(failed.body);
    expect(got.headers).toMatchObject({ apikey: 'the-backend-key', 'idempotency-key': `${taskId}:3:job.failed`, 'webhook-id': `${taskId}:3:job.failed` });
  });

  it('gives every try of one notification the same webhook-id, and a fresh signature', async () => {
    answer = () => 503;
    await failure(signed());
    answer = () => 200;
    await sendWebhook(signed(), success);
    const [first, second] = backend.received.slice(-2);
    expect(first!.headers['webhook-id']).toBe(`${taskId}:1:SUCCESS`);
    expect(second!.headers['webhook-id']).toBe(first!.headers['webhook-id']);
    for (const r of [first!, second!]) expect(new Webhook(secret).verify(r.text, headersOf(r))).toEqual({ taskId, status: 'SUCCESS' });
  });

  it('a backend verifying with the library rejects a tampered body, another secret and a replay minutes later', async () => {
    await sendWebhook(signed(), success);
    const got = backend.received.at(-1)!;
    const wh = new Webhook(secret);
    expect(() => wh.verify(got.text.replace('SUCCESS', 'FAILED'), headersOf(got))).toThrow(/No matching signature/);
    expect(() => new Webhook(`whsec_${randomBytes(32).toString('base64')}`).verify(got.text, headersOf(got))).toThrow(/No matching signature/);
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(Date.now() + 10 * 60_000);
      expect(() => wh.verify(got.text, headersOf(got))).toThrow(/timestamp too old/);
    } finally {
      vi.useRealTimers();
    }
  });

  it('is left out when no secret is set', async () => {
    await sendWebhook(target(), success);
    expect(Object.keys(backend.received.at(-1)!.headers).filter((h) => h.startsWith('webhook-'))).toEqual([]);
  });
});
