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
 *
 * Seek previews: when the thumbnailer has left the attempt's storyboard in the output (its descriptor is
 * written last), every DASH manifest published carries it as an image AdaptationSet. A `refresh` message
 * (the thumbnailer's, once they are in place) publishes the manifest in place again with them; the HLS
 * master stays as it is (HLS has no standard thumbnail track: other players read the WebVTT track).
 * Both read the descriptor under the lease, so one of the two always sees the other's work.
 */
import { publishEvent } from '@mesh/bus';
import { InputError, int, layout, MeshError, msgId, optional, s3Config, STORYBOARD_JSON, STORYBOARD_VTT, StoryboardDescriptor, type Env, type JobSpec, type Logger, type ObjectRef, type Rendition } from '@mesh/common';
import { getRecord, isCancelled, mayPublish, mayReplaceManifest, outputOwner, recordPublished, runStageService, withOutputLock, type Lease, type ManifestOrigin } from '@mesh/jobs';
import { setThumbnailTrack, thumbnailAdaptationSet } from '@mesh/media';
import { getText, headObject, PreconditionFailedError, publicEndpoint, publicUrl, putObject } from '@mesh/storage';
import type { S3Client } from '@aws-sdk/client-s3';

/** Clients re-read the manifest: it grows as renditions are added. */
const MANIFEST_CACHE = 'no-cache';

/** Who wrote a manifest, in its object metadata (S3 lowercases the names). */
const originMetadata = (o: ManifestOrigin) => ({ 'mesh-job': o.jobId, 'mesh-attempt': String(o.attempt), 'mesh-renditions': o.renditions.join(',') });
function originOf(metadata: Record<string, string>): ManifestOrigin | null {
  const jobId = metadata['mesh-job'];
  if (!jobId) return null; // Written before origins were kept: any manifest of ours may replace it.
  return { jobId, attempt: Number(metadata['mesh-attempt'] ?? 0), renditions: (metadata['mesh-renditions'] ?? '').split(',').filter(Boolean) };
}

interface Context {
  s3: S3Client;
  outputBucket: string;
  log: Logger;
  signal: AbortSignal;
}

/**
 * Writes one manifest if it may replace the one in place, deciding on the ETag and origin read just before,
 * with a write conditional on them: a change in between makes S3 refuse it, and we decide again. Returns
 * the origin that kept it from being written, or null once it is.
 */
async function publish(c: Context, lease: Lease, mine: ManifestOrigin, file: { ref: ObjectRef; body: string }, stillWanted: () => Promise<void>): Promise<ManifestOrigin | null> {
  for (;;) {
    const current = await headObject(c.s3, file.ref, { signal: lease.signal });
    const origin = current ? originOf(current.metadata) : null;
    if (!mayReplaceManifest(origin, mine)) return origin;
    // The client may have cancelled while we waited; the lease may have passed to another holder.
    await stillWanted();
    await lease.assertHeld();
    try {
      await putObject(c.s3, file.ref, file.body, { cacheControl: MANIFEST_CACHE, metadata: originMetadata(mine), ...(current ? { ifMatch: current.etag } : { ifNoneMatch: '*' }), signal: lease.signal });
      return null;
    } catch (err) {
      if (!(err instanceof PreconditionFailedError)) throw err;
      c.log.info({ key: file.ref.key }, 'the manifest changed while we decided; deciding again');
    }
  }
}

/**
 * The attempt's storyboard, if the thumbnailer has finished it: its descriptor (written after the sheets
 * and the track) and the WebVTT track. A descriptor that does not read as one is left out, with a warning:
 * the manifest goes out without previews rather than not at all.
 */
async function storyboardOf(c: Context, job: JobSpec): Promise<{ descriptor: StoryboardDescriptor; vtt: ObjectRef } | null> {
  const text = await getText(c.s3, { bucket: c.outputBucket, key: layout.storyboard(job, STORYBOARD_JSON) }, { signal: c.signal });
  if (text === null) return null;
  let value: unknown = null;
  try {
    value = JSON.parse(text);
  } catch {
    // Not JSON: refused below like any other shape.
  }
  const parsed = StoryboardDescriptor.safeParse(value);
  if (!parsed.success) {
    c.log.warn({ issue: parsed.error.issues[0]?.message }, 'the storyboard descriptor does not read as one; the manifest goes out without previews');
    return null;
  }
  return { descriptor: parsed.data, vtt: { bucket: c.outputBucket, key: layout.storyboard(job, STORYBOARD_VTT) } };
}

/** The DASH manifest with the storyboard's image track (its sheets named relative to the manifest, like the segments). */
function withStoryboard(mpd: string, job: JobSpec, storyboard: { descriptor: StoryboardDescriptor } | null): string {
  if (!storyboard) return mpd;
  const { plan, maxSheetBytes } = storyboard.descriptor;
  return setThumbnailTrack(mpd, thumbnailAdaptationSet(plan, { media: layout.storyboardTemplate(job), maxSheetBytes }));
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
  item: (m) => ('refresh' in m ? 'refresh-thumbs' : m.renditions.join('-')),
  // Previews that could not be added leave the video as playable as it was.
  nonFatal: (m) => 'refresh' in m,
  async handle(message, { log, signal }, { bus, states, s3, config }) {
    const { job } = message;
    const c: Context = { s3, outputBucket: config.s3.outputBucket, log, signal };
    const base = publicEndpoint(config.publicBaseUrl, config.s3);
    const rec = await getRecord(states, job.jobId);
    if (rec && rec.attempt !== job.attempt) {
      log.info({ attempt: job.attempt, current: rec.attempt }, 'work of an earlier attempt of the job; dropped');
      return;
    }
    // A failed job publishes nothing until it is reopened (a retry, or its dead letters re-driven); it has no manifest to refresh.
    if (rec?.phase === 'failed' && !('refresh' in message)) throw new MeshError('JOB_FAILED', `the ${message.renditions.join('+')} manifest was ready after the job had failed; kept to be re-driven`, { permanent: true });
    const owner = await outputOwner(states, job.objectKey);
    if (owner && (owner.jobId !== job.jobId || owner.attempt !== job.attempt)) {
      log.warn({ owner }, 'the output prefix belongs to another job now; manifest not published');
      return;
    }
    const dashRef = { bucket: config.s3.outputBucket, key: layout.manifest(job) };
    const read = async (key: string, what: string) => {
      const text = await getText(s3, { bucket: config.s3.workBucket, key }, { signal });
      if (text === null) throw new MeshError('STORAGE_FAILED', `the ${what} is missing from the work bucket`);
      return text;
    };
    const stillWanted = async () => {
      if (await isCancelled(states, job.jobId)) throw new MeshError('CANCELLED', 'the job was cancelled before its manifest was published', { permanent: true });
    };

    if ('refresh' in message) {
      // Under the lease, so a publish in progress has either recorded its manifest (we see it here) or
      // not yet read the storyboard (it will find it, since it is in place before this message is sent).
      await withOutputLock(states, job.objectKey, { signal }, async (lease) => {
        const current = await headObject(s3, dashRef, { signal: lease.signal });
        const origin = current ? originOf(current.metadata) : null;
        if (!origin || origin.jobId !== job.jobId || origin.attempt !== job.attempt) {
          log.info({ origin }, 'no manifest of this job attempt is out yet; the first one will name the storyboard');
          return;
        }
        const storyboard = await storyboardOf(c, job);
        if (!storyboard) return;
        // Exactly what is out (the same attempt, the same renditions: mayReplaceManifest allows it), now with previews.
        const body = withStoryboard(await read(layout.workManifest(job, origin.renditions), `${origin.renditions.join('+')} manifest`), job, storyboard);
        const refused = await publish(c, lease, origin, { ref: dashRef, body }, stillWanted);
        if (refused) log.info({ origin: refused }, 'the manifest changed meanwhile; its publisher names the storyboard');
        else log.info({ renditions: origin.renditions }, 'manifest published again with the storyboard');
      });
      return;
    }

    const { renditions } = message;
    if (rec && !mayPublish(rec, renditions)) {
      log.info({ renditions, published: rec.published }, 'stale manifest not published: a larger one is out');
      return;
    }
    const what = renditions.join('+');
    const dashBody = await read(layout.workManifest(job, renditions), `${what} manifest`);
    const hls = { ref: { bucket: config.s3.outputBucket, key: layout.master(job) }, body: await read(layout.workMaster(job, renditions), `${what} HLS master`) };
    const mine: ManifestOrigin = { jobId: job.jobId, attempt: job.attempt, renditions };

    await withOutputLock(states, job.objectKey, { signal }, async (lease) => {
      const storyboard = await storyboardOf(c, job);
      const dash = { ref: dashRef, body: withStoryboard(dashBody, job, storyboard) };
      // The HLS master first, then the DASH manifest, which is what the job's record follows: both by the same rule.
      const refused = (await publish(c, lease, mine, hls, stillWanted)) ?? (await publish(c, lease, mine, dash, stillWanted));
      if (refused) {
        const reason = `the manifest at ${job.objectKey}/ holds ${refused.renditions.length} renditions from task ${refused.jobId}; this job's ${what} would take some away, so it was not published`;
        // With nothing larger to come, this job cannot be published: it fails saying so instead of waiting forever.
        if (everyRenditionSettled(await getRecord(states, job.jobId), renditions)) throw new InputError('OUTPUT_CONFLICT', reason);
        log.info({ renditions, origin: refused }, 'not published: the manifest in place holds more');
        return;
      }
      const url = publicUrl(base, dash.ref);
      const links = { hls: { ...hls.ref, url: publicUrl(base, hls.ref) }, ...(storyboard ? { storyboard: { ...storyboard.vtt, url: publicUrl(base, storyboard.vtt) } } : {}) };
      // Read under the lease, where every publication of the job is recorded: what this manifest is the first to hold.
      const before = (await getRecord(states, job.jobId))?.published ?? [];
      const added: Rendition[] = renditions.filter((r) => !before.includes(r));
      await publishEvent(bus, { type: 'manifest.published', jobId: job.jobId, attempt: job.attempt, renditions, added, object: dash.ref, url, ...links }, msgId(job, 'manifest', renditions.join('-')));
      await recordPublished(states, job, renditions, { object: dash.ref, url, ...links });
      log.info({ renditions, url, storyboard: Boolean(storyboard) }, 'manifest published');
    });
  },
});

/** True when `renditions` is all this job attempt will ever have ready. */
function everyRenditionSettled(rec: Awaited<ReturnType<typeof getRecord>>, renditions: string[]): boolean {
  if (!rec || rec.expected.length === 0) return false;
  return rec.expected.every((r) => r in rec.failedRenditions || (rec.ready.includes(r) && renditions.includes(r)));
}
