/**
 * Nothing lost: each of the eight services is SIGKILLed while it holds a job's message and restarted,
 * nats-server restarts mid-job, and the MongoDB projection is lost; every job still finishes correctly
 * and the backend hears of it (duplicates carry the same Idempotency-Key, so it can drop them).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, DeleteBucketCommand } from '@aws-sdk/client-s3';
import { closeBus, connectBus } from '@mesh/bus';
import { createLogger } from '@mesh/common';
import { openJobStates, outputKey } from '@mesh/jobs';
import { deletePrefix } from '@mesh/storage';
import { freePort, makeClip, type ServiceName } from '@mesh/testkit';
import { api, BUCKETS, getJob, headers, putInput, startSystem, submit, until, waitForLog, waitForSettled, waitForState, type System } from './support/harness.ts';
import { callsFor as backendCalls, expectDelivered as delivered } from './support/delivered.ts';

let sys: System;
let dir: string;
let clip: string;
/** Jobs whose backend call should hang for a while, so the notifier can be killed holding it. */
const slowBackendFor = new Set<string>();
/** Statuses the backend answers for a job, one per request, before it answers 200. */
const backendAnswers = new Map<string, number[]>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'faults-'));
  sys = await startSystem({
    apiPort: await freePort(),
    // A crashed holder's message comes back after 3 s instead of 30.
    env: { ACK_WAIT_MS: '3000', MAX_DELIVER: '3' },
    backend: {
      respond: async (req) => {
        const taskId = (req.body as { taskId?: string }).taskId ?? '';
        if (slowBackendFor.delete(taskId)) await new Promise((r) => setTimeout(r, 4000));
        return backendAnswers.get(taskId)?.shift() ?? 200;
      },
    },
  });
  clip = await makeClip(join(dir, 'clip.mp4'), { width: 1280, height: 720, seconds: 12, audio: true });
}, 120_000);

afterAll(async () => {
  await sys?.stop();
  await rm(dir, { recursive: true, force: true });
});

let n = 0;
const keyOf = (i: number) => `faults/clip-${i}.mp4`;
async function newJob(): Promise<string> {
  const key = keyOf(++n);
  await putInput(sys, key, clip);
  return submit(sys, { object_key: key, base_url: 'https://cdn.example.test/f/', video_id: `faults-${n}`, has_audio: true });
}

/** The job ends complete with both renditions, and the backend heard SUCCESS (once per key), after `before`. */
const expectDelivered = (taskId: string, before: string[] = []) => delivered(sys, taskId, before);

/** Where each stage is surely holding the job's message. */
const HOLDING: [ServiceName, Record<string, unknown>][] = [
  ['downloader', { msg: 'running ffprobe' }],
  ['transcoder-720', { msg: 'running ffmpeg' }],
  ['transcoder-360', { msg: 'running ffmpeg' }],
  ['thumbnailer', { msg: 'running ffmpeg' }],
  ['packager', { msg: 'running packager' }],
];

