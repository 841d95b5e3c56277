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
 *   GET  /video/encoding?state=&search=&before=&limit= -> recent tasks, newest first
 *   GET  /video/encoding/{task_id}/thumbnail -> the thumbnail image
 *   POST /admin/jobs/{task_id}/retry, /cancel -> the operators' retry and cancel (the dashboard's buttons)
 *   GET  /admin/queues/history      -> the last 15 minutes of queue depths
 *   GET  /, /dashboard/{file}       the operations dashboard (dashboard.ts; no key)
 *   GET, POST, DELETE /session      the dashboard's session (session.ts; no key)
 *   GET  /healthz                   (no key)
 * Every other route needs the `ApiKey` header or the dashboard's session cookie: missing -> 401, wrong ->
 * 403. With ADMIN_API_KEY set, the /admin routes need that key or a session signed in with it (the client
 * key gets 403 there); without it, APP_API_KEY may do everything. A state-changing request made with the
 * session cookie must come from the dashboard's own origin.
 * The job operations themselves live in libs/jobs (operations.ts): this file only speaks HTTP.
 * GET /openapi.json and GET /docs (no key) describe it all (openapi.ts, docs.ts): bodies are read and
 * answered through the zod schemas the document is generated from, and every error, an unknown route or
 * method too, is an RFC 9457 problem (problems.ts).
 */
import { extractContext, inSpan, SpanKind } from '@mesh/telemetry';
import Koa from 'koa';
import Router from '@koa/router';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { z } from 'zod';
import { DEFAULT_LADDER, reasonOf, type JobSpec, type Logger, type ObjectRef } from '@mesh/common';
import type { DeadLetter, QueueDepth } from '@mesh/bus';
import { JobConflictError, JobNotFoundError, JobUnavailableError, OutputBusyError, toApiResponse, type JobQuery, type JobView, type RebuildState, type WaitingFor } from '@mesh/jobs';
import { keyMatches } from './auth.ts';
import { registerDashboard } from './dashboard.ts';
import { registerLiveRoutes, type LiveDeps } from './live.ts';
import type { QueueSample } from './queue-history.ts';
import { BadRequest, parseEncodingRequest, parseSessionRequest, parseTaskListQuery, parseUploadRequest, uploadKey } from './request.ts';
import { registerDocs } from './docs.ts';
import { openApiDocument } from './openapi.ts';
import { problem, PROBLEM_MEDIA_TYPE, ProblemError, type Problem, type ProblemKind } from './problems.ts';
import { DeadLetters, Health, QueueHistory, Queues, RebuildAccepted, Redriven, SessionInfo, TaskId, TaskList, UploadTicket } from './responses.ts';
import { TaskStatus } from './schemas.ts';
import { sameOriginProblem, sessionCookie, sessionToken, type Role, type Session, type SessionSigner } from './session.ts';

export interface ApiDeps {
  apiKey: string;
  /** Operators' key for /admin routes; unset: APP_API_KEY has every power, as before. */
  adminApiKey?: string;
  /** The ladder's rung names: what a job's `renditions` may ask for. Default: the default ladder's. */
  rungs?: string[];
  /** Signs and checks the dashboard's session cookies. */
  sessions: SessionSigner;
  /** Where the dashboard links a job's trace to (JAEGER_UI_URL). */
  jaegerUiUrl?: string;
  log: Logger;
  jobs: {
    submit: (spec: JobSpec) => Promise<void>;
    get: (taskId: string) => Promise<JobView | null>;
    /** Recent jobs, newest first. */
    list: (q: JobQuery) => Promise<JobView[]>;
    /** The thumbnail's bytes; null when the object is not there. */
    thumbnail: (ref: ObjectRef) => Promise<Uint8Array | null>;
    /** Stages the job still needs that have no replica to run them (shown as `waiting_for`). */
    waitingFor?: (view: JobView) => Promise<WaitingFor[]>;
    retry: (taskId: string) => Promise<{ attempt: number }>;
    cancel: (taskId: string) => Promise<void>;
  };
  presignUpload: (key: string, contentType: string) => Promise<{ url: string; bucket: string; expiresInSec: number }>;
  /** Where clients fetch what the mesh writes (S3_PUBLIC_URL, else the S3 endpoint): links in answers. */
  links: ApiLinks;
  admin: {
    rebuild: () => Promise<{ accepted: boolean; rebuild: RebuildState }>;
    /** Per-stage queue depth from JetStream, for scaling decisions. */
    queues: () => Promise<{ queues: QueueDepth[]; dead_letters: number }>;
    deadLetters: () => Promise<DeadLetter[]>;
    redrive: (seq: number) => Promise<DeadLetter>;
    /** The last minutes of queue depths (queue-history.ts). */
    queueHistory: () => { intervalMs: number; windowMs: number; samples: QueueSample[] };
  };
  bodyLimitBytes?: number;
  /** Live progress streams (live.ts); without it, their routes are not served. */
  live?: LiveDeps;
}

