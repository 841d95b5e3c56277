/**
 * What requests carry, as zod schemas (the OpenAPI document is generated from them, openapi.ts), and
 * reading the bodies with them. `POST /video/encoding` takes the original service's snake_case fields or
 * their camelCase spelling; anything refused is a 400 whose detail says what was wrong and names the
 * field, in the spelling the request used.
 */
import { z } from 'zod';
import { objectKey, objectKeyProblem, RUNG_NAME, VIDEO_ID_PATTERN, VIDEO_ID_RULE } from '@mesh/common';
import { TaskStatus } from './schemas.ts';

/** The original service's snake_case names, and the camelCase spelling a body may use instead. */
export const ALIASES = {
  object_key: 'objectKey',
  base_url: 'baseUrl',
  video_id: 'videoId',
  has_audio: 'hasAudio',
  renditions: 'renditions',
} as const;
type Aliases = typeof ALIASES;

const encodingFields = {
  object_key: z
    .string()
    .min(1)
    .superRefine((key, ctx) => {
      const problem = objectKeyProblem(key);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    })
    .describe("the source's key in the input bucket, and the folder of its package in the output bucket: no leading '/', no empty, '.' or '..' segments, no control characters"),
  base_url: z
    .string()
    .max(2048)
    .refine((u) => {
      try {
        return ['http:', 'https:'].includes(new URL(u).protocol);
      } catch {
        return false;
      }
    }, 'must be an absolute http(s) URL')
    .describe("an absolute http(s) URL: the manifest's <BaseURL>, written exactly as given"),
  video_id: z
    .union([z.string(), z.number().int().nonnegative()], { error: 'must be a string or a non-negative integer' })
    .transform(String)
    .pipe(z.string().regex(VIDEO_ID_PATTERN, `must be ${VIDEO_ID_RULE}`))
    .describe(`the thumbnail's key: ${VIDEO_ID_RULE} (a non-negative integer is taken as its digits)`),
  has_audio: z.boolean().default(true).describe('false: the package has no audio track'),
  renditions: z
    .array(z.string().regex(RUNG_NAME, 'must be a rung name like 720p'))
    .min(1)
    .max(12)
    .optional()
    .describe("the rungs of the ladder to make, e.g. [\"720p\", \"240p\"] (names of LADDER's rungs; an unknown one is refused); absent: every rung"),
};

/** POST /video/encoding, as the original service's clients send it. */
export const EncodingRequest = z.strictObject(encodingFields);
export type EncodingRequest = z.output<typeof EncodingRequest>;

type Camel<T> = { [K in keyof T as K extends keyof Aliases ? Aliases[K] : K]: T[K] };
/** The same body with camelCase names: the same field schemas, renamed. */
export const EncodingRequestCamel = z.strictObject(
  Object.fromEntries(Object.entries(encodingFields).map(([name, schema]) => [ALIASES[name as keyof Aliases], schema])) as Camel<typeof encodingFields>,
);

/** What POST /video/encoding accepts: one spelling or the other, not both in one body. */
export const EncodingBody = z.union([EncodingRequest, EncodingRequestCamel]);

/** POST /uploads. */
export const UploadRequest = z.strictObject({
  filename: z.string().min(1).max(255).default('video.mp4').describe("the file's name: only its last segment is kept, odd characters become '_'"),
  content_type: z.string().regex(/^[\w.+-]+\/[\w.+-]+$/, 'must be a MIME type like video/mp4').default('video/mp4').describe('the Content-Type the PUT must send'),
});
export type UploadRequest = z.output<typeof UploadRequest>;

/** POST /session: the dashboard signs in with a key, sent in the body (never in a URL). */
export const SessionRequest = z.strictObject({
  key: z.string().min(1).max(1024).describe('APP_API_KEY, or ADMIN_API_KEY for the operators\' actions'),
});

/** GET /video/encoding: a page of the task list. */
export const TaskListQuery = z.strictObject({
  state: TaskStatus.shape.state.optional().describe('only tasks in this state'),
  search: z.string().trim().min(1).max(200).optional().describe('a task id (whole), or part of a video id or object key (any case)'),
  before: z.iso.datetime().optional().describe('only tasks created before this time: next_before of the page before'),
  limit: z.string().regex(/^\d{1,3}$/, 'must be a whole number').transform(Number).pipe(z.number().int().min(1).max(100)).optional().describe('tasks per page, 1 to 100 (default 25)'),
});
export type TaskListQuery = z.output<typeof TaskListQuery>;

// ---- parameters --------------------------------------------------------------------------------

