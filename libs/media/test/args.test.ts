import { describe, expect, it } from 'vitest';
import { ConfigError, type MediaPlan, type Probe } from '@mesh/common';
import {
  ALLOWED_DECODERS,
  deathBoundCommand,
  decodeStopSec,
  durationSlackSec,
  ffprobeArgs,
  gopFrames,
  inputGuard,
  outputFrameRate,
  outputSize,
  packagerArgs,
  packagerBudgetMs,
  parseProbe,
  planMedia,
  setBaseUrl,
  setThumbnailTrack,
  storyboardInterval,
  storyboardPlan,
  storyboardVtt,
  thumbnailAdaptationSet,
  thumbnailArgs,
  thumbnailTime,
  timeFactorConfig,
  toolBudgetMs,
  transcodeArgs,
  BT709_TAGS,
  sourceRange,
  X264_BT709_VUI,
} from '../src/index.ts';
import { DEFAULT_LADDER, Probe as ProbeSchema, WEB_LADDER } from '@mesh/common';

const rungOf = (name: string) => DEFAULT_LADDER.find((r) => r.name === name)!;

type Colour = Probe['video']['colour'];
type Hdr = Probe['video']['hdr'];

function probe(width: number, height: number, more: { rotation?: number; fps?: [number, number]; audio?: boolean; interlaced?: boolean; sar?: [number, number]; colour?: Colour; hdr?: Hdr } = {}): Probe {
  const [num, den] = more.fps ?? [30, 1];
  return {
    formatName: 'mov,mp4,m4a,3gp,3g2,mj2',
    durationSec: 10,
    sizeBytes: 1000,
    video: { codec: 'h264', width, height, rotation: more.rotation ?? 0, frameRate: { num, den }, sampleAspectRatio: { num: more.sar?.[0] ?? 1, den: more.sar?.[1] ?? 1 }, pixFmt: 'yuv420p', interlaced: more.interlaced ?? false, colour: more.colour, hdr: more.hdr },
    audio: more.audio === false ? null : { codec: 'aac', channels: 2, sampleRate: 48000 },
  };
}

const plan = (over: Partial<MediaPlan> = {}): MediaPlan => ({
  renditions: ['720p', '360p'],
  sizes: { '720p': { width: 1280, height: 720 }, '360p': { width: 640, height: 360 } },
  frameRate: { num: 30, den: 1 },
  segmentSeconds: 4,
  audio: true,
  ...over,
});

describe('outputSize', () => {
  it.each<[string, Probe, [number, number], [number, number]]>([
    ['16:9 landscape', probe(1920, 1080), [1280, 720], [640, 360]],
    ['4:3 landscape', probe(1440, 1080), [960, 720], [480, 360]],
    ['9:16 portrait', probe(1080, 1920), [720, 1280], [360, 640]],
    ['coded 1920x1080 rotated 90: upright portrait', probe(1920, 1080, { rotation: 90 }), [720, 1280], [360, 640]],
    ['rotated 180 stays landscape', probe(1920, 1080, { rotation: 180 }), [1280, 720], [640, 360]],
    ['odd 853x479', probe(853, 479), [1282, 720], [642, 360]],
    ['square', probe(1000, 1000), [720, 720], [360, 360]],
    ['PAL DV 720x576 with 16:15 pixels shows 4:3', probe(720, 576, { sar: [16, 15] }), [960, 720], [480, 360]],
    ['anamorphic 1440x1080 with 4:3 pixels shows 16:9', probe(1440, 1080, { sar: [4, 3] }), [1280, 720], [640, 360]],
  ])('%s', (_name, p, hd, sd) => {
    expect(outputSize(p, 720)).toEqual({ width: hd[0], height: hd[1] });
    expect(outputSize(p, 360)).toEqual({ width: sd[0], height: sd[1] });
  });
});

describe('planMedia', () => {
  it.each<[string, Probe, boolean, MediaPlan['renditions'], boolean]>([
    ['1080p with audio', probe(1920, 1080), true, ['720p', '360p'], true],
    ['720p source', probe(1280, 720), true, ['720p', '360p'], true],
    ['480p source: no upscale to 720p', probe(854, 480), true, ['360p'], true],
    ['has_audio false drops the audio', probe(1920, 1080), false, ['720p', '360p'], false],
    ['no audio stream despite has_audio', probe(1920, 1080, { audio: false }), true, ['720p', '360p'], false],
    ['portrait 720x1280', probe(720, 1280), true, ['720p', '360p'], true],
  ])('default ladder: %s', (_name, p, hasAudio, renditions, audio) => {
    expect(planMedia(p, { hasAudio, ladder: DEFAULT_LADDER })).toMatchObject({ renditions, audio, segmentSeconds: 4 });
  });

  // Every rung of the web ladder against the sources phones and cameras make: no rung is larger than the
  // source (the short side is the target, so portrait gets what landscape gets), and a source smaller
  // than every rung gets one rendition at its own size.
  it.each<[string, Probe, [string, number, number][]]>([
    ['4K', probe(3840, 2160), [['1080p', 1920, 1080], ['720p', 1280, 720], ['480p', 854, 480], ['360p', 640, 360], ['240p', 426, 240]]],
    ['1080p', probe(1920, 1080), [['1080p', 1920, 1080], ['720p', 1280, 720], ['480p', 854, 480], ['360p', 640, 360], ['240p', 426, 240]]],
    ['853x479', probe(853, 479), [['360p', 642, 360], ['240p', 428, 240]]],
    ['portrait 1080x1920', probe(1080, 1920), [['1080p', 1080, 1920], ['720p', 720, 1280], ['480p', 480, 854], ['360p', 360, 640], ['240p', 240, 426]]],
    ['320x240', probe(320, 240), [['240p', 320, 240]]],
    ['160x120: smaller than every rung, one rendition at its own size', probe(160, 120), [['240p', 160, 120]]],
  ])('web ladder, %s source', (_name, p, expected) => {
    const pl = planMedia(p, { hasAudio: true, ladder: WEB_LADDER });
    expect(pl.renditions).toEqual(expected.map(([name]) => name));
    expect(pl.sizes).toEqual(Object.fromEntries(expected.map(([name, width, height]) => [name, { width, height }])));
  });

  it('plans only the rungs a job asked for, still without upscaling', () => {
    expect(planMedia(probe(1920, 1080), { hasAudio: true, ladder: WEB_LADDER, requested: ['240p', '1080p'] }).renditions).toEqual(['1080p', '240p']);
    expect(planMedia(probe(1280, 720), { hasAudio: true, ladder: WEB_LADDER, requested: ['1080p'] })).toMatchObject({ renditions: ['1080p'], sizes: { '1080p': { width: 1280, height: 720 } } });
  });

  it('encodes each rung with its own settings, at the size the plan gave it', () => {
    const p = probe(1920, 1080);
    const pl = planMedia(p, { hasAudio: true, ladder: WEB_LADDER });
    for (const rung of WEB_LADDER) {
      const a = transcodeArgs({ input: '/in/src', output: `/out/${rung.name}.mp4`, probe: p, plan: pl, profile: rung });
      const at = (flag: string) => a[a.indexOf(flag) + 1];
      expect(at('-preset')).toBe(rung.preset);
      expect(at('-profile:v')).toBe(rung.profile);
      expect([at('-b:v'), at('-maxrate'), at('-bufsize'), at('-b:a')]).toEqual([`${rung.videoKbps}k`, `${rung.maxKbps}k`, `${rung.bufKbps}k`, `${rung.audioKbps}k`]);
      expect(at('-vf')).toContain(`scale=${pl.sizes[rung.name]!.width}:${pl.sizes[rung.name]!.height}`);
    }
  });
});

