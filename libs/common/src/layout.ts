/**
 * Where things live in S3. Every key is made by `objectKey` (keys.ts), so none can leave its bucket; the
 * bucket itself always comes from the service's config, never from a message.
 *
 *   input bucket      <object_key>                                   the client's source, read in place
 *   work bucket       jobs/<jobId>/<attempt>/renditions/<r>.mp4      encoded renditions
 *                     jobs/<jobId>/<attempt>/chunks/<r>/<n>.mp4      a chunked rung's parts (<n>: 0, 1, ...; audio), joined into its rendition
 *                     jobs/<jobId>/<attempt>/manifests/<r-r>.mpd     manifests waiting to be published
 *   output bucket     <object_key>/manifest.mpd, master.m3u8         the published DASH and HLS manifests (change as they grow)
 *                     <object_key>/<jobId>.<attempt>/...             that attempt's segments: written once, never changed
 *                     <object_key>/<jobId>.<attempt>/thumbs/...      its seek previews: tile_<n>.jpg sprite sheets,
 *                                                                    storyboard.vtt, storyboard.json (written once)
 *   thumbnail bucket  <video_id>                                     the JPEG preview
 */
import { keySegments, objectKey } from './keys.ts';
import type { Rendition } from './messages.ts';

/** One run of a job: a retry is a new attempt, with its own scratch space and segment folder. */
export interface JobAttempt {
  jobId: string;
  attempt: number;
}

export const layout = {
  source: (job: { objectKey: string }) => objectKey(...keySegments(job.objectKey)),
  rendition: (job: JobAttempt, rendition: Rendition) => objectKey('jobs', job.jobId, String(job.attempt), 'renditions', `${rendition}.mp4`),
  /** One part of a chunked rung: video chunk `n` (`0.mp4`, `1.mp4`, ...) or the rung's audio (`audio.mp4`). */
  chunk: (job: JobAttempt, rendition: Rendition, part: number | 'audio') => objectKey('jobs', job.jobId, String(job.attempt), 'chunks', rendition, `${part}.mp4`),
  /** One DASH manifest and one HLS master per rendition set, waiting in the work bucket to be published. */
  workManifest: (job: JobAttempt, renditions: readonly Rendition[]) => objectKey('jobs', job.jobId, String(job.attempt), 'manifests', `${renditions.join('-')}.mpd`),
  workMaster: (job: JobAttempt, renditions: readonly Rendition[]) => objectKey('jobs', job.jobId, String(job.attempt), 'manifests', `${renditions.join('-')}.m3u8`),
  /**
   * The attempt's own folder under `<object_key>/`: its segments (init segments too) are never rewritten
   * by another job or attempt, so they can be cached as immutable.
   */
  packageFolder: (job: JobAttempt) => `${job.jobId}.${job.attempt}`,
  /** A key under the package prefix `<object_key>/` in the output bucket. */
  output: (job: { objectKey: string }, ...path: string[]) => objectKey(...keySegments(job.objectKey), ...path),
  manifest: (job: { objectKey: string }) => layout.output(job, MANIFEST_NAME),
  master: (job: { objectKey: string }) => layout.output(job, MASTER_NAME),
  thumbnail: (job: { videoId: string }) => objectKey(job.videoId),
  /** The folder of the attempt's seek previews, and a file in it (`sheetName(n)`, STORYBOARD_VTT, STORYBOARD_JSON). */
  storyboardFolder: (job: JobAttempt & { objectKey: string }) => layout.output(job, layout.packageFolder(job), STORYBOARD_DIR),
  storyboard: (job: JobAttempt & { objectKey: string }, name: string) => layout.output(job, layout.packageFolder(job), STORYBOARD_DIR, name),
  /** The DASH image track's SegmentTemplate@media: relative to the manifest, like the segments' own. */
  storyboardTemplate: (job: JobAttempt) => `${layout.packageFolder(job)}/${STORYBOARD_DIR}/${sheetName('$Number$')}`,
} as const;

export const STORYBOARD_DIR = 'thumbs';
export const STORYBOARD_VTT = 'storyboard.vtt';
export const STORYBOARD_JSON = 'storyboard.json';
/** Sprite sheet `n` (from 1, as FFmpeg's image2 muxer and the DASH template count). */
export const sheetName = (n: number | '$Number$' | '%d') => `tile_${n}.jpg`;

export const MANIFEST_NAME = 'manifest.mpd';
export const MASTER_NAME = 'master.m3u8';
