/** The stage wrapper on a real nats-server: repeats past the duplicate window, cancels that core NATS lost. */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { hostname } from 'node:os';
import { closeBus, connectBus, ensureStream, publishWork, STREAMS, type Bus, type Worker, type WorkMessage } from '@mesh/bus';
import { createLogger, sleep } from '@mesh/common';
import { eventsOf as eventsOfJob } from './events.ts';
import { startNats, type NatsServer } from '@mesh/testkit';
import { mutate, openJobStates, runStage, type JobStates } from '../src/index.ts';

const log = createLogger('test', process.env['TEST_LOG'] ?? 'silent');
let nats: NatsServer;
let bus: Bus;
let states: JobStates;
const workers: Worker[] = [];

beforeAll(async () => {
  nats = await startNats();
  bus = await connectBus({ url: nats.url, name: 'test', log });
  for (const s of [STREAMS.work, STREAMS.events, STREAMS.deadLetters]) await ensureStream(bus.jsm, s);
  states = await openJobStates(bus);
});
afterEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.stop()));
});
afterAll(async () => {
  await closeBus(bus);
  await nats.stop();
});

let n = 0;
function thumbnailWork(): WorkMessage<'thumbnail'> {
  const jobId = `00000000-0000-4000-a100-${String(++n).padStart(12, '0')}`;
  const probe = { formatName: 'mov', durationSec: 1, sizeBytes: 1, video: { codec: 'h264', width: 2, height: 2, rotation: 0, frameRate: { num: 1, den: 1 }, sampleAspectRatio: { num: 1, den: 1 }, pixFmt: 'yuv420p', interlaced: false }, audio: null };
  return { kind: 'thumbnail', job: { jobId, objectKey: 'k.mp4', baseUrl: 'http://x/', videoId: 'v', hasAudio: false, attempt: 1 }, source: { etag: 'e' }, probe };
}

async function until(cond: () => boolean | Promise<boolean>, ms = 15_000) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out');
    await sleep(50);
  }
}

const eventsOf = (jobId: string) => eventsOfJob(bus, jobId);

describe('runStage', () => {
  it('skips a repeat of finished work that arrives after the duplicate window, and says the stage is done', async () => {
    // Before: only JetStream's 2-minute duplicate window stopped a repeat; a redelivery after ACK_WAIT_MS
    // plus a full re-encode came later, and the packager repackaged a finished job.
    let calls = 0;
    workers.push(await runStage({ bus, states, kind: 'thumbnail', log, stage: () => 'thumbnail', handle: async () => void calls++ }));
    const msg = thumbnailWork();
    await publishWork(bus, 'thumbnail', msg, 'first');
    await until(async () => (await eventsOf(msg.job.jobId)).some((e) => e.type === 'stage.done'));
    // The same work item again under another message id: what a republish after the window is.
    await publishWork(bus, 'thumbnail', msg, 'after-the-window');
    await until(async () => (await bus.jsm.consumers.info(STREAMS.work.name, 'thumbnailer')).num_pending === 0 && (await bus.jsm.consumers.info(STREAMS.work.name, 'thumbnailer')).num_ack_pending === 0);
    expect(calls).toBe(1);
    const started = (await eventsOf(msg.job.jobId)).filter((e) => e.type === 'stage.started');
    expect(started).toHaveLength(1);
    // Which replica took it: this process, by host and pid (the dashboard's timeline shows it).
    expect(started[0]).toMatchObject({ replica: `${hostname()}/${process.pid}` });
  });

  it('stops work for a job cancelled while core NATS could not tell it (the cancel message was lost)', async () => {
    let aborted = false;
    let started = false;
    workers.push(
      await runStage({
        bus,
        states,
        kind: 'thumbnail',
        log,
        stage: () => 'thumbnail',
        handle: async (_m, ctx) => {
          started = true;
          await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()));
          aborted = true;
          throw ctx.signal.reason;
        },
      }),
    );
    const msg = thumbnailWork();
    await publishWork(bus, 'thumbnail', msg, msg.job.jobId);
    await until(() => started);
    // The record says cancelled, but no control.cancel message is sent (as during a reconnect).
    await mutate(states, msg.job.jobId, (r) => ({ ...r, phase: 'cancelled' }));
    await until(() => aborted);
    await until(async () => (await bus.jsm.consumers.info(STREAMS.work.name, 'thumbnailer')).num_ack_pending === 0);
  });
});