describe('outputFrameRate and GOP', () => {
  it.each<[[number, number], [number, number]]>([
    [[30, 1], [30, 1]],
    [[30000, 1001], [30000, 1001]],
    [[2997, 100], [30000, 1001]],
    [[25, 1], [25, 1]],
    [[120, 1], [60, 1]],
    [[240, 1], [60, 1]],
    [[1792, 60], [30000, 1001]], // a 29.87 fps VFR average snaps to the closest standard rate
    [[17, 1], [17, 1]],
    [[0, 1], [30, 1]],
  ])('%j -> %j', ([num, den], [onum, oden]) => {
    expect(outputFrameRate({ num, den })).toEqual({ num: onum, den: oden });
  });

  it.each<[[number, number], number]>([
    [[30, 1], 120],
    [[25, 1], 100],
    [[30000, 1001], 120],
    [[60, 1], 240],
  ])('a 4 s segment at %j fps is %i frames', ([num, den], frames) => {
    expect(gopFrames(plan({ frameRate: { num, den } }))).toBe(frames);
  });
});

describe('transcodeArgs', () => {
  const args = (p: Probe, pl: MediaPlan) => transcodeArgs({ input: '/in/src', output: '/out/720p.mp4', probe: p, plan: pl, profile: rungOf('720p') });
  const after = (a: string[], flag: string) => a[a.indexOf(flag) + 1];

  it('restricts the input before -i, to local files in real video containers', () => {
    const a = args(probe(1920, 1080), plan());
    expect(a.indexOf('-protocol_whitelist')).toBeLessThan(a.indexOf('-i'));
    expect(after(a, '-protocol_whitelist')).toBe('file');
    expect(after(a, '-format_whitelist')).toContain('mov,mp4');
    expect(after(a, '-format_whitelist')).not.toContain('hls');
  });

  it('lets a presigned URL be read over HTTP(S) only, never a local file, and reconnects', () => {
    const a = transcodeArgs({ input: 'https://s3.example/work/jobs/1/source?X-Amz-Signature=abc', output: '/out/720p.mp4', probe: probe(1920, 1080), plan: plan(), profile: rungOf('720p') });
    expect(after(a, '-protocol_whitelist')).toBe('http,https,tcp,tls');
    expect(after(a, '-reconnect')).toBe('1');
    expect(a.indexOf('-reconnect')).toBeLessThan(a.indexOf('-i'));
    expect(args(probe(1920, 1080), plan())).not.toContain('-reconnect');
  });

  it('aligns keyframes to the segment: fixed GOP, no scene cut, forced boundaries, constant rate', () => {
    const a = args(probe(1920, 1080), plan());
    expect(after(a, '-g')).toBe('120');
    expect(after(a, '-keyint_min')).toBe('120');
    expect(after(a, '-sc_threshold')).toBe('0');
    expect(after(a, '-x264-params')).toContain('scenecut=0');
    // Frame n is a keyframe when a segment starts at it: the first frame at or after each 4 s.
    expect(after(a, '-force_key_frames')).toBe('expr:lt(floor((n-1)*1/120),floor(n*1/120))');
    expect(after(a, '-r')).toBe('30/1');
    expect(after(a, '-fps_mode')).toBe('cfr');
    expect(after(a, '-vf')).toBe('fps=30/1:start_time=0,scale=1280:720:in_color_matrix=bt709:out_color_matrix=bt709:out_range=tv,setsar=1,format=yuv420p');
    expect(a.at(-1)).toBe('/out/720p.mp4');
  });

  it.each<[string, boolean, string[], string[]]>([
    ['with audio', true, ['-map', '0:a:0', '-c:a', 'aac'], ['-an']],
    ['without audio', false, ['-an'], ['0:a:0', 'aac']],
  ])('%s', (_name, audio, present, absent) => {
    const a = args(probe(1920, 1080), plan({ audio }));
    for (const p of present) expect(a).toContain(p);
    for (const p of absent) expect(a).not.toContain(p);
  });

  it('deinterlaces only interlaced sources', () => {
    expect(args(probe(1920, 1080, { interlaced: true }), plan()).join(' ')).toContain('yadif');
    expect(args(probe(1920, 1080), plan()).join(' ')).not.toContain('yadif');
  });

  it('scales a rotated source to its upright size', () => {
    const p = probe(1920, 1080, { rotation: 270 });
    const a = args(p, planMedia(p, { hasAudio: true, ladder: DEFAULT_LADDER }));
    expect(after(a, '-vf')).toContain('scale=720:1280');
  });
});

