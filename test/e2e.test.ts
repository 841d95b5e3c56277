/**
 * End to end: the eight services as separate processes on real servers convert generated clips, and
 * what a client, a player and the backend see is checked against the real outputs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { getText, listKeys } from '@mesh/storage';
import { freePort, makeClip, REPO_ROOT } from '@mesh/testkit';
import { api, BACKEND_KEY, BUCKETS, getJob, headers, logLines, outputBaseUrl, putInput, startSystem, submit, waitForLog, waitForSettled, waitForState, type Job, type System } from './support/harness.ts';
import { expectPlaysBothRenditions, playInBrowser } from './support/playback.ts';
import { firstVideoPacket, readMpd } from './support/mpd.ts';
import { openApiDocument } from '../services/ingest-api/src/openapi.ts';

const run = promisify(execFile);
const SCHEMA = join(REPO_ROOT, '..', 'shared', 'conformance', 'dash', 'DASH-MPD.xsd');

let sys: System;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'e2e-'));
  sys = await startSystem({ apiPort: await freePort() });
}, 120_000);

afterAll(async () => {
  await sys?.stop();
  await rm(dir, { recursive: true, force: true });
});

async function getBytes(bucket: string, key: string): Promise<Buffer> {
  const res = await sys.s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await res.Body!.transformToByteArray());
}


describe.each([
  { name: 'with audio', audio: true, key: 'clips/with audio ü.mp4', videoId: 'video-with-audio' },
  { name: 'without audio', audio: false, key: 'clips/silent.mp4', videoId: 'video-silent' },
])('a 1280x720 clip $name', ({ audio, key, videoId }) => {
  let taskId: string;
  let job: Job;
  // base_url names where the package really is, so a browser can play it; the silent clip's carries a
  // query whose '&' the manifest must XML-escape (players drop the query when resolving segments).
  let baseUrl: string;

  beforeAll(async () => {
    const clip = await makeClip(join(dir, `${videoId}.mp4`), { width: 1280, height: 720, seconds: 9, audio });
    await putInput(sys, key, clip);
    baseUrl = outputBaseUrl(sys, key) + (audio ? '' : '?v=1&x=2');
    taskId = await submit(sys, { object_key: key, base_url: baseUrl, video_id: videoId, has_audio: audio });
    job = await waitForSettled(sys, taskId, ['complete', 'failed']);
  }, 180_000);

  it('reaches SUCCESS with both renditions, the manifest and the thumbnail in its status', () => {
    expect(job).toMatchObject({ task_id: taskId, task_status: 'SUCCESS', task_result: videoId, state: 'complete', error: null });
    expect(job['renditions']).toEqual(['720p', '360p']);
    expect(job['manifest']).toMatchObject({ bucket: BUCKETS.output, key: `${key}/manifest.mpd` });
    expect(job['thumbnail']).toMatchObject({ bucket: BUCKETS.thumbnails, key: videoId });
    for (const stage of ['download', 'transcode-720p', 'transcode-360p', 'package', 'upload', 'thumbnail']) {
      expect(job['stages'][stage], stage).toMatchObject({ state: 'done' });
    }
  });

  it('publishes a manifest that is valid DASH, carries base_url as given, and names only existing segments', async () => {
    const xml = (await getText(sys.s3, { bucket: BUCKETS.output, key: `${key}/manifest.mpd` }))!;
    const file = join(dir, `${videoId}.mpd`);
    await writeFile(file, xml);
    await run('xmllint', ['--noout', '--schema', SCHEMA, file]);

    const mpd = readMpd(xml);
    expect(mpd.baseUrl).toBe(baseUrl);
    const video = mpd.representations.filter((r) => r.contentType === 'video');
    expect(video.map((r) => [r.width, r.height]).sort()).toEqual([[1280, 720], [640, 360]]);
    expect(mpd.representations.filter((r) => r.contentType === 'audio')).toHaveLength(audio ? 1 : 0);

    const keys = new Set(await listKeys(sys.s3, BUCKETS.output, `${key}/`));
    for (const rep of mpd.representations) {
      expect(keys.has(`${key}/${rep.init}`), rep.init).toBe(true);
      for (const seg of rep.segments) expect(keys.has(`${key}/${seg.path}`), seg.path).toBe(true);
    }
  });

  it('starts every video segment of both renditions with a keyframe at the same time', async () => {
    const mpd = readMpd((await getText(sys.s3, { bucket: BUCKETS.output, key: `${key}/manifest.mpd` }))!);
    const [hi, lo] = ['720p', '360p'].map((_, i) => mpd.representations.filter((r) => r.contentType === 'video').sort((a, b) => b.bandwidth - a.bandwidth)[i]!);
    expect(hi!.segments.map((s) => s.start)).toEqual(lo!.segments.map((s) => s.start));
    expect(hi!.segments.length).toBeGreaterThanOrEqual(2);
    for (let i = 0; i < hi!.segments.length; i++) {
      const [a, b] = await Promise.all([firstVideoPacket((k) => getBytes(BUCKETS.output, k), `${key}/`, hi!, i, dir), firstVideoPacket((k) => getBytes(BUCKETS.output, k), `${key}/`, lo!, i, dir)]);
      expect(a.key, `720p segment ${i + 1} starts with a keyframe`).toBe(true);
      expect(b.key, `360p segment ${i + 1} starts with a keyframe`).toBe(true);
      expect(a.pts).toBeCloseTo(b.pts, 3);
    }
  });

  it('plays in a browser, on both renditions', async () => {
    expectPlaysBothRenditions(await playInBrowser(new URL('manifest.mpd', baseUrl).href, { screenshot: join(dir, `${videoId}.png`) }));
  }, 90_000);

  it('writes a JPEG thumbnail under the video id', async () => {
    const jpeg = await getBytes(BUCKETS.thumbnails, videoId);
    expect([...jpeg.subarray(0, 3)]).toEqual([0xff, 0xd8, 0xff]);
    const file = join(dir, `${videoId}.jpg`);
    await writeFile(file, jpeg);
    const { stdout } = await run('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_name,width,height', '-of', 'csv=p=0', file]);
    expect(stdout.trim()).toMatch(/^mjpeg,\d+,\d+$/);
  });

  it('tells the backend SUCCESS once, with its ApiKey', async () => {
    await sys.backend.waitFor((all) => all.some((r) => (r.body as { taskId?: string }).taskId === taskId));
    const calls = sys.backend.received.filter((r) => (r.body as { taskId?: string }).taskId === taskId);
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({ method: 'PUT', path: '/video/processing/result', body: { taskId, status: 'SUCCESS' } });
    expect(calls[0]!.headers['apikey']).toBe(BACKEND_KEY);
  });

  it('logs one trace id for the job in every service, with no trace exporter configured', () => {
    const ids = new Set<unknown>();
    for (const id of ['ingest-api', 'downloader', 'transcoder-720', 'transcoder-360', 'packager', 'uploader', 'thumbnailer', 'notifier']) {
      const lines = logLines(sys, id, { jobId: taskId }).filter((l) => l['trace_id'] !== undefined);
      expect(lines.length, id).toBeGreaterThan(0);
      for (const l of lines) ids.add(l['trace_id']);
    }
    expect([...ids]).toHaveLength(1);
    expect(String([...ids][0])).toMatch(/^(?!0+$)[0-9a-f]{32}$/);
  });
});

describe('a file that is not a video', () => {
  it('fails with a readable reason and tells the backend FAILED once', async () => {
    const file = join(dir, 'notes.mp4');
    await writeFile(file, 'these are not the frames you are looking for\n'.repeat(100));
    await putInput(sys, 'clips/notes.mp4', file);
    const taskId = await submit(sys, { object_key: 'clips/notes.mp4', base_url: 'https://cdn.example.test/x/', video_id: 'notes', has_audio: true });
    const job = await waitForState(sys, taskId, ['failed', 'complete']);
    expect(job).toMatchObject({ task_status: 'FAILURE', error: { stage: 'download', code: 'NOT_A_VIDEO' } });
    expect(job['task_result']).toMatch(/not a video/i);
    await sys.backend.waitFor((all) => all.some((r) => (r.body as { taskId?: string }).taskId === taskId));
    const calls = sys.backend.received.filter((r) => (r.body as { taskId?: string }).taskId === taskId);
    expect(calls.map((c) => c.body)).toEqual([{ taskId, status: 'FAILED' }]);
  });

  it('fails a missing object with a reason naming it', async () => {
    const taskId = await submit(sys, { object_key: 'clips/nope.mp4', base_url: 'https://cdn.example.test/x/', video_id: 'nope', has_audio: true });
    const job = await waitForState(sys, taskId, ['failed', 'complete']);
    expect(job).toMatchObject({ task_status: 'FAILURE', error: { code: 'SOURCE_NOT_FOUND' } });
    expect(job['task_result']).toContain('clips/nope.mp4');
  });
});

describe('retrying a FAILED task', () => {
  it('runs it again from the start once the cause is fixed', async () => {
    const key = 'clips/late-upload.mp4';
    const taskId = await submit(sys, { object_key: key, base_url: 'https://cdn.example.test/r/', video_id: 'late', has_audio: true });
    const failed = await waitForState(sys, taskId, ['failed', 'complete']);
    expect(failed).toMatchObject({ task_status: 'FAILURE', attempt: 1, error: { code: 'SOURCE_NOT_FOUND' } });

    await putInput(sys, key, await makeClip(join(dir, 'late.mp4'), { width: 640, height: 360, seconds: 2, audio: true }));
    const res = await api(sys, `/video/encoding/${taskId}/retry`, { method: 'POST', headers });
    expect(res.status).toBe(202);
    expect(await res.json()).toBe(taskId);
    const job = await waitForState(sys, taskId, ['complete', 'failed']);
    expect(job).toMatchObject({ task_status: 'SUCCESS', attempt: 2, renditions: ['360p'], error: null });

    await sys.backend.waitFor((all) => all.filter((r) => (r.body as { taskId?: string }).taskId === taskId).length === 2);
    const told = sys.backend.received.filter((r) => (r.body as { taskId?: string }).taskId === taskId).map((r) => (r.body as { status: string }).status);
    expect(told).toEqual(['FAILED', 'SUCCESS']);
    expect((await api(sys, `/video/encoding/${taskId}/retry`, { method: 'POST', headers })).status).toBe(409);
  }, 120_000);
});

/** A job on a 30 s 720p clip (made once), returned once its 720p encode is running. */
let longClip: Promise<string> | undefined;
async function encoding(key: string, videoId: string): Promise<string> {
  await putInput(sys, key, await (longClip ??= makeClip(join(dir, 'long.mp4'), { width: 1280, height: 720, seconds: 30, audio: true })));
  const taskId = await submit(sys, { object_key: key, base_url: `https://cdn.example.test/${videoId}/`, video_id: videoId, has_audio: true });
  await waitForLog(sys, 'transcoder-720', { msg: 'running ffmpeg', jobId: taskId });
  return taskId;
}

