/**
 * uploader: work.upload (a manifest whose segments are in the output) -> `<object_key>/manifest.mpd` in S3_OUTPUT_BUCKET
 *
 * The commit point of a package: the packager has written the segments, and publishing the manifest
 * makes them reachable. It is written under the job's lock and only if it holds at least every rendition
 * already published: a late or repeated upload never takes a rendition away from clients.
 */
import { publishEvent } from '@mesh/bus';
import { int, layout, MeshError, msgId, optional, s3Config, type Env } from '@mesh/common';
import { getRecord, mayPublish, recordPublished, runStageService, withJobLock } from '@mesh/jobs';
import { copyObject, publicUrl } from '@mesh/storage';

/** Clients re-read the manifest: it grows as renditions are added. */
const MANIFEST_CACHE = 'no-cache';

await runStageService({
  name: 'uploader',
  kind: 'upload',
  config: (env: Env) => ({
    s3: s3Config(env),
    /** Where clients fetch outputs from, when not the S3 endpoint itself (a CDN, say). */
    publicBaseUrl: optional(env, 'S3_PUBLIC_URL'),
    concurrency: int(env, 'UPLOADER_CONCURRENCY', 2, { min: 1, max: 16 }),
  }),
  stage: () => 'upload',
  async handle({ job, renditions, manifest: from }, { log }, { bus, states, s3, config }) {
    await withJobLock(states, job.jobId, async () => {
      const rec = await getRecord(states, job.jobId);
      // A failed job publishes nothing until it is reopened (a retry, or its dead letters re-driven).
      if (rec?.phase === 'failed') throw new MeshError('JOB_FAILED', `the ${renditions.join('+')} manifest was ready after the job had failed; kept to be re-driven`, { permanent: true });
      if (rec && !mayPublish(rec, renditions)) {
        log.info({ renditions, published: rec.published }, 'stale manifest not published: a larger one is out');
        return;
      }
      const manifest = { bucket: config.s3.outputBucket, key: layout.outputPrefix(job.objectKey) + layout.manifestName };
      await copyObject(s3, from, manifest, { cacheControl: MANIFEST_CACHE });
      const url = publicUrl(config.publicBaseUrl ?? config.s3.endpoint ?? `https://s3.${config.s3.region}.amazonaws.com`, manifest);
      await publishEvent(bus, { type: 'manifest.published', jobId: job.jobId, renditions, object: manifest, url }, msgId(job, 'manifest', renditions.join('-')));
      await recordPublished(states, job.jobId, renditions, { object: manifest, url });
      log.info({ renditions, url }, 'manifest published');
    });
  },
});
