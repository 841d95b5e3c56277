/**
 * The OpenAPI 3.1 document of the API, generated from the zod schemas the handlers parse and answer with
 * (request.ts, responses.ts, problems.ts, schemas.ts): the table below says which schema each route takes
 * and answers, `openApiDocument` turns it into the document served at /openapi.json. Nothing here
 * restates a body's shape by hand; the live streams' framing (event, id, data) is described here.
 */
import { z } from 'zod';
import { Rendition, Stage } from '@mesh/common';
import pkg from '../package.json' with { type: 'json' };
import { Problem, PROBLEM_MEDIA_TYPE, PROBLEMS, problemType, type ProblemKind } from './problems.ts';
import { DashboardFileParam, DocsFileParam, EncodingBody, EncodingRequest, EncodingRequestCamel, LastEventIdHeader, SeqParam, SessionRequest, TaskIdParam, TaskListQuery, UploadRequest } from './request.ts';
import { DeadLetter, DeadLetters, Health, QueueDepth, QueueHistory, Queues, RebuildAccepted, RebuildState, Redriven, SessionInfo, TaskId, TaskList, UploadTicket } from './responses.ts';
import { SESSION_COOKIE } from './session.ts';
import { LiveEnd, LiveReady, LiveStatus, TaskStatus } from './schemas.ts';

/** Who may call a route: anyone, any key (APP_API_KEY or ADMIN_API_KEY), or the operators' key. */
type Access = 'public' | 'client' | 'admin';
type ErrorStatus = 400 | 403 | 404 | 409 | 413 | 503;

interface Answer {
  status: number;
  description: string;
  /** Keyed by media type; a zod schema, or the JSON Schema of a body zod cannot describe (files, streams). */
  content: Record<string, z.ZodType | JsonSchema>;
  /** A stream's messages: the component each one matches (OpenAPI 3.2's itemSchema, as x-itemSchema in 3.1). */
  itemSchema?: string;
  /** Response headers worth knowing, by name: what each holds. */
  headers?: Record<string, string>;
}

export interface RouteDoc {
  method: 'get' | 'post' | 'delete';
  /** OpenAPI path template; the router's `:name` parameters are `{name}` here. */
  path: string;
  operationId: string;
  tag: 'tasks' | 'uploads' | 'live' | 'admin' | 'dashboard' | 'service';
  summary: string;
  description?: string;
  access: Access;
  params?: Record<string, z.ZodType>;
  query?: Record<string, z.ZodType>;
  headers?: Record<string, z.ZodType>;
  body?: { schema: z.ZodType; required: boolean };
  ok: Answer;
  /** Other answers that are not problems. */
  also?: Answer[];
  /** The problems this route can answer besides 401/403 (keyed routes) and 500 (every route). */
  errors: ErrorStatus[];
}

type JsonSchema = Record<string, unknown>;
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: z.ZodType) => ({ 'application/json': schema });

/**
 * Server-sent events (live.ts). In OpenAPI 3.1 a stream's body is one string: each message's shape is
 * the media type's x-itemSchema (OpenAPI 3.2's itemSchema), its data a JSON document of schemas.ts.
 */
const jsonOf = (component: string, what: string) => z.string().meta({ contentMediaType: 'application/json', contentSchema: ref(component) }).describe(`a ${component}, as JSON: ${what}`);
const SseId = z.string().regex(/^\d+$/).describe('the seq of the change: what Last-Event-ID resumes after');
const SseStatus = z.object({ event: z.literal('message').optional().describe('absent: the default type'), id: SseId, data: jsonOf('LiveStatus', 'the task right after the change') });
const SseReady = z.object({ event: z.literal('ready'), id: SseId, data: jsonOf('LiveReady', 'the changes that follow come after seq; with reset, changes were missed: reload the task list') });
const SseEnd = z.object({ event: z.literal('end'), data: jsonOf('LiveEnd', 'the task has settled and nothing more will come: close the stream') });
const TaskStreamMessage = z.union([SseStatus, SseEnd]);
const AllStreamMessage = z.union([SseReady, SseStatus]);

