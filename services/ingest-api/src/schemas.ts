/**
 * What the API answers, as zod schemas (for OpenAPI and for clients' tests). `TaskStatus` is the body of
 * GET /video/encoding/{task_id}, exactly what `toApiResponse` makes (the type check below fails when one
 * changes without the other); the live streams carry it in `LiveStatus`.
 */
import { z } from 'zod';
import { Rendition, Stage, WEBHOOK_EVENTS } from '@mesh/common';
import type { ApiJob } from '@mesh/jobs';

const Time = z.iso.datetime();

/** How a piece of work went (a stage, or a part of a chunked rung). */
const progress = {
  /** Tries of the work so far: 1, plus each redelivery (a crash, a hand-back) and each run after a failure; a stage that runs once per manifest (package, upload) counts its runs of new work once. For a chunked rung, the most any part needed. */
  attempts: z.number().int().nonnegative(),
  startedAt: Time.optional(),
  finishedAt: Time.optional(),
  /** A chunked rung's: the mean of its video chunks'. */
  percent: z.number().min(0).max(100).optional(),
  code: z.string().optional(),
  reason: z.string().optional(),
};

/** One part of a chunked rung: a video chunk (`index` from 0) or the rung's audio. */
export const ChunkStatus = z.strictObject({
  part: z.enum(['video', 'audio']),
  index: z.number().int().nonnegative().optional(),
  /** `waiting` until a replica takes it. */
  state: z.enum(['waiting', 'running', 'done', 'failed']),
  ...progress,
});

export const StageStatus = z.strictObject({
  state: z.enum(['running', 'done', 'failed']),
  ...progress,
  /** The process that took the stage's latest delivery (host/pid). */
  replica: z.string().optional().describe('the process that took the latest delivery of the stage: host/pid'),
  /** A long source's rung encoded in chunks by several replicas: each part's state. Done once they are joined. */
  chunks: z.array(ChunkStatus).optional(),
});

export const TaskStatus = z.strictObject({
  task_id: z.uuid(),
  task_status: z.enum(['PENDING', 'STARTED', 'SUCCESS', 'FAILURE']),
  /** The video id on SUCCESS, the reason on FAILURE, null before. */
  task_result: z.string().nullable(),
  state: z.enum(['queued', 'processing', 'playable', 'complete', 'failed', 'cancelled']),
  video_id: z.string(),
  attempt: z.number().int().positive(),
  object_key: z.string(),
  /** Renditions in the published manifest. */
  renditions: z.array(Rendition),
  planned_renditions: z.array(Rendition),
  /** The DASH manifest. */
  manifest: z.strictObject({ bucket: z.string(), key: z.string(), url: z.string() }).nullable(),
  /** The HLS master of the same package. */
  hls: z.strictObject({ bucket: z.string(), key: z.string(), url: z.string() }).nullable(),
  thumbnail: z.strictObject({ bucket: z.string(), key: z.string(), url: z.string().optional() }).nullable(),
  /**
   * The seek previews: their WebVTT track (`url`; cues `tile_<n>.jpg#xywh=x,y,w,h` relative to it), one tile
   * of `tileWidth` x `tileHeight` every `intervalSec`, `columns` x `rows` to a sprite sheet. The DASH
   * manifest names them too, as an image AdaptationSet. Null until the thumbnailer has made them.
   */
  storyboard: z
    .strictObject({
      bucket: z.string(),
      key: z.string(),
      url: z.string(),
      intervalSec: z.number().int().positive(),
      tileWidth: z.number().int().positive(),
      tileHeight: z.number().int().positive(),
      columns: z.number().int().positive(),
      rows: z.number().int().positive(),
      tiles: z.number().int().positive(),
      sheets: z.number().int().positive(),
    })
    .nullable(),
  stages: z.partialRecord(Stage, StageStatus),
  /** Stages the job still needs whose service has no replica attached to do them ([] when every one has). */
  waiting_for: z.array(z.strictObject({ stage: Stage, service: z.string(), reason: z.string() })),
  error: z.strictObject({ stage: Stage, code: z.string(), reason: z.string() }).nullable(),
  source: z
    .strictObject({
      durationSec: z.number(),
      width: z.number().int(),
      height: z.number().int(),
      rotation: z.number(),
      videoCodec: z.string(),
      audioCodec: z.string().nullable(),
      sizeBytes: z.number(),
    })
    .nullable(),
  notifications: z.array(
    z.strictObject({
      status: z.enum(['SUCCESS', 'FAILED']),
      /** Set for an opt-in webhook event (WEBHOOK_EVENTS), with its rung for rendition.ready; absent for the result notification. */
      event: z.enum(WEBHOOK_EVENTS).optional(),
      rendition: Rendition.optional(),
      httpStatus: z.number().int(),
      attempt: z.number().int().positive(),
      outcome: z.enum(['delivered', 'retrying', 'gave_up']),
      error: z.string().optional(),
      at: Time,
    }),
  ),
  /** The W3C trace id of the request that started the current attempt: the job's trace (null for jobs from before it was kept). */
  trace_id: z.string().regex(/^[0-9a-f]{32}$/).nullable(),
  created_at: Time,
  playable_at: Time.nullable(),
  completed_at: Time.nullable(),
  updated_at: Time,
});
export type TaskStatus = z.infer<typeof TaskStatus>;

/**
 * The data of each change on GET /video/encoding/{task_id}/events and GET /events (an SSE event of the
 * default type, `message`, whose `id` is `seq`): the task's status right after the job event at `seq`,
 * the JOB_EVENTS sequence, which is what `Last-Event-ID` resumes after.
 */
export const LiveStatus = z.strictObject({ seq: z.number().int().nonnegative(), task: TaskStatus });
export type LiveStatus = z.infer<typeof LiveStatus>;

/**
 * `event: ready` (GET /events only, first, `id` = `seq`): changes follow from after `seq`. With `reset`,
 * the Last-Event-ID could not be honoured (too far back): changes were missed, reload the job list.
 */
export const LiveReady = z.strictObject({ seq: z.number().int().nonnegative(), reset: z.string().optional() });
export type LiveReady = z.infer<typeof LiveReady>;

/** `event: end` (per-task stream, last): the task has settled and nothing more will come; close the EventSource. */
export const LiveEnd = z.strictObject({ seq: z.number().int().nonnegative(), task_id: z.uuid(), task_status: TaskStatus.shape.task_status });
export type LiveEnd = z.infer<typeof LiveEnd>;

// What toApiResponse returns must be a TaskStatus and the other way round.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const sameShape: Same<ApiJob, TaskStatus> = true;
void sameShape;
