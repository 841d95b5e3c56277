/**
 * Every subject's schema, in one place. Publishers and consumers both check against these,
 * so a message that does not match is caught where it is made and where it is read.
 *
 * Work subjects (stream WORK, work-queue retention, one durable consumer each):
 *   work.download            DownloadWork    -> downloader
 *   work.transcode.<rung>    TranscodeWork   -> transcoder-<rung> (transcoder-720, transcoder-360, ... a
 *                                               durable consumer per rung of the ladder, ladder.ts)
 *   work.package             PackageWork     -> packager
 *   work.upload              UploadWork      -> uploader
 *   work.thumbnail           ThumbnailWork   -> thumbnailer
 * Event subject (stream JOB_EVENTS, limits retention, read by the projector and the notifier):
 *   events.<jobId>.<type>    JobEvent, e.g. events.<jobId>.job.playable: the type is in the subject so
 *                            NATS permissions decide which service may publish which event
 */
import { z } from 'zod';
import { objectKeyProblem, VIDEO_ID_PATTERN, VIDEO_ID_RULE } from './keys.ts';
import { RUNG_NAME, transcoderOf } from './ladder.ts';

/** A rung of the ladder, by name (`720p`): which ones exist is config (ladder.ts). */
export const Rendition = z.string().regex(RUNG_NAME, 'must be a rung name like 720p');
export type Rendition = z.infer<typeof Rendition>;

/** The stages of a job: one transcode stage per rung. */
export const Stage = z.string().regex(/^(download|package|upload|thumbnail|notify|transcode-[a-z0-9][a-z0-9_-]{0,23})$/, 'must be a stage');
export type Stage = z.infer<typeof Stage>;

export function transcodeStage(rendition: Rendition): Stage {
  return `transcode-${rendition}`;
}

/** The rung of a transcode stage, or null for the other stages. */
export function renditionOfStage(stage: Stage): Rendition | null {
  return stage.startsWith('transcode-') ? stage.slice('transcode-'.length) : null;
}

const JobId = z.uuid();

/** What the client asked for. Travels with every work message so no stage needs a lookup. */
export const JobSpec = z.object({
  jobId: JobId,
  /** The source in the input bucket, and the package's folder in the output bucket. */
  objectKey: z.string().min(1).superRefine((key, ctx) => {
    const problem = objectKeyProblem(key);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  }),
  baseUrl: z.string().max(2048),
  /** The thumbnail's key: one plain segment. */
  videoId: z.string().regex(VIDEO_ID_PATTERN, `must be ${VIDEO_ID_RULE}`),
  /** The rungs the client asked for (a subset of the ladder); absent: every rung. */
  renditions: z.array(Rendition).min(1).optional(),
  hasAudio: z.boolean(),
  /** 1, then one more each time a client retries the failed job. */
  attempt: z.number().int().positive(),
});
export type JobSpec = z.infer<typeof JobSpec>;

/**
 * The message id of something a job's attempt publishes once: JetStream drops a repeat inside its
 * duplicate window, and a retried attempt never collides with the one before.
 */
export function msgId(job: { jobId: string; attempt: number }, ...what: (string | number)[]): string {
  return [job.jobId, job.attempt, ...what].join(':');
}

/** An object a stage wrote, as events report it (the bucket from the writer's config). Work messages carry no buckets. */
export const ObjectRef = z.object({ bucket: z.string().min(3), key: z.string().min(1) });
export type ObjectRef = z.infer<typeof ObjectRef>;

/**
 * Which bytes of the client's object the downloader probed: every later read is pinned to them (If-Match,
 * or the version where the bucket keeps versions), so every rendition comes from the same bytes or the job
 * says the object changed. Its bucket and key are not here: the input bucket is config, the key the job's.
 */
export const SourcePin = z.object({ etag: z.string().min(1), versionId: z.string().min(1).optional() });
export type SourcePin = z.infer<typeof SourcePin>;

export const Rational = z.object({ num: z.number().int().positive(), den: z.number().int().positive() });
export type Rational = z.infer<typeof Rational>;

