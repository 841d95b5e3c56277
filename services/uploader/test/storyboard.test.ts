/**
 * The uploader and the seek previews, on real nats-server and S3 stand-ins with the service as a process:
 * a manifest published before the storyboard is in place is published again with it when the thumbnailer
 * asks (refresh), exactly as it was otherwise; one published after names it at once; a refresh with nothing
 * of the attempt out writes nothing; a descriptor that does not read as one leaves the manifest without it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { closeBus, connectBus, publishWork, STREAMS, type Bus } from '@mesh/bus';
import { createLogger, JobEvent, jobEventsFilter, layout, msgId, STORYBOARD_JSON, type JobSpec, type StoryboardDescriptor } from '@mesh/common';
import { claimOutput, createJob, openJobStates, type JobStates } from '@mesh/jobs';
import { storyboardPlan } from '@mesh/media';
import { createS3, getText, headObject, putObject } from '@mesh/storage';
import { s3Env, startNats, s3ClientConfig, startS3, startService, type NatsServer, type S3Server, type ServiceProcess } from '@mesh/testkit';
import type { S3Client } from '@aws-sdk/client-s3';

const B = { input: 'sb-input', output: 'sb-output', thumbnails: 'sb-thumbs', work: 'sb-work' };
const log = createLogger('test', 'silent');
let nats: NatsServer;
let s3server: S3Server;
let s3: S3Client;
let bus: Bus;
let states: JobStates;
let uploader: ServiceProcess;

beforeAll(async () => {
  [nats, s3server] = await Promise.all([startNats(), startS3({ buckets: Object.values(B) })]);
  s3 = createS3(s3ClientConfig(s3server));
  uploader = startService('uploader', { NATS_URL: nats.url, ...s3Env(s3server, B), S3_PUBLIC_URL: 'https://cdn.example.test', METRICS_PORT: '0', ACK_WAIT_MS: '5000' });
  await uploader.ready;
  bus = await connectBus({ url: nats.url, name: 'test', log });
  states = await openJobStates(bus);
}, 90_000);

afterAll(async () => {
  await uploader?.stop();
  if (bus) await closeBus(bus);
  await Promise.allSettled([nats?.stop(), s3server?.stop()]);
});

const mpd = (renditions: string[]) =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT9S">\n  <BaseURL>https://cdn.example.test/v/</BaseURL>\n  <Period id="0">\n${renditions.map((r, i) => `    <AdaptationSet id="${i}" contentType="video"><Representation id="${r}" bandwidth="1"/></AdaptationSet>\n`).join('')}  </Period>\n</MPD>\n`;

/** A job that owns its prefix, with the manifests of `sets` waiting in the work bucket as the packager leaves them. */
async function newJob(sets: string[][]): Promise<JobSpec> {
  const jobId = randomUUID();
  const job: JobSpec = { jobId, objectKey: `videos/${jobId}.mp4`, baseUrl: 'https://cdn.example.test/v/', videoId: 'v1', hasAudio: false, attempt: 1 };
  await createJob(states, job);
  await claimOutput(states, job);
  for (const set of sets) {
    await putObject(s3, { bucket: B.work, key: layout.workManifest(job, set) }, mpd(set));
    await putObject(s3, { bucket: B.work, key: layout.workMaster(job, set) }, `#EXTM3U\n# ${set.join('+')}\n`);
  }
  return job;
}

async function putStoryboard(job: JobSpec, descriptor: unknown = { plan: storyboardPlan(9, { width: 1280, height: 720 }), maxSheetBytes: 40_000 } satisfies StoryboardDescriptor): Promise<void> {
  await putObject(s3, { bucket: B.output, key: layout.storyboard(job, STORYBOARD_JSON) }, JSON.stringify(descriptor));
}

const upload = (job: JobSpec, renditions: string[]) => publishWork(bus, 'upload', { kind: 'upload', job, renditions }, msgId(job, 'upload', renditions.join('-')));
const refresh = (job: JobSpec) => publishWork(bus, 'upload', { kind: 'upload', job, refresh: true }, msgId(job, 'upload', 'refresh-thumbs'));

