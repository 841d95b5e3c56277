/**
 * Output for every screen: the web ladder (1080p down to 240p) from config, on the running mesh, with
 * HLS beside DASH from one set of CMAF segments, played by the players sites use; seek previews
 * (storyboards) those players find through their thumbnail APIs; and the webhook events a backend opts
 * in to (WEBHOOK_EVENTS), signed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { Webhook } from 'standardwebhooks';
import { WEBHOOK_EVENTS } from '@mesh/common';
import { getText, headObject, listKeys } from '@mesh/storage';
import { freePort, makeClip, REPO_ROOT } from '@mesh/testkit';
import { api, BUCKETS, getJob, headers, outputBaseUrl, putInput, startSystem, submit, waitForSettled, type Job, type System } from './support/harness.ts';
import { firstVideoPacket, readMpd } from './support/mpd.ts';
import { openBrowser, type Browser } from './support/players.ts';

const run = promisify(execFile);
const SCHEMA = join(REPO_ROOT, '..', 'shared', 'conformance', 'dash', 'DASH-MPD.xsd');
const WEB = { '1080p': [1920, 1080], '720p': [1280, 720], '480p': [854, 480], '360p': [640, 360], '240p': [426, 240] } as const;
/** The backend opts in to every webhook event; calls are signed with this. */
const SECRET = `whsec_${randomBytes(32).toString('base64')}`;

let sys: System;
let dir: string;
let browser: Browser;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ladder-'));
  sys = await startSystem({ apiPort: await freePort(), env: { LADDER_FILE: join(REPO_ROOT, 'ladders', 'web.json'), WEBHOOK_EVENTS: WEBHOOK_EVENTS.join(','), WEBHOOK_SECRET: SECRET } });
  // The rungs the two default transcoders do not take: one more transcoder, as a deployment adds one.
  await sys.mesh.add('transcoder', { RENDITIONS: '1080p,480p,240p' });
  browser = await openBrowser();
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await sys?.stop();
  await rm(dir, { recursive: true, force: true });
});

async function getBytes(key: string): Promise<Buffer> {
  const res = await sys.s3.send(new GetObjectCommand({ Bucket: BUCKETS.output, Key: key }));
  return Buffer.from(await res.Body!.transformToByteArray());
}


