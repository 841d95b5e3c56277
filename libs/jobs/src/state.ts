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
import { transcodeStage, type JobEventType, type JobSpec, type NewJobEvent, type ObjectRef, type Rendition, type Stage } from '@mesh/common';

export type Phase = 'active' | 'playable' | 'complete' | 'failed' | 'cancelled';

export interface Failure {
  stage: Stage;
  code: string;
  reason: string;
}

export interface JobRecord {
  jobId: string;
  /**
   * What the client asked for (its `attempt` is the first one; `attempt` below is current). It names the
   * output prefix the job owns while it runs (output.ts) and answers GET before the projection has the job.
   * Absent in records made before it was kept.
   */
  spec?: JobSpec;
  /** When the current attempt started. */
  createdAt?: string;
  /** The first work item is on its way: a job that never got this far was abandoned at submit. */
  queued?: boolean;
  /** Goes up each time the failed job is reopened; phase events of each attempt are announced anew. */
  attempt: number;
  phase: Phase;
  /** Empty until the downloader has probed the source and planned the renditions. */
  expected: Rendition[];
  ready: Rendition[];
  failedRenditions: Partial<Record<Rendition, string>>;
  /** Renditions in the manifest that clients can fetch now. Only ever grows. */
  published: Rendition[];
  manifest?: PublishedManifest;
  failure?: Failure;
  /** Phase events already published, so a retried update publishes the rest and never one twice. */
  announced: JobEventType[];
  /** Times this attempt was revived by a re-driven dead letter: its phase events are announced anew each time. */
  revivals?: number;
}

/** The DASH manifest last published, with the HLS master beside it and the storyboard it names (when it does). */
export interface PublishedManifest {
  object: ObjectRef;
  url: string;
  hls?: ObjectRef & { url: string };
  storyboard?: ObjectRef & { url: string };
}

export function newRecord(jobId: string, o: { spec?: JobSpec; attempt?: number; now?: string } = {}): JobRecord {
  return {
    jobId,
    ...(o.spec ? { spec: o.spec } : {}),
    ...(o.now ? { createdAt: o.now } : {}),
    attempt: o.attempt ?? 1,
    phase: 'active',
    expected: [],
    ready: [],
    failedRenditions: {},
    published: [],
    announced: [],
  };
}

/** Still running: a client may cancel it, and it holds its output prefix. */
export function isRunning(rec: Pick<JobRecord, 'phase'>): boolean {
  return rec.phase === 'active' || rec.phase === 'playable';
}

export function withPlan(rec: JobRecord, renditions: Rendition[]): JobRecord {
  return settle({ ...rec, expected: [...renditions] });
}

export function withRendition(rec: JobRecord, rendition: Rendition, outcome: { ok: true } | { ok: false; reason: string }): JobRecord {
  if (outcome.ok) {
    // A rendition that failed and then made it (its dead letter re-driven) is no longer failed.
    const { [rendition]: _failed, ...failedRenditions } = rec.failedRenditions;
    return settle({ ...rec, ready: union(rec.ready, [rendition]), failedRenditions });
  }
  if (rec.ready.includes(rendition)) return rec;
  return settle({ ...rec, failedRenditions: { ...rec.failedRenditions, [rendition]: outcome.reason } });
}

/** A manifest holding `renditions` went out. Never shrinks what is published. */
export function withPublished(rec: JobRecord, renditions: Rendition[], manifest: PublishedManifest): JobRecord {
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
  return isRunning(rec) ? { ...rec, phase: 'cancelled' } : rec;
}

/** A job that ended (failed or cancelled) may run again: a client's retry, or an operator's re-drive. */
export function mayReopen(rec: Pick<JobRecord, 'phase'>): boolean {
  return rec.phase === 'failed' || rec.phase === 'cancelled';
}

/**
 * The job runs again from the start as a new attempt (a client's retry): everything the last attempt found
 * out is forgotten (its renditions and manifests belong to that attempt's folders), so it may fail or
 * finish anew. `queued` is set once the attempt's first work item is on its way.
 */
export function reopened(rec: JobRecord, now: string): JobRecord {
  if (!mayReopen(rec)) return rec;
  return newRecord(rec.jobId, { attempt: rec.attempt + 1, now, ...(rec.spec ? { spec: rec.spec } : {}) });
}

/**
 * A failed attempt comes back to life where it stopped (an operator re-drove the dead letter of a stage
 * that can take it to the end): its failure is forgotten and its phase events may be announced again.
 */
export function revived(rec: JobRecord): JobRecord {
  if (rec.phase !== 'failed') return rec;
  const { failure: _failure, ...rest } = rec;
  // Not settled here: with every rendition failed that would fail it again at once; the re-driven work settles it.
  return { ...rest, phase: 'active', announced: rec.announced.filter((t) => t !== 'job.failed'), revivals: (rec.revivals ?? 0) + 1 };
}

export function withAnnounced(rec: JobRecord, types: JobEventType[]): JobRecord {
  return { ...rec, announced: union(rec.announced, types) };
}

/** True when a manifest with `renditions` may replace what is published: it must hold at least as much. */
export function mayPublish(rec: JobRecord, renditions: Rendition[]): boolean {
  return isSubset(rec.published, renditions);
}

/** Who wrote the manifest now at `<object_key>/manifest.mpd`, as its object metadata says. */
export interface ManifestOrigin {
  jobId: string;
  attempt: number;
  renditions: string[];
}

/**
 * Whether `next` may replace the manifest `current` at an output prefix. The same attempt's manifest only
 * grows (it must hold every rendition already out); another job's (or attempt's) replaces it only when it
 * holds at least as many renditions, so a client retrying by mistake never shrinks what viewers get.
 */
export function mayReplaceManifest(current: ManifestOrigin | null, next: ManifestOrigin): boolean {
  if (!current) return true;
  if (current.jobId === next.jobId && current.attempt === next.attempt) return isSubset(current.renditions, next.renditions);
  return next.renditions.length >= current.renditions.length;
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
  const attempt = rec.attempt;
  // What a backend told of the event needs: where the manifests are and what they hold (in the plan's
  // order, largest first, as the manifest lists them; `published` keeps the order they came out in).
  const renditions = [...rec.expected.filter((r) => rec.published.includes(r)), ...rec.published.filter((r) => !rec.expected.includes(r))];
  const links = rec.manifest ? { ...(rec.manifest.hls ? { hls: rec.manifest.hls } : {}), ...(rec.manifest.storyboard ? { storyboard: rec.manifest.storyboard } : {}) } : {};
  if ((rec.phase === 'playable' || rec.phase === 'complete') && rec.manifest && want('job.playable')) {
    out.push({ type: 'job.playable', jobId: rec.jobId, attempt, manifest: rec.manifest.object, url: rec.manifest.url, renditions, ...links });
  }
  if (rec.phase === 'complete' && want('job.completed')) {
    out.push({ type: 'job.completed', jobId: rec.jobId, attempt, renditions, ...(rec.manifest ? { manifest: rec.manifest.object, url: rec.manifest.url } : {}), ...links });
  }
  if (rec.phase === 'failed' && rec.failure && want('job.failed')) {
    out.push({ type: 'job.failed', jobId: rec.jobId, attempt, ...rec.failure });
  }
  return out;
}

function union<T>(a: readonly T[], b: readonly T[]): T[] {
  return [...new Set([...a, ...b])];
}

function isSubset<T>(small: readonly T[], big: readonly T[]): boolean {
  return small.every((x) => big.includes(x));
}
