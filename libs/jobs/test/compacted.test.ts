/**
 * Job status outlives the job's events: once JOB_EVENTS has aged them out (a 2 s max_age here), a rebuild
 * restores the job from its compacted snapshot on JOB_VIEWS.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { nanos } from '@nats-io/transport-node';
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
  await ensureStream(bus.jsm, { ...STREAMS.events, max_age: nanos(2000), duplicate_window: nanos(1000) });
  await ensureStream(bus.jsm, STREAMS.views);
  store = await openProjectionStore(mongo.uri, 'compacted_test');
  projector = await runProjector(bus, store, log);
});
afterAll(async () => {
  await projector.stop();
  await store.close();
  await closeBus(bus);
  await Promise.all([nats.stop(), mongo.stop()]);
});

async function until<T>(get: () => Promise<T>, ok: (v: T) => boolean, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await get();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`timed out; last value ${JSON.stringify(v)}`);
    await sleep(100);
  }
}

const spec = (n: number): JobSpec => ({ jobId: `00000000-0000-4000-a200-${String(n).padStart(12, '0')}`, objectKey: `old/${n}.mp4`, baseUrl: 'https://cdn.test/', videoId: `old-${n}`, hasAudio: true, attempt: 1 });
const withoutTimes = ({ updatedAt: _u, ...rest }: JobView) => rest;

it('restores every job after its events have expired from the stream, from its last snapshot', async () => {
  const old = spec(1);
  await publishEvent(bus, { type: 'job.created', jobId: old.jobId, spec: old });
  await publishEvent(bus, { type: 'stage.started', jobId: old.jobId, stage: 'download' });
  const { ack } = await publishEvent(bus, { type: 'job.failed', jobId: old.jobId, stage: 'download', code: 'NOT_A_VIDEO', reason: 'not a video' });
  const before = (await store.waitFor(old.jobId, ack.seq, 10_000))!;
  expect(before).toMatchObject({ state: 'failed' });
  // Its snapshot is out, and then its events age out of JOB_EVENTS.
  await until(async () => (await bus.jsm.streams.info(STREAMS.views.name)).state.messages, (n) => n >= 1);
  await until(async () => (await bus.jsm.streams.info(STREAMS.events.name)).state.messages, (n) => n === 0);

  // A job whose events are still there, for contrast.
  const recent = spec(2);
  const last = (await publishEvent(bus, { type: 'job.created', jobId: recent.jobId, spec: recent })).ack.seq;
  await store.waitFor(recent.jobId, last, 10_000);

  expect((await store.requestRebuild()).accepted).toBe(true);
  const done = await until(() => store.meta(), (m) => m.rebuild?.state === 'done' || m.rebuild?.state === 'failed');
  expect(done.rebuild).toMatchObject({ state: 'done', fromSnapshots: 1 });
  expect(withoutTimes((await store.get(old.jobId))!)).toEqual(withoutTimes(before));
  expect(await store.get(recent.jobId)).toMatchObject({ videoId: recent.videoId, state: 'queued' });
});
