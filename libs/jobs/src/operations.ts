/**
 * What people do with jobs, once: submit, read, retry, cancel, re-drive a dead letter, rebuild the
 * projection. The REST API, the dashboard and the CLI all go through these functions; each says what went
 * wrong with a named error (JobNotFoundError, JobConflictError, OutputBusyError) that a caller turns into
 * its own answer (404, 409, ...).
 */
import { getDeadLetter, publishEvent, publishWork, redrive, retryUnavailable, type Bus, type DeadLetter, type QueueDepth } from '@mesh/bus';
import { MeshError, msgId, reasonOf, renditionOfStage, transcoderOf, WORK, type JobSpec, type Logger, type WorkKind } from '@mesh/common';
import { traceIds } from '@mesh/telemetry';
import { cancelJob, createJob, getEntry, markQueued, reopenForRetry, reviveJob, undoReopen, type JobStates } from './lifecycle.ts';
import { claimOutput, OutputBusyError, peekOutput } from './output.ts';
import { applyEvent, stagesAhead, toApiResponse, type JobView, type WaitingFor } from './projection.ts';
import { mayReopen, type JobRecord } from './state.ts';
import type { ProjectionStore, RebuildState } from './store.ts';
import type { ViewCache } from './views.ts';

/** What the operations work with: plain dependencies, no state of their own. */
export interface JobsContext {
  bus: Bus;
  states: JobStates;
  store: ProjectionStore;
  log: Logger;
  /** The stages' queues, read at most every second or two (queues.ts `cachedFor`): for `waitingFor`. */
  queues?: () => Promise<QueueDepth[]>;
  /** Job documents kept in memory, fed by the projector (views.ts): status reads skip MongoDB when it has them. */
  views?: ViewCache;
}

export class JobNotFoundError extends MeshError {
  override name = 'JobNotFoundError';
  constructor(what: string) {
    super('INVALID_MESSAGE', `no ${what}`, { permanent: true });
  }
}

/** The job is not in a state that allows this (retrying a running job, cancelling a finished one). */
export class JobConflictError extends MeshError {
  override name = 'JobConflictError';
  constructor(message: string) {
    super('INVALID_MESSAGE', message, { permanent: true });
  }
}

