/**
 * Every tool run is bounded, on real FFmpeg: by the probed duration (a crafted source cannot decode
 * longer), by a wall-clock budget, by the allowed codecs, by a stall timeout on network reads, and to the
 * object as probed (a swapped source fails at S3, 412).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { createLogger, InputError, ToolError, type Probe } from '@mesh/common';
import { makeClip, s3ClientConfig, startS3, tempDir, type S3Server } from '@mesh/testkit';
import { createS3, headObject, putObject, withSourceUrl } from '@mesh/storage';
import { decodeStopSec, planMedia, probeFile, runTool, storyboardPlan, thumbnailArgs, transcodeArgs } from '../src/index.ts';
import { DEFAULT_LADDER } from '@mesh/common';

const rungOf = (name: string) => DEFAULT_LADDER.find((r) => r.name === name)!;

const run = promisify(execFile);
const log = createLogger('test', 'silent');
let dir: { path: string; remove(): Promise<void> };
const at = (name: string) => join(dir.path, name);

beforeAll(async () => {
  dir = await tempDir('bounds');
});
afterAll(() => dir.remove());

/** The probe of a source these tests do not (or cannot) probe. */
const probeOf = (width: number, height: number, durationSec: number): Probe => ({
  formatName: 'mov,mp4',
  durationSec,
  sizeBytes: 1,
  video: { codec: 'h264', width, height, rotation: 0, frameRate: { num: 25, den: 1 }, sampleAspectRatio: { num: 1, den: 1 }, pixFmt: 'yuv420p', interlaced: false },
  audio: null,
});

async function durationOf(path: string): Promise<number> {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-show_entries', 'format=duration', '-of', 'csv=p=0', path]);
  return Number(stdout.trim());
}

