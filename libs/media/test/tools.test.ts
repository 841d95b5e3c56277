/** The argument builders run through real ffprobe, ffmpeg and Shaka Packager on clips made here. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createLogger, InputError, ToolError } from '@mesh/common';
import { makeClip, REPO_ROOT, s3ClientConfig, startS3, tempDir } from '@mesh/testkit';
import { createS3, presignGet, putObject } from '@mesh/storage';
import { displaySize, holdUrgency, outputSize, packagerArgs, planMedia, probeFile, runTool, setBaseUrl, setThumbnailTrack, storyboardPlan, thumbnailAdaptationSet, thumbnailArgs, transcodeArgs } from '../src/index.ts';
import { DEFAULT_LADDER } from '@mesh/common';

const rungOf = (name: string) => DEFAULT_LADDER.find((r) => r.name === name)!;

const run = promisify(execFile);
const log = createLogger('test', 'silent');
let dir: { path: string; remove(): Promise<void> };
const at = (name: string) => join(dir.path, name);

beforeAll(async () => {
  dir = await tempDir('media');
});
afterAll(() => dir.remove());

/** The newest ffmpeg child of this process (the one runTool just started). */
function lastFfmpegPid(): number {
  const pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number);
  const mine = pids.filter((pid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      return stat.includes('(ffmpeg)') && Number(stat.split(') ')[1]!.split(' ')[1]) === process.pid;
    } catch {
      return false;
    }
  });
  return Math.max(...mine);
}

async function streamInfo(path: string): Promise<string> {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_type,codec_name,width,height', '-of', 'csv=p=0', path]);
  return stdout.trim();
}

async function keyframeTimes(path: string): Promise<number[]> {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'packet=pts_time,flags', '-of', 'csv=p=0', path]);
  return stdout
    .trim()
    .split('\n')
    .map((l) => l.split(','))
    .filter(([, flags]) => flags?.includes('K'))
    .map(([pts]) => Number(pts));
}