export interface ApiLinks {
  /** The thumbnail's URL, given as `thumbnail.url` in a task's status. */
  thumbnailUrl: (ref: ObjectRef) => string;
  /** The folder of `objectKey`'s package in the output bucket: the base_url that serves it from where the mesh writes it. */
  packageBaseUrl: (objectKey: string) => string;
}

/** Who is asking, and how they proved it. */
interface Caller {
  role: Role;
  via: 'key' | 'session';
}

/** Tasks per page of GET /video/encoding when the query does not say. */
const DEFAULT_PAGE = 25;

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
      // An unknown route, a method the path does not take, or one no route takes: the router left no body.
      if (ctx.body == null && ctx.status in UNMATCHED) answerProblem(ctx, UNMATCHED[ctx.status]!(ctx));
    } catch (err) {
      const known = httpError(err);
      if (!known) deps.log.error({ err: reasonOf(err), method: ctx.method, path: ctx.path }, 'request failed');
      answerProblem(ctx, known ?? problem('internal', 'internal error'));
    }
    // Reads that worked are the bulk of the traffic (clients poll status): logged at debug, so info keeps
    // every change and every refusal without thousands of lines a second.
    const quiet = ctx.method === 'GET' && ctx.status < 400;
    deps.log[quiet ? 'debug' : 'info']({ method: ctx.method, path: ctx.path, status: ctx.status, ms: Date.now() - started }, 'request');
  });

  router.get('/healthz', (ctx) => reply(ctx, Health, { ok: true }));
  registerDocs(router, openApiDocument());
  registerDashboard(router);

  /** The role a key gives: the operators' key is admin; the client key is admin too while there is no operators' key. */
  const roleOfKey = (offered: string): Role | null => {
    if (deps.adminApiKey && keyMatches(offered, deps.adminApiKey)) return 'admin';
    if (keyMatches(offered, deps.apiKey)) return deps.adminApiKey ? 'client' : 'admin';
    return null;
  };
  const sessionInfo = (session: Session) => ({ signed_in: true as const, role: session.role, expires_at: session.expiresAt.toISOString(), jaeger_ui_url: deps.jaegerUiUrl ?? null });
  const refuseCrossSite = (ctx: Koa.Context) => {
    const crossSite = sameOriginProblem(ctx);
    if (crossSite) throw new ProblemError('cross-site', crossSite);
  };

  // The dashboard's session: signing in is how a key is checked here, so these need none.
  router.get('/session', (ctx) => {
    const session = deps.sessions.verify(sessionToken(ctx));
    ctx.set('Cache-Control', 'no-store');
    reply(ctx, SessionInfo, session ? sessionInfo(session) : { signed_in: false });
  });
  router.post('/session', async (ctx) => {
    refuseCrossSite(ctx);
    const { key } = parseSessionRequest(await readJson(ctx.req, bodyLimit));
    const role = roleOfKey(key);
    if (!role) {
      deps.log.warn('dashboard sign-in refused: wrong key');
      throw new BadRequest('invalid key', 'key', 403);
    }
    const { token, session } = deps.sessions.issue(role);
    ctx.set({ 'Set-Cookie': sessionCookie(ctx, token, deps.sessions.ttlSec), 'Cache-Control': 'no-store' });
    deps.log.info({ role, expiresAt: session.expiresAt.toISOString() }, 'dashboard session started');
    reply(ctx, SessionInfo, sessionInfo(session), 201);
  });
  router.delete('/session', (ctx) => {
    refuseCrossSite(ctx);
    ctx.set('Set-Cookie', sessionCookie(ctx, '', 0));
    ctx.status = 204;
  });

  /** The ApiKey header, else the dashboard's session cookie. */
  const authenticate = (ctx: Koa.Context): Caller => {
    const offered = ctx.get('ApiKey') || undefined;
    if (offered !== undefined) {
      const role = roleOfKey(offered);
      if (!role) throw new BadRequest('invalid ApiKey', undefined, 403);
      return { role, via: 'key' };
    }
    const token = sessionToken(ctx);
    if (token === undefined) throw new BadRequest('missing ApiKey header', undefined, 401);
    const session = deps.sessions.verify(token);
    if (!session) throw new ProblemError('session-expired', 'the dashboard session has expired or is not valid: sign in again');
    refuseCrossSite(ctx);
    return { role: session.role, via: 'session' };
  };

  // Everything registered after this needs a key (or a session).
  router.use(async (ctx, next) => {
    if (ctx.path === '/healthz') return next();
    ctx.state['caller'] = authenticate(ctx);
    return next();
  });
  const callerOf = (ctx: Koa.Context) => ctx.state['caller'] as Caller;
  // The /admin routes need the operators' key when there is one. Checked by each route, not by the request's
  // path: the router matches paths in any letter case, so a test of the path let `/ADMIN/...` through.
  const operatorsOnly: Koa.Middleware = (ctx, next) => {
    if (callerOf(ctx).role !== 'admin') throw new BadRequest('this route needs the operators\' key (ADMIN_API_KEY)', undefined, 403);
    return next();
  };

  router.post('/video/encoding', async (ctx) => {
    const req = parseEncodingRequest(await readJson(ctx.req, bodyLimit));
    const rungs = deps.rungs ?? DEFAULT_LADDER.map((r) => r.name);
    const unknown = req.renditions?.filter((r) => !rungs.includes(r)) ?? [];
    if (unknown.length > 0) throw new BadRequest(`renditions: ${unknown.join(', ')} ${unknown.length > 1 ? 'are' : 'is'} not in the ladder (${rungs.join(', ')})`, 'renditions');
    const spec: JobSpec = {
      jobId: randomUUID(),
      objectKey: req.object_key,
      baseUrl: req.base_url,
      videoId: req.video_id,
      hasAudio: req.has_audio,
      ...(req.renditions ? { renditions: [...new Set(req.renditions)] } : {}),
      attempt: 1,
    };
    await deps.jobs.submit(spec);
    deps.log.info({ jobId: spec.jobId, videoId: spec.videoId, objectKey: spec.objectKey }, 'job submitted');
    reply(ctx, TaskId, spec.jobId);
  });

  const statusOf = async (view: JobView) => toApiResponse(view, { thumbnailUrl: deps.links.thumbnailUrl, waitingFor: (await deps.jobs.waitingFor?.(view)) ?? [] });

  router.get('/video/encoding', async (ctx) => {
    const q = parseTaskListQuery(ctx.query);
    const limit = q.limit ?? DEFAULT_PAGE;
    const views = await deps.jobs.list({ ...q, limit });
    reply(ctx, TaskList, { tasks: await Promise.all(views.map(statusOf)), next_before: views.length === limit ? views.at(-1)!.createdAt : null });
  });

  router.get('/video/encoding/:taskId', async (ctx) => {
    const taskId = ctx.params['taskId'] ?? '';
    const view = await deps.jobs.get(taskId);
    if (!view) throw new JobNotFoundError(`task ${taskId}`);
    reply(ctx, TaskStatus, await statusOf(view));
  });

  router.get('/video/encoding/:taskId/thumbnail', async (ctx) => {
    const taskId = ctx.params['taskId'] ?? '';
    const view = await deps.jobs.get(taskId);
    if (!view) throw new JobNotFoundError(`task ${taskId}`);
    const bytes = view.thumbnail ? await deps.jobs.thumbnail(view.thumbnail) : null;
    if (!bytes) throw new JobNotFoundError(`thumbnail for task ${taskId} yet`);
    // Another job with the same video_id replaces it: checked again each time.
    ctx.set({ 'Cache-Control': 'private, no-cache', 'X-Content-Type-Options': 'nosniff' });
    ctx.type = 'image/jpeg';
    ctx.body = Buffer.from(bytes);
  });

  // Retry and cancel: the client's routes, and the operators' (the dashboard's buttons, which need the
  // operators' key when there is one), doing the same.
  const retry = async (ctx: Koa.Context) => {
    const taskId = ctx.params['taskId'] ?? '';
    const { attempt } = await deps.jobs.retry(taskId);
    deps.log.info({ jobId: taskId, attempt, ...callerOf(ctx) }, 'job retried');
    reply(ctx, TaskId, taskId.toLowerCase(), 202);
  };
  const cancel = async (ctx: Koa.Context) => {
    const taskId = ctx.params['taskId'] ?? '';
    await deps.jobs.cancel(taskId);
    deps.log.info({ jobId: taskId, ...callerOf(ctx) }, 'job cancelled');
    reply(ctx, TaskId, taskId.toLowerCase(), 202);
  };
  router.post('/video/encoding/:taskId/retry', retry);
  router.post('/video/encoding/:taskId/cancel', cancel);
  router.post('/admin/jobs/:taskId/retry', operatorsOnly, retry);
  router.post('/admin/jobs/:taskId/cancel', operatorsOnly, cancel);

  router.post('/uploads', async (ctx) => {
    const req = parseUploadRequest(await readJson(ctx.req, bodyLimit));
    const key = uploadKey(randomUUID(), req.filename);
    const signed = await deps.presignUpload(key, req.content_type);
    reply(ctx, UploadTicket, { object_key: key, bucket: signed.bucket, upload_url: signed.url, method: 'PUT', headers: { 'Content-Type': req.content_type }, expires_in: signed.expiresInSec, base_url: deps.links.packageBaseUrl(key) }, 201);
  });

  router.post('/admin/projection/rebuild', operatorsOnly, async (ctx) => {
    const { accepted, rebuild } = await deps.admin.rebuild();
    if (!accepted) return answerProblem(ctx, problem('rebuild-running', `a rebuild is already ${rebuild.state} (requested ${rebuild.requestedAt})`, { rebuild }));
    reply(ctx, RebuildAccepted, { rebuilding: true, rebuild }, 202);
  });

  router.get('/admin/queues', operatorsOnly, async (ctx) => {
    reply(ctx, Queues, await deps.admin.queues());
  });

  router.get('/admin/queues/history', operatorsOnly, (ctx) => {
    const { intervalMs, windowMs, samples } = deps.admin.queueHistory();
    reply(ctx, QueueHistory, { interval_sec: intervalMs / 1000, window_sec: windowMs / 1000, samples });
  });

  router.get('/admin/dead-letters', operatorsOnly, async (ctx) => {
    reply(ctx, DeadLetters, { dead_letters: await deps.admin.deadLetters() });
  });

  router.post('/admin/dead-letters/:seq/redrive', operatorsOnly, async (ctx) => {
    const seq = Number(ctx.params['seq']);
    const letter = await deps.admin.redrive(seq);
    deps.log.info({ seq, subject: letter.subject, jobId: letter.jobId, ...callerOf(ctx) }, 'dead letter re-driven');
    reply(ctx, Redriven, { redriven: letter }, 202);
  });

  if (deps.live) registerLiveRoutes(router, deps.live, deps.jobs.get, deps.log, deps.links);

  app.use(router.routes());
  app.use(router.allowedMethods());
  return app;
}

