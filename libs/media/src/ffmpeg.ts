/** FFmpeg argument arrays, built from the probe, the job's plan and a rendition profile. */
import type { MediaPlan, Probe, Rung, StoryboardPlan } from '@mesh/common';
import { BT709_TAGS, bt709Filters, JPEG_FILTERS, X264_BT709_VUI } from './colour.ts';
import { gopFrames, outputSize } from './geometry.ts';
import { inputGuard, type GuardOptions } from './guard.ts';
import { decodeStopSec } from './limits.ts';
import { CHUNK_DECODE_MARGIN_SEC } from './chunks.ts';

/** Where the source is read: a local path or a presigned URL, with the URL's If-Match pin (guard.ts). */
type Input = { input: string } & GuardOptions;

/**
 * Decoding stops shortly past the probed duration (see limits.ts): a file holding more than it declares
 * cannot make the run longer. An input option, so FFmpeg stops reading, not only writing.
 */
const stopDecoding = (probe: Probe): string[] => ['-t', decodeStopSec(probe.durationSec).toFixed(3)];

/** The rung's output size: from the plan (decided once, by the downloader), else from the probe. */
function sizeOf(probe: Probe, plan: MediaPlan, profile: Rung): { width: number; height: number } {
  return plan.sizes[profile.name] ?? outputSize(probe, profile.shortSide);
}

const rateOf = (plan: MediaPlan) => `${plan.frameRate.num}/${plan.frameRate.den}`;

/**
 * The picture: every frame put on the output grid (frame n at n / rate), then `range` (a chunk's frames),
 * then scaled. `fps` before the rest, in the whole encode and in every chunk: which source frame lands on
 * grid frame n depends only on the source frames around n / rate, so a chunk decoded from a seek gets the
 * frames the whole encode gets (the encoder's own -r conversion decides from the frames before, and a
 * chunk has not seen those).
 */
function videoFilters(probe: Probe, plan: MediaPlan, profile: Rung, range: string[], fps: string): string {
  const { width, height } = sizeOf(probe, plan, profile);
  return [
    // Interlaced sources: one progressive frame per frame, only where the frame is flagged interlaced.
    ...(probe.video.interlaced ? ['yadif=mode=send_frame:deint=interlaced'] : []),
    fps,
    ...range,
    // FFmpeg has already rotated the frames upright (autorotate), so this is the display size. Square
    // pixels, so width/height in the manifest are what players show. 8-bit 4:2:0 BT.709 SDR: what every
    // browser decodes and shows right (HDR is tone-mapped, 10-bit and 4:2:2 converted; colour.ts).
    ...bt709Filters(probe, `${width}:${height}`),
  ].join(',');
}

/**
 * Frame `firstFrame + n` (n counted by the encoder) is a keyframe when a segment starts at it: the first
 * frame at or after each multiple of the segment duration. Integer arithmetic on the frame number, so a
 * chunk that starts at frame A forces exactly the keyframes the whole encode has from A on, also at
 * fractional rates where a segment is not a whole number of frames.
 */
export function keyframeExpr(plan: MediaPlan, firstFrame = 0): string {
  const { num, den } = plan.frameRate;
  const perSegment = plan.segmentSeconds * num;
  const frame = (k: number) => (k === 0 ? 'n' : k > 0 ? `(n+${k})` : `(n${k})`);
  return `expr:lt(floor(${frame(firstFrame - 1)}*${den}/${perSegment}),floor(${frame(firstFrame)}*${den}/${perSegment}))`;
}

