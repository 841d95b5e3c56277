/**
 * Live progress over SSE against the real thing: ingest-api as a process on nats-server and the MongoDB
 * stand-in; the test plays the stages by publishing the jobs' events to JetStream itself.
 */
import { isDeepStrictEqual } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeBus, connectBus, publishEvent, STREAMS, type Bus } from '@mesh/bus';
import { createLogger, type NewJobEvent } from '@mesh/common';
import { openSse, startLoneApi, type LoneApi, type SseEvent } from '@mesh/testkit';
import { LiveEnd, LiveReady, LiveStatus, TaskStatus } from '../src/schemas.ts';

const MAX_BACKLOG = 40;
let api: LoneApi;
let bus: Bus;

beforeAll(async () => {
  api = await startLoneApi({ env: { SSE_HEARTBEAT_MS: '200', SSE_MAX_BACKLOG: String(MAX_BACKLOG) } });
  bus = await connectBus({ url: api.nats.url, name: 'live-test', log: createLogger('test', 'silent') });
});
afterAll(async () => {
  await closeBus(bus);
  await api?.stop();
});

const key = () => ({ ApiKey: api.apiKey });
const jobStream = (taskId: string, headers: Record<string, string> = key()) => openSse(`${api.url}/video/encoding/${taskId}/events`, { headers });
const allStream = (headers: Record<string, string> = key()) => openSse(`${api.url}/events`, { headers });
/** Publishes an event of the job as a stage would; answers its JOB_EVENTS sequence. */
const publish = async (event: NewJobEvent) => (await publishEvent(bus, event)).ack.seq;
const progress = (jobId: string, percent: number) => publish({ type: 'stage.progress', jobId, stage: 'transcode-720p', percent });
const status = (e: SseEvent) => {
  expect(e.event).toBe('message');
  const parsed = LiveStatus.parse(JSON.parse(e.data));
  expect(String(parsed.seq)).toBe(e.lastEventId);
  return parsed;
};
/** Polls `get` until `ok` holds (events, not fixed sleeps), failing with the last value. */
async function eventually<T>(get: () => T | Promise<T>, ok: (v: T) => boolean, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await get();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`not reached within ${timeoutMs} ms; last: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
/** GET /video/encoding/{id}, checked against the schema the streams use. */
const taskOf = async (id: string) => TaskStatus.parse(await (await fetch(`${api.url}/video/encoding/${id}`, { headers: key() })).json());
const consumerCount = async () => (await bus.jsm.streams.info(STREAMS.events.name)).state.consumer_count;

describe('many listeners, one reader', () => {
  it('50 open streams on one API process add one JetStream consumer, and give it back when they close', async () => {
    const jobs = await Promise.all(Array.from({ length: 5 }, () => api.submit()));
    const before = await consumerCount();
    const perJob = await Promise.all(Array.from({ length: 25 }, (_, i) => jobStream(jobs[i % 5]!)));
    const everyJob = await Promise.all(Array.from({ length: 25 }, () => allStream()));
    // Every stream has joined: its current status (one job) or its starting point (all jobs).
    for (const s of perJob) expect(status(await s.next()).task.task_id).toBe(jobs[perJob.indexOf(s) % 5]);
    for (const s of everyJob) expect(LiveReady.parse(JSON.parse((await s.next()).data)).reset).toBeUndefined();
    expect(await consumerCount()).toBe(before + 1);

    const seq = await progress(jobs[0]!, 42);
    const listening = [...perJob.filter((_, i) => i % 5 === 0), ...everyJob];
    for (const s of listening) {
      const got = status(await s.next());
      expect(got).toMatchObject({ seq, task: { task_id: jobs[0], stages: { 'transcode-720p': { percent: 42 } } } });
    }
    // The other jobs' streams heard nothing of it.
    expect(perJob.filter((_, i) => i % 5 !== 0).every((s) => s.events.length === 1)).toBe(true);
    expect(await consumerCount()).toBe(before + 1);

    for (const s of [...perJob, ...everyJob]) s.close();
    await Promise.all([...perJob, ...everyJob].map((s) => s.ended));
    // The reader stops a few seconds after its last listener, and its consumer goes with it.
    await eventually(consumerCount, (n) => n === before, 20_000);
  });
});

describe('GET /video/encoding/{task_id}/events', () => {
  it('sends the current status first, then each change as the status after it', async () => {
    const jobId = await api.submit();
    const s = await jobStream(jobId);
    expect(s.status).toBe(200);
    expect(s.headers['content-type']).toMatch(/^text\/event-stream/);
    expect(s.headers).toMatchObject({ 'cache-control': 'no-cache, no-transform', 'x-accel-buffering': 'no' });
    expect(status(await s.next()).task).toMatchObject({ task_id: jobId, task_status: 'PENDING', state: 'queued' });
    const started = await publish({ type: 'stage.started', jobId, stage: 'download' });
    expect(status(await s.next())).toMatchObject({ seq: started, task: { task_status: 'STARTED', stages: { download: { state: 'running' } } } });
    await publish({ type: 'thumbnail.ready', jobId, object: { bucket: 'thumbs', key: 'v1' } });
    // With the URL it is fetched from, as GET gives it (the lone API's S3 is AWS's regional endpoint).
    expect(status(await s.next()).task.thumbnail).toEqual({ bucket: 'thumbs', key: 'v1', url: 'https://s3.us-east-1.amazonaws.com/thumbs/v1' });
    s.close();
  });

  it('a stream resumed with Last-Event-ID after a dropped connection loses no change and repeats none', async () => {
    const jobId = await api.submit();
    const first = await jobStream(jobId);
    const initial = status(await first.next());
    const seen = [await progress(jobId, 10), await progress(jobId, 20)];
    for (const seq of seen) expect(status(await first.next()).seq).toBe(seq);
    first.close();
    await first.ended;

    // While nobody listens: more changes.
    const missed: number[] = [];
    for (const percent of [30, 40, 50, 60]) missed.push(await progress(jobId, percent));
    missed.push(await publish({ type: 'stage.done', jobId, stage: 'transcode-720p' }));

    const resumed = await jobStream(jobId, { ...key(), 'Last-Event-ID': first.lastEventId });
    const got = [];
    for (let i = 0; i < missed.length; i++) got.push(status(await resumed.next()));
    expect(got.map((g) => g.seq)).toEqual(missed);
    // Each is the status right after its event, not the latest one repeated.
    expect(got.map((g) => g.task.stages['transcode-720p']?.percent)).toEqual([30, 40, 50, 60, 100]);
    // Then live, without a gap.
    const live = await progress(jobId, 99);
    expect(status(await resumed.next()).seq).toBe(live);
    expect(resumed.events).toHaveLength(missed.length + 1);

    // From further back than the projection document (which has folded everything): the job's history is folded again.
    const fromStart = await jobStream(jobId, { ...key(), 'Last-Event-ID': String(initial.seq) });
    const all = [...seen, ...missed, live];
    const again = [];
    for (let i = 0; i < all.length; i++) again.push(status(await fromStart.next()));
    expect(again.map((g) => g.seq)).toEqual(all);
    expect(again.map((g) => g.task.stages['transcode-720p']?.percent)).toEqual([10, 20, 30, 40, 50, 60, 100, 99]);

    // The last status is what GET answers once the projection has folded the same events (but for
    // waiting_for, which GET alone reads from the queues).
    const last = { ...again.at(-1)!.task, waiting_for: [] };
    const withoutWaiting = async () => ({ ...(await taskOf(jobId)), waiting_for: [] });
    expect(await eventually(withoutWaiting, (t) => isDeepStrictEqual(t, last))).toEqual(last);
    resumed.close();
    fromStart.close();
  });

  it('ends after the job settles: complete with no stage running (or cancelled), then 204 to a reconnect', async () => {
    const jobId = await api.submit();
    const s = await jobStream(jobId);
    await s.next();
    await publish({ type: 'stage.started', jobId, stage: 'thumbnail' });
    await publish({ type: 'manifest.published', jobId, renditions: ['720p', '360p'], object: { bucket: 'out', key: 'k/manifest.mpd' }, url: 'http://s3.test/out/k/manifest.mpd' });
    await publish({ type: 'job.playable', jobId, manifest: { bucket: 'out', key: 'k/manifest.mpd' }, url: 'http://s3.test/out/k/manifest.mpd' });
    await publish({ type: 'job.completed', jobId, renditions: ['720p', '360p'] });
    for (let i = 0; i < 4; i++) await s.next();
    expect(status(s.events.at(-1)!).task).toMatchObject({ state: 'complete', renditions: ['720p', '360p'], manifest: { url: 'http://s3.test/out/k/manifest.mpd' } });
    // The thumbnail still runs: the stream stays open.
    await new Promise((r) => setTimeout(r, 300));
    expect(s.events.at(-1)!.event).toBe('message');

    const last = await publish({ type: 'stage.done', jobId, stage: 'thumbnail' });
    expect(status(await s.next()).seq).toBe(last);
    const end = await s.next();
    expect(end.event).toBe('end');
    expect(LiveEnd.parse(JSON.parse(end.data))).toEqual({ seq: last, task_id: jobId, task_status: 'SUCCESS' });
    await s.ended;

    const again = await jobStream(jobId, { ...key(), 'Last-Event-ID': s.lastEventId });
    expect(again.status).toBe(204);
    // Without Last-Event-ID: the final status, then the end.
    const fresh = await jobStream(jobId);
    expect(status(await fresh.next()).task.state).toBe('complete');
    expect((await fresh.next()).event).toBe('end');
    await fresh.ended;
  });

  it('ends cleanly when more changes of the job arrive right behind the settling one', async () => {
    const jobId = await api.submit();
    const streams = await Promise.all(Array.from({ length: 5 }, () => jobStream(jobId)));
    for (const s of streams) await s.next();
    // Published together (in this order: one connection), so the API's reader gets them in one batch.
    const batch = await Promise.all([
      publish({ type: 'job.cancelled', jobId }),
      ...Array.from({ length: 30 }, (_, i) => publish({ type: 'notification.sent', jobId, status: 'FAILED', httpStatus: 200, attempt: i + 1, outcome: 'delivered' })),
    ]);
    const cancelled = Math.min(...batch);
    for (const s of streams) {
      await s.ended;
      expect(s.events.at(-1)!.event).toBe('end');
      expect(s.events.filter((e) => e.event === 'message').at(-1)!.lastEventId).toBe(String(cancelled));
    }
    expect((await fetch(`${api.url}/healthz`)).status).toBe(200);
  });

  it('ends after the job fails once no stage runs any more', async () => {
    const jobId = await api.submit();
    const s = await jobStream(jobId);
    await s.next();
    await publish({ type: 'stage.started', jobId, stage: 'thumbnail' });
    await publish({ type: 'job.failed', jobId, stage: 'download', code: 'NOT_A_VIDEO', reason: 'not a video' });
    await s.next();
    expect(status(await s.next()).task).toMatchObject({ task_status: 'FAILURE', task_result: 'not a video' });
    // The thumbnail still runs: nothing ends yet.
    const running = await publish({ type: 'stage.progress', jobId, stage: 'thumbnail', percent: 50 });
    expect(status(await s.next()).seq).toBe(running);
    await publish({ type: 'stage.failed', jobId, stage: 'thumbnail', code: 'JOB_FAILED', reason: 'the job failed', fatal: false });
    expect(status(await s.next()).task.stages.thumbnail?.state).toBe('failed');
    expect(LiveEnd.parse(JSON.parse((await s.next()).data)).task_status).toBe('FAILURE');
    await s.ended;
  });

  it('ends when the job is cancelled, though a stage was running', async () => {
    const jobId = await api.submit();
    const s = await jobStream(jobId);
    await s.next();
    await publish({ type: 'stage.started', jobId, stage: 'transcode-720p' });
    await publish({ type: 'job.cancelled', jobId });
    await s.next();
    expect(status(await s.next()).task).toMatchObject({ state: 'cancelled', task_status: 'FAILURE', task_result: 'cancelled by the client' });
    expect(LiveEnd.parse(JSON.parse((await s.next()).data)).task_status).toBe('FAILURE');
    await s.ended;
  });

  it('disconnects a client that does not read, which then resumes without losing a change', async () => {
    const jobId = await api.submit();
    const s = await jobStream(jobId);
    await s.next();
    s.pause();
    // Far more than the socket buffers and the 1 MiB the API keeps for one client: ~20 KB per status.
    const reason = 'r'.repeat(20_000);
    const seqs: number[] = [];
    for (let i = 0; i < 60; i++) {
      const batch = await Promise.all(Array.from({ length: 10 }, () => publish({ type: 'stage.failed', jobId, stage: 'transcode-360p', code: 'SLOW', reason, fatal: false })));
      seqs.push(...batch);
    }
    seqs.sort((a, b) => a - b);
    // Cut off: what was sent before the cut still arrives, then the stream ends short of the last change.
    await new Promise((r) => setTimeout(r, 500));
    s.resume();
    await s.ended;
    const before = s.events.slice(1).map((e) => status(e).seq);
    expect(before.length).toBeLessThan(seqs.length);
    expect(before).toEqual(seqs.slice(0, before.length));

    // Its backlog (~8 MB) is sent no faster than it reads: a pause while it comes does not cut it off.
    const resumed = await jobStream(jobId, { ...key(), 'Last-Event-ID': s.lastEventId });
    resumed.pause();
    await new Promise((r) => setTimeout(r, 500));
    resumed.resume();
    const rest = [];
    while (rest.length < seqs.length - before.length) rest.push(status(await resumed.next()).seq);
    expect([...before, ...rest]).toEqual(seqs);
    resumed.close();
  });

  it('sends heartbeat comments on a quiet stream', async () => {
    const s = await jobStream(await api.submit());
    await s.next();
    await eventually(() => s.comments, (n) => n >= 3, 5000);
    expect(s.events).toHaveLength(1);
    s.close();
  });

  it('answers 404 for an unknown task and 400 naming Last-Event-ID when it is not a sequence', async () => {
    const unknown = await jobStream('6f1c2a8e-0000-4000-8000-000000000000');
    expect(unknown.status).toBe(404);
    const bad = await jobStream(await api.submit(), { ...key(), 'Last-Event-ID': 'abc' });
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body)).toMatchObject({ field: 'Last-Event-ID' });
  });
});

describe('GET /events', () => {
  it('streams every job\'s changes and resumes after a dropped connection without gaps or repeats', async () => {
    const [a, b] = await Promise.all([api.submit(), api.submit()]);
    const s = await allStream();
    const ready = await s.next();
    expect(ready.event).toBe('ready');
    const start = LiveReady.parse(JSON.parse(ready.data)).seq;
    expect(ready.lastEventId).toBe(String(start));
    const firstSeq = await progress(a!, 5);
    expect(status(await s.next())).toMatchObject({ seq: firstSeq, task: { task_id: a } });
    s.close();
    await s.ended;

    const missed = [await progress(b!, 7), await progress(a!, 8), await progress(a!, 9), await publish({ type: 'stage.failed', jobId: b!, stage: 'transcode-360p', code: 'X', reason: 'broken', fatal: false })];
    // A reconnect a while later: the projection has folded the missed events meanwhile.
    await eventually(() => taskOf(a!), (t) => t.stages['transcode-720p']?.percent === 9);
    await eventually(() => taskOf(b!), (t) => t.stages['transcode-360p']?.state === 'failed');
    const resumed = await allStream({ ...key(), 'Last-Event-ID': s.lastEventId });
    expect(LiveReady.parse(JSON.parse((await resumed.next()).data))).toEqual({ seq: firstSeq });
    const got = [];
    for (let i = 0; i < missed.length; i++) got.push(status(await resumed.next()));
    expect(got.map((g) => [g.seq, g.task.task_id])).toEqual([
      [missed[0], b],
      [missed[1], a],
      [missed[2], a],
      [missed[3], b],
    ]);
    // Each job's status as it was right after each event, though its projection document has moved on.
    expect(got.map((g) => g.task.stages['transcode-720p']?.percent)).toEqual([7, 8, 9, 7]);
    expect(got[3]!.task.stages['transcode-360p']).toMatchObject({ state: 'failed', reason: 'broken' });
    const live = await progress(b!, 9);
    expect(status(await resumed.next()).seq).toBe(live);
    resumed.close();
  });

  it('tells a listener from too far back to reload (reset) instead of replaying without end', async () => {
    const jobId = await api.submit();
    const s = await allStream();
    await s.next();
    s.close();
    for (let i = 0; i <= MAX_BACKLOG; i++) await progress(jobId, i);
    const late = await allStream({ ...key(), 'Last-Event-ID': s.lastEventId });
    const ready = LiveReady.parse(JSON.parse((await late.next()).data));
    expect(ready.reset).toMatch(/reload/);
    const next = await progress(jobId, 100);
    expect(status(await late.next()).seq).toBe(next);
    late.close();
  });
});

describe('who may listen', () => {
  it.each(['/events', '/video/encoding/6f1c2a8e-0000-4000-8000-000000000000/events'])('%s: no key 401, wrong key 403', async (path) => {
    const none = await openSse(api.url + path);
    expect(none.status).toBe(401);
    expect(JSON.parse(none.body)).toMatchObject({ status: 401, error: 'missing ApiKey header' });
    const wrong = await openSse(api.url + path, { headers: { ApiKey: 'not-the-key' } });
    expect(wrong.status).toBe(403);
    expect(JSON.parse(wrong.body)).toMatchObject({ status: 403, error: 'invalid ApiKey' });
  });
});

describe('a NATS restart', () => {
  it('does not end the streams, and no change is lost across it', async () => {
    const jobId = await api.submit();
    const one = await jobStream(jobId);
    const every = await allStream();
    await Promise.all([one.next(), every.next()]);
    const before = await progress(jobId, 10);
    for (const s of [one, every]) expect(status(await s.next()).seq).toBe(before);
    await api.nats.restart();
    // The test's own connection reconnects too; publish once JetStream answers again (one message id, so a
    // try whose answer was lost is not a second change).
    const publishAfter = () => publishEvent(bus, { type: 'stage.progress', jobId, stage: 'transcode-720p', percent: 20 }, `${jobId}:after-restart`).then((r) => r.ack.seq);
    const after = await eventually(() => publishAfter().catch(() => 0), (seq) => seq > 0, 20_000);
    for (const s of [one, every]) expect(status(await s.next(20_000))).toMatchObject({ seq: after, task: { stages: { 'transcode-720p': { percent: 20 } } } });
    expect(one.events.map((e) => e.lastEventId).slice(1)).toEqual([String(before), String(after)]);
    one.close();
    every.close();
  });
});

describe('a resume point the stream no longer keeps', () => {
  // Last: it purges the stream's old events.
  it('GET /events answers with a reset, then goes on live', async () => {
    const jobId = await api.submit();
    const s = await allStream();
    await s.next();
    s.close();
    await progress(jobId, 1);
    const keepFrom = await progress(jobId, 2);
    // As when events age out: long after the projection folded them.
    await eventually(() => taskOf(jobId), (t) => t.stages['transcode-720p']?.percent === 2);
    await bus.jsm.streams.purge(STREAMS.events.name, { seq: keepFrom });
    const late = await allStream({ ...key(), 'Last-Event-ID': s.lastEventId });
    expect(LiveReady.parse(JSON.parse((await late.next()).data)).reset).toMatch(/no longer kept/);
    const next = await progress(jobId, 3);
    expect(status(await late.next()).seq).toBe(next);
    late.close();
  });
});
