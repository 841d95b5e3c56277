/**
 * downloader: work.download -> check the object, probe it, plan the renditions -> work.transcode.*, work.thumbnail
 *
 * No copy is made: ffprobe reads the client's object in place through a presigned URL (only its headers
 * and index), and so do the transcoders and the thumbnailer after it. The object's ETag travels with the
 * work, and every stage checks it after reading: a source replaced or deleted mid-job fails the job with
 * a reason saying so, instead of renditions cut from two different videos.
 *
 * A source at least CHUNK_MIN_SOURCE_SEC long is planned in chunks of CHUNK_SECONDS on the output frame
 * grid (libs/media chunks.ts): each rung gets one work item per chunk, and one for its audio, so every
 * replica of the rung works on the same video at once.
 */
import { publishEvent, publishWork } from '@mesh/bus';
import { chunkName, InputError, int, ladderConfig, layout, msgId, s3Config, transcodeStage, type Env, type SourcePin, type TranscodeChunk } from '@mesh/common';
import { planRenditions, runStageService } from '@mesh/jobs';
import { checkProbe, checkSize, chunkConfig, DEFAULT_LIMITS, planChunks, planMedia, probeFile } from '@mesh/media';
import { inSpan } from '@mesh/telemetry';
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
    // Long sources in chunks (CHUNK_MIN_SOURCE_SEC, CHUNK_SECONDS).
    chunks: chunkConfig(env),
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
    const chunks = planChunks(probe, plan, config.chunks);
    log.info({ probe, plan, chunks: chunks?.length ?? 0 }, 'source probed');

    await publishEvent(bus, { type: 'source.probed', jobId: job.jobId, probe, plan }, msgId(job, 'source.probed'));
    await planRenditions(states, job, plan.renditions);
    for (const rendition of plan.renditions) {
      const work = { kind: 'transcode' as const, job, rendition, source, probe, plan };
      if (!chunks) {
        await publishWork(bus, 'transcode', work, msgId(job, 'transcode', rendition));
        continue;
      }
      // The rung's span: its parts' spans (on whichever replicas take them) are under it. Audio first, so
      // the short part is not what the last free replica is left with.
      const parts: TranscodeChunk[] = [...(plan.audio ? [{ part: 'audio' as const, count: chunks.length }] : []), ...chunks];
      await inSpan(transcodeStage(rendition), { attributes: { 'job.id': job.jobId, 'media.rendition': rendition, 'media.chunks': chunks.length } }, async () => {
        for (const chunk of parts) await publishWork(bus, 'transcode', { ...work, chunk }, msgId(job, 'transcode', rendition, chunkName(chunk)));
      });
    }
    await publishWork(bus, 'thumbnail', { kind: 'thumbnail', job, source, probe }, msgId(job, 'thumbnail'));
  },
});