describe('a source that decodes longer than it declares', () => {
  let crafted: string;
  let probe: Probe;

  beforeAll(async () => {
    // 30 copies of a 10 s MPEG-TS joined end to end: ffprobe reads the first timestamps and says 10 s.
    const one = at('ten.ts');
    await run('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', 'testsrc2=size=320x180:rate=25', '-f', 'lavfi', '-i', 'sine=sample_rate=48000', '-t', '10', '-c:v', 'libx264', '-preset', 'ultrafast', '-c:a', 'aac', one]);
    crafted = at('crafted.ts');
    const out = createWriteStream(crafted);
    for (let i = 0; i < 30; i++) await pipeline(createReadStream(one), out, { end: i === 29 });
    probe = await probeFile(crafted, { log });
  }, 60_000);

  it('probes as 10 s', () => {
    expect(probe.durationSec).toBeCloseTo(10, 0);
  });

  it('is cut by the args alone just past what it declared, not encoded for 300 s', async () => {
    const plan = planMedia(probe, { hasAudio: true, ladder: DEFAULT_LADDER });
    await runTool('ffmpeg', transcodeArgs({ input: crafted, output: at('cut.mp4'), probe, plan, profile: rungOf('360p') }), { log });
    const got = await durationOf(at('cut.mp4'));
    expect(got).toBeGreaterThan(probe.durationSec);
    expect(got).toBeLessThanOrEqual(decodeStopSec(probe.durationSec) + 0.1);
  });

  it('fails the encode with SOURCE_TOO_LONG and a reason, given the declared duration', async () => {
    const plan = planMedia(probe, { hasAudio: true, ladder: DEFAULT_LADDER });
    const err = await runTool('ffmpeg', transcodeArgs({ input: crafted, output: at('refused.mp4'), probe, plan, profile: rungOf('360p') }), {
      log,
      declaredSec: probe.durationSec,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect(err).toMatchObject({ code: 'SOURCE_TOO_LONG', message: expect.stringMatching(/^the video decodes longer than the 10 s it declared \(still going at 1\d s\)/) });
  });

  it('gives a thumbnail and the storyboard it declares (read through, stopped just past it), no more sheets', async () => {
    const plan = storyboardPlan(probe.durationSec, { width: 320, height: 180 });
    await runTool('ffmpeg', thumbnailArgs({ input: crafted, poster: at('crafted.jpg'), sheets: at('crafted-%d.jpg'), probe, plan }), { log, timeoutMs: 30_000 });
    expect((await readFile(at('crafted.jpg'))).subarray(0, 2)).toEqual(Buffer.from([0xff, 0xd8]));
    expect(plan).toMatchObject({ tiles: 6, sheets: 1 }); // it declares 10.02 s
    expect((await readdir(dir.path)).filter((f) => /^crafted-\d+\.jpg$/.test(f))).toEqual(['crafted-1.jpg']);
  });

  it('a clip that holds what it declares is not refused', async () => {
    const src = await makeClip(at('honest.mp4'), { width: 320, height: 180, seconds: 3, audio: true });
    const honest = await probeFile(src, { log });
    const plan = planMedia(honest, { hasAudio: true, ladder: DEFAULT_LADDER });
    await runTool('ffmpeg', transcodeArgs({ input: src, output: at('honest-360p.mp4'), probe: honest, plan, profile: rungOf('360p') }), { log, declaredSec: honest.durationSec });
    expect(await durationOf(at('honest-360p.mp4'))).toBeCloseTo(3, 0);
  });
});

describe('a source that holds less than it declares', () => {
  it('still gets every planned sprite sheet (the last frame repeated), so no cue of the storyboard points at nothing', async () => {
    const src = await makeClip(at('short.mp4'), { width: 320, height: 180, seconds: 9, audio: false });
    // It says 61 s: 31 tiles on two sheets, the second past anything it holds.
    const probe = probeOf(320, 180, 61);
    const plan = storyboardPlan(probe.durationSec, { width: 320, height: 180 });
    expect(plan.sheets).toBe(2);
    await runTool('ffmpeg', thumbnailArgs({ input: src, poster: at('short.jpg'), sheets: at('short-%d.jpg'), probe, plan }), { log, timeoutMs: 60_000 });
    expect((await readdir(dir.path)).filter((f) => /^short-\d+\.jpg$/.test(f)).sort()).toEqual(['short-1.jpg', 'short-2.jpg']);
  });

  it('ends at once when it holds no frame for the poster (half a second that says 10 s), with the sheets and no poster', async () => {
    const src = at('half.mp4');
    await run('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', 'testsrc2=size=320x180:rate=25', '-t', '0.5', '-c:v', 'libx264', '-preset', 'ultrafast', src]);
    const probe = probeOf(320, 180, 10);
    const started = Date.now();
    await runTool('ffmpeg', thumbnailArgs({ input: src, poster: at('half.jpg'), sheets: at('half-%d.jpg'), probe, plan: storyboardPlan(10, { width: 320, height: 180 }) }), { log, timeoutMs: 20_000 });
    expect(Date.now() - started).toBeLessThan(15_000);
    const made = await readdir(dir.path);
    expect(made.filter((f) => f.startsWith('half') && f.endsWith('.jpg')).sort()).toEqual(['half-1.jpg']);
  });
});

describe('the wall-clock budget', () => {
  it('stops a run that goes past it, with TOOL_TIMEOUT and a reason', async () => {
    const args = ['-v', 'error', '-f', 'lavfi', '-i', 'testsrc2=size=1280x720:rate=30', '-t', '600', '-c:v', 'libx264', '-preset', 'slow', '-f', 'null', '-'];
    const err = await runTool('ffmpeg', args, { log, timeoutMs: 700 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'TOOL_TIMEOUT', message: 'ffmpeg ran longer than its 1 s budget and was stopped', permanent: false });
  });
});

