import type { Rendition } from '@mesh/common';

export interface RenditionProfile {
  name: Rendition;
  /** Target size of the short side (height of a landscape video, width of a portrait one). */
  shortSide: number;
  videoKbps: number;
  /** VBV limits keep segment sizes near the nominal bitrate, so players' bandwidth estimates hold. */
  maxKbps: number;
  bufKbps: number;
  audioKbps: number;
  /** x264 preset: speed against compression. */
  preset: string;
  h264Profile: 'high' | 'main';
  /**
   * CPU niceness of the encode: on a host shared with a more urgent encode, this one gets only the CPU
   * the other leaves (and is paused outright while it runs, see yield.ts and docs/performance.md).
   * On a host of its own it changes nothing.
   */
  niceness: number;
  /** 0 = most urgent. On a shared host an encode pauses while a more urgent one runs (yield.ts). */
  rank: number;
}

export const PROFILES: Record<Rendition, RenditionProfile> = {
  '720p': { name: '720p', shortSide: 720, videoKbps: 2800, maxKbps: 3000, bufKbps: 6000, audioKbps: 128, preset: 'veryfast', h264Profile: 'high', niceness: 0, rank: 0 },
  '360p': { name: '360p', shortSide: 360, videoKbps: 800, maxKbps: 900, bufKbps: 1800, audioKbps: 128, preset: 'veryfast', h264Profile: 'main', niceness: 19, rank: 1 },
};

/** DASH segment length. Every rendition has a keyframe at each multiple of it. */
export const SEGMENT_SECONDS = 4;
