/**
 * The read model behind GET /video/encoding/{task_id}: one document per job, folded from the job's
 * events by `applyEvent` (pure). The projector applies events in stream order; each document keeps
 * the sequence of the last event applied, so replays and repeats change nothing.
 */
import { transcodeStage, type ChunkRef, type JobEvent, type ObjectRef, type Rendition, type Stage, type StoryboardRef, type WebhookEvent } from '@mesh/common';

export type JobState = 'queued' | 'processing' | 'playable' | 'complete' | 'failed' | 'cancelled';

/** How a piece of work went: a stage, or one part of a chunked rung. */
interface WorkView {
  attempts: number;
  startedAt?: string;
  finishedAt?: string;
  percent?: number;
  code?: string;
  reason?: string;
  /** The process that took the stage's latest delivery (host/pid). */
  replica?: string;
}

export interface StageView extends WorkView {
  state: 'running' | 'done' | 'failed';
  /** A chunked rung's parts: its video chunks in order, then its audio. The rung is done once they are joined. */
  chunks?: ChunkView[];
}

/**
 * Whether a stage's start is another try of its work: the first start, a redelivery (a crash, a
 * hand-back), or a start after the stage failed (a retry). Not the first delivery of a new piece of
 * work of a stage that runs once per manifest (package, upload) while it is fine: three manifests are
 * one try each, not three. A start from before deliveries were recorded counts, as it always did.
 */
function isAnotherTry(prev: StageView, delivery: number | undefined): boolean {
  return prev.attempts === 0 || delivery === undefined || delivery > 1 || prev.state === 'failed';
}

/** One part of a chunked rung. */
export interface ChunkView extends WorkView {
  part: 'video' | 'audio';
  /** A video chunk's place in the rung, from 0. */
  index?: number;
  /** `waiting` until a replica takes it. */
  state: 'waiting' | 'running' | 'done' | 'failed';
}

/**
 * Folds a stage event of one part of a chunked rung into the rung's view: the part's own state, and the
 * rung's from its parts (running while any runs, failed when one gave up, its percent the mean of its
 * video chunks', its attempts the most any part needed). Only the joiner's stage.done (without a part)
 * makes the rung done; a part delivered again after that leaves it done.
 */
function withChunkEvent(prev: StageView | undefined, chunk: ChunkRef, event: Extract<JobEvent, { type: 'stage.started' | 'stage.progress' | 'stage.done' | 'stage.failed' }>): StageView {
  const rung: StageView = prev ?? { state: 'running', attempts: 0, startedAt: event.at, percent: 0 };
  const chunks: ChunkView[] = [...(rung.chunks ?? Array.from({ length: chunk.count }, (_, index) => ({ part: 'video' as const, index, state: 'waiting' as const, attempts: 0 })))];
  let at = chunks.findIndex((c) => (chunk.part === 'audio' ? c.part === 'audio' : c.index === chunk.index));
  if (at < 0) {
    chunks.push(chunk.part === 'audio' ? { part: 'audio', state: 'waiting', attempts: 0 } : { part: 'video', index: chunk.index, state: 'waiting', attempts: 0 });
    chunks.sort((a, b) => (a.index ?? Infinity) - (b.index ?? Infinity));
    at = chunks.findIndex((c) => (chunk.part === 'audio' ? c.part === 'audio' : c.index === chunk.index));
  }
  const before = chunks[at]!;
  const part: ChunkView =
    event.type === 'stage.started'
      ? { ...withoutOutcome(before), state: 'running', attempts: before.attempts + 1, startedAt: event.at, percent: 0 }
      : event.type === 'stage.progress'
        ? { ...before, percent: event.percent }
        : event.type === 'stage.done'
          ? { ...before, state: 'done', finishedAt: event.at, percent: 100 }
          : { ...before, state: 'failed', finishedAt: event.at, code: event.code, reason: event.reason };
  chunks[at] = part;
  if (rung.state === 'done') return { ...rung, chunks };
  let next: StageView = { ...rung, chunks, attempts: Math.max(rung.attempts, part.attempts) };
  if (event.type === 'stage.failed') next = { ...next, state: 'failed', finishedAt: event.at, code: event.code, reason: event.reason };
  else if (event.type === 'stage.started' && rung.state === 'failed') next = { ...withoutOutcome(next), state: 'running' };
  const video = chunks.filter((c) => c.part === 'video');
  return { ...next, percent: Math.min(99, Math.round(video.reduce((sum, c) => sum + (c.state === 'done' ? 100 : (c.percent ?? 0)), 0) / video.length)) };
}

/** A view as it is before its end: no finish time, code or reason. */
function withoutOutcome<V extends { finishedAt?: string; code?: string; reason?: string }>(view: V): Omit<V, 'finishedAt' | 'code' | 'reason'> {
  const { finishedAt: _f, code: _c, reason: _r, ...rest } = view;
  return rest;
}

