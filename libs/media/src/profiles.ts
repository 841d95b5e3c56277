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
   * CPU niceness of the encode. When both transcoders share a host, 720p runs as fast as alone and 360p
   * fills the cores' idle gaps: the first playable manifest comes as soon as 720p alone would, and both
   * finish sooner than one after the other (measured in docs/performance.md). On a host of its own it changes nothing.
   */
  niceness: number;
}

export const PROFILES: Record<Rendition, RenditionProfile> = {
  '720p': { name: '720p', shortSide: 720, videoKbps: 2800, maxKbps: 3000, bufKbps: 6000, audioKbps: 128, preset: 'veryfast', h264Profile: 'high', niceness: 0 },
  '360p': { name: '360p', shortSide: 360, videoKbps: 800, maxKbps: 900, bufKbps: 1800, audioKbps: 128, preset: 'veryfast', h264Profile: 'main', niceness: 19 },
};

/** DASH segment length. Every rendition has a keyframe at each multiple of it. */
export const SEGMENT_SECONDS = 4;
