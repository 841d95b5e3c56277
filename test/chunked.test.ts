/**
 * Chunked encoding end to end: a clip longer than CHUNK_MIN_SOURCE_SEC, with audio, is cut into chunks of
 * CHUNK_SECONDS that two transcoder-720 replicas encode in parallel; one replica is SIGKILLed in the
 * middle of a chunk. The joined renditions must be what one encode of the whole source would be (frames,
 * timestamps, keyframes, audio, quality against the source), the manifest valid and playable, and the
 * status and the trace must show the chunks.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, DEFAULT_LADDER, layout, type MediaPlan } from '@mesh/common';
import { bt709Filters, planMedia, probeFile, runTool, segmentStartFrame, transcodeArgs } from '@mesh/media';
import { downloadToFile, getText, headObject } from '@mesh/storage';
import { freePort, makeClip, qualityAgainst, renditionFacts, startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '@mesh/testkit';
import { BUCKETS, logLines, outputBaseUrl, putInput, startSystem, submit, waitForSettled, type Job, type System } from './support/harness.ts';
import { expectPlaysBothRenditions, playInBrowser } from './support/playback.ts';
import { validateMpd } from './support/mpd.ts';

const log = createLogger('test', 'silent');
const KEY = 'long/clip.mp4';
const REPLICAS = ['transcoder-720', 'transcoder-720#2'];

let sys: System;
let otlp: OtlpReceiver;
let dir: string;
let source: string;
let taskId: string;
let job: Job;
let plan: MediaPlan;
let killed: { replica: string; startFrame: number };

/** This job's log lines of a replica, in order. */
const linesOf = (id: string) => logLines(sys, id, { jobId: taskId });

/**
 * A replica that has finished a part of this job and has been encoding a video chunk for a second (its
 * finished part's span exported meanwhile): SIGKILL it there, in the middle of that chunk. Returns which
 * replica and the chunk's first frame.
 */
async function killMidChunk(): Promise<{ replica: string; startFrame: number }> {
  const deadline = Date.now() + 90_000;
  const seen = new Map<string, number>();
  while (Date.now() < deadline) {
    for (const id of REPLICAS) {
      const lines = linesOf(id);
      const lastRun = lines.findLastIndex((l) => l['msg'] === 'running ffmpeg' && String(l['command']).includes('trim='));
      const recorded = lines.findIndex((l) => l['msg'] === 'part recorded');
      if (lastRun < 0 || recorded < 0 || recorded > lastRun || lines.slice(lastRun).some((l) => l['msg'] === 'ffmpeg done')) continue;
      const key = `${id} ${lastRun}`;
      if (!seen.has(key)) seen.set(key, Date.now());
      if (Date.now() - seen.get(key)! < 1000) continue;
      const startFrame = Number(/trim=(?:start_pts=(\d+))?/.exec(String(lines[lastRun]!['command']))?.[1] ?? 0);
      await sys.mesh.processes.find((p) => p.id === id)!.kill();
      return { replica: id, startFrame };
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('no replica was seen encoding a second part of the job');
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'chunked-'));
  otlp = await startOtlpReceiver();
  sys = await startSystem({
    apiPort: await freePort(),
    replicas: { 'transcoder-720': 2 },
    // As deployed: each service its own NATS user (the transcoders may write the chunk sets in work-done, not job records).
    natsUsers: true,
    env: {
      CHUNK_MIN_SOURCE_SEC: '10',
      CHUNK_SECONDS: '8',
      // A killed replica's chunk comes back to the other one within seconds.
      ACK_WAIT_MS: '3000',
      OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_BSP_SCHEDULE_DELAY: '200',
    },
  });
  // 20 s: chunks of 8, 8 and the last 4 s, plus the audio, per rung.
  source = await makeClip(join(dir, 'clip.mp4'), { width: 1280, height: 720, seconds: 20, audio: true });
  plan = planMedia(await probeFile(source, { log }), { hasAudio: true, ladder: DEFAULT_LADDER });
  await putInput(sys, KEY, source);
  taskId = await submit(sys, { object_key: KEY, base_url: outputBaseUrl(sys, KEY), video_id: 'long-clip', has_audio: true });
  killed = await killMidChunk();
  job = await waitForSettled(sys, taskId, ['complete', 'failed'], 150_000);
}, 240_000);

