/**
 * Stores each job's coordination record in the NATS KV bucket `job-state` and changes it only with
 * compare-and-set, then publishes the phase events the new record implies (job.playable, job.completed,
 * job.failed) exactly once per job attempt: an event is marked announced only after it is published, and
 * its message id lets JetStream drop the repeat when a crash lands between the two.
 *
 * Buckets:
 *   job-state      <jobId>                         the record (state.ts); 30 days after its last change
 *   job-locks      <hash of object_key>            the lease for publishing that prefix's manifest (locks.ts)
 *   output-owners  <hash of object_key>            the job that owns the prefix (output.ts)
 *   work-done      <jobId>.<attempt>.<kind>.<item> a stage finished that item: a repeat is skipped (stage.ts)
 *                  <jobId>.<attempt>.chunks.<rung> the parts of a chunked rung encoded so far, and which one joins (chunks.ts)
 *
 * Every read and write waits out a bucket without a leader (a cluster node lost: retryUnavailable). A
 * read right after a write may then come from a replica that has not applied it yet: compare-and-set
 * catches that (the stale revision conflicts, and the change is read and made again).
 */
import { Kvm, type KV } from '@nats-io/kv';
import { BUCKETS, publishEvent, retryUnavailable, type Bus } from '@mesh/bus';
import { cancelSubject, msgId, type JobSpec, type ObjectRef, type Rendition } from '@mesh/common';
import { isConflict } from './locks.ts';
import { newRecord, pendingAnnouncements, reopened, revived, withAnnounced, withCancel, withFailure, withPlan, withPublished, withRendition, type Failure, type JobRecord, type PublishedManifest } from './state.ts';

export interface JobStates {
  bus: Bus;
  kv: KV;
  locks: KV;
  owners: KV;
  done: KV;
}

const DAY_MS = 24 * 3600 * 1000;
/** A lease on a manifest publication: renewed every third of this while its holder works. */
export const LOCK_TTL_MS = 60_000;
/** A redelivery can come as late as the WORK stream keeps messages (7 days): done-markers outlive that. */
const DONE_TTL_MS = 8 * DAY_MS;

export async function openJobStates(bus: Bus, o: { replicas?: number; lockTtlMs?: number } = {}): Promise<JobStates> {
  const kvm = new Kvm(bus.nc);
  const replicas = o.replicas ?? 1;
  // Making a replicated bucket can outlast the request on a cluster where every service starts at once.
  const [kv, locks, owners, done] = await Promise.all([
    retryUnavailable(() => kvm.create(BUCKETS.jobState, { history: 1, ttl: 30 * DAY_MS, replicas })),
    retryUnavailable(() => kvm.create(BUCKETS.locks, { history: 1, ttl: o.lockTtlMs ?? LOCK_TTL_MS, replicas })),
    retryUnavailable(() => kvm.create(BUCKETS.owners, { history: 1, replicas })),
    retryUnavailable(() => kvm.create(BUCKETS.done, { history: 1, ttl: DONE_TTL_MS, replicas })),
  ]);
  return { bus, kv, locks, owners, done };
}

export async function getEntry(states: JobStates, jobId: string): Promise<{ rec: JobRecord; revision: number } | null> {
  const entry = await retryUnavailable(() => states.kv.get(jobId));
  return entry && entry.operation === 'PUT' ? { rec: entry.json<JobRecord>(), revision: entry.revision } : null;
}

export async function getRecord(states: JobStates, jobId: string): Promise<JobRecord | null> {
  return (await getEntry(states, jobId))?.rec ?? null;
}

export interface Mutation {
  rec: JobRecord;
  /** The record before this change (null when there was none). */
  before: JobRecord | null;
  /** Whether this call changed the record: the decision a caller acts on, made atomically. */
  changed: boolean;
  revision: number;
}

/** Applies `change` with compare-and-set, retrying when another replica wrote first. */
export function mutate(states: JobStates, jobId: string, change: (rec: JobRecord) => JobRecord): Promise<Mutation> {
  return updateJson(states.kv, jobId, (current) => change(current ?? newRecord(jobId)), `job ${jobId}`);
}

