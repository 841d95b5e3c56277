/** The in-memory job view cache on a real nats-server: fed by `views.<jobId>`, never older than it was told, emptied on reconnect. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeBus, connectBus, type Bus } from '@mesh/bus';
import { createLogger } from '@mesh/common';
import { startNats, type NatsServer } from '@mesh/testkit';
import { openViewCache, type JobView } from '../src/index.ts';

let nats: NatsServer;
let bus: Bus;
let publisher: Bus;

beforeAll(async () => {
  nats = await startNats();
  const log = createLogger('test', 'silent');
  [bus, publisher] = await Promise.all([connectBus({ url: nats.url, name: 'cache', log }), connectBus({ url: nats.url, name: 'projector', log })]);
});
afterAll(async () => {
  await Promise.all([closeBus(bus), closeBus(publisher)]);
  await nats.stop();
});

let n = 0;
const view = (jobId: string, lastSeq: number, state: JobView['state'] = 'processing'): JobView => ({
  _id: jobId,
  videoId: 'v',
  objectKey: 'k.mp4',
  baseUrl: 'https://cdn.example.test/k/',
  hasAudio: true,
  attempt: 1,
  state,
  stages: {},
  planned: [],
  renditions: [],
  notifications: [],
  createdAt: '2026-11-30T00:00:00.000Z',
  updatedAt: '2026-11-30T00:00:00.000Z',
  lastSeq,
});
const newId = () => `00000000-0000-4000-8000-${String(++n).padStart(12, '0')}`;

/** Publishes as the projector does, and waits until the cache has heard it (a flush round trip through the server). */
async function publish(v: JobView): Promise<void> {
  publisher.nc.publish(`views.${v._id}`, JSON.stringify(v));
  await publisher.nc.flush();
  await bus.nc.flush();
}

describe('the job view cache', () => {
  it('answers what the projector published, and misses what it has not seen', async () => {
    const cache = openViewCache(bus, createLogger('test', 'silent'));
    await bus.nc.flush();
    const id = newId();
    expect(cache.get(id)).toBeUndefined();
    await publish(view(id, 10, 'complete'));
    expect(cache.get(id)?.state).toBe('complete');
    expect(cache.stats()).toMatchObject({ hits: 1, misses: 1, fed: 1 });
    cache.stop();
  });

  it('never goes back to an older document, whichever way it comes', async () => {
    const cache = openViewCache(bus, createLogger('test', 'silent'));
    await bus.nc.flush();
    const id = newId();
    await publish(view(id, 20, 'complete'));
    // A slow MongoDB read that started before the fold, and a repeat from a previous projector leader.
    cache.offer(view(id, 15, 'processing'));
    await publish(view(id, 12, 'queued'));
    expect(cache.get(id)).toMatchObject({ state: 'complete', lastSeq: 20 });
    cache.offer(view(id, 21, 'failed'));
    expect(cache.get(id)).toMatchObject({ state: 'failed', lastSeq: 21 });
    cache.stop();
  });

  it('trusts an entry for maxAgeMs after its last change, then reads MongoDB again', async () => {
    const cache = openViewCache(bus, createLogger('test', 'silent'), { maxAgeMs: 150 });
    const id = newId();
    cache.offer(view(id, 5));
    expect(cache.get(id)).toBeDefined();
    await new Promise((r) => setTimeout(r, 200));
    expect(cache.get(id)).toBeUndefined();
    // Read from MongoDB again and offered: trusted again.
    cache.offer(view(id, 5));
    expect(cache.get(id)).toBeDefined();
    cache.stop();
  });

  it('keeps at most `max` documents, dropping the one that changed least recently', async () => {
    const cache = openViewCache(bus, createLogger('test', 'silent'), { max: 3 });
    const [a, b, c, d] = [newId(), newId(), newId(), newId()];
    cache.offer(view(a, 1));
    cache.offer(view(b, 1));
    cache.offer(view(c, 1));
    cache.offer(view(a, 2));
    cache.offer(view(d, 1));
    expect(cache.stats().size).toBe(3);
    expect(cache.get(b)).toBeUndefined();
    for (const id of [a, c, d]) expect(cache.get(id)).toBeDefined();
    cache.stop();
  });

  it('ignores what is not a job document', async () => {
    const cache = openViewCache(bus, createLogger('test', 'silent'));
    await bus.nc.flush();
    const id = newId();
    publisher.nc.publish(`views.${id}`, 'not json');
    publisher.nc.publish(`views.${id}`, JSON.stringify({ _id: id }));
    await publisher.nc.flush();
    await bus.nc.flush();
    expect(cache.get(id)).toBeUndefined();
    expect(cache.stats().fed).toBe(0);
    cache.stop();
  });

  it('empties itself when the connection to NATS drops: what was published meanwhile never reached it', async () => {
    const cache = openViewCache(bus, createLogger('test', 'silent'));
    await bus.nc.flush();
    const id = newId();
    await publish(view(id, 30, 'processing'));
    expect(cache.get(id)).toBeDefined();
    await nats.restart();
    // Both clients reconnect by themselves; the cache was emptied on the way.
    for (let i = 0; i < 100 && cache.stats().clears === 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(cache.stats().clears).toBeGreaterThan(0);
    expect(cache.get(id)).toBeUndefined();
    // And it is fed again once back.
    for (let i = 0; i < 100; i++) {
      await publish(view(id, 31, 'complete')).catch(() => undefined);
      if (cache.get(id)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(cache.get(id)?.state).toBe('complete');
    cache.stop();
  });
});
