/**
 * The REST API, compatible with the Python service it replaces:
 *   POST /video/encoding            {object_key, base_url, video_id, has_audio}  -> "task id" (JSON string)
 *   GET  /video/encoding/{task_id}  -> {task_id, task_status, task_result, ...details}
 *   POST /video/encoding/{task_id}/retry -> runs an ended (FAILED) task again (409 while it runs)
 *   POST /video/encoding/{task_id}/cancel -> stops a running task and the FFmpeg work it started
 *   POST /uploads                   {filename?, content_type?} -> presigned PUT URL into the input bucket
 *   POST /admin/projection/rebuild  -> rebuilds job status documents beside the live ones
 *   GET  /admin/queues, /admin/dead-letters, POST /admin/dead-letters/{seq}/redrive
 *   GET  /video/encoding/{task_id}/events, GET /events -> live progress over Server-Sent Events (live.ts)
 *   GET  /healthz                   (no key)
 * Every other route needs the `ApiKey` header: missing -> 401, wrong -> 403. With ADMIN_API_KEY set, the
 * /admin routes need that key (the client key gets 403 there); without it, APP_API_KEY may do everything.
 * The job operations themselves live in libs/jobs (operations.ts): this file only speaks HTTP.
 */
import { extractContext, inSpan, SpanKind } from '@mesh/telemetry';
import Koa from 'koa';
import Router from '@koa/router';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { reasonOf, type JobSpec, type Logger } from '@mesh/common';
import type { DeadLetter, QueueDepth } from '@mesh/bus';
import { JobConflictError, JobNotFoundError, JobUnavailableError, OutputBusyError, toApiResponse, type JobView, type RebuildState } from '@mesh/jobs';
import { keyMatches } from './auth.ts';
import { registerLiveRoutes, type LiveDeps } from './live.ts';
import { BadRequest, parseEncodingRequest, parseUploadRequest, uploadKey } from './request.ts';

export interface ApiDeps {
  apiKey: string;
  /** Operators' key for /admin routes; unset: APP_API_KEY has every power, as before. */
  adminApiKey?: string;
  log: Logger;
  jobs: {
    submit: (spec: JobSpec) => Promise<void>;
    get: (taskId: string) => Promise<JobView | null>;
    retry: (taskId: string) => Promise<{ attempt: number }>;
    cancel: (taskId: string) => Promise<void>;
  };
  presignUpload: (key: string, contentType: string) => Promise<{ url: string; bucket: string; expiresInSec: number }>;
  admin: {
    rebuild: () => Promise<{ accepted: boolean; rebuild: RebuildState }>;
    /** Per-stage queue depth from JetStream, for scaling decisions. */
    queues: () => Promise<{ queues: QueueDepth[]; dead_letters: number }>;
    deadLetters: () => Promise<DeadLetter[]>;
    redrive: (seq: number) => Promise<DeadLetter>;
  };
  bodyLimitBytes?: number;
  /** Live progress streams (live.ts); without it, their routes are not served. */
  live?: LiveDeps;
}

type Role = 'client' | 'admin';

