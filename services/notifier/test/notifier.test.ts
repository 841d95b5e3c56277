/**
 * The notifier's consume loop on a real nats-server, against a stand-in backend: what it records on the
 * job (notification.sent, stage.failed) for each try, and what it logs.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Webhook } from 'standardwebhooks';
import { closeBus, connectBus, ensureStream, publishEvent, STREAMS, type Bus, type Worker } from '@mesh/bus';
import { commonConfig, createLogger, jobEventsFilter, JobEvent, type NewJobEvent } from '@mesh/common';
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
const logLines: string[] = [];
let notifier: Worker | undefined;

beforeAll(async () => {
  [nats, backend, elsewhere] = await Promise.all([
    startNats(),
    startWebhookReceiver({ respond: (r) => answers.get(taskOf(r))?.shift() ?? 200 }),
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
async function run(target: Partial<WebhookTarget> = {}, maxTries = 3): Promise<void> {
  const log = createLogger('notifier', 'info', { write: (line: string) => void logLines.push(line) });
  const config = { target: { endpoint: backend.url, apiKey: KEY, timeoutMs: 2000, signingKey: signingKey(SECRET), ...target }, maxTries };
  notifier = await startNotifier({ bus, log, config, common: { ...commonConfig({}), ackWaitMs: 5000, drainMs: 1000 } });
}

let n = 0;
const newJobId = () => `00000000-0000-4000-b000-${String(++n).padStart(12, '0')}`;
const taskOf = (r: ReceivedRequest) => (r.body as { taskId?: string }).taskId ?? '';
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
});
