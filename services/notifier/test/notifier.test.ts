/**
 * The notifier's consume loop on a real nats-server, against a stand-in backend: what it records on the
 * job (notification.sent, stage.failed) for each try, and what it logs.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Webhook } from 'standardwebhooks';
import { closeBus, connectBus, ensureStream, publishEvent, STREAMS, type Bus, type Worker } from '@mesh/bus';
import { commonConfig, createLogger, jobEventsFilter, JobEvent, WEBHOOK_EVENTS, type NewJobEvent, type WebhookEvent } from '@mesh/common';
import { freePort, startNats, startWebhookReceiver, type Answer, type NatsServer, type ReceivedRequest, type WebhookReceiver } from '@mesh/testkit';
import { signingKey } from '../src/config.ts';
import { startNotifier } from '../src/notifier.ts';
import type { WebhookTarget } from '../src/webhook.ts';

const KEY = 'the-backend-key-do-not-log';
const SECRET = `whsec_${randomBytes(32).toString('base64')}`;
let nats: NatsServer;
let bus: Bus;
let backend: WebhookReceiver;
let elsewhere: WebhookReceiver;
/** Answers the backend gives a job, one per request, before it answers 200. */
const answers = new Map<string, Answer[]>();
/** Or the answer for a job's request, by what it asks. */
const byRoute = new Map<string, (r: ReceivedRequest) => Answer>();
const logLines: string[] = [];
let notifier: Worker | undefined;

beforeAll(async () => {
  [nats, backend, elsewhere] = await Promise.all([
    startNats(),
    startWebhookReceiver({ respond: (r) => byRoute.get(taskOf(r))?.(r) ?? answers.get(taskOf(r))?.shift() ?? 200 }),
    startWebhookReceiver(),
  ]);
  bus = await connectBus({ url: nats.url, name: 'test', log: createLogger('test', 'silent') });
  // As runService does: giving up writes a dead letter.
  for (const stream of [STREAMS.events, STREAMS.deadLetters]) await ensureStream(bus.jsm, stream);
});
afterEach(async () => {
  await notifier?.stop();
  notifier = undefined;
});
afterAll(async () => {
  await closeBus(bus);
  await Promise.all([nats.stop(), backend.stop(), elsewhere.stop()]);
});

/** Runs the notifier as the service does, telling the backend at `target`, its log lines kept. */
async function run(target: Partial<WebhookTarget> = {}, maxTries = 3, events: WebhookEvent[] = []): Promise<void> {
  const log = createLogger('notifier', 'info', { write: (line: string) => void logLines.push(line) });
  const config = { target: { endpoint: backend.url, apiKey: KEY, timeoutMs: 2000, signingKey: signingKey(SECRET), ...target }, maxTries, events };
  notifier = await startNotifier({ bus, log, config, common: { ...commonConfig({}), ackWaitMs: 5000, drainMs: 1000 } });
}

let n = 0;
const newJobId = () => `00000000-0000-4000-b000-${String(++n).padStart(12, '0')}`;
const taskOf = (r: ReceivedRequest) => (r.body as { taskId?: string }).taskId ?? '';
const pathOf = (r: ReceivedRequest) => r.path;
const callsFor = (jobId: string) => backend.received.filter((r) => taskOf(r) === jobId);
const failed = (jobId: string, attempt: number): NewJobEvent => ({ type: 'job.failed', jobId, stage: 'download', code: 'SOURCE_NOT_FOUND', reason: 'missing', attempt });
const playable = (jobId: string): NewJobEvent => ({ type: 'job.playable', jobId, attempt: 1, manifest: { bucket: 'out', key: 'k/manifest.mpd' }, url: 'https://cdn.test/k/manifest.mpd' });

/** Every event the stream holds for the job, in order (what the projection folds into its status). */
async function eventsOf(jobId: string): Promise<JobEvent[]> {
  const subject = jobEventsFilter(jobId);
  const total = Object.values((await bus.jsm.streams.info(STREAMS.events.name, { subjects_filter: subject })).state.subjects ?? {}).reduce((a, b) => a + b, 0);
  const consumer = await bus.js.consumers.get(STREAMS.events.name, { filter_subjects: subject });
  const out: JobEvent[] = [];
  while (out.length < total) {
    const m = await consumer.next({ expires: 2000 });
    if (!m) break;
    out.push(JobEvent.parse(m.json()));
  }
  return out;
}