const eventStream = (itemSchema: string, description: string): Answer => ({
  status: 200,
  description: `${description} A comment line now and then keeps proxies from closing a quiet stream. Each message is a ${itemSchema} (schemas below; x-itemSchema of the media type), its data the JSON of a LiveStatus, LiveReady or LiveEnd.`,
  content: { 'text/event-stream': { type: 'string' } },
  itemSchema,
});
const lastEventId = { 'Last-Event-ID': LastEventIdHeader };
const LIVE_ERRORS = '400: Last-Event-ID is not an id this API sent. 503: live changes are unavailable now; try again.';

const SET_COOKIE = `${SESSION_COOKIE}=<signed token>; Path=/; Max-Age=<SESSION_TTL_SEC>; HttpOnly; SameSite=Strict (and Secure over https)`;

const RETRY_TASK: RouteDoc = {
  method: 'post',
  path: '/video/encoding/{task_id}/retry',
  operationId: 'retryTask',
  tag: 'tasks',
  summary: 'Run a FAILED task again from the start',
  description: 'The task becomes a new attempt; a task that has not failed is refused (409). 503: the retry could not be queued now; nothing changed.',
  access: 'client',
  params: { task_id: TaskIdParam },
  ok: { status: 202, description: 'the task id: the retry is queued', content: json(TaskId) },
  errors: [404, 409, 503],
};
const CANCEL_TASK: RouteDoc = {
  method: 'post',
  path: '/video/encoding/{task_id}/cancel',
  operationId: 'cancelTask',
  tag: 'tasks',
  summary: 'Stop a running task',
  description: 'Its FFmpeg work stops and nothing more is published; task_status becomes FAILURE, "cancelled by the client". A task that has ended is refused (409).',
  access: 'client',
  params: { task_id: TaskIdParam },
  ok: { status: 202, description: 'the task id: it is cancelled', content: json(TaskId) },
  errors: [404, 409],
};
/** A client's route as the operators call it (the dashboard's buttons): the same answers, the operators' key. */
const operatorCopy = (route: RouteDoc, path: string, operationId: string, button: string): RouteDoc => ({
  ...route,
  path,
  operationId,
  tag: 'admin',
  access: 'admin',
  summary: `${route.summary} (the dashboard's ${button})`,
  description: `What ${route.method.toUpperCase()} ${route.path} does, as an operator: the dashboard's ${button} button, which needs the operators' key when ADMIN_API_KEY is set. ${route.description ?? ''}`,
});