describe('inputGuard', () => {
  const url = 'https://s3.example/in/a.mp4?X-Amz-Signature=abc';
  const after = (a: string[], flag: string) => a[a.indexOf(flag) + 1];

  it.each<[string, string[], string, string[], string[]]>([
    // name, built args, input, present flag -> value pairs (flattened), absent flags
    ['a local file', inputGuard('/in/src'), '/in/src', ['-protocol_whitelist', 'file'], ['-rw_timeout', '-headers', '-reconnect']],
    ['a URL', inputGuard(url), url, ['-protocol_whitelist', 'http,https,tcp,tls', '-rw_timeout', '30000000', '-reconnect', '1'], ['-headers']],
    ['a URL with a stall timeout', inputGuard(url, { readTimeoutMs: 1500 }), url, ['-rw_timeout', '1500000'], ['-headers']],
    ['a pinned URL', inputGuard(url, { ifMatch: '"9b2cf535f27731c974343645a3985328"' }), url, ['-headers', 'If-Match: "9b2cf535f27731c974343645a3985328"\r\n'], []],
    ['a local file ignores the pin', inputGuard('/in/src', { ifMatch: '"abc"' }), '/in/src', [], ['-headers']],
  ])('%s', (_name, a, _input, present, absent) => {
    for (let i = 0; i < present.length; i += 2) expect(after(a, present[i]!)).toBe(present[i + 1]);
    for (const flag of absent) expect(a).not.toContain(flag);
    expect(after(a, '-codec_whitelist')).toBe(ALLOWED_DECODERS.join(','));
  });

  it('allows the decoders Debian picks for the codecs we convert, and nothing exotic', () => {
    const list = after(inputGuard('/in/src'), '-codec_whitelist')!.split(',');
    // FFmpeg 5.1 picks the first decoder of a codec and checks its name: AV1 is libdav1d, MP3 mp3float.
    expect(list).toEqual(expect.arrayContaining(['h264', 'hevc', 'vp9', 'libdav1d', 'mpeg2video', 'aac', 'mp3float', 'opus', 'mov_text']));
    for (const exotic of ['ffv1', 'cinepak', 'gif', 'apng', 'libzvbi_teletextdec', 'hap']) expect(list).not.toContain(exotic);
  });

  it.each(['"abc"\r\nX-Evil: 1', 'abc', '"a"b"', '""', '"\u00e9"'])('refuses %j as an If-Match header value', (ifMatch) => {
    expect(() => inputGuard(url, { ifMatch })).toThrow(/quoted ETag/);
  });

  it('puts every input option before -i, for ffprobe too', () => {
    const a = transcodeArgs({ input: url, ifMatch: '"e"', output: '/o.mp4', probe: probe(1920, 1080), plan: plan(), profile: rungOf('720p') });
    for (const flag of ['-codec_whitelist', '-rw_timeout', '-headers', '-t']) expect(a.indexOf(flag)).toBeLessThan(a.indexOf('-i'));
    const p = ffprobeArgs(url, { ifMatch: '"e"' });
    for (const flag of ['-codec_whitelist', '-rw_timeout', '-headers']) expect(p.indexOf(flag)).toBeLessThan(p.indexOf(url));
  });
});

describe('bounds', () => {
  it.each<[number, number, number]>([
    // declared duration, slack, where decoding stops
    [10, 2.1, 14.2],
    [0.5, 2.005, 4.51],
    [3600, 38, 3676],
  ])('a source declaring %f s may decode %f s more and is stopped at %f s', (declared, slack, stop) => {
    expect(durationSlackSec(declared)).toBeCloseTo(slack, 6);
    expect(decodeStopSec(declared)).toBeCloseTo(stop, 6);
  });

  it('stops decoding past the declared duration with an input -t, in encodes and thumbnails', () => {
    const p = { ...probe(1920, 1080), durationSec: 10 };
    for (const a of [transcodeArgs({ input: '/in/src', output: '/o.mp4', probe: p, plan: plan(), profile: rungOf('360p') }), thumbnailArgs({ input: '/in/src', poster: '/t.jpg', sheets: '/tile_%d.jpg', probe: p, plan: storyboardPlan(10, { width: 1920, height: 1080 }) })]) {
      const t = a.indexOf('-t');
      expect(a[t + 1]).toBe('14.200');
      expect(t).toBeLessThan(a.indexOf('-i'));
      expect(a.lastIndexOf('-t')).toBe(t);
    }
  });

  it.each<[string, number, number]>([
    ['a 10 s encode at factor 20', toolBudgetMs(10, 20), 260_000],
    ['a 4 h encode at factor 20', toolBudgetMs(4 * 3600, 20), 60_000 + 288_000_000],
    ['the poster and storyboard of a 600 s video (decoded through)', toolBudgetMs(600, 20), 12_060_000],
    ['packaging 5 MB', packagerBudgetMs(5_000_000), 65_000],
  ])('%s gets %i ms', (_name, got, want) => {
    expect(got).toBe(want);
  });

  it.each<[Record<string, string>, number | RegExp]>([
    [{}, 20],
    [{ FFMPEG_TIME_FACTOR: '50' }, 50],
    [{ FFMPEG_TIME_FACTOR: '0' }, /FFMPEG_TIME_FACTOR must be between 1 and 1000/],
    [{ FFMPEG_TIME_FACTOR: 'fast' }, /FFMPEG_TIME_FACTOR must be an integer/],
  ])('FFMPEG_TIME_FACTOR from %j', (env, want) => {
    if (typeof want === 'number') expect(timeFactorConfig(env)).toBe(want);
    else {
      expect(() => timeFactorConfig(env)).toThrow(ConfigError);
      expect(() => timeFactorConfig(env)).toThrow(want);
    }
  });

  it.each<[string, string | null, [string, string[]]]>([
    ['with setpriv: the tool gets SIGKILL when its parent dies', '/usr/bin/setpriv', ['/usr/bin/setpriv', ['--pdeathsig', 'KILL', '--', 'ffmpeg', '-i', 'x']]],
    ['without setpriv (not Linux): the tool itself', null, ['ffmpeg', ['-i', 'x']]],
  ])('%s', (_name, setpriv, want) => {
    expect(deathBoundCommand('ffmpeg', ['-i', 'x'], setpriv)).toEqual(want);
  });
});