describe('SIGKILL while holding a message', () => {
  it('a message whose every delivery is killed fails its stage after MAX_DELIVER tries, without running again, and the job ends', async () => {
    // Before: each kill counted a delivery, the handler ran again past the limit, and after MAX_DELIVER+3
    // deliveries nothing recorded the failure: the job sat active for the WORK stream's 7 days.
    const taskId = await newJob();
    const victim = () => sys.mesh.processes.find((p) => p.id === 'transcoder-360')!;
    for (let delivery = 1; delivery <= 3; delivery++) {
      await waitForLog(sys, 'transcoder-360', { msg: 'running ffmpeg', jobId: taskId, delivery }, 60_000);
      await victim().kill();
      await sys.mesh.respawn(victim());
    }
    const job = await waitForSettled(sys, taskId, ['complete', 'failed'], 120_000);
    expect(job).toMatchObject({ state: 'complete', renditions: ['720p'] });
    expect(job['stages']['transcode-360p']).toMatchObject({ state: 'failed', code: 'RETRIES_EXHAUSTED' });
    expect(job['stages']['transcode-360p'].reason).toMatch(/gave up after 3 tries that never finished/);
    await waitForLog(sys, 'transcoder-360', { msg: 'work failed, giving up', jobId: taskId, delivery: 4 });
  }, 180_000);

  it.each(HOLDING)('%s: the message comes back to the restarted process and the job completes', async (name, at) => {
    const taskId = await newJob();
    await waitForLog(sys, name, { ...at, jobId: taskId });
    const victim = sys.mesh.processes.find((p) => p.id === name)!;
    await victim.kill();
    await sys.mesh.respawn(victim);
    // The restarted process gets the same message again (the job may finish first through another
    // rendition's message; the redelivery must come all the same, and change nothing).
    await waitForLog(sys, name, { jobId: taskId, msg: 'work done', delivery: 2 }, 30_000);
    await expectDelivered(taskId);
  }, 150_000);

  it('uploader: the message comes back to the restarted process and the job completes', async () => {
    // Publishing a manifest takes the uploader a few ms: the test holds the output prefix's manifest lock,
    // so the uploader surely still holds its message (waiting for the lock) when it is killed.
    const bus = await connectBus({ url: sys.nats.url, name: 'faults-test', log: createLogger('faults-test', 'silent') });
    const states = await openJobStates(bus);
    const lock = outputKey(keyOf(n + 1));
    await states.locks.create(lock, 'faults-test');
    const taskId = await newJob();
    try {
      await waitForLog(sys, 'uploader', { msg: 'work started', jobId: taskId });
      const victim = sys.mesh.processes.find((p) => p.id === 'uploader')!;
      await victim.kill();
      await sys.mesh.respawn(victim);
    } finally {
      await states.locks.delete(lock);
      await closeBus(bus);
    }
    await waitForLog(sys, 'uploader', { jobId: taskId, msg: 'work done', delivery: 2 }, 30_000);
    await expectDelivered(taskId);
  }, 150_000);

  it('notifier: killed while the backend call is in flight, the notification is sent again with the same key', async () => {
    const taskId = await newJob();
    slowBackendFor.add(taskId);
    await sys.backend.waitFor((all) => all.some((r) => (r.body as { taskId?: string }).taskId === taskId), 120_000);
    const victim = sys.mesh.processes.find((p) => p.id === 'notifier')!;
    await victim.kill();
    await sys.mesh.respawn(victim);
    await sys.backend.waitFor((all) => all.filter((r) => (r.body as { taskId?: string }).taskId === taskId).length >= 2, 60_000);
    await expectDelivered(taskId);
    const job = await waitForState(sys, taskId, ['complete']);
    await new Promise((r) => setTimeout(r, 500));
    expect((await getJob(sys, taskId))['notifications']).toMatchObject([{ status: 'SUCCESS', httpStatus: 200, outcome: 'delivered' }]);
    expect(job['state']).toBe('complete');
  }, 150_000);

  it('ingest-api: killed with a job in flight, it comes back and answers for the job', async () => {
    const taskId = await newJob();
    await waitForLog(sys, 'transcoder-720', { msg: 'running ffmpeg', jobId: taskId });
    const victim = sys.mesh.processes.find((p) => p.id === 'ingest-api')!;
    await victim.kill();
    await sys.mesh.respawn(victim);
    await expectDelivered(taskId);
  }, 150_000);
});

