/** FFmpeg argument arrays, built from the probe, the job's plan and a rendition profile. */
import type { MediaPlan, Probe, Rung, StoryboardPlan } from '@mesh/common';
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

/** Scaled to `size` and converted as the video is (colour.ts), then to a JPEG's BT.601 full range. */
const jpeg = (probe: Probe, size: string) => [...bt709Filters(probe, size), ...JPEG_FILTERS].join(',');

/**
 * The poster and the storyboard's sprite sheets (storyboard.ts) from one decode of the source: the decoded
 * picture is split, one branch gives the poster (the first frame at `thumbnailTime`, at most 640 wide, to
 * `poster`), the other one frame per interval, scaled to the tile size and tiled, to `sheets` (an image2
 * pattern with `%d`, numbered from 1). The sheets cover the whole video, so the source is read through
 * (unlike a poster alone, which could seek): bounded like an encode by the probed duration.
 */
export function thumbnailArgs(o: Input & { probe: Probe; poster: string; sheets: string; plan: StoryboardPlan }): string[] {
  const { plan } = o;
  if ((o.sheets.match(/%/g) ?? []).length !== 1 || !o.sheets.includes('%d')) throw new Error(`thumbnailArgs: sheets must be a file pattern with one %d, got ${o.sheets}`);
  const graph = [
    '[0:v:0]split=2[p][s]',
    // Upright (autorotate), at most 640 wide, even height, square pixels, HDR tone-mapped like the video. The
    // branch ends after its frame (a duration counts from the first frame kept): otherwise it would go on
    // scaling every frame after the poster is written, which doubled the run's CPU time on a 1080p source.
    `[p]trim=start=${thumbnailTime(o.probe.durationSec).toFixed(3)}:duration=0.001,${jpeg(o.probe, `'min(${THUMBNAIL_MAX_WIDTH},iw)':-2`)}[poster]`,
    // Tile k is the frame at k * interval (round=up keeps the last frame at or before each tick), the cue
    // [k * interval, (k + 1) * interval) shows it. The last frame is repeated to fill the last sheet, and
    // to make every planned sheet even if the file holds less than it declared: no cue points at nothing.
    // For as long as the whole storyboard at most, never without end: with an endless pad, a poster branch
    // that never gets its frame (a file holding less than a second) kept FFmpeg running until killed.
    `[s]fps=fps=1/${plan.intervalSec}:round=up,tpad=stop_mode=clone:stop_duration=${plan.tiles * plan.intervalSec},${jpeg(o.probe, `${plan.tileWidth}:${plan.tileHeight}`)},tile=${plan.columns}x${plan.rows}[sheets]`,
  ].join(';');
  return [
    '-hide_banner', '-nostdin', '-y', '-loglevel', 'warning',
    ...inputGuard(o.input, o),
    ...stopDecoding(o.probe),
    // Frames nothing refers to (most B-frames) are not decoded: a frame or two off a tick does not show in
    // a 160 px tile or in the poster, and a video with B-frames decodes through in about half the CPU time.
    '-skip_frame', 'noref',
    '-i', o.input,
    '-filter_complex', graph,
    '-map', '[poster]', '-frames:v', '1', '-q:v', '3', '-f', 'image2', '-update', '1', o.poster,
    // Exactly the planned sheets (the repeated last frame would go on forever).
    '-map', '[sheets]', '-frames:v', String(plan.sheets), '-q:v', '5', '-f', 'image2', '-start_number', '1', o.sheets,
  ];
}
