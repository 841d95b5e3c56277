/**
 * An HDR phone video through the running mesh: an HLG 10-bit HEVC clip of SMPTE bars comes out as
 * 8-bit BT.709 renditions, tagged so in the packaged segments, with the bars' colours kept.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { downloadToFile, getText } from '@mesh/storage';
import { freePort, makeClip, patchMeans, smpteBarPatches, smpteBarsOriginal } from '@mesh/testkit';
import { BUCKETS, outputBaseUrl, putInput, startSystem, submit, waitForSettled, type Job, type System } from './support/harness.ts';
import { readMpd, type RepresentationInfo } from './support/mpd.ts';

const run = promisify(execFile);
const key = 'hdr/phone hlg.mp4';
let sys: System;
let dir: string;
let job: Job;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hdr-'));
  sys = await startSystem({ apiPort: await freePort() });
  await putInput(sys, key, await makeClip(join(dir, 'hlg.mp4'), { width: 1280, height: 720, seconds: 3, picture: 'bars', hdr: 'hlg' }));
  const taskId = await submit(sys, { object_key: key, base_url: outputBaseUrl(sys, key), video_id: 'hdr-hlg', has_audio: false });
  job = await waitForSettled(sys, taskId, ['complete', 'failed'], 240_000);
}, 300_000);

afterAll(async () => {
  await sys?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** A rendition's init segment and first media segment joined: what a player decodes first. */
async function firstSegment(rep: RepresentationInfo): Promise<string> {
  const parts = [join(dir, `${rep.id}-init.mp4`), join(dir, `${rep.id}-1.m4s`)];
  await downloadToFile(sys.s3, { bucket: BUCKETS.output, key: `${key}/${rep.init}` }, parts[0]!);
  await downloadToFile(sys.s3, { bucket: BUCKETS.output, key: `${key}/${rep.segments[0]!.path}` }, parts[1]!);
  const joined = join(dir, `${rep.id}.mp4`);
  await writeFile(joined, Buffer.concat(await Promise.all(parts.map((p) => readFile(p)))));
  return joined;
}

describe('an HLG 10-bit HEVC phone clip', () => {
  it('comes out 8-bit BT.709, limited range, in every rendition, with the bars kept', async () => {
    expect(job).toMatchObject({ state: 'complete', renditions: ['720p', '360p'] });
    const mpd = readMpd((await getText(sys.s3, { bucket: BUCKETS.output, key: `${key}/manifest.mpd` }))!);
    const video = mpd.representations.filter((r) => r.contentType === 'video');
    expect(video).toHaveLength(2);
    for (const rep of video) {
      const file = await firstSegment(rep);
      const { stdout } = await run('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'stream=codec_name,pix_fmt,color_range,color_space,color_transfer,color_primaries', '-of', 'json', file]);
      expect(JSON.parse(stdout).streams[0], `${rep.height}p`).toEqual({ codec_name: 'h264', pix_fmt: 'yuv420p', color_range: 'tv', color_space: 'bt709', color_transfer: 'bt709', color_primaries: 'bt709' });
      if (rep.height !== 720) continue;
      // Each bar (75% bars, -I, +Q) within 12 code values of the SDR original.
      const patches = smpteBarPatches(1280, 720).filter((p) => p.name !== 'white 100%');
      const [got, want] = await Promise.all([patchMeans(['-i', file], 1280, 720, patches), patchMeans(smpteBarsOriginal(1280, 720), 1280, 720, patches)]);
      for (const p of patches) got.get(p.name)!.forEach((v, i) => expect(Math.abs(v - want.get(p.name)![i]!), `${p.name} ${'YUV'[i]}`).toBeLessThanOrEqual(12));
    }
  });
});