describe('a backend that is down or refuses', () => {
  const callsFor = (taskId: string) => backendCalls(sys, taskId);

  it('is retried with backoff after 5xx until it answers, with one idempotency key, and the job shows every try', async () => {
    const key = `faults/backend-${++n}.mp4`;
    await putInput(sys, key, clip);
    // The job id is only known after the POST; answers are looked up per request, so set them at once.
    const taskId = await submit(sys, { object_key: key, base_url: 'https://cdn.example.test/f/', video_id: 'backend-5xx', has_audio: true });
    backendAnswers.set(taskId, [503, 502]);
    await sys.backend.waitFor(() => callsFor(taskId).length >= 3, 90_000);
    const calls = callsFor(taskId);
    expect(calls.map((c) => c.headers['idempotency-key'])).toEqual([`${taskId}:SUCCESS`, `${taskId}:SUCCESS`, `${taskId}:SUCCESS`]);
    // Backoff: the second retry waits longer than the first (1-2 s, then 2-4 s).
    const gaps = [calls[1]!.at - calls[0]!.at, calls[2]!.at - calls[1]!.at];
    expect(gaps[0]).toBeGreaterThanOrEqual(900);
    expect(gaps[1]).toBeGreaterThanOrEqual(1900);
    const job = await until(() => getJob(sys, taskId), (j) => j['notifications']?.at(-1)?.outcome === 'delivered');
    expect(job['notifications']).toMatchObject([
      { status: 'SUCCESS', httpStatus: 503, attempt: 1, outcome: 'retrying', error: 'the backend answered 503' },
      { status: 'SUCCESS', httpStatus: 502, attempt: 2, outcome: 'retrying', error: 'the backend answered 502' },
      { status: 'SUCCESS', httpStatus: 200, attempt: 3, outcome: 'delivered' },
    ]);
  }, 150_000);

  it('is not retried after a 4xx; the refusal shows on the job', async () => {
    const key = `faults/backend-${++n}.mp4`;
    await putInput(sys, key, clip);
    const taskId = await submit(sys, { object_key: key, base_url: 'https://cdn.example.test/f/', video_id: 'backend-4xx', has_audio: true });
    backendAnswers.set(taskId, [400]);
    const job = await until(() => getJob(sys, taskId), (j) => j['stages']?.notify?.state === 'failed', 90_000);
    expect(job['notifications']).toMatchObject([{ status: 'SUCCESS', httpStatus: 400, attempt: 1, outcome: 'gave_up' }]);
    expect(job['stages'].notify.reason).toBe('the backend answered 400');
    await new Promise((r) => setTimeout(r, 3000));
    expect(callsFor(taskId)).toHaveLength(1);
  }, 150_000);
});

describe('dead letters', () => {
  it('a message that keeps failing fails the job with the reason, is kept, and re-driven finishes the job', async () => {
    // The output bucket disappears: every write of segments fails until the packager gives up. (Emptied
    // again if a late write of an earlier test's job lands between the two.)
    await until(async () => {
      await deletePrefix(sys.s3, BUCKETS.output, '');
      return sys.s3.send(new DeleteBucketCommand({ Bucket: BUCKETS.output })).then(() => true, () => undefined);
    }, (gone) => gone === true, 20_000);
    let taskId = '';
    try {
      taskId = await newJob();
      const failed = await waitForState(sys, taskId, ['failed', 'complete'], 120_000);
      expect(failed).toMatchObject({ task_status: 'FAILURE', error: { stage: 'package', code: 'STORAGE_FAILED' } });
      // The reason names what failed, not the bucket (internal names stay in the logs).
      expect(failed['task_result']).toMatch(/listing of faults\/clip-\d+\.mp4\/.* failed: The specified bucket does not exist/);
      expect(failed['task_result']).not.toContain(BUCKETS.output);
      // Both pieces of work (the 720p package, and the 360p one) are kept
      // before the cause is fixed; otherwise the second could still be retrying during the re-drive.
      await until(
        async () => ((await (await api(sys, `/admin/dead-letters`, { headers })).json()) as { dead_letters: { jobId: string }[] }).dead_letters,
        (all) => all.filter((l) => l.jobId === taskId).length === 2,
      );
    } finally {
      await sys.s3.send(new CreateBucketCommand({ Bucket: BUCKETS.output }));
    }
    const letters = await until(
      async () => ((await (await api(sys, `/admin/dead-letters`, { headers })).json()) as { dead_letters: { seq: number; jobId: string; subject: string; reason: string; deliveries: number }[] }).dead_letters,
      (all) => all.some((l) => l.jobId === taskId),
    );
    const mine = letters.filter((l) => l.jobId === taskId);
    // The first package gave up after its deliveries; the other gave up the same way, or was parked
    // because the job had failed by then. Either way it is kept.
    expect(mine.filter((l) => l.subject === 'work.package' && l.deliveries === 3 && /does not exist/.test(l.reason)).length).toBeGreaterThanOrEqual(1);
    expect(mine.every((l) => /does not exist|after the job had failed/.test(l.reason))).toBe(true);
    for (const letter of mine) {
      const res = await api(sys, `/admin/dead-letters/${letter.seq}/redrive`, { method: 'POST', headers });
      expect(res.status).toBe(202);
    }
    // The backend was told FAILED when the job failed, and SUCCESS once it recovered.
    await expectDelivered(taskId, ['FAILED']);
    const job = await getJob(sys, taskId);
    expect(job['error']).toBeNull();
    const left = ((await (await api(sys, `/admin/dead-letters`, { headers })).json()) as { dead_letters: { jobId: string }[] }).dead_letters;
    expect(left.filter((l) => l.jobId === taskId)).toEqual([]);
    expect((await api(sys, `/admin/dead-letters/999999/redrive`, { method: 'POST', headers })).status).toBe(404);
  }, 150_000);
});