/** What ffprobe told us about the source, reduced to what the stages need. */
export const Probe = z.object({
  formatName: z.string(),
  durationSec: z.number().positive(),
  sizeBytes: z.number().int().nonnegative(),
  video: z.object({
    codec: z.string(),
    /** Coded size, before rotation. */
    width: z.number().int().positive(),
    height: z.number().int().positive(),
    /** Display-matrix rotation as ffprobe reports it, normalised to 0, 90, 180 or 270; FFmpeg's autorotate applies it. */
    rotation: z.number().int(),
    frameRate: Rational,
    /** Shape of a coded pixel: 16:15 for PAL DV, whose 720x576 shows as 768x576. */
    sampleAspectRatio: Rational,
    pixFmt: z.string(),
    interlaced: z.boolean(),
    /**
     * Colour as the stream declares it, in ffprobe's names (`bt2020`, `arib-std-b67`, `bt2020nc`, `tv`):
     * an absent field was not declared. Optional, so probes recorded before it still parse.
     */
    colour: z
      .object({
        primaries: z.string().max(32).optional(),
        transfer: z.string().max(32).optional(),
        space: z.string().max(32).optional(),
        range: z.string().max(32).optional(),
        /** Bits per component of the decoded picture (8, 10, 12). */
        bitDepth: z.number().int().positive().optional(),
      })
      .optional(),
    /** HDR side data of the stream or its first frame; optional like `colour`. */
    hdr: z
      .object({
        /** SMPTE ST 2086: the mastering display's luminance range, in cd/m². */
        masteringDisplay: z.object({ minLuminance: z.number().nonnegative(), maxLuminance: z.number().nonnegative() }).optional(),
        /** CTA-861.3: MaxCLL and MaxFALL, in cd/m² (0 = unknown). */
        contentLight: z.object({ maxCll: z.number().int().nonnegative(), maxFall: z.number().int().nonnegative() }).optional(),
        /** Dolby Vision configuration record: `compatibility` is the base layer's signal (0 none, 1 HDR10, 2 SDR, 4 HLG, 6 UHD Blu-ray). */
        dolbyVision: z.object({ profile: z.number().int().nonnegative(), level: z.number().int().nonnegative(), compatibility: z.number().int().nonnegative() }).optional(),
      })
      .optional(),
  }),
  audio: z.object({ codec: z.string(), channels: z.number().int().nonnegative(), sampleRate: z.number().int().nonnegative() }).nullable(),
});
export type Probe = z.infer<typeof Probe>;

/** Decisions made once, by the downloader, so every rendition is encoded alike and stays switchable. */
export const MediaPlan = z.object({
  /** The rungs to make, largest first (the manifest's order). */
  renditions: z.array(Rendition).min(1),
  /** Each rung's output size: the rung's short side, or the source's own when it is smaller than every rung asked for. */
  sizes: z.record(Rendition, z.object({ width: z.number().int().positive(), height: z.number().int().positive() })),
  /** Output frame rate shared by all renditions: keyframes land at the same times only if it is. */
  frameRate: Rational,
  segmentSeconds: z.number().positive(),
  /** Encode audio: the source has it and the client did not say has_audio=false. */
  audio: z.boolean(),
});
export type MediaPlan = z.infer<typeof MediaPlan>;

/** An encoded rendition, waiting in the work bucket under `layout.rendition(job, rendition)`. */
export const RenditionOutput = z.object({
  rendition: Rendition,
  width: z.number().int().positive(),
  height: z.number().int().positive(),
});
export type RenditionOutput = z.infer<typeof RenditionOutput>;

/**
 * One part of a chunked rung (long sources: every replica of the rung takes parts of the same video). A
 * video chunk is the output frames [startFrame, endFrame) on the plan's frame grid (frame n at n / frameRate;
 * the last chunk runs to the end of the source: endFrame null), starting on a segment boundary. The audio
 * part is the rung's audio, encoded once for the whole source. `count` is the rung's number of video chunks.
 */
