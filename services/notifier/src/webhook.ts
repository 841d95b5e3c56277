/**
 * The backend's webhook, as the original service called it:
 *   PUT {MAIN_API_ENDPOINT}/video/processing/result   ApiKey: MAIN_API_KEY   {"taskId": "...", "status": "SUCCESS" | "FAILED"}
 * plus an Idempotency-Key header (job id and status) so the backend can drop a repeat, and, when
 * WEBHOOK_SECRET is set, the Standard Webhooks signature headers (https://www.standardwebhooks.com):
 *   webhook-id         <taskId>:<job attempt>:<status>, the same for every try of one notification
 *   webhook-timestamp  unix seconds of this try
 *   webhook-signature  v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>" with the secret's bytes>
 *
 * And the events a backend may opt in to (WEBHOOK_EVENTS), each its own call, signed the same way:
 *   POST {MAIN_API_ENDPOINT}/video/processing/events  ApiKey: MAIN_API_KEY   EventBody (below)
 *   webhook-id and Idempotency-Key  <taskId>:<job attempt>:<type>, and :<rendition> for rendition.ready
 *
 * What a failure says reaches the job's status, so it names what happened, never the backend's
 * address: "the backend did not answer: connection refused", "the backend answered 503".
 */
import { createHmac } from 'node:crypto';
import { MeshError, type Rendition, type Stage, type WebhookEvent } from '@mesh/common';
import { injectContext, inSpan, SpanKind } from '@mesh/telemetry';

export type WebhookStatus = 'SUCCESS' | 'FAILED';

export interface WebhookTarget {
  endpoint: string;
  apiKey: string;
  timeoutMs: number;
  /** The bytes of WEBHOOK_SECRET: when set, every request is signed. */
  signingKey?: Buffer;
}

/** One notification: a job attempt's outcome. Its tries share the webhook-id. */
export interface Notification {
  taskId: string;
  /** The job attempt (JobSpec.attempt), not the try. */
  attempt: number;
  status: WebhookStatus;
}

/**
 * The body of an event webhook. `renditions`: those in the published manifest (none for job.failed);
 * `urls`: where a player fetches the video, null for what is not there (yet): the DASH manifest, the HLS
 * master, the WebVTT track of the seek previews (when the manifest names them; the status has them once
 * they are made); `rendition` for rendition.ready, `error` for job.failed.
 */
export interface EventBody {
  type: WebhookEvent;
  taskId: string;
  attempt: number;
  /** When it happened (the event's time), ISO 8601. */
  at: string;
  rendition?: Rendition;
  renditions: Rendition[];
  urls: { dash: string | null; hls: string | null; storyboard: string | null };
  error?: { stage: Stage; code: string; reason: string };
}

/** One opt-in event of a job attempt (one per rung for rendition.ready). Its tries share the webhook-id. */
export interface EventWebhook {
  taskId: string;
  attempt: number;
  event: WebhookEvent;
  rendition?: Rendition;
  body: EventBody;
}

export type Webhook = Notification | EventWebhook;

/** The outcome a webhook reports, as the job's `notifications` list it. */
export function statusOf(w: Webhook): WebhookStatus {
  return 'event' in w ? (w.event === 'job.failed' ? 'FAILED' : 'SUCCESS') : w.status;
}

/** The backend refused, redirected or could not be reached. `httpStatus` is 0 when it did not answer. */
export class WebhookError extends MeshError {
  override name = 'WebhookError';
  readonly httpStatus: number;
  constructor(reason: string, o: { httpStatus: number; permanent: boolean; cause?: unknown }) {
    super(o.httpStatus === 0 ? 'STORAGE_FAILED' : 'WEBHOOK_REJECTED', reason, { permanent: o.permanent, cause: o.cause });
    this.httpStatus = o.httpStatus;
  }
}

export function webhookId(w: Webhook): string {
  return 'event' in w ? [w.taskId, w.attempt, w.event, ...(w.rendition ? [w.rendition] : [])].join(':') : `${w.taskId}:${w.attempt}:${w.status}`;
}

/** The Standard Webhooks v1 signature of one try. */
export function signature(key: Buffer, id: string, timestampSec: number, body: string): string {
  return `v1,${createHmac('sha256', key).update(`${id}.${timestampSec}.${body}`).digest('base64')}`;
}

