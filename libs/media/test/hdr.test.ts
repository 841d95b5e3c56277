/**
 * HDR phone video through real FFmpeg: SMPTE bars made HLG or PQ 10-bit HEVC (as phones record), then the
 * mesh's encode and thumbnail. Outputs must be 8-bit BT.709 limited range, say so in the MP4 and in the
 * H.264 bitstream, and keep each bar's colour: mean Y, U and V within 12 code values of the original bars.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createLogger, DEFAULT_LADDER, type Probe } from '@mesh/common';
import { makeClip, patchMeans, smpteBarPatches, smpteBarsOriginal, tempDir } from '@mesh/testkit';
import { planMedia, probeFile, runTool, sourceRange, storyboardPlan, thumbnailArgs, transcodeArgs } from '../src/index.ts';

const run = promisify(execFile);
const log = createLogger('test', 'silent');
const W = 640;
const H = 360;
const PATCHES = smpteBarPatches(W, H);
/** The bars SDR can show as they are: every 75% bar, -I and +Q. */
const IN_RANGE = PATCHES.filter((p) => p.name !== 'white 100%');
const TOLERANCE = 12;

let dir: { path: string; remove(): Promise<void> };
const at = (name: string) => join(dir.path, name);
let original: Means;

beforeAll(async () => {
  dir = await tempDir('hdr');
  original = await patchMeans(smpteBarsOriginal(W, H), W, H, PATCHES);
});
afterAll(() => dir.remove());

/** ffprobe's view of the first video stream's pixel format and colour tags. */
async function colourTags(path: string): Promise<Record<string, string>> {
  const { stdout } = await run('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'stream=codec_name,pix_fmt,color_range,color_space,color_transfer,color_primaries', '-of', 'json', path]);
  return (JSON.parse(stdout) as { streams: Record<string, string>[] }).streams[0]!;
}

type Means = Map<string, [number, number, number]>;

/** Each in-range patch's mean Y, U and V within TOLERANCE of the reference; the message names the worst. */
function expectBarsKept(got: Means, reference: Means): void {
  const w = worst(got, reference);
  expect(w.diff, `worst: ${w.at}`).toBeLessThanOrEqual(TOLERANCE);
}

function worst(means: Means, reference: Means): { diff: number; at: string } {
  let w = { diff: 0, at: '' };
  for (const p of IN_RANGE) {
    const got = means.get(p.name)!;
    const want = reference.get(p.name)!;
    got.forEach((v, i) => {
      const d = Math.abs(v - want[i]!);
      if (d > w.diff) w = { diff: Math.round(d * 10) / 10, at: `${p.name} ${'YUV'[i]} ${want[i]!.toFixed(1)} -> ${v.toFixed(1)}` };
    });
  }
  return w;
}

describe.each<['hlg' | 'pq', string]>([
  ['hlg', 'arib-std-b67'],
  ['pq', 'smpte2084'],
])('%s 10-bit HEVC', (hdr, transfer) => {
  let src: string;
  let probe: Probe;

  beforeAll(async () => {
    src = await makeClip(at(`${hdr}.mp4`), { width: W, height: H, seconds: 2, picture: 'bars', hdr });
    probe = await probeFile(src, { log });
  }, 60_000);

  it('is probed as HDR, with its colour and side data', () => {
    expect(probe.video).toMatchObject({ codec: 'hevc', pixFmt: 'yuv420p10le', colour: { primaries: 'bt2020', transfer, space: 'bt2020nc', range: 'tv', bitDepth: 10 } });
    expect(sourceRange(probe)).toBe(hdr);
    if (hdr === 'pq') expect(probe.video.hdr).toEqual({ masteringDisplay: { minLuminance: 0.0001, maxLuminance: 1000 }, contentLight: { maxCll: 1000, maxFall: 400 } });
    else expect(probe.video.hdr).toBeUndefined();
  });

  it('is encoded 8-bit BT.709, tagged in the MP4 and the H.264 VUI, each bar within 12 code values', async () => {
    const plan = planMedia(probe, { hasAudio: false, ladder: DEFAULT_LADDER });
    const out = at(`${hdr}-360p.mp4`);
    await runTool('ffmpeg', transcodeArgs({ input: src, output: out, probe, plan, profile: DEFAULT_LADDER.find((r) => r.name === '360p')! }), { log });
    const bt709 = { codec_name: 'h264', pix_fmt: 'yuv420p', color_range: 'tv', color_space: 'bt709', color_transfer: 'bt709', color_primaries: 'bt709' };
    expect(await colourTags(out)).toEqual(bt709);
    // A raw H.264 stream has no MP4 box: what ffprobe reads there is the bitstream's own VUI.
    const raw = at(`${hdr}-360p.h264`);
    await run('ffmpeg', ['-v', 'error', '-i', out, '-c', 'copy', '-f', 'h264', raw]);
    expect(await colourTags(raw)).toEqual(bt709);

    const means = await patchMeans(['-i', out], W, H, PATCHES);
    expectBarsKept(means, original);
    // 100% white is above the knee: rolled off a little, not crushed grey as hable (-84) or reinhard (-48) do.
    const white = original.get('white 100%')![0];
    expect(means.get('white 100%')![0]).toBeGreaterThan(white - 30);
    expect(means.get('white 100%')![0]).toBeGreaterThan(means.get('grey 75%')![0] + 20);
  }, 120_000);

  it('makes a tone-mapped poster: each bar within 12 code values of the SDR poster', async () => {
    const sdr = await makeClip(at(`sdr-${hdr}.mp4`), { width: W, height: H, seconds: 2, picture: 'bars' });
    const sdrProbe = await probeFile(sdr, { log });
    expect(sourceRange(sdrProbe)).toBe('sdr');
    // The poster and the storyboard come from one run; the sheets are scaled the same way, at tile size.
    const plan = storyboardPlan(probe.durationSec, { width: W, height: H });
    await runTool('ffmpeg', thumbnailArgs({ input: src, poster: at(`${hdr}.jpg`), sheets: at(`${hdr}-tile_%d.jpg`), probe, plan }), { log });
    await runTool('ffmpeg', thumbnailArgs({ input: sdr, poster: at(`sdr-${hdr}.jpg`), sheets: at(`sdr-${hdr}-tile_%d.jpg`), probe: sdrProbe, plan }), { log });
    const [poster, sdrPoster] = await Promise.all([patchMeans(['-i', at(`${hdr}.jpg`)], W, H, PATCHES), patchMeans(['-i', at(`sdr-${hdr}.jpg`)], W, H, PATCHES)]);
    // The SDR poster is the reference here: a JPEG is full range BT.601, so its codes are not the video's.
    expectBarsKept(poster, sdrPoster);
  }, 60_000);
});
