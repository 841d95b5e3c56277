/**
 * downloader: work.download -> fetch the object, probe it, plan the renditions -> work.transcode.*, work.thumbnail
 *
 * The probed file is put into the work bucket under the job id, so every later stage reads the same
 * bytes even if the client overwrites its object meanwhile. (Not a server-side copy: client keys may hold
 * any character, and the local S3 stand-in mis-decodes some of them in x-amz-copy-source.)
 */
import { join } from 'node:path';
import { publishEvent, publishWork } from '@mesh/bus';
import { InputError, int, layout, msgId, s3Config, transcodeWork, type Env } from '@mesh/common';
import { planRenditions, runStageService } from '@mesh/jobs';
import { checkProbe, checkSize, DEFAULT_LIMITS, planMedia, probeFile } from '@mesh/media';
import { bucketExists, downloadToFile, headObject, uploadFile } from '@mesh/storage';

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
  async handle({ job }, { tmp, signal, log }, { bus, states, s3, config }) {
    const input = { bucket: config.s3.inputBucket, key: job.objectKey };
    const head = await headObject(s3, input);
    if (!head) {
      const what = (await bucketExists(s3, input.bucket)) ? `object s3://${input.bucket}/${input.key}` : `bucket ${input.bucket}`;
      throw new InputError('SOURCE_NOT_FOUND', `${what} does not exist`);
    }
    checkSize(head.size, config.limits);
    const path = join(tmp, 'source');
    await downloadToFile(s3, input, path, signal);
    const probe = await probeFile(path, { log, signal });
    checkProbe(probe, config.limits);
    const plan = planMedia(probe, { hasAudio: job.hasAudio });
    log.info({ probe, plan }, 'source probed');

    const source = { bucket: config.s3.workBucket, key: layout.source(job.jobId) };
    await uploadFile(s3, source, path, { contentType: 'application/octet-stream' });
    await publishEvent(bus, { type: 'source.probed', jobId: job.jobId, probe, plan }, msgId(job, 'source.probed'));
    await planRenditions(states, job.jobId, plan.renditions);
    for (const rendition of plan.renditions) {
      const { subject } = transcodeWork(rendition);
      await publishWork(bus, `transcode-${rendition}`, { kind: 'transcode', job, rendition, source, probe, plan }, msgId(job, 'transcode', rendition), subject);
    }
    await publishWork(bus, 'thumbnail', { kind: 'thumbnail', job, source, probe }, msgId(job, 'thumbnail'));
  },
});
