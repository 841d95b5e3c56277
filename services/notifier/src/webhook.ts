/**
 * The backend's webhook, as the original service called it:
 *   PUT {MAIN_API_ENDPOINT}/video/processing/result   ApiKey: MAIN_API_KEY   {"taskId": "...", "status": "SUCCESS" | "FAILED"}
 * plus an Idempotency-Key header (job id and status) so the backend can drop a repeat.
 */
import { MeshError } from '@mesh/common';
import { injectContext, inSpan, SpanKind } from '@mesh/telemetry';

export type WebhookStatus = 'SUCCESS' | 'FAILED';

export interface WebhookTarget {
  endpoint: string;
  apiKey: string;
  timeoutMs: number;
}

export function webhookRequest(target: WebhookTarget, taskId: string, status: WebhookStatus): { url: string; init: RequestInit } {
  return {
    url: `${target.endpoint.replace(/\/+$/, '')}/video/processing/result`,
    init: {
      method: 'PUT',
      headers: { 'content-type': 'application/json', ApiKey: target.apiKey, 'Idempotency-Key': `${taskId}:${status}` },
      body: JSON.stringify({ taskId, status }),
    },
  };
}

/**
 * Sends one notification. 2xx: done. 4xx: the backend refused it, retrying will not help (permanent).
 * 5xx or no answer: retryable, the consume loop backs off and tries again.
 */
export function sendWebhook(target: WebhookTarget, taskId: string, status: WebhookStatus): Promise<number> {
  const { url, init } = webhookRequest(target, taskId, status);
  const attributes = { 'http.request.method': 'PUT', 'url.full': url, 'job.id': taskId, 'mesh.webhook.status': status };
  return inSpan('PUT /video/processing/result', { kind: SpanKind.CLIENT, attributes }, async (span) => {
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
    throw new MeshError('STORAGE_FAILED', `webhook ${url} unreachable: ${err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err)}`);
  }
  await res.body?.cancel();
  if (res.ok) return res.status;
  const reason = `webhook ${url} answered ${res.status}`;
  if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
    throw Object.assign(new MeshError('WEBHOOK_REJECTED', reason, { permanent: true }), { httpStatus: res.status });
  }
  throw Object.assign(new MeshError('WEBHOOK_REJECTED', reason), { httpStatus: res.status });
}
