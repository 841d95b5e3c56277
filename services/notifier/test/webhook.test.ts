import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MeshError } from '@mesh/common';
import { startWebhookReceiver, type WebhookReceiver } from '@mesh/testkit';
import { sendWebhook, webhookRequest } from '../src/webhook.ts';

const taskId = '11111111-2222-4333-8444-555555555555';
let backend: WebhookReceiver;
let answer = 200;

beforeAll(async () => {
  backend = await startWebhookReceiver({ respond: () => answer });
});
afterAll(() => backend.stop());

describe('backend webhook', () => {
  it('is the original PUT with ApiKey and {taskId, status}', () => {
    const { url, init } = webhookRequest({ endpoint: 'https://api.example.test/v1/', apiKey: 'k', timeoutMs: 1000 }, taskId, 'SUCCESS');
    expect(url).toBe('https://api.example.test/v1/video/processing/result');
    expect(init.method).toBe('PUT');
    expect(init.headers).toMatchObject({ ApiKey: 'k', 'Idempotency-Key': `${taskId}:SUCCESS` });
    expect(JSON.parse(init.body as string)).toEqual({ taskId, status: 'SUCCESS' });
  });

  it('delivers to a live backend', async () => {
    answer = 204;
    expect(await sendWebhook({ endpoint: backend.url, apiKey: 'secret', timeoutMs: 2000 }, taskId, 'FAILED')).toBe(204);
    expect(backend.received.at(-1)).toMatchObject({ method: 'PUT', path: '/video/processing/result', body: { taskId, status: 'FAILED' } });
    expect(backend.received.at(-1)!.headers['apikey']).toBe('secret');
  });

  it.each([
    [400, true],
    [404, true],
    [429, false],
    [500, false],
    [503, false],
  ])('an answer %i is permanent: %s', async (status, permanent) => {
    answer = status;
    const err = await sendWebhook({ endpoint: backend.url, apiKey: 'k', timeoutMs: 2000 }, taskId, 'SUCCESS').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MeshError);
    expect((err as MeshError).permanent).toBe(permanent);
    expect((err as Error).message).toContain(String(status));
  });

  it('an unreachable backend is retryable', async () => {
    const err = await sendWebhook({ endpoint: 'http://127.0.0.1:1', apiKey: 'k', timeoutMs: 2000 }, taskId, 'SUCCESS').catch((e: unknown) => e);
    expect((err as MeshError).permanent).toBe(false);
    expect((err as Error).message).toContain('unreachable');
  });
});
