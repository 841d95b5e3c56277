/**
 * downloader: work.download -> stage the object, probe it, plan the renditions -> work.transcode.*, work.thumbnail
 *
 * The source is first staged into the work bucket under the job id (a server-side copy: no bytes pass
 * through here), so every later stage reads the same bytes even if the client overwrites or deletes its
 * object meanwhile. ffprobe then reads the staged copy through a presigned URL: only the headers and
 * index, not the whole file.
 */
import { publishEvent, publishWork } from '@mesh/bus';
import { InputError, int, layout, msgId, s3Config, transcodeWork, type Env } from '@mesh/common';
import { planRenditions, runStageService } from '@mesh/jobs';
import { checkProbe, checkSize, DEFAULT_LIMITS, planMedia, probeFile } from '@mesh/media';
import { bucketExists, headObject, presignGet, s3url, stageObject } from '@mesh/storage';

await runStageService({
  name: 'downloader',
  kind: 'download',
  config: (env: Env) => ({
    s3: s3Config(env),
    concurrency: int(env, 'DOWNLOADER_CONCURRENCY', 2, { min: 1, max: 64 }),
    limits: {
      maxBytes: int(env, 'MAX_SOURCE_BYTES', DEFAULT_LIMITS.maxBytes, { min: 1 }),
      maxDurationSec: int(env, 'MAX_SOURCE_DURATION_SEC', DEFAULT_LIMITS.maxDurationSec, { min: 1 }),
      maxPixels: int(env, 'MAX_SOURCE_PIXELS', DEFAULT_LIMITS.maxPixels, { min: 1 }),
    },
  }),
  stage: () => 'download',
  async handle({ job }, { signal, log }, { bus, states, s3, config }) {
    const input = { bucket: config.s3.inputBucket, key: job.objectKey };
    const head = await headObject(s3, input);
    if (!head) {
      const what = (await bucketExists(s3, input.bucket)) ? `object ${s3url(input)}` : `bucket ${input.bucket}`;
      throw new InputError('SOURCE_NOT_FOUND', `${what} does not exist`);
    }
    checkSize(head.size, config.limits);
    if (head.size === 0) throw new InputError('SOURCE_EMPTY', 'the source object is empty (0 bytes)');

    const source = { bucket: config.s3.workBucket, key: layout.source(job.jobId) };
    const staged = await stageObject(s3, input, source, { size: head.size, signal });
    log.info({ bytes: head.size, how: staged }, 'source staged');
    const url = await presignGet(s3, source, { expiresSec: 3600 });
    const probe = await probeFile(url, { log, signal, sizeBytes: head.size, redact: { [url]: s3url(source) } });
    checkProbe(probe, config.limits);
    const plan = planMedia(probe, { hasAudio: job.hasAudio });
    log.info({ probe, plan }, 'source probed');

    await publishEvent(bus, { type: 'source.probed', jobId: job.jobId, probe, plan }, msgId(job, 'source.probed'));
    await planRenditions(states, job.jobId, plan.renditions);
    for (const rendition of plan.renditions) {
      const { subject } = transcodeWork(rendition);
      await publishWork(bus, `transcode-${rendition}`, { kind: 'transcode', job, rendition, source, probe, plan }, msgId(job, 'transcode', rendition), subject);
    }
    await publishWork(bus, 'thumbnail', { kind: 'thumbnail', job, source, probe }, msgId(job, 'thumbnail'));
  },
});
