/**
 * transcoder: work.transcode.<rung> -> one H.264/AAC MP4 in the work bucket -> work.package
 *
 * One process encodes the rungs of the ladder named in RENDITIONS (transcoder-720 and transcoder-360 are
 * this code with their own default), one durable consumer each (`transcoder-1080` for `1080p`), so each
 * rung scales on its own; replicas of one share its consumer. A long encode keeps its message alive (the
 * consume loop calls working()).
 * FFmpeg reads the client's object straight from S3 through a presigned URL (range requests, no local copy),
 * and the object's ETag is checked after, so a source replaced mid-encode fails the rendition (SOURCE_CHANGED).
 */
import { join } from 'node:path';
import { publishEvent, publishWork } from '@mesh/bus';
import { ConfigError, InputError, int, ladderConfig, layout, msgId, optional, s3Config, transcodeStage, type Env, type RenditionOutput } from '@mesh/common';
import { runStageService } from '@mesh/jobs';
import { encodeProfile, holdUrgency, outputSize, runTool, timeFactorConfig, toolBudgetMs, transcodeArgs, yieldConfig, type EncodeProfile } from '@mesh/media';
import { s3url, uploadFile, withSourceUrl } from '@mesh/storage';
import { annotate, ffmpegSpeed } from '@mesh/telemetry';

/** How often progress reaches the job's status. */
const PROGRESS_EVERY_MS = 2000;

/** One rung this process encodes, and how it shares the host. */
interface RungConfig {
  profile: EncodeProfile;
  niceness: number;
  yieldTo: ReturnType<typeof yieldConfig>;
}

/** RENDITIONS: the rungs to encode (comma-separated names of the ladder's), `defaults` when unset. */
function renditionsConfig(env: Env, defaults: string[]): RungConfig[] {
  const { rungs, first } = ladderConfig(env);
  const names = (optional(env, 'RENDITIONS') ?? defaults.join(',')).split(',').map((n) => n.trim()).filter(Boolean);
  if (names.length === 0) throw new ConfigError('RENDITIONS must name at least one rung of the ladder');
  return names.map((name) => {
    const rung = rungs.find((r) => r.name === name);
    if (!rung) throw new ConfigError(`RENDITIONS names ${JSON.stringify(name)}, which is not a rung of the ladder (${rungs.map((r) => r.name).join(', ')})`);
    const profile = encodeProfile(rung, first);
    // Encodes on one host pause while a more urgent one runs.
    return { profile, niceness: int(env, 'FFMPEG_NICENESS', profile.niceness, { min: 0, max: 19 }), yieldTo: yieldConfig(env, profile.rank) };
  });
}

/** `name` is the service's name; `defaults` the rungs it encodes unless RENDITIONS says otherwise. */
export function runTranscoder(o: { name: string; defaults: string[] }): Promise<void> {
  return runStageService({
    name: o.name,
    kind: 'transcode',
    config: (env: Env) => ({
      s3: s3Config(env),
      concurrency: int(env, 'TRANSCODER_CONCURRENCY', 1, { min: 1, max: 16 }),
      rungs: new Map(renditionsConfig(env, o.defaults).map((r) => [r.profile.name, r])),
      timeFactor: timeFactorConfig(env),
    }),
    renditions: (config) => [...config.rungs.keys()],
    stage: ({ rendition }) => transcodeStage(rendition),
    async handle({ job, rendition, source, probe, plan }, { tmp, signal, log, stage }, { bus, s3, config }) {
      const rung = config.rungs.get(rendition);
      // Only its own subjects reach it; a message that names another rung is a publisher's bug.
      if (!rung) throw new InputError('INVALID_MESSAGE', `this transcoder does not encode ${rendition}`);
      const { profile } = rung;
      // Until its rendition is handed on (upload included), lesser encodes on this host wait.
      const release = rung.yieldTo ? holdUrgency(rung.yieldTo, log) : undefined;
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
            niceness: rung.niceness,
            redact: { [input]: s3url(pinned) },
            ...(rung.yieldTo ? { yieldTo: rung.yieldTo } : {}),
          }),
        );
        const speed = probe.durationSec / Math.max(0.001, durationMs / 1000);
        ffmpegSpeed.observe({ work: `transcode-${rendition}` }, speed);
        annotate({ 'media.duration_s': probe.durationSec, 'media.ffmpeg_speed': Number(speed.toFixed(2)) });

        const result: RenditionOutput = { rendition, ...(plan.sizes[rendition] ?? outputSize(probe, profile.shortSide)) };
        await uploadFile(s3, { bucket: config.s3.workBucket, key: layout.rendition(job, rendition) }, output, { contentType: 'video/mp4', signal });
        await publishEvent(bus, { type: 'rendition.ready', jobId: job.jobId, output: result }, msgId(job, 'rendition.ready', rendition));
        await publishWork(bus, 'package', { kind: 'package', job, plan, outcome: { ok: true, output: result } }, msgId(job, 'package', rendition));
      } finally {
        release?.();
      }
    },
    // A failed rendition does not fail the job by itself: the packager decides, once it knows whether
    // another rendition made it.
    async onGiveUp({ job, plan, rendition }, _err, { stage, code, reason }, { bus }) {
      await publishEvent(bus, { type: 'stage.failed', jobId: job.jobId, stage, code, reason, fatal: false });
      await publishWork(bus, 'package', { kind: 'package', job, plan, outcome: { ok: false, rendition, reason } }, msgId(job, 'package', rendition, 'failed'));
    },
  });
}
