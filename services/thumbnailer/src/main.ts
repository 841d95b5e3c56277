/**
 * thumbnailer: work.thumbnail -> JPEG preview in S3_THUMBNAIL_OUTPUT_BUCKET, key = video_id
 *
 * A missing thumbnail does not fail the video: when it gives up, the failure is recorded on its stage only.
 */
import { join } from 'node:path';
import { publishEvent, runService } from '@mesh/bus';
import { s3Config, type Env } from '@mesh/common';
import { openJobStates, runStage } from '@mesh/jobs';
import { runTool, thumbnailArgs } from '@mesh/media';
import { createS3, downloadToFile, uploadFile } from '@mesh/storage';

await runService({
  name: 'thumbnailer',
  config: (env: Env) => ({ s3: s3Config(env) }),
  async start({ bus, log, config }) {
    const s3 = createS3(config.s3);
    const states = await openJobStates(bus);
    const worker = await runStage({
      bus,
      states,
      kind: 'thumbnail',
      log,
      concurrency: 2,
      stage: () => 'thumbnail',
      async handle({ job, source, probe }, { tmp, signal, log }) {
        const input = join(tmp, 'source');
        const output = join(tmp, 'thumbnail.jpg');
        await downloadToFile(s3, source, input, signal);
        await runTool('ffmpeg', thumbnailArgs({ input, output, probe }), { log, signal });
        const object = { bucket: config.s3.thumbnailBucket, key: job.videoId };
        await uploadFile(s3, object, output, { contentType: 'image/jpeg' });
        await publishEvent(bus, { type: 'thumbnail.ready', jobId: job.jobId, object }, `${job.jobId}:thumbnail.ready`);
      },
      async onGiveUp({ job }, _err, { stage, code, reason }) {
        await publishEvent(bus, { type: 'stage.failed', jobId: job.jobId, stage, code, reason, fatal: false });
      },
    });
    return [worker];
  },
});
