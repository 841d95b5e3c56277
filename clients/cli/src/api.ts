/**
 * The video-mesh API over fetch: where it is and with which key (flags, else environment), JSON in and
 * out, problems (RFC 9457) turned into one readable line, and the task's live events (SSE).
 */
import { ApiProblemError, networkReason, UnreachableError, UsageError } from './errors.ts';

export const DEFAULT_URL = 'http://127.0.0.1:8000';

export interface Endpoint {
  /** The API's base URL, without a trailing slash. */
  url: string;
  apiKey: string;
}

/**
 * The endpoint from `--url` / `--api-key`, else VIDEO_MESH_URL / VIDEO_MESH_API_KEY, else the local
 * mesh's address (`npm start`). A missing key or a URL that is not http(s) is a usage error naming
 * where it came from.
 */
export function resolveEndpoint(flags: { url?: string | undefined; apiKey?: string | undefined }, env: NodeJS.ProcessEnv): Endpoint {
  const fromFlag = flags.url !== undefined;
  const raw = flags.url ?? (env['VIDEO_MESH_URL'] || DEFAULT_URL);
  const source = fromFlag ? '--url' : env['VIDEO_MESH_URL'] ? 'VIDEO_MESH_URL' : 'the default URL';
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`${source}: not a URL: ${raw}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`${source}: must be an http or https URL, not ${url.protocol}`);
  // A key in the URL would end up in logs and error messages: it goes in the ApiKey header only.
  if (url.username || url.password) throw new UsageError(`${source}: must not carry a user or password; give the key with --api-key or VIDEO_MESH_API_KEY`);
  const apiKey = flags.apiKey ?? env['VIDEO_MESH_API_KEY'];
  if (!apiKey) throw new UsageError('no API key: give --api-key or set VIDEO_MESH_API_KEY');
  return { url: url.href.replace(/\/+$/, ''), apiKey };
}

// ---- what the API answers (the fields this client reads; services/ingest-api/src/schemas.ts has them all) ----

export type TaskStatusName = 'PENDING' | 'STARTED' | 'SUCCESS' | 'FAILURE';
export type JobState = 'queued' | 'processing' | 'playable' | 'complete' | 'failed' | 'cancelled';

export interface StageStatus {
  state: 'running' | 'done' | 'failed';
  attempts: number;
  percent?: number | undefined;
  code?: string | undefined;
  reason?: string | undefined;
}

export interface Task {
  task_id: string;
  task_status: TaskStatusName;
  task_result: string | null;
  state: JobState;
  video_id: string;
  attempt: number;
  object_key: string;
  renditions: string[];
  planned_renditions: string[];
  manifest: { url: string } | null;
  hls: { url: string } | null;
  thumbnail: { bucket: string; key: string; url?: string | undefined } | null;
  stages: Partial<Record<string, StageStatus>>;
  waiting_for: { stage: string; service: string; reason: string }[];
  error: { stage: string; code: string; reason: string } | null;
}

export interface UploadTicket {
  object_key: string;
  upload_url: string;
  method: 'PUT';
  headers: Record<string, string>;
  expires_in: number;
  base_url: string;
}

/** A change on the task's event stream, or its end. */
export type LiveMessage = { kind: 'status'; seq: number; task: Task } | { kind: 'end'; seq: number; task_id: string; task_status: TaskStatusName };

// ---- calls ----------------------------------------------------------------------------------------

/** A request that gets no answer in this long is given up (the event stream excepted). */
const REQUEST_TIMEOUT_MS = 30_000;

export interface Api {
  readonly url: string;
  /** A JSON request; a problem answer throws ApiProblemError, an unreachable API UnreachableError. */
  call<T>(method: 'GET' | 'POST', path: string, o?: { body?: unknown; signal?: AbortSignal | undefined }): Promise<T>;
  /** Opens GET /video/encoding/{id}/events (after `lastEventId` when resuming): the response, checked. */
  openEvents(taskId: string, o: { lastEventId?: string | undefined; signal?: AbortSignal | undefined }): Promise<Response>;
}

export function createApi(endpoint: Endpoint): Api {
  const send = async (method: string, path: string, init: { body?: unknown; headers?: Record<string, string>; signal?: AbortSignal | undefined; timeout: boolean }) => {
    const signals = [init.signal, init.timeout ? AbortSignal.timeout(REQUEST_TIMEOUT_MS) : undefined].filter((s) => s !== undefined);
    let res: Response;
    try {
      res = await fetch(endpoint.url + path, {
        method,
        headers: { ApiKey: endpoint.apiKey, ...(init.body !== undefined ? { 'content-type': 'application/json' } : {}), ...init.headers },
        ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
        ...(signals.length > 0 ? { signal: AbortSignal.any(signals) } : {}),
      });
    } catch (err) {
      if (init.signal?.aborted) throw err;
      throw new UnreachableError(`cannot reach the API at ${endpoint.url}: ${networkReason(err)}`);
    }
    if (!res.ok && res.status !== 204) throw await problemOf(res, method, path);
    return res;
  };
  return {
    url: endpoint.url,
    async call<T>(method: 'GET' | 'POST', path: string, o: { body?: unknown; signal?: AbortSignal | undefined } = {}): Promise<T> {
      const res = await send(method, path, { ...o, timeout: true });
      const text = await res.text();
      try {
        return JSON.parse(text) as T;
      } catch {
        throw new UnreachableError(`${endpoint.url} did not answer ${method} ${path} as the video-mesh API does (HTTP ${res.status}, ${res.headers.get('content-type') ?? 'no content type'})`);
      }
    },
    openEvents(taskId, o) {
      return send('GET', `/video/encoding/${encodeURIComponent(taskId)}/events`, {
        headers: { accept: 'text/event-stream', ...(o.lastEventId !== undefined ? { 'Last-Event-ID': o.lastEventId } : {}) },
        signal: o.signal,
        // The stream stays open as long as the job runs; a dead connection is noticed by its heartbeats ending.
        timeout: false,
      });
    },
  };
}

/** The problem an error answer carries, as one line: its detail, with what was asked when it is not obvious. */
async function problemOf(res: Response, method: string, path: string): Promise<ApiProblemError> {
  const text = await res.text().catch(() => '');
  let body: { detail?: unknown; error?: unknown; type?: unknown } = {};
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    // Not a problem document: something else answered (a proxy, another server).
  }
  const detail = typeof body.detail === 'string' ? body.detail : typeof body.error === 'string' ? body.error : `${method} ${path} answered HTTP ${res.status}`;
  const type = typeof body.type === 'string' ? body.type : undefined;
  if (res.status === 401 || res.status === 403) return new ApiProblemError(`the API refused the key (${res.status}: ${detail})`, res.status, type);
  return new ApiProblemError(res.status >= 500 ? `the API failed (${res.status}): ${detail}` : detail, res.status, type);
}
