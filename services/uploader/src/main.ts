/**
 * uploader: work.upload (manifests whose segments are in the output) -> `<object_key>/manifest.mpd` and
 * `<object_key>/master.m3u8` in S3_OUTPUT_BUCKET
 *
 * The commit point of a package: the packager has written the segments, and publishing the manifest
 * makes them reachable. Only the job attempt that owns the output prefix publishes there, under the
 * prefix's lease, and only a manifest that may replace the one in place (mayReplaceManifest: the same
 * attempt's only grows; another job's must hold at least as many renditions). The write itself is
 * conditional on the ETag read before deciding, so even a holder that stalled past its lease cannot put
 * back a smaller manifest: S3 refuses the stale write and the decision is made again.
 */
import { publishEvent } from '@mesh/bus';
import { InputError, int, layout, MeshError, msgId, optional, s3Config, type Env, type ObjectRef } from '@mesh/common';
import { getRecord, isCancelled, mayPublish, mayReplaceManifest, outputOwner, recordPublished, runStageService, withOutputLock, type ManifestOrigin } from '@mesh/jobs';
import { getText, headObject, PreconditionFailedError, publicEndpoint, publicUrl, putObject } from '@mesh/storage';

/** Clients re-read the manifest: it grows as renditions are added. */
const MANIFEST_CACHE = 'no-cache';

/** Who wrote a manifest, in its object metadata (S3 lowercases the names). */
const originMetadata = (o: ManifestOrigin) => ({ 'mesh-job': o.jobId, 'mesh-attempt': String(o.attempt), 'mesh-renditions': o.renditions.join(',') });
function originOf(metadata: Record<string, string>): ManifestOrigin | null {
  const jobId = metadata['mesh-job'];
  if (!jobId) return null; // Written before origins were kept: any manifest of ours may replace it.
  return { jobId, attempt: Number(metadata['mesh-attempt'] ?? 0), renditions: (metadata['mesh-renditions'] ?? '').split(',').filter(Boolean) };
}

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
  item: ({ renditions }) => renditions.join('-'),
  async handle({ job, renditions }, { log, signal }, { bus, states, s3, config }) {
    const rec = await getRecord(states, job.jobId);
    if (rec && rec.attempt !== job.attempt) {
      log.info({ attempt: job.attempt, current: rec.attempt }, 'manifest of an earlier attempt of the job; dropped');
      return;
    }
    // A failed job publishes nothing until it is reopened (a retry, or its dead letters re-driven).
    if (rec?.phase === 'failed') throw new MeshError('JOB_FAILED', `the ${renditions.join('+')} manifest was ready after the job had failed; kept to be re-driven`, { permanent: true });
    const owner = await outputOwner(states, job.objectKey);
    if (owner && (owner.jobId !== job.jobId || owner.attempt !== job.attempt)) {
      log.warn({ owner }, 'the output prefix belongs to another job now; manifest not published');
      return;
    }
    if (rec && !mayPublish(rec, renditions)) {
      log.info({ renditions, published: rec.published }, 'stale manifest not published: a larger one is out');
      return;
    }
    const read = async (key: string, what: string) => {
      const text = await getText(s3, { bucket: config.s3.workBucket, key }, { signal });
      if (text === null) throw new MeshError('STORAGE_FAILED', `the ${renditions.join('+')} ${what} is missing from the work bucket`);
      return text;
    };
    const dash = { ref: { bucket: config.s3.outputBucket, key: layout.manifest(job) }, body: await read(layout.workManifest(job, renditions), 'manifest') };
    const hls = { ref: { bucket: config.s3.outputBucket, key: layout.master(job) }, body: await read(layout.workMaster(job, renditions), 'HLS master') };
    const mine: ManifestOrigin = { jobId: job.jobId, attempt: job.attempt, renditions };

    await withOutputLock(states, job.objectKey, { signal }, async (lease) => {
      /**
       * Writes one manifest if it may replace the one in place, deciding on the ETag and origin read just
       * before, with a write conditional on them: a change in between makes S3 refuse it, and we decide
       * again. Returns the origin that kept it from being written, or null once it is.
       */
      const publish = async (file: { ref: ObjectRef; body: string }): Promise<ManifestOrigin | null> => {
        for (;;) {
          const current = await headObject(s3, file.ref, { signal: lease.signal });
          const origin = current ? originOf(current.metadata) : null;
          if (!mayReplaceManifest(origin, mine)) return origin;
          // The client may have cancelled while we waited; the lease may have passed to another holder.
          if (await isCancelled(states, job.jobId)) throw new MeshError('CANCELLED', 'the job was cancelled before its manifest was published', { permanent: true });
          await lease.assertHeld();
          try {
            await putObject(s3, file.ref, file.body, { cacheControl: MANIFEST_CACHE, metadata: originMetadata(mine), ...(current ? { ifMatch: current.etag } : { ifNoneMatch: '*' }), signal: lease.signal });
            return null;
          } catch (err) {
            if (!(err instanceof PreconditionFailedError)) throw err;
            log.info({ key: file.ref.key }, 'the manifest changed while we decided; deciding again');
          }
        }
      };
      // The HLS master first, then the DASH manifest, which is what the job's record follows: both by the same rule.
      const refused = (await publish(hls)) ?? (await publish(dash));
      if (refused) {
        const reason = `the manifest at ${job.objectKey}/ holds ${refused.renditions.length} renditions from task ${refused.jobId}; this job's ${renditions.join('+')} would take some away, so it was not published`;
        // With nothing larger to come, this job cannot be published: it fails saying so instead of waiting forever.
        if (everyRenditionSettled(await getRecord(states, job.jobId), renditions)) throw new InputError('OUTPUT_CONFLICT', reason);
        log.info({ renditions, origin: refused }, 'not published: the manifest in place holds more');
        return;
      }
      const base = publicEndpoint(config.publicBaseUrl, config.s3);
      const url = publicUrl(base, dash.ref);
      await publishEvent(bus, { type: 'manifest.published', jobId: job.jobId, renditions, object: dash.ref, url, hls: { ...hls.ref, url: publicUrl(base, hls.ref) } }, msgId(job, 'manifest', renditions.join('-')));
      await recordPublished(states, job, renditions, { object: dash.ref, url });
      log.info({ renditions, url }, 'manifest published');
    });
  },
});

/** True when `renditions` is all this job attempt will ever have ready. */
function everyRenditionSettled(rec: Awaited<ReturnType<typeof getRecord>>, renditions: string[]): boolean {
  if (!rec || rec.expected.length === 0) return false;
  return rec.expected.every((r) => r in rec.failedRenditions || (rec.ready.includes(r) && renditions.includes(r)));
}