async function eventsUntil(jobId: string, ok: (events: JobEvent[]) => boolean, timeoutMs = 20_000): Promise<JobEvent[]> {
  let events: JobEvent[] = [];
  const end = Date.now() + timeoutMs;
  while (!ok((events = await eventsOf(jobId)))) {
    if (Date.now() > end) throw new Error(`timed out; events: ${JSON.stringify(events)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return events;
}

const tries = (events: JobEvent[]) => events.flatMap((e) => (e.type === 'notification.sent' ? [{ httpStatus: e.httpStatus, attempt: e.attempt, outcome: e.outcome, error: e.error }] : []));

/** Everything the notifier's consumer was given has been answered (acked or given up). */
async function caughtUp(timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const info = await bus.jsm.consumers.info(STREAMS.events.name, 'notifier');
    if (info.num_pending === 0 && info.num_ack_pending === 0) return;
    if (Date.now() > end) throw new Error(`the notifier has ${info.num_pending} events pending, ${info.num_ack_pending} held`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const published = (jobId: string, renditions: string[], added: string[], storyboard = false): NewJobEvent => ({
  type: 'manifest.published',
  jobId,
  attempt: 1,
  renditions,
  added,
  object: { bucket: 'out', key: 'k/manifest.mpd' },
  url: 'https://cdn.test/k/manifest.mpd',
  hls: { bucket: 'out', key: 'k/master.m3u8', url: 'https://cdn.test/k/master.m3u8' },
  ...(storyboard ? { storyboard: { bucket: 'out', key: `k/${jobId}.1/thumbs/storyboard.vtt`, url: `https://cdn.test/k/${jobId}.1/thumbs/storyboard.vtt` } } : {}),
});

describe('notifier', () => {
  it("records every try, and a retried job's notification under its own id, though it comes within the duplicate window", async () => {
    await run();
    const jobId = newJobId();
    answers.set(jobId, [503]);
    await publishEvent(bus, failed(jobId, 1));
    await eventsUntil(jobId, (es) => tries(es).some((t) => t.outcome === 'delivered'));
    await publishEvent(bus, failed(jobId, 2));
    await backend.waitFor(() => callsFor(jobId).length === 3, 20_000);
    const events = await eventsUntil(jobId, (es) => tries(es).length === 3);
    expect(tries(events)).toEqual([
      { httpStatus: 503, attempt: 1, outcome: 'retrying', error: 'the backend answered 503' },
      { httpStatus: 200, attempt: 2, outcome: 'delivered', error: undefined },
      { httpStatus: 200, attempt: 1, outcome: 'delivered', error: undefined },
    ]);
    // One webhook-id per job attempt, the same for its retries; each try signed anew.
    const calls = callsFor(jobId);
    expect(calls.map((c) => c.headers['webhook-id'])).toEqual([`${jobId}:1:FAILED`, `${jobId}:1:FAILED`, `${jobId}:2:FAILED`]);
    for (const c of calls) expect(new Webhook(SECRET).verify(c.text, c.headers as Record<string, string>)).toEqual({ taskId: jobId, status: 'FAILED' });
  });

  it('a redirect is a failed try, not retried, and nothing reaches where it points', async () => {
    await run();
    const jobId = newJobId();
    answers.set(jobId, [{ status: 302, headers: { location: `${elsewhere.url}/video/processing/result` } }]);
    await publishEvent(bus, playable(jobId));
    const events = await eventsUntil(jobId, (es) => es.some((e) => e.type === 'stage.failed'));
    expect(tries(events)).toMatchObject([{ httpStatus: 302, attempt: 1, outcome: 'gave_up', error: expect.stringMatching(/^the backend redirected \(302\)/) }]);
    expect(events.find((e) => e.type === 'stage.failed')).toMatchObject({ stage: 'notify', fatal: false, reason: expect.stringMatching(/^the backend redirected/) });
    // Stopping waits out the pull (5 s), longer than a retry's backoff (1-2 s): none came.
    await notifier!.stop();
    notifier = undefined;
    expect(callsFor(jobId)).toHaveLength(1);
    expect(elsewhere.received).toEqual([]);
  });

  it("an unreachable backend: the job says why without its address, the log names the host but never the key", async () => {
    const port = await freePort();
    await run({ endpoint: `http://127.0.0.1:${port}` }, 2);
    const jobId = newJobId();
    const logged = logLines.length;
    await publishEvent(bus, playable(jobId));
    const events = await eventsUntil(jobId, (es) => es.some((e) => e.type === 'stage.failed'));
    expect(tries(events)).toEqual([
      { httpStatus: 0, attempt: 1, outcome: 'retrying', error: 'the backend did not answer: connection refused' },
      { httpStatus: 0, attempt: 2, outcome: 'gave_up', error: 'the backend did not answer: connection refused' },
    ]);
    expect(events.find((e) => e.type === 'stage.failed')).toMatchObject({ reason: 'the backend did not answer: connection refused' });
    expect(JSON.stringify(events)).not.toMatch(new RegExp(`127\\.0\\.0\\.1|${port}`));
    const lines = logLines.slice(logged).filter((l) => l.includes(jobId));
    // Node's own words, address and all, are for the operator's log only.
    expect(lines.filter((l) => l.includes('backend not notified') && l.includes(`"host":"127.0.0.1:${port}"`) && l.includes('ECONNREFUSED'))).toHaveLength(2);
    expect(logLines.join('\n')).not.toContain(KEY);
    expect(logLines.join('\n')).not.toContain(SECRET.slice(6));
  });
  it('sends only the result notification unless WEBHOOK_EVENTS asks for more', async () => {
    await run();
    const jobId = newJobId();
    for (const e of [published(jobId, ['720p'], ['720p']), playable(jobId), { type: 'job.completed', jobId, attempt: 1, renditions: ['720p'] } as NewJobEvent]) await publishEvent(bus, e);
    await backend.waitFor(() => callsFor(jobId).length === 1);
    await caughtUp();
    expect(callsFor(jobId).map((c) => [c.method, pathOf(c), c.body])).toEqual([['PUT', '/video/processing/result', { taskId: jobId, status: 'SUCCESS' }]]);
  });

  it('with WEBHOOK_EVENTS, sends rendition.ready once per rung as a manifest first holds it, job.playable and job.completed with the URLs, each signed, beside the result', async () => {
    await run({}, 3, [...WEBHOOK_EVENTS]);
    const jobId = newJobId();
    const dash = 'https://cdn.test/k/manifest.mpd';
    const hls = 'https://cdn.test/k/master.m3u8';
    const vtt = `https://cdn.test/k/${jobId}.1/thumbs/storyboard.vtt`;
    await publishEvent(bus, published(jobId, ['720p'], ['720p']));
    await publishEvent(bus, { ...playable(jobId), renditions: ['720p'], hls: { bucket: 'out', key: 'k/master.m3u8', url: hls } } as NewJobEvent);
    await publishEvent(bus, published(jobId, ['720p', '360p'], ['360p'], true));
    // The same manifest again (the previews added to it): no rung is new.
    await publishEvent(bus, published(jobId, ['720p', '360p'], [], true));
    await publishEvent(bus, { type: 'job.completed', jobId, attempt: 1, renditions: ['720p', '360p'], manifest: { bucket: 'out', key: 'k/manifest.mpd' }, url: dash, hls: { bucket: 'out', key: 'k/master.m3u8', url: hls }, storyboard: { bucket: 'out', key: 'v', url: vtt } });
    await backend.waitFor(() => callsFor(jobId).length === 5);
    await caughtUp();
    const calls = callsFor(jobId);
    expect(calls).toHaveLength(5);
    for (const c of calls) expect(new Webhook(SECRET).verify(c.text, c.headers as Record<string, string>)).toEqual(c.body);
    const events = calls.filter((c) => pathOf(c) === '/video/processing/events');
    const byId = Object.fromEntries(events.map((c) => [c.headers['webhook-id'] as string, { method: c.method, key: c.headers['idempotency-key'], body: c.body }]));
    const at = expect.stringMatching(/^\d{4}-\d\d-\d\dT/);
    expect(byId).toEqual({
      [`${jobId}:1:rendition.ready:720p`]: { method: 'POST', key: `${jobId}:1:rendition.ready:720p`, body: { type: 'rendition.ready', taskId: jobId, attempt: 1, at, rendition: '720p', renditions: ['720p'], urls: { dash, hls, storyboard: null } } },
      [`${jobId}:1:job.playable`]: { method: 'POST', key: `${jobId}:1:job.playable`, body: { type: 'job.playable', taskId: jobId, attempt: 1, at, renditions: ['720p'], urls: { dash, hls, storyboard: null } } },
      [`${jobId}:1:rendition.ready:360p`]: { method: 'POST', key: `${jobId}:1:rendition.ready:360p`, body: { type: 'rendition.ready', taskId: jobId, attempt: 1, at, rendition: '360p', renditions: ['720p', '360p'], urls: { dash, hls, storyboard: vtt } } },
      [`${jobId}:1:job.completed`]: { method: 'POST', key: `${jobId}:1:job.completed`, body: { type: 'job.completed', taskId: jobId, attempt: 1, at, renditions: ['720p', '360p'], urls: { dash, hls, storyboard: vtt } } },
    });
    expect(calls.filter((c) => pathOf(c) === '/video/processing/result').map((c) => c.body)).toEqual([{ taskId: jobId, status: 'SUCCESS' }]);
    // Each call's tries are on the job, named by event.
    const sent = tries(await eventsUntil(jobId, (es) => tries(es).length === 5));
    expect(sent.every((t) => t.outcome === 'delivered')).toBe(true);
    const records = (await eventsOf(jobId)).flatMap((e) => (e.type === 'notification.sent' ? [[e.status, e.event ?? null, e.rendition ?? null]] : []));
    expect(records).toEqual(expect.arrayContaining([['SUCCESS', null, null], ['SUCCESS', 'job.playable', null], ['SUCCESS', 'rendition.ready', '720p'], ['SUCCESS', 'rendition.ready', '360p'], ['SUCCESS', 'job.completed', null]]));
  });

  it('sends job.failed with the reason, and retries only the call that failed when an event asks for two', async () => {
    await run({}, 3, ['job.failed']);
    const jobId = newJobId();
    // The events route answers 503 once; the result notification goes through at once.
    let refusedOnce = false;
    byRoute.set(jobId, (r) => (pathOf(r) === '/video/processing/events' && !refusedOnce ? ((refusedOnce = true), 503) : 200));
    await publishEvent(bus, failed(jobId, 1));
    await backend.waitFor(() => callsFor(jobId).length === 3, 20_000);
    await caughtUp();
    const calls = callsFor(jobId).map((c) => [c.method, pathOf(c), c.headers['webhook-id']]);
    expect(calls).toEqual([
      ['PUT', '/video/processing/result', `${jobId}:1:FAILED`],
      ['POST', '/video/processing/events', `${jobId}:1:job.failed`],
      ['POST', '/video/processing/events', `${jobId}:1:job.failed`],
    ]);
    expect(callsFor(jobId).at(-1)!.body).toEqual({ type: 'job.failed', taskId: jobId, attempt: 1, at: expect.any(String), renditions: [], urls: { dash: null, hls: null, storyboard: null }, error: { stage: 'download', code: 'SOURCE_NOT_FOUND', reason: 'missing' } });
    const events = await eventsUntil(jobId, (es) => tries(es).length === 3);
    expect(events.flatMap((e) => (e.type === 'notification.sent' ? [[e.event ?? 'result', e.attempt, e.outcome]] : []))).toEqual([
      ['result', 1, 'delivered'],
      ['job.failed', 1, 'retrying'],
      ['job.failed', 2, 'delivered'],
    ]);
  });
});