describe('a source replaced while it is being converted', () => {
  it('fails with a reason saying so, instead of mixing two videos', async () => {
    const key = 'clips/replaced.mp4';
    const taskId = await encoding(key, 'replaced');
    await putInput(sys, key, await makeClip(join(dir, 'other.mp4'), { width: 640, height: 360, seconds: 2, audio: true }));

    const job = await waitForSettled(sys, taskId, ['failed', 'complete']);
    expect(job['stages']['transcode-720p']).toMatchObject({ state: 'failed', code: 'SOURCE_CHANGED' });
    expect(job['stages']['transcode-720p'].reason).toMatch(/clips\/replaced\.mp4 changed while it was being converted/);
    expect(job['renditions'] ?? []).not.toContain('720p');
  }, 120_000);
});

describe('cancelling a running task', () => {
  it('stops the FFmpeg work it started and publishes nothing more', async () => {
    const key = 'clips/cancel-me.mp4';
    const taskId = await encoding(key, 'cancel');

    const res = await api(sys, `/video/encoding/${taskId}/cancel`, { method: 'POST', headers });
    expect(res.status).toBe(202);
    expect(await getJob(sys, taskId)).toMatchObject({ state: 'cancelled', task_status: 'FAILURE', task_result: 'cancelled by the client' });

    const stopped = await waitForLog(sys, 'transcoder-720', { msg: 'work cancelled', jobId: taskId }, 10_000);
    expect(stopped['err']).toMatch(/ffmpeg stopped/);
    await new Promise((r) => setTimeout(r, 3000));
    const job = await getJob(sys, taskId);
    expect(job).toMatchObject({ state: 'cancelled', renditions: [] });
    expect(await getText(sys.s3, { bucket: BUCKETS.output, key: `${key}/manifest.mpd` })).toBeNull();
    expect(sys.backend.received.filter((r) => (r.body as { taskId?: string }).taskId === taskId)).toEqual([]);
    expect((await api(sys, `/video/encoding/${taskId}/cancel`, { method: 'POST', headers })).status).toBe(409);
  }, 120_000);
});

