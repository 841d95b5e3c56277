/**
 * The thumbnailer as a process on real nats-server and S3 stand-ins: from one work.thumbnail it writes the
 * poster where it always did, and the seek previews (sprite sheets, WebVTT track, descriptor) once into the
 * job attempt's folder of the output bucket, keeping what is there; then it asks the uploader for a refresh
 * and announces the storyboard.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { closeBus, connectBus, publishWork, STREAMS, type Bus } from '@mesh/bus';
import { createLogger, eventSubject, JobEvent, layout, msgId, sheetName, STORYBOARD_JSON, STORYBOARD_VTT, StoryboardDescriptor, UploadWork, type JobSpec } from '@mesh/common';
import { probeFile } from '@mesh/media';
import { createS3, getText, headObject, listKeys, putObject } from '@mesh/storage';
import { makeClip, s3Env, startNats, s3ClientConfig, startS3, startService, tempDir, type NatsServer, type S3Server, type ServiceProcess } from '@mesh/testkit';
import { readFile } from 'node:fs/promises';
import type { S3Client } from '@aws-sdk/client-s3';

const B = { input: 'tb-input', output: 'tb-output', thumbnails: 'tb-thumbs', work: 'tb-work' };
const log = createLogger('test', 'silent');
let nats: NatsServer;
let s3server: S3Server;
let s3: S3Client;
let bus: Bus;
let thumbnailer: ServiceProcess;
let dir: { path: string; remove(): Promise<void> };

beforeAll(async () => {
  [nats, s3server, dir] = await Promise.all([startNats(), startS3({ buckets: Object.values(B) }), tempDir('thumbs')]);
  s3 = createS3(s3ClientConfig(s3server));
  thumbnailer = startService('thumbnailer', { NATS_URL: nats.url, ...s3Env(s3server, B), S3_PUBLIC_URL: 'https://cdn.example.test', METRICS_PORT: '0', ENCODE_YIELD_DIR: 'off' });
  await thumbnailer.ready;
  bus = await connectBus({ url: nats.url, name: 'test', log });
}, 90_000);

afterAll(async () => {
  await thumbnailer?.stop();
  if (bus) await closeBus(bus);
  await Promise.allSettled([nats?.stop(), s3server?.stop(), dir?.remove()]);
});

/** The job's first event of `type`. */
async function nextEvent(jobId: string, type: JobEvent['type']): Promise<JobEvent> {
  const consumer = await bus.js.consumers.get(STREAMS.events.name, { filter_subjects: eventSubject(jobId, type) });
  const m = await consumer.next({ expires: 60_000 });
  if (!m) throw new Error(`no ${type} for ${jobId}`);
  return JobEvent.parse(m.json());
}

describe('the thumbnailer', () => {
  it('writes the poster and the storyboard of a 61 s clip once, asks for a refresh and announces it', async () => {
    const jobId = randomUUID();
    const job: JobSpec = { jobId, objectKey: `clips/${jobId}.mp4`, baseUrl: 'https://cdn.example.test/c/', videoId: 'poster-1', hasAudio: false, attempt: 1 };
    const clip = await makeClip(join(dir.path, 'clip.mp4'), { width: 640, height: 360, seconds: 61, audio: false });
    await putObject(s3, { bucket: B.input, key: job.objectKey }, await readFile(clip));
    const probe = await probeFile(clip, { log });
    const etag = (await headObject(s3, { bucket: B.input, key: job.objectKey }))!.etag;
    // A sheet already there (a run before a crash) is kept, as segments are.
    const kept = { bucket: B.output, key: layout.storyboard(job, sheetName(1)) };
    await putObject(s3, kept, 'from the first run');

    await publishWork(bus, 'thumbnail', { kind: 'thumbnail', job, source: { etag }, probe }, msgId(job, 'thumbnail'));
    const ready = await nextEvent(jobId, 'thumbnail.ready');

    const vtt = { bucket: B.output, key: `clips/${jobId}.mp4/${jobId}.1/thumbs/storyboard.vtt` };
    expect(ready).toMatchObject({
      object: { bucket: B.thumbnails, key: 'poster-1' },
      storyboard: { vtt: { ...vtt, url: `https://cdn.example.test/${B.output}/${vtt.key}` }, plan: { intervalSec: 2, tiles: 31, columns: 5, rows: 5, sheets: 2, tileWidth: 160, tileHeight: 90 } },
    });
    expect(await headObject(s3, { bucket: B.thumbnails, key: 'poster-1' })).toMatchObject({ contentType: 'image/jpeg' });
    expect((await listKeys(s3, B.output, `${layout.storyboardFolder(job)}/`)).sort()).toEqual([STORYBOARD_JSON, STORYBOARD_VTT, sheetName(1), sheetName(2)].map((n) => layout.storyboard(job, n)).sort());
    expect(await getText(s3, kept)).toBe('from the first run');
    expect(await headObject(s3, { bucket: B.output, key: layout.storyboard(job, sheetName(2)) })).toMatchObject({ contentType: 'image/jpeg', cacheControl: 'public, max-age=31536000, immutable' });
    expect(await headObject(s3, vtt)).toMatchObject({ contentType: 'text/vtt' });
    const track = (await getText(s3, vtt))!;
    expect(track.split('\n\n').slice(1, 2)).toEqual(['00:00:00.000 --> 00:00:02.000\ntile_1.jpg#xywh=0,0,160,90']);
    expect(track.trimEnd().split('\n').at(-1)).toBe('tile_2.jpg#xywh=0,90,160,90');
    const descriptor = StoryboardDescriptor.parse(JSON.parse((await getText(s3, { bucket: B.output, key: layout.storyboard(job, STORYBOARD_JSON) }))!));
    expect(descriptor.plan).toEqual(ready.type === 'thumbnail.ready' ? ready.storyboard!.plan : null);
    expect(descriptor.maxSheetBytes).toBeGreaterThan(1000);

    // The uploader is asked to publish the attempt's manifest again, with the previews.
    const asked = await bus.jsm.streams.getMessage(STREAMS.work.name, { last_by_subj: 'work.upload' });
    expect(UploadWork.parse(asked!.json())).toEqual({ kind: 'upload', job, refresh: true });
  }, 120_000);
  it('fails its stage, not the job, with a reason, when the file holds no frame for the thumbnail (half a second that says 10 s)', async () => {
    const jobId = randomUUID();
    const job: JobSpec = { jobId, objectKey: `clips/${jobId}.mp4`, baseUrl: 'https://cdn.example.test/c/', videoId: 'poster-2', hasAudio: false, attempt: 1 };
    const clip = await makeClip(join(dir.path, 'half.mp4'), { width: 320, height: 180, seconds: 0.5, audio: false });
    await putObject(s3, { bucket: B.input, key: job.objectKey }, await readFile(clip));
    const probe = { ...(await probeFile(clip, { log })), durationSec: 10 };
    const etag = (await headObject(s3, { bucket: B.input, key: job.objectKey }))!.etag;
    await publishWork(bus, 'thumbnail', { kind: 'thumbnail', job, source: { etag }, probe }, msgId(job, 'thumbnail'));
    expect(await nextEvent(jobId, 'stage.failed')).toMatchObject({ stage: 'thumbnail', code: 'TOOL_FAILED', fatal: false, reason: 'ffmpeg found no frame at 1.0 s for the thumbnail: the video holds less than the 10 s it declares' });
    expect(await headObject(s3, { bucket: B.thumbnails, key: 'poster-2' })).toBeNull();
  }, 60_000);
});
