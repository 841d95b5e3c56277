/**
 * Where things live in S3. Work-bucket keys are per job, so a job's scratch data can be listed and
 * expired together; outputs sit under the client's object key.
 */
import type { Rendition } from './messages.ts';

export const layout = {
  source: (jobId: string) => `jobs/${jobId}/source`,
  rendition: (jobId: string, rendition: Rendition) => `jobs/${jobId}/renditions/${rendition}.mp4`,
  /** One folder per rendition set: a package never overwrites another's files in the work bucket. */
  packagePrefix: (jobId: string, renditions: readonly Rendition[]) => `jobs/${jobId}/package/${renditions.join('-')}/`,
  /** The DASH package of `object_key` is written under `<object_key>/`. */
  outputPrefix: (objectKey: string) => `${objectKey}/`,
  manifestName: 'manifest.mpd',
} as const;
