/**
 * downloader: work.download -> fetch the object, probe it, plan the renditions -> work.transcode.*, work.thumbnail
 *
 * The probed file is put into the work bucket under the job id, so every later stage reads the same
 * bytes even if the client overwrites its object meanwhile. (Not a server-side copy: client keys may hold
 * any character, and the local S3 stand-in mis-decodes some of them in x-amz-copy-source.)
 */
import { join } from 'node:path';
import { publishEvent, publishWork, runService } from '@mesh/bus';
import { int, layout, s3Config, transcodeWork, type Env } from '@mesh/common';
import { openJobStates, planRenditions, runStage } from '@mesh/jobs';
import { planMedia, probeFile } from '@mesh/media';
import { createS3, downloadToFile, uploadFile } from '@mesh/storage';

const config = (env: Env) => ({ s3: s3Config(env), concurrency: int(env, 'DOWNLOADER_CONCURRENCY', 2, { min: 1, max: 64 }) });

await runService({
  name: 'downloader',
  config,
  async start({ bus, log, config }) {
    const s3 = createS3(config.s3);
    const states = await openJobStates(bus);
    const worker = await runStage({
      bus,
      states,
      kind: 'download',
      log,
      concurrency: config.concurrency,
      stage: () => 'download',
      async handle({ job }, { tmp, signal, log }) {
        const input = { bucket: config.s3.inputBucket, key: job.objectKey };
        const path = join(tmp, 'source');
        await downloadToFile(s3, input, path, signal);
        const probe = await probeFile(path, { log, signal });
        const plan = planMedia(probe, { hasAudio: job.hasAudio });
        log.info({ probe, plan }, 'source probed');

        const source = { bucket: config.s3.workBucket, key: layout.source(job.jobId) };
        await uploadFile(s3, source, path, { contentType: 'application/octet-stream' });
        await publishEvent(bus, { type: 'source.probed', jobId: job.jobId, probe, plan }, `${job.jobId}:source.probed`);
        await planRenditions(states, job.jobId, plan.renditions);
        for (const rendition of plan.renditions) {
          const { subject } = transcodeWork(rendition);
          await publishWork(bus, `transcode-${rendition}`, { kind: 'transcode', job, rendition, source, probe, plan }, `${job.jobId}:transcode:${rendition}`, subject);
        }
        await publishWork(bus, 'thumbnail', { kind: 'thumbnail', job, source, probe }, `${job.jobId}:thumbnail`);
      },
    });
    return [worker];
  },
});