export function createApp(deps: ApiDeps): Koa {
  const app = new Koa();
  const router = new Router();
  const bodyLimit = deps.bodyLimitBytes ?? 64 * 1024;

  // Each request is a SERVER span (continuing a client's traceparent if it sends one): a job's trace
  // starts here, and the publishes that start the job are its children.
  app.use((ctx, next) => {
    const attributes = { 'http.request.method': ctx.method, 'url.path': ctx.path };
    return inSpan(`${ctx.method} ${ctx.path}`, { kind: SpanKind.SERVER, attributes, parent: extractContext({ get: (k) => ctx.get(k) || undefined, set: () => undefined }) }, async (span) => {
      await next();
      const route = (ctx as { _matchedRoute?: string })._matchedRoute;
      if (route) span.updateName(`${ctx.method} ${route}`);
      span.setAttribute('http.response.status_code', ctx.status);
    });
  });

  app.use(async (ctx, next) => {
    const started = Date.now();
    try {
      await next();
    } catch (err) {
      const known = httpError(err);
      if (known) {
        ctx.status = known.status;
        ctx.body = known.body;
      } else {
        deps.log.error({ err: reasonOf(err), method: ctx.method, path: ctx.path }, 'request failed');
        ctx.status = 500;
        ctx.body = { error: 'internal error' };
      }
    }
    deps.log.info({ method: ctx.method, path: ctx.path, status: ctx.status, ms: Date.now() - started }, 'request');
  });

  router.get('/healthz', (ctx) => {
    ctx.body = { ok: true };
  });

  // Everything registered after this needs a key; /admin needs the operators' when there is one.
  router.use(async (ctx, next) => {
    if (ctx.path === '/healthz') return next();
    const offered = ctx.get('ApiKey') || undefined;
    if (offered === undefined) throw new BadRequest('missing ApiKey header', undefined, 401);
    const role: Role | null = deps.adminApiKey && keyMatches(offered, deps.adminApiKey) ? 'admin' : keyMatches(offered, deps.apiKey) ? (deps.adminApiKey ? 'client' : 'admin') : null;
    if (!role) throw new BadRequest('invalid ApiKey', undefined, 403);
    if (ctx.path.startsWith('/admin/') && role !== 'admin') throw new BadRequest('this route needs the operators\' key (ADMIN_API_KEY)', undefined, 403);
    return next();
  });

  router.post('/video/encoding', async (ctx) => {
    const req = parseEncodingRequest(await readJson(ctx.req, bodyLimit));
    const spec: JobSpec = { jobId: randomUUID(), objectKey: req.object_key, baseUrl: req.base_url, videoId: req.video_id, hasAudio: req.has_audio, attempt: 1 };
    await deps.jobs.submit(spec);
    deps.log.info({ jobId: spec.jobId, videoId: spec.videoId, objectKey: spec.objectKey }, 'job submitted');
    jsonString(ctx, spec.jobId);
  });

  router.get('/video/encoding/:taskId', async (ctx) => {
    const taskId = ctx.params['taskId'] ?? '';
    const view = await deps.jobs.get(taskId);
    if (!view) throw new JobNotFoundError(`task ${taskId}`);
    ctx.body = toApiResponse(view);
  });

  router.post('/video/encoding/:taskId/retry', async (ctx) => {
    const taskId = ctx.params['taskId'] ?? '';
    const { attempt } = await deps.jobs.retry(taskId);
    deps.log.info({ jobId: taskId, attempt }, 'job retried');
    jsonString(ctx, taskId.toLowerCase(), 202);
  });

  router.post('/video/encoding/:taskId/cancel', async (ctx) => {
    const taskId = ctx.params['taskId'] ?? '';
    await deps.jobs.cancel(taskId);
    deps.log.info({ jobId: taskId }, 'job cancelled');
    jsonString(ctx, taskId.toLowerCase(), 202);
  });

  router.post('/uploads', async (ctx) => {
    const req = parseUploadRequest(await readJson(ctx.req, bodyLimit));
    const key = uploadKey(randomUUID(), req.filename);
    const signed = await deps.presignUpload(key, req.content_type);
    ctx.status = 201;
    ctx.body = { object_key: key, bucket: signed.bucket, upload_url: signed.url, method: 'PUT', headers: { 'Content-Type': req.content_type }, expires_in: signed.expiresInSec };
  });

  router.post('/admin/projection/rebuild', async (ctx) => {
    const { accepted, rebuild } = await deps.admin.rebuild();
    if (!accepted) {
      ctx.status = 409;
      ctx.body = { error: `a rebuild is already ${rebuild.state} (requested ${rebuild.requestedAt})`, rebuild };
      return;
    }
    ctx.status = 202;
    ctx.body = { rebuilding: true, rebuild };
  });

  router.get('/admin/queues', async (ctx) => {
    ctx.body = await deps.admin.queues();
  });

  router.get('/admin/dead-letters', async (ctx) => {
    ctx.body = { dead_letters: await deps.admin.deadLetters() };
  });

  router.post('/admin/dead-letters/:seq/redrive', async (ctx) => {
    const seq = Number(ctx.params['seq']);
    const letter = await deps.admin.redrive(seq);
    deps.log.info({ seq, subject: letter.subject, jobId: letter.jobId }, 'dead letter re-driven');
    ctx.status = 202;
    ctx.body = { redriven: letter };
  });

  if (deps.live) registerLiveRoutes(router, deps.live, deps.jobs.get, deps.log);

  app.use(router.routes());
  app.use(router.allowedMethods());
  app.use((ctx) => {
    if (ctx.status === 404 && !ctx.body) ctx.body = { error: `no route ${ctx.method} ${ctx.path}` };
  });
  return app;
}

function jsonString(ctx: Koa.Context, value: string, status = 200): void {
  ctx.status = status;
  ctx.body = JSON.stringify(value);
  ctx.type = 'application/json';
}

/** The answer for an error a client caused or can act on; null for our own failures (500). */
function httpError(err: unknown): { status: number; body: Record<string, unknown> } | null {
  if (err instanceof BadRequest) return { status: err.status, body: { error: err.message, ...(err.field ? { field: err.field } : {}) } };
  if (err instanceof JobNotFoundError) return { status: 404, body: { error: err.message } };
  if (err instanceof OutputBusyError) return { status: 409, body: { error: err.message, active_task: err.activeJobId } };
  if (err instanceof JobConflictError) return { status: 409, body: { error: err.message } };
  if (err instanceof JobUnavailableError) return { status: 503, body: { error: err.message } };
  return null;
}

/** Reads a JSON body, at most `limit` bytes (413 beyond). An empty body reads as undefined. */
async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit) throw new BadRequest(`body larger than ${limit} bytes`, undefined, 413);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new BadRequest(`body larger than ${limit} bytes`, undefined, 413);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text === '') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    throw new BadRequest('body is not valid JSON');
  }
}
