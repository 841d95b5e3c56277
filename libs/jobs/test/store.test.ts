/** The projection on the MongoDB-compatible server, fed by the projector from a real JetStream stream. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeBus, connectBus, ensureStream, publishEvent, STREAMS, type Bus } from '@mesh/bus';
import { createLogger, sleep, type JobSpec } from '@mesh/common';
import { startMongo, startNats, type MongoServer, type NatsServer } from '@mesh/testkit';
import { openProjectionStore, runProjector, type Projector, type ProjectionStore } from '../src/index.ts';
import type { JobView } from '../src/projection.ts';

const log = createLogger('test', process.env['TEST_LOG'] ?? 'silent');
let nats: NatsServer;
let mongo: MongoServer;
let bus: Bus;
let store: ProjectionStore;
let projector: Projector;

beforeAll(async () => {
  [nats, mongo] = await Promise.all([startNats(), startMongo()]);
  bus = await connectBus({ url: nats.url, name: 'test', log });
  await ensureStream(bus.jsm, STREAMS.events);
  await ensureStream(bus.jsm, STREAMS.views);
  store = await openProjectionStore(mongo.uri, 'projection_test');
  projector = await runProjector(bus, store, log);
});
afterAll(async () => {
  await projector.stop();
  await store.close();
  await closeBus(bus);
  await Promise.all([nats.stop(), mongo.stop()]);
});

let n = 0;
function newSpec(): JobSpec {
  const jobId = `00000000-0000-4000-a000-${String(++n).padStart(12, '0')}`;
  return { jobId, objectKey: `in/${n}.mp4`, baseUrl: 'https://cdn.test/a/', videoId: `v${n}`, hasAudio: true, attempt: 1 };
}

async function until<T>(get: () => Promise<T>, ok: (v: T) => boolean, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await get();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`timed out; last value ${JSON.stringify(v)}`);
    await sleep(50);
  }
}

const withoutTimes = (v: JobView | null) => {
  if (!v) return v;
  const { updatedAt: _u, ...rest } = v;
  return rest;
};

describe('projection store and projector', () => {
  it('folds published events into the job document', async () => {
    const spec = newSpec();
    const { jobId } = spec;
    await publishEvent(bus, { type: 'job.created', jobId, spec });
    await publishEvent(bus, { type: 'stage.started', jobId, stage: 'download' });
    await publishEvent(bus, { type: 'job.failed', jobId, stage: 'download', code: 'NOT_A_VIDEO', reason: 'not a video' });
    const view = await until(() => store.get(jobId), (v) => v?.state === 'failed');
    expect(view).toMatchObject({ videoId: spec.videoId, error: { reason: 'not a video' }, stages: { download: { state: 'running', attempts: 1 } } });
  });

  it('reflects every event of a job, in stream order, whoever published it (a cancel from the API amid stage events)', async () => {
    // Before: the API wrote job.cancelled into MongoDB itself, and the projector then skipped the job's
    // older events it had not folded yet (manifest.published and job.playable were lost).
    const spec = newSpec();
    const { jobId } = spec;
    await publishEvent(bus, { type: 'job.created', jobId, spec });
    await publishEvent(bus, { type: 'manifest.published', jobId, renditions: ['720p'], object: { bucket: 'out', key: 'k/manifest.mpd' }, url: 'http://s3/out/k/manifest.mpd' });
    await publishEvent(bus, { type: 'job.playable', jobId, manifest: { bucket: 'out', key: 'k/manifest.mpd' }, url: 'http://s3/out/k/manifest.mpd' });
    const { ack } = await publishEvent(bus, { type: 'job.cancelled', jobId });
    const view = await store.waitFor(jobId, ack.seq, 10_000);
    expect(view).toMatchObject({ state: 'cancelled', renditions: ['720p'], manifest: { key: 'k/manifest.mpd' } });
  });

  it('lists recent jobs newest first, by state and by search', async () => {
    const spec = newSpec();
    const { ack } = await publishEvent(bus, { type: 'job.created', jobId: spec.jobId, spec });
    await store.waitFor(spec.jobId, ack.seq);
    const recent = await store.list({ limit: 2 });
    expect(recent[0]?._id).toBe(spec.jobId);
    expect((await store.list({ limit: 10, search: spec.videoId })).map((v) => v._id)).toEqual([spec.jobId]);
    expect((await store.list({ limit: 50, state: 'failed' })).every((v) => v.state === 'failed')).toBe(true);
  });

  it('hands over to another replica at once when the leader stops mid-stream: nothing waits for an ack', async () => {
    // Before: the projector consumed with max_ack_pending 1 and left the event in flight neither acked nor
    // naked on shutdown, so the next replica waited out ACK_WAIT_MS (30 s) before folding anything.
    const specs = Array.from({ length: 40 }, newSpec);
    const published = Promise.all(specs.map((spec) => publishEvent(bus, { type: 'job.created', jobId: spec.jobId, spec })));
    await sleep(5);
    await projector.stop();
    projector = await runProjector(bus, store, log);
    const acks = await published;
    const last = Math.max(...acks.map((p) => p.ack.seq));
    await until(() => store.meta(), (m) => m.seq >= last, 8000);
    for (const spec of specs) expect(await store.get(spec.jobId)).toMatchObject({ videoId: spec.videoId });
  });

  it('rebuilds beside the live collection: every GET answers during the rebuild, and one rebuild runs at a time', async () => {
    const specs = Array.from({ length: 30 }, newSpec);
    let lastSeq = 0;
    for (const spec of specs) {
      lastSeq = (await publishEvent(bus, { type: 'job.created', jobId: spec.jobId, spec })).ack.seq;
      lastSeq = (await publishEvent(bus, { type: 'stage.started', jobId: spec.jobId, stage: 'download' })).ack.seq;
    }
    await until(() => store.meta(), (m) => m.seq >= lastSeq);
    const before = await Promise.all(specs.map((s) => store.get(s.jobId)));

    // GET load throughout: before the fix every document was deleted first, and GETs answered 404 until the replay ended.
    let reads = 0;
    let missing = 0;
    let loading = true;
    const load = (async () => {
      while (loading) {
        const v = await store.get(specs[reads++ % specs.length]!.jobId);
        if (!v) missing++;
      }
    })();
    const first = await store.requestRebuild();
    expect(first.accepted).toBe(true);
    expect((await store.requestRebuild()).accepted).toBe(false);
    // Events keep coming during the rebuild and are not lost.
    const late = newSpec();
    const lateAck = (await publishEvent(bus, { type: 'job.created', jobId: late.jobId, spec: late })).ack.seq;
    const done = await until(() => store.meta(), (m) => m.rebuild?.state === 'done' || m.rebuild?.state === 'failed', 20_000);
    expect(done.rebuild).toMatchObject({ state: 'done' });
    expect(await store.waitFor(late.jobId, lateAck, 5000)).toMatchObject({ videoId: late.videoId });
    loading = false;
    await load;
    expect(reads).toBeGreaterThan(30);
    expect(missing).toBe(0);
    const after = await Promise.all(specs.map((s) => store.get(s.jobId)));
    expect(after.map(withoutTimes)).toEqual(before.map(withoutTimes));
    expect((await store.requestRebuild()).accepted).toBe(true);
    await until(() => store.meta(), (m) => m.rebuild?.state === 'done');
  }, 60_000);
});