afterAll(async () => {
  await sys?.stop();
  await otlp?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('a 20 s clip with audio, chunks of 8 s, two transcoder-720 replicas, one SIGKILLed mid-chunk', () => {
  it('completes with both renditions; the status shows every part of each rung, the killed chunk tried twice', () => {
    expect(job).toMatchObject({ task_status: 'SUCCESS', state: 'complete', renditions: ['720p', '360p'], error: null });
    for (const stage of ['transcode-720p', 'transcode-360p']) {
      const view = job['stages'][stage];
      expect(view, stage).toMatchObject({ state: 'done', percent: 100 });
      expect(view.chunks.map((c: { part: string; index?: number }) => c.index ?? c.part)).toEqual([0, 1, 2, 'audio']);
      for (const c of view.chunks) expect(c, `${stage} ${c.index ?? c.part}`).toMatchObject({ state: 'done', percent: 100 });
    }
    const index = [0, 240, 480].indexOf(killed.startFrame);
    expect(index).toBeGreaterThanOrEqual(0);
    expect(job['stages']['transcode-720p'].chunks[index].attempts).toBe(2);
    expect(job['stages']['transcode-720p'].attempts).toBe(2);
  });

  it('had both replicas encode parts of the same video, and one of them join it', () => {
    const recorded = REPLICAS.map((id) => linesOf(id).filter((l) => l['msg'] === 'part recorded').map((l) => l['part']));
    expect(recorded[0]!.length, 'replica 1').toBeGreaterThan(0);
    expect(recorded[1]!.length, 'replica 2').toBeGreaterThan(0);
    expect([...recorded[0]!, ...recorded[1]!].sort()).toEqual(['audio', 'c0', 'c1', 'c2']);
    expect(REPLICAS.flatMap((id) => linesOf(id).filter((l) => l['msg'] === 'rung joined'))).toHaveLength(1);
  });

  it('kept every part in the work bucket under the attempt', async () => {
    for (const rung of ['720p', '360p']) {
      for (const part of [0, 1, 2, 'audio'] as const) expect(await headObject(sys.s3, { bucket: BUCKETS.work, key: layout.chunk({ jobId: taskId, attempt: 1 }, rung, part) }), `${rung} ${part}`).not.toBeNull();
    }
  });

  it.each([
    // Rate control starts over in each chunk: at 720p that costs a few hundredths of a dB; the 360p rung
    // (more bits per pixel) loses more PSNR at 8 s chunks but stays within 0.005 SSIM.
    { rung: '720p', psnrWithin: 0.3 },
    { rung: '360p', psnrWithin: undefined },
  ])('joins $rung into what one encode of the whole source would be', async ({ rung, psnrWithin }) => {
    const joined = join(dir, `${rung}-joined.mp4`);
    await downloadToFile(sys.s3, { bucket: BUCKETS.work, key: layout.rendition({ jobId: taskId, attempt: 1 }, rung) }, joined);
    const whole = join(dir, `${rung}-whole.mp4`);
    const profile = DEFAULT_LADDER.find((r) => r.name === rung)!;
    const probe = await probeFile(source, { log });
    await runTool('ffmpeg', transcodeArgs({ input: source, output: whole, probe, plan, profile }), { log });
    const [a, b] = [await renditionFacts(joined), await renditionFacts(whole)];
    const frame = plan.frameRate.den / plan.frameRate.num;
    expect(a.frames).toBe(b.frames);
    expect(a.frames).toBe((20 * plan.frameRate.num) / plan.frameRate.den);
    // Continuous timestamps: frame n at n / rate, no gap or repeat where chunks meet.
    a.pts.forEach((t, n) => expect(Math.abs(t - n * frame), `frame ${n}`).toBeLessThan(frame / 4));
    // A keyframe exactly where every segment starts, and nowhere else.
    expect(a.keyframes).toEqual([0, 1, 2, 3, 4].map((m) => segmentStartFrame(plan, m)));
    expect(Math.abs(a.videoDurationSec - a.audioDurationSec!)).toBeLessThan(frame);
    expect(Math.abs(a.audioDurationSec! - b.audioDurationSec!)).toBeLessThan(frame);
    const size = plan.sizes[rung]!;
    const rate = `${plan.frameRate.num}/${plan.frameRate.den}`;
    const [qa, qb] = (await qualityAgainst([joined, whole], source, { picture: bt709Filters(probe, `${size.width}:${size.height}`), rate, audio: true })) as [{ psnr: number; ssim: number }, { psnr: number; ssim: number }];
    expect(Math.abs(qa.ssim - qb.ssim), `SSIM ${qa.ssim} against ${qb.ssim}`).toBeLessThan(0.005);
    if (psnrWithin !== undefined) expect(Math.abs(qa.psnr - qb.psnr), `PSNR ${qa.psnr} against ${qb.psnr}`).toBeLessThan(psnrWithin);
    // A misaligned join (one frame off) would fall far below: PSNR sees it.
    expect(qa.psnr).toBeGreaterThan(35);
  }, 90_000);

  it('publishes a valid DASH manifest that plays, on both renditions', async () => {
    await validateMpd((await getText(sys.s3, { bucket: BUCKETS.output, key: `${KEY}/manifest.mpd` }))!, dir);
    expectPlaysBothRenditions(await playInBrowser(new URL('manifest.mpd', outputBaseUrl(sys, KEY)).href));
  }, 90_000);

  it('traces a span per chunk under the rung\'s span, and the join under the part that completed the rung', async () => {
    const spans = await otlp.waitFor((all) => all.filter((s) => s.attributes['job.id'] === taskId && s.name.startsWith('transcode-720p ')).length >= 5, 30_000);
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    const ancestors = (s: ReceivedSpan): ReceivedSpan[] => {
      const up: ReceivedSpan[] = [];
      for (let p = s.parentSpanId ? byId.get(s.parentSpanId) : undefined; p; p = p.parentSpanId ? byId.get(p.parentSpanId) : undefined) up.push(p);
      return up;
    };
    const rungSpan = spans.find((s) => s.service === 'downloader' && s.name === 'transcode-720p' && s.attributes['job.id'] === taskId)!;
    expect(rungSpan.attributes['media.chunks']).toBe(3);
    for (const name of ['transcode-720p chunk 0', 'transcode-720p chunk 1', 'transcode-720p chunk 2', 'transcode-720p audio']) {
      const parts = spans.filter((s) => s.name === name && s.attributes['job.id'] === taskId);
      expect(parts.length, name).toBeGreaterThan(0);
      for (const p of parts) {
        expect(p.service).toBe('transcoder-720');
        expect(ancestors(p), name).toContain(rungSpan);
      }
    }
    const joins = spans.filter((s) => s.name === 'transcode-720p join' && s.attributes['job.id'] === taskId);
    expect(joins).toHaveLength(1);
    expect(ancestors(joins[0]!)[0]!.name).toMatch(/^transcode-720p (chunk \d|audio)$/);
  });
});