describe('infrastructure faults', () => {
  it('nats-server restarting mid-job loses nothing; services reconnect by themselves', async () => {
    const taskId = await newJob();
    await waitForLog(sys, 'transcoder-720', { msg: 'running ffmpeg', jobId: taskId });
    await sys.nats.restart();
    await expectDelivered(taskId);
    for (const p of sys.mesh.processes) expect(p.child.exitCode, p.id).toBeNull();
  }, 150_000);

  it('the MongoDB projection lost entirely is rebuilt from the event stream', async () => {
    const done = await newJob();
    // Settled: complete, every stage reported done, the backend told.
    const before = await until(
      () => getJob(sys, done),
      (j) => j['state'] === 'complete' && Object.values(j['stages'] as Record<string, { state: string }>).every((st) => st.state === 'done') && j['notifications'].length === 1,
    );
    await sys.mongo.restart();
    const res = await api(sys, `/admin/projection/rebuild`, { method: 'POST', headers });
    expect(res.status).toBe(202);
    const after = await waitForState(sys, done, ['complete'], 60_000);
    expect({ ...after, updated_at: null }).toEqual({ ...before, updated_at: null });
  }, 150_000);
});

describe('SIGTERM', () => {
  it('lets work in flight finish, then exits 0', async () => {
    const taskId = await newJob();
    await waitForLog(sys, 'transcoder-360', { msg: 'running ffmpeg', jobId: taskId });
    const victim = sys.mesh.processes.find((p) => p.id === 'transcoder-360')!;
    expect(await victim.stop(30_000)).toBe(0);
    expect(await waitForLog(sys, 'transcoder-360', { msg: 'work done', jobId: taskId }, 1000)).toBeTruthy();
    await sys.mesh.respawn(victim);
    await expectDelivered(taskId);
  }, 150_000);

  it('past the drain deadline, stops FFmpeg, hands the message back and exits 0; another process finishes it', async () => {
    // Only a replica with a 1 s drain deadline takes this job.
    const first = sys.mesh.processes.find((p) => p.id === 'transcoder-720')!;
    await first.stop();
    const short = await sys.mesh.add('transcoder-720', { DRAIN_MS: '1000' });
    const taskId = await newJob();
    await waitForLog(sys, short.id, { msg: 'running ffmpeg', jobId: taskId });
    const started = Date.now();
    expect(await short.stop(30_000)).toBe(0);
    expect(Date.now() - started).toBeLessThan(10_000);
    const handedBack = await waitForLog(sys, short.id, { msg: 'work interrupted by shutdown; handed back', jobId: taskId }, 1000);
    expect(handedBack['err']).toMatch(/ffmpeg stopped: .*service stopping/);
    await sys.mesh.respawn(first);
    await expectDelivered(taskId);
  }, 150_000);
});
