/** The projection on the MongoDB-compatible server, fed by the projector from a real JetStream stream. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeBus, connectBus, ensureStream, publishEvent, STREAMS, type Bus } from '@mesh/bus';
import { createLogger, JobEvent, sleep } from '@mesh/common';
import { startMongo, startNats, type MongoServer, type NatsServer } from '@mesh/testkit';
import { openProjectionStore, rebuildProjection, runProjector, type Projector, type ProjectionStore } from '../src/index.ts';

const log = createLogger('test', 'silent');
let nats: NatsServer;
let mongo: MongoServer;
let bus: Bus;
let store: ProjectionStore;
let projector: Projector;

beforeAll(async () => {
  [nats, mongo] = await Promise.all([startNats(), startMongo()]);
  bus = await connectBus({ url: nats.url, name: 'test', log });
  await ensureStream(bus.jsm, STREAMS.events);
  store = await openProjectionStore(mongo.uri, 'projection_test');
  projector = await runProjector(bus, store, log);
});
afterAll(async () => {
  await projector.stop();
  await store.close();
  await closeBus(bus);
  await Promise.all([nats.stop(), mongo.stop()]);
});

const jobId = '00000000-0000-4000-a000-000000000001';
const spec = { jobId, objectKey: 'in/a.mp4', baseUrl: 'https://cdn.test/a/', videoId: 'a', hasAudio: true, attempt: 1 };

async function until<T>(get: () => Promise<T>, ok: (v: T) => boolean, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await get();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`timed out; last value ${JSON.stringify(v)}`);
    await sleep(50);
  }
}

describe('projection store and projector', () => {
  it('applies an event once: a repeat changes nothing', async () => {
    // Never published, so the running projector cannot apply it first.
    const other = { ...spec, jobId: '00000000-0000-4000-a000-0000000000ff', videoId: 'direct' };
    const event = JobEvent.parse({ type: 'job.created', jobId: other.jobId, spec: other, at: new Date().toISOString() });
    expect(await store.apply(event, 1_000_000)).toBe(true);
    expect(await store.apply(event, 1_000_000)).toBe(false);
    expect(await store.get(other.jobId)).toMatchObject({ videoId: 'direct', lastSeq: 1_000_000 });
  });

  it('folds published events into the job document', async () => {
    await publishEvent(bus, { type: 'job.created', jobId, spec });
    await publishEvent(bus, { type: 'stage.started', jobId, stage: 'download' });
    await publishEvent(bus, { type: 'job.failed', jobId, stage: 'download', code: 'NOT_A_VIDEO', reason: 'not a video' });
    const view = await until(() => store.get(jobId), (v) => v?.state === 'failed');
    expect(view).toMatchObject({ videoId: 'a', error: { reason: 'not a video' }, stages: { download: { state: 'running', attempts: 1 } } });
  });

  it('rebuilds every job from the event stream after the projection is lost', async () => {
    const before = await until(() => store.get(jobId), (v) => v?.state === 'failed');
    await rebuildProjection(bus, store);
    expect(await store.get(jobId).then((v) => v?.lastSeq ?? 0)).toBeLessThanOrEqual(before!.lastSeq);
    const after = await until(() => store.get(jobId), (v) => v?.lastSeq === before!.lastSeq);
    const { updatedAt: _a, ...rest } = after!;
    const { updatedAt: _b, ...restBefore } = before!;
    expect(rest).toEqual(restBefore);
  });
});
