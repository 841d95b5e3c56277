/**
 * A pipeline stage = the shared consume loop + the job bookkeeping every stage does the same way:
 * announce `stage.started` / `stage.done`, skip work it already finished for the same job attempt, stop
 * when the job is cancelled, and when a message is given up, record a readable failure on the job.
 * Services only write what is different about them.
 */
import { hostname } from 'node:os';
import { inSpan } from '@mesh/telemetry';
import { publishEvent, runWorker, workSource, type Bus, type WorkContext, type WorkMessage, type Worker } from '@mesh/bus';
import { cancelSubject, MeshError, msgId, reasonOf, stageOfWork, type ChunkRef, type Logger, type Stage, type WorkKind } from '@mesh/common';
import { doneKey, failStage, isCancelled, isDone, markDone, type JobStates } from './lifecycle.ts';

export interface StageOptions<K extends WorkKind> {
  bus: Bus;
  states: JobStates;
  kind: K;
  /** A transcode stage's rung: its own subject and consumer. */
  rendition?: string;
  log: Logger;
  /** The stage this message belongs to (the transcoders differ by rendition). */
  stage: (message: WorkMessage<K>) => Stage;
  /**
   * What one message is, within its job attempt: a repeat of a finished item (a redelivery after a crash
   * before the ack, a republish after the duplicate window) is skipped. Default: the stage.
   */
  item?: (message: WorkMessage<K>) => string;
  /**
   * The part of a chunked rung a message is (transcoders): its stage events carry it, each part has its own
   * message ids and its own span (`transcode-720p chunk 3`), and its stage.done is the part's, not the rung's.
   */
  chunk?: (message: WorkMessage<K>) => ChunkRef | undefined;
  handle: (message: WorkMessage<K>, ctx: WorkContext & { stage: Stage }) => Promise<void>;
  /** Replaces the default failure handling (fail the job) for stages whose failure is not fatal. */
  onGiveUp?: (message: WorkMessage<K>, err: unknown, ctx: { stage: Stage; code: string; reason: string }) => Promise<void>;
  /** Messages of a stage that fails its job whose failure is not fatal: given up, they are recorded on the stage only. */
  nonFatal?: (message: WorkMessage<K>) => boolean;
  concurrency?: number;
  ackWaitMs?: number;
  maxDeliver?: number;
  drainMs?: number;
  chaosKillAfterWork?: number;
}

/**
 * Which process took the work, in its stage.started event: the host (a pod's name on Kubernetes, a
 * container id under Docker) and the pid, which tells apart the replicas of one host.
 */
export const REPLICA = `${hostname()}/${process.pid}`;

/** How often a running stage re-reads the job record for a cancel it may have missed (sent during a reconnect). */
const CANCEL_CHECK_MS = 2000;

