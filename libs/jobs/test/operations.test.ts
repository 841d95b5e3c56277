/**
 * The job operations (submit, get, retry, cancel, re-drive) on real NATS, the MongoDB-compatible server and
 * the projector, with the stages played by the test: each failure sequence a review found, reproduced.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeBus, connectBus, deadLetter, ensureConsumer, ensureStream, listDeadLetters, publishEvent, STREAMS, type Bus } from '@mesh/bus';
import { headers } from '@nats-io/transport-node';
import { createLogger, sleep, type JobSpec } from '@mesh/common';
import { inSpan, startTracing, stopTracing } from '@mesh/telemetry';
import { startMongo, startNats, type MongoServer, type NatsServer } from '@mesh/testkit';
import type { JsMsg } from '@nats-io/jetstream';
import {
  cancelJobOp,
  failStage,
  getJob,
  getRecord,
  JobConflictError,
  openJobStates,
  openProjectionStore,
  OutputBusyError,
  redriveDeadLetter,
  retryJob,
  runProjector,
  submitJob,
  type JobsContext,
  type Projector,
} from '../src/index.ts';

const log = createLogger('test', process.env['TEST_LOG'] ?? 'silent');
let nats: NatsServer;
let mongo: MongoServer;
let bus: Bus;
let ctx: JobsContext;
let projector: Projector;

beforeAll(async () => {
  [nats, mongo] = await Promise.all([startNats(), startMongo()]);
  bus = await connectBus({ url: nats.url, name: 'test', log });
  for (const s of [STREAMS.work, STREAMS.events, STREAMS.views, STREAMS.deadLetters]) await ensureStream(bus.jsm, s);
  const store = await openProjectionStore(mongo.uri, 'operations_test');
  projector = await runProjector(bus, store, log);
  ctx = { bus, states: await openJobStates(bus), store, log };
});
afterAll(async () => {
  await projector.stop();
  await ctx.store.close();
  await closeBus(bus);
  await Promise.all([nats.stop(), mongo.stop()]);
});

let n = 0;
function newSpec(objectKey = `ops/${++n}.mp4`): JobSpec {
  const jobId = `00000000-0000-4000-b000-${String(++n).padStart(12, '0')}`;
  return { jobId, objectKey, baseUrl: 'https://cdn.test/x/', videoId: `v${n}`, hasAudio: true, attempt: 1 };
}

async function until<T>(get: () => Promise<T>, ok: (v: T) => boolean, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await get();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`timed out; last value ${JSON.stringify(v)}`);
    await sleep(50);
  }
}

/** Takes the job's download work item off the queue, as the downloader would. */
async function takeDownload(jobId: string): Promise<JsMsg> {
  await ensureConsumer(bus.jsm, { stream: STREAMS.work.name, durable: 'downloader', filterSubject: 'work.download', ackWaitMs: 30_000, maxDeliver: 8, maxAckPending: 1000 });
  const consumer = await bus.js.consumers.get(STREAMS.work.name, 'downloader');
  for (;;) {
    const m = await consumer.next({ expires: 2000 });
    if (!m) throw new Error('no download work');
    if ((m.json() as { job: { jobId: string } }).job.jobId === jobId) return m;
  }
}

async function failed(spec: JobSpec): Promise<void> {
  await failStage(ctx.states, spec, { stage: 'download', code: 'SOURCE_NOT_FOUND', reason: 'object missing' });
  await until(() => getJob(ctx, spec.jobId), (v) => v?.state === 'failed');
}