describe('thumbnail', () => {
  it.each([
    [60, 1],
    [2, 1],
    [1.5, 0.75],
    [0.4, 0.2],
  ])('a %f s video is shot at %f s', (duration, at) => {
    expect(thumbnailTime(duration)).toBe(at);
  });

  it('decodes once and splits the picture: one poster frame at the shot time, and the planned sheets of tiles', () => {
    const p = { ...probe(1920, 1080), durationSec: 61 };
    const sb = storyboardPlan(61, { width: 1920, height: 1080 });
    const a = thumbnailArgs({ input: '/in/src', poster: '/out/t.jpg', sheets: '/out/tile_%d.jpg', probe: p, plan: sb });
    const after = (flag: string, from = 0) => a[a.indexOf(flag, from) + 1];
    expect(a.filter((x) => x === '-i')).toHaveLength(1);
    expect(a).not.toContain('-ss');
    expect(a.indexOf('-skip_frame')).toBeLessThan(a.indexOf('-i'));
    expect(after('-filter_complex')).toBe(
      "[0:v:0]split=2[p][s];[p]trim=start=1.000:duration=0.001,scale='min(640,iw)':-2:in_color_matrix=bt709:out_color_matrix=bt709:out_range=tv,setsar=1,format=yuv420p,scale=in_color_matrix=bt709:in_range=tv:out_color_matrix=bt601:out_range=pc,format=yuvj420p[poster];" +
        '[s]fps=fps=1/2:round=up,tpad=stop_mode=clone:stop_duration=62,scale=160:90:in_color_matrix=bt709:out_color_matrix=bt709:out_range=tv,setsar=1,format=yuv420p,scale=in_color_matrix=bt709:in_range=tv:out_color_matrix=bt601:out_range=pc,format=yuvj420p,tile=5x5[sheets]',
    );
    // The poster: one frame to its file; the sheets: exactly as many as planned, numbered from 1.
    const poster = a.indexOf('[poster]');
    expect(a.slice(poster - 1, a.indexOf('/out/t.jpg') + 1)).toEqual(['-map', '[poster]', '-frames:v', '1', '-q:v', '3', '-f', 'image2', '-update', '1', '/out/t.jpg']);
    expect(a.slice(a.indexOf('[sheets]') - 1)).toEqual(['-map', '[sheets]', '-frames:v', String(sb.sheets), '-q:v', '5', '-f', 'image2', '-start_number', '1', '/out/tile_%d.jpg']);
    expect(sb.sheets).toBe(2);
    expect(a).toEqual(expect.arrayContaining(['-protocol_whitelist', 'file']));
  });

  it('shoots a short video in its middle, and scales tiles of a portrait video to its upright shape', () => {
    const p = { ...probe(1080, 1920), durationSec: 1.5 };
    const graph = thumbnailArgs({ input: '/in/src', poster: '/p.jpg', sheets: '/s_%d.jpg', probe: p, plan: storyboardPlan(1.5, { width: 1080, height: 1920 }) }).find((x) => x.startsWith('[0:v:0]'))!;
    expect(graph).toContain('trim=start=0.750:duration=0.001,');
    expect(graph).toMatch(/scale=160:284:[^,]*,setsar=1,.*,format=yuvj420p,tile=1x1\[sheets\]$/);
  });

  it.each(['/out/tile.jpg', '/out/%s_%d.jpg', '/out/100%/tile_%d.jpg'])('refuses %j as the sheets pattern', (sheets) => {
    expect(() => thumbnailArgs({ input: '/in/src', poster: '/p.jpg', sheets, probe: probe(640, 360), plan: storyboardPlan(10, { width: 640, height: 360 }) })).toThrow(/one %d/);
  });
});

