/**
 * uploader: work.upload (a package in the work bucket) -> S3_OUTPUT_BUCKET under `<object_key>/`
 *
 * Segments go first and the manifest last, so a client never reads a manifest naming a missing segment.
 * The manifest is written under the job's lock and only if it holds at least every rendition already
 * published: a late or repeated upload never takes a rendition away from clients.
 */
import { publishEvent } from '@mesh/bus';
import { int, layout, mapLimit, MeshError, msgId, optional, s3Config, type Env, type ObjectRef } from '@mesh/common';
import { getRecord, mayPublish, recordPublished, runStageService, withJobLock } from '@mesh/jobs';
import { contentTypeFor, copyObject, publicUrl } from '@mesh/storage';

/** Segments are immutable once named; the manifest changes as renditions are added. */
const SEGMENT_CACHE = 'public, max-age=31536000, immutable';
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
  async handle({ job, renditions, package: pkg }, { log }, { bus, states, s3, config }) {
    const out = (file: string): ObjectRef => ({ bucket: config.s3.outputBucket, key: layout.outputPrefix(job.objectKey) + file });
    const from = (file: string): ObjectRef => ({ bucket: pkg.bucket, key: pkg.prefix + file });
    const segments = pkg.files.filter((f) => f !== pkg.manifest);
    await mapLimit(segments, 8, (f) => copyObject(s3, from(f), out(f), { contentType: contentTypeFor(f), cacheControl: SEGMENT_CACHE }));

    await withJobLock(states, job.jobId, async () => {
      const rec = await getRecord(states, job.jobId);
      // A failed job publishes nothing until it is reopened (a retry, or its dead letters re-driven).
      if (rec?.phase === 'failed') throw new MeshError('JOB_FAILED', `the ${renditions.join('+')} package was ready after the job had failed; kept to be re-driven`, { permanent: true });
      if (rec && !mayPublish(rec, renditions)) {
        log.info({ renditions, published: rec.published }, 'stale manifest not published: a larger one is out');
        return;
      }
      const manifest = out(pkg.manifest);
      await copyObject(s3, from(pkg.manifest), manifest, { contentType: contentTypeFor(pkg.manifest), cacheControl: MANIFEST_CACHE });
      const url = publicUrl(config.publicBaseUrl ?? config.s3.endpoint ?? `https://s3.${config.s3.region}.amazonaws.com`, manifest);
      await publishEvent(bus, { type: 'manifest.published', jobId: job.jobId, renditions, object: manifest, url }, msgId(job, 'manifest', renditions.join('-')));
      await recordPublished(states, job.jobId, renditions, { object: manifest, url });
      log.info({ renditions, url }, 'manifest published');
    });
  },
});