/** The job's events, in order, as soon as `ok` holds for them. */
async function eventsUntil(jobId: string, ok: (events: JobEvent[]) => boolean, timeoutMs = 30_000): Promise<JobEvent[]> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const stored = (await bus.jsm.streams.info(STREAMS.events.name, { subjects_filter: jobEventsFilter(jobId) })).state.subjects ?? {};
    const count = Object.values(stored).reduce((a, b) => a + b, 0);
    const events: JobEvent[] = [];
    if (count > 0) {
      const batch = await (await bus.js.consumers.get(STREAMS.events.name, { filter_subjects: jobEventsFilter(jobId) })).fetch({ max_messages: count, expires: 2000 });
      for await (const m of batch) {
        events.push(JobEvent.parse(m.json()));
        if (events.length === count) break;
      }
    }
    if (ok(events)) return events;
    if (Date.now() > end) throw new Error(`timed out; events: ${JSON.stringify(events.map((e) => e.type))}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
const uploadsDone = (n: number) => (events: JobEvent[]) => events.filter((e) => e.type === 'stage.done' || (e.type === 'stage.failed' && e.stage === 'upload')).length >= n;
const manifest = (job: JobSpec) => getText(s3, { bucket: B.output, key: layout.manifest(job) });

describe('the uploader and the storyboard', () => {
  it('publishes a manifest from before the previews again with them when asked, the same renditions, the HLS master untouched', async () => {
    const job = await newJob([['360p']]);
    await upload(job, ['360p']);
    await eventsUntil(job.jobId, (es) => es.some((e) => e.type === 'job.playable'));
    const before = (await manifest(job))!;
    expect(before).toBe(mpd(['360p']));
    const master = await headObject(s3, { bucket: B.output, key: layout.master(job) });

    await putStoryboard(job);
    await refresh(job);
    // The refresh announces nothing of its own (its stage events repeat the upload's): watch the manifest.
    const deadline = Date.now() + 30_000;
    let after = (await manifest(job))!;
    while (!after.includes('contentType="image"') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      after = (await manifest(job))!;
    }
    expect(after).toContain(`<SegmentTemplate media="${job.jobId}.1/thumbs/tile_$Number$.jpg" timescale="1" startNumber="1">`);
    expect(after).toContain('<Representation id="thumbnails" bandwidth="32000" width="800" height="90">');
    // Otherwise the same manifest, by the same job attempt.
    expect(after.replace(/\n {4}<AdaptationSet contentType="image"[\s\S]*?<\/AdaptationSet>/, '')).toBe(before);
    expect((await headObject(s3, { bucket: B.output, key: layout.manifest(job) }))!.metadata).toMatchObject({ 'mesh-job': job.jobId, 'mesh-attempt': '1', 'mesh-renditions': '360p' });
    expect((await headObject(s3, { bucket: B.output, key: layout.master(job) }))!.etag).toBe(master!.etag);
    // Nothing more is announced: the renditions are what they were.
    const events = await eventsUntil(job.jobId, () => true);
    expect(events.filter((e) => e.type === 'manifest.published')).toHaveLength(1);
  }, 60_000);

  it('names the previews in a manifest published once they are in place, and tells which renditions are new and where the track is', async () => {
    const job = await newJob([['720p'], ['720p', '360p']]);
    await upload(job, ['720p']);
    await eventsUntil(job.jobId, (es) => es.some((e) => e.type === 'job.playable'));
    expect(await manifest(job)).not.toContain('contentType="image"');
    await putStoryboard(job);
    await upload(job, ['720p', '360p']);
    const events = await eventsUntil(job.jobId, (es) => es.filter((e) => e.type === 'manifest.published').length === 2);
    expect(await manifest(job)).toContain(`media="${job.jobId}.1/thumbs/tile_$Number$.jpg"`);
    const vtt = `https://cdn.example.test/${B.output}/videos/${job.jobId}.mp4/${job.jobId}.1/thumbs/storyboard.vtt`;
    expect(events.filter((e) => e.type === 'manifest.published').map((e) => e.type === 'manifest.published' && [e.renditions, e.added, e.storyboard?.url ?? null])).toEqual([
      [['720p'], ['720p'], null],
      [['720p', '360p'], ['360p'], vtt],
    ]);
    expect(events.find((e) => e.type === 'job.playable')).toMatchObject({ renditions: ['720p'], hls: { url: `https://cdn.example.test/${B.output}/videos/${job.jobId}.mp4/master.m3u8` } });
  }, 60_000);

  it('writes nothing on a refresh while nothing of the attempt is out: its first manifest will name the previews', async () => {
    const job = await newJob([['360p']]);
    await putStoryboard(job);
    await refresh(job);
    await eventsUntil(job.jobId, uploadsDone(1));
    expect(await manifest(job)).toBeNull();
    await upload(job, ['360p']);
    await eventsUntil(job.jobId, (es) => es.some((e) => e.type === 'job.playable'));
    expect(await manifest(job)).toContain('contentType="image"');
  }, 60_000);

  it('leaves the previews out of a manifest when their descriptor does not read as one', async () => {
    const job = await newJob([['360p']]);
    await putStoryboard(job, { plan: { intervalSec: 'two' }, maxSheetBytes: 1 });
    await upload(job, ['360p']);
    await eventsUntil(job.jobId, (es) => es.some((e) => e.type === 'job.playable'));
    expect(await manifest(job)).toBe(mpd(['360p']));
  }, 60_000);
});
