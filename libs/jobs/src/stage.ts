/**
 * A pipeline stage = the shared consume loop + the job bookkeeping every stage does the same way:
 * announce `stage.started` / `stage.done`, and when a message is given up, record a readable failure
 * on the job. Services only write what is different about them.
 */
import { inSpan } from '@mesh/telemetry';
import { publishEvent, runWorker, workSource, type Bus, type WorkContext, type WorkMessage, type Worker } from '@mesh/bus';
import { cancelSubject, MeshError, reasonOf, type Logger, type Stage, type WorkKind } from '@mesh/common';
import { failStage, isCancelled, type JobStates } from './lifecycle.ts';

export interface StageOptions<K extends WorkKind> {
  bus: Bus;
  states: JobStates;
  kind: K;
  log: Logger;
  /** The stage this message belongs to (the transcoders differ by rendition). */
  stage: (message: WorkMessage<K>) => Stage;
  handle: (message: WorkMessage<K>, ctx: WorkContext & { stage: Stage }) => Promise<void>;
  /** Replaces the default failure handling (fail the job) for stages whose failure is not fatal. */
  onGiveUp?: (message: WorkMessage<K>, err: unknown, ctx: { stage: Stage; code: string; reason: string }) => Promise<void>;
  concurrency?: number;
  ackWaitMs?: number;
  maxDeliver?: number;
  drainMs?: number;
}

export function runStage<K extends WorkKind>(o: StageOptions<K>): Promise<Worker> {
  return runWorker({
    bus: o.bus,
    source: workSource(o.kind),
    log: o.log,
    concurrency: o.concurrency ?? 1,
    ...(o.ackWaitMs ? { ackWaitMs: o.ackWaitMs } : {}),
    ...(o.maxDeliver ? { maxDeliver: o.maxDeliver } : {}),
    ...(o.drainMs !== undefined ? { drainMs: o.drainMs } : {}),
    async handle(message, ctx) {
      const stage = o.stage(message);
      const jobId = message.job.jobId;
      if (await isCancelled(o.states, jobId)) {
        ctx.log.info('job cancelled; work dropped');
        return;
      }
      // A cancel while we work stops the work, FFmpeg included: the signal reaches every tool we run.
      const cancel = new AbortController();
      const sub = o.bus.nc.subscribe(cancelSubject(jobId), { max: 1, callback: () => cancel.abort(new Error('job cancelled')) });
      try {
        // The stage's own span, under the consume span: FFmpeg, S3 and publishes nest in it.
        const attributes = { 'job.id': jobId, 'video.id': message.job.videoId, 'job.attempt': message.job.attempt, 'job.stage': stage, ...('rendition' in message ? { 'media.rendition': String(message.rendition) } : {}) };
        await inSpan(stage, { attributes }, async () => {
          await publishEvent(o.bus, { type: 'stage.started', jobId, stage });
          await o.handle(message, { ...ctx, stage, signal: AbortSignal.any([ctx.signal, cancel.signal]) });
          await publishEvent(o.bus, { type: 'stage.done', jobId, stage });
        });
      } catch (err) {
        if (cancel.signal.aborted) throw new MeshError('CANCELLED', `job cancelled while ${stage} ran: ${reasonOf(err)}`, { permanent: true });
        // Parked work (the job failed elsewhere): the stage shows why it stopped; the consume loop keeps the message.
        if (err instanceof MeshError && err.code === 'JOB_FAILED') await publishEvent(o.bus, { type: 'stage.failed', jobId, stage, code: err.code, reason: err.message, fatal: false });
        throw err;
      } finally {
        sub.unsubscribe();
      }
    },
    async onGiveUp(message, raw, err) {
      const code = err instanceof MeshError ? err.code : 'RETRIES_EXHAUSTED';
      const reason = reasonOf(err);
      if (!message) {
        const jobId = jobIdOf(raw);
        if (!jobId) return; // Nothing to attach the failure to; the worker logged it.
        await failStage(o.states, jobId, { stage: stageOfKind(o.kind), code, reason });
        return;
      }
      const stage = o.stage(message);
      if (o.onGiveUp) return o.onGiveUp(message, err, { stage, code, reason });
      await failStage(o.states, message.job.jobId, { stage, code, reason });
    },
  });
}

function stageOfKind(kind: WorkKind): Stage {
  return kind;
}

function jobIdOf(raw: unknown): string | undefined {
  const id = (raw as { job?: { jobId?: unknown } } | undefined)?.job?.jobId;
  return typeof id === 'string' && /^[0-9a-f-]{36}$/i.test(id) ? id : undefined;
}