/** H.264 with the rung's settings, keyframes on the segment grid from `firstFrame` on. */
function videoCodecArgs(plan: MediaPlan, profile: Rung, firstFrame: number): string[] {
  const gop = gopFrames(plan);
  return [
    '-c:v', 'libx264', '-preset', profile.preset, '-profile:v', profile.profile,
    '-b:v', `${profile.videoKbps}k`, '-maxrate', `${profile.maxKbps}k`, '-bufsize', `${profile.bufKbps}k`,
    // One closed GOP per segment and no scene-cut keyframes: every segment of every rendition starts
    // with an IDR frame at the same time, so players can switch renditions at any segment.
    '-g', String(gop), '-keyint_min', String(gop), '-sc_threshold', '0',
    // The VUI says BT.709 limited range too: the packager keeps the bitstream, not the MP4 box.
    '-x264-params', `scenecut=0:open_gop=0:${X264_BT709_VUI}`,
    // Tagged explicitly, never left for players to guess (nor copied from an HDR source).
    ...BT709_TAGS,
    // And force one where each segment starts, for rates where the segment is not a whole number of frames.
    '-force_key_frames', keyframeExpr(plan, firstFrame),
  ];
}

/** AAC stereo at 48 kHz, the rung's bitrate: what every player decodes. */
const audioCodecArgs = (profile: Rung): string[] => ['-c:a', 'aac', '-b:a', `${profile.audioKbps}k`, '-ac', '2', '-ar', '48000'];

/** Drop subtitles, data streams and metadata (phones put GPS positions there). */
const DROP_EXTRAS = ['-sn', '-dn', '-map_metadata', '-1', '-map_chapters', '-1'];

/** The end of every encode: the index first, so the packager and any direct player read it without seeking to the end; machine-readable progress on stdout. */
const OUTPUT_TAIL = (output: string) => ['-movflags', '+faststart', '-progress', 'pipe:1', '-nostats', output];

const LEAD = ['-hide_banner', '-nostdin', '-y', '-loglevel', 'warning'];

/**
 * FFmpeg 5.1 starts its clock at the earliest start of the streams a run uses: when audio begins before
 * the video, a video-only run puts the first frame at 0 where the whole encode (video and audio) puts it
 * later. A part of a chunked rung therefore reads the stream it does not encode too, copied to nowhere
 * (no decoding), so every part and the whole encode share one clock.
 */
const ALSO_READ = (stream: string): string[] => ['-map', stream, '-c', 'copy', '-f', 'null', '-'];

/** The encode of one rung: its size from the plan (decided once, by the downloader), its settings from the rung. */
export function transcodeArgs(o: Input & { output: string; probe: Probe; plan: MediaPlan; profile: Rung }): string[] {
  const { probe, plan, profile } = o;
  return [
    ...LEAD,
    ...inputGuard(o.input, o),
    ...stopDecoding(probe),
    '-i', o.input,
    '-map', '0:v:0',
    ...(plan.audio ? ['-map', '0:a:0'] : []),
    ...DROP_EXTRAS,
    // From 0: a video that starts after its audio begins with its first frame repeated, as -fps_mode cfr did.
    '-vf', videoFilters(probe, plan, profile, [], `fps=${rateOf(plan)}:start_time=0`),
    // One constant rate shared by all renditions: keyframe times only match if the frame times do.
    '-r', rateOf(plan), '-fps_mode', 'cfr',
    ...videoCodecArgs(plan, profile, 0),
    ...(plan.audio ? audioCodecArgs(profile) : ['-an']),
    ...OUTPUT_TAIL(o.output),
  ];
}

/**
 * One chunk of a rung: grid frames [startFrame, endFrame) (to the end when endFrame is null), video only,
 * as the whole encode would have them, starting with a keyframe (x264 opens with a closed GOP's IDR).
 * Decoding starts at `seekSec` (chunkSeekSec: some time before the first frame) with the source's
 * timestamps kept (`-copyts -start_at_zero`: times from the file's start, as in the whole encode), and
 * stops a margin past the last frame. Timestamps start at 0 and nothing repeats or drops frames after the
 * filters (`-fps_mode passthrough`), so a chunk that misses its first frames starts late and is caught
 * (chunkProblem) instead of being padded.
 */
