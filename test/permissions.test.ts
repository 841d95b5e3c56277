/**
 * Each service logs in to NATS as its own user, allowed only the subjects it uses (libs/bus permissions.ts,
 * rendered into the nats-server config the deployments run): the whole mesh converts, fails, retries and
 * cancels jobs without one refused subject, and a service that tries what is not its own (a transcoder
 * forging an upload, the thumbnailer announcing a job playable, the notifier queueing work, a stage deleting
 * or rewriting a stream, reading another's replies or taking another's work) is refused by the server.
 * One system for the whole file.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kvm } from '@nats-io/kv';
import { AckPolicy } from '@nats-io/jetstream';
import { PermissionViolationError } from '@nats-io/transport-node';
import { BUCKETS as KV, closeBus, connectBus, STREAMS, type Bus } from '@mesh/bus';
import { ConfigError, createLogger, eventSubject, JobEvent, type JobEventType } from '@mesh/common';
import { freePort, makeClip, SERVICES, startService, type ServiceName } from '@mesh/testkit';
import { BUCKETS, getJob, headers, logLines, putInput, startSystem, submit, waitForLog, waitForSettled, waitForState, type System } from './support/harness.ts';

let sys: System;
let dir: string;
const log = createLogger('permissions-test', 'silent');
const buses: Bus[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'permissions-'));
  sys = await startSystem({ apiPort: await freePort(), natsUsers: true });
}, 120_000);

afterAll(async () => {
  await Promise.allSettled(buses.map(closeBus));
  await sys?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** A connection as `service`'s NATS user, as a compromised process of that service would have. */
async function as(service: ServiceName): Promise<Bus> {
  const env = sys.nats.serviceEnv(service);
  const bus = await connectBus({ url: sys.nats.url, name: `${service}-impostor`, log, auth: { user: env['NATS_USER']!, password: env['NATS_PASSWORD']! } });
  buses.push(bus);
  return bus;
}

/** `request` is refused by the server: a permissions violation on publishing to `subject`. */
async function refused(request: Promise<unknown>, subject: string): Promise<void> {
  const err = await request.then(
    () => new Error('allowed'),
    (e: unknown) => e,
  );
  // A request's refusal comes wrapped in the request's error.
  const violation = err instanceof Error && err.cause instanceof PermissionViolationError ? err.cause : err;
  expect(violation, subject).toBeInstanceOf(PermissionViolationError);
  expect((violation as PermissionViolationError).subject).toBe(subject);
}

