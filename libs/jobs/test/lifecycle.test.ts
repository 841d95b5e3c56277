/** The coordination record on a real NATS KV bucket: concurrent replicas, single announcements, locks. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeBus, connectBus, ensureStream, STREAMS, type Bus } from '@mesh/bus';
import { createLogger, JobEvent, jobEventsFilter, sleep } from '@mesh/common';
import { startNats, type NatsServer } from '@mesh/testkit';
import { cancelJob, claimOutput, createJob, failStage, getRecord, LockLostError, markQueued, openJobStates, OutputBusyError, planRenditions, recordPublished, settleRendition, updateJson, withLock, type JobStates } from '../src/index.ts';

let nats: NatsServer;
let bus: Bus;
let states: JobStates;

beforeAll(async () => {
  nats = await startNats();
  bus = await connectBus({ url: nats.url, name: 'test', log: createLogger('test', 'silent') });
  await ensureStream(bus.jsm, STREAMS.events);
  states = await openJobStates(bus);
});
afterAll(async () => {
  await closeBus(bus);
  await nats.stop();
});

let n = 0;
const newJobId = () => `00000000-0000-4000-9000-${String(++n).padStart(12, '0')}`;
const newJob = () => ({ jobId: newJobId() });
const manifest = { object: { bucket: 'out', key: 'k/manifest.mpd' }, url: 'http://s3/out/k/manifest.mpd' };

async function eventsOf(jobId: string): Promise<JobEvent[]> {
  const consumer = await bus.js.consumers.get(STREAMS.events.name, { filter_subjects: jobEventsFilter(jobId) });
  const out: JobEvent[] = [];
  const info = await bus.jsm.streams.info(STREAMS.events.name, { subjects_filter: jobEventsFilter(jobId) });
  const total = Object.values(info.state.subjects ?? {}).reduce((a, b) => a + b, 0);
  while (out.length < total) {
    const m = await consumer.next({ expires: 2000 });
    if (!m) break;
    out.push(JobEvent.parse(m.json()));
  }
  return out;
}

describe('job lifecycle on NATS KV', () => {
  it('records renditions settled concurrently by two replicas', async () => {
    const job = newJob();
    await planRenditions(states, job, ['720p', '360p']);
    await Promise.all([settleRendition(states, job, '720p', { ok: true }), settleRendition(states, job, '360p', { ok: true })]);
    expect((await getRecord(states, job.jobId))?.ready.sort()).toEqual(['360p', '720p']);
  });

  it('ignores what a stage reports for an earlier attempt of the job', async () => {
    const job = newJob();
    await planRenditions(states, { ...job, attempt: 1 }, ['720p']);
    await states.kv.put(job.jobId, JSON.stringify({ ...(await getRecord(states, job.jobId))!, attempt: 2, expected: [] }));
    const rec = await settleRendition(states, { ...job, attempt: 1 }, '720p', { ok: true });
    expect(rec).toMatchObject({ attempt: 2, ready: [] });
  });

  it('announces playable and completed once, however often the same step is retried', async () => {
    const job = newJob();
    const { jobId } = job;
    await planRenditions(states, job, ['720p', '360p']);
    await settleRendition(states, job, '360p', { ok: true });
    await recordPublished(states, job, ['360p'], manifest);
    await recordPublished(states, job, ['360p'], manifest);
    await settleRendition(states, job, '720p', { ok: true });
    await Promise.all([recordPublished(states, job, ['720p', '360p'], manifest), recordPublished(states, job, ['720p', '360p'], manifest)]);
    const types = (await eventsOf(jobId)).map((e) => e.type);
    expect(types.filter((t) => t === 'job.playable')).toHaveLength(1);
    expect(types.filter((t) => t === 'job.completed')).toHaveLength(1);
    expect((await getRecord(states, jobId))?.phase).toBe('complete');
  });

  it('fails the job on a fatal stage failure, with stage.failed then job.failed', async () => {
    const jobId = newJobId();
    await failStage(states, { jobId }, { stage: 'download', code: 'NOT_A_VIDEO', reason: 'not a video file' });
    const events = await eventsOf(jobId);
    expect(events.map((e) => e.type)).toEqual(['stage.failed', 'job.failed']);
    expect(events[0]).toMatchObject({ fatal: true, reason: 'not a video file' });
  });

  it('does not fail a playable job', async () => {
    const job = newJob();
    const { jobId } = job;
    await planRenditions(states, job, ['720p', '360p']);
    await settleRendition(states, job, '720p', { ok: true });
    await recordPublished(states, job, ['720p'], manifest);
    const rec = await failStage(states, job, { stage: 'upload', code: 'STORAGE_FAILED', reason: 'S3 down' });
    expect(rec.phase).toBe('playable');
    const types = (await eventsOf(jobId)).map((e) => e.type);
    expect(types).not.toContain('job.failed');
    expect((await eventsOf(jobId)).find((e) => e.type === 'stage.failed')).toMatchObject({ fatal: false });
  });

  it('applies a change once when its write landed but the answer was lost (a bucket leader dying mid-write)', async () => {
    // Before: the write was tried again, conflicted with itself, and the change was applied a second time
    // (the cluster test saw one increment in ~1,250 counted twice).
    const key = newJobId();
    await states.kv.put(key, JSON.stringify({ n: 0 }));
    let calls = 0;
    const lossy = new Proxy(states.kv, {
      get(target, prop) {
        const value = Reflect.get(target, prop) as unknown;
        if (prop !== 'update') return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
        return async (...args: Parameters<typeof target.update>) => {
          const first = calls++ === 0;
          const revision = await target.update(...args);
          if (!first) return revision;
          throw Object.assign(new Error('TIMEOUT'), { name: 'TimeoutError' });
        };
      },
    });
    const res = await updateJson<{ n: number }>(lossy, key, (current) => ({ n: (current?.n ?? 0) + 1 }));
    expect(res).toMatchObject({ rec: { n: 1 }, before: { n: 0 }, changed: true });
    expect((await states.kv.get(key))!.json()).toEqual({ n: 1 });
    // The write, then its retry (which met the write itself).
    expect(calls).toBe(2);
  });

  it('lets one holder at a time into a lock', async () => {
    const key = newJobId();
    let inside = 0;
    let maxInside = 0;
    await Promise.all(
      Array.from({ length: 4 }, () =>
        withLock(states.locks, key, { ttlMs: 60_000 }, async () => {
          inside++;
          maxInside = Math.max(maxInside, inside);
          await sleep(100);
          inside--;
        }),
      ),
    );
    expect(maxInside).toBe(1);
  });

  it("fences a holder that stalled past its lease: it learns so before writing, and its release leaves the next holder's lease alone", async () => {
    // The first holder's lease is lost as when its process stalls past the TTL: the key expires (purged
    // here) and another holder takes it. Seen before the fix: with a 2 s TTL, three holders at once.
    const key = newJobId();
    const events: string[] = [];
    let secondHolds!: () => void;
    const holding = new Promise<void>((r) => (secondHolds = r));
    let second: Promise<void> | undefined;
    await withLock(states.locks, key, { ttlMs: 1000 }, async (lease) => {
      await lease.assertHeld();
      events.push('first writes');
      await states.locks.purge(key);
      second = withLock(states.locks, key, { ttlMs: 60_000 }, async (l2) => {
        secondHolds();
        await sleep(1000);
        await l2.assertHeld();
        events.push('second still holds after the first released');
      });
      await holding;
      await expect(lease.assertHeld()).rejects.toBeInstanceOf(LockLostError);
      expect(lease.signal.aborted).toBe(true);
      events.push('first stops');
    });
    events.push('first released');
    await second;
    expect(events).toEqual(['first writes', 'first stops', 'first released', 'second still holds after the first released']);
  });

  it('lets one running job own an output prefix: a second gets OutputBusyError naming the first, until the first has ended', async () => {
    const spec = (jobId: string) => ({ jobId, objectKey: `race/${jobId}.mp4`, baseUrl: 'https://cdn.test/', videoId: 'v', hasAudio: true, attempt: 1 });
    const a = spec(newJobId());
    const b = { ...spec(newJobId()), objectKey: a.objectKey };
    await Promise.all([createJob(states, a), createJob(states, b)]);
    // Both at once: exactly one wins.
    const results = await Promise.allSettled([claimOutput(states, a), claimOutput(states, b)]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const lost = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(lost.reason).toBeInstanceOf(OutputBusyError);
    const [winner, loser] = (lost.reason as OutputBusyError).activeJobId === a.jobId ? [a, b] : [b, a];
    await markQueued(states, winner.jobId, 1);
    await expect(claimOutput(states, loser)).rejects.toThrow(new RegExp(`task ${winner.jobId} is still converting`));
    // The winner ends (cancelled here): the prefix is free for the other.
    expect(await cancelJob(states, winner.jobId)).not.toBeNull();
    await claimOutput(states, loser);
  });

  it('cancels only a job still running: the compare-and-set decides, so a job completed a moment earlier stays complete', async () => {
    const job = newJob();
    await planRenditions(states, job, ['360p']);
    await settleRendition(states, job, '360p', { ok: true });
    await recordPublished(states, job, ['360p'], manifest);
    expect((await getRecord(states, job.jobId))?.phase).toBe('complete');
    expect(await cancelJob(states, job.jobId)).toBeNull();
    expect((await eventsOf(job.jobId)).map((e) => e.type)).not.toContain('job.cancelled');
  });
});