describe('storyboard', () => {
  it.each<[number, number]>([
    [0.4, 2],
    [9, 2],
    [200, 2],
    [201, 3],
    [600, 6],
    [1000, 10],
    [4 * 3600, 10],
  ])('a %f s video gets a tile every %i s', (duration, interval) => {
    expect(storyboardInterval(duration)).toBe(interval);
  });

  // duration, display size -> tile size, columns x rows, tiles, sheets
  it.each<[string, number, [number, number], [number, number], [number, number], number, number]>([
    ['a 9 s 1080p clip: one row of five', 9, [1920, 1080], [160, 90], [5, 1], 5, 1],
    ['60 s: 30 tiles on two 5x5 sheets', 60, [1920, 1080], [160, 90], [5, 5], 30, 2],
    ['exactly 50 s: 25 tiles, one sheet', 50, [1920, 1080], [160, 90], [5, 5], 25, 1],
    ['a millisecond over 50 s gets its tile and its sheet', 50.001, [1920, 1080], [160, 90], [5, 5], 26, 2],
    ['under half a millisecond over is the same 50 s', 50.0004, [1920, 1080], [160, 90], [5, 5], 25, 1],
    ['a 0.4 s clip: one tile', 0.4, [1280, 720], [160, 90], [1, 1], 1, 1],
    ['7 tiles: a 5x2 sheet', 13, [1280, 720], [160, 90], [5, 2], 7, 1],
    ['4:3', 9, [640, 480], [160, 120], [5, 1], 5, 1],
    ['odd 853x479: even height', 9, [853, 479], [160, 90], [5, 1], 5, 1],
    ['portrait', 9, [1080, 1920], [160, 284], [5, 1], 5, 1],
    ['a very tall picture: at most 320 high, narrower', 9, [100, 1000], [32, 320], [5, 1], 5, 1],
    ['10 minutes: one every 6 s', 600, [1920, 1080], [160, 90], [5, 5], 100, 4],
    ['4 hours: one every 10 s', 4 * 3600, [1920, 1080], [160, 90], [5, 5], 1440, 58],
  ])('%s', (_name, duration, [width, height], [tileWidth, tileHeight], [columns, rows], tiles, sheets) => {
    expect(storyboardPlan(duration, { width, height })).toEqual({ durationSec: duration, intervalSec: storyboardInterval(duration), tileWidth, tileHeight, columns, rows, tiles, sheets });
  });

  it('refuses a duration that is not positive', () => {
    expect(() => storyboardPlan(0, { width: 640, height: 360 })).toThrow(/positive/);
  });

  it('writes a WebVTT cue per tile, pointing into its sheet', () => {
    expect(storyboardVtt(storyboardPlan(9, { width: 1280, height: 720 }), (n) => `tile_${n}.jpg`)).toBe(
      [
        'WEBVTT',
        '',
        '00:00:00.000 --> 00:00:02.000\ntile_1.jpg#xywh=0,0,160,90',
        '',
        '00:00:02.000 --> 00:00:04.000\ntile_1.jpg#xywh=160,0,160,90',
        '',
        '00:00:04.000 --> 00:00:06.000\ntile_1.jpg#xywh=320,0,160,90',
        '',
        '00:00:06.000 --> 00:00:08.000\ntile_1.jpg#xywh=480,0,160,90',
        '',
        '00:00:08.000 --> 00:00:09.000\ntile_1.jpg#xywh=640,0,160,90',
        '',
      ].join('\n'),
    );
  });

  it.each<[number, [number, number]]>([
    [61, [1920, 1080]],
    [50.001, [1080, 1920]],
    [4 * 3600 + 0.5, [1280, 720]],
  ])('the cues of a %f s video follow one another from 0 to its end, each inside a sheet that exists', (duration, [width, height]) => {
    const sb = storyboardPlan(duration, { width, height });
    const cues = [...storyboardVtt(sb, (n) => `tile_${n}.jpg`).matchAll(/(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})\ntile_(\d+)\.jpg#xywh=(\d+),(\d+),(\d+),(\d+)/g)].map((m) => {
      const n = m.slice(1).map(Number);
      return { start: n[0]! * 3600 + n[1]! * 60 + n[2]! + n[3]! / 1000, end: n[4]! * 3600 + n[5]! * 60 + n[6]! + n[7]! / 1000, sheet: n[8]!, x: n[9]!, y: n[10]!, w: n[11]!, h: n[12]! };
    });
    expect(cues).toHaveLength(sb.tiles);
    expect(cues[0]!.start).toBe(0);
    expect(cues.at(-1)!.end).toBeCloseTo(duration, 3);
    for (const [i, c] of cues.entries()) {
      if (i > 0) expect(c.start).toBe(cues[i - 1]!.end);
      expect(c.end).toBeGreaterThan(c.start);
      expect(c.sheet).toBeGreaterThanOrEqual(1);
      expect(c.sheet).toBeLessThanOrEqual(sb.sheets);
      expect([c.w, c.h]).toEqual([sb.tileWidth, sb.tileHeight]);
      expect(c.x + c.w).toBeLessThanOrEqual(sb.columns * sb.tileWidth);
      expect(c.y + c.h).toBeLessThanOrEqual(sb.rows * sb.tileHeight);
    }
    // Every sheet is named by some cue: none is made for nothing.
    expect(new Set(cues.map((c) => c.sheet)).size).toBe(sb.sheets);
  });

  const mpd = `<?xml version="1.0" encoding="UTF-8"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT61S">\n  <Period id="0">\n    <AdaptationSet id="0" contentType="video">\n    </AdaptationSet>\n  </Period>\n</MPD>\n`;
  const set = thumbnailAdaptationSet(storyboardPlan(61, { width: 1920, height: 1080 }), { media: 'job.1/thumbs/tile_$Number$.jpg', maxSheetBytes: 62_500 });

  it('is a DASH-IF thumbnail-tile image AdaptationSet listing exactly the sheets there are', () => {
    expect(set).toBe(
      [
        '    <AdaptationSet contentType="image" mimeType="image/jpeg">',
        '      <SegmentTemplate media="job.1/thumbs/tile_$Number$.jpg" timescale="1" startNumber="1">',
        '        <SegmentTimeline>',
        '          <S t="0" d="50" r="1"/>',
        '        </SegmentTimeline>',
        '      </SegmentTemplate>',
        // 62 500 bytes every 50 s: 10 000 bit/s; the sprite is 5 tiles across and down.
        '      <Representation id="thumbnails" bandwidth="10000" width="800" height="450">',
        '        <EssentialProperty schemeIdUri="http://dashif.org/thumbnail_tile" value="5x5"/>',
        '      </Representation>',
        '    </AdaptationSet>',
      ].join('\n'),
    );
    expect(thumbnailAdaptationSet(storyboardPlan(9, { width: 1280, height: 720 }), { media: 'a&b/tile_$Number$.jpg', maxSheetBytes: 0 })).toContain('media="a&amp;b/tile_$Number$.jpg" timescale="1" startNumber="1">\n        <SegmentTimeline>\n          <S t="0" d="10"/>');
  });

  it('goes in the Period after the other sets, replaces one it had, and comes out with null', () => {
    const once = setThumbnailTrack(mpd, set);
    expect(once.indexOf(set)).toBeGreaterThan(once.indexOf('contentType="video"'));
    expect(once.indexOf(set)).toBeLessThan(once.indexOf('</Period>'));
    expect(once).toContain(`${set}\n  </Period>`);
    const other = thumbnailAdaptationSet(storyboardPlan(9, { width: 1280, height: 720 }), { media: 'job.2/thumbs/tile_$Number$.jpg', maxSheetBytes: 1 });
    const twice = setThumbnailTrack(once, other);
    expect(twice.match(/contentType="image"/g)).toHaveLength(1);
    expect(twice).toContain('job.2/thumbs');
    expect(setThumbnailTrack(twice, null)).toBe(mpd);
  });

  it('refuses an MPD without exactly one Period', () => {
    expect(() => setThumbnailTrack(mpd.replace('</Period>', '</Period>\n  <Period id="1"></Period>'), set)).toThrow(/2 Periods/);
    expect(() => setThumbnailTrack('<MPD/>', set)).toThrow(/0 Periods/);
  });
});