export function chunkArgs(o: Input & { output: string; probe: Probe; plan: MediaPlan; profile: Rung; chunk: { startFrame: number; endFrame: number | null }; seekSec: number }): string[] {
  const { probe, plan, profile, chunk, seekSec } = o;
  const { num, den } = plan.frameRate;
  const a = chunk.startFrame;
  // Decoding stops a margin past the chunk's end, or as a whole encode would for the last chunk.
  const stopSec = chunk.endFrame === null ? decodeStopSec(probe.durationSec) : (chunk.endFrame * den) / num + CHUNK_DECODE_MARGIN_SEC;
  // trim counts in the fps filter's time base: one tick per output frame.
  const range = [`trim=${[...(a > 0 ? [`start_pts=${a}`] : []), ...(chunk.endFrame !== null ? [`end_pts=${chunk.endFrame}`] : [])].join(':')}`, `setpts=PTS-${a}`];
  return [
    ...LEAD,
    ...inputGuard(o.input, o),
    ...(seekSec > 0 ? ['-ss', seekSec.toFixed(3), '-copyts', '-start_at_zero'] : []),
    '-t', Math.max(0.001, stopSec - seekSec).toFixed(3),
    '-i', o.input,
    '-map', '0:v:0', '-an',
    ...DROP_EXTRAS,
    // The first chunk pads the start from 0 as the whole encode does; later ones start mid-stream.
    '-vf', videoFilters(probe, plan, profile, range, a === 0 ? `fps=${rateOf(plan)}:start_time=0` : `fps=${rateOf(plan)}`),
    '-fps_mode', 'passthrough',
    ...videoCodecArgs(plan, profile, a),
    ...OUTPUT_TAIL(o.output),
    ...(plan.audio ? ALSO_READ('0:a:0') : []),
  ];
}

/** A chunked rung's audio: the whole source's, encoded once (no gaps or clicks at the chunks' joins), as the whole encode would. */
export function audioArgs(o: Input & { output: string; probe: Probe; profile: Rung }): string[] {
  return [
    ...LEAD,
    ...inputGuard(o.input, o),
    ...stopDecoding(o.probe),
    '-i', o.input,
    '-map', '0:a:0', '-vn',
    ...DROP_EXTRAS,
    ...audioCodecArgs(o.profile),
    ...OUTPUT_TAIL(o.output),
    ...ALSO_READ('0:v:0'),
  ];
}

/** Our own MP4s (chunks, audio), read back: local files, MP4 only, H.264 and AAC only. */
const OWN_MP4 = (formats: string) => ['-protocol_whitelist', 'file', '-format_whitelist', formats, '-codec_whitelist', 'h264,aac'];
const MP4_DEMUXER = 'mov,mp4,m4a,3gp,3g2,mj2';

/**
 * Joins a rung's chunks by stream copy (the concat demuxer over `list`, a list of the chunk files beside
 * it that we wrote: `safe` refuses any other path) and muxes the audio in, as the whole encode lays it out.
 */
export function joinArgs(o: { list: string; audio?: string; output: string }): string[] {
  return [
    ...LEAD,
    ...OWN_MP4(`concat,${MP4_DEMUXER}`), '-f', 'concat', '-safe', '1', '-i', o.list,
    ...(o.audio ? [...OWN_MP4(MP4_DEMUXER), '-i', o.audio] : []),
    '-map', '0:v:0',
    ...(o.audio ? ['-map', '1:a:0'] : []),
    '-c', 'copy', '-map_metadata', '-1',
    '-movflags', '+faststart',
    o.output,
  ];
}

/** The concat list of `files` (plain names in the list's directory). */
export function concatList(files: string[]): string {
  for (const f of files) if (!/^[\w.-]+$/.test(f) || f.startsWith('.')) throw new Error(`concatList: ${JSON.stringify(f)} is not a plain file name`);
  return `ffconcat version 1.0\n${files.map((f) => `file ${f}\n`).join('')}`;
}

/** ffprobe of an encoded chunk: its video's frame count (from the MP4 index) and start time. */
export function chunkCheckArgs(path: string): string[] {
  return ['-hide_banner', '-v', 'error', ...OWN_MP4(MP4_DEMUXER), '-select_streams', 'v:0', '-show_entries', 'stream=nb_frames,start_time', '-of', 'json', path];
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
