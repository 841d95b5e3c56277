/** FFmpeg argument arrays, built from the probe, the job's plan and a rendition profile. */
import type { MediaPlan, Probe, Rung } from '@mesh/common';
import { BT709_TAGS, bt709Filters, JPEG_FILTERS, X264_BT709_VUI } from './colour.ts';
import { gopFrames, outputSize } from './geometry.ts';
import { inputGuard, type GuardOptions } from './guard.ts';
import { decodeStopSec } from './limits.ts';

/** Where the source is read: a local path or a presigned URL, with the URL's If-Match pin (guard.ts). */
type Input = { input: string } & GuardOptions;

/**
 * Decoding stops shortly past the probed duration (see limits.ts): a file holding more than it declares
 * cannot make the run longer. An input option, so FFmpeg stops reading, not only writing.
 */
const stopDecoding = (probe: Probe): string[] => ['-t', decodeStopSec(probe.durationSec).toFixed(3)];

/** The encode of one rung: its size from the plan (decided once, by the downloader), its settings from the rung. */
export function transcodeArgs(o: Input & { output: string; probe: Probe; plan: MediaPlan; profile: Rung }): string[] {
  const { probe, plan, profile } = o;
  const { width, height } = plan.sizes[profile.name] ?? outputSize(probe, profile.shortSide);
  const gop = gopFrames(plan);
  const rate = `${plan.frameRate.num}/${plan.frameRate.den}`;
  const filters = [
    // Interlaced sources: one progressive frame per frame, only where the frame is flagged interlaced.
    ...(probe.video.interlaced ? ['yadif=mode=send_frame:deint=interlaced'] : []),
    // FFmpeg has already rotated the frames upright (autorotate), so this is the display size. Square
    // pixels, so width/height in the manifest are what players show. 8-bit 4:2:0 BT.709 SDR: what every
    // browser decodes and shows right (HDR is tone-mapped, 10-bit and 4:2:2 converted; colour.ts).
    ...bt709Filters(probe, `${width}:${height}`),
  ];
  return [
    '-hide_banner', '-nostdin', '-y', '-loglevel', 'warning',
    ...inputGuard(o.input, o),
    ...stopDecoding(probe),
    '-i', o.input,
    '-map', '0:v:0',
    ...(plan.audio ? ['-map', '0:a:0'] : []),
    // Drop subtitles, data streams and metadata (phones put GPS positions there).
    '-sn', '-dn', '-map_metadata', '-1', '-map_chapters', '-1',
    '-vf', filters.join(','),
    // One constant rate shared by all renditions: keyframe times only match if the frame times do.
    '-r', rate, '-fps_mode', 'cfr',
    '-c:v', 'libx264', '-preset', profile.preset, '-profile:v', profile.profile,
    '-b:v', `${profile.videoKbps}k`, '-maxrate', `${profile.maxKbps}k`, '-bufsize', `${profile.bufKbps}k`,
    // One closed GOP per segment and no scene-cut keyframes: every segment of every rendition starts
    // with an IDR frame at the same time, so players can switch renditions at any segment.
    '-g', String(gop), '-keyint_min', String(gop), '-sc_threshold', '0',
    // The VUI says BT.709 limited range too: the packager keeps the bitstream, not the MP4 box.
    '-x264-params', `scenecut=0:open_gop=0:${X264_BT709_VUI}`,
    // Tagged explicitly, never left for players to guess (nor copied from an HDR source).
    ...BT709_TAGS,
    // And force one at each segment boundary, for rates where the segment is not a whole number of frames.
    '-force_key_frames', `expr:gte(t,n_forced*${plan.segmentSeconds})`,
    ...(plan.audio ? ['-c:a', 'aac', '-b:a', `${profile.audioKbps}k`, '-ac', '2', '-ar', '48000'] : ['-an']),
    // Index first: the packager and any direct player read it without seeking to the end.
    '-movflags', '+faststart',
    // Machine-readable progress on stdout (out_time_us=...), for the job's progress.
    '-progress', 'pipe:1', '-nostats',
    o.output,
  ];
}

/** Where the thumbnail is taken: at 1 s, or the middle of a video shorter than 2 s. */
export function thumbnailTime(durationSec: number): number {
  return durationSec >= 2 ? 1 : durationSec / 2;
}

export const THUMBNAIL_MAX_WIDTH = 640;

export function thumbnailArgs(o: Input & { output: string; probe: Probe }): string[] {
  return [
    '-hide_banner', '-nostdin', '-y', '-loglevel', 'warning',
    ...inputGuard(o.input, o),
    ...stopDecoding(o.probe),
    // Seeking before -i jumps to the nearest keyframe and decodes from there: fast on long videos.
    '-ss', thumbnailTime(o.probe.durationSec).toFixed(3),
    '-i', o.input,
    '-map', '0:v:0', '-frames:v', '1',
    // Upright (autorotate), at most 640 wide, even height, square pixels, HDR tone-mapped like the video.
    '-vf', [...bt709Filters(o.probe, `'min(${THUMBNAIL_MAX_WIDTH},iw)':-2`), ...JPEG_FILTERS].join(','),
    '-q:v', '3',
    '-f', 'image2', '-update', '1',
    o.output,
  ];
}