describe('packagerArgs', () => {
  it('lays out video per rendition and one audio stream', () => {
    const a = packagerArgs({ renditions: [{ rendition: '720p', path: '/t/720p.mp4' }, { rendition: '360p', path: '/t/360p.mp4' }], audioFrom: '/t/720p.mp4', outDir: '/t/pkg', segmentDir: 'job.1', segmentSeconds: 4 });
    expect(a.slice(0, 3)).toEqual([
      'in=/t/720p.mp4,stream=video,init_segment=/t/pkg/job.1/video/720p/init.mp4,segment_template=/t/pkg/job.1/video/720p/$Number$.m4s,playlist_name=job.1/video_720p.m3u8',
      'in=/t/360p.mp4,stream=video,init_segment=/t/pkg/job.1/video/360p/init.mp4,segment_template=/t/pkg/job.1/video/360p/$Number$.m4s,playlist_name=job.1/video_360p.m3u8',
      'in=/t/720p.mp4,stream=audio,init_segment=/t/pkg/job.1/audio/init.mp4,segment_template=/t/pkg/job.1/audio/$Number$.m4s,playlist_name=job.1/audio.m3u8,hls_group_id=audio,hls_name=Audio',
    ]);
    expect(a).toEqual(expect.arrayContaining(['--segment_duration', '4', '--generate_static_live_mpd', '--mpd_output', '/t/pkg/manifest.mpd', '--hls_master_playlist_output', '/t/pkg/master.m3u8', '--hls_playlist_type', 'VOD']));
    expect(a.join(' ')).not.toContain('--base_urls');
  });

  it('refuses paths that would split a stream descriptor', () => {
    expect(() => packagerArgs({ renditions: [{ rendition: '720p', path: '/t/a,b.mp4' }], outDir: '/t/pkg', segmentDir: 'j.1', segmentSeconds: 4 })).toThrow(/must not contain/);
  });
});

describe('setBaseUrl', () => {
  const mpd = `<?xml version="1.0" encoding="UTF-8"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static">\n  <BaseURL>http%3A%2F%2Fold</BaseURL>\n  <Period id="0">\n  </Period>\n</MPD>\n`;

  it('writes base_url exactly, XML-escaped, never percent-encoded, replacing any other', () => {
    const out = setBaseUrl(mpd, 'https://cdn.example.test/v a/ü?x=1&y="2"');
    expect(out).toContain('<BaseURL>https://cdn.example.test/v a/ü?x=1&amp;y=&quot;2&quot;</BaseURL>');
    expect(out).not.toContain('old');
    expect(out.indexOf('<BaseURL>')).toBeLessThan(out.indexOf('<Period'));
  });

  it('keeps ProgramInformation first, as the schema wants', () => {
    const withInfo = mpd.replace('<Period', '<ProgramInformation><Title>t</Title></ProgramInformation>\n  <Period');
    const out = setBaseUrl(withInfo.replace('  <BaseURL>http%3A%2F%2Fold</BaseURL>\n', ''), 'https://x/');
    expect(out.indexOf('</ProgramInformation>')).toBeLessThan(out.indexOf('<BaseURL>'));
  });

  it('writes no BaseURL for an empty base_url', () => {
    expect(setBaseUrl(mpd, '')).not.toContain('BaseURL');
  });
});

describe('parseProbe', () => {
  const videoStream = { codec_type: 'video', codec_name: 'h264', width: 1920, height: 1080, avg_frame_rate: '30000/1001', pix_fmt: 'yuv420p', field_order: 'progressive' };
  const audioStream = { codec_type: 'audio', codec_name: 'aac', channels: 2, sample_rate: '48000' };

  it('reads a video with audio', () => {
    expect(parseProbe({ streams: [videoStream, audioStream], format: { format_name: 'mov,mp4', duration: '12.5' } }, 10)).toEqual({
      formatName: 'mov,mp4',
      durationSec: 12.5,
      sizeBytes: 10,
      video: { codec: 'h264', width: 1920, height: 1080, rotation: 0, frameRate: { num: 30000, den: 1001 }, sampleAspectRatio: { num: 1, den: 1 }, pixFmt: 'yuv420p', interlaced: false, colour: { bitDepth: 8 } },
      audio: { codec: 'aac', channels: 2, sampleRate: 48000 },
    });
  });

  it.each([
    [-90, 270],
    [90, 90],
    [180, 180],
    [-180, 180],
  ])('display matrix rotation %i reads as %i', (rotation, expected) => {
    const p = parseProbe({ streams: [{ ...videoStream, side_data_list: [{ side_data_type: 'Display Matrix', rotation }] }], format: { duration: '1' } }, 10);
    expect(p.video.rotation).toBe(expected);
  });

  it('reads the pixel aspect ratio', () => {
    expect(parseProbe({ streams: [{ ...videoStream, sample_aspect_ratio: '16:15' }], format: { duration: '1' } }, 10).video.sampleAspectRatio).toEqual({ num: 16, den: 15 });
  });

  it('reads interlacing from the field order', () => {
    expect(parseProbe({ streams: [{ ...videoStream, field_order: 'tt' }], format: { duration: '1' } }, 10).video.interlaced).toBe(true);
  });

  it.each<[string, unknown, number, RegExp]>([
    ['audio only', { streams: [audioStream], format: { duration: '3' } }, 10, /no video stream, only audio \(aac\)/],
    ['mp3 with cover art', { streams: [{ ...audioStream, codec_name: 'mp3' }, { ...videoStream, codec_name: 'mjpeg', disposition: { attached_pic: 1 } }], format: { duration: '3' } }, 10, /no video stream/],
    ['no streams', { streams: [], format: {} }, 10, /no streams/],
    ['empty file', {}, 0, /empty/],
    ['no duration', { streams: [videoStream], format: {} }, 10, /no readable duration/],
  ])('%s is refused with a reason', (_name, json, size, reason) => {
    expect(() => parseProbe(json, size)).toThrow(reason);
  });
});