describe('job operations', () => {
  it('answers for a job the projector has not folded yet, from its record', async () => {
    const spec = newSpec();
    await projector.stop();
    try {
      await submitJob(ctx, spec);
      expect(await getJob(ctx, spec.jobId)).toMatchObject({ _id: spec.jobId, state: 'queued', videoId: spec.videoId });
    } finally {
      projector = await runProjector(bus, ctx.store, log);
    }
  });

  it('lets one running job convert an object_key at a time: two submits at once, one wins, the other names it', async () => {
    const a = newSpec('ops/shared.mp4');
    const b = newSpec('ops/shared.mp4');
    const results = await Promise.allSettled([submitJob(ctx, a), submitJob(ctx, b)]);
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(lost).toHaveLength(1);
    expect(lost[0]!.reason).toBeInstanceOf(OutputBusyError);
    const winner = (lost[0]!.reason as OutputBusyError).activeJobId;
    const loser = winner === a.jobId ? b : a;
    // The loser left nothing behind: no record, no projection.
    expect(await getRecord(ctx.states, loser.jobId)).toBeNull();
    expect(await getJob(ctx, loser.jobId)).toBeNull();
    // Once the winner has ended, a new job may convert it.
    await cancelJobOp(ctx, winner);
    await submitJob(ctx, newSpec('ops/shared.mp4'));
  });

  it('a retry whose work cannot be queued changes nothing: the job reads FAILED and a second retry works', async () => {
    // Before: retry reopened the job, then the publish failed: the job read STARTED for good and a second retry got 409.
    const spec = newSpec();
    await submitJob(ctx, spec);
    await takeDownload(spec.jobId).then((m) => m.ack());
    await failed(spec);
    await bus.jsm.streams.delete(STREAMS.work.name);
    try {
      await expect(retryJob(ctx, spec.jobId)).rejects.toThrow(/could not be queued.*nothing changed, try again/);
      expect(await getRecord(ctx.states, spec.jobId)).toMatchObject({ phase: 'failed', attempt: 1 });
      await sleep(300);
      expect(await getJob(ctx, spec.jobId)).toMatchObject({ state: 'failed', attempt: 1 });
    } finally {
      await ensureStream(bus.jsm, STREAMS.work);
    }
    const retried = await retryJob(ctx, spec.jobId);
    expect(retried).toMatchObject({ attempt: 2, view: { state: 'processing', attempt: 2 } });
    expect((await takeDownload(spec.jobId)).json()).toMatchObject({ job: { jobId: spec.jobId, attempt: 2 } });
  });

  it("keeps the trace of the request that started each attempt: the job's trace, for a link into Jaeger", async () => {
    startTracing('operations-test', {});
    try {
      const spec = newSpec();
      const submitted = await inSpan('POST /video/encoding', {}, async (span) => {
        await submitJob(ctx, spec);
        return span.spanContext().traceId;
      });
      expect(await until(() => getJob(ctx, spec.jobId), (v) => v !== null && v.lastSeq > 0)).toMatchObject({ traceId: submitted });
      await failed(spec);
      const retried = await inSpan('POST /video/encoding/{task_id}/retry', {}, async (span) => {
        await retryJob(ctx, spec.jobId);
        return span.spanContext().traceId;
      });
      expect(retried).not.toBe(submitted);
      expect(await getJob(ctx, spec.jobId)).toMatchObject({ attempt: 2, traceId: retried });
    } finally {
      await stopTracing();
    }
    // Outside any span (no trace), nothing is recorded rather than a trace of zeros.
    const untraced = newSpec();
    await submitJob(ctx, untraced);
    expect((await until(() => getJob(ctx, untraced.jobId), (v) => v !== null && v.lastSeq > 0))!.traceId).toBeUndefined();
  });

  it('refuses to retry a running job, and lets a client retry a job it cancelled by mistake', async () => {
    const spec = newSpec();
    await submitJob(ctx, spec);
    await expect(retryJob(ctx, spec.jobId)).rejects.toBeInstanceOf(JobConflictError);
    const cancelled = await cancelJobOp(ctx, spec.jobId);
    expect(cancelled).toMatchObject({ state: 'cancelled' });
    await expect(cancelJobOp(ctx, spec.jobId)).rejects.toThrow(/only a running task can be cancelled; this one is FAILURE \(cancelled\)/);
    expect(await retryJob(ctx, spec.jobId)).toMatchObject({ attempt: 2, view: { state: 'processing' } });
  });

  it('re-drives a dead letter: a stage that can finish the job reopens it; a notifier or thumbnail letter does not', async () => {
    const spec = newSpec();
    await submitJob(ctx, spec);
    const download = await takeDownload(spec.jobId);
    await failed(spec);
    // Letters as the consume loop keeps them: the download itself, and a notifier's event.
    await deadLetter(bus, download, { durable: 'downloader', jobId: spec.jobId, reason: 'S3 down' });
    download.term();
    const { event } = await publishEvent(bus, { type: 'job.failed', jobId: spec.jobId, stage: 'download', code: 'X', reason: 'x' });
    const h = headers();
    for (const [k, v] of Object.entries({ 'Mesh-Subject': `events.${spec.jobId}.job.failed`, 'Mesh-Consumer': 'notifier', 'Mesh-Job-Id': spec.jobId, 'Mesh-Reason': 'backend down' })) h.set(k, v);
    await bus.js.publish('dead.notifier', JSON.stringify(event), { headers: h });
    const all = (await listDeadLetters(bus)).filter((l) => l.jobId === spec.jobId);
    const notifierLetter = all.find((l) => l.consumer === 'notifier')!;
    const downloadLetter = all.find((l) => l.consumer === 'downloader')!;

    // Before: every re-drive reopened the job, so a notifier letter left it active with nothing to run.
    await redriveDeadLetter(ctx, notifierLetter.seq);
    expect(await getRecord(ctx.states, spec.jobId)).toMatchObject({ phase: 'failed' });
    await redriveDeadLetter(ctx, downloadLetter.seq);
    expect(await getRecord(ctx.states, spec.jobId)).toMatchObject({ phase: 'active', attempt: 1 });
    await until(() => getJob(ctx, spec.jobId), (v) => v?.state === 'processing');
    expect((await takeDownload(spec.jobId)).json()).toMatchObject({ job: { attempt: 1 } });
  });
});
