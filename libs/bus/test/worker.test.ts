/** The consume loop against a real nats-server: ack, heartbeat, retry, give-up, shared consumers. */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, MeshError, sleep } from '@mesh/common';
import { startNats, type NatsServer } from '@mesh/testkit';
import { closeBus, connectBus, ensureStream, listDeadLetters, publishWork, STREAMS, runWorker, workSource, type Bus, type Worker, type WorkerOptions, type WorkMessage } from '../src/index.ts';

const log = createLogger('test', process.env['TEST_LOG'] ?? 'silent');
let nats: NatsServer;
let bus: Bus;
const workers: Worker[] = [];

beforeAll(async () => {
  nats = await startNats();
  bus = await connectBus({ url: nats.url, name: 'test', log });
  await ensureStream(bus.jsm, STREAMS.work);
  await ensureStream(bus.jsm, STREAMS.events);
});
afterEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.stop()));
  await bus.jsm.consumers.delete(STREAMS.work.name, 'thumbnailer').catch(() => undefined);
  await bus.jsm.streams.purge(STREAMS.work.name);
});
afterAll(async () => {
  await closeBus(bus);
  await nats.stop();
});

let n = 0;
function thumbnailWork() {
  const jobId = `00000000-0000-4000-8000-${String(++n).padStart(12, '0')}`;
  const probe = { formatName: 'mov', durationSec: 1, sizeBytes: 1, video: { codec: 'h264', width: 2, height: 2, rotation: 0, frameRate: { num: 1, den: 1 }, sampleAspectRatio: { num: 1, den: 1 }, pixFmt: 'yuv420p', interlaced: false }, audio: null };
  return { kind: 'thumbnail' as const, job: { jobId, objectKey: 'k', baseUrl: 'http://x/', videoId: 'v', hasAudio: false, attempt: 1 }, source: { bucket: 'bkt', key: 'k', etag: 'e' }, probe };
}

/** A thumbnail worker on the test bus, stopped after the test; `o` sets the handler and the rest. */
async function startWorker(o: Partial<WorkerOptions<WorkMessage<'thumbnail'>>>): Promise<Worker> {
  const worker = await runWorker({ bus, log, source: workSource('thumbnail'), handle: async () => undefined, onGiveUp: async () => undefined, ...o });
  workers.push(worker);
  return worker;
}

async function until(cond: () => boolean, ms = 15_000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await sleep(50);
  }
}

describe('runWorker', () => {
  it('refuses to publish a message that does not match its schema', async () => {
    await expect(publishWork(bus, 'thumbnail', { ...thumbnailWork(), probe: undefined } as never, 'x')).rejects.toThrow(/invalid message on work.thumbnail: probe/);
  });

  it('parks work for a job that failed meanwhile as a dead letter, without failing the stage', async () => {
    await ensureStream(bus.jsm, STREAMS.deadLetters);
    let gaveUp = 0;
    let calls = 0;
    await startWorker({
      handle: async () => {
        calls++;
        throw new MeshError('JOB_FAILED', 'ready after the job had failed; kept to be re-driven', { permanent: true });
      },
      onGiveUp: async () => void gaveUp++,
    });
    const msg = thumbnailWork();
    await publishWork(bus, 'thumbnail', msg, msg.job.jobId);
    const parked = async () => (await listDeadLetters(bus)).find((l) => l.jobId === msg.job.jobId);
    let letter = await parked();
    for (let i = 0; !letter && i < 100; i++) letter = await sleep(100).then(parked);
    expect(letter).toMatchObject({ subject: 'work.thumbnail', consumer: 'thumbnailer', deliveries: 1, reason: expect.stringMatching(/after the job had failed/) });
    expect([calls, gaveUp]).toEqual([1, 0]);
  });

  it('acks handled work and cleans its temp dir', async () => {
    const seen: string[] = [];
    const dirs: string[] = [];
    await startWorker({ handle: async (m, ctx) => void (seen.push(m.job.jobId), dirs.push(ctx.tmp)) });
    const msg = thumbnailWork();
    await publishWork(bus, 'thumbnail', msg, msg.job.jobId);
    await until(() => seen.length === 1);
    await sleep(200);
    const info = await bus.jsm.consumers.info(STREAMS.work.name, 'thumbnailer');
    expect(info.num_ack_pending).toBe(0);
    expect(info.num_pending).toBe(0);
    const { existsSync } = await import('node:fs');
    expect(existsSync(dirs[0]!)).toBe(false);
  });

  it('keeps a long job alive past ack_wait and handles it once', async () => {
    let calls = 0;
    await startWorker({
      ackWaitMs: 1500,
      handle: async () => {
        calls++;
        await sleep(4000);
      },
      onGiveUp: async () => undefined,
    });
    const msg = thumbnailWork();
    await publishWork(bus, 'thumbnail', msg, msg.job.jobId);
    await until(() => calls === 1);
    await sleep(5000);
    expect(calls).toBe(1);
  }, 20_000);

  it('retries a failing handler, then gives up with the error after max deliveries', async () => {
    let calls = 0;
    const gaveUp: unknown[] = [];
    await startWorker({
      maxDeliver: 2,
      handle: async () => {
        calls++;
        throw new Error(`disk full (attempt ${calls})`);
      },
      onGiveUp: async (_m, _raw, err) => void gaveUp.push(err),
    });
    const msg = thumbnailWork();
    await publishWork(bus, 'thumbnail', msg, msg.job.jobId);
    await until(() => gaveUp.length === 1);
    expect(calls).toBe(2);
    expect(String(gaveUp[0])).toContain('attempt 2');
  }, 20_000);

  it('gives up at once on a message that does not match the schema', async () => {
    const gaveUp: unknown[] = [];
    await startWorker({ onGiveUp: async (m, raw, err) => void gaveUp.push([m, raw, err]) });
    await bus.js.publish('work.thumbnail', JSON.stringify({ kind: 'thumbnail', job: { jobId: 'nope' } }));
    await until(() => gaveUp.length === 1);
    const [message, raw, err] = gaveUp[0] as [unknown, unknown, Error];
    expect(message).toBeUndefined();
    expect(raw).toMatchObject({ job: { jobId: 'nope' } });
    expect(err.message).toMatch(/invalid message on work.thumbnail/);
  });

  it('lets replicas on one durable consumer share the queue', async () => {
    const byWorker: Record<string, number> = { a: 0, b: 0 };
    for (const name of ['a', 'b']) {
      workers.push(
        await runWorker({
          bus,
          log,
          source: workSource('thumbnail'),
          handle: async () => {
            byWorker[name]!++;
            await sleep(300);
          },
          onGiveUp: async () => undefined,
        }),
      );
    }
    for (let i = 0; i < 6; i++) {
      const msg = thumbnailWork();
      await publishWork(bus, 'thumbnail', msg, msg.job.jobId);
    }
    await until(() => byWorker['a']! + byWorker['b']! === 6);
    expect(byWorker['a']).toBeGreaterThan(0);
    expect(byWorker['b']).toBeGreaterThan(0);
  });

  it('drops a repeated publish with the same message id', async () => {
    const msg = thumbnailWork();
    const first = await publishWork(bus, 'thumbnail', msg, 'same-id');
    const again = await publishWork(bus, 'thumbnail', msg, 'same-id');
    expect(first.duplicate).toBe(false);
    expect(again.duplicate).toBe(true);
  });
});