/** The operation could not be completed now (NATS unreachable); nothing was changed. Try again. */
export class JobUnavailableError extends MeshError {
  override name = 'JobUnavailableError';
  constructor(message: string) {
    super('UNAVAILABLE', message);
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Records a new job and queues its first stage, in as few round trips as the rules allow (this is the
 * API's busiest path): the record and a look at the output prefix's owner go out together; the claim, a
 * compare-and-set on that look, only after the record exists, so a concurrent claim sees this job running
 * (OutputBusyError); then job.created and the first work item, in that order (the projection starts a job
 * at job.created). If any of that fails, the record goes again, so the prefix is not held by a job no
 * client knows of. Marking the record `queued` (which ends its submit grace, output.ts) is left running
 * after the answer: until it lands, the grace keeps the prefix.
 */
export async function submitJob(ctx: JobsContext, spec: JobSpec): Promise<void> {
  const seen = peekOutput(ctx.states, spec.objectKey);
  seen.catch(() => undefined);
  await createJob(ctx.states, spec);
  try {
    await claimOutput(ctx.states, spec, seen);
    await publishEvent(ctx.bus, { type: 'job.created', jobId: spec.jobId, spec, ...currentTrace() }, msgId(spec, 'created'));
    await publishWork(ctx.bus, 'download', { kind: 'download', job: spec }, msgId(spec, 'download'));
  } catch (err) {
    await retryUnavailable(() => ctx.states.kv.delete(spec.jobId)).catch(() => undefined);
    throw err;
  }
  void markQueued(ctx.states, spec.jobId, spec.attempt).catch((err: unknown) => ctx.log.warn({ jobId: spec.jobId, err: reasonOf(err) }, 'job queued, but not marked so'));
}

/** How long after its submit a job the projection does not have yet is answered from its record. */
const JUST_SUBMITTED_MS = 60_000;

/**
 * The job's status: the projection, or, for a job submitted a moment ago that the projector has not
 * folded yet, what its record says (queued). Null for an unknown task (and for one the projection lost:
 * its record alone does not say enough; a rebuild brings it back).
 */
export async function getJob(ctx: JobsContext, taskId: string): Promise<JobView | null> {
  if (!UUID.test(taskId)) return null;
  const jobId = taskId.toLowerCase();
  const cached = ctx.views?.get(jobId);
  if (cached) return cached;
  const view = await ctx.store.get(jobId);
  if (view) {
    ctx.views?.offer(view);
    return view;
  }
  const rec = (await getEntry(ctx.states, jobId))?.rec;
  if (!rec?.spec || rec.phase !== 'active' || rec.attempt !== 1 || Date.now() - Date.parse(rec.createdAt ?? '') > JUST_SUBMITTED_MS) return null;
  return applyEvent(null, { type: 'job.created', jobId, spec: { ...rec.spec, attempt: rec.attempt }, at: rec.createdAt ?? new Date().toISOString() }, 0);
}

/**
 * The stages the job still needs (projection.ts `stagesAhead`) whose service has no replica attached:
 * nothing will move them until one runs again. Empty when every stage it needs has a replica, when the
 * job has ended, or when the queues cannot be read now (the status is still answered).
 */
export async function waitingFor(ctx: JobsContext, view: JobView): Promise<WaitingFor[]> {
  const ahead = stagesAhead(view);
  if (ahead.length === 0 || !ctx.queues) return [];
  let queues: QueueDepth[];
  try {
    queues = await ctx.queues();
  } catch (err) {
    ctx.log.debug({ err: reasonOf(err) }, 'queues unreadable; job status without waiting_for');
    return [];
  }
  return ahead.flatMap((stage) => {
    const rendition = renditionOfStage(stage);
    const service = rendition ? transcoderOf(rendition) : WORK[stage as WorkKind]?.consumer;
    const queue = queues.find((q) => q.consumer === service);
    if (!service || !queue || queue.attached) return [];
    const reason = queue.exists ? `no ${service} replica is attached (none is asking for work or reporting progress on it)` : `no ${service} has started yet`;
    return [{ stage, service, reason: `${reason}; the job goes on once one runs` }];
  });
}

async function requireJob(ctx: JobsContext, taskId: string): Promise<JobView> {
  const view = await getJob(ctx, taskId);
  if (!view) throw new JobNotFoundError(`task ${taskId}`);
  return view;
}

function statusOf(view: JobView): string {
  return toApiResponse(view).task_status;
}

/**
 * Runs an ended job (FAILED, or cancelled by mistake) again from the start, as a new attempt: the attempt
 * is recorded (compare-and-set), the output prefix claimed and the first work item published; if any of
 * that fails, the record goes back to what it was, so the job reads as before and a second retry works.
 * Then `job.reopened` tells the projection. Returns the new attempt once the projection shows it.
 */
export async function retryJob(ctx: JobsContext, taskId: string): Promise<{ attempt: number; view: JobView | null }> {
  const view = await requireJob(ctx, taskId);
  const jobId = view._id;
  const entry = (await getEntry(ctx.states, jobId)) ?? (await recreateRecord(ctx, view));
  if (!mayReopen(entry.rec)) throw new JobConflictError(`only a FAILED task can be retried; this one is ${statusOf(view)} (${view.state})`);
  const next = await reopenForRetry(ctx.states, jobId, entry);
  if (!next) throw new JobConflictError('the task changed while it was being retried; look at it again');
  const spec: JobSpec = { ...specOf(entry.rec, view), attempt: next.rec.attempt };
  try {
    await claimOutput(ctx.states, spec);
    await publishWork(ctx.bus, 'download', { kind: 'download', job: spec }, msgId(spec, 'download'));
  } catch (err) {
    const undone = await undoReopen(ctx.states, jobId, entry.rec, next.revision).catch(() => false);
    ctx.log.warn({ jobId, err: reasonOf(err), undone }, 'retry could not be queued');
    if (err instanceof OutputBusyError) throw err;
    throw new JobUnavailableError(`the retry could not be queued (${reasonOf(err)}); nothing changed, try again`);
  }
  // The attempt runs now; the event that tells the projection so is retried, not undone.
  const seq = await withRetries(() => publishEvent(ctx.bus, { type: 'job.reopened', jobId, reason: 'retried by the client', attempt: spec.attempt, ...currentTrace() }, msgId(spec, 'reopened'))).then(
    ({ ack }) => ack.seq,
    (err: unknown) => {
      ctx.log.error({ jobId, err: reasonOf(err) }, 'retry queued, but job.reopened could not be published');
      return 0;
    },
  );
  await markQueued(ctx.states, jobId, spec.attempt).catch(() => undefined);
  return { attempt: spec.attempt, view: await waitForView(ctx, jobId, seq) };
}

/** Stops a running job and everything it started. The answer is made by compare-and-set: a job that completed a moment earlier stays complete. */
export async function cancelJobOp(ctx: JobsContext, taskId: string): Promise<JobView | null> {
  const view = await requireJob(ctx, taskId);
  const published = await cancelJob(ctx.states, view._id);
  if (!published) {
    const now = (await getJob(ctx, view._id)) ?? view;
    throw new JobConflictError(`only a running task can be cancelled; this one is ${statusOf(now)} (${now.state})`);
  }
  return waitForView(ctx, view._id, published.ack.seq);
}

/** The job's document once it has folded event `seq`, remembered so the client's next read shows its own change. */
async function waitForView(ctx: JobsContext, jobId: string, seq: number): Promise<JobView | null> {
  const view = await ctx.store.waitFor(jobId, seq);
  if (view) ctx.views?.offer(view);
  return view;
}

/** Subjects whose work can take a failed job to its end when re-driven; others (thumbnail, notifications) only redo their own part. */
const REVIVING = /^work\.(download|transcode\..+|package|upload)$/;

/**
 * Sends a dead letter back to its stage. When its stage can take the job to the end and the job failed,
 * the job's attempt comes back to life first (job.reopened), or the stages would drop the work as moot.
 */
export async function redriveDeadLetter(ctx: JobsContext, seq: number): Promise<DeadLetter> {
  const letter = Number.isSafeInteger(seq) && seq > 0 ? await getDeadLetter(ctx.bus, seq) : null;
  if (!letter) throw new JobNotFoundError(`dead letter ${seq}`);
  if (letter.jobId && REVIVING.test(letter.subject)) {
    const attempt = (letter.message as { job?: { attempt?: unknown } } | null)?.job?.attempt;
    const entry = await getEntry(ctx.states, letter.jobId);
    if (entry && typeof attempt === 'number' && attempt !== entry.rec.attempt) {
      throw new JobConflictError(`dead letter ${seq} belongs to attempt ${attempt} of task ${letter.jobId}, which has been retried since (attempt ${entry.rec.attempt}); there is nothing to re-drive`);
    }
    const rec = await reviveJob(ctx.states, letter.jobId);
    if (rec) {
      await publishEvent(ctx.bus, { type: 'job.reopened', jobId: rec.jobId, reason: `dead letter ${seq} re-driven to ${letter.subject}`, attempt: rec.attempt, ...currentTrace() }, msgId(rec, 'reopened', `r${rec.revivals ?? 0}`));
    }
  }
  const sent = await redrive(ctx.bus, seq);
  if (!sent) throw new JobNotFoundError(`dead letter ${seq}`);
  return sent;
}

/** Asks the projector to rebuild every job's status beside the live one; one rebuild at a time. */
export async function rebuildProjection(ctx: JobsContext): Promise<{ accepted: boolean; rebuild: RebuildState }> {
  return ctx.store.requestRebuild();
}

/** The trace of the request being served: the work it publishes runs in it, so it is the job's trace from here on. */
function currentTrace(): { traceId?: string } {
  const id = traceIds().trace_id;
  return id && /^[0-9a-f]{32}$/.test(id) && !/^0+$/.test(id) ? { traceId: id } : {};
}

async function withRetries<T>(fn: () => Promise<T>, tries = 3): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i >= tries) throw err;
      await new Promise((r) => setTimeout(r, 200 * i));
    }
  }
}

function specOf(rec: JobRecord, view: JobView): JobSpec {
  return rec.spec ?? { jobId: view._id, objectKey: view.objectKey, baseUrl: view.baseUrl, videoId: view.videoId, hasAudio: view.hasAudio, attempt: view.attempt };
}

/** A record that expired (30 days) for a job the projection still shows ended: made again from the projection. */
async function recreateRecord(ctx: JobsContext, view: JobView): Promise<{ rec: JobRecord; revision: number }> {
  if (view.state !== 'failed' && view.state !== 'cancelled') throw new JobConflictError(`only a FAILED task can be retried; this one is ${statusOf(view)} (${view.state})`);
  const rec: JobRecord = { jobId: view._id, spec: specOf({} as JobRecord, view), attempt: view.attempt, phase: view.state, expected: [], ready: [], failedRenditions: {}, published: [], announced: ['job.failed'] };
  const revision = await retryUnavailable(() => ctx.states.kv.create(view._id, JSON.stringify(rec)));
  return { rec, revision };
}
