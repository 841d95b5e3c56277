/** ffprobe: what the source is, or a clear reason why it is not a video we can convert. */
import { stat } from 'node:fs/promises';
import { InputError, ToolError, type Logger, type Probe, type Rational } from '@mesh/common';
import { inputGuard, isUrl, VIDEO_DECODERS, type GuardOptions } from './guard.ts';
import { PROBE_BUDGET_MS } from './limits.ts';
import { runTool } from './run.ts';

export function ffprobeArgs(input: string, o: GuardOptions = {}): string[] {
  return ['-hide_banner', '-v', 'error', ...inputGuard(input, o), '-show_format', '-show_streams', '-of', 'json', input];
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
  side_data_list?: { side_data_type?: string; rotation?: number }[];
  sample_aspect_ratio?: string;
}

interface FfProbe {
  streams?: FfStream[];
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
