/**
 * downloader: work.download -> check the object, probe it, plan the renditions -> work.transcode.*, work.thumbnail
 *
 * No copy is made: ffprobe reads the client's object in place through a presigned URL (only its headers
 * and index), and so do the transcoders and the thumbnailer after it. The object's ETag travels with the
 * work, and every stage checks it after reading: a source replaced or deleted mid-job fails the job with
 * a reason saying so, instead of renditions cut from two different videos.
 */
import { publishEvent, publishWork } from '@mesh/bus';
import { InputError, int, ladderConfig, layout, msgId, s3Config, type Env, type SourcePin } from '@mesh/common';
import { planRenditions, runStageService } from '@mesh/jobs';
import { checkProbe, checkSize, DEFAULT_LIMITS, planMedia, probeFile } from '@mesh/media';
import { bucketExists, headObject, s3url, withSourceUrl } from '@mesh/storage';

await runStageService({
  name: 'downloader',
  kind: 'download',
  config: (env: Env) => ({
    s3: s3Config(env),
    concurrency: int(env, 'DOWNLOADER_CONCURRENCY', 2, { min: 1, max: 64 }),
    // Which rungs a job becomes (LADDER / LADDER_FILE).
    ladder: ladderConfig(env),
    limits: {
      maxBytes: int(env, 'MAX_SOURCE_BYTES', DEFAULT_LIMITS.maxBytes, { min: 1 }),
      maxDurationSec: int(env, 'MAX_SOURCE_DURATION_SEC', DEFAULT_LIMITS.maxDurationSec, { min: 1 }),
      maxPixels: int(env, 'MAX_SOURCE_PIXELS', DEFAULT_LIMITS.maxPixels, { min: 1 }),
    },
  }),
  stage: () => 'download',
  async handle({ job }, { signal, log }, { bus, states, s3, config }) {
    const input = { bucket: config.s3.inputBucket, key: layout.source(job) };
    const head = await headObject(s3, input, { signal });
    if (!head) {
      const what = (await bucketExists(s3, input.bucket)) ? `object ${input.key}` : 'the input bucket';
      throw new InputError('SOURCE_NOT_FOUND', `${what} does not exist`);
    }
    checkSize(head.size, config.limits);
    if (head.size === 0) throw new InputError('SOURCE_EMPTY', 'the source object is empty (0 bytes)');

    // The bytes every later stage reads, pinned (If-Match / version) so a swapped object fails at once.
    const source: SourcePin = { etag: head.etag, ...(head.versionId ? { versionId: head.versionId } : {}) };
    const pinned = { ...input, ...source };
    const probe = await withSourceUrl(s3, pinned, (url, { ifMatch }) => probeFile(url, { log, signal, ifMatch, sizeBytes: head.size, redact: { [url]: s3url(pinned) } }));
    checkProbe(probe, config.limits);
    const unknown = job.renditions?.filter((r) => !config.ladder.rungs.some((rung) => rung.name === r)) ?? [];
    if (unknown.length > 0) throw new InputError('INVALID_MESSAGE', `renditions: ${unknown.join(', ')} not in the ladder (${config.ladder.rungs.map((r) => r.name).join(', ')})`);
    const plan = planMedia(probe, { hasAudio: job.hasAudio, ladder: config.ladder.rungs, requested: job.renditions });
    log.info({ probe, plan }, 'source probed');

    await publishEvent(bus, { type: 'source.probed', jobId: job.jobId, probe, plan }, msgId(job, 'source.probed'));
    await planRenditions(states, job, plan.renditions);
    for (const rendition of plan.renditions) {
      await publishWork(bus, 'transcode', { kind: 'transcode', job, rendition, source, probe, plan }, msgId(job, 'transcode', rendition));
    }
    await publishWork(bus, 'thumbnail', { kind: 'thumbnail', job, source, probe }, msgId(job, 'thumbnail'));
  },
});
