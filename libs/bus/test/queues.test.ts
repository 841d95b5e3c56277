/** Queue depths against a real nats-server: who counts as attached, and when a stage is stalled. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import { createLogger, sleep } from '@mesh/common';
import { startNats, type NatsServer } from '@mesh/testkit';
import { cachedFor, closeBus, connectBus, ensureStream, isAttached, publishWork, queueDepths, runWorker, STREAMS, workSource, type Bus, type QueueDepth } from '../src/index.ts';

const log = createLogger('test', process.env['TEST_LOG'] ?? 'silent');
const NOW = Date.parse('2026-01-01T00:00:10Z');
const at = (secondsAgo: number) => new Date(NOW - secondsAgo * 1000).toISOString();
const ACK_WAIT_30S = { ack_wait: 30_000 * 1e6 };

describe('isAttached', () => {
  it.each([
    ['an idle replica has a pull waiting', { num_waiting: 1, num_ack_pending: 0, config: ACK_WAIT_30S }, true],
    ['a busy replica reported progress 10 s ago (ack_wait 30 s)', { num_waiting: 0, num_ack_pending: 1, delivered: { last_active: at(10) }, config: ACK_WAIT_30S }, true],
    ['the holder has been silent longer than ack_wait: it is gone', { num_waiting: 0, num_ack_pending: 1, delivered: { last_active: at(31) }, config: ACK_WAIT_30S }, false],
    ['nothing held, nothing pulled, last activity long ago', { num_waiting: 0, num_ack_pending: 0, delivered: { last_active: at(60) }, ack_floor: { last_active: at(60) }, config: ACK_WAIT_30S }, false],
    ['a replica acked a moment ago and is asking for the next message', { num_waiting: 0, num_ack_pending: 0, delivered: { last_active: at(20) }, ack_floor: { last_active: at(1) }, config: ACK_WAIT_30S }, true],
    ['never any activity', { num_waiting: 0, num_ack_pending: 0, config: ACK_WAIT_30S }, false],
    ["Go's zero time is never", { num_waiting: 0, num_ack_pending: 2, delivered: { last_active: '0001-01-01T00:00:00Z' }, config: ACK_WAIT_30S }, false],
  ])('%s', (_name, info, expected) => {
    expect(isAttached(info, NOW)).toBe(expected);
  });
});

describe('cachedFor', () => {
  it('shares one read for its ttl and does not keep a failure', async () => {
    let reads = 0;
    let fail = true;
    const read = cachedFor(async () => {
      reads++;
      if (fail) throw new Error('down');
      return reads;
    }, 200);
    await expect(read()).rejects.toThrow('down');
    fail = false;
    expect(await Promise.all([read(), read()])).toEqual([2, 2]);
    expect(await read()).toBe(2);
    await sleep(300);
    expect(await read()).toBe(3);
  });
});

describe('queueDepths', () => {
  let nats: NatsServer;
  let bus: Bus;
  beforeAll(async () => {
    nats = await startNats();
    bus = await connectBus({ url: nats.url, name: 'test', log });
    for (const s of [STREAMS.work, STREAMS.events]) await ensureStream(bus.jsm, s);
  });
  afterAll(async () => {
    await closeBus(bus);
    await nats.stop();
  });

  const waitFor = async (what: string, cond: () => Promise<boolean>) => {
    for (const end = Date.now() + 10_000; !(await cond()); await sleep(50)) if (Date.now() > end) throw new Error(`not within 10 s: ${what}`);
  };
  const depth = async (consumer: string): Promise<QueueDepth> => (await queueDepths(bus)).find((q) => q.consumer === consumer)!;
  let n = 0;
  const publish = () => {
    const jobId = `00000000-0000-4000-8000-${String(++n).padStart(12, '0')}`;
    const video = { codec: 'h264', width: 2, height: 2, rotation: 0, frameRate: { num: 1, den: 1 }, sampleAspectRatio: { num: 1, den: 1 }, pixFmt: 'yuv420p', interlaced: false };
    const probe = { formatName: 'mov', durationSec: 1, sizeBytes: 1, video, audio: null };
    return publishWork(bus, 'thumbnail', { kind: 'thumbnail', job: { jobId, objectKey: 'k', baseUrl: 'http://x/', videoId: 'v', hasAudio: false, attempt: 1 }, source: { etag: 'e' }, probe }, jobId);
  };

  it('a stage that never started: its stored work is pending and the stage stalled', async () => {
    await publish();
    await publish();
    expect(await depth('thumbnailer')).toMatchObject({ exists: false, pending: 2, attached: false, stalled: true, last_active: null });
    // Nothing waits for the other stages: not stalled.
    expect(await depth('downloader')).toMatchObject({ exists: false, pending: 0, stalled: false });
    expect(await depth('notifier')).toMatchObject({ exists: false, pending: 0, stalled: false });
  });

  it('a replica busy past ack_wait stays attached; once it is gone, the work it held and the work waiting are stalled', async () => {
    const ackWaitMs = 1500;
    let release!: () => void;
    const busy = new Promise<void>((resolve) => (release = resolve));
    let started = 0;
    // The real consume loop: it reports progress every max(1 s, ack_wait/3) while the handler runs.
    const worker = await runWorker({ bus, log, source: workSource('thumbnail'), ackWaitMs, handle: () => ((started += 1), busy), onGiveUp: async () => undefined });
    try {
      while (started === 0) await sleep(20);
      await sleep(ackWaitMs * 2);
      expect(await depth('thumbnailer')).toMatchObject({ exists: true, pending: 1, ack_pending: 1, waiting: 0, attached: true, stalled: false });
      release();
      await waitFor('both messages done', async () => (await depth('thumbnailer')).pending + (await depth('thumbnailer')).ack_pending === 0);
    } finally {
      release();
      await worker.stop();
    }
    // Nothing waits, and a replica that stopped is not attached (once its last ack is a few seconds old).
    await sleep(3100);
    expect(await depth('thumbnailer')).toMatchObject({ pending: 0, ack_pending: 0, waiting: 0, attached: false, stalled: false });

    // A holder that dies (its connection closes without an ack): attached while its last report is fresh, then not.
    await publish();
    await publish();
    const nc = await connect({ servers: nats.url });
    const consumer = await jetstream(nc).consumers.get(STREAMS.work.name, 'thumbnailer');
    const held = (await consumer.next({ expires: 2000 }))!;
    held.working();
    expect(await depth('thumbnailer')).toMatchObject({ pending: 1, ack_pending: 1, attached: true, stalled: false });
    await nc.close();
    // Gone after ack_wait, and never sooner than a pull's expiry and a second after its last sign of life.
    await sleep(Math.max(ackWaitMs, 3000) + 300);
    const gone = await depth('thumbnailer');
    // nats-server 2.9 keeps the dead holder's message in ack_pending until it redelivers it.
    expect(gone).toMatchObject({ pending: 1, ack_pending: 1, waiting: 0, attached: false, stalled: true });
    expect(Date.now() - Date.parse(gone.last_active!)).toBeGreaterThan(ackWaitMs);

    // An idle replica attaches: it takes the work and keeps a pull waiting.
    const idle = await runWorker({ bus, log, source: workSource('thumbnail'), ackWaitMs, handle: async () => undefined, onGiveUp: async () => undefined });
    try {
      await waitFor('the idle replica takes the work and pulls again', async () => {
        const d = await depth('thumbnailer');
        return d.pending === 0 && d.ack_pending === 0 && d.waiting > 0;
      });
      expect(await depth('thumbnailer')).toMatchObject({ attached: true, stalled: false });
    } finally {
      await idle.stop();
    }
  }, 30_000);

  it('does not mistake NATS being unreachable for a stage that never started', async () => {
    const other = await connectBus({ url: nats.url, name: 'test-closed', log });
    await other.nc.close();
    await expect(queueDepths(other)).rejects.toThrow();
  });
});