describe('probe, transcode, package', () => {
  it('turns a 1280x720 clip with audio into two aligned renditions and a valid DASH manifest', async () => {
    const src = await makeClip(at('src.mp4'), { width: 1280, height: 720, seconds: 9, audio: true });
    const probe = await probeFile(src, { log });
    expect(probe).toMatchObject({ durationSec: expect.closeTo(9, 0), video: { codec: 'h264', width: 1280, height: 720, rotation: 0 }, audio: { codec: 'aac' } });
    const plan = planMedia(probe, { hasAudio: true, ladder: DEFAULT_LADDER });
    for (const r of plan.renditions) {
      let progressed = 0;
      await runTool('ffmpeg', transcodeArgs({ input: src, output: at(`${r}.mp4`), probe, plan, profile: rungOf(r) }), { log, onProgress: (s) => (progressed = s) });
      expect(progressed).toBeGreaterThan(8);
      const { width, height } = outputSize(probe, rungOf(r).shortSide);
      expect(await streamInfo(at(`${r}.mp4`))).toBe(`h264,video,${width},${height}\naac,audio`);
    }
    const [k720, k360] = await Promise.all([keyframeTimes(at('720p.mp4')), keyframeTimes(at('360p.mp4'))]);
    expect(k720).toEqual([0, 4, 8]);
    expect(k360).toEqual(k720);

    const out = at('pkg');
    await mkdir(out);
    await runTool('packager', packagerArgs({ renditions: plan.renditions.map((r) => ({ rendition: r, path: at(`${r}.mp4`) })), audioFrom: at('720p.mp4'), outDir: out, segmentDir: 'job.1', segmentSeconds: 4 }), { log });
    const manifest = join(out, 'manifest.mpd');
    await writeFile(manifest, setBaseUrl(await readFile(manifest, 'utf8'), 'https://cdn.example.test/a b/?x=1&y=2'));
    await run('xmllint', ['--noout', '--schema', join(REPO_ROOT, '..', 'shared', 'conformance', 'dash', 'DASH-MPD.xsd'), manifest]);
    const xml = await readFile(manifest, 'utf8');
    expect(xml).toContain('<BaseURL>https://cdn.example.test/a b/?x=1&amp;y=2</BaseURL>');
    expect(xml).toContain('width="1280" height="720"');
    expect(xml).toContain('width="640" height="360"');
  }, 120_000);

  it('makes a rotated phone video upright', async () => {
    const src = await makeClip(at('phone.mp4'), { width: 640, height: 360, seconds: 2, audio: false, rotation: 90 });
    const probe = await probeFile(src, { log });
    expect(probe.video).toMatchObject({ width: 640, height: 360, rotation: 90 });
    const plan = planMedia(probe, { hasAudio: true, ladder: DEFAULT_LADDER });
    expect(plan).toMatchObject({ renditions: ['360p'], audio: false });
    await runTool('ffmpeg', transcodeArgs({ input: src, output: at('phone-360.mp4'), probe, plan, profile: rungOf('360p') }), { log });
    expect(await streamInfo(at('phone-360.mp4'))).toBe('h264,video,360,640');
    await runTool('ffmpeg', thumbnailArgs({ input: src, poster: at('phone.jpg'), sheets: at('phone-tile_%d.jpg'), probe, plan: storyboardPlan(probe.durationSec, displaySize(probe)) }), { log });
    expect(await streamInfo(at('phone.jpg'))).toBe('mjpeg,video,360,640');
    // One upright tile on the only sheet.
    expect(await streamInfo(at('phone-tile_1.jpg'))).toBe('mjpeg,video,160,284');
  }, 60_000);

  it('makes the poster and every planned sprite sheet in one run, and the DASH image track naming them validates', async () => {
    const src = await makeClip(at('long.mp4'), { width: 320, height: 180, seconds: 61, audio: false });
    const probe = await probeFile(src, { log });
    const plan = storyboardPlan(probe.durationSec, displaySize(probe));
    expect(plan).toMatchObject({ intervalSec: 2, tiles: 31, columns: 5, rows: 5, sheets: 2, tileWidth: 160, tileHeight: 90 });
    await mkdir(at('board'));
    await runTool('ffmpeg', thumbnailArgs({ input: src, poster: at('board/poster.jpg'), sheets: at('board/tile_%d.jpg'), probe, plan }), { log });
    expect((await readdir(at('board'))).sort()).toEqual(['poster.jpg', 'tile_1.jpg', 'tile_2.jpg']);
    expect(await streamInfo(at('board/poster.jpg'))).toBe('mjpeg,video,320,180');
    for (const sheet of ['tile_1.jpg', 'tile_2.jpg']) expect(await streamInfo(at(`board/${sheet}`))).toBe('mjpeg,video,800,450');

    // In the manifest of a package of the same clip, beside its video: still valid DASH.
    const out = at('board-pkg');
    await mkdir(out);
    const rendition = planMedia(probe, { hasAudio: false, ladder: DEFAULT_LADDER });
    await runTool('ffmpeg', transcodeArgs({ input: src, output: at('board-360p.mp4'), probe, plan: rendition, profile: rungOf('360p') }), { log });
    await runTool('packager', packagerArgs({ renditions: [{ rendition: '360p', path: at('board-360p.mp4') }], outDir: out, segmentDir: 'job.1', segmentSeconds: 4 }), { log });
    const manifest = join(out, 'manifest.mpd');
    const set = thumbnailAdaptationSet(plan, { media: 'job.1/thumbs/tile_$Number$.jpg', maxSheetBytes: (await stat(at('board/tile_1.jpg'))).size });
    await writeFile(manifest, setThumbnailTrack(setBaseUrl(await readFile(manifest, 'utf8'), 'https://cdn.example.test/b/'), set));
    await run('xmllint', ['--noout', '--schema', join(REPO_ROOT, '..', 'shared', 'conformance', 'dash', 'DASH-MPD.xsd'), manifest]);
    expect(await readFile(manifest, 'utf8')).toContain('schemeIdUri="http://dashif.org/thumbnail_tile" value="5x5"');
  }, 120_000);
});