/**
 * Compare-and-set of the JSON value at `key` (null while there is none), retried when another writer
 * got in first; an unchanged value is not written. The one place records are changed concurrently.
 */
export async function updateJson<T>(kv: KV, key: string, change: (current: T | null) => T, what = key): Promise<{ rec: T; before: T | null; changed: boolean; revision: number }> {
  // A write tried again because its answer was lost (the bucket's leader died) may have landed: then the
  // retry conflicts with it, and applying the change again would apply it twice (seen on a cluster: one
  // increment in ~1,250 counted twice). So the value it wrote, read back, is that write's success.
  const lost: { write: { body: string; before: T | null } | null } = { write: null };
  for (let attempt = 0; attempt < 50; attempt++) {
    const entry = await retryUnavailable(() => kv.get(key));
    const current = entry && entry.operation === 'PUT' ? entry.json<T>() : null;
    const unsure = lost.write;
    lost.write = null;
    if (unsure && entry && entry.operation === 'PUT' && JSON.stringify(current) === unsure.body) return { rec: current!, before: unsure.before, changed: true, revision: entry.revision };
    const next = change(current);
    const body = JSON.stringify(next);
    if (current && entry && JSON.stringify(current) === body) return { rec: current, before: current, changed: false, revision: entry.revision };
    let tries = 0;
    try {
      const revision = await retryUnavailable(() => {
        if (tries++ > 0) lost.write = { body, before: current };
        return entry ? kv.update(key, body, entry.revision) : kv.create(key, body);
      });
      return { rec: next, before: current, changed: true, revision };
    } catch (err) {
      if (!isConflict(err)) throw err;
      await new Promise((r) => setTimeout(r, 5 + Math.random() * 20 * (attempt + 1)));
    }
  }
  throw new Error(`${what}: too many concurrent updates to its state`);
}

/** Message id of a phase event: once per attempt, and again after each revival. */
function announcementId(rec: JobRecord, type: string): string {
  return msgId(rec, type, ...(rec.revivals ? [`r${rec.revivals}`] : []));
}

async function announce(states: JobStates, rec: JobRecord): Promise<JobRecord> {
  const events = pendingAnnouncements(rec);
  if (events.length === 0) return rec;
  for (const event of events) await publishEvent(states.bus, event, announcementId(rec, event.type));
  return (await mutate(states, rec.jobId, (r) => withAnnounced(r, events.map((e) => e.type)))).rec;
}

/** A job attempt; `attempt` left out means whichever attempt the record is at. */
export interface AttemptRef {
  jobId: string;
  attempt?: number;
}

/** `fn` applied only to the attempt it is about: late work of an earlier attempt changes nothing. */
function forAttempt(job: AttemptRef, fn: (rec: JobRecord) => JobRecord): (rec: JobRecord) => JobRecord {
  return (rec) => (job.attempt === undefined || rec.attempt === job.attempt ? fn(rec) : rec);
}

async function change(states: JobStates, job: AttemptRef, fn: (rec: JobRecord) => JobRecord): Promise<JobRecord> {
  return announce(states, (await mutate(states, job.jobId, forAttempt(job, fn))).rec);
}

/** A new job's record, before anything else of it exists; fails if the id is taken. */
export async function createJob(states: JobStates, spec: JobSpec): Promise<number> {
  const value = JSON.stringify(newRecord(spec.jobId, { spec, attempt: spec.attempt, now: new Date().toISOString() }));
  return retryUnavailable(() => states.kv.create(spec.jobId, value));
}

/** The attempt's first work item is out: the job is no longer at risk of being abandoned mid-submit. */
export async function markQueued(states: JobStates, jobId: string, attempt: number): Promise<void> {
  await mutate(states, jobId, (r) => (r.attempt === attempt && !r.queued ? { ...r, queued: true } : r));
}

export function planRenditions(states: JobStates, job: AttemptRef, renditions: Rendition[]): Promise<JobRecord> {
  return change(states, job, (r) => withPlan(r, renditions));
}

