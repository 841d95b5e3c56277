/** Sources the mesh refuses before spending any transcoding on them. */
import { InputError, int, type Env, type Probe } from '@mesh/common';
import { displaySize } from './geometry.ts';

export interface SourceLimits {
  maxBytes: number;
  maxDurationSec: number;
  /** Width x height of the picture. */
  maxPixels: number;
}

export const DEFAULT_LIMITS: SourceLimits = {
  maxBytes: 20 * 1024 ** 3,
  maxDurationSec: 4 * 3600,
  maxPixels: 7680 * 4320,
};

const gib = (n: number) => `${(n / 1024 ** 3).toFixed(n < 1024 ** 3 ? 3 : 1)} GiB`;

/** Before download: the object's size. */
export function checkSize(sizeBytes: number, limits: SourceLimits): void {
  if (sizeBytes > limits.maxBytes) {
    throw new InputError('SOURCE_TOO_LARGE', `the source is ${gib(sizeBytes)}, over the ${gib(limits.maxBytes)} limit`);
  }
}

/** After probing: duration and picture size. */
export function checkProbe(probe: Probe, limits: SourceLimits): void {
  if (probe.durationSec > limits.maxDurationSec) {
    throw new InputError('SOURCE_TOO_LONG', `the video lasts ${Math.round(probe.durationSec)} s, over the ${limits.maxDurationSec} s limit`);
  }
  const { width, height } = displaySize(probe);
  if (width * height > limits.maxPixels) {
    throw new InputError('SOURCE_TOO_LARGE', `the picture is ${width}x${height}, over the limit of ${limits.maxPixels} pixels`);
  }
}

/*
 * Every tool run is bounded twice, because the probe reads only a file's headers and a crafted (or merely
 * concatenated) file can decode far longer than it declares: 30 MPEG-TS files of 10 s joined end to end
 * probe as 10 s and decode as 300 s.
 *
 * 1. By media time: the input option `-t decodeStopSec(declared)` stops decoding shortly past the declared
 *    duration, whatever the file holds after; and output progress past `declared + slack` fails the run
 *    with SOURCE_TOO_LONG (runTool, `declaredSec`). It fails rather than cuts: a cut video would be
 *    published as a SUCCESS with its end missing and nobody told, and what the file declares (which the
 *    duration limit and the plan were checked against) is not what it holds. The reason says so.
 * 2. By wall-clock time (`timeoutMs`), for what media time cannot see (timestamps that never advance, a
 *    pathological decode): past its budget the tool is stopped and the run fails with TOOL_TIMEOUT, which
 *    is retried (a loaded host is a possible cause) and dead-lettered after MAX_DELIVER tries.
 */

/** How much longer than declared a source may decode: container durations are estimates (last frame, audio priming, TS timestamps). */
export function durationSlackSec(declaredSec: number): number {
  return 2 + declaredSec / 100;
}

/** Input `-t`: decoding stops here, past the slack, so that decoding on past the slack can be told apart from ending within it. */
export function decodeStopSec(declaredSec: number): number {
  return declaredSec + 2 * durationSlackSec(declaredSec);
}

/** Seconds every tool run gets on top of its share: start-up, the first request to S3, writing out. */
export const TOOL_BASE_BUDGET_MS = 60_000;

/** A run may take this many times the media it decodes (FFMPEG_TIME_FACTOR): 8K HEVC on two slow cores stays under it. */
export const DEFAULT_TIME_FACTOR = 20;

/** FFMPEG_TIME_FACTOR, validated at start. */
export function timeFactorConfig(env: Env): number {
  return int(env, 'FFMPEG_TIME_FACTOR', DEFAULT_TIME_FACTOR, { min: 1, max: 1000 });
}

/** Wall-clock budget of an FFmpeg run that decodes `mediaSec` seconds of the source. */
export function toolBudgetMs(mediaSec: number, factor: number): number {
  return TOOL_BASE_BUDGET_MS + Math.ceil(factor * mediaSec * 1000);
}

/** ffprobe reads headers and a few seconds of packets (its own probesize/analyzeduration limits). */
export const PROBE_BUDGET_MS = 120_000;

/** Stream copies of our own (already bounded) encodes, Shaka Packager's and a chunked rung's join: at least 1 MB/s, plus the base. */
export function remuxBudgetMs(inputBytes: number): number {
  return TOOL_BASE_BUDGET_MS + Math.ceil(inputBytes / 1000);
}
export const packagerBudgetMs = remuxBudgetMs;
