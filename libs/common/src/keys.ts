/**
 * Object keys: the one function that makes them, and the rules for the two keys a client chooses.
 *
 * With path-style addressing (MinIO, the local stand-in, any `S3_ENDPOINT`) a key is appended to
 * `/<bucket>/`, and a `..` segment in it reads as "the parent of this bucket" to any server or proxy that
 * normalises paths: `video_id = "../video-output/<key>/manifest.mpd"` once overwrote a published manifest.
 * A key made by `objectKey` has no empty, `.` or `..` segment, no control character and no leading `/`,
 * so it can only name an object inside the bucket it is used with.
 */
import { MeshError } from './errors.ts';

/** S3's limit on a key, in UTF-8 bytes. */
export const MAX_KEY_BYTES = 1024;

/** A key that would leave its bucket, or that S3 refuses: a bug or a forged message, never retried. */
export class KeyError extends MeshError {
  override name = 'KeyError';
  constructor(message: string) {
    super('INVALID_KEY', message, { permanent: true });
  }
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;

/** Why `segment` cannot be one segment of a key, or null when it can. */
export function segmentProblem(segment: string): string | null {
  if (segment === '') return 'an empty segment';
  if (segment === '.' || segment === '..') return `a '${segment}' segment`;
  if (segment.includes('/')) return "a '/' inside a segment";
  if (CONTROL.test(segment)) return 'a control character';
  return null;
}

/** Joins path segments into a key that stays inside its bucket; throws KeyError otherwise. */
export function objectKey(...segments: string[]): string {
  if (segments.length === 0) throw new KeyError('an object key needs at least one segment');
  for (const segment of segments) {
    const problem = segmentProblem(segment);
    if (problem) throw new KeyError(`object key ${JSON.stringify(segments.join('/'))} has ${problem}`);
  }
  const key = segments.join('/');
  if (Buffer.byteLength(key) > MAX_KEY_BYTES) throw new KeyError(`object key is longer than ${MAX_KEY_BYTES} bytes`);
  return key;
}

/** The segments of a client's `object_key`: validated by `objectKeyProblem` at the API. */
export function keySegments(key: string): string[] {
  return key.split('/');
}

/**
 * Why a client's `object_key` is not acceptable, or null. It names the source in the input bucket and,
 * as a folder, the package in the output bucket, so it must be a key of segments `objectKey` accepts,
 * with room for the package's own names after it.
 */
export function objectKeyProblem(key: string): string | null {
  if (key.startsWith('/')) return "must not start with '/'";
  for (const segment of keySegments(key)) {
    const problem = segmentProblem(segment);
    if (problem) return `must not contain ${problem === 'an empty segment' ? "an empty segment ('//' or a trailing '/')" : problem}`;
  }
  if (Buffer.byteLength(key) > OBJECT_KEY_MAX_BYTES) return `must be at most ${OBJECT_KEY_MAX_BYTES} bytes`;
  return null;
}

/** Leaves room under `<object_key>/` for the package's folder and file names. */
export const OBJECT_KEY_MAX_BYTES = 900;

/**
 * `video_id` is the thumbnail's whole key in its bucket (as the original service did), so it is one
 * plain segment: 1 to 128 letters, digits, `_`, `-` and `.`, starting with a letter, digit or `_`.
 */
export const VIDEO_ID_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
export const VIDEO_ID_RULE = "1 to 128 letters, digits, '_', '-' or '.', starting with a letter, digit or '_'";
