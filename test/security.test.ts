/**
 * No one reaches beyond their own job: each hole a security review found, tried against the running mesh
 * (eight services as processes on real servers) the way an attacker or a careless client would.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { closeBus, connectBus, publishWork, type Bus } from '@mesh/bus';
import { createLogger } from '@mesh/common';
import { getText, headObject, listKeys } from '@mesh/storage';
import { freePort, makeClip } from '@mesh/testkit';
import { BUCKETS, getJob, headers, logLines, outputBaseUrl, putInput, startSystem, submit, waitForSettled, waitForState, type System } from './support/harness.ts';
import { readMpd } from './support/mpd.ts';

let sys: System;
let dir: string;
let bus: Bus;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'security-'));
  sys = await startSystem({ apiPort: await freePort() });
  bus = await connectBus({ url: sys.nats.url, name: 'security-test', log: createLogger('security-test', 'silent') });
}, 120_000);

afterAll(async () => {
  await closeBus(bus);
  await sys?.stop();
  await rm(dir, { recursive: true, force: true });
});

const post = (body: unknown) => fetch(`${sys.api}/video/encoding`, { method: 'POST', headers, body: JSON.stringify(body) });

describe('video_id stays inside the thumbnail bucket', () => {
  it('refuses a traversal video_id with 400 naming the field, and a forged work message carrying one', async () => {
    // Before: on the local S3 server, video_id "../<output bucket>/<key>/manifest.mpd" overwrote a published manifest.
    const target = `${BUCKETS.output}/clips/victim.mp4/manifest.mpd`;
    const res = await post({ object_key: 'clips/victim.mp4', base_url: 'https://cdn.example.test/v/', video_id: `../${target}`, has_audio: true });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ field: 'video_id' });

    // The same through a forged work.thumbnail message, past the API: its schema refuses it at the stage.
    const jobId = randomUUID();
    const probe = { formatName: 'mov', durationSec: 2, sizeBytes: 10, video: { codec: 'h264', width: 64, height: 64, rotation: 0, frameRate: { num: 30, den: 1 }, sampleAspectRatio: { num: 1, den: 1 }, pixFmt: 'yuv420p', interlaced: false }, audio: null };
    await bus.js.publish('work.thumbnail', JSON.stringify({ kind: 'thumbnail', job: { jobId, objectKey: 'clips/victim.mp4', baseUrl: 'https://x/', videoId: `../${target}`, hasAudio: false, attempt: 1 }, source: { etag: 'e' }, probe }));
    const deadline = Date.now() + 20_000;
    while (logLines(sys, 'thumbnailer', { msg: 'invalid message, giving up' }).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(logLines(sys, 'thumbnailer', { msg: 'invalid message, giving up' })[0]?.['err']).toMatch(/job.videoId: must be 1 to 128 letters/);
    expect(await listKeys(sys.s3, BUCKETS.output, 'clips/victim.mp4/')).toEqual([]);
  }, 60_000);
});

describe('messages cannot steer stages to other buckets', () => {
  it('a forged work.upload naming another bucket and key publishes nothing from there', async () => {
    // Before: the uploader copied whatever `manifest: {bucket, key}` the message named to the output.
    const key = 'clips/forged-upload.mp4';
    await putInput(sys, key, await makeClip(join(dir, 'forged.mp4'), { width: 320, height: 240, seconds: 1 }));
    const jobId = randomUUID();
    const job = { jobId, objectKey: key, baseUrl: 'https://x/', videoId: 'forged', hasAudio: false, attempt: 1 };
    await bus.js.publish('work.upload', JSON.stringify({ kind: 'upload', job, renditions: ['360p'], manifest: { bucket: BUCKETS.input, key } }));
    const deadline = Date.now() + 20_000;
    while (logLines(sys, 'uploader', { jobId }).filter((l) => /work (failed|done)/.test(String(l['msg']))).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    // The stage reads the manifest where config and the job say (the work bucket), finds none, and publishes nothing.
    expect(logLines(sys, 'uploader', { jobId }).some((l) => String(l['err'] ?? '').includes('missing from the work bucket'))).toBe(true);
    expect(await headObject(sys.s3, { bucket: BUCKETS.output, key: `${key}/manifest.mpd` })).toBeNull();
  }, 60_000);
});

describe('one job cannot take over another\'s output', () => {
  it('a second job for an object_key still converting gets 409 naming the running task; a later one may not shrink the manifest', async () => {
    const key = 'clips/shared output.mp4';
    const base = outputBaseUrl(sys, key);
    await putInput(sys, key, await makeClip(join(dir, 'shared.mp4'), { width: 1280, height: 720, seconds: 6, audio: true }));
    const first = await submit(sys, { object_key: key, base_url: base, video_id: 'shared-1', has_audio: true });
    // The client retries by mistake, with another base_url: refused while the first runs.
    const second = await post({ object_key: key, base_url: 'https://elsewhere.example.test/', video_id: 'shared-2', has_audio: true });
    expect(second.status).toBe(409);
    expect(await second.json()).toMatchObject({ active_task: first, error: expect.stringContaining(`task ${first} is still converting`) });
    const done = await waitForSettled(sys, first, ['complete', 'failed']);
    expect(done).toMatchObject({ state: 'complete', renditions: ['720p', '360p'] });
    const manifestKey = `${key}/manifest.mpd`;
    const published = (await getText(sys.s3, { bucket: BUCKETS.output, key: manifestKey }))!;
    const segmentsBefore = new Set(await listKeys(sys.s3, BUCKETS.output, `${key}/${first}.1/`));
    // Segments are in the job attempt's own folder, init segments too.
    for (const rep of readMpd(published).representations) {
      expect(rep.init.startsWith(`${first}.1/`)).toBe(true);
      expect(segmentsBefore.has(`${key}/${rep.init}`)).toBe(true);
    }

    // Now the object is replaced by a smaller video and converted again: its manifest (360p only) would
    // take the 720p rendition away from viewers, so it is not published and the job says why.
    await putInput(sys, key, await makeClip(join(dir, 'shared-small.mp4'), { width: 640, height: 360, seconds: 4, audio: true }));
    const third = await submit(sys, { object_key: key, base_url: base, video_id: 'shared-3', has_audio: true });
    const refused = await waitForSettled(sys, third, ['complete', 'failed']);
    expect(refused).toMatchObject({ state: 'failed', error: { stage: 'upload', code: 'OUTPUT_CONFLICT' } });
    expect(refused['error'].reason).toMatch(/holds 2 renditions from task .*would take some away/);
    expect(await getText(sys.s3, { bucket: BUCKETS.output, key: manifestKey })).toBe(published);
    // And the first job's segments are as they were.
    for (const k of segmentsBefore) expect(await headObject(sys.s3, { bucket: BUCKETS.output, key: k })).not.toBeNull();
  }, 180_000);

  it('a retry of an ended job takes its prefix back; a cancelled job may be retried', async () => {
    const key = 'clips/cancel-retry.mp4';
    await putInput(sys, key, await makeClip(join(dir, 'cr.mp4'), { width: 640, height: 360, seconds: 2, audio: true }));
    const taskId = await submit(sys, { object_key: key, base_url: outputBaseUrl(sys, key), video_id: 'cr', has_audio: true });
    // At once: the job has hardly started (a 2 s clip takes seconds through the mesh).
    const cancel = await fetch(`${sys.api}/video/encoding/${taskId}/cancel`, { method: 'POST', headers });
    expect(cancel.status).toBe(202);
    expect(await getJob(sys, taskId)).toMatchObject({ state: 'cancelled', task_status: 'FAILURE' });
    // Before: a cancelled task answered FAILURE but retry refused it with 409.
    const retry = await fetch(`${sys.api}/video/encoding/${taskId}/retry`, { method: 'POST', headers });
    expect(retry.status).toBe(202);
    expect(await waitForState(sys, taskId, ['complete', 'failed'])).toMatchObject({ task_status: 'SUCCESS', attempt: 2, renditions: ['360p'] });
  }, 120_000);
});

describe('nothing prints a credential or an internal name', () => {
  it('a missing source fails with its key, not the input bucket\'s name', async () => {
    const taskId = await submit(sys, { object_key: 'clips/not-there.mp4', base_url: 'https://x/', video_id: 'missing', has_audio: true });
    const job = await waitForState(sys, taskId, ['failed', 'complete']);
    expect(job['task_result']).toBe('object clips/not-there.mp4 does not exist');
    expect(JSON.stringify(job)).not.toContain(BUCKETS.input);
  }, 60_000);
});
