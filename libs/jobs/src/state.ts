/**
 * The job's coordination record: what the stages must agree on (which renditions are expected, ready,
 * failed, published) and the job's phase. Pure functions here; `lifecycle.ts` stores the record in a
 * NATS KV bucket and updates it with compare-and-set, so concurrent replicas never lose an update.
 *
 *   active ──first manifest published──▶ playable ──every rendition settled and published──▶ complete
 *     │                                                                                            
 *     └──fatal stage failure, or every rendition failed──▶ failed
 *   active or playable ──client cancels──▶ cancelled
 *
 * Once playable, a job never becomes failed: a later rendition failure is recorded on its stage only,
 * and the client keeps the manifest it was told about.
 */
import { transcodeStage, type JobEventType, type NewJobEvent, type ObjectRef, type Rendition, type Stage } from '@mesh/common';

export type Phase = 'active' | 'playable' | 'complete' | 'failed' | 'cancelled';

export interface Failure {
  stage: Stage;
  code: string;
  reason: string;
}

export interface JobRecord {
  jobId: string;
  /** Goes up each time the failed job is reopened; phase events of each attempt are announced anew. */
  attempt: number;
  phase: Phase;
  /** Empty until the downloader has probed the source and planned the renditions. */
  expected: Rendition[];
  ready: Rendition[];
  failedRenditions: Partial<Record<Rendition, string>>;
  /** Renditions in the manifest that clients can fetch now. Only ever grows. */
  published: Rendition[];
  manifest?: { object: ObjectRef; url: string };
  failure?: Failure;
  /** Phase events already published, so a retried update publishes the rest and never one twice. */
  announced: JobEventType[];
}

export function newRecord(jobId: string): JobRecord {
  return { jobId, attempt: 1, phase: 'active', expected: [], ready: [], failedRenditions: {}, published: [], announced: [] };
}

export function withPlan(rec: JobRecord, renditions: Rendition[]): JobRecord {
  return settle({ ...rec, expected: [...renditions] });
}

export function withRendition(rec: JobRecord, rendition: Rendition, outcome: { ok: true } | { ok: false; reason: string }): JobRecord {
  if (outcome.ok) return settle({ ...rec, ready: union(rec.ready, [rendition]) });
  if (rec.ready.includes(rendition)) return rec;
  return settle({ ...rec, failedRenditions: { ...rec.failedRenditions, [rendition]: outcome.reason } });
}

/** A manifest holding `renditions` went out. Never shrinks what is published. */
export function withPublished(rec: JobRecord, renditions: Rendition[], manifest: { object: ObjectRef; url: string }): JobRecord {
  if (rec.phase === 'cancelled') return rec;
  if (isSubset(renditions, rec.published) && rec.manifest) return rec;
  return settle({ ...rec, published: union(rec.published, renditions), manifest });
}

/** A stage failed for good. Fails the job unless it is already playable or finished. */
export function withFailure(rec: JobRecord, failure: Failure): JobRecord {
  if (rec.phase !== 'active') return rec;
  return { ...rec, phase: 'failed', failure };
}

/** The client cancelled: only a job still running can be. */
export function withCancel(rec: JobRecord): JobRecord {
  return rec.phase === 'active' || rec.phase === 'playable' ? { ...rec, phase: 'cancelled' } : rec;
}

/** A failed job runs again (a re-driven dead letter): its failure is forgotten, so it may fail or finish anew. */
export function reopened(rec: JobRecord): JobRecord {
  if (rec.phase !== 'failed') return rec;
  const { failure: _failure, ...rest } = rec;
  return { ...rest, attempt: rec.attempt + 1, phase: 'active', failedRenditions: {}, announced: rec.announced.filter((t) => t !== 'job.failed') };
}

export function withAnnounced(rec: JobRecord, types: JobEventType[]): JobRecord {
  return { ...rec, announced: union(rec.announced, types) };
}

/** True when a manifest with `renditions` may replace what is published: it must hold at least as much. */
export function mayPublish(rec: JobRecord, renditions: Rendition[]): boolean {
  return isSubset(rec.published, renditions);
}

/** Derives the phase from the facts. */
export function settle(rec: JobRecord): JobRecord {
  if (rec.phase === 'failed' || rec.phase === 'complete' || rec.phase === 'cancelled') return rec;
  const settled = rec.expected.length > 0 && rec.expected.every((r) => rec.ready.includes(r) || r in rec.failedRenditions);
  if (rec.published.length === 0) {
    if (settled && rec.ready.length === 0) {
      const reasons = rec.expected.map((r) => `${r}: ${rec.failedRenditions[r] ?? 'unknown'}`).join('; ');
      const first = rec.expected[0]!;
      return { ...rec, phase: 'failed', failure: { stage: transcodeStage(first), code: 'NO_RENDITION', reason: `every rendition failed (${reasons})` } };
    }
    return rec;
  }
  const allPublished = rec.ready.every((r) => rec.published.includes(r));
  return { ...rec, phase: settled && allPublished ? 'complete' : 'playable' };
}

/** The phase events `rec` implies that have not been announced yet, in order. */
export function pendingAnnouncements(rec: JobRecord): NewJobEvent[] {
  const out: NewJobEvent[] = [];
  const want = (type: JobEventType) => !rec.announced.includes(type);
  if ((rec.phase === 'playable' || rec.phase === 'complete') && rec.manifest && want('job.playable')) {
    out.push({ type: 'job.playable', jobId: rec.jobId, attempt: rec.attempt, manifest: rec.manifest.object, url: rec.manifest.url });
  }
  if (rec.phase === 'complete' && want('job.completed')) {
    out.push({ type: 'job.completed', jobId: rec.jobId, renditions: [...rec.published] });
  }
  if (rec.phase === 'failed' && rec.failure && want('job.failed')) {
    out.push({ type: 'job.failed', jobId: rec.jobId, attempt: rec.attempt, ...rec.failure });
  }
  return out;
}

function union<T>(a: readonly T[], b: readonly T[]): T[] {
  return [...new Set([...a, ...b])];
}

function isSubset<T>(small: readonly T[], big: readonly T[]): boolean {
  return small.every((x) => big.includes(x));
}