export const TranscodeChunk = z
  .discriminatedUnion('part', [
    z.object({
      part: z.literal('video'),
      index: z.number().int().nonnegative(),
      count: z.number().int().min(2).max(10_000),
      startFrame: z.number().int().nonnegative(),
      endFrame: z.number().int().positive().nullable(),
    }),
    z.object({ part: z.literal('audio'), count: z.number().int().min(2).max(10_000) }),
  ])
  .superRefine((c, ctx) => {
    if (c.part !== 'video') return;
    if (c.index >= c.count) ctx.addIssue({ code: 'custom', message: `must be below count (${c.count})`, path: ['index'] });
    if ((c.endFrame === null) !== (c.index === c.count - 1)) ctx.addIssue({ code: 'custom', message: 'must be null for the last chunk only', path: ['endFrame'] });
    if (c.endFrame !== null && c.endFrame <= c.startFrame) ctx.addIssue({ code: 'custom', message: 'must be after startFrame', path: ['endFrame'] });
    if ((c.index === 0) !== (c.startFrame === 0)) ctx.addIssue({ code: 'custom', message: 'must be 0 for the first chunk only', path: ['startFrame'] });
  });
export type TranscodeChunk = z.infer<typeof TranscodeChunk>;

/** A part as events and the status name it: video chunk `index` of `count`, or the audio. */
export const ChunkRef = z.discriminatedUnion('part', [
  z.object({ part: z.literal('video'), index: z.number().int().nonnegative(), count: z.number().int().min(1) }),
  z.object({ part: z.literal('audio'), count: z.number().int().min(1) }),
]);
export type ChunkRef = z.infer<typeof ChunkRef>;

/** The part's name within its rung: `c0`, `c1`, ... or `audio` (keys, done-markers, message ids). */
export function chunkName(c: ChunkRef): string {
  return c.part === 'video' ? `c${c.index}` : 'audio';
}

/** The part as events carry it (without the frame range). */
export function chunkRef(c: TranscodeChunk): ChunkRef {
  return c.part === 'video' ? { part: 'video', index: c.index, count: c.count } : { part: 'audio', count: c.count };
}

export const DownloadWork = z.object({ kind: z.literal('download'), job: JobSpec });
export const TranscodeWork = z.object({
  kind: z.literal('transcode'),
  job: JobSpec,
  rendition: Rendition,
  source: SourcePin,
  probe: Probe,
  plan: MediaPlan,
  /** Absent: the whole rendition in one encode. */
  chunk: TranscodeChunk.optional(),
});
export const PackageWork = z.object({
  kind: z.literal('package'),
  job: JobSpec,
  plan: MediaPlan,
  outcome: z.discriminatedUnion('ok', [
    z.object({ ok: z.literal(true), output: RenditionOutput }),
    z.object({ ok: z.literal(false), rendition: Rendition, reason: z.string() }),
  ]),
});
/**
 * Either a manifest to publish, or (`refresh`, from the thumbnailer) a request to publish again the one in
 * place now that the attempt's seek previews are in the output, so the manifest names them too.
 */
export const UploadWork = z.union([
  z.object({
    kind: z.literal('upload'),
    job: JobSpec,
    refresh: z.literal(true),
  }),
  z.object({
    kind: z.literal('upload'),
    job: JobSpec,
    /**
     * The manifest of `renditions` waits in the work bucket (`layout.workManifest`). Its segments are in the
     * output already (the packager writes them there first); publishing it is what makes them reachable.
     */
    renditions: z.array(Rendition).min(1),
  }),
]);
export const ThumbnailWork = z.object({ kind: z.literal('thumbnail'), job: JobSpec, source: SourcePin, probe: Probe });

/**
 * Seek previews (libs/media storyboard.ts): one tile of `tileWidth` x `tileHeight` every `intervalSec`
 * from 0 to `durationSec`, `columns` x `rows` tiles to a JPEG sheet, `tiles` in all on `sheets` sheets.
 * Whole seconds, so every cue time is exact.
 */
export const StoryboardPlan = z.object({
  durationSec: z.number().positive(),
  intervalSec: z.number().int().min(1).max(60),
  tileWidth: z.number().int().min(2).max(1024),
  tileHeight: z.number().int().min(2).max(1024),
  columns: z.number().int().min(1).max(10),
  rows: z.number().int().min(1).max(10),
  tiles: z.number().int().positive(),
  sheets: z.number().int().positive(),
});
export type StoryboardPlan = z.infer<typeof StoryboardPlan>;

/**
 * What the thumbnailer leaves beside the sheets and the WebVTT track (`layout.storyboard(job, STORYBOARD_JSON)`),
 * written last: the uploader reads it to put the image track in the DASH manifest. Names come from the layout.
 */