/** The next permissions violation the server reports on `bus` (core NATS publishes and subscriptions have no reply to fail). */
async function nextViolation(bus: Bus, act: () => void): Promise<PermissionViolationError> {
  const seen = (async () => {
    for await (const s of bus.nc.status()) if (s.type === 'error' && s.error instanceof PermissionViolationError) return s.error;
    throw new Error('connection closed');
  })();
  act();
  return Promise.race([seen, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no violation reported')), 5000))]);
}

/** The job's first event of `type`, read as the test's own (unrestricted) NATS user. */
async function nextEvent(jobId: string, type: JobEventType): Promise<JobEvent> {
  const bus = await connectBus({ url: sys.nats.url, name: 'test', log, auth: sys.nats.users!.admin });
  buses.push(bus);
  const consumer = await bus.js.consumers.get(STREAMS.events.name, { filter_subjects: eventSubject(jobId, type) });
  const m = await consumer.next({ expires: 20_000 });
  if (!m) throw new Error(`no ${type} for ${jobId}`);
  return JobEvent.parse(m.json());
}

const told = (taskId: string) => sys.backend.received.filter((r) => (r.body as { taskId?: string }).taskId === taskId).map((r) => (r.body as { status: string }).status);

describe('every service as its own NATS user', () => {
  it('converts a 720p clip end to end: both renditions, the thumbnail, the manifest and the webhook', async () => {
    const key = 'perm/clip.mp4';
    await putInput(sys, key, await makeClip(join(dir, 'clip.mp4'), { width: 1280, height: 720, seconds: 3, audio: true }));
    const taskId = await submit(sys, { object_key: key, base_url: 'https://cdn.example.test/p/', video_id: 'perm-1', has_audio: true });
    const job = await waitForSettled(sys, taskId, ['complete', 'failed']);
    expect(job).toMatchObject({ task_status: 'SUCCESS', state: 'complete', renditions: ['720p', '360p'], manifest: { key: `${key}/manifest.mpd` }, thumbnail: { bucket: BUCKETS.thumbnails, key: 'perm-1' } });
    for (const stage of ['download', 'transcode-720p', 'transcode-360p', 'package', 'upload', 'thumbnail']) expect(job['stages'][stage], stage).toMatchObject({ state: 'done' });
    await sys.backend.waitFor(() => told(taskId).length === 1);
    expect(told(taskId)).toEqual(['SUCCESS']);
  }, 120_000);

  it('fails a job whose source is missing, tells the backend, and runs it again on retry', async () => {
    const key = 'perm/late.mp4';
    const taskId = await submit(sys, { object_key: key, base_url: 'https://cdn.example.test/l/', video_id: 'perm-late', has_audio: true });
    expect(await waitForState(sys, taskId, ['failed', 'complete'])).toMatchObject({ task_status: 'FAILURE', error: { code: 'SOURCE_NOT_FOUND' } });
    await putInput(sys, key, await makeClip(join(dir, 'late.mp4'), { width: 640, height: 360, seconds: 2, audio: true }));
    expect((await fetch(`${sys.api}/video/encoding/${taskId}/retry`, { method: 'POST', headers })).status).toBe(202);
    expect(await waitForState(sys, taskId, ['complete', 'failed'])).toMatchObject({ task_status: 'SUCCESS', attempt: 2, renditions: ['360p'] });
    await sys.backend.waitFor(() => told(taskId).length === 2);
    expect(told(taskId)).toEqual(['FAILED', 'SUCCESS']);
  }, 120_000);

  it('records an unreadable thumbnail work item on the thumbnail stage only (its user only reads job records), then cancels the job mid-encode', async () => {
    const key = 'perm/long.mp4';
    await putInput(sys, key, await makeClip(join(dir, 'long.mp4'), { width: 1280, height: 720, seconds: 20, audio: true }));
    const taskId = await submit(sys, { object_key: key, base_url: 'https://cdn.example.test/c/', video_id: 'perm-cancel', has_audio: true });
    await waitForLog(sys, 'transcoder-720', { msg: 'running ffmpeg', jobId: taskId });

    await (await as('downloader')).js.publish('work.thumbnail', JSON.stringify({ kind: 'thumbnail', job: { jobId: taskId } }));
    const failed = await nextEvent(taskId, 'stage.failed');
    expect(failed).toMatchObject({ stage: 'thumbnail', code: 'INVALID_MESSAGE', fatal: false });
    expect((await getJob(sys, taskId))['state']).not.toBe('failed');

    expect((await fetch(`${sys.api}/video/encoding/${taskId}/cancel`, { method: 'POST', headers })).status).toBe(202);
    const stopped = await waitForLog(sys, 'transcoder-720', { msg: 'work cancelled', jobId: taskId }, 10_000);
    expect(stopped['err']).toMatch(/ffmpeg stopped/);
    expect(await getJob(sys, taskId)).toMatchObject({ state: 'cancelled' });
  }, 120_000);

  it('the operator routes read every queue and the dead letters', async () => {
    const res = await fetch(`${sys.api}/admin/queues`, { headers });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { queues: { consumer: string; exists: boolean }[]; dead_letters: number };
    const stages = body.queues.filter((q) => q.consumer !== 'projector');
    expect(stages.map((q) => [q.consumer, q.exists])).toEqual(stages.map((q) => [q.consumer, true]));
    expect((await fetch(`${sys.api}/admin/dead-letters`, { headers })).status).toBe(200);
  });

  it('no service was refused a subject, and the server saw no violation', async () => {
    for (const name of SERVICES) expect(logLines(sys, name, { msg: 'NATS connection status', status: 'error' }), name).toEqual([]);
    expect(await readFile(sys.nats.logFile, 'utf8')).not.toMatch(/Violation/);
  });
});

describe('a service that tries what is not its own is refused', () => {
  it('a transcoder cannot forge an upload, take the uploader\'s work, or write a job record', async () => {
    const bus = await as('transcoder-720');
    await refused(bus.js.publish('work.upload', '{}'), 'work.upload');
    await refused(bus.js.consumers.get(STREAMS.work.name, 'uploader'), `$JS.API.CONSUMER.INFO.${STREAMS.work.name}.uploader`);
    await refused(
      bus.jsm.consumers.add(STREAMS.work.name, { durable_name: 'thief', filter_subject: 'work.upload', ack_policy: AckPolicy.Explicit }),
      `$JS.API.CONSUMER.CREATE.${STREAMS.work.name}.thief.work.upload`,
    );
    // It reads job records (is the job cancelled?), but cannot write one. (Opened as the services do: create finds it.)
    const jobs = await new Kvm(bus.nc).create(KV.jobState);
    const jobId = randomUUID();
    expect(await jobs.get(jobId)).toBeNull();
    await refused(jobs.put(jobId, '{"phase":"playable"}'), `$KV.${KV.jobState}.${jobId}`);
  });

  it('the thumbnailer cannot announce a job playable; one disguised as its own event is ignored by the projector and the notifier', async () => {
    const bus = await as('thumbnailer');
    const jobId = randomUUID();
    const forged = { type: 'job.playable', jobId, attempt: 1, manifest: { bucket: BUCKETS.output, key: 'x/manifest.mpd' }, url: 'https://evil.example/x.mpd', at: new Date().toISOString() };
    await refused(bus.js.publish(eventSubject(jobId, 'job.playable'), JSON.stringify(forged)), eventSubject(jobId, 'job.playable'));
    // Its own subject takes any body, but a job.playable there is not believed.
    const disguised = eventSubject(jobId, 'thumbnail.ready');
    await bus.js.publish(disguised, JSON.stringify(forged));
    await waitForLog(sys, 'ingest-api', { msg: 'projector: invalid event skipped', subject: disguised });
    await waitForLog(sys, 'notifier', { msg: 'invalid message, giving up', err: `invalid message on ${disguised}: the message does not belong on this subject` });
    expect(await fetch(`${sys.api}/video/encoding/${jobId}`, { headers }).then((r) => r.status)).toBe(404);
    expect(told(jobId)).toEqual([]);
  });

  it('the notifier cannot queue work or cancel a job', async () => {
    const bus = await as('notifier');
    await refused(bus.js.publish('work.download', '{}'), 'work.download');
    const violation = await nextViolation(bus, () => bus.nc.publish(`control.cancel.${randomUUID()}`));
    expect(violation.operation).toBe('publish');
  });

  it('a stage cannot delete, purge or rewrite a stream, or read another service\'s replies', async () => {
    const bus = await as('downloader');
    await refused(bus.jsm.streams.delete(STREAMS.work.name), `$JS.API.STREAM.DELETE.${STREAMS.work.name}`);
    await refused(bus.jsm.streams.purge(STREAMS.events.name), `$JS.API.STREAM.PURGE.${STREAMS.events.name}`);
    await refused(bus.jsm.streams.update(STREAMS.events.name, { max_age: 1_000_000_000 }), `$JS.API.STREAM.UPDATE.${STREAMS.events.name}`);
    const violation = await nextViolation(bus, () => bus.nc.subscribe('_INBOX_ingest-api.>'));
    expect(violation).toMatchObject({ operation: 'subscription', subject: '_INBOX_ingest-api.>' });
  });

  it('a service whose NATS password is wrong stops at start naming its user (exit 78)', async () => {
    const lines: string[] = [];
    const p = startService('uploader', { NATS_URL: sys.nats.url, NATS_USER: 'uploader', NATS_PASSWORD: `p${'1'.repeat(40)}`, S3_INPUT_BUCKET: 'in-bucket', S3_OUTPUT_BUCKET: 'out-bucket', S3_THUMBNAIL_OUTPUT_BUCKET: 'thumbs', METRICS_PORT: '0' }, { onLine: (_id, line) => lines.push(line) });
    expect(await p.exited).toBe(78);
    expect(lines.join('\n')).toMatch(/NATS refused the login of NATS_USER uploader: check NATS_PASSWORD/);
  }, 30_000);

  it('a wrong password, or none, is refused at login', async () => {
    const user = sys.nats.serviceEnv('uploader')['NATS_USER']!;
    await expect(connectBus({ url: sys.nats.url, name: 'x', log, auth: { user, password: `p${'0'.repeat(40)}` } })).rejects.toBeInstanceOf(ConfigError);
    await expect(connectBus({ url: sys.nats.url, name: 'x', log })).rejects.toThrow(/wants a login/);
  });
});
