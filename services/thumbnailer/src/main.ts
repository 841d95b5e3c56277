/**
 * thumbnailer: work.thumbnail -> JPEG preview in S3_THUMBNAIL_OUTPUT_BUCKET, key = video_id
 *
 * A missing thumbnail does not fail the video: when it gives up, the failure is recorded on its stage only.
 */
import { join } from 'node:path';
import { publishEvent } from '@mesh/bus';
import { int, layout, msgId, s3Config, type Env } from '@mesh/common';
import { runStageService } from '@mesh/jobs';
import { runTool, thumbnailArgs, thumbnailTime, timeFactorConfig, toolBudgetMs, yieldConfig } from '@mesh/media';
import { s3url, uploadFile, withSourceUrl } from '@mesh/storage';

await runStageService({
  name: 'thumbnailer',
  kind: 'thumbnail',
  config: (env: Env) => ({
    s3: s3Config(env),
    concurrency: int(env, 'THUMBNAILER_CONCURRENCY', 2, { min: 1, max: 16 }),
    // The preview is not on the way to a playable manifest: on a shared host it yields to the 720p encode
    // (paused while it runs, see libs/media/src/yield.ts) and runs beside the 360p one at a lower priority.
    niceness: int(env, 'FFMPEG_NICENESS', 10, { min: 0, max: 19 }),
    yieldTo: yieldConfig(env, 1),
    timeFactor: timeFactorConfig(env),
  }),
  stage: () => 'thumbnail',
  async handle({ job, source, probe }, { tmp, signal, log }, { bus, s3, config }) {
    // FFmpeg seeks in the source through a presigned URL: it reads a few hundred KB, not the file.
    const output = join(tmp, 'thumbnail.jpg');
    const pinned = { bucket: config.s3.inputBucket, key: layout.source(job), ...source };
    // It decodes from the keyframe before the shot at most: the budget is for that much video.
    const timeoutMs = toolBudgetMs(thumbnailTime(probe.durationSec), config.timeFactor);
    await withSourceUrl(s3, pinned, (input, { ifMatch }) =>
      runTool('ffmpeg', thumbnailArgs({ input, ifMatch, output, probe }), { log, signal, timeoutMs, niceness: config.niceness, redact: { [input]: s3url(pinned) }, ...(config.yieldTo ? { yieldTo: config.yieldTo } : {}) }),
    );
    // The thumbnail's key is video_id, as the original service did: validated to be one plain segment.
    const object = { bucket: config.s3.thumbnailBucket, key: layout.thumbnail(job) };
    await uploadFile(s3, object, output, { contentType: 'image/jpeg', signal });
    await publishEvent(bus, { type: 'thumbnail.ready', jobId: job.jobId, object }, msgId(job, 'thumbnail.ready'));
  },
  async onGiveUp({ job }, _err, { stage, code, reason }, { bus }) {
    await publishEvent(bus, { type: 'stage.failed', jobId: job.jobId, stage, code, reason, fatal: false });
  },
});
