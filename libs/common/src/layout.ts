/**
 * Where things live in S3. Work-bucket keys are per job, so a job's scratch data can be listed and
 * expired together; outputs sit under the client's object key.
 */
import type { Rendition } from './messages.ts';

export const layout = {
  rendition: (jobId: string, rendition: Rendition) => `jobs/${jobId}/renditions/${rendition}.mp4`,
  /** One manifest per rendition set, waiting in the work bucket to be published. */
  manifest: (jobId: string, renditions: readonly Rendition[]) => `jobs/${jobId}/manifests/${renditions.join('-')}.mpd`,
  /** The DASH package of `object_key` is written under `<object_key>/`. */
  outputPrefix: (objectKey: string) => `${objectKey}/`,
  manifestName: 'manifest.mpd',
} as const;
