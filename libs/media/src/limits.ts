/** Sources the mesh refuses before spending any transcoding on them. */
import { InputError, type Probe } from '@mesh/common';
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
