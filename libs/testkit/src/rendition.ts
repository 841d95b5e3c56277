/**
 * What the tests check of an encoded rendition, read with ffprobe and FFmpeg: its frames, their timestamps,
 * which are keyframes, the streams' durations, and its picture quality against the source.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface RenditionFacts {
  /** Video frames, and their presentation times in seconds, in presentation order. */
  frames: number;
  pts: number[];
  /** Indexes (in presentation order) of the keyframes. */
  keyframes: number[];
  videoDurationSec: number;
  audioDurationSec: number | null;
}

export async function renditionFacts(path: string): Promise<RenditionFacts> {
  const packets = (await run('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'packet=pts_time,flags', '-of', 'csv=p=0', path], { maxBuffer: 64 * 1024 * 1024 })).stdout
    .trim()
    .split('\n')
    .map((l) => l.split(','))
    .map(([pts, flags]) => ({ pts: Number(pts), key: flags?.includes('K') ?? false }))
    .sort((a, b) => a.pts - b.pts);
  const streams = JSON.parse((await run('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_type,duration', '-of', 'json', path])).stdout) as { streams: { codec_type: string; duration: string }[] };
  const duration = (type: string) => {
    const s = streams.streams.find((x) => x.codec_type === type);
    return s ? Number(s.duration) : null;
  };
  return {
    frames: packets.length,
    pts: packets.map((p) => p.pts),
    keyframes: packets.flatMap((p, i) => (p.key ? [i] : [])),
    videoDurationSec: duration('video') ?? 0,
    audioDurationSec: duration('audio'),
  };
}

/**
 * PSNR (dB, average) and SSIM (all) of each of `encoded` against `source`, the source brought to the
 * encodes' frame grid, then through `picture`: the encodes' own size and colour filters (bt709Filters of
 * the probe, so a BT.601 or HDR source is compared in the encodes' BT.709 values, not swscale's default
 * matrix, which cost 11 dB on an SD clip); one FFmpeg run decodes each file once. FFmpeg starts
 * its clock at the earliest start of the streams a run uses, so the source's audio (`audio`) is read
 * along, as in the encodes: the picture the source shows at a time is compared with the encodes' then.
 */
export async function qualityAgainst(encoded: string[], source: string, o: { picture: string[]; rate: string; audio: boolean }): Promise<{ psnr: number; ssim: number }[]> {
  const n = encoded.length;
  const refs = Array.from({ length: 2 * n }, (_, i) => `[r${i}]`).join('');
  const graph = [
    `[${n}:v]fps=${o.rate}:start_time=0,${o.picture.join(',')},split=${2 * n}${refs}`,
    ...(o.audio ? [`[${n}:a]anullsink`] : []),
    ...encoded.map((_, i) => `[${i}:v]split[e${i}p][e${i}s];[e${i}p][r${2 * i}]psnr;[e${i}s][r${2 * i + 1}]ssim`),
  ].join(';');
  const inputs = [...encoded, source].flatMap((f) => ['-i', f]);
  const { stderr } = await run('ffmpeg', ['-hide_banner', '-nostdin', ...inputs, '-lavfi', graph, '-f', 'null', '-'], { maxBuffer: 64 * 1024 * 1024 });
  // One summary line per filter, in no fixed order: the filters' numbers follow the graph.
  const results = (name: string, value: RegExp) =>
    [...stderr.matchAll(new RegExp(`Parsed_${name}_(\\d+) @ [^\\]]*\\] ${name.toUpperCase()} .*${value.source}`, 'g'))].sort((a, b) => Number(a[1]) - Number(b[1])).map((m) => Number(m[2]));
  const psnr = results('psnr', /average:([\d.]+|inf)/);
  const ssim = results('ssim', /All:([\d.]+)/);
  if (psnr.length !== n || ssim.length !== n || [...psnr, ...ssim].some((x) => !Number.isFinite(x))) throw new Error(`no PSNR/SSIM for each encode in FFmpeg's output:\n${stderr.slice(-2000)}`);
  return encoded.map((_, i) => ({ psnr: psnr[i]!, ssim: ssim[i]! }));
}