export const ROUTES: RouteDoc[] = [
  {
    method: 'get',
    path: '/video/encoding',
    operationId: 'listTasks',
    tag: 'tasks',
    summary: 'Recent tasks, newest first',
    description: "A page of tasks, each as GET /video/encoding/{task_id} answers it. Filter by state, search by task id, video id or object key; for the next page pass next_before as before. A parameter that is not valid is refused (400) naming it.",
    access: 'client',
    query: TaskListQuery.shape,
    ok: { status: 200, description: 'a page of tasks', content: json(TaskList) },
    errors: [400],
  },
  {
    method: 'post',
    path: '/video/encoding',
    operationId: 'submitTask',
    tag: 'tasks',
    summary: 'Convert a video in the input bucket to MPEG-DASH and HLS',
    description:
      "Takes the original service's snake_case fields or their camelCase spelling (one spelling per body). Bodies over 64 KiB are refused (413). A second task for an object_key another task is still converting is refused (409, output-busy, naming that task).",
    access: 'client',
    body: { schema: EncodingBody, required: true },
    ok: { status: 200, description: 'the task id', content: json(TaskId) },
    errors: [400, 409, 413],
  },
  {
    method: 'get',
    path: '/video/encoding/{task_id}',
    operationId: 'getTask',
    tag: 'tasks',
    summary: "A task's status",
    description:
      'task_status is the original service\'s: PENDING (queued), STARTED (processing), SUCCESS (playable or complete), FAILURE (failed or cancelled); task_result is the video id on SUCCESS, the reason on FAILURE, null before. The rest follows the job: its state, each stage with attempts, progress and reason, the renditions published, the manifests, the thumbnail and the seek previews (storyboard), the tries at telling the backend.',
    access: 'client',
    params: { task_id: TaskIdParam },
    ok: { status: 200, description: "the task's status, from the projection of its events", content: json(TaskStatus) },
    errors: [404],
  },
  {
    method: 'get',
    path: '/video/encoding/{task_id}/thumbnail',
    operationId: 'getThumbnail',
    tag: 'tasks',
    summary: "The task's thumbnail image",
    description: '404 while the task has no thumbnail (yet).',
    access: 'client',
    params: { task_id: TaskIdParam },
    ok: { status: 200, description: 'the JPEG', content: { 'image/jpeg': { type: 'string', contentEncoding: 'binary' } } },
    errors: [404],
  },
  RETRY_TASK,
  CANCEL_TASK,
  {
    method: 'get',
    path: '/video/encoding/{task_id}/events',
    operationId: 'followTask',
    tag: 'live',
    summary: "A task's status now, then each change, until it settles",
    description: LIVE_ERRORS,
    access: 'client',
    params: { task_id: TaskIdParam },
    headers: lastEventId,
    ok: eventStream('TaskStreamMessage', "Server-sent events: the task's status (id: its seq), then one per change, then `end` once it settles, and the stream closes."),
    also: [{ status: 204, description: 'the task had settled before the events after Last-Event-ID: nothing more will come (an EventSource does not reconnect)', content: {} }],
    errors: [400, 404, 503],
  },
  {
    method: 'get',
    path: '/events',
    operationId: 'followAllTasks',
    tag: 'live',
    summary: "Every task's changes, for a dashboard",
    description: LIVE_ERRORS,
    access: 'client',
    headers: lastEventId,
    ok: eventStream('AllStreamMessage', "Server-sent events: `ready` first, then one per change of any task (id: its seq)."),
    errors: [400, 503],
  },
  {
    method: 'post',
    path: '/uploads',
    operationId: 'createUpload',
    tag: 'uploads',
    summary: 'A presigned URL to upload a video into the input bucket',
    description: 'PUT the file to upload_url (no S3 credentials needed), then submit object_key.',
    access: 'client',
    body: { schema: UploadRequest, required: false },
    ok: { status: 201, description: 'where to PUT the file', content: json(UploadTicket) },
    errors: [400, 413],
  },
  {
    method: 'post',
    path: '/admin/projection/rebuild',
    operationId: 'rebuildProjection',
    tag: 'admin',
    summary: "Rebuild every job's status from the event stream",
    description: 'One rebuild at a time: 409 (rebuild-running) while one is under way.',
    access: 'admin',
    ok: { status: 202, description: 'the rebuild is requested', content: json(RebuildAccepted) },
    errors: [409],
  },
  operatorCopy(RETRY_TASK, '/admin/jobs/{task_id}/retry', 'operatorRetryTask', 'Retry'),
  operatorCopy(CANCEL_TASK, '/admin/jobs/{task_id}/cancel', 'operatorCancelTask', 'Cancel'),
  {
    method: 'get',
    path: '/admin/queues/history',
    operationId: 'queueHistory',
    tag: 'admin',
    summary: 'The last 15 minutes of queue depths, per stage',
    description: 'Read by this API process every QUEUE_HISTORY_INTERVAL_MS (10 s) since it started: the dashboard\'s charts.',
    access: 'admin',
    ok: { status: 200, description: 'samples, oldest first', content: json(QueueHistory) },
    errors: [],
  },
  {
    method: 'get',
    path: '/admin/queues',
    operationId: 'listQueues',
    tag: 'admin',
    summary: 'Per-stage queue depth, from JetStream',
    access: 'admin',
    ok: { status: 200, description: 'queue depths and the number of dead letters', content: json(Queues) },
    errors: [],
  },
  {
    method: 'get',
    path: '/admin/dead-letters',
    operationId: 'listDeadLetters',
    tag: 'admin',
    summary: 'Messages a stage gave up on',
    access: 'admin',
    ok: { status: 200, description: 'the dead letters, with their reason and job', content: json(DeadLetters) },
    errors: [],
  },
  {
    method: 'post',
    path: '/admin/dead-letters/{seq}/redrive',
    operationId: 'redriveDeadLetter',
    tag: 'admin',
    summary: 'Send a dead letter back to its stage',
    description: "Reopens the dead letter's failed job first. 409: the dead letter belongs to an attempt that has been retried since.",
    access: 'admin',
    params: { seq: SeqParam },
    ok: { status: 202, description: 'the dead letter, sent again', content: json(Redriven) },
    errors: [404, 409],
  },
  {
    method: 'get',
    path: '/session',
    operationId: 'getSession',
    tag: 'dashboard',
    summary: "The dashboard's session: signed in or not, and as whom",
    access: 'public',
    ok: { status: 200, description: 'the session the cookie holds (signed_in false without a valid one)', content: json(SessionInfo) },
    errors: [],
  },
  {
    method: 'post',
    path: '/session',
    operationId: 'signIn',
    tag: 'dashboard',
    summary: 'Sign the dashboard in with a key',
    description: `The key goes in the body, never in a URL. The answer sets the session cookie (${SESSION_COOKIE}: a signed token that expires after SESSION_TTL_SEC, HttpOnly, SameSite=Strict), which then authenticates every keyed route, the event streams included; a state-changing request made with it must come from the dashboard's own origin (Sec-Fetch-Site or Origin), as must this one. 403: a wrong key, or a request from another origin.`,
    access: 'public',
    body: { schema: SessionRequest, required: true },
    ok: { status: 201, description: 'signed in', content: json(SessionInfo), headers: { 'Set-Cookie': SET_COOKIE } },
    errors: [400, 403, 413],
  },
  {
    method: 'delete',
    path: '/session',
    operationId: 'signOut',
    tag: 'dashboard',
    summary: 'Sign the dashboard out',
    description: 'Removes the session cookie. 403: a request from another origin.',
    access: 'public',
    ok: { status: 204, description: 'signed out: the cookie is removed', content: {}, headers: { 'Set-Cookie': `${SESSION_COOKIE}=; Max-Age=0 (removes it)` } },
    errors: [403],
  },
  {
    method: 'get',
    path: '/',
    operationId: 'dashboardPage',
    tag: 'dashboard',
    summary: 'The operations dashboard',
    description: 'The page, which signs in with a key (POST /session) and then shows jobs, queues and dead letters live.',
    access: 'public',
    ok: { status: 200, description: 'the dashboard page', content: { 'text/html': { type: 'string' } } },
    errors: [],
  },
  {
    method: 'get',
    path: '/dashboard/{file}',
    operationId: 'dashboardFile',
    tag: 'dashboard',
    summary: "The dashboard's modules, styles and icon, and the player and chart libraries",
    access: 'public',
    params: { file: DashboardFileParam },
    ok: { status: 200, description: 'the file', content: { 'text/javascript': { type: 'string' }, 'text/css': { type: 'string' }, 'image/svg+xml': { type: 'string' } } },
    errors: [404],
  },
  {
    method: 'get',
    path: '/healthz',
    operationId: 'health',
    tag: 'service',
    summary: 'Liveness',
    access: 'public',
    ok: { status: 200, description: 'the API answers', content: json(Health) },
    errors: [],
  },
  {
    method: 'get',
    path: '/openapi.json',
    operationId: 'openApiDocument',
    tag: 'service',
    summary: 'This document',
    access: 'public',
    ok: { status: 200, description: 'the OpenAPI 3.1 document', content: { 'application/json': { type: 'object', description: 'an OpenAPI 3.1 document' } } },
    errors: [],
  },
  {
    method: 'get',
    path: '/docs',
    operationId: 'docsPage',
    tag: 'service',
    summary: 'This document as a page, with "try it out" against this server',
    access: 'public',
    ok: { status: 200, description: 'the docs page', content: { 'text/html': { type: 'string' } } },
    errors: [],
  },
  {
    method: 'get',
    path: '/docs/{file}',
    operationId: 'docsFile',
    tag: 'service',
    summary: "The docs page's scripts, styles and icons",
    access: 'public',
    params: { file: DocsFileParam },
    ok: {
      status: 200,
      description: 'the file',
      content: { 'text/css': { type: 'string' }, 'text/javascript': { type: 'string' }, 'image/png': { type: 'string', contentEncoding: 'binary' } },
    },
    errors: [404],
  },
];