export interface JobView {
  _id: string;
  videoId: string;
  objectKey: string;
  baseUrl: string;
  hasAudio: boolean;
  attempt: number;
  state: JobState;
  stages: Partial<Record<Stage, StageView>>;
  planned: Rendition[];
  /** Renditions in the published manifest. */
  renditions: Rendition[];
  source?: { durationSec: number; width: number; height: number; rotation: number; videoCodec: string; audioCodec: string | null; sizeBytes: number };
  manifest?: ObjectRef & { url: string };
  /** The HLS master of the same package. */
  hls?: ObjectRef & { url: string };
  thumbnail?: ObjectRef;
  /** The seek previews: their WebVTT track and how they are cut (the sheets are beside it). */
  storyboard?: StoryboardRef;
  error?: { stage: Stage; code: string; reason: string };
  /** Every try at telling the backend, oldest first; the last NOTIFICATIONS_KEPT of them. */
  notifications: { status: 'SUCCESS' | 'FAILED'; event?: WebhookEvent; rendition?: Rendition; httpStatus: number; attempt: number; outcome: 'delivered' | 'retrying' | 'gave_up'; error?: string; at: string }[];
  createdAt: string;
  /** When the first manifest was published, and when the last rendition was: what a client waits for. */
  playableAt?: string;
  completedAt?: string;
  updatedAt: string;
  /** The trace of the request that started the current attempt (job.created, or the retry's job.reopened). */
  traceId?: string;
  /** Stream sequence of the job's job.created event, and of the last event folded in. */
  createdSeq?: number;
  lastSeq: number;
}

/** Tries at the webhook a job's status lists: a backend down for days must not grow the document without end. */
export const NOTIFICATIONS_KEPT = 20;

export function applyEvent(view: JobView | null, event: JobEvent, seq: number): JobView | null {
  if (view && view.lastSeq >= seq) return view;
  if (!view) {
    // A job's history starts with job.created; anything else for an unknown job is ignored.
    if (event.type !== 'job.created') return null;
    const { spec } = event;
    return {
      _id: spec.jobId,
      videoId: spec.videoId,
      objectKey: spec.objectKey,
      baseUrl: spec.baseUrl,
      hasAudio: spec.hasAudio,
      attempt: spec.attempt,
      state: 'queued',
      stages: {},
      planned: [],
      renditions: [],
      notifications: [],
      ...(event.traceId ? { traceId: event.traceId } : {}),
      createdAt: event.at,
      updatedAt: event.at,
      createdSeq: seq,
      lastSeq: seq,
    };
  }
  const next: JobView = { ...view, stages: { ...view.stages }, updatedAt: event.at, lastSeq: seq };
  const stage = (name: Stage, patch: Partial<StageView>) => {
    const prev = next.stages[name] ?? { state: 'running', attempts: 0 };
    next.stages[name] = { ...prev, ...patch };
  };
  if ((event.type === 'stage.started' || event.type === 'stage.progress' || event.type === 'stage.done' || event.type === 'stage.failed') && event.chunk) {
    if (next.state === 'queued' && event.type === 'stage.started') next.state = 'processing';
    next.stages[event.stage] = withChunkEvent(next.stages[event.stage], event.chunk, event);
    return next;
  }
  switch (event.type) {
    case 'job.created':
      break;
    case 'stage.started': {
      const { replica: _replica, ...prev } = next.stages[event.stage] ?? { state: 'running', attempts: 0 };
      next.stages[event.stage] = { ...prev, state: 'running', attempts: prev.attempts + (isAnotherTry(prev, event.delivery) ? 1 : 0), startedAt: event.at, percent: 0, ...(event.replica ? { replica: event.replica } : {}) };
      if (next.state === 'queued') next.state = 'processing';
      break;
    }
    case 'stage.progress':
      stage(event.stage, { percent: event.percent });
      break;
    case 'stage.done':
      stage(event.stage, { state: 'done', finishedAt: event.at, percent: 100 });
      break;
    case 'stage.failed':
      stage(event.stage, { state: 'failed', finishedAt: event.at, code: event.code, reason: event.reason });
      break;
    case 'source.probed': {
      const { probe, plan } = event;
      next.planned = [...plan.renditions];
      next.source = {
        durationSec: probe.durationSec,
        width: probe.video.width,
        height: probe.video.height,
        rotation: probe.video.rotation,
        videoCodec: probe.video.codec,
        audioCodec: probe.audio?.codec ?? null,
        sizeBytes: probe.sizeBytes,
      };
      break;
    }
    case 'rendition.ready':
      break;
    case 'thumbnail.ready':
      next.thumbnail = event.object;
      if (event.storyboard) next.storyboard = event.storyboard;
      break;
    case 'manifest.published':
      // Manifests only grow; a stale event never shrinks what the client sees.
      if (event.renditions.length >= next.renditions.length) {
        next.renditions = [...event.renditions];
        next.manifest = { ...event.object, url: event.url };
        if (event.hls) next.hls = event.hls;
      }
      break;
    case 'job.playable':
      if (next.state === 'queued' || next.state === 'processing') next.state = 'playable';
      next.manifest ??= { ...event.manifest, url: event.url };
      next.playableAt ??= event.at;
      break;
    case 'job.completed':
      if (next.state !== 'failed') next.state = 'complete';
      next.completedAt ??= event.at;
      break;
    case 'job.failed':
      if (next.state !== 'playable' && next.state !== 'complete') next.state = 'failed';
      next.error = { stage: event.stage, code: event.code, reason: event.reason };
      break;
    case 'job.cancelled':
      next.state = 'cancelled';
      break;
    case 'job.reopened': {
      next.state = 'processing';
      next.attempt = event.attempt;
      if (event.traceId) next.traceId = event.traceId;
      const { error: _error, ...rest } = next;
      return rest;
    }
    case 'notification.sent':
      next.notifications = [
        ...next.notifications,
        { status: event.status, ...(event.event ? { event: event.event } : {}), ...(event.rendition ? { rendition: event.rendition } : {}), httpStatus: event.httpStatus, attempt: event.attempt, outcome: event.outcome, ...(event.error ? { error: event.error } : {}), at: event.at },
      ].slice(-NOTIFICATIONS_KEPT);
      break;
  }
  return next;
}

