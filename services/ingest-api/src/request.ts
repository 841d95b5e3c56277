/**
 * The request bodies the API accepts. `POST /video/encoding` takes the original service's snake_case
 * fields or their camelCase spelling; anything else is a 400 that names the field.
 */
import { z } from 'zod';
import { objectKey, objectKeyProblem, VIDEO_ID_PATTERN, VIDEO_ID_RULE } from '@mesh/common';

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

const ALIASES = {
  object_key: 'objectKey',
  base_url: 'baseUrl',
  video_id: 'videoId',
  has_audio: 'hasAudio',
} as const;

const EncodingRequest = z.strictObject({
  // The source's key, and the folder of its package: segments that stay inside their bucket (keys.ts).
  object_key: z
    .string()
    .min(1)
    .superRefine((key, ctx) => {
      const problem = objectKeyProblem(key);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    }),
  base_url: z
    .string()
    .max(2048)
    .refine((u) => {
      try {
        return ['http:', 'https:'].includes(new URL(u).protocol);
      } catch {
        return false;
      }
    }, 'must be an absolute http(s) URL'),
  // The thumbnail's whole key, as the original service had it: one plain segment.
  video_id: z
    .union([z.string(), z.number().int().nonnegative()])
    .transform(String)
    .pipe(z.string().regex(VIDEO_ID_PATTERN, `must be ${VIDEO_ID_RULE}`)),
  has_audio: z.boolean().default(true),
});
export type EncodingRequest = z.output<typeof EncodingRequest>;

/** Folds camelCase names onto snake_case, refusing a field given both ways. */
function normalise(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new BadRequest('body must be a JSON object');
  const out: Record<string, unknown> = { ...(body as Record<string, unknown>) };
  for (const [snake, camel] of Object.entries(ALIASES)) {
    if (!(camel in out)) continue;
    if (snake in out) throw new BadRequest(`give ${snake} or ${camel}, not both`, snake);
    out[snake] = out[camel];
    delete out[camel];
  }
  return out;
}

export function parseEncodingRequest(body: unknown): EncodingRequest {
  return parseWith(EncodingRequest, normalise(body));
}

const UploadRequest = z.strictObject({
  filename: z.string().min(1).max(255).default('video.mp4'),
  content_type: z.string().regex(/^[\w.+-]+\/[\w.+-]+$/, 'must be a MIME type like video/mp4').default('video/mp4'),
});
export type UploadRequest = z.output<typeof UploadRequest>;

export function parseUploadRequest(body: unknown): UploadRequest {
  if (body === undefined) body = {};
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new BadRequest('body must be a JSON object');
  return parseWith(UploadRequest, body);
}

function parseWith<S extends z.ZodType>(schema: S, value: unknown): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    throw new BadRequest(`unknown field ${issue.keys.join(', ')}`, issue.keys[0]);
  }
  const field = issue.path.join('.') || undefined;
  const what = issue.code === 'invalid_type' && issue.input === undefined ? 'is required' : issue.message;
  throw new BadRequest(field ? `${field}: ${what}` : what, field);
}

/** A safe object key for an upload: a fresh folder, and a file name without path or odd characters. */
export function uploadKey(id: string, filename: string): string {
  const base = filename.split(/[\\/]/).pop() ?? 'video';
  const clean = base.replace(/[^\w.-]+/g, '_').replace(/^[.-]+/, '').slice(0, 200) || 'video';
  return objectKey('uploads', id, clean);
}