/** The HLS master's variants, and each media playlist's segment URIs, resolved against the package. */
function readMaster(text: string): { independent: boolean; variants: { attrs: Record<string, string>; uri: string }[]; audio: string | undefined } {
  const lines = text.split('\n').map((l) => l.trim());
  const attrs = (line: string) => Object.fromEntries([...line.matchAll(/([A-Z-]+)=("[^"]*"|[^,]*)/g)].map((m) => [m[1]!, m[2]!.replace(/^"|"$/g, '')]));
  const variants = lines.flatMap((l, i) => (l.startsWith('#EXT-X-STREAM-INF:') ? [{ attrs: attrs(l.slice('#EXT-X-STREAM-INF:'.length)), uri: lines[i + 1]! }] : []));
  const media = lines.find((l) => l.startsWith('#EXT-X-MEDIA:TYPE=AUDIO'));
  return { independent: lines.includes('#EXT-X-INDEPENDENT-SEGMENTS'), variants, audio: media ? attrs(media)['URI'] : undefined };
}

/** The cues of a WebVTT storyboard track: times in seconds, the sprite's URI and the tile's rectangle on it. */
function readStoryboard(text: string): { start: number; end: number; uri: string; x: number; y: number; w: number; h: number }[] {
  const secs = (t: string) => t.split(':').reduce((a, p) => a * 60 + Number(p), 0);
  return [...text.matchAll(/^([\d:.]+) --> ([\d:.]+)\n(\S+)#xywh=(\d+),(\d+),(\d+),(\d+)$/gm)].map((m) => ({
    start: secs(m[1]!),
    end: secs(m[2]!),
    uri: m[3]!,
    x: Number(m[4]),
    y: Number(m[5]),
    w: Number(m[6]),
    h: Number(m[7]),
  }));
}

async function imageSize(url: string): Promise<[number, number]> {
  const file = join(dir, `sprite-${randomBytes(4).toString('hex')}.jpg`);
  const res = await fetch(url);
  expect(res.status, url).toBe(200);
  expect(res.headers.get('content-type')).toBe('image/jpeg');
  await writeFile(file, Buffer.from(await res.arrayBuffer()));
  const { stdout } = await run('ffprobe', ['-v', 'error', '-show_entries', 'stream=width,height', '-of', 'csv=p=0', file]);
  const [w, h] = stdout.trim().split(',').map(Number);
  return [w!, h!];
}

describe('the web ladder on a 1080p clip with audio', () => {
  const key = 'ladder/phone 1080p.mp4';
  let taskId: string;
  let job: Job;
  let base: string;

  beforeAll(async () => {
    await putInput(sys, key, await makeClip(join(dir, 'src.mp4'), { width: 1920, height: 1080, seconds: 9, audio: true }));
    base = outputBaseUrl(sys, key);
    taskId = await submit(sys, { object_key: key, base_url: base, video_id: 'ladder-1080', has_audio: true });
    job = await waitForSettled(sys, taskId, ['complete', 'failed'], 240_000);
    // The previews may come after the last rendition: then the manifest is published again with them.
    const deadline = Date.now() + 60_000;
    while (!(await getText(sys.s3, { bucket: BUCKETS.output, key: `${key}/manifest.mpd` }))?.includes('contentType="image"')) {
      if (Date.now() > deadline) throw new Error(`no image track in the manifest; the job: ${JSON.stringify(await getJob(sys, taskId))}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    job = await getJob(sys, taskId);
  }, 300_000);

  it('makes every rung of the ladder, each its own stage, and shows both manifests in the status', () => {
    expect(job).toMatchObject({ state: 'complete', task_status: 'SUCCESS', planned_renditions: Object.keys(WEB), renditions: Object.keys(WEB) });
    for (const r of Object.keys(WEB)) expect(job['stages'][`transcode-${r}`]).toMatchObject({ state: 'done' });
    expect(job['manifest']).toMatchObject({ key: `${key}/manifest.mpd` });
    expect(job['hls']).toMatchObject({ key: `${key}/master.m3u8`, url: expect.stringMatching(/master\.m3u8$/) });
  });

  it('writes a valid DASH manifest naming every rung at its size, and only segments that exist', async () => {
    const xml = (await getText(sys.s3, { bucket: BUCKETS.output, key: `${key}/manifest.mpd` }))!;
    await writeFile(join(dir, 'web.mpd'), xml);
    await run('xmllint', ['--noout', '--schema', SCHEMA, join(dir, 'web.mpd')]);
    const mpd = readMpd(xml);
    expect(mpd.baseUrl).toBe(base);
    const video = mpd.representations.filter((r) => r.contentType === 'video');
    expect(video.map((r) => [r.width, r.height])).toEqual(expect.arrayContaining(Object.values(WEB).map(([w, h]) => [w, h])));
    expect(video).toHaveLength(5);
    const keys = new Set(await listKeys(sys.s3, BUCKETS.output, `${key}/`));
    for (const rep of mpd.representations) {
      expect(keys.has(`${key}/${rep.init}`), rep.init).toBe(true);
      for (const seg of rep.segments) expect(keys.has(`${key}/${seg.path}`), seg.path).toBe(true);
    }
  });

  it('starts the video segments of every rung with a keyframe, at the same times', async () => {
    const mpd = readMpd((await getText(sys.s3, { bucket: BUCKETS.output, key: `${key}/manifest.mpd` }))!);
    const video = mpd.representations.filter((r) => r.contentType === 'video');
    const starts = video.map((r) => r.segments.map((s) => s.start));
    for (const s of starts) expect(s).toEqual(starts[0]);
    for (let i = 0; i < starts[0]!.length; i++) {
      const firsts = await Promise.all(video.map((rep) => firstVideoPacket(getBytes, `${key}/`, rep, i, dir)));
      for (const [j, f] of firsts.entries()) expect(f.key, `${video[j]!.height}p segment ${i + 1} starts with a keyframe`).toBe(true);
      for (const f of firsts) expect(f.pts).toBeCloseTo(firsts[0]!.pts, 3);
    }
  });

  it('writes an HLS master of the same segments: every rung with CODECS, RESOLUTION, BANDWIDTH and FRAME-RATE, VOD playlists naming only segments in place', async () => {
    const text = (await getText(sys.s3, { bucket: BUCKETS.output, key: `${key}/master.m3u8` }))!;
    expect((await headObject(sys.s3, { bucket: BUCKETS.output, key: `${key}/master.m3u8` }))).toMatchObject({ contentType: 'application/vnd.apple.mpegurl', cacheControl: 'no-cache' });
    const master = readMaster(text);
    expect(master.independent).toBe(true);
    expect(master.variants.map((v) => v.attrs['RESOLUTION'])).toEqual(expect.arrayContaining(Object.values(WEB).map(([w, h]) => `${w}x${h}`)));
    expect(master.variants).toHaveLength(5);
    for (const v of master.variants) {
      expect(v.attrs['CODECS']).toMatch(/^avc1\.[0-9a-f]{6},mp4a\.40\.2$/);
      expect(Number(v.attrs['BANDWIDTH'])).toBeGreaterThan(0);
      expect(Number(v.attrs['FRAME-RATE'])).toBeCloseTo(30, 1);
      expect(v.attrs['AUDIO']).toBe('audio');
    }
    const keys = new Set(await listKeys(sys.s3, BUCKETS.output, `${key}/`));
    for (const uri of [...master.variants.map((v) => v.uri), master.audio!]) {
      // Relative to the master: no host, no base.
      expect(uri).not.toMatch(/^[a-z]+:/);
      const playlist = `${key}/${uri}`;
      const body = (await getText(sys.s3, { bucket: BUCKETS.output, key: playlist }))!;
      expect(body).toContain('#EXT-X-PLAYLIST-TYPE:VOD');
      expect(body).toContain('#EXT-X-ENDLIST');
      const folder = playlist.slice(0, playlist.lastIndexOf('/') + 1);
      const named = body.split('\n').filter((l) => l && !l.startsWith('#')).concat([...body.matchAll(/#EXT-X-MAP:URI="([^"]+)"/g)].map((m) => m[1]!));
      expect(named.length).toBeGreaterThan(2);
      for (const seg of named) expect(keys.has(folder + seg), seg).toBe(true);
    }
  });

  it('makes seek previews: a WebVTT track, named in the status, whose cues cover the whole video, each inside a sprite sheet that exists', async () => {
    expect(job['storyboard']).toEqual({
      bucket: BUCKETS.output,
      key: `${key}/${taskId}.1/thumbs/storyboard.vtt`,
      url: expect.stringMatching(/\/storyboard\.vtt$/),
      intervalSec: 2,
      tileWidth: 160,
      tileHeight: 90,
      columns: 5,
      rows: 1,
      tiles: 5,
      sheets: 1,
    });
    const res = await fetch(job['storyboard'].url);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/vtt');
    const text = await res.text();
    expect(text.startsWith('WEBVTT\n\n')).toBe(true);
    const cues = readStoryboard(text);
    expect(cues).toHaveLength(5);
    expect(cues[0]!.start).toBe(0);
    for (let i = 1; i < cues.length; i++) expect(cues[i]!.start).toBe(cues[i - 1]!.end);
    expect(cues.at(-1)!.end).toBeCloseTo(job['source'].durationSec, 2);
    const sizes = new Map<string, [number, number]>();
    for (const c of cues) {
      // Relative to the track, as a player resolves it.
      const sprite = new URL(c.uri, job['storyboard'].url).href;
      if (!sizes.has(sprite)) sizes.set(sprite, await imageSize(sprite));
      const [w, h] = sizes.get(sprite)!;
      expect([c.w, c.h]).toEqual([160, 90]);
      expect(c.x + c.w, `${c.uri} x`).toBeLessThanOrEqual(w);
      expect(c.y + c.h, `${c.uri} y`).toBeLessThanOrEqual(h);
    }
    expect([...sizes.values()]).toEqual([[800, 90]]);
  });

  it('names the previews in the DASH manifest as a thumbnail-tile image track, on sprites that exist', async () => {
    const mpd = readMpd((await getText(sys.s3, { bucket: BUCKETS.output, key: `${key}/manifest.mpd` }))!);
    expect(mpd.images).toEqual([{ width: 800, height: 90, tiles: '5x1', segments: [{ number: 1, start: 0, path: `${taskId}.1/thumbs/tile_1.jpg` }] }]);
    const keys = new Set(await listKeys(sys.s3, BUCKETS.output, `${key}/`));
    for (const seg of mpd.images[0]!.segments) expect(keys.has(`${key}/${seg.path}`), seg.path).toBe(true);
  });

  it.each<['shaka' | 'dashjs', number]>([
    ['shaka', 5.3],
    ['shaka', 8.9],
    ['dashjs', 5.3],
  ])('%s finds the preview for a seek to %f s in the image track: the tile the WebVTT track names for that time', async (player, at) => {
    const cue = readStoryboard(await (await fetch(job['storyboard'].url)).text()).find((c) => c.start <= at && at < c.end)!;
    const report = await browser.play(new URL('manifest.mpd', base).href, { player, pick: 'lowest', thumbnailAt: at });
    expect(report.errors).toEqual([]);
    expect(report.thumbnail).toMatchObject({ x: cue.x, y: cue.y, width: cue.w, height: cue.h });
    expect(new URL(report.thumbnail!.uri, new URL('manifest.mpd', base)).href).toBe(new URL(cue.uri, job['storyboard'].url).href);
    expect(report.playedSec).toBeGreaterThan(1.5);
  }, 90_000);

  it('tells the backend, signed: each rung once as the manifest first holds it, that the job is playable and completed, with URLs that fetch; and the result notification as before', async () => {
    const mine = () => sys.backend.received.filter((r) => (r.body as { taskId?: string }).taskId === taskId);
    const events = () => mine().filter((r) => r.path === '/video/processing/events');
    await sys.backend.waitFor(() => events().filter((r) => (r.body as { type: string }).type === 'rendition.ready').length === 5 && events().some((r) => (r.body as { type: string }).type === 'job.completed'), 60_000);
    for (const r of mine()) expect(new Webhook(SECRET).verify(r.text, r.headers as Record<string, string>)).toEqual(r.body);
    type Body = { type: string; rendition?: string; renditions: string[]; urls: { dash: string; hls: string; storyboard: string | null } };
    const bodies = events().map((r) => r.body as Body);
    const ready = bodies.filter((b) => b.type === 'rendition.ready');
    expect(ready.map((b) => b.rendition).sort()).toEqual(Object.keys(WEB).sort());
    for (const b of ready) expect(b.renditions).toContain(b.rendition);
    const completed = bodies.filter((b) => b.type === 'job.completed');
    expect(completed).toHaveLength(1);
    expect(completed[0]!.renditions).toEqual(Object.keys(WEB));
    expect(bodies.filter((b) => b.type === 'job.playable')).toHaveLength(1);
    expect(bodies.filter((b) => b.type === 'job.failed')).toEqual([]);
    const urls = new Set(bodies.flatMap((b) => [b.urls.dash, b.urls.hls, ...(b.urls.storyboard ? [b.urls.storyboard] : [])]));
    expect(urls).toContain(new URL('manifest.mpd', base).href);
    for (const url of urls) expect((await fetch(url)).status, url).toBe(200);
    expect(mine().filter((r) => r.path === '/video/processing/result').map((r) => r.body)).toEqual([{ taskId, status: 'SUCCESS' }]);
  }, 90_000);

  it('decodes end to end with FFmpeg from the HLS master', async () => {
    const { stderr } = await run('ffmpeg', ['-hide_banner', '-v', 'error', '-i', new URL('master.m3u8', base).href, '-map', '0:v:0', '-map', '0:a:0', '-f', 'null', '-']);
    expect(stderr.trim()).toBe('');
  }, 60_000);

  it.each<['hlsjs' | 'shaka', 'lowest' | 'highest', number]>([
    ['hlsjs', 'lowest', 240],
    ['hlsjs', 'highest', 1080],
    ['shaka', 'lowest', 240],
    ['shaka', 'highest', 1080],
  ])('plays the HLS master in %s at the %s rung', async (player, pick, height) => {
    const report = await browser.play(new URL('master.m3u8', base).href, { player, pick, screenshot: join(dir, `hls-${player}-${pick}.png`) });
    expect(report.errors).toEqual([]);
    expect([...report.heights].sort((a, b) => a - b)).toEqual([240, 360, 480, 720, 1080]);
    expect(report.decodedHeight).toBe(height);
    expect(report.playedSec).toBeGreaterThan(1.5);
  }, 90_000);

  it.each<['dashjs' | 'shaka', 'lowest' | 'highest', number]>([
    ['dashjs', 'lowest', 240],
    ['dashjs', 'highest', 1080],
    ['shaka', 'lowest', 240],
    ['shaka', 'highest', 1080],
  ])('plays the DASH manifest in %s at the %s rung', async (player, pick, height) => {
    const report = await browser.play(new URL('manifest.mpd', base).href, { player, pick });
    expect(report.errors).toEqual([]);
    expect(report.decodedHeight).toBe(height);
    expect(report.playedSec).toBeGreaterThan(1.5);
  }, 90_000);
});

describe('a job that asks for some rungs', () => {
  it('gets those (no larger than the source), and a name not in the ladder is a 400 naming the field', async () => {
    const key = 'ladder/two rungs.mp4';
    await putInput(sys, key, await makeClip(join(dir, 'two.mp4'), { width: 1280, height: 720, seconds: 3, audio: false }));
    const taskId = await submit(sys, { object_key: key, base_url: outputBaseUrl(sys, key), video_id: 'ladder-two', has_audio: false, renditions: ['1080p', '480p', '240p'] });
    const job = await waitForSettled(sys, taskId, ['complete', 'failed'], 180_000);
    expect(job).toMatchObject({ state: 'complete', planned_renditions: ['480p', '240p'], renditions: ['480p', '240p'] });
    const refused = await api(sys, '/video/encoding', { method: 'POST', headers, body: JSON.stringify({ object_key: key, base_url: 'https://x.test/', video_id: 'x', renditions: ['4k'] }) });
    expect(refused.status).toBe(400);
    expect(await refused.json()).toMatchObject({ field: 'renditions', detail: 'renditions: 4k is not in the ladder (1080p, 720p, 480p, 360p, 240p)' });
  }, 200_000);
});

describe('a 480p source with the web ladder', () => {
  it('gets 480p, 360p and 240p, nothing larger', async () => {
    const key = 'ladder/small 480p.mp4';
    await putInput(sys, key, await makeClip(join(dir, 'small.mp4'), { width: 854, height: 480, seconds: 3, audio: true }));
    const taskId = await submit(sys, { object_key: key, base_url: outputBaseUrl(sys, key), video_id: 'ladder-480', has_audio: true });
    const job = await waitForSettled(sys, taskId, ['complete', 'failed'], 180_000);
    expect(job).toMatchObject({ state: 'complete', planned_renditions: ['480p', '360p', '240p'], renditions: ['480p', '360p', '240p'] });
    const mpd = readMpd((await getText(sys.s3, { bucket: BUCKETS.output, key: `${key}/manifest.mpd` }))!);
    expect(mpd.representations.filter((r) => r.contentType === 'video').map((r) => r.height).sort((a, b) => b! - a!)).toEqual([480, 360, 240]);
  }, 200_000);
});