export function runStage<K extends WorkKind>(o: StageOptions<K>): Promise<Worker> {
  const markerOf = (message: WorkMessage<K>) => doneKey(message.job, o.kind, o.item?.(message) ?? o.stage(message));
  // A stage taking several items per job attempt (a package per rendition set, a chunk per part) announces
  // each: their stage events' message ids name the item, or JetStream would drop all but the first.
  const chunkOf = (message: WorkMessage<K>) => {
    const chunk = o.chunk?.(message);
    return { ...(chunk ? { chunk } : {}), ids: o.item ? [o.item(message)] : [] };
  };
  const stageDone = (message: WorkMessage<K>, stage: Stage) => {
    const { chunk, ids } = chunkOf(message);
    return publishEvent(o.bus, { type: 'stage.done', jobId: message.job.jobId, stage, ...(chunk ? { chunk } : {}) }, msgId(message.job, 'stage.done', stage, ...ids));
  };
  return runWorker({
    bus: o.bus,
    source: workSource(o.kind, o.rendition),
    log: o.log,
    concurrency: o.concurrency ?? 1,
    ...(o.ackWaitMs ? { ackWaitMs: o.ackWaitMs } : {}),
    ...(o.maxDeliver ? { maxDeliver: o.maxDeliver } : {}),
    ...(o.drainMs !== undefined ? { drainMs: o.drainMs } : {}),
    ...(o.chaosKillAfterWork ? { chaosKillAfterWork: o.chaosKillAfterWork } : {}),
    async handle(message, ctx) {
      const stage = o.stage(message);
      const jobId = message.job.jobId;
      const { chunk, ids } = chunkOf(message);
      if (await isDone(o.states, markerOf(message))) {
        // Finished before: a redelivery or a late duplicate. Its stage.done may not have gone out.
        ctx.log.info({ stage }, 'already done for this job attempt; repeat skipped');
        await stageDone(message, stage);
        return 'skipped';
      }
      // A cancel stops the work, FFmpeg included: the signal reaches every tool we run. Subscribe first,
      // then read the record, and read it again while working: a cancel sent between the two, or while the
      // connection was down (core NATS keeps nothing), is still seen.
      const cancel = new AbortController();
      const stop = () => cancel.abort(new MeshError('CANCELLED', 'the job was cancelled', { permanent: true }));
      const sub = o.bus.nc.subscribe(cancelSubject(jobId), { max: 1, callback: stop });
      const recheck = setInterval(() => {
        isCancelled(o.states, jobId).then((yes) => yes && stop(), () => undefined);
      }, CANCEL_CHECK_MS);
      try {
        if (await isCancelled(o.states, jobId)) throw new MeshError('CANCELLED', 'job cancelled before this stage started', { permanent: true });
        // The stage's own span, under the consume span: FFmpeg, S3 and publishes nest in it.
        const attributes = {
          'job.id': jobId,
          'video.id': message.job.videoId,
          'job.attempt': message.job.attempt,
          'job.stage': stage,
          ...('rendition' in message ? { 'media.rendition': String(message.rendition) } : {}),
          ...(chunk ? { 'media.chunk.part': chunk.part, 'media.chunk.count': chunk.count, ...(chunk.part === 'video' ? { 'media.chunk.index': chunk.index } : {}) } : {}),
        };
        // A part of a chunked rung is its own span, named for it: the rung's chunks side by side in the trace.
        const name = !chunk ? stage : chunk.part === 'video' ? `${stage} chunk ${chunk.index}` : `${stage} audio`;
        await inSpan(name, { attributes }, async () => {
          await publishEvent(o.bus, { type: 'stage.started', jobId, stage, replica: REPLICA, delivery: ctx.deliveryCount, ...(chunk ? { chunk } : {}) }, msgId(message.job, 'stage.started', stage, ...ids, ctx.deliveryCount));
          await o.handle(message, { ...ctx, stage, signal: AbortSignal.any([ctx.signal, cancel.signal]) });
        });
      } catch (err) {
        if (cancel.signal.aborted || (err instanceof MeshError && err.code === 'CANCELLED')) {
          throw new MeshError('CANCELLED', `job cancelled while ${stage} ran: ${reasonOf(err)}`, { permanent: true });
        }
        // Parked work (the job failed elsewhere): the stage shows why it stopped; the consume loop keeps the message.
        if (err instanceof MeshError && err.code === 'JOB_FAILED') await publishEvent(o.bus, { type: 'stage.failed', jobId, stage, code: err.code, reason: err.message, fatal: false, ...(chunk ? { chunk } : {}) });
        throw err;
      } finally {
        clearInterval(recheck);
        sub.unsubscribe();
      }
    },
    // After the work: the marker first, so a crash before stage.done is repaired by the skipped repeat.
    async onDone(message) {
      await markDone(o.states, markerOf(message));
      await stageDone(message, o.stage(message));
    },
    async onGiveUp(message, raw, err) {
      const code = err instanceof MeshError ? err.code : 'RETRIES_EXHAUSTED';
      const reason = reasonOf(err);
      if (!message) {
        const jobId = jobIdOf(raw);
        if (!jobId) return; // Nothing to attach the failure to; the worker logged it.
        // A stage whose failure is not fatal does not fail the job for an unreadable message either: it
        // cannot (its NATS user only reads the job records), and the message stays as a dead letter.
        if (o.onGiveUp) await publishEvent(o.bus, { type: 'stage.failed', jobId, stage: stageOfWork(o.kind, o.rendition), code, reason, fatal: false });
        else await failStage(o.states, { jobId }, { stage: stageOfWork(o.kind, o.rendition), code, reason });
        return;
      }
      const stage = o.stage(message);
      if (o.onGiveUp) return o.onGiveUp(message, err, { stage, code, reason });
      if (o.nonFatal?.(message)) {
        await publishEvent(o.bus, { type: 'stage.failed', jobId: message.job.jobId, stage, code, reason, fatal: false });
        return;
      }
      await failStage(o.states, message.job, { stage, code, reason });
    },
  });
}

function jobIdOf(raw: unknown): string | undefined {
  const id = (raw as { job?: { jobId?: unknown } } | undefined)?.job?.jobId;
  return typeof id === 'string' && /^[0-9a-f-]{36}$/i.test(id) ? id : undefined;
}
