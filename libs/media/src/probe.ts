/** ffprobe: what the source is, or a clear reason why it is not a video we can convert. */
import { stat } from 'node:fs/promises';
import { InputError, ToolError, type Logger, type Probe, type Rational } from '@mesh/common';
import { inputGuard, isUrl, VIDEO_DECODERS, type GuardOptions } from './guard.ts';
import { PROBE_BUDGET_MS } from './limits.ts';
import { runTool } from './run.ts';

/**
 * HDR10 metadata sits in the HEVC/AV1 bitstream (SEI), not in MP4's headers as FFmpeg 5.1 reads them:
 * decode the first frame only and show its side data, beside the usual format and streams.
 */
const FIRST_FRAME_SIDE_DATA = ['-read_intervals', '%+#1', '-show_entries', 'frame=stream_index:frame_side_data=side_data_type,max_content,max_average,min_luminance,max_luminance'];

export function ffprobeArgs(input: string, o: GuardOptions = {}): string[] {
  return ['-hide_banner', '-v', 'error', ...inputGuard(input, o), '-show_format', '-show_streams', ...FIRST_FRAME_SIDE_DATA, '-of', 'json', input];
}

interface FfStream {
  codec_type?: string;
  codec_name?: string;
  width?: number;
  height?: number;
  avg_frame_rate?: string;
  r_frame_rate?: string;
  pix_fmt?: string;
  field_order?: string;
  duration?: string;
  channels?: number;
  sample_rate?: string;
  disposition?: { attached_pic?: number };
  tags?: { rotate?: string };
  side_data_list?: FfSideData[];
  sample_aspect_ratio?: string;
  index?: number;
  color_range?: string;
  color_space?: string;
  color_transfer?: string;
  color_primaries?: string;
}

/** Stream and frame side data, as ffprobe 5.1 names and prints it. */
interface FfSideData {
  side_data_type?: string;
  rotation?: number;
  min_luminance?: string;
  max_luminance?: string;
  max_content?: number;
  max_average?: number;
  dv_profile?: number;
  dv_level?: number;
  dv_bl_signal_compatibility_id?: number;
}

interface FfProbe {
  streams?: FfStream[];
  frames?: { stream_index?: number; side_data_list?: FfSideData[] }[];
  format?: { format_name?: string; duration?: string };
}

function rational(text: string | undefined): Rational | null {
  const m = /^(\d+)[/:](\d+)$/.exec(text ?? '');
  if (!m || Number(m[1]) === 0 || Number(m[2]) === 0) return null;
  return { num: Number(m[1]), den: Number(m[2]) };
}

function rotationOf(s: FfStream): number {
  const matrix = s.side_data_list?.find((d) => d.side_data_type === 'Display Matrix')?.rotation;
  const raw = matrix ?? Number(s.tags?.rotate ?? 0);
  const r = (((Math.round(raw / 90) * 90) % 360) + 360) % 360;
  return r;
}

/** ffprobe's words for "not declared". */
const UNDECLARED = new Set(['unknown', 'unspecified', 'reserved', '']);

function declared(value: string | undefined): string | undefined {
  return value === undefined || UNDECLARED.has(value) ? undefined : value;
}

/** Bits per component from the pixel format: yuv420p10le and p010le are 10, yuv420p and nv12 are 8. */
export function bitDepthOf(pixFmt: string | undefined): number | undefined {
  if (!pixFmt || UNDECLARED.has(pixFmt)) return undefined;
  const bits = /(\d+)(le|be)$/.exec(pixFmt)?.[1];
  return bits ? Number(bits) : 8;
}

/** "10000000/10000" cd/m², as ffprobe prints luminance. */
function luminance(text: string | undefined): number | undefined {
  const m = /^(\d+)\/(\d+)$/.exec(text ?? '');
  return m && Number(m[2]) > 0 ? Number(m[1]) / Number(m[2]) : undefined;
}

function colourOf(s: FfStream): Probe['video']['colour'] {
  return {
    primaries: declared(s.color_primaries),
    transfer: declared(s.color_transfer),
    space: declared(s.color_space),
    range: declared(s.color_range),
    bitDepth: bitDepthOf(s.pix_fmt),
  };
}

/** Mastering display, content light level (from the stream or its first frame) and Dolby Vision configuration. */
function hdrOf(s: FfStream, frames: FfProbe['frames']): Probe['video']['hdr'] {
  const frame = frames?.find((f) => f.stream_index === undefined || f.stream_index === s.index);
  const all = [...(s.side_data_list ?? []), ...(frame?.side_data_list ?? [])];
  const find = (type: string) => all.find((d) => d.side_data_type === type);
  const md = find('Mastering display metadata');
  const cll = find('Content light level metadata');
  const dovi = find('DOVI configuration record');
  const hdr: NonNullable<Probe['video']['hdr']> = {};
  const minLuminance = luminance(md?.min_luminance);
  const maxLuminance = luminance(md?.max_luminance);
  if (minLuminance !== undefined && maxLuminance !== undefined) hdr.masteringDisplay = { minLuminance, maxLuminance };
  if (cll) hdr.contentLight = { maxCll: cll.max_content ?? 0, maxFall: cll.max_average ?? 0 };
  if (dovi) hdr.dolbyVision = { profile: dovi.dv_profile ?? 0, level: dovi.dv_level ?? 0, compatibility: dovi.dv_bl_signal_compatibility_id ?? 0 };
  return Object.keys(hdr).length > 0 ? hdr : undefined;
}