describe('refusals', () => {
  it('refuses an HLS playlist disguised as an mp4 without reading what it names', async () => {
    await writeFile(at('secret.ts'), 'secret');
    await writeFile(at('playlist.mp4'), `#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n${at('secret.ts')}\n#EXT-X-ENDLIST\n`);
    const err = await probeFile(at('playlist.mp4'), { log }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).code).toBe('NOT_A_VIDEO');
    expect((err as Error).message).toMatch(/not an allowed video format/);
  });

  it('refuses a concat list', async () => {
    await writeFile(at('list.mp4'), `ffconcat version 1.0\nfile '${at('src.mp4')}'\n`);
    await expect(probeFile(at('list.mp4'), { log })).rejects.toMatchObject({ code: 'NOT_A_VIDEO' });
  });

  it.each<[string, string | Buffer, string]>([
    ['text', 'hello, this is not a video\n'.repeat(50), 'NOT_A_VIDEO'],
    ['zero bytes', '', 'SOURCE_EMPTY'],
  ])('refuses %s', async (name, content, code) => {
    await writeFile(at(`${name}.mp4`), content);
    await expect(probeFile(at(`${name}.mp4`), { log })).rejects.toMatchObject({ code });
  });

  it('refuses an audio-only file', async () => {
    await run('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', 'sine=frequency=440', '-t', '2', '-c:a', 'aac', at('tone.mp4')]);
    await expect(probeFile(at('tone.mp4'), { log })).rejects.toThrow(/no video stream, only audio \(aac\)/);
  });

  it('reports a failing tool with its exit code and last stderr line', async () => {
    const err = await runTool('ffmpeg', ['-v', 'error', '-i', at('missing.mp4'), at('x.mp4')], { log }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ToolError);
    expect((err as ToolError).exitCode).toBe(1);
    expect((err as Error).message).toMatch(/ffmpeg failed \(exit 1\): .*No such file/);
  });

  it('reads a presigned URL, runs at the niceness asked, and never shows the URL in logs or errors', async () => {
    const server = await startS3({ buckets: ['media-url'] });
    try {
      const s3 = createS3(s3ClientConfig(server));
      const src = await makeClip(at('url-src.mp4'), { width: 640, height: 360, seconds: 2, audio: true });
      await putObject(s3, { bucket: 'media-url', key: 'jobs/1/source' }, await readFile(src));
      const url = await presignGet(s3, { bucket: 'media-url', key: 'jobs/1/source' }, { expiresSec: 60 });
      const lines: string[] = [];
      const spy = createLogger('test', 'info', { write: (l: string) => lines.push(l) });
      const redact = { [url]: 's3://media-url/jobs/1/source' };
      const probe = await probeFile(url, { log: spy, sizeBytes: 1, redact });
      expect(probe.video).toMatchObject({ width: 640, height: 360 });
      let niceness = -1;
      const plan = planMedia(probe, { hasAudio: true, ladder: DEFAULT_LADDER });
      await runTool('ffmpeg', transcodeArgs({ input: url, output: at('url-360p.mp4'), probe, plan, profile: rungOf('360p') }), {
        log: spy,
        redact,
        niceness: 12,
        onProgress: () => {
          if (niceness < 0) niceness = Number(readFileSync(`/proc/${lastFfmpegPid()}/stat`, 'utf8').split(') ')[1]!.split(' ')[16]);
        },
      });
      expect(niceness).toBe(12);
      expect(await streamInfo(at('url-360p.mp4'))).toContain('h264,video,640,360');
      // A failure whose stderr names the URL: the error and the logs show the label instead. (S3's answer,
      // not the file: retryable; withSourceUrl makes a missing source SOURCE_NOT_FOUND.)
      const gone = await presignGet(s3, { bucket: 'media-url', key: 'jobs/1/missing' }, { expiresSec: 60 });
      const err = await probeFile(gone, { log: spy, sizeBytes: 1, redact: { [gone]: 's3://media-url/jobs/1/missing' } }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'TOOL_FAILED', permanent: false, message: expect.stringMatching(/s3:\/\/media-url\/jobs\/1\/missing: Server returned 404 Not Found/) });
      for (const text of [...lines, (err as Error).message]) {
        expect(text).not.toContain('X-Amz-Signature=');
        expect(text).not.toContain('X-Amz-Credential=');
      }
      expect(lines.join('\n')).toContain('s3://media-url/jobs/1/source');
    } finally {
      await server.stop();
    }
  });

  it('pauses an encode while a more urgent one runs on the host, resumes it after, and stops it when asked', async () => {
    const yieldDir = at('encodes');
    const state = (pid: number): string => readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[0] ?? '';
    const ac = new AbortController();
    let pid = 0;
    const seen: string[] = [];
    const args = ['-v', 'error', '-progress', 'pipe:1', '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-t', '600', '-c:v', 'libx264', '-preset', 'ultrafast', '-f', 'null', '-'];
    const run = runTool('ffmpeg', args, { log, signal: ac.signal, yieldTo: { dir: yieldDir, rank: 1, maxPauseMs: 60_000, everyMs: 50 }, onProgress: () => (pid ||= lastFfmpegPid()) }).catch((e: unknown) => e);
    const until = async (want: (s: string) => boolean) => {
      for (let i = 0; i < 100 && !(pid && want(state(pid))); i++) await new Promise((r) => setTimeout(r, 50));
      seen.push(state(pid));
    };
    // A marker left by a process that is gone is ignored (and cleaned up).
    await writeFile(join(yieldDir, '0-999999999'), '');
    await until((s) => s === 'R' || s === 'S');
    // A more urgent encode (rank 0) of a live process appears: this one stops...
    await writeFile(join(yieldDir, `0-${process.pid}`), '');
    await until((s) => s === 'T');
    // ...and goes on once it is gone.
    await rm(join(yieldDir, `0-${process.pid}`));
    await until((s) => s !== 'T');
    // Urgent work held by a service (not an encode) pauses it too; then it is cancelled while paused:
    // it is resumed so it can act on the stop, and ends at once.
    const release = holdUrgency({ dir: yieldDir, rank: 0, maxPauseMs: 0 });
    await until((s) => s === 'T');
    const stopped = Date.now();
    ac.abort(new Error('cancelled'));
    expect(await run).toMatchObject({ message: expect.stringMatching(/ffmpeg stopped/) });
    expect(Date.now() - stopped).toBeLessThan(2500);
    expect(seen).toEqual([expect.stringMatching(/^[RS]$/), 'T', expect.stringMatching(/^[RS]$/), 'T']);
    // Its own marker and the dead process's are gone; the held one goes when released.
    expect(readdirSync(yieldDir)).toEqual([expect.stringMatching(new RegExp(`^0-${process.pid}-\\d+$`))]);
    release();
    expect(readdirSync(yieldDir)).toEqual([]);
  });

  it('stops a running tool when its signal aborts', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('service stopping')), 300);
    const started = Date.now();
    const args = ['-v', 'error', '-f', 'lavfi', '-i', 'testsrc2=size=1280x720:rate=30', '-t', '600', '-c:v', 'libx264', '-preset', 'slow', '-f', 'null', '-'];
    await expect(runTool('ffmpeg', args, { log, signal: ac.signal })).rejects.toThrow(/ffmpeg stopped/);
    expect(Date.now() - started).toBeLessThan(5000);
  });
});
