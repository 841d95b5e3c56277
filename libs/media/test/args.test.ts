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
  thumbnailArgs,
  thumbnailTime,
  timeFactorConfig,
  toolBudgetMs,
  transcodeArgs,
} from '../src/index.ts';
import { DEFAULT_LADDER, WEB_LADDER } from '@mesh/common';

const rungOf = (name: string) => DEFAULT_LADDER.find((r) => r.name === name)!;

function probe(width: number, height: number, more: { rotation?: number; fps?: [number, number]; audio?: boolean; interlaced?: boolean; sar?: [number, number] } = {}): Probe {
  const [num, den] = more.fps ?? [30, 1];
  return {
    formatName: 'mov,mp4,m4a,3gp,3g2,mj2',
    durationSec: 10,
    sizeBytes: 1000,
    video: { codec: 'h264', width, height, rotation: more.rotation ?? 0, frameRate: { num, den }, sampleAspectRatio: { num: more.sar?.[0] ?? 1, den: more.sar?.[1] ?? 1 }, pixFmt: 'yuv420p', interlaced: more.interlaced ?? false },
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
    expect(after(a, '-vf')).toBe('fps=30/1:start_time=0,scale=1280:720,setsar=1,format=yuv420p');
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
    for (const a of [transcodeArgs({ input: '/in/src', output: '/o.mp4', probe: p, plan: plan(), profile: rungOf('360p') }), thumbnailArgs({ input: '/in/src', output: '/t.jpg', probe: p })]) {
      const t = a.indexOf('-t');
      expect(a[t + 1]).toBe('14.200');
      expect(t).toBeLessThan(a.indexOf('-i'));
      expect(a.lastIndexOf('-t')).toBe(t);
    }
  });

  it.each<[string, number, number]>([
    ['a 10 s encode at factor 20', toolBudgetMs(10, 20), 260_000],
    ['a 4 h encode at factor 20', toolBudgetMs(4 * 3600, 20), 60_000 + 288_000_000],
    ['a thumbnail shot at 1 s', toolBudgetMs(thumbnailTime(600), 20), 80_000],
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

  it('seeks before -i, takes one frame, writes a JPEG', () => {
    const a = thumbnailArgs({ input: '/in/src', output: '/out/t.jpg', probe: probe(1920, 1080) });
    expect(a.indexOf('-ss')).toBeLessThan(a.indexOf('-i'));
    expect(a).toEqual(expect.arrayContaining(['-frames:v', '1', '-protocol_whitelist', 'file']));
    expect(a.at(-1)).toBe('/out/t.jpg');
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
      video: { codec: 'h264', width: 1920, height: 1080, rotation: 0, frameRate: { num: 30000, den: 1001 }, sampleAspectRatio: { num: 1, den: 1 }, pixFmt: 'yuv420p', interlaced: false },
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