/** The request of one try, signed at `nowMs` when the target has a signing key. */
export function webhookRequest(target: WebhookTarget, w: Webhook, nowMs = Date.now()): { url: string; init: RequestInit & { method: string; headers: Record<string, string>; body: string } } {
  const event = 'event' in w;
  const id = webhookId(w);
  const body = event ? JSON.stringify(w.body) : JSON.stringify({ taskId: w.taskId, status: w.status });
  // The result notification keeps the key the original backend knows (task and status); an event's is its id.
  const headers: Record<string, string> = { 'content-type': 'application/json', ApiKey: target.apiKey, 'Idempotency-Key': event ? id : `${w.taskId}:${w.status}` };
  if (target.signingKey) {
    const timestamp = Math.floor(nowMs / 1000);
    Object.assign(headers, { 'webhook-id': id, 'webhook-timestamp': String(timestamp), 'webhook-signature': signature(target.signingKey, id, timestamp, body) });
  }
  return {
    url: `${target.endpoint.replace(/\/+$/, '')}/video/processing/${event ? 'events' : 'result'}`,
    // A redirect is answered, never followed: following it would send the ApiKey to wherever it points.
    init: { method: event ? 'POST' : 'PUT', headers, body, redirect: 'manual' },
  };
}

/**
 * Sends one try. 2xx: done. A redirect, or a 4xx other than 408/429: the backend refused it or is
 * configured elsewhere, retrying will not help (permanent). 408, 429, 5xx or no answer: retryable,
 * the consume loop backs off and tries again.
 */
export function sendWebhook(target: WebhookTarget, w: Webhook): Promise<number> {
  const { url, init } = webhookRequest(target, w);
  const attributes = { 'http.request.method': init.method, 'url.full': url, 'job.id': w.taskId, 'job.attempt': w.attempt, 'mesh.webhook.status': statusOf(w), ...('event' in w ? { 'mesh.webhook.event': w.event } : {}) };
  return inSpan(`${init.method} /video/processing/${'event' in w ? 'events' : 'result'}`, { kind: SpanKind.CLIENT, attributes }, async (span) => {
    // The backend can join the job's trace too.
    const headers = new Headers(init.headers);
    injectContext(headers);
    const code = await send(url, { ...init, headers }, target.timeoutMs);
    span.setAttribute('http.response.status_code', code);
    return code;
  });
}

async function send(url: string, init: RequestInit, timeoutMs: number): Promise<number> {
  let res: Response;
  try {
    res = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    // fetch wraps what happened ("fetch failed"); the inner error is what a log reader wants.
    const cause = err instanceof Error && err.cause ? err.cause : err;
    throw new WebhookError(`the backend did not answer: ${whyNoAnswer(err, timeoutMs)}`, { httpStatus: 0, permanent: false, cause });
  }
  await res.body?.cancel();
  const httpStatus = res.status;
  if (res.ok) return httpStatus;
  if (httpStatus >= 300 && httpStatus < 400) {
    throw new WebhookError(`the backend redirected (${httpStatus}) instead of answering; redirects are not followed: set MAIN_API_ENDPOINT to where it points`, { httpStatus, permanent: true });
  }
  const permanent = httpStatus >= 400 && httpStatus < 500 && httpStatus !== 408 && httpStatus !== 429;
  throw new WebhookError(`the backend answered ${httpStatus}`, { httpStatus, permanent });
}

/**
 * Why a request got no answer, from the error code alone: Node's messages carry the address
 * ("connect ECONNREFUSED 10.0.0.7:8090", "getaddrinfo ENOTFOUND api.internal").
 */
export function whyNoAnswer(err: unknown, timeoutMs: number): string {
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) return `no answer within ${timeoutMs} ms`;
  const code = errorCode(err);
  if (!code) return 'the request failed';
  if (code in NO_ANSWER) return NO_ANSWER[code]!;
  if (/CERT|TLS|SSL|SELF_SIGNED|UNABLE_TO_VERIFY/.test(code)) return `its TLS certificate was not accepted (${code})`;
  return `network error ${code}`;
}

const NO_ANSWER: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EPIPE: 'connection reset',
  UND_ERR_SOCKET: 'connection closed before the answer',
  ETIMEDOUT: 'connection timed out',
  UND_ERR_CONNECT_TIMEOUT: 'connection timed out',
  UND_ERR_HEADERS_TIMEOUT: 'no answer in time',
  ENOTFOUND: 'its host name does not resolve',
  EAI_AGAIN: 'its host name could not be looked up (temporary DNS failure)',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
};

/** The first code on the error, its cause, or (a host with several addresses) the first of its errors. */
function errorCode(err: unknown, depth = 0): string | undefined {
  if (!err || typeof err !== 'object' || depth > 4) return undefined;
  const e = err as { code?: unknown; cause?: unknown; errors?: unknown };
  if (typeof e.code === 'string' && /^[A-Z0-9_]+$/.test(e.code)) return e.code;
  return errorCode(e.cause, depth + 1) ?? (Array.isArray(e.errors) ? errorCode(e.errors[0], depth + 1) : undefined);
}
