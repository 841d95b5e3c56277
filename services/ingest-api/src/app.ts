/**
 * The REST API, compatible with the Python service it replaces:
 *   POST /video/encoding            {object_key, base_url, video_id, has_audio}  -> "task id" (JSON string)
 *   GET  /video/encoding/{task_id}  -> {task_id, task_status, task_result, ...details}
 *   POST /video/encoding/{task_id}/retry -> runs a FAILED task again (409 for any other state)
 *   POST /video/encoding/{task_id}/cancel -> stops a running task and the FFmpeg work it started
 *   POST /uploads                   {filename?, content_type?} -> presigned PUT URL into the input bucket
 *   POST /admin/projection/rebuild  -> rebuilds job status documents from the event stream
 *   GET  /admin/dead-letters        -> messages the stages gave up on, with why
 *   POST /admin/dead-letters/{seq}/redrive -> sends one back to its stage (reopening its job if failed)
 *   GET  /healthz                   (no key)
 * Every other route needs the `ApiKey` header: missing -> 401, wrong -> 403.
 */
import { extractContext, inSpan, SpanKind } from '@mesh/telemetry';
import Koa from 'koa';
import Router from '@koa/router';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { reasonOf, type JobSpec, type Logger } from '@mesh/common';
import type { DeadLetter, QueueDepth } from '@mesh/bus';
import { toApiResponse, type JobView, type ProjectionStore } from '@mesh/jobs';
import { keyMatches } from './auth.ts';
import { BadRequest, parseEncodingRequest, parseUploadRequest, uploadKey } from './request.ts';

export interface ApiDeps {
  apiKey: string;
  log: Logger;
  store: Pick<ProjectionStore, 'get'>;
  /** Records the job and queues its first stage. */
  submit: (spec: JobSpec) => Promise<void>;
  presignUpload: (key: string, contentType: string) => Promise<{ url: string; bucket: string; expiresInSec: number }>;
  rebuildProjection: () => Promise<void>;
  deadLetters: { list: () => Promise<DeadLetter[]>; redrive: (seq: number) => Promise<DeadLetter | null> };
  /** Per-stage queue depth from JetStream, for scaling decisions. */
  queues: () => Promise<{ queues: QueueDepth[]; dead_letters: number }>;
  /** Runs a FAILED job again from the start: its new attempt, or why not. */
  retry: (view: JobView) => Promise<number>;
  /** Stops a running job; false when it was not running. */
  cancel: (view: JobView) => Promise<boolean>;
  bodyLimitBytes?: number;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

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
      if (err instanceof BadRequest) {
        ctx.status = err.status;
        ctx.body = { error: err.message, ...(err.field ? { field: err.field } : {}) };
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

  // Everything registered after this needs the key.
  router.use(async (ctx, next) => {
    if (ctx.path === '/healthz') return next();
    const offered = ctx.get('ApiKey') || undefined;
    if (offered === undefined) throw new BadRequest('missing ApiKey header', undefined, 401);
    if (!keyMatches(offered, deps.apiKey)) throw new BadRequest('invalid ApiKey', undefined, 403);
    return next();
  });

  router.post('/video/encoding', async (ctx) => {
    const req = parseEncodingRequest(await readJson(ctx.req, bodyLimit));
    const spec: JobSpec = { jobId: randomUUID(), objectKey: req.object_key, baseUrl: req.base_url, videoId: req.video_id, hasAudio: req.has_audio, attempt: 1 };
    await deps.submit(spec);
    deps.log.info({ jobId: spec.jobId, videoId: spec.videoId, objectKey: spec.objectKey }, 'job submitted');
    ctx.body = JSON.stringify(spec.jobId);
    ctx.type = 'application/json';
  });

  router.get('/video/encoding/:taskId', async (ctx) => {
    const taskId = ctx.params['taskId'] ?? '';
    const view = UUID.test(taskId) ? await deps.store.get(taskId.toLowerCase()) : null;
    if (!view) {
      ctx.status = 404;
      ctx.body = { error: `no task ${taskId}` };
      return;
    }
    ctx.body = toApiResponse(view);
  });

  router.post('/video/encoding/:taskId/retry', async (ctx) => {
    const taskId = ctx.params['taskId'] ?? '';
    const view = UUID.test(taskId) ? await deps.store.get(taskId.toLowerCase()) : null;
    if (!view) {
      ctx.status = 404;
      ctx.body = { error: `no task ${taskId}` };
      return;
    }
    if (view.state !== 'failed') {
      ctx.status = 409;
      ctx.body = { error: `only a FAILED task can be retried; this one is ${toApiResponse(view).task_status}` };
      return;
    }
    const attempt = await deps.retry(view);
    deps.log.info({ jobId: view._id, attempt }, 'job retried');
    ctx.status = 202;
    ctx.body = JSON.stringify(view._id);
    ctx.type = 'application/json';
  });

  router.post('/video/encoding/:taskId/cancel', async (ctx) => {
    const taskId = ctx.params['taskId'] ?? '';
    const view = UUID.test(taskId) ? await deps.store.get(taskId.toLowerCase()) : null;
    if (!view) {
      ctx.status = 404;
      ctx.body = { error: `no task ${taskId}` };
      return;
    }
    if (!(await deps.cancel(view))) {
      ctx.status = 409;
      ctx.body = { error: `only a running task can be cancelled; this one is ${view.state}` };
      return;
    }
    deps.log.info({ jobId: view._id }, 'job cancelled');
    ctx.status = 202;
    ctx.body = JSON.stringify(view._id);
    ctx.type = 'application/json';
  });

  router.post('/uploads', async (ctx) => {
    const req = parseUploadRequest(await readJson(ctx.req, bodyLimit));
    const key = uploadKey(randomUUID(), req.filename);
    const signed = await deps.presignUpload(key, req.content_type);
    ctx.status = 201;
    ctx.body = { object_key: key, bucket: signed.bucket, upload_url: signed.url, method: 'PUT', headers: { 'Content-Type': req.content_type }, expires_in: signed.expiresInSec };
  });

  router.post('/admin/projection/rebuild', async (ctx) => {
    await deps.rebuildProjection();
    ctx.status = 202;
    ctx.body = { rebuilding: true };
  });

  router.get('/admin/queues', async (ctx) => {
    ctx.body = await deps.queues();
  });

  router.get('/admin/dead-letters', async (ctx) => {
    ctx.body = { dead_letters: await deps.deadLetters.list() };
  });

  router.post('/admin/dead-letters/:seq/redrive', async (ctx) => {
    const seq = Number(ctx.params['seq']);
    const letter = Number.isSafeInteger(seq) && seq > 0 ? await deps.deadLetters.redrive(seq) : null;
    if (!letter) {
      ctx.status = 404;
      ctx.body = { error: `no dead letter ${ctx.params['seq']}` };
      return;
    }
    deps.log.info({ seq, subject: letter.subject, jobId: letter.jobId }, 'dead letter re-driven');
    ctx.status = 202;
    ctx.body = { redriven: letter };
  });

  app.use(router.routes());
  app.use(router.allowedMethods());
  app.use((ctx) => {
    if (ctx.status === 404 && !ctx.body) ctx.body = { error: `no route ${ctx.method} ${ctx.path}` };
  });
  return app;
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