export function parseProbe(json: unknown, sizeBytes: number): Probe {
  if (sizeBytes === 0) throw new InputError('SOURCE_EMPTY', 'the source object is empty (0 bytes)');
  const data = json as FfProbe;
  const streams = data.streams ?? [];
  // Cover art in audio files is a "video" stream with attached_pic: it is not a video.
  const video = streams.find((s) => s.codec_type === 'video' && s.disposition?.attached_pic !== 1 && (s.width ?? 0) > 0);
  if (!video) {
    const found = streams.map((s) => `${s.codec_type ?? 'unknown'} (${s.codec_name ?? '?'})`).join(', ');
    throw new InputError('NOT_A_VIDEO', found ? `not a video: the file has no video stream, only ${found}` : 'not a video: the file has no streams');
  }
  const hdr = hdrOf(video, data.frames);
  if (hdr?.dolbyVision && hdr.dolbyVision.compatibility === 0) {
    // Profile 5 carries its picture in Dolby's own IPT colour space: without a Dolby Vision decoder it shows
    // green and purple, and FFmpeg has none. Refused with the reason rather than converted wrong.
    throw new InputError(
      'SOURCE_UNSUPPORTED',
      `the video is Dolby Vision profile ${hdr.dolbyVision.profile} without an HDR10, HLG or SDR base layer, which only a Dolby Vision decoder shows right; export it as HDR10, HLG or SDR`,
    );
  }
  const audio = streams.find((s) => s.codec_type === 'audio');
  const duration = Number(data.format?.duration ?? video.duration ?? NaN);
  if (!Number.isFinite(duration) || duration <= 0) {
    throw new InputError('SOURCE_UNSUPPORTED', 'the video has no readable duration (truncated or still being written?)');
  }
  return {
    formatName: data.format?.format_name ?? 'unknown',
    durationSec: duration,
    sizeBytes,
    video: {
      codec: video.codec_name ?? 'unknown',
      width: video.width!,
      height: video.height ?? 0,
      rotation: rotationOf(video),
      frameRate: rational(video.avg_frame_rate) ?? rational(video.r_frame_rate) ?? { num: 30, den: 1 },
      sampleAspectRatio: rational(video.sample_aspect_ratio) ?? { num: 1, den: 1 },
      pixFmt: video.pix_fmt ?? 'unknown',
      interlaced: ['tt', 'bb', 'tb', 'bt'].includes(video.field_order ?? ''),
      colour: colourOf(video),
      ...(hdr ? { hdr } : {}),
    },
    audio: audio ? { codec: audio.codec_name ?? 'unknown', channels: audio.channels ?? 0, sampleRate: Number(audio.sample_rate ?? 0) } : null,
  };
}

/** ffprobe's complaints without our temp path or `[demuxer @ 0x...]` prefixes, each once: "moov atom not found; Invalid data ...". */
function readableStderr(stderr: string, path: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.replaceAll(`${path}: `, '').replace(/^\[[^\]]*@ 0x[0-9a-f]+\]\s*/, '').trim())
    .filter(Boolean);
  return [...new Set(lines)].join('; ') || 'unreadable';
}

/** What FFmpeg's HTTP input says when the server, not the file, is the trouble (an answer, or none). */
const NETWORK_TROUBLE = /timed out|Connection refused|Connection reset|Server returned|HTTP error/i;

/**
 * Probes a local file, or a presigned URL (then give its size, `redact` so the URL is never logged, and
 * the URL's `ifMatch` pin). Anything ffprobe cannot read is not a video, and retrying will not change that;
 * a stream in a codec the mesh does not decode is SOURCE_UNSUPPORTED, named.
 */
export async function probeFile(
  path: string,
  o: { log: Logger; signal?: AbortSignal; sizeBytes?: number; redact?: Record<string, string>; ifMatch?: string; timeoutMs?: number },
): Promise<Probe> {
  const size = o.sizeBytes ?? (await stat(path)).size;
  if (size === 0) throw new InputError('SOURCE_EMPTY', 'the source object is empty (0 bytes)');
  let stdout: string;
  try {
    ({ stdout } = await runTool('ffprobe', ffprobeArgs(path, o.ifMatch ? { ifMatch: o.ifMatch } : {}), { ...o, timeoutMs: o.timeoutMs ?? PROBE_BUDGET_MS }));
  } catch (err) {
    // S3 stalled, failed or refused (403, 404, 412...): not the file's fault, so retryable; withSourceUrl
    // turns a source deleted or swapped meanwhile into SOURCE_NOT_FOUND / SOURCE_CHANGED.
    if (err instanceof ToolError && isUrl(path) && NETWORK_TROUBLE.test(err.stderrTail)) throw err;
    if (err instanceof ToolError) {
      const codec = /Codec \(([^)]+)\) not on whitelist/.exec(err.stderrTail)?.[1];
      if (codec) {
        throw new InputError('SOURCE_UNSUPPORTED', `the file holds a ${codec} stream, a codec the mesh does not decode (video: ${VIDEO_DECODERS.join(', ')}; and the common audio codecs)`, err);
      }
      const why = err.stderrTail.includes('not on whitelist')
        ? 'its container is not an allowed video format (playlists, concat lists and image sequences are refused)'
        : readableStderr(err.stderrTail, o.redact?.[path] ?? path);
      throw new InputError('NOT_A_VIDEO', `not a video file ffprobe can read: ${why}`, err);
    }
    throw err;
  }
  return parseProbe(JSON.parse(stdout), size);
}