describe('the API on the running mesh', () => {
  it('hands out a presigned upload URL that a client can PUT a video to and then submit', async () => {
    const res = await api(sys, `/uploads`, { method: 'POST', headers, body: JSON.stringify({ filename: 'phone clip.mp4' }) });
    expect(res.status).toBe(201);
    const up = (await res.json()) as { object_key: string; upload_url: string };
    const clip = await makeClip(join(dir, 'upload.mp4'), { width: 640, height: 360, seconds: 2, audio: true });
    const put = await fetch(up.upload_url, { method: 'PUT', headers: { 'content-type': 'video/mp4' }, body: (await import('node:fs')).readFileSync(clip) });
    expect(put.status).toBe(200);
    const taskId = await submit(sys, { objectKey: up.object_key, baseUrl: 'https://cdn.example.test/u/', videoId: 'uploaded', hasAudio: true });
    const job = await waitForState(sys, taskId, ['complete', 'failed']);
    // A 360p source is not upscaled: only the 360p rendition is planned and made.
    expect(job).toMatchObject({ task_status: 'SUCCESS', renditions: ['360p'], planned_renditions: ['360p'] });
  }, 120_000);

  it('answers 404 for an unknown task and 401 without a key, as problem details', async () => {
    const unknown = await api(sys, `/video/encoding/00000000-0000-4000-8000-000000000000`, { headers });
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ type: expect.stringMatching(/not-found$/), status: 404, detail: 'no task 00000000-0000-4000-8000-000000000000' });
    expect((await api(sys, `/video/encoding/00000000-0000-4000-8000-000000000000`)).status).toBe(401);
  });

  it('serves the document its answers are checked against, and the docs page, without a key', async () => {
    expect(await (await api(sys, '/openapi.json')).json()).toEqual(JSON.parse(JSON.stringify(openApiDocument())));
    expect((await api(sys, '/docs')).headers.get('content-type')).toMatch(/^text\/html/);
    expect((await api(sys, '/docs/swagger-ui-bundle.js')).status).toBe(200);
  });
});
