/**
 * transcoder-<rendition>: work.transcode.<rendition> -> one H.264/AAC MP4 in the work bucket -> work.package
 *
 * transcoder-720 and transcoder-360 are this code with a different rendition profile. Replicas of one
 * share a durable consumer; a long encode keeps its message alive (the consume loop calls working()).
 * FFmpeg reads the client's object straight from S3 through a presigned URL (range requests, no local copy),
 * and the object's ETag is checked after, so a source replaced mid-encode fails the rendition (SOURCE_CHANGED).
 */
import { join } from 'node:path';
import { publishEvent, publishWork } from '@mesh/bus';
import { int, layout, msgId, s3Config, transcodeStage, type Env, type Rendition, type RenditionOutput } from '@mesh/common';
import { runStageService } from '@mesh/jobs';
import { holdUrgency, outputSize, PROFILES, runTool, timeFactorConfig, toolBudgetMs, transcodeArgs, yieldConfig } from '@mesh/media';
import { s3url, uploadFile, withSourceUrl } from '@mesh/storage';
import { annotate, ffmpegSpeed } from '@mesh/telemetry';

/** How often progress reaches the job's status. */
const PROGRESS_EVERY_MS = 2000;

export function runTranscoder(rendition: Rendition): Promise<void> {
  const profile = PROFILES[rendition];
  return runStageService({
    name: `transcoder-${profile.shortSide}`,
    kind: `transcode-${rendition}`,
    config: (env: Env) => ({
      s3: s3Config(env),
      concurrency: int(env, 'TRANSCODER_CONCURRENCY', 1, { min: 1, max: 16 }),
      niceness: int(env, 'FFMPEG_NICENESS', profile.niceness, { min: 0, max: 19 }),
      // Encodes on one host pause while a more urgent one runs.
      yieldTo: yieldConfig(env, profile.rank),
      timeFactor: timeFactorConfig(env),
    }),
    stage: () => transcodeStage(rendition),
    async handle({ job, source, probe, plan }, { tmp, signal, log, stage }, { bus, s3, config }) {
      // Until its rendition is handed on (upload included), lesser encodes on this host wait.
      const release = config.yieldTo ? holdUrgency(config.yieldTo, log) : undefined;
      try {
        const output = join(tmp, `${rendition}.mp4`);
        let lastProgress = 0;
        const onProgress = (seconds: number) => {
          if (Date.now() - lastProgress < PROGRESS_EVERY_MS) return;
          lastProgress = Date.now();
          const percent = Math.min(99, Math.round((100 * seconds) / probe.durationSec));
          publishEvent(bus, { type: 'stage.progress', jobId: job.jobId, stage, percent }).catch(() => undefined);
        };
        const pinned = { bucket: config.s3.inputBucket, key: layout.source(job), ...source };
        const { durationMs } = await withSourceUrl(s3, pinned, (input, { ifMatch }) =>
          runTool('ffmpeg', transcodeArgs({ input, ifMatch, output, probe, plan, profile }), {
            log,
            signal,
            onProgress,
            // Bounded by the probed duration and a wall-clock budget from it (libs/media/src/limits.ts).
            declaredSec: probe.durationSec,
            timeoutMs: toolBudgetMs(probe.durationSec, config.timeFactor),
            niceness: config.niceness,
            redact: { [input]: s3url(pinned) },
            ...(config.yieldTo ? { yieldTo: config.yieldTo } : {}),
          }),
        );
        const speed = probe.durationSec / Math.max(0.001, durationMs / 1000);
        ffmpegSpeed.observe({ work: `transcode-${rendition}` }, speed);
        annotate({ 'media.duration_s': probe.durationSec, 'media.ffmpeg_speed': Number(speed.toFixed(2)) });

        const result: RenditionOutput = { rendition, ...outputSize(probe, profile) };
        await uploadFile(s3, { bucket: config.s3.workBucket, key: layout.rendition(job, rendition) }, output, { contentType: 'video/mp4', signal });
        await publishEvent(bus, { type: 'rendition.ready', jobId: job.jobId, output: result }, msgId(job, 'rendition.ready', rendition));
        await publishWork(bus, 'package', { kind: 'package', job, plan, outcome: { ok: true, output: result } }, msgId(job, 'package', rendition));
      } finally {
        release?.();
      }
    },
    // A failed rendition does not fail the job by itself: the packager decides, once it knows whether
    // another rendition made it.
    async onGiveUp({ job, plan }, _err, { stage, code, reason }, { bus }) {
      await publishEvent(bus, { type: 'stage.failed', jobId: job.jobId, stage, code, reason, fatal: false });
      await publishWork(bus, 'package', { kind: 'package', job, plan, outcome: { ok: false, rendition, reason } }, msgId(job, 'package', rendition, 'failed'));
    },
  });
}
