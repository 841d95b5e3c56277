/** The coordination record on a real NATS KV bucket: concurrent replicas, single announcements, locks. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeBus, connectBus, ensureStream, STREAMS, type Bus } from '@mesh/bus';
import { createLogger, JobEvent, sleep } from '@mesh/common';
import { startNats, type NatsServer } from '@mesh/testkit';
import { failStage, getRecord, openJobStates, planRenditions, recordPublished, settleRendition, withJobLock, type JobStates } from '../src/index.ts';

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
const manifest = { object: { bucket: 'out', key: 'k/manifest.mpd' }, url: 'http://s3/out/k/manifest.mpd' };

async function eventsOf(jobId: string): Promise<JobEvent[]> {
  const consumer = await bus.js.consumers.get(STREAMS.events.name, { filter_subjects: `events.${jobId}` });
  const out: JobEvent[] = [];
  const info = await bus.jsm.streams.info(STREAMS.events.name, { subjects_filter: `events.${jobId}` });
  const total = info.state.subjects?.[`events.${jobId}`] ?? 0;
  while (out.length < total) {
    const m = await consumer.next({ expires: 2000 });
    if (!m) break;
    out.push(JobEvent.parse(m.json()));
  }
  return out;
}

describe('job lifecycle on NATS KV', () => {
  it('records renditions settled concurrently by two replicas', async () => {
    const jobId = newJobId();
    await planRenditions(states, jobId, ['720p', '360p']);
    await Promise.all([settleRendition(states, jobId, '720p', { ok: true }), settleRendition(states, jobId, '360p', { ok: true })]);
    expect((await getRecord(states, jobId))?.ready.sort()).toEqual(['360p', '720p']);
  });

  it('announces playable and completed once, however often the same step is retried', async () => {
    const jobId = newJobId();
    await planRenditions(states, jobId, ['720p', '360p']);
    await settleRendition(states, jobId, '360p', { ok: true });
    await recordPublished(states, jobId, ['360p'], manifest);
    await recordPublished(states, jobId, ['360p'], manifest);
    await settleRendition(states, jobId, '720p', { ok: true });
    await Promise.all([recordPublished(states, jobId, ['720p', '360p'], manifest), recordPublished(states, jobId, ['720p', '360p'], manifest)]);
    const types = (await eventsOf(jobId)).map((e) => e.type);
    expect(types.filter((t) => t === 'job.playable')).toHaveLength(1);
    expect(types.filter((t) => t === 'job.completed')).toHaveLength(1);
    expect((await getRecord(states, jobId))?.phase).toBe('complete');
  });

  it('fails the job on a fatal stage failure, with stage.failed then job.failed', async () => {
    const jobId = newJobId();
    await failStage(states, jobId, { stage: 'download', code: 'NOT_A_VIDEO', reason: 'not a video file' });
    const events = await eventsOf(jobId);
    expect(events.map((e) => e.type)).toEqual(['stage.failed', 'job.failed']);
    expect(events[0]).toMatchObject({ fatal: true, reason: 'not a video file' });
  });

  it('does not fail a playable job', async () => {
    const jobId = newJobId();
    await planRenditions(states, jobId, ['720p', '360p']);
    await settleRendition(states, jobId, '720p', { ok: true });
    await recordPublished(states, jobId, ['720p'], manifest);
    const rec = await failStage(states, jobId, { stage: 'upload', code: 'STORAGE_FAILED', reason: 'S3 down' });
    expect(rec.phase).toBe('playable');
    const types = (await eventsOf(jobId)).map((e) => e.type);
    expect(types).not.toContain('job.failed');
    expect((await eventsOf(jobId)).find((e) => e.type === 'stage.failed')).toMatchObject({ fatal: false });
  });

  it('lets one holder at a time into a job lock', async () => {
    const jobId = newJobId();
    let inside = 0;
    let maxInside = 0;
    await Promise.all(
      Array.from({ length: 4 }, () =>
        withJobLock(states, jobId, async () => {
          inside++;
          maxInside = Math.max(maxInside, inside);
          await sleep(100);
          inside--;
        }),
      ),
    );
    expect(maxInside).toBe(1);
  });
});