/**
 * The stages a running job still needs, as far as its status shows: the download until it is done; then
 * each planned rendition's transcode and the thumbnail until they end, and the packager and uploader
 * while a rendition that has not failed is still missing from the manifest. Ended jobs need none.
 */
export function stagesAhead(view: JobView): Stage[] {
  if (view.state !== 'queued' && view.state !== 'processing' && view.state !== 'playable') return [];
  const open = (stage: Stage) => view.stages[stage]?.state !== 'done' && view.stages[stage]?.state !== 'failed';
  if (open('download')) return ['download'];
  const ahead: Stage[] = view.planned.map(transcodeStage).filter(open);
  if (open('thumbnail')) ahead.push('thumbnail');
  const missing = view.planned.filter((r) => !view.renditions.includes(r) && view.stages[transcodeStage(r)]?.state !== 'failed');
  if (missing.length > 0) ahead.push('package', 'upload');
  return ahead;
}

/** A stage the job still needs whose service has no replica attached to do it: the job waits until one is. */
export interface WaitingFor {
  stage: Stage;
  /** The service that runs the stage. */
  service: string;
  reason: string;
}

/**
 * The compatible answer (task_id, task_status, task_result) plus what a client needs to follow the job.
 * `waitingFor` comes from the queues (operations.ts `waitingFor`): this function reads nothing.
 */
export function toApiResponse(view: JobView, links: { thumbnailUrl?: (ref: ObjectRef) => string; waitingFor?: WaitingFor[] } = {}) {
  // The original service's four states: a cancelled task reads as FAILURE, with the reason.
  const taskStatus = ({ queued: 'PENDING', processing: 'STARTED', playable: 'SUCCESS', complete: 'SUCCESS', failed: 'FAILURE', cancelled: 'FAILURE' } as const)[view.state];
  const failure = view.state === 'cancelled' ? 'cancelled by the client' : (view.error?.reason ?? 'failed');
  return {
    task_id: view._id,
    task_status: taskStatus,
    task_result: taskStatus === 'SUCCESS' ? view.videoId : taskStatus === 'FAILURE' ? failure : null,
    state: view.state,
    video_id: view.videoId,
    attempt: view.attempt,
    object_key: view.objectKey,
    renditions: view.renditions,
    planned_renditions: view.planned,
    manifest: view.manifest ? { bucket: view.manifest.bucket, key: view.manifest.key, url: view.manifest.url } : null,
    hls: view.hls ? { bucket: view.hls.bucket, key: view.hls.key, url: view.hls.url } : null,
    thumbnail: view.thumbnail ? { ...view.thumbnail, ...(links.thumbnailUrl ? { url: links.thumbnailUrl(view.thumbnail) } : {}) } : null,
    storyboard: view.storyboard ? { bucket: view.storyboard.vtt.bucket, key: view.storyboard.vtt.key, url: view.storyboard.vtt.url, ...storyboardCut(view.storyboard) } : null,
    stages: view.stages,
    waiting_for: links.waitingFor ?? [],
    error: view.error ?? null,
    source: view.source ?? null,
    notifications: view.notifications,
    trace_id: view.traceId ?? null,
    created_at: view.createdAt,
    playable_at: view.playableAt ?? null,
    completed_at: view.completedAt ?? null,
    updated_at: view.updatedAt,
  };
}
export type ApiJob = ReturnType<typeof toApiResponse>;

/** How the previews are cut, as the status shows it. */
function storyboardCut({ plan }: StoryboardRef) {
  return { intervalSec: plan.intervalSec, tileWidth: plan.tileWidth, tileHeight: plan.tileHeight, columns: plan.columns, rows: plan.rows, tiles: plan.tiles, sheets: plan.sheets };
}
