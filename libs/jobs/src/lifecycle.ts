/**
 * Stores each job's coordination record in the NATS KV bucket `job-state` and changes it only with
 * compare-and-set, then publishes the phase events the new record implies (job.playable, job.completed,
 * job.failed) exactly once per job: an event is marked announced only after it is published, and its
 * message id lets JetStream drop the repeat when a crash lands between the two.
 */
import { Kvm, type KV } from '@nats-io/kv';
import { publishEvent, type Bus } from '@mesh/bus';
import { cancelSubject, msgId, type ObjectRef, type Rendition } from '@mesh/common';
import { newRecord, pendingAnnouncements, reopened, withAnnounced, withCancel, withFailure, withPlan, withPublished, withRendition, type Failure, type JobRecord } from './state.ts';

export interface JobStates {
  bus: Bus;
  kv: KV;
  locks: KV;
}

const DAY_MS = 24 * 3600 * 1000;
/** A manifest publication holds the lock for seconds; a holder that died releases it by expiry. */
export const LOCK_TTL_MS = 60_000;

export async function openJobStates(bus: Bus): Promise<JobStates> {
  const kvm = new Kvm(bus.nc);
  const kv = await kvm.create('job-state', { history: 1, ttl: 30 * DAY_MS });
  const locks = await kvm.create('job-locks', { history: 1, ttl: LOCK_TTL_MS });
  return { bus, kv, locks };
}

export async function getRecord(states: JobStates, jobId: string): Promise<JobRecord | null> {
  const entry = await states.kv.get(jobId);
  return entry && entry.operation === 'PUT' ? (entry.json<JobRecord>()) : null;
}

/** Applies `change` with compare-and-set, retrying when another replica wrote first. */
export async function mutate(states: JobStates, jobId: string, change: (rec: JobRecord) => JobRecord): Promise<JobRecord> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const entry = await states.kv.get(jobId);
    const current = entry && entry.operation === 'PUT' ? entry.json<JobRecord>() : null;
    const next = change(current ?? newRecord(jobId));
    if (current && JSON.stringify(current) === JSON.stringify(next)) return current;
    try {
      if (entry) await states.kv.update(jobId, JSON.stringify(next), entry.revision);
      else await states.kv.create(jobId, JSON.stringify(next));
      return next;
    } catch (err) {
      if (!isConflict(err)) throw err;
      await sleep(5 + Math.random() * 20 * (attempt + 1));
    }
  }
  throw new Error(`job ${jobId}: too many concurrent updates to its state`);
}

async function announce(states: JobStates, rec: JobRecord): Promise<JobRecord> {
  const events = pendingAnnouncements(rec);
  if (events.length === 0) return rec;
  for (const event of events) await publishEvent(states.bus, event, msgId(rec, event.type));
  return mutate(states, rec.jobId, (r) => withAnnounced(r, events.map((e) => e.type)));
}

async function change(states: JobStates, jobId: string, fn: (rec: JobRecord) => JobRecord): Promise<JobRecord> {
  return announce(states, await mutate(states, jobId, fn));
}

export function planRenditions(states: JobStates, jobId: string, renditions: Rendition[]): Promise<JobRecord> {
  return change(states, jobId, (r) => withPlan(r, renditions));
}

export function settleRendition(states: JobStates, jobId: string, rendition: Rendition, outcome: { ok: true } | { ok: false; reason: string }): Promise<JobRecord> {
  return change(states, jobId, (r) => withRendition(r, rendition, outcome));
}

export function recordPublished(states: JobStates, jobId: string, renditions: Rendition[], manifest: { object: ObjectRef; url: string }): Promise<JobRecord> {
  return change(states, jobId, (r) => withPublished(r, renditions, manifest));
}

/**
 * A stage failed for good: publishes `stage.failed` and fails the job unless it is already playable.
 * Returns the record, whose phase says whether the job failed.
 */
export async function failStage(states: JobStates, jobId: string, failure: Failure): Promise<JobRecord> {
  const rec = await mutate(states, jobId, (r) => withFailure(r, failure));
  await publishEvent(states.bus, { type: 'stage.failed', jobId, ...failure, fatal: rec.phase === 'failed' && rec.failure?.stage === failure.stage });
  return announce(states, rec);
}

/**
 * Reopens a failed job so it can run again. Returns its new attempt and the job.reopened event as
 * published (to write into the projection at once), or null when the job was not failed.
 */
export async function reopenJob(states: JobStates, jobId: string, reason: string): Promise<{ attempt: number; published: Awaited<ReturnType<typeof publishEvent>> } | null> {
  const before = await getRecord(states, jobId);
  if (before?.phase !== 'failed') return null;
  const rec = await mutate(states, jobId, (r) => (r.attempt === before.attempt ? reopened(r) : r));
  const published = await publishEvent(states.bus, { type: 'job.reopened', jobId, reason, attempt: rec.attempt }, msgId(rec, 'reopened'));
  return { attempt: rec.attempt, published };
}

/**
 * Cancels a running job: records it, publishes job.cancelled, and tells every process working on the
 * job to stop. Null when the job was not running (finished, failed, cancelled or unknown).
 */
export async function cancelJob(states: JobStates, jobId: string): Promise<Awaited<ReturnType<typeof publishEvent>> | null> {
  const before = await getRecord(states, jobId);
  if (!before || (before.phase !== 'active' && before.phase !== 'playable')) return null;
  const rec = await mutate(states, jobId, withCancel);
  const published = await publishEvent(states.bus, { type: 'job.cancelled', jobId }, msgId(rec, 'cancelled'));
  states.bus.nc.publish(cancelSubject(jobId));
  await states.bus.nc.flush();
  return published;
}

/** True when the job was cancelled: its remaining work is dropped. */
export async function isCancelled(states: JobStates, jobId: string): Promise<boolean> {
  return (await getRecord(states, jobId))?.phase === 'cancelled';
}

/**
 * Runs `fn` while holding the job's manifest lock, so two uploaders never interleave "check what is
 * published, write the manifest, record it". The lock expires by itself if its holder dies.
 */
export async function withJobLock<T>(states: JobStates, jobId: string, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + LOCK_TTL_MS + 10_000;
  for (;;) {
    try {
      await states.locks.create(jobId, String(process.pid));
      break;
    } catch (err) {
      if (!isConflict(err) || Date.now() > deadline) throw err;
      await sleep(100 + Math.random() * 150);
    }
  }
  try {
    return await fn();
  } finally {
    await states.locks.delete(jobId).catch(() => undefined);
  }
}

function isConflict(err: unknown): boolean {
  const text = String(err instanceof Error ? err.message : err).toLowerCase();
  return text.includes('wrong last sequence') || text.includes('10071') || text.includes('exists');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