describe('decoders', () => {
  const lavfi = ['-f', 'lavfi', '-i', 'testsrc2=size=128x96:rate=25', '-f', 'lavfi', '-i', 'sine=sample_rate=48000'];
  // Codecs of cameras, phones, editors and the web, in the containers they come in; the decoder names
  // FFmpeg 5.1 checks against the list differ from codec names (libdav1d, mp3float, msmpeg4...).
  it.each<[string, string[], string, string | null]>([
    ['hevc.mp4', ['-c:v', 'libx265', '-preset', 'ultrafast', '-x265-params', 'log-level=error', '-tag:v', 'hvc1', '-c:a', 'eac3'], 'hevc', 'eac3'],
    ['vp9.webm', ['-c:v', 'libvpx-vp9', '-deadline', 'realtime', '-cpu-used', '8', '-c:a', 'libopus'], 'vp9', 'opus'],
    ['vp8.webm', ['-c:v', 'libvpx', '-c:a', 'libvorbis'], 'vp8', 'vorbis'],
    ['av1.mkv', ['-c:v', 'libsvtav1', '-preset', '12', '-c:a', 'flac'], 'av1', 'flac'],
    ['mpeg4.avi', ['-c:v', 'mpeg4', '-c:a', 'libmp3lame'], 'mpeg4', 'mp3'],
    ['divx3.avi', ['-c:v', 'msmpeg4', '-c:a', 'ac3'], 'msmpeg4v3', 'ac3'],
    ['mpeg2.ts', ['-c:v', 'mpeg2video', '-c:a', 'mp2'], 'mpeg2video', 'mp2'],
    ['mpeg1.mpg', ['-c:v', 'mpeg1video', '-c:a', 'mp2', '-f', 'mpeg'], 'mpeg1video', 'mp2'],
    ['mjpeg.avi', ['-c:v', 'mjpeg', '-pix_fmt', 'yuvj420p', '-c:a', 'pcm_s16le'], 'mjpeg', 'pcm_s16le'],
    ['prores.mov', ['-c:v', 'prores_ks', '-c:a', 'pcm_s24le'], 'prores', 'pcm_s24le'],
    ['wmv.asf', ['-c:v', 'wmv2', '-c:a', 'wmav2'], 'wmv2', 'wmav2'],
    ['theora.ogg', ['-c:v', 'libtheora', '-c:a', 'libvorbis'], 'theora', 'vorbis'],
    ['flv1.flv', ['-c:v', 'flv', '-c:a', 'libmp3lame', '-ar', '44100'], 'flv1', 'mp3'],
    ['h263.3gp', ['-c:v', 'h263', '-c:a', 'aac'], 'h263', 'aac'],
  ])('%s is probed and decoded', async (name, codecArgs, video, audio) => {
    await run('ffmpeg', ['-v', 'error', '-y', ...lavfi, '-t', '1', '-map', '0:v', '-map', '1:a', ...codecArgs, at(name)]);
    const probe = await probeFile(at(name), { log });
    expect(probe.video.codec).toBe(video);
    expect(probe.audio?.codec ?? null).toBe(audio);
    const plan = planMedia(probe, { hasAudio: true, ladder: DEFAULT_LADDER });
    await runTool('ffmpeg', transcodeArgs({ input: at(name), output: at(`${name}.360p.mp4`), probe, plan, profile: rungOf('360p') }), { log, declaredSec: probe.durationSec });
  });

  it('lets a phone video with subtitles and cover art through (ffprobe opens every stream)', async () => {
    await writeFile(at('subs.srt'), '1\n00:00:00,000 --> 00:00:00,900\nhello\n');
    await run('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', 'color=red:size=64x64', '-frames:v', '1', at('cover.png')]);
    await run('ffmpeg', ['-v', 'error', '-y', ...lavfi, '-i', at('subs.srt'), '-i', at('cover.png'), '-t', '1', '-map', '0:v', '-map', '1:a', '-map', '2', '-map', '3', '-c:v:0', 'libx264', '-c:a', 'aac', '-c:s', 'mov_text', '-c:v:1', 'png', '-disposition:v:1', 'attached_pic', at('subs.mp4')]);
    expect((await probeFile(at('subs.mp4'), { log })).video.codec).toBe('h264');
  });

  it('refuses a source in a codec it does not decode, naming it, in ffprobe and in ffmpeg', async () => {
    await run('ffmpeg', ['-v', 'error', '-y', ...lavfi, '-t', '1', '-map', '0:v', '-c:v', 'ffv1', at('ffv1.mkv')]);
    const err = await probeFile(at('ffv1.mkv'), { log }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect(err).toMatchObject({ code: 'SOURCE_UNSUPPORTED', message: expect.stringMatching(/^the file holds a ffv1 stream, a codec the mesh does not decode \(video: h264, hevc, /) });
    // FFmpeg itself refuses it too, with the probe of a file that was swapped after probing, say.
    const probe = probeOf(128, 96, 1);
    const failed = await runTool('ffmpeg', transcodeArgs({ input: at('ffv1.mkv'), output: at('ffv1.mp4'), probe, plan: planMedia(probe, { hasAudio: false, ladder: DEFAULT_LADDER }), profile: rungOf('360p') }), { log }).catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(ToolError);
    expect((failed as ToolError).stderrTail).toMatch(/Codec \(ffv1\) not on whitelist/);
  });
});

describe('reading a URL', () => {
  it('fails on an S3 that accepts and never answers, after its stall timeout and reconnects, instead of hanging', async () => {
    const sockets: Socket[] = [];
    const stalled = createServer((s) => sockets.push(s.on('error', () => undefined)));
    stalled.listen(0, '127.0.0.1');
    await once(stalled, 'listening');
    const { port } = stalled.address() as { port: number };
    const probe = probeOf(320, 180, 10);
    try {
      const args = transcodeArgs({ input: `http://127.0.0.1:${port}/in/src.mp4`, readTimeoutMs: 500, output: at('stalled.mp4'), probe, plan: planMedia(probe, { hasAudio: false, ladder: DEFAULT_LADDER }), profile: rungOf('360p') });
      // Without a stall timeout it would wait forever: the test's own guard stops it after 40 s.
      const err = await runTool('ffmpeg', args, { log, signal: AbortSignal.timeout(40_000) }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ToolError);
      expect((err as ToolError).stderrTail).toMatch(/Connection timed out/);
      // FFmpeg tried 5 times (the first and 4 reconnects, 0+1+3+7 s apart), each waiting 0.5 s for an answer.
      expect(sockets.length).toBe(5);
    } finally {
      for (const s of sockets) s.destroy();
      stalled.close();
    }
  });
});

describe('a source swapped after it was probed', () => {
  let server: S3Server;
  beforeAll(async () => {
    server = await startS3({ buckets: ['pinned-src'] });
  });
  afterAll(() => server.stop());

  it('is refused by S3 at FFmpeg\'s first request (412), and the work fails with SOURCE_CHANGED saying so', async () => {
    const s3 = createS3(s3ClientConfig(server));
    const ref = { bucket: 'pinned-src', key: 'clips/swapped.mp4' };
    await putObject(s3, ref, await readFile(await makeClip(at('first.mp4'), { width: 320, height: 180, seconds: 2, audio: true })));
    const source = { ...ref, etag: (await headObject(s3, ref))!.etag };
    // Pinned and unchanged: ffprobe and ffmpeg send the If-Match header S3 checks, and read it.
    const probe = await withSourceUrl(s3, source, (url, { ifMatch }) => probeFile(url, { log, ifMatch, sizeBytes: 1, redact: { [url]: 'src' } }));
    const plan = planMedia(probe, { hasAudio: true, ladder: DEFAULT_LADDER });
    const encode = (output: string) =>
      withSourceUrl(s3, source, (input, { ifMatch }) => runTool('ffmpeg', transcodeArgs({ input, ifMatch, output, probe, plan, profile: rungOf('360p') }), { log, redact: { [input]: 'src' } }));
    await encode(at('pinned-ok.mp4'));
    expect(await durationOf(at('pinned-ok.mp4'))).toBeCloseTo(2, 0);

    await putObject(s3, ref, await readFile(await makeClip(at('second.mp4'), { width: 320, height: 180, seconds: 2, audio: false })));
    const err = await encode(at('pinned-swapped.mp4')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect(err).toMatchObject({
      code: 'SOURCE_CHANGED',
      message: expect.stringMatching(/^object clips\/swapped\.mp4 changed while it was being converted \(S3 refused to read it as probed \(412 Precondition Failed; ETag \w+ is now \w+\)\); submit it again$/),
    });
    // ffprobe (at -v error) only says "4XX": the request was refused, not served the new object.
    const probeErr = await withSourceUrl(s3, source, (url, { ifMatch }) => probeFile(url, { log, ifMatch, sizeBytes: 1 })).catch((e: unknown) => e);
    expect(probeErr).toMatchObject({ code: 'SOURCE_CHANGED', message: expect.stringMatching(/changed while it was being converted \(ETag \w+ is now \w+\)/) });
    expect((probeErr as Error).cause).toBeInstanceOf(ToolError);
    expect(((probeErr as Error).cause as ToolError).stderrTail).toMatch(/Server returned 4XX Client Error/);
  });
});
