/**
 * What the API answers besides a task's status and its live events (schemas.ts), as zod schemas: the
 * handlers answer through them (app.ts `reply`), and the OpenAPI document is generated from them.
 */
import { z } from 'zod';
import type { DeadLetter as DeadLetterType, QueueDepth as QueueDepthType } from '@mesh/bus';
import type { RebuildState as RebuildStateType } from '@mesh/jobs';
import { TaskStatus } from './schemas.ts';

const at = z.iso.datetime();

export const TaskId = z.uuid().describe('the task id, as a JSON string');

export const Health = z.object({ ok: z.literal(true) });

export const UploadTicket = z.object({
  object_key: z.string().describe('where the upload lands in the input bucket: submit it as object_key'),
  bucket: z.string(),
  upload_url: z.url().describe('a presigned URL: PUT the file there, with the headers below, before expires_in seconds pass'),
  method: z.literal('PUT'),
  headers: z.object({ 'Content-Type': z.string() }),
  expires_in: z.number().int().positive(),
  base_url: z.url().describe("the package's folder in the output bucket, where the mesh writes it (S3_PUBLIC_URL, else the S3 endpoint): submit it as base_url to serve the package from there"),
});

export const QueueDepth = z.object({
  consumer: z.string().describe("the stage's durable consumer, shared by its replicas"),
  stream: z.string(),
  subject: z.string(),
  pending: z.number().int().nonnegative().describe('messages waiting for any replica to take them'),
  ack_pending: z.number().int().nonnegative().describe('messages a replica holds now'),
  redelivered: z.number().int().nonnegative().describe('messages delivered more than once and still unacknowledged'),
  waiting: z.number().int().nonnegative().describe('pull requests waiting at the server: idle replicas (or free slots)'),
  exists: z.boolean().describe('false: the consumer does not exist yet (its stage never started)'),
  attached: z.boolean().describe('a replica is there: a pull waits, a held message was reported on within the ack wait, or a message was taken or acked in the last 3 s'),
  stalled: z.boolean().describe('work is waiting or held and no replica is attached to do it'),
  last_active: z.string().nullable().describe('when a replica last took a message or reported progress on one (ISO time)'),
}) satisfies z.ZodType<QueueDepthType>;
export const Queues = z.object({ queues: z.array(QueueDepth), dead_letters: z.number().int().nonnegative() });

export const DeadLetter = z.object({
  seq: z.number().int().positive(),
  consumer: z.string(),
  subject: z.string().describe('where the message came from, and where a re-drive sends it'),
  jobId: z.string().nullable(),
  reason: z.string(),
  deliveries: z.number().int().nonnegative(),
  at,
  message: z.unknown().describe('the message as it was published'),
}) satisfies z.ZodType<DeadLetterType>;
export const DeadLetters = z.object({ dead_letters: z.array(DeadLetter) });
export const Redriven = z.object({ redriven: DeadLetter });

export const RebuildState = z.object({
  state: z.enum(['requested', 'running', 'done', 'failed']),
  requestedAt: at,
  startedAt: at.optional(),
  finishedAt: at.optional(),
  fromSnapshots: z.number().int().nonnegative().optional().describe('jobs restored from their compacted snapshot'),
  events: z.number().int().nonnegative().optional().describe('events folded so far'),
  error: z.string().optional(),
}) satisfies z.ZodType<RebuildStateType>;
export const RebuildAccepted = z.object({ rebuilding: z.literal(true), rebuild: RebuildState });

/** GET /video/encoding: newest first. */
export const TaskList = z.object({
  tasks: z.array(TaskStatus),
  next_before: at.nullable().describe('the created_at of the last task when there may be more: pass it as before for the next page; null at the end'),
});

/** The dashboard's session (GET and POST /session). */
export const SessionInfo = z.discriminatedUnion('signed_in', [
  z.object({
    signed_in: z.literal(true),
    role: z.enum(['client', 'admin']).describe("admin: the operators' key (ADMIN_API_KEY, or APP_API_KEY when none is set); client: APP_API_KEY"),
    expires_at: at,
    jaeger_ui_url: z.string().nullable().describe('where traces are shown (JAEGER_UI_URL), if set'),
  }),
  z.object({ signed_in: z.literal(false) }),
]);

/** GET /admin/queues/history: the last 15 minutes of queue depths, oldest first. */
export const QueueHistory = z.object({
  interval_sec: z.number().positive().describe('how often the queues are read'),
  window_sec: z.number().positive().describe('how far back the samples go'),
  samples: z.array(
    z.object({
      at,
      queues: z.array(QueueDepth.pick({ consumer: true, pending: true, ack_pending: true, redelivered: true, waiting: true, attached: true })),
    }),
  ),
});