export function settleRendition(states: JobStates, job: AttemptRef, rendition: Rendition, outcome: { ok: true } | { ok: false; reason: string }): Promise<JobRecord> {
  return change(states, job, (r) => withRendition(r, rendition, outcome));
}

export function recordPublished(states: JobStates, job: AttemptRef, renditions: Rendition[], manifest: PublishedManifest): Promise<JobRecord> {
  return change(states, job, (r) => withPublished(r, renditions, manifest));
}

/**
 * A stage failed for good: publishes `stage.failed` and fails the job unless it is already playable.
 * Returns the record, whose phase says whether the job failed.
 */
export async function failStage(states: JobStates, job: AttemptRef, failure: Failure): Promise<JobRecord> {
  const { rec } = await mutate(states, job.jobId, forAttempt(job, (r) => withFailure(r, failure)));
  const fatal = rec.phase === 'failed' && rec.failure?.stage === failure.stage && (job.attempt === undefined || rec.attempt === job.attempt);
  await publishEvent(states.bus, { type: 'stage.failed', jobId: job.jobId, ...failure, fatal });
  return announce(states, rec);
}

/**
 * Moves an ended job (failed or cancelled) to a new attempt, from `rec` as read at `revision`; the caller
 * queues the attempt's first work item, then calls markQueued. Null when the job changed meanwhile.
 */
export async function reopenForRetry(states: JobStates, jobId: string, from: { rec: JobRecord; revision: number }): Promise<{ rec: JobRecord; revision: number } | null> {
  const next = reopened(from.rec, new Date().toISOString());
  if (next === from.rec) return null;
  try {
    return { rec: next, revision: await retryUnavailable(() => states.kv.update(jobId, JSON.stringify(next), from.revision)) };
  } catch (err) {
    if (isConflict(err)) return null;
    throw err;
  }
}

/** Puts the record back as it was before a retry that could not be queued (only if nothing else wrote since). */
export async function undoReopen(states: JobStates, jobId: string, previous: JobRecord, revision: number): Promise<boolean> {
  try {
    await retryUnavailable(() => states.kv.update(jobId, JSON.stringify(previous), revision));
    return true;
  } catch (err) {
    if (isConflict(err)) return false;
    throw err;
  }
}

/** Brings a failed attempt back where it stopped (a re-driven dead letter). Null when it was not failed. */
export async function reviveJob(states: JobStates, jobId: string): Promise<JobRecord | null> {
  const m = await mutate(states, jobId, revived);
  return m.changed && m.before?.phase === 'failed' ? m.rec : null;
}

/**
 * Cancels a running job: the compare-and-set decides (a job that completed a moment earlier is not
 * cancelled), then job.cancelled is published and every process working on the job is told to stop.
 * Null when the job was not running.
 */
export async function cancelJob(states: JobStates, jobId: string): Promise<Awaited<ReturnType<typeof publishEvent>> | null> {
  const m = await mutate(states, jobId, withCancel);
  if (!m.changed || m.rec.phase !== 'cancelled' || !m.before) return null;
  const published = await publishEvent(states.bus, { type: 'job.cancelled', jobId }, msgId(m.rec, 'cancelled'));
  states.bus.nc.publish(cancelSubject(jobId));
  await states.bus.nc.flush();
  return published;
}

/** True when the job was cancelled: its remaining work is dropped. */
export async function isCancelled(states: JobStates, jobId: string): Promise<boolean> {
  return (await getRecord(states, jobId))?.phase === 'cancelled';
}

// ---- done-markers --------------------------------------------------------------------------------

/** The marker of one work item of one job attempt: a stage that finds it skips the repeat. */
export function doneKey(job: { jobId: string; attempt: number }, kind: string, item: string): string {
  return [job.jobId, job.attempt, kind, item.replace(/[^-\w]/g, '_')].join('.');
}

export async function isDone(states: JobStates, key: string): Promise<boolean> {
  const entry = await retryUnavailable(() => states.done.get(key));
  return entry !== null && entry.operation === 'PUT';
}

export async function markDone(states: JobStates, key: string): Promise<void> {
  await retryUnavailable(() => states.done.put(key, new Date().toISOString()));
}
