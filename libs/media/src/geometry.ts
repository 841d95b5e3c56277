/** Output sizes and the per-job media plan, from the probe alone. */
import type { Ladder, MediaPlan, Probe, Rational } from '@mesh/common';
import { SEGMENT_SECONDS } from './profiles.ts';

/**
 * The size a player shows: the coded width stretched by the pixel aspect ratio, then width and height
 * swapped for 90/270 rotation.
 */
export function displaySize(probe: Probe): { width: number; height: number } {
  const { height, rotation, sampleAspectRatio: sar } = probe.video;
  const width = Math.round((probe.video.width * sar.num) / sar.den);
  return rotation === 90 || rotation === 270 ? { width: height, height: width } : { width, height };
}

const even = (n: number) => Math.max(2, 2 * Math.round(n / 2));

/** Short side = `shortSide`, long side by the display aspect ratio; both even (H.264 4:2:0 needs it). */
export function outputSize(probe: Probe, shortSide: number): { width: number; height: number } {
  const { width, height } = displaySize(probe);
  const portrait = height > width;
  const short = portrait ? width : height;
  const long = portrait ? height : width;
  const outShort = even(shortSide);
  const outLong = even((long * shortSide) / short);
  return portrait ? { width: outShort, height: outLong } : { width: outLong, height: outShort };
}

/** Common rates: a measured average within 1% of one of these is the closest one (VFR phone clips). */
const STANDARD_RATES: Rational[] = [
  { num: 24000, den: 1001 },
  { num: 24, den: 1 },
  { num: 25, den: 1 },
  { num: 30000, den: 1001 },
  { num: 30, den: 1 },
  { num: 50, den: 1 },
  { num: 60000, den: 1001 },
  { num: 60, den: 1 },
];

export const MAX_FPS = 60;

/** One constant output rate for every rendition: the source's, snapped to a standard rate, at most 60. */
export function outputFrameRate(source: Rational): Rational {
  let fps = source.num / source.den;
  if (!Number.isFinite(fps) || fps <= 0) return { num: 30, den: 1 };
  while (fps > MAX_FPS + 0.5) fps /= 2;
  const off = (r: Rational) => Math.abs(r.num / r.den - fps) / fps;
  const closest = [...STANDARD_RATES].sort((a, b) => off(a) - off(b))[0]!;
  return off(closest) < 0.01 ? closest : { num: Math.max(1, Math.round(fps)), den: 1 };
}

/**
 * Which rungs to make: of the ladder's (or of those the client asked for), every rung not larger than the
 * source, since upscaling adds bytes and no picture; the short side is the target, so a portrait video
 * gets the same rungs as its landscape twin. A source smaller than every rung still gets one rendition,
 * the smallest rung's, at the source's own size. Largest first.
 */
export function planMedia(probe: Probe, o: { hasAudio: boolean; ladder: Ladder; requested?: readonly string[] | undefined; segmentSeconds?: number }): MediaPlan {
  const { width, height } = displaySize(probe);
  const sourceShort = Math.min(width, height);
  const wanted = o.requested ? o.ladder.filter((r) => o.requested!.includes(r.name)) : o.ladder;
  if (wanted.length === 0) throw new Error('planMedia: none of the requested rungs is in the ladder');
  const fits = wanted.filter((r) => r.shortSide <= sourceShort);
  const smallest = wanted.reduce((a, b) => (b.shortSide < a.shortSide ? b : a));
  const chosen = fits.length > 0 ? fits.map((r) => ({ name: r.name, shortSide: r.shortSide })) : [{ name: smallest.name, shortSide: sourceShort }];
  return {
    renditions: chosen.map((r) => r.name),
    sizes: Object.fromEntries(chosen.map((r) => [r.name, outputSize(probe, r.shortSide)])),
    frameRate: outputFrameRate(probe.video.frameRate),
    segmentSeconds: o.segmentSeconds ?? SEGMENT_SECONDS,
    audio: o.hasAudio && probe.audio !== null,
  };
}

/** Frames per GOP: one GOP per segment, so every segment starts with a keyframe. */
export function gopFrames(plan: MediaPlan): number {
  return Math.max(1, Math.round((plan.segmentSeconds * plan.frameRate.num) / plan.frameRate.den));
}
