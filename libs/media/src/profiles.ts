import type { Rung } from '@mesh/common';

/** A rung of the ladder, and how its encode shares a host with the others. */
export interface EncodeProfile extends Rung {
  /**
   * CPU niceness of the encode: on a host shared with a more urgent encode, this one gets only the CPU
   * the other leaves (and is paused outright while it runs, see yield.ts and docs/performance.md).
   * On a host of its own it changes nothing.
   */
  niceness: number;
  /** 0 = most urgent. On a shared host an encode pauses while a more urgent one runs (yield.ts). */
  rank: number;
}

/**
 * The first rung (FIRST_RENDITION: the way to the first playable manifest) is urgent; the others run at the
 * lowest priority and pause while it runs, as the 360p did beside the 720p.
 */
export function encodeProfile(rung: Rung, first: string): EncodeProfile {
  const urgent = rung.name === first;
  return { ...rung, niceness: urgent ? 0 : 19, rank: urgent ? 0 : 1 };
}

/** DASH segment length. Every rendition has a keyframe at each multiple of it. */
export const SEGMENT_SECONDS = 4;