/** The schemas the document names, by component name; requests as a body is sent, responses as answered. */
const REQUEST_SCHEMAS = { EncodingRequest, EncodingRequestCamel, EncodingBody, UploadRequest, SessionRequest };
const RESPONSE_SCHEMAS = {
  TaskId,
  TaskStatus,
  TaskList,
  SessionInfo,
  QueueHistory,
  Stage,
  Rendition,
  UploadTicket,
  QueueDepth,
  Queues,
  DeadLetter,
  DeadLetters,
  Redriven,
  RebuildState,
  RebuildAccepted,
  Health,
  Problem,
  LiveStatus,
  LiveReady,
  LiveEnd,
  SseStatus,
  SseReady,
  SseEnd,
  TaskStreamMessage,
  AllStreamMessage,
};

/** The response each problem status refers to, with the problem types it can carry. */
const PROBLEM_RESPONSES: Record<number, string> = { 400: 'BadRequest', 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound', 405: 'MethodNotAllowed', 409: 'Conflict', 413: 'ContentTooLarge', 500: 'InternalError', 501: 'NotImplemented', 503: 'Unavailable' };

const byStatus = <T>(entries: [number, T][]) => Object.fromEntries(entries.map(([s, v]) => [String(s), v]));

function components(io: 'input' | 'output', schemas: Record<string, z.ZodType>): Record<string, JsonSchema> {
  const registry = z.registry<{ id: string }>();
  const named = new Map<z.ZodType, string>();
  for (const [id, schema] of Object.entries(schemas)) {
    registry.add(schema, { id });
    named.set(schema, id);
  }
  const out = z.toJSONSchema(registry, { io, target: 'draft-2020-12', uri: (id) => `#/components/schemas/${id}` }).schemas;
  // Each entry is a Schema Object inside the document: no $schema or $id of its own.
  return Object.fromEntries(Object.entries(out).map(([id, { $schema: _s, $id: _i, ...rest }]) => [id, rest]));
}

/** A route's schema as the document names it: a $ref to its component, or inline JSON Schema. */
function schemaOf(schema: z.ZodType | JsonSchema, io: 'input' | 'output'): JsonSchema {
  if (!(schema instanceof z.ZodType)) return schema;
  const table: Record<string, z.ZodType> = io === 'input' ? REQUEST_SCHEMAS : RESPONSE_SCHEMAS;
  const name = Object.keys(table).find((k) => table[k] === schema);
  if (name) return ref(name);
  const { $schema: _s, ...rest } = z.toJSONSchema(schema, { io, target: 'draft-2020-12' }) as JsonSchema;
  return rest;
}

function answer(a: Answer): JsonSchema {
  const headers = a.headers ? { headers: Object.fromEntries(Object.entries(a.headers).map(([name, description]) => [name, { description, schema: { type: 'string' } }])) } : {};
  if (Object.keys(a.content).length === 0) return { description: a.description, ...headers };
  const media = (s: z.ZodType | JsonSchema) => ({ schema: schemaOf(s, 'output'), ...(a.itemSchema ? { 'x-itemSchema': ref(a.itemSchema) } : {}) });
  return { description: a.description, ...headers, content: Object.fromEntries(Object.entries(a.content).map(([type, s]) => [type, media(s)])) };
}

const parameters = (where: 'path' | 'query' | 'header', params: Record<string, z.ZodType> = {}) =>
  Object.entries(params).map(([name, s]) => ({ name, in: where, required: where === 'path', description: s.description, schema: schemaOf(s, 'input') }));

function operation(route: RouteDoc): JsonSchema {
  const problems: number[] = [...route.errors, ...(route.access === 'public' ? [] : [401, 403]), 500];
  const responses = byStatus<unknown>(
    [
      ...[route.ok, ...(route.also ?? [])].map((a): [number, unknown] => [a.status, answer(a)]),
      ...problems.map((s): [number, unknown] => [s, { $ref: `#/components/responses/${PROBLEM_RESPONSES[s]}` }]),
    ].sort(([a], [b]) => a - b),
  );
  const access = {
    public: 'No key needed.',
    client: 'Needs the ApiKey header (APP_API_KEY, or ADMIN_API_KEY when set), or a dashboard session.',
    admin: "Needs the operators' key: ADMIN_API_KEY when set (APP_API_KEY gets 403), else APP_API_KEY; or a dashboard session signed in with it.",
  }[route.access];
  const params = [...parameters('path', route.params), ...parameters('query', route.query), ...parameters('header', route.headers)];
  return {
    operationId: route.operationId,
    tags: [route.tag],
    summary: route.summary,
    description: [route.description, access].filter(Boolean).join('\n\n'),
    ...(route.access === 'public' ? { security: [] } : {}),
    ...(params.length ? { parameters: params } : {}),
    ...(route.body ? { requestBody: { required: route.body.required, content: { 'application/json': { schema: schemaOf(route.body.schema, 'input') } } } } : {}),
    responses,
  };
}

function problemResponses(): Record<string, JsonSchema> {
  const kinds = Object.entries(PROBLEMS) as [ProblemKind, (typeof PROBLEMS)[ProblemKind]][];
  return Object.fromEntries(
    Object.entries(PROBLEM_RESPONSES).map(([status, name]) => {
      const types = kinds.filter(([, p]) => String(p.status) === status).map(([kind, p]) => `\`${problemType(kind)}\` (${p.title})`);
      const headers = status === '405' ? { headers: { Allow: { description: 'the methods the path takes', schema: { type: 'string' } } } } : {};
      return [name, { description: `Problem details: ${types.join('; ')}`, ...headers, content: { [PROBLEM_MEDIA_TYPE]: { schema: ref('Problem') } } }];
    }),
  );
}

const DESCRIPTION = `Turns videos in S3 into adaptive streams: MPEG-DASH and HLS from one set of CMAF segments.

Every route but /healthz, /openapi.json, /docs, the dashboard's files and /session needs the \`ApiKey\` header (missing: 401, wrong: 403), or the dashboard's session cookie (signed in with POST /session; expired: 401; a state-changing request with it from another origin: 403).

Errors are problem details (RFC 9457, \`${PROBLEM_MEDIA_TYPE}\`) on every route, including an unknown route (404) and a method a path does not take (405, with \`Allow\`): \`type\` (a stable identifier to switch on), \`title\`, \`status\`, \`detail\` (what was wrong), \`field\` for a bad body field, and \`error\`, the same as \`detail\`, kept for clients of earlier releases.`;

/** The document served at /openapi.json. */
export function openApiDocument(routes: RouteDoc[] = ROUTES): JsonSchema {
  const paths: Record<string, Record<string, JsonSchema>> = {};
  for (const route of routes) (paths[route.path] ??= {})[route.method] = operation(route);
  return {
    openapi: '3.1.1',
    info: { title: 'video-mesh ingest API', version: pkg.version, description: DESCRIPTION, license: { name: 'Apache-2.0', identifier: 'Apache-2.0' } },
    jsonSchemaDialect: 'https://spec.openapis.org/oas/3.1/dialect/base',
    security: [{ ApiKey: [] }],
    tags: [
      { name: 'tasks', description: 'Submit, follow, retry and cancel conversions' },
      { name: 'live', description: 'Server-sent events' },
      { name: 'uploads', description: 'Getting a local file into the input bucket' },
      { name: 'admin', description: "Operators' routes" },
      { name: 'dashboard', description: 'The operations dashboard and its session' },
      { name: 'service', description: 'Health and this documentation' },
    ],
    paths,
    components: {
      schemas: { ...components('input', REQUEST_SCHEMAS), ...components('output', RESPONSE_SCHEMAS) },
      responses: problemResponses(),
      // The dashboard's session cookie is described in the text, not as a scheme: no client but the
      // dashboard's page should use it, and the docs page's "Authorize" would offer it for typing in.
      securitySchemes: { ApiKey: { type: 'apiKey', in: 'header', name: 'ApiKey', description: 'APP_API_KEY (clients) or ADMIN_API_KEY (operators)' } },
    },
  };
}
