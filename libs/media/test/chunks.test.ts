/**
 * Chunked encoding: the plan (where chunks start and end, on the segment grid), the argument arrays, and
 * real FFmpeg runs: chunks encoded on their own and joined by stream copy give the frames, timestamps,
 * keyframes and audio of one encode of the whole source.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ConfigError, createLogger, DEFAULT_LADDER, type MediaPlan, type Probe } from '@mesh/common';
import { makeClip, qualityAgainst, renditionFacts, tempDir } from '@mesh/testkit';
import {
  bt709Filters,
  audioArgs,
  chunkArgs,
  chunkCheckArgs,
  chunkConfig,
  encodeChunkChecked,
  chunkProblem,
  chunkSeekSec,
  concatList,
  joinArgs,
  keyframeExpr,
  parseChunkFacts,
  planChunks,
  planMedia,
  probeFile,
  runTool,
  seekPrerollSec,
  segmentStartFrame,
  transcodeArgs,
  type ChunkRange,
} from '../src/index.ts';

const run = promisify(execFile);
const log = createLogger('test', 'silent');
const rung = DEFAULT_LADDER.find((r) => r.name === '360p')!;

const plan = (num: number, den: number, over: Partial<MediaPlan> = {}): MediaPlan => ({
  renditions: ['360p'],
  sizes: { '360p': { width: 640, height: 360 } },
  frameRate: { num, den },
  segmentSeconds: 4,
  audio: true,
  ...over,
});
const probe = (durationSec: number, formatName = 'mov,mp4,m4a,3gp,3g2,mj2'): Probe => ({
  formatName,
  durationSec,
  sizeBytes: 1000,
  video: { codec: 'h264', width: 640, height: 360, rotation: 0, frameRate: { num: 30, den: 1 }, sampleAspectRatio: { num: 1, den: 1 }, pixFmt: 'yuv420p', interlaced: false },
  audio: { codec: 'aac', channels: 2, sampleRate: 48000 },
});

describe('CHUNK_MIN_SOURCE_SEC and CHUNK_SECONDS', () => {
  it.each<[Record<string, string>, { minSourceSec: number; chunkSeconds: number } | RegExp]>([
    [{}, { minSourceSec: 120, chunkSeconds: 60 }],
    [{ CHUNK_MIN_SOURCE_SEC: '0' }, { minSourceSec: 0, chunkSeconds: 60 }],
    [{ CHUNK_MIN_SOURCE_SEC: '10', CHUNK_SECONDS: '8' }, { minSourceSec: 10, chunkSeconds: 8 }],
    [{ CHUNK_SECONDS: '10' }, /CHUNK_SECONDS must be a multiple of the segment duration \(4 s\).*got 10/],
    [{ CHUNK_SECONDS: '2' }, /CHUNK_SECONDS must be between 4 and 3600/],
    [{ CHUNK_MIN_SOURCE_SEC: '-1' }, /CHUNK_MIN_SOURCE_SEC must be between 0/],
    [{ CHUNK_MIN_SOURCE_SEC: 'long' }, /CHUNK_MIN_SOURCE_SEC must be an integer/],
  ])('%j', (env, want) => {
    if (want instanceof RegExp) {
      expect(() => chunkConfig(env)).toThrow(ConfigError);
      expect(() => chunkConfig(env)).toThrow(want);
    } else expect(chunkConfig(env)).toEqual(want);
  });
});

describe('planChunks', () => {
  const frames = (cs: ChunkRange[] | null) => cs?.map((c) => [c.startFrame, c.endFrame]) ?? null;

  it.each<[string, number, [number, number], { minSourceSec: number; chunkSeconds: number }, [number, number | null][] | null]>([
    ['shorter than the threshold: one piece', 119.9, [30, 1], { minSourceSec: 120, chunkSeconds: 60 }, null],
    ['chunking off', 3600, [30, 1], { minSourceSec: 0, chunkSeconds: 60 }, null],
    ['two minutes at 30 fps: two chunks of 1800 frames, the last to the end', 120, [30, 1], { minSourceSec: 120, chunkSeconds: 60 }, [[0, 1800], [1800, null]]],
    ['a last part under half a chunk goes into the chunk before', 145, [25, 1], { minSourceSec: 120, chunkSeconds: 60 }, [[0, 1500], [1500, null]]],
    ['a last part of half a chunk or more is a chunk', 150, [25, 1], { minSourceSec: 120, chunkSeconds: 60 }, [[0, 1500], [1500, 3000], [3000, null]]],
    // 8 s at 30000/1001 is 239.76 frames: chunks start where segments start (the first frame at or after each 4 s).
    ['29.97 fps: chunk boundaries on the segment starts', 24, [30000, 1001], { minSourceSec: 10, chunkSeconds: 8 }, [[0, 240], [240, 480], [480, null]]],
    ['29.97 fps, late boundaries drift a frame early', 48, [30000, 1001], { minSourceSec: 10, chunkSeconds: 12 }, [[0, 360], [360, 720], [720, 1079], [1079, null]]],
    ['a third of a chunk left over', 40, [30000, 1001], { minSourceSec: 10, chunkSeconds: 12 }, [[0, 360], [360, 720], [720, null]]],
    ['too short for two chunks', 40, [30, 1], { minSourceSec: 10, chunkSeconds: 60 }, null],
  ])('%s', (_name, duration, [num, den], config, want) => {
    expect(frames(planChunks({ durationSec: duration }, plan(num, den), config))).toEqual(want);
  });

  it('numbers the chunks and gives every one the count', () => {
    const cs = planChunks({ durationSec: 3600 }, plan(30, 1), { minSourceSec: 120, chunkSeconds: 60 })!;
    expect(cs).toHaveLength(60);
    expect(cs.map((c) => c.index)).toEqual([...Array(60).keys()]);
    expect(new Set(cs.map((c) => c.count))).toEqual(new Set([60]));
    // Contiguous: each chunk starts where the one before ends.
    for (let i = 1; i < cs.length; i++) expect(cs[i]!.startFrame).toBe(cs[i - 1]!.endFrame);
  });

  it.each<[[number, number], number, number]>([
    [[30, 1], 1, 120],
    [[30000, 1001], 1, 120],
    [[30000, 1001], 9, 1079],
    [[24000, 1001], 3, 288],
    [[25, 1], 15, 1500],
  ])('at %j fps segment %i starts at frame %i', ([num, den], m, frame) => {
    expect(segmentStartFrame(plan(num, den), m)).toBe(frame);
  });
});

describe('seeking into the source', () => {
  it.each<[string, number]>([
    ['mov,mp4,m4a,3gp,3g2,mj2', 1],
    ['matroska,webm', 1],
    ['mpegts', 30],
    ['mpeg', 30],
    ['flv', 30],
  ])('%s: decoding starts %i s before the chunk', (format, preroll) => {
    expect(seekPrerollSec({ formatName: format })).toBe(preroll);
  });

  it('starts the first chunk at the start, the others a preroll before their first frame, never before 0', () => {
    expect(chunkSeekSec(plan(30, 1), 0, 1)).toBe(0);
    expect(chunkSeekSec(plan(30, 1), 1800, 1)).toBe(59);
    expect(chunkSeekSec(plan(30000, 1001), 1079, 1)).toBe(35.002);
    expect(chunkSeekSec(plan(30, 1), 240, 30)).toBe(0);
  });

  it.each<[string, { frames: number; startSec: number | null }, { startFrame: number; endFrame: number | null }, RegExp | null]>([
    ['a whole chunk', { frames: 240, startSec: 0 }, { startFrame: 240, endFrame: 480 }, null],
    ['the last chunk, any length', { frames: 123, startSec: 0 }, { startFrame: 480, endFrame: null }, null],
    ['decoding began after its first frame', { frames: 230, startSec: 0.333 }, { startFrame: 240, endFrame: 480 }, /starts at 0.333 s instead of 0 \(10 frames missing/],
    ['a frame short', { frames: 239, startSec: 0 }, { startFrame: 240, endFrame: 480 }, /holds 239 frames instead of 240/],
    ['an empty last chunk', { frames: 0, startSec: null }, { startFrame: 480, endFrame: null }, /no frames/],
    ['an empty middle chunk', { frames: 0, startSec: null }, { startFrame: 240, endFrame: 480 }, /no frames/],
  ])('%s', (_name, facts, chunk, want) => {
    const problem = chunkProblem(facts, chunk, plan(30, 1));
    if (want) expect(problem).toMatch(want);
    else expect(problem).toBeNull();
  });

  it('reads the facts ffprobe gives', () => {
    expect(parseChunkFacts({ streams: [{ nb_frames: '240', start_time: '0.000000' }] })).toEqual({ frames: 240, startSec: 0 });
    // A chunk with no frames has no video stream at all.
    expect(parseChunkFacts({ streams: [] })).toEqual({ frames: 0, startSec: null });
    expect(() => parseChunkFacts({ streams: [{ start_time: '0' }] })).toThrow(/no frame count/);
  });
});

describe('argument arrays', () => {
  const after = (a: string[], flag: string) => a[a.indexOf(flag) + 1];
  const p = probe(24);
  const url = 'https://s3.example/in/a.mp4?X-Amz-Signature=abc';

  it('forces keyframes where segments start, counted from the chunk\'s first frame', () => {
    expect(keyframeExpr(plan(30, 1))).toBe('expr:lt(floor((n-1)*1/120),floor(n*1/120))');
    expect(keyframeExpr(plan(30, 1), 240)).toBe('expr:lt(floor((n+239)*1/120),floor((n+240)*1/120))');
    expect(keyframeExpr(plan(30000, 1001), 1)).toBe('expr:lt(floor(n*1001/120000),floor((n+1)*1001/120000))');
  });

  it.each<[string, ChunkRange, number, Record<string, string>, string[]]>([
    [
      'the first chunk: from the start, padded from 0 like the whole encode',
      { part: 'video', index: 0, count: 3, startFrame: 0, endFrame: 240 },
      0,
      { '-t': '9.000', '-vf': 'fps=30/1:start_time=0,trim=end_pts=240,setpts=PTS-0,scale=640:360:in_color_matrix=smpte170m:out_color_matrix=bt709:out_range=tv,setsar=1,format=yuv420p', '-fps_mode': 'passthrough', '-force_key_frames': 'expr:lt(floor((n-1)*1/120),floor(n*1/120))' },
      ['-ss', '-copyts'],
    ],
    [
      'a middle chunk: seeks, keeps the source clock, trims its frames',
      { part: 'video', index: 1, count: 3, startFrame: 240, endFrame: 480 },
      7,
      { '-ss': '7.000', '-t': '10.000', '-vf': 'fps=30/1,trim=start_pts=240:end_pts=480,setpts=PTS-240,scale=640:360:in_color_matrix=smpte170m:out_color_matrix=bt709:out_range=tv,setsar=1,format=yuv420p', '-force_key_frames': 'expr:lt(floor((n+239)*1/120),floor((n+240)*1/120))' },
      ['-r'],
    ],
    [
      'the last chunk: to the end, decoding bounded as the whole encode is',
      { part: 'video', index: 2, count: 3, startFrame: 480, endFrame: null },
      15,
      { '-ss': '15.000', '-t': '13.480', '-vf': 'fps=30/1,trim=start_pts=480,setpts=PTS-480,scale=640:360:in_color_matrix=smpte170m:out_color_matrix=bt709:out_range=tv,setsar=1,format=yuv420p' },
      [],
    ],
  ])('%s', (_name, chunk, seekSec, pairs, absent) => {
    const a = chunkArgs({ input: url, ifMatch: '"e"', output: '/o/c.mp4', probe: p, plan: plan(30, 1), profile: rung, chunk, seekSec });
    for (const [flag, value] of Object.entries(pairs)) expect(after(a, flag), flag).toBe(value);
    for (const flag of absent) expect(a).not.toContain(flag);
    // Input options before -i; video only into the chunk, the audio read along (copied to nowhere) so the clock is the whole encode's.
    for (const flag of ['-protocol_whitelist', '-headers', '-t', ...(seekSec > 0 ? ['-ss', '-copyts', '-start_at_zero'] : [])]) expect(a.indexOf(flag), flag).toBeLessThan(a.indexOf('-i'));
    expect(a.slice(a.indexOf('/o/c.mp4'))).toEqual(['/o/c.mp4', '-map', '0:a:0', '-c', 'copy', '-f', 'null', '-']);
    expect(a.slice(a.indexOf('-i'), a.indexOf('/o/c.mp4'))).toEqual(expect.arrayContaining(['-map', '0:v:0', '-an', '-g', '120', '-keyint_min', '120', '-sc_threshold', '0', '-b:v', '800k']));
  });

  it('reads no audio along when the rendition has none', () => {
    const a = chunkArgs({ input: '/in/src', output: '/o/c.mp4', probe: p, plan: plan(30, 1, { audio: false }), profile: rung, chunk: { startFrame: 240, endFrame: 480 }, seekSec: 7 });
    expect(a.at(-1)).toBe('/o/c.mp4');
    expect(a).not.toContain('0:a:0');
  });

  it('encodes the audio of the whole source once, reading the video along', () => {
    const a = audioArgs({ input: url, output: '/o/audio.mp4', probe: p, profile: rung });
    expect(after(a, '-t')).toBe('28.480');
    expect(a.slice(a.indexOf('-i'), a.indexOf('/o/audio.mp4'))).toEqual(expect.arrayContaining(['-map', '0:a:0', '-vn', '-c:a', 'aac', '-b:a', '128k', '-ac', '2', '-ar', '48000']));
    expect(a.slice(a.indexOf('/o/audio.mp4'))).toEqual(['/o/audio.mp4', '-map', '0:v:0', '-c', 'copy', '-f', 'null', '-']);
  });

  it('joins by stream copy, our own MP4s only, audio muxed in', () => {
    const a = joinArgs({ list: '/t/list.txt', audio: '/t/audio.mp4', output: '/t/720p.mp4' });
    expect(a.slice(a.indexOf('-f'), a.indexOf('/t/list.txt') + 1)).toEqual(['-f', 'concat', '-safe', '1', '-i', '/t/list.txt']);
    expect(after(a, '-protocol_whitelist')).toBe('file');
    expect(after(a, '-format_whitelist')).toBe('concat,mov,mp4,m4a,3gp,3g2,mj2');
    expect(after(a, '-codec_whitelist')).toBe('h264,aac');
    expect(a).toEqual(expect.arrayContaining(['-map', '0:v:0', '-map', '1:a:0', '-c', 'copy']));
    expect(joinArgs({ list: '/t/list.txt', output: '/t/o.mp4' })).not.toContain('1:a:0');
  });

  it('writes a concat list of plain names, and refuses anything else', () => {
    expect(concatList(['0.mp4', '1.mp4'])).toBe('ffconcat version 1.0\nfile 0.mp4\nfile 1.mp4\n');
    for (const bad of ['../x.mp4', '/etc/passwd', 'a b.mp4', "a'.mp4", '.hidden', 'x\nfile /etc/passwd']) expect(() => concatList([bad])).toThrow(/plain file name/);
  });

  it('checks a chunk with ffprobe on our own MP4 only', () => {
    expect(chunkCheckArgs('/t/0.mp4')).toEqual(expect.arrayContaining(['-protocol_whitelist', 'file', '-select_streams', 'v:0', '-show_entries', 'stream=nb_frames,start_time']));
  });
});

describe('chunks joined against one encode (real FFmpeg)', () => {
  let dir: { path: string; remove(): Promise<void> };
  const at = (name: string) => join(dir.path, name);
  beforeAll(async () => {
    dir = await tempDir('chunks');
  });
  afterAll(() => dir.remove());

  /** Encodes `src` whole and in chunks of 4 s, joins the chunks; returns both renditions' facts and quality. */
  async function encodeBoth(src: string, name: string, o: { soughtAsMp4?: boolean } = {}) {
    const pr = await probeFile(src, { log });
    const pl = planMedia(pr, { hasAudio: true, ladder: DEFAULT_LADDER, requested: ['360p'] });
    const chunks = planChunks(pr, pl, { minSourceSec: 4, chunkSeconds: 4 })!;
    await runTool('ffmpeg', transcodeArgs({ input: src, output: at(`${name}-whole.mp4`), probe: pr, plan: pl, profile: rung }), { log });
    const files: string[] = [];
    let fallbacks = 0;
    for (const chunk of chunks) {
      const file = `${name}-${chunk.index}.mp4`;
      // What the transcoder runs: a chunk whose seek missed its first frames is encoded again from the start.
      const { tries } = await encodeChunkChecked(chunk, {
        plan: pl,
        // Sought as if it were an MP4 (1 s before the chunk), the MPEG-TS lands after the keyframe a chunk needs.
        probe: o.soughtAsMp4 ? { formatName: 'mov' } : pr,
        output: at(file),
        log,
        encode: (seekSec) => runTool('ffmpeg', chunkArgs({ input: src, output: at(file), probe: pr, plan: pl, profile: rung, chunk, seekSec }), { log }),
      });
      fallbacks += tries - 1;
      files.push(file);
    }
    await runTool('ffmpeg', audioArgs({ input: src, output: at(`${name}-audio.mp4`), probe: pr, profile: rung }), { log });
    await writeFile(at(`${name}-list.txt`), concatList(files));
    await runTool('ffmpeg', joinArgs({ list: at(`${name}-list.txt`), audio: at(`${name}-audio.mp4`), output: at(`${name}-joined.mp4`) }), { log });
    const size = pl.sizes['360p']!;
    const rate = `${pl.frameRate.num}/${pl.frameRate.den}`;
    const [joinedQ, wholeQ] = await qualityAgainst([at(`${name}-joined.mp4`), at(`${name}-whole.mp4`)], src, { picture: bt709Filters(pr, `${size.width}:${size.height}`), rate, audio: true });
    return {
      plan: pl,
      chunks,
      fallbacks,
      whole: await renditionFacts(at(`${name}-whole.mp4`)),
      joined: await renditionFacts(at(`${name}-joined.mp4`)),
      wholeQ: wholeQ!,
      joinedQ: joinedQ!,
    };
  }

  function expectSameStructure(r: Awaited<ReturnType<typeof encodeBoth>>) {
    const { plan: pl, whole, joined } = r;
    const frame = pl.frameRate.den / pl.frameRate.num;
    expect(joined.frames).toBe(whole.frames);
    // Continuous: frame n at n / rate, from 0, no gap or repeat at the joins.
    joined.pts.forEach((t, n) => expect(Math.abs(t - n * frame), `frame ${n}`).toBeLessThan(frame / 4));
    // Keyframes exactly where segments start, the same as the whole encode's.
    const starts = [...Array(Math.ceil(whole.frames / (4 / frame)) + 1).keys()].map((m) => segmentStartFrame(pl, m)).filter((f) => f < whole.frames);
    expect(joined.keyframes).toEqual(starts);
    expect(whole.keyframes).toEqual(starts);
    expect(Math.abs(joined.videoDurationSec - joined.audioDurationSec!)).toBeLessThan(frame);
    expect(Math.abs(joined.audioDurationSec! - whole.audioDurationSec!)).toBeLessThan(0.001);
    // Within 0.3 dB PSNR or 0.005 SSIM: with 4 s chunks the rate control starts over every 4 s, which costs
    // the 360p about 0.4 dB PSNR here (0.04 dB at 720p with 8 s chunks) and a few ten-thousandths of SSIM.
    expect(Math.abs(r.joinedQ.ssim - r.wholeQ.ssim)).toBeLessThan(0.005);
    expect(Math.abs(r.joinedQ.psnr - r.wholeQ.psnr)).toBeLessThan(1);
    // Aligned with the source: a frame off would be far below.
    expect(r.joinedQ.psnr).toBeGreaterThan(35);
  }

  it('an MP4 at 29.97 fps: same frames, timestamps, keyframes, audio and quality', async () => {
    const src = await makeClip(at('src.mp4'), { width: 640, height: 360, seconds: 13, fps: 30000 / 1001, audio: true });
    const r = await encodeBoth(src, 'mp4');
    expect(r.chunks.map((c) => [c.startFrame, c.endFrame])).toEqual([[0, 120], [120, 240], [240, null]]);
    expect(r.fallbacks).toBe(0);
    expectSameStructure(r);
  }, 120_000);

  it('an MPEG-TS whose audio starts before its video, sought too late at first: caught and encoded again from the start', async () => {
    const mp4 = await makeClip(at('ts-src.mp4'), { width: 640, height: 360, seconds: 12, audio: true });
    await run('ffmpeg', ['-hide_banner', '-v', 'error', '-y', '-i', mp4, '-c', 'copy', '-f', 'mpegts', at('src.ts')]);
    // The clip has one GOP of 250 frames: a seek 1 s before a later chunk lands after the keyframe it needs.
    const r = await encodeBoth(at('src.ts'), 'ts', { soughtAsMp4: true });
    expect(r.fallbacks).toBe(2);
    expectSameStructure(r);
  }, 120_000);
});