describe('colour: every output BT.709 SDR, limited range, tagged', () => {
  const after = (a: string[], flag: string) => a[a.indexOf(flag) + 1]!;
  // The picture's chain after the frame-rate filter (which is the same for every source).
  const vf = (p: Probe) => after(transcodeArgs({ input: '/in/src', output: '/o.mp4', probe: p, plan: plan(), profile: rungOf('720p') }), '-vf')!.replace(/^fps=[^,]+,/, '');
  const hdr10 = (bits = 10): Colour => ({ primaries: 'bt2020', transfer: 'smpte2084', space: 'bt2020nc', range: 'tv', bitDepth: bits });
  const hlg: Colour = { primaries: 'bt2020', transfer: 'arib-std-b67', space: 'bt2020nc', range: 'tv', bitDepth: 10 };
  const toneMapped = (input: string, peak: number) =>
    `scale=1280:720,setsar=1,zscale=${input}:t=linear:p=bt709:npl=100,format=gbrpf32le,tonemap=mobius:param=0.5:desat=0:peak=${peak},zscale=p=bt709:t=bt709:m=bt709:r=limited,format=yuv420p`;
  const PQ_IN = 'tin=smpte2084:pin=bt2020:min=bt2020nc:rin=limited';
  const HLG_IN = 'tin=arib-std-b67:pin=bt2020:min=bt2020nc:rin=limited';
  const sdr = (m: string, range = '') => `scale=1280:720:in_color_matrix=${m}${range}:out_color_matrix=bt709:out_range=tv,setsar=1,format=yuv420p`;

  it.each<[string, Probe, string, string]>([
    // name, probe, what the source is taken for, the filter chain
    ['SDR HD, undeclared: BT.709 assumed (not swscale\'s BT.601)', probe(1920, 1080), 'sdr', sdr('bt709')],
    ['SDR SD, undeclared: BT.601 assumed', probe(720, 576), 'sdr', sdr('smpte170m')],
    ['SDR BT.709 declared', probe(1920, 1080, { colour: { primaries: 'bt709', transfer: 'bt709', space: 'bt709', range: 'tv', bitDepth: 8 } }), 'sdr', sdr('bt709', ':in_range=tv')],
    ['SDR full-range BT.601 (a phone\'s JPEG-style range): matrix and range converted', probe(1920, 1080, { colour: { space: 'bt470bg', range: 'pc', bitDepth: 8 } }), 'sdr', sdr('bt470', ':in_range=pc')],
    ['HLG 10-bit', probe(1920, 1080, { colour: hlg }), 'hlg', toneMapped(HLG_IN, 10)],
    ['HLG with a MaxCLL: the HLG reference display peak all the same', probe(1920, 1080, { colour: hlg, hdr: { contentLight: { maxCll: 400, maxFall: 100 } } }), 'hlg', toneMapped(HLG_IN, 10)],
    ['PQ without metadata: 1000 cd/m²', probe(1920, 1080, { colour: hdr10() }), 'pq', toneMapped(PQ_IN, 10)],
    ['PQ with HDR10 metadata: rolls off to MaxCLL', probe(1920, 1080, { colour: hdr10(), hdr: { masteringDisplay: { minLuminance: 0.005, maxLuminance: 1000 }, contentLight: { maxCll: 4000, maxFall: 400 } } }), 'pq', toneMapped(PQ_IN, 40)],
    ['PQ with a mastering display only', probe(1920, 1080, { colour: hdr10(), hdr: { masteringDisplay: { minLuminance: 0.005, maxLuminance: 600 } } }), 'pq', toneMapped(PQ_IN, 6)],
    ['PQ mastered no brighter than SDR white: nothing to roll off', probe(1920, 1080, { colour: hdr10(), hdr: { contentLight: { maxCll: 80, maxFall: 20 } } }), 'pq', toneMapped(PQ_IN, 1)],
    ['PQ 8-bit, full range, P3 primaries', probe(1920, 1080, { colour: { ...hdr10(8), primaries: 'smpte432', range: 'pc' } }), 'pq', toneMapped('tin=smpte2084:pin=smpte432:min=bt2020nc:rin=full', 10)],
    ['Dolby Vision 8.4 (iPhone): its HLG base layer', probe(1920, 1080, { colour: hlg, hdr: { dolbyVision: { profile: 8, level: 5, compatibility: 4 } } }), 'hlg', toneMapped(HLG_IN, 10)],
    ['Dolby Vision 8.1 with the stream\'s tags missing: its HDR10 base layer', probe(1920, 1080, { colour: { bitDepth: 10 }, hdr: { dolbyVision: { profile: 8, level: 6, compatibility: 1 } } }), 'pq', toneMapped(PQ_IN, 10)],
    ['Dolby Vision 8.2: SDR base layer', probe(1920, 1080, { colour: { primaries: 'bt709', transfer: 'bt709', space: 'bt709', range: 'tv', bitDepth: 10 }, hdr: { dolbyVision: { profile: 8, level: 4, compatibility: 2 } } }), 'sdr', sdr('bt709', ':in_range=tv')],
    ['BT.2020 10-bit, no transfer, HDR10 metadata: PQ', probe(1920, 1080, { colour: { primaries: 'bt2020', bitDepth: 10 }, hdr: { contentLight: { maxCll: 1000, maxFall: 300 } } }), 'pq', toneMapped(PQ_IN, 10)],
    ['BT.2020 SDR (bt2020-10): gamut-mapped, not tone-mapped', probe(1920, 1080, { colour: { primaries: 'bt2020', transfer: 'bt2020-10', space: 'bt2020nc', range: 'tv', bitDepth: 10 } }), 'wide-gamut', 'scale=1280:720,setsar=1,zscale=tin=bt2020-10:pin=bt2020:min=bt2020nc:rin=limited:p=bt709:t=bt709:m=bt709:r=limited,format=yuv420p'],
    ['BT.2020 10-bit, no transfer nor metadata: gamut-mapped as SDR', probe(1920, 1080, { colour: { primaries: 'bt2020', bitDepth: 10 } }), 'wide-gamut', 'scale=1280:720,setsar=1,zscale=tin=bt709:pin=bt2020:min=bt2020nc:rin=limited:p=bt709:t=bt709:m=bt709:r=limited,format=yuv420p'],
  ])('%s', (_name, p, range, chain) => {
    expect(sourceRange(p)).toBe(range);
    expect(vf(p)).toBe(chain);
  });

  it.each<[string, Probe]>([
    ['SDR', probe(1920, 1080)],
    ['HLG', probe(1920, 1080, { colour: hlg })],
    ['PQ', probe(1920, 1080, { colour: hdr10() })],
    ['Dolby Vision 8.1', probe(1920, 1080, { colour: hdr10(), hdr: { dolbyVision: { profile: 8, level: 6, compatibility: 1 } } })],
  ])('a %s source becomes outputs tagged BT.709 limited range in the MP4 and the H.264 VUI, on every rung', (_name, p) => {
    const pl = planMedia(p, { hasAudio: true, ladder: WEB_LADDER });
    for (const rung of WEB_LADDER) {
      const a = transcodeArgs({ input: '/in/src', output: `/o/${rung.name}.mp4`, probe: p, plan: pl, profile: rung });
      for (let i = 0; i < BT709_TAGS.length; i += 2) expect(after(a, BT709_TAGS[i]!)).toBe(BT709_TAGS[i + 1]);
      expect(after(a, '-x264-params')).toBe(`scenecut=0:open_gop=0:${X264_BT709_VUI}`);
      expect(X264_BT709_VUI).toBe('colorprim=bt709:transfer=bt709:colormatrix=bt709:range=tv');
      expect(after(a, '-vf')).toMatch(/,format=yuv420p$/);
    }
  });

  it('tone-maps the poster and the storyboard tiles like the video, then writes them as JFIF says (BT.601, full range)', () => {
    const toJpeg = 'scale=in_color_matrix=bt709:in_range=tv:out_color_matrix=bt601:out_range=pc,format=yuvj420p';
    const graph = (p: Probe) => {
      const a = thumbnailArgs({ input: '/in/src', poster: '/t.jpg', sheets: '/s_%d.jpg', probe: p, plan: storyboardPlan(10, { width: 1920, height: 1080 }) });
      return after(a, '-filter_complex')!;
    };
    const hlgGraph = graph(probe(1920, 1080, { colour: hlg }));
    const toneMap = `setsar=1,zscale=${HLG_IN}:t=linear:p=bt709:npl=100,format=gbrpf32le,tonemap=mobius:param=0.5:desat=0:peak=10,zscale=p=bt709:t=bt709:m=bt709:r=limited,format=yuv420p,${toJpeg}`;
    expect(hlgGraph).toContain(`[p]trim=start=1.000:duration=0.001,scale='min(640,iw)':-2,${toneMap}[poster]`);
    expect(hlgGraph).toContain(`,scale=160:90,${toneMap},tile=5x1[sheets]`);
    expect(graph(probe(1920, 1080))).toContain(`scale='min(640,iw)':-2:in_color_matrix=bt709:out_color_matrix=bt709:out_range=tv,setsar=1,format=yuv420p,${toJpeg}[poster]`);
  });
});

