/** The consume loop against a real nats-server: ack, heartbeat, retry, give-up, shared consumers. */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, eventSubject, JobEvent, jobEventsFilter, MeshError, sleep } from '@mesh/common';
import { startNats, type NatsServer } from '@mesh/testkit';
import { ConfigError } from '@mesh/common';
import { closeBus, connectBus, ensureConsumer, ensureStream, GIVE_UP_HEADROOM, listDeadLetters, publishEvent, publishWork, STREAMS, runWorker, workSource, type Bus, type Worker, type WorkerOptions, type WorkMessage } from '../src/index.ts';

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
  return { kind: 'thumbnail' as const, job: { jobId, objectKey: 'k', baseUrl: 'http://x/', videoId: 'v', hasAudio: false, attempt: 1 }, source: { etag: 'e' }, probe };
}

/** A thumbnail worker on the test bus, stopped after the test; `o` sets the handler and the rest. */
async function startWorker(o: Partial<WorkerOptions<WorkMessage<'thumbnail'>>>): Promise<Worker> {
  const worker = await runWorker({ bus, log, source: workSource('thumbnail'), handle: async () => undefined, onGiveUp: async () => undefined, ...o });
  workers.push(worker);
  return worker;
}

async function until(cond: () => boolean | Promise<boolean>, ms = 15_000) {
  const end = Date.now() + ms;
  while (!(await cond())) {
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

  it('does not run the handler again on a delivery past MAX_DELIVER (every try died): it records the failure', async () => {
    // Before: a handler killed mid-work on every delivery (SIGKILL, OOM) was run again past the limit, and
    // after MAX_DELIVER+3 deliveries nothing was ever recorded: the job stayed active for good.
    const maxDeliver = 2;
    await ensureConsumer(bus.jsm, { stream: STREAMS.work.name, durable: 'thumbnailer', filterSubject: 'work.thumbnail', ackWaitMs: 30_000, maxDeliver: maxDeliver + GIVE_UP_HEADROOM, maxAckPending: 1000 });
    const msg = thumbnailWork();
    await publishWork(bus, 'thumbnail', msg, msg.job.jobId);
    // Two deliveries that never answer, as a worker killed while holding the message.
    const raw = await bus.js.consumers.get(STREAMS.work.name, 'thumbnailer');
    for (let i = 0; i < maxDeliver; i++) (await raw.next({ expires: 2000 }))!.nak();
    let calls = 0;
    const gaveUp: unknown[] = [];
    await startWorker({ maxDeliver, handle: async () => void calls++, onGiveUp: async (_m, _r, err) => void gaveUp.push(err) });
    await until(() => gaveUp.length === 1);
    expect(calls).toBe(0);
    expect(gaveUp[0]).toMatchObject({ code: 'RETRIES_EXHAUSTED', message: expect.stringMatching(/2 tries that never finished/) });
  });

  it('records the failure from the server\'s max-deliveries advisory when recording it kept failing on every delivery', async () => {
    let calls = 0;
    let records = 0;
    const recorded: unknown[] = [];
    await startWorker({
      maxDeliver: 1,
      backoff: () => 50,
      handle: async () => {
        calls++;
        throw new MeshError('NOT_A_VIDEO', 'not a video', { permanent: true });
      },
      onGiveUp: async (_m, _r, err) => {
        // NATS or S3 down while the failure is recorded, for every delivery the server allows.
        if (++records <= 1 + GIVE_UP_HEADROOM) throw new Error('recording failed');
        recorded.push(err);
      },
    });
    const msg = thumbnailWork();
    await publishWork(bus, 'thumbnail', msg, msg.job.jobId);
    await until(() => recorded.length === 1);
    expect(calls).toBe(1);
    expect(recorded[0]).toMatchObject({ code: 'RETRIES_EXHAUSTED' });
    // And the message is gone from the stream.
    await until(async () => (await bus.jsm.streams.info(STREAMS.work.name)).state.messages === 0);
  });

  it('keeps an event the server gave up on in the job\'s history (only work is removed from its queue)', async () => {
    const jobId = `00000000-0000-4000-8000-${String(++n).padStart(12, '0')}`;
    const recorded: unknown[] = [];
    let records = 0;
    const worker = await runWorker({
      bus,
      log,
      source: { stream: STREAMS.events.name, durable: 'events-giver-up', subject: `events.${jobId}.>`, schema: JobEvent, jobIdOf: (e: JobEvent) => e.jobId },
      maxDeliver: 1,
      backoff: () => 50,
      handle: async () => {
        throw new MeshError('WEBHOOK_REJECTED', 'no', { permanent: true });
      },
      onGiveUp: async (_m, _r, err) => {
        if (++records <= 1 + GIVE_UP_HEADROOM) throw new Error('recording failed');
        recorded.push(err);
      },
    });
    workers.push(worker);
    await publishEvent(bus, { type: 'job.cancelled', jobId });
    await until(() => recorded.length === 1);
    expect(recorded[0]).toMatchObject({ code: 'RETRIES_EXHAUSTED' });
    await sleep(300);
    expect((await bus.jsm.streams.info(STREAMS.events.name, { subjects_filter: jobEventsFilter(jobId) })).state.messages).toBe(1);
  });

  it('never turns finished work into a failure: a failing onDone is logged, the message acked, nothing retried', async () => {
    let calls = 0;
    let gaveUp = 0;
    let doneTries = 0;
    await startWorker({
      handle: async () => void calls++,
      onDone: async () => {
        doneTries++;
        throw new Error('events stream unavailable');
      },
      onGiveUp: async () => void gaveUp++,
    });
    const msg = thumbnailWork();
    await publishWork(bus, 'thumbnail', msg, msg.job.jobId);
    await until(() => doneTries === 3);
    await until(async () => (await bus.jsm.consumers.info(STREAMS.work.name, 'thumbnailer')).num_ack_pending === 0);
    expect([calls, gaveUp]).toEqual([1, 0]);
  });

  it('keeps consuming when parking a message fails (no dead-letter stream): the message comes back and is parked later', async () => {
    // Before: the error escaped the consume loop and ended the process.
    await bus.jsm.streams.delete(STREAMS.deadLetters.name).catch(() => undefined);
    let parkedTries = 0;
    const handled: string[] = [];
    await startWorker({
      backoff: () => 200,
      handle: async (m) => {
        handled.push(m.job.jobId);
        if (m.job.videoId === 'park') {
          parkedTries++;
          throw new MeshError('JOB_FAILED', 'ready after the job had failed', { permanent: true });
        }
      },
    });
    const park = { ...thumbnailWork() };
    park.job.videoId = 'park';
    await publishWork(bus, 'thumbnail', park, park.job.jobId);
    await until(() => parkedTries >= 2);
    const other = thumbnailWork();
    await publishWork(bus, 'thumbnail', other, other.job.jobId);
    await until(() => handled.includes(other.job.jobId));
    await ensureStream(bus.jsm, STREAMS.deadLetters);
    await until(async () => (await listDeadLetters(bus)).some((l) => l.jobId === park.job.jobId));
  });

  it('hands a message back without charging a delivery when the drain deadline passes', async () => {
    const deliveries: number[] = [];
    const first = await startWorker({
      drainMs: 100,
      handle: async (_m, ctx) => {
        deliveries.push(ctx.deliveryCount);
        await new Promise((_r, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)));
      },
    });
    const msg = thumbnailWork();
    await publishWork(bus, 'thumbnail', msg, msg.job.jobId);
    await until(() => deliveries.length === 1);
    await first.stop();
    await startWorker({ handle: async (_m, ctx) => void deliveries.push(ctx.deliveryCount) });
    await until(() => deliveries.length === 2);
    expect(deliveries).toEqual([1, 1]);
  });

  it('hands an event back on a stream that keeps its messages by naking it, never by publishing a second copy', async () => {
    // A reader of JOB_EVENTS (the notifier) stopped mid-work: a republished copy would be a second event in the job's history.
    const jobId = `00000000-0000-4000-8000-${String(++n).padStart(12, '0')}`;
    const source = { stream: STREAMS.events.name, durable: 'events-reader', subject: `events.${jobId}.>`, schema: JobEvent, jobIdOf: (e: JobEvent) => e.jobId };
    const seen: number[] = [];
    const first = await runWorker({ bus, log, source, drainMs: 100, onGiveUp: async () => undefined, handle: async (_e, ctx) => {
      seen.push(ctx.deliveryCount);
      await new Promise((_r, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)));
    } });
    await publishEvent(bus, { type: 'job.cancelled', jobId });
    await until(() => seen.length === 1);
    await first.stop();
    const second = await runWorker({ bus, log, source, onGiveUp: async () => undefined, handle: async (_e, ctx) => void seen.push(ctx.deliveryCount) });
    workers.push(second);
    await until(() => seen.length === 2);
    expect(seen).toEqual([1, 2]);
    const stored = (await bus.jsm.streams.info(STREAMS.events.name, { subjects_filter: jobEventsFilter(jobId) })).state.subjects ?? {};
    expect(stored).toEqual({ [eventSubject(jobId, 'job.cancelled')]: 1 });
  });

  it('takes no new work once stopping: a message the pull in flight brings is handed back, not handled', async () => {
    // Before: the pull in flight delivered after stop(), and a handler started 9 ms later.
    const handled: number[] = [];
    const worker = await startWorker({ handle: async () => void handled.push(Date.now()) });
    await until(async () => (await bus.jsm.consumers.info(STREAMS.work.name, 'thumbnailer')).num_waiting > 0);
    const stopping = worker.stop();
    const msg = thumbnailWork();
    await publishWork(bus, 'thumbnail', msg, msg.job.jobId);
    await stopping;
    expect(handled).toEqual([]);
    await startWorker({ handle: async () => void handled.push(Date.now()) });
    await until(() => handled.length === 1);
  });

  it('refuses to start a replica whose ack wait differs from the running replicas\' (it would redeliver their long encodes)', async () => {
    await startWorker({ ackWaitMs: 30_000 });
    await until(async () => (await bus.jsm.consumers.info(STREAMS.work.name, 'thumbnailer')).num_waiting > 0);
    const err = await runWorker({ bus, log, source: workSource('thumbnail'), ackWaitMs: 5000, handle: async () => undefined, onGiveUp: async () => undefined }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect(String((err as Error).message)).toMatch(/ack_wait 30000 ms.*ack_wait 5000 ms.*same ACK_WAIT_MS/);
    // With every replica stopped, the setting can change.
    await Promise.all(workers.splice(0).map((w) => w.stop()));
    await startWorker({ ackWaitMs: 5000 });
    expect((await bus.jsm.consumers.info(STREAMS.work.name, 'thumbnailer')).config.ack_wait).toBe(5000 * 1e6);
  }, 20_000);
});