export const StoryboardDescriptor = z.object({
  plan: StoryboardPlan,
  /** The largest sheet, for the image track's bandwidth. */
  maxSheetBytes: z.number().int().nonnegative(),
});
export type StoryboardDescriptor = z.infer<typeof StoryboardDescriptor>;

export type DownloadWork = z.infer<typeof DownloadWork>;
export type TranscodeWork = z.infer<typeof TranscodeWork>;
export type PackageWork = z.infer<typeof PackageWork>;
export type UploadWork = z.infer<typeof UploadWork>;
export type ThumbnailWork = z.infer<typeof ThumbnailWork>;

/**
 * One entry per kind of work: its subject, its durable consumer and its schema. Transcodes have one
 * subject and consumer per rung (`route`); their entry holds the wildcard and the consumers' prefix.
 */
export const WORK = {
  download: { subject: 'work.download', consumer: 'downloader', schema: DownloadWork },
  transcode: { subject: 'work.transcode.*', consumer: 'transcoder', schema: TranscodeWork },
  package: { subject: 'work.package', consumer: 'packager', schema: PackageWork },
  upload: { subject: 'work.upload', consumer: 'uploader', schema: UploadWork },
  thumbnail: { subject: 'work.thumbnail', consumer: 'thumbnailer', schema: ThumbnailWork },
} as const;
export type WorkKind = keyof typeof WORK;

/** Where a work item goes and which durable consumer takes it; a transcode needs its rung. */
export function workRoute(kind: WorkKind, rendition?: Rendition): { subject: string; consumer: string } {
  if (kind !== 'transcode') return WORK[kind];
  if (!rendition) throw new Error('a transcode route needs its rung');
  return { subject: `work.transcode.${rendition}`, consumer: transcoderOf(rendition) };
}

/** The stage a kind of work is (transcodes: their rung's). */
export function stageOfWork(kind: WorkKind, rendition?: Rendition): Stage {
  return kind === 'transcode' ? transcodeStage(rendition!) : kind;
}

// ---- events ----------------------------------------------------------------------------------

const base = { jobId: JobId, at: z.iso.datetime() };
/** An object clients fetch, and its URL. */
const Published = ObjectRef.extend({ url: z.string() });
/** The seek previews: their WebVTT track (cues into the sprite sheets beside it) and how they are cut. */
export const StoryboardRef = z.object({ vtt: Published, plan: StoryboardPlan });
export type StoryboardRef = z.infer<typeof StoryboardRef>;
/** The job attempt an event belongs to (a retried job announces again); absent in events written before it was kept. */
const attempt = z.number().int().positive().optional();
/** The W3C trace id of the request that started the attempt (a link into Jaeger); absent in events written before it was kept. */
const traceId = z.string().regex(/^[0-9a-f]{32}$/, 'must be a W3C trace id (32 hex digits)').optional();

/** The webhook events a backend may ask for (WEBHOOK_EVENTS, services/notifier), beside the result notification. */
export const WEBHOOK_EVENTS = ['job.playable', 'rendition.ready', 'job.completed', 'job.failed'] as const;
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number];

