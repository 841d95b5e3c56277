/**
 * Who may write an output prefix. A package goes to `<object_key>/`, and two jobs for one object_key (a
 * client retrying by mistake, or on purpose with another base_url) would otherwise overwrite or mix each
 * other's published manifest. The prefix is owned by one running job at a time: the KV bucket
 * `output-owners` maps it (by hash: KV keys are restricted) to its owner, claimed by compare-and-set when a
 * job is submitted or retried. A second job gets OutputBusyError naming the running one; once that one
 * has ended (complete, failed, cancelled), the next may take the prefix over. No release step can be lost:
 * whether the owner still runs is read from its job record.
 */
import { createHash } from 'node:crypto';
import type { KvEntry } from '@nats-io/kv';
import { retryUnavailable } from '@mesh/bus';
import { MeshError } from '@mesh/common';
import { isConflict, withLock, type Lease } from './locks.ts';
import { getEntry, LOCK_TTL_MS, type JobStates } from './lifecycle.ts';
import { isRunning, type JobRecord } from './state.ts';

export interface OutputOwner {
  objectKey: string;
  jobId: string;
  attempt: number;
  at: string;
}

/** Another job is still writing this output prefix. */
export class OutputBusyError extends MeshError {
  override name = 'OutputBusyError';
  readonly activeJobId: string;
  constructor(objectKey: string, activeJobId: string) {
    super('OUTPUT_BUSY', `task ${activeJobId} is still converting ${objectKey}; wait for it to end (or cancel it) before converting it again`, { permanent: true });
    this.activeJobId = activeJobId;
  }
}

/** A submit that never got its first work item out within this long was abandoned (the API died mid-request). */
export const SUBMIT_GRACE_MS = 60_000;

/** The KV key of an output prefix. */
export function outputKey(objectKey: string): string {
  return createHash('sha256').update(objectKey).digest('hex');
}

/** Whether the job holding a prefix still runs (or is being submitted right now). */
export function holdsOutput(rec: JobRecord | null, now = Date.now()): boolean {
  if (!rec || !isRunning(rec)) return false;
  if (rec.queued || !rec.createdAt) return true;
  return now - Date.parse(rec.createdAt) < SUBMIT_GRACE_MS;
}

/**
 * Makes `job` the owner of its output prefix, or throws OutputBusyError naming the job that runs there.
 * The job's own record must exist (and run) first, so a concurrent claim sees it as running.
 */
export async function claimOutput(states: JobStates, job: { jobId: string; attempt: number; objectKey: string }, seen?: Promise<KvEntry | null>): Promise<void> {
  const key = outputKey(job.objectKey);
  const value = (): string => JSON.stringify({ objectKey: job.objectKey, jobId: job.jobId, attempt: job.attempt, at: new Date().toISOString() } satisfies OutputOwner);
  for (let tries = 0; tries < 50; tries++) {
    // The first look may have been taken already (`peekOutput`, beside the record's creation): the write
    // below is a compare-and-set on it either way.
    const entry = tries === 0 && seen ? await seen : await retryUnavailable(() => states.owners.get(key));
    try {
      if (!entry || entry.operation !== 'PUT') {
        await retryUnavailable(() => (entry ? states.owners.update(key, value(), entry.revision) : states.owners.create(key, value())));
        return;
      }
      const owner = entry.json<OutputOwner>();
      if (owner.jobId !== job.jobId && holdsOutput((await getEntry(states, owner.jobId))?.rec ?? null)) {
        throw new OutputBusyError(job.objectKey, owner.jobId);
      }
      await retryUnavailable(() => states.owners.update(key, value(), entry.revision));
      return;
    } catch (err) {
      if (!isConflict(err)) throw err;
    }
  }
  throw new MeshError('OUTPUT_BUSY', `too many concurrent claims on ${job.objectKey}`);
}

/** The prefix's owner entry as it is now, for `claimOutput`: a read that may go out before the job's record exists. */
export function peekOutput(states: JobStates, objectKey: string): Promise<KvEntry | null> {
  return retryUnavailable(() => states.owners.get(outputKey(objectKey)));
}

/** The job and attempt that own `objectKey`'s prefix now, if any. */
export async function outputOwner(states: JobStates, objectKey: string): Promise<OutputOwner | null> {
  const entry = await retryUnavailable(() => states.owners.get(outputKey(objectKey)));
  return entry && entry.operation === 'PUT' ? entry.json<OutputOwner>() : null;
}

/**
 * Runs `fn` holding the lease on publishing `objectKey`'s manifest, so two uploaders never interleave
 * "read what is published, write the manifest, record it". The lease is renewed while `fn` works and
 * fenced (see locks.ts); `fn` calls `lease.assertHeld()` before each write.
 */
export function withOutputLock<T>(states: JobStates, objectKey: string, o: { signal?: AbortSignal; ttlMs?: number }, fn: (lease: Lease) => Promise<T>): Promise<T> {
  return withLock(states.locks, outputKey(objectKey), { ttlMs: o.ttlMs ?? LOCK_TTL_MS, ...(o.signal ? { signal: o.signal } : {}) }, fn);
}
