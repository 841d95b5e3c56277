/**
 * Every error the API answers is an RFC 9457 problem (application/problem+json), the same shape on every
 * route; the OpenAPI document lists them from here.
 */
import { z } from 'zod';
import { RebuildState } from './responses.ts';

/**
 * The problems, by kind. The type URIs are tag URIs (RFC 4151): stable names a client can switch on;
 * `title` is the same for every problem of a type, `detail` says what was wrong this time.
 */
export const PROBLEMS = {
  'invalid-request': { status: 400, title: 'The request is not valid' },
  'missing-api-key': { status: 401, title: 'The ApiKey header is missing' },
  'session-expired': { status: 401, title: 'The dashboard session has expired or is not valid; sign in again' },
  forbidden: { status: 403, title: 'This key may not do this' },
  'cross-site': { status: 403, title: "A request from another origin may not use the dashboard's session" },
  'not-found': { status: 404, title: 'Not found' },
  'method-not-allowed': { status: 405, title: 'Method not allowed' },
  conflict: { status: 409, title: 'Not possible in the current state' },
  'output-busy': { status: 409, title: 'Another task is converting this object_key' },
  'rebuild-running': { status: 409, title: 'A projection rebuild is already under way' },
  'too-large': { status: 413, title: 'The body is too large' },
  internal: { status: 500, title: 'Internal error' },
  'not-implemented': { status: 501, title: 'Method not implemented' },
  unavailable: { status: 503, title: 'Not possible now; nothing changed, try again' },
} as const;
export type ProblemKind = keyof typeof PROBLEMS;
export const PROBLEM_MEDIA_TYPE = 'application/problem+json';
export const problemType = (kind: ProblemKind) => `tag:video-mesh,2026:problems/${kind}`;

export const Problem = z.object({
  type: z.enum((Object.keys(PROBLEMS) as ProblemKind[]).map(problemType) as [string, ...string[]]).describe('what kind of problem: a stable identifier to switch on'),
  title: z.string().describe('the kind of problem, for a person; the same for every problem of this type'),
  status: z.number().int().min(400).max(599).describe('the HTTP status code'),
  detail: z.string().describe('what was wrong with this request, for a person'),
  field: z.string().optional().describe('the body field (or header) that was wrong, as the request spelled it'),
  error: z.string().describe('the same as detail: the error member of earlier releases, kept for their clients'),
  active_task: z.uuid().optional().describe('output-busy: the task still converting this object_key'),
  rebuild: RebuildState.optional().describe('rebuild-running: the rebuild under way'),
});
export type Problem = z.infer<typeof Problem>;

/** An error answered as the problem of `kind` (the kinds no other error stands for). */
export class ProblemError extends Error {
  override name = 'ProblemError';
  readonly kind: ProblemKind;
  constructor(kind: ProblemKind, detail: string) {
    super(detail);
    this.kind = kind;
  }
}

/** A problem's body: type and title from its kind, the detail given. */
export function problem(kind: ProblemKind, detail: string, extra: Pick<Problem, 'field' | 'active_task' | 'rebuild'> = {}): Problem {
  const { status, title } = PROBLEMS[kind];
  return { type: problemType(kind), title, status, detail, ...extra, error: detail };
}