export const JobEvent = z.discriminatedUnion('type', [
  z.object({ ...base, type: z.literal('job.created'), spec: JobSpec, traceId }),
  /**
   * `replica`: the process that took the work (host/pid), for the dashboard's timeline; absent in events
   * written before it was kept. Stage events of a chunked rung's parts carry the part (`chunk`); the
   * rung's own stage.done comes after the join. `delivery`: which delivery of its work item a start is
   * (1 the first; absent in events written before it was kept).
   */
  z.object({ ...base, type: z.literal('stage.started'), stage: Stage, replica: z.string().min(1).max(255).optional(), delivery: z.number().int().positive().optional(), chunk: ChunkRef.optional() }),
  z.object({ ...base, type: z.literal('stage.progress'), stage: Stage, percent: z.number().min(0).max(100), chunk: ChunkRef.optional() }),
  z.object({ ...base, type: z.literal('stage.done'), stage: Stage, chunk: ChunkRef.optional() }),
  z.object({ ...base, type: z.literal('source.probed'), probe: Probe, plan: MediaPlan }),
  z.object({ ...base, type: z.literal('rendition.ready'), output: RenditionOutput }),
  /** The poster (`object`), and the seek previews when they were made (absent in events before them). */
  z.object({ ...base, type: z.literal('thumbnail.ready'), object: ObjectRef, storyboard: StoryboardRef.optional() }),
  /**
   * The DASH manifest (`object`, `url`) and the HLS master of the same segments (absent in events before HLS).
   * `added`: the renditions this manifest is the first to hold; `storyboard`: the WebVTT track of the seek
   * previews the manifest names (its image track), when it does.
   */
  z.object({
    ...base,
    type: z.literal('manifest.published'),
    attempt,
    renditions: z.array(Rendition),
    added: z.array(Rendition).optional(),
    object: ObjectRef,
    url: z.string(),
    hls: Published.optional(),
    storyboard: Published.optional(),
  }),
  /** A stage gave up. `fatal` when it fails the job; otherwise the job goes on without it. */
  z.object({ ...base, type: z.literal('stage.failed'), stage: Stage, code: z.string(), reason: z.string(), fatal: z.boolean(), chunk: ChunkRef.optional() }),
  /**
   * The first manifest is out: the client can play the video. With what it holds (absent in events written
   * before they were kept): its renditions, the HLS master, the seek previews' WebVTT track.
   */
  z.object({ ...base, type: z.literal('job.playable'), attempt, manifest: ObjectRef, url: z.string(), renditions: z.array(Rendition).optional(), hls: Published.optional(), storyboard: Published.optional() }),
  /** Every rendition that could be made is in the manifest, which is at `manifest`/`url` (absent in events before they were kept). */
  z.object({ ...base, type: z.literal('job.completed'), attempt, renditions: z.array(Rendition), manifest: ObjectRef.optional(), url: z.string().optional(), hls: Published.optional(), storyboard: Published.optional() }),
  z.object({ ...base, type: z.literal('job.failed'), attempt, stage: Stage, code: z.string(), reason: z.string() }),
  /** The client cancelled the job: work in flight is stopped, nothing more is published. */
  z.object({ ...base, type: z.literal('job.cancelled') }),
  /** A failed job runs again: the client retried it, or an operator re-drove a dead letter. */
  z.object({ ...base, type: z.literal('job.reopened'), reason: z.string(), attempt: z.number().int().positive(), traceId }),
  /**
   * One try at telling the backend; `httpStatus` 0 when it did not answer. `event` (and its `rendition`)
   * when the call was one of the opt-in webhook events (WEBHOOK_EVENTS), not the result notification.
   */
  z.object({
    ...base,
    type: z.literal('notification.sent'),
    status: z.enum(['SUCCESS', 'FAILED']),
    event: z.enum(WEBHOOK_EVENTS).optional(),
    rendition: Rendition.optional(),
    httpStatus: z.number().int(),
    attempt: z.number().int().positive(),
    outcome: z.enum(['delivered', 'retrying', 'gave_up']),
    error: z.string().optional(),
  }),
]);
export type JobEvent = z.infer<typeof JobEvent>;
export type JobEventType = JobEvent['type'];
/** An event as a stage writes it: the bus stamps `at`. */
export type NewJobEvent = JobEvent extends infer E ? (E extends JobEvent ? Omit<E, 'at'> : never) : never;

export const EVENTS_SUBJECT_PREFIX = 'events';

/** Core NATS (not JetStream): tells every process working on a job to stop now. */
export function cancelSubject(jobId: string): string {
  return `control.cancel.${jobId}`;
}
/** `events.<jobId>.<type>`: readers check that an event's type is its subject's (eventFitsSubject). */
export function eventSubject(jobId: string, type: JobEventType): string {
  return `${EVENTS_SUBJECT_PREFIX}.${jobId}.${type}`;
}

/** Every event of one job, for a consumer's filter. */
export function jobEventsFilter(jobId: string): string {
  return `${EVENTS_SUBJECT_PREFIX}.${jobId}.>`;
}

/**
 * Whether `event` may be believed as read from `subject`: a service allowed to publish only some event
 * types (deploy: per-service NATS users) could put any type in the body, but not on another type's subject.
 * `events.<jobId>` without the type is how events were published before: no user may publish there now.
 */
export function eventFitsSubject(event: Pick<JobEvent, 'jobId' | 'type'>, subject: string): boolean {
  return subject === eventSubject(event.jobId, event.type) || subject === `${EVENTS_SUBJECT_PREFIX}.${event.jobId}`;
}