/**
 * Answers `value` as `schema` shapes it: typed against the schema here, parsed through it at run time (a
 * value it refuses is our bug, a 500), so a body holds what the document says and nothing more.
 */
function reply<S extends z.ZodType>(ctx: Koa.Context, schema: S, value: z.input<S>, status = 200): void {
  const body = schema.parse(value);
  ctx.status = status;
  // A bare string (a task id) is JSON too; Koa would send it as text.
  ctx.body = typeof body === 'string' ? JSON.stringify(body) : body;
  ctx.type = 'application/json';
}

function answerProblem(ctx: Koa.Context, body: Problem): void {
  ctx.status = body.status;
  ctx.body = body;
  ctx.type = PROBLEM_MEDIA_TYPE;
}

const UNMATCHED: Record<number, (ctx: Koa.Context) => Problem> = {
  404: (ctx) => problem('not-found', `no route ${ctx.method} ${ctx.path}`),
  405: (ctx) => problem('method-not-allowed', `${ctx.path} takes ${ctx.response.get('Allow')}, not ${ctx.method}`),
  501: (ctx) => problem('not-implemented', `no route takes ${ctx.method}`),
};

const BAD_REQUEST: Record<number, ProblemKind> = { 400: 'invalid-request', 401: 'missing-api-key', 403: 'forbidden', 413: 'too-large' };

/** The problem for an error a client caused or can act on; null for our own failures (500). */
function httpError(err: unknown): Problem | null {
  if (err instanceof BadRequest) return problem(BAD_REQUEST[err.status] ?? 'invalid-request', err.message, err.field ? { field: err.field } : {});
  if (err instanceof ProblemError) return problem(err.kind, err.message);
  if (err instanceof JobNotFoundError) return problem('not-found', err.message);
  if (err instanceof OutputBusyError) return problem('output-busy', err.message, { active_task: err.activeJobId });
  if (err instanceof JobConflictError) return problem('conflict', err.message);
  if (err instanceof JobUnavailableError) return problem('unavailable', err.message);
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