export const TaskIdParam = z.string().describe('the task id POST /video/encoding answered (a UUID); anything else is an unknown task (404)');
export const SeqParam = z.string().regex(/^\d+$/).describe('the dead letter\'s sequence number, from GET /admin/dead-letters');
export const DocsFileParam = z.string().describe('one of the docs page\'s own files');
export const DashboardFileParam = z.string().describe('one of the dashboard\'s own files, or the player\'s or chart library\'s');
export const LastEventIdHeader = z.string().regex(/^\d{1,15}$/).describe('the id of the last event received: the stream goes on after it (an EventSource sends it when it reconnects)');

// ---- reading bodies ----------------------------------------------------------------------------

export class BadRequest extends Error {
  override name = 'BadRequest';
  readonly status: number;
  readonly field: string | undefined;
  constructor(message: string, field?: string, status = 400) {
    super(message);
    this.field = field;
    this.status = status;
  }
}

/** The body in either spelling, as snake_case. A body that mixes the spellings is refused, naming a field of each. */
export function parseEncodingRequest(body: unknown): EncodingRequest {
  const fields = asObject(body);
  // Names spelled alike in both (renditions) say nothing about the spelling.
  const pairs = Object.entries(ALIASES).filter(([snake, camel]) => snake !== camel);
  const twice = pairs.find(([snake, camel]) => snake in fields && camel in fields);
  if (twice) throw new BadRequest(`give ${twice[0]} or ${twice[1]}, not both`, twice[0]);
  const snake = pairs.find(([name]) => name in fields)?.[0];
  const camel = pairs.find(([, name]) => name in fields)?.[1];
  if (camel && snake) {
    const spelling = (i: 0 | 1) => pairs.map((p) => p[i]).join(', ');
    throw new BadRequest(`use one spelling for every field, snake_case (${spelling(0)}) or camelCase (${spelling(1)}): this body has ${camel} and ${snake}`, camel);
  }
  if (!camel) return parseWith(EncodingRequest, fields);
  const c = parseWith(EncodingRequestCamel, fields);
  return { object_key: c.objectKey, base_url: c.baseUrl, video_id: c.videoId, has_audio: c.hasAudio, ...(c.renditions ? { renditions: c.renditions } : {}) };
}

export function parseUploadRequest(body: unknown): UploadRequest {
  return parseWith(UploadRequest, asObject(body === undefined ? {} : body));
}

export function parseSessionRequest(body: unknown): z.output<typeof SessionRequest> {
  return parseWith(SessionRequest, asObject(body));
}

/** The query string of GET /video/encoding; a parameter given twice is refused, naming it. */
export function parseTaskListQuery(query: Record<string, string | string[] | undefined>): TaskListQuery {
  const twice = Object.keys(query).find((name) => Array.isArray(query[name]));
  if (twice) throw new BadRequest(`${twice}: give it once`, twice);
  return parseWith(TaskListQuery, query);
}

function asObject(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new BadRequest('body must be a JSON object');
  return body as Record<string, unknown>;
}

function parseWith<S extends z.ZodType>(schema: S, value: unknown): z.output<S> {
  // reportInput: without it zod 4 leaves issue.input unset, and a wrong type would read as a missing field.
  const result = schema.safeParse(value, { reportInput: true });
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    throw new BadRequest(`unknown field ${issue.keys.join(', ')}`, issue.keys[0]);
  }
  const field = issue.path.join('.') || undefined;
  const what = describe(issue);
  throw new BadRequest(field ? `${field}: ${what}` : what, field);
}

/** What a person needs to fix the field: the type expected and the one given, or the limit. */
function describe(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'invalid_type':
      return issue.input !== undefined ? `must be ${withArticle(issue.expected)}, not ${withArticle(kindOf(issue.input))}` : 'is required';
    case 'too_small':
      if (issue.origin === 'string') return Number(issue.minimum) <= 1 ? 'must not be empty' : `must be at least ${issue.minimum} characters`;
      return `must be at least ${issue.minimum}`;
    case 'too_big':
      return issue.origin === 'string' ? `must be at most ${issue.maximum} characters` : `must be at most ${issue.maximum}`;
    case 'invalid_value':
      return `must be one of ${issue.values.map(String).join(', ')}`;
    default:
      return issue.message;
  }
}

function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

function withArticle(kind: string): string {
  if (kind === 'null') return kind;
  return /^[aeiou]/.test(kind) ? `an ${kind}` : `a ${kind}`;
}

/** A safe object key for an upload: a fresh folder, and a file name without path or odd characters. */
export function uploadKey(id: string, filename: string): string {
  const base = filename.split(/[\\/]/).pop() ?? 'video';
  const clean = base.replace(/[^\w.-]+/g, '_').replace(/^[.-]+/, '').slice(0, 200) || 'video';
  return objectKey('uploads', id, clean);
}