describe('parseProbe: colour and HDR', () => {
  const hevc = { codec_type: 'video', codec_name: 'hevc', index: 0, width: 3840, height: 2160, avg_frame_rate: '30/1', pix_fmt: 'yuv420p10le', color_range: 'tv', color_space: 'bt2020nc', color_transfer: 'smpte2084', color_primaries: 'bt2020' };
  const format = { format_name: 'mov,mp4', duration: '3' };
  const dovi = (profile: number, compatibility: number) => ({ side_data_type: 'DOVI configuration record', dv_version_major: 1, dv_version_minor: 0, dv_profile: profile, dv_level: 6, rpu_present_flag: 1, el_present_flag: 0, bl_present_flag: 1, dv_bl_signal_compatibility_id: compatibility });

  it('reads the declared colour, the bit depth, and HDR10 metadata from the first frame (SEI)', () => {
    const frames = [
      {
        stream_index: 0,
        side_data_list: [
          { side_data_type: 'Mastering display metadata', min_luminance: '50/10000', max_luminance: '10000000/10000' },
          { side_data_type: 'Content light level metadata', max_content: 1000, max_average: 400 },
          { side_data_type: 'H.26[45] User Data Unregistered SEI message' },
        ],
      },
    ];
    const p = parseProbe({ streams: [{ ...hevc, side_data_list: [dovi(8, 1)] }], frames, format }, 10);
    expect(p.video.colour).toEqual({ primaries: 'bt2020', transfer: 'smpte2084', space: 'bt2020nc', range: 'tv', bitDepth: 10 });
    expect(p.video.hdr).toEqual({ masteringDisplay: { minLuminance: 0.005, maxLuminance: 1000 }, contentLight: { maxCll: 1000, maxFall: 400 }, dolbyVision: { profile: 8, level: 6, compatibility: 1 } });
    expect(ProbeSchema.parse(p)).toEqual(p);
  });

  it.each<[string, string, number | undefined]>([
    ['yuv420p', 'yuv420p', 8],
    ['p010le', 'p010le', 10],
    ['yuv422p12le', 'yuv422p12le', 12],
    ['yuvj420p', 'yuvj420p', 8],
    ['unknown', 'unknown', undefined],
  ])('%s is %s bits', (_name, pixFmt, bits) => {
    expect(parseProbe({ streams: [{ ...hevc, pix_fmt: pixFmt }], format }, 10).video.colour?.bitDepth).toBe(bits);
  });

  it('leaves out what the stream does not declare', () => {
    const p = parseProbe({ streams: [{ ...hevc, color_range: 'unknown', color_space: 'unknown', color_transfer: 'unspecified', color_primaries: 'reserved' }], format }, 10);
    expect(p.video.colour).toEqual({ bitDepth: 10 });
    expect(p.video.hdr).toBeUndefined();
  });

  it('refuses Dolby Vision profile 5 (no base layer a standard decoder shows right), saying why', () => {
    const call = () => parseProbe({ streams: [{ ...hevc, color_transfer: undefined, side_data_list: [dovi(5, 0)] }], format }, 10);
    expect(call).toThrow(expect.objectContaining({ code: 'SOURCE_UNSUPPORTED', message: expect.stringMatching(/Dolby Vision profile 5 without an HDR10, HLG or SDR base layer/) }));
  });

  it('still parses a probe recorded before colour was read', () => {
    const old = { formatName: 'mov,mp4', durationSec: 3, sizeBytes: 10, video: { codec: 'h264', width: 1920, height: 1080, rotation: 0, frameRate: { num: 30, den: 1 }, sampleAspectRatio: { num: 1, den: 1 }, pixFmt: 'yuv420p', interlaced: false }, audio: null };
    const parsed = ProbeSchema.parse(old);
    expect(parsed).toEqual(old);
    expect(sourceRange(parsed)).toBe('sdr');
  });
});
