import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { createLogger, type JobSpec } from '@mesh/common';
import { applyEvent, JobConflictError, JobNotFoundError, OutputBusyError, toApiResponse, type JobView } from '@mesh/jobs';
import { createApp } from '../src/app.ts';
import { keyMatches } from '../src/auth.ts';
import { uploadKey } from '../src/request.ts';

const KEY = 'test-key-123';
const submitted: JobSpec[] = [];
const views = new Map<string, JobView>();
let server: Server;
let base: string;

const ADMIN = 'admin-key-456';
const busyKey = 'videos/busy.mp4';

beforeAll(async () => {
  const app = createApp({
    apiKey: KEY,
    adminApiKey: ADMIN,
    log: createLogger('test', 'silent'),
    jobs: {
      submit: async (spec) => {
        if (spec.objectKey === busyKey) throw new OutputBusyError(spec.objectKey, '11111111-1111-4111-8111-111111111111');
        submitted.push(spec);
        views.set(spec.jobId, applyEvent(null, { type: 'job.created', jobId: spec.jobId, at: new Date().toISOString(), spec }, 1)!);
      },
      get: async (id) => views.get(id) ?? null,
      retry: async (id) => {
        const view = views.get(id);
        if (!view) throw new JobNotFoundError(`task ${id}`);
        throw new JobConflictError(`only a FAILED task can be retried; this one is ${toApiResponse(view).task_status}`);
      },
      cancel: async () => undefined,
    },
    presignUpload: async (key) => ({ url: `http://s3.test/in/${key}?sig`, bucket: 'in-bucket', expiresInSec: 3600 }),
    admin: {
      rebuild: async () => ({ accepted: true, rebuild: { state: 'requested', requestedAt: new Date().toISOString() } }),
      queues: async () => ({ queues: [], dead_letters: 0 }),
      deadLetters: async () => [],
      redrive: async (seq) => {
        throw new JobNotFoundError(`dead letter ${seq}`);
      },
    },
    bodyLimitBytes: 1024,
  });
  server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

const post = (path: string, body: unknown, headers: Record<string, string> = { ApiKey: KEY }) =>
  fetch(base + path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });

const valid = { object_key: 'videos/cat 1.mp4', base_url: 'https://cdn.example.test/cat/', video_id: '42', has_audio: true };

describe('POST /video/encoding', () => {
  it('answers the task id as a JSON string and queues the job', async () => {
    const res = await post('/video/encoding', valid);
    expect(res.status).toBe(200);
    const taskId = await res.json();
    expect(typeof taskId).toBe('string');
    expect(submitted.at(-1)).toEqual({ jobId: taskId, objectKey: 'videos/cat 1.mp4', baseUrl: valid.base_url, videoId: '42', hasAudio: true, attempt: 1 });
  });

  it('accepts the camelCase spelling and a numeric video id', async () => {
    const res = await post('/video/encoding', { objectKey: 'a.mp4', baseUrl: 'http://x.test/', videoId: 7, hasAudio: false });
    expect(res.status).toBe(200);
    expect(submitted.at(-1)).toMatchObject({ objectKey: 'a.mp4', videoId: '7', hasAudio: false });
  });

  it.each<[string, unknown, number, string | undefined]>([
    ['missing object_key', { ...valid, object_key: undefined }, 400, 'object_key'],
    ['wrong type', { ...valid, has_audio: 'yes' }, 400, 'has_audio'],
    ['base_url not http(s)', { ...valid, base_url: 'file:///etc/passwd' }, 400, 'base_url'],
    ['object_key with ..', { ...valid, object_key: 'videos/../../etc/passwd' }, 400, 'object_key'],
    ['object_key with a leading /', { ...valid, object_key: '/videos/a.mp4' }, 400, 'object_key'],
    ['object_key with a control character', { ...valid, object_key: 'a\nb.mp4' }, 400, 'object_key'],
    ['object_key with an empty segment', { ...valid, object_key: 'videos//a.mp4' }, 400, 'object_key'],
    ['video_id that leaves the thumbnail bucket', { ...valid, video_id: '../video-output/videos/cat 1.mp4/manifest.mpd' }, 400, 'video_id'],
    ['video_id with a slash', { ...valid, video_id: 'a/b' }, 400, 'video_id'],
    ['video_id too long', { ...valid, video_id: 'x'.repeat(129) }, 400, 'video_id'],
    ['video_id of the wrong type', { ...valid, video_id: true }, 400, 'video_id'],
    ['unknown field', { ...valid, priority: 1 }, 400, 'priority'],
    ['both spellings', { ...valid, objectKey: 'b.mp4' }, 400, 'object_key'],
    ['not an object', [1, 2], 400, undefined],
    ['malformed JSON', '{"object_key":', 400, undefined],
    ['oversize body', { ...valid, base_url: `https://x.test/${'x'.repeat(2000)}` }, 413, undefined],
  ])('%s -> %i naming the field', async (_name, body, status, field) => {
    const res = await post('/video/encoding', body);
    expect(res.status).toBe(status);
    const json = (await res.json()) as { error: string; field?: string };
    expect(json.error).toBeTruthy();
    expect(json.field).toBe(field);
  });

  it('answers 409 naming the running task when another job still converts the same object_key', async () => {
    const res = await post('/video/encoding', { ...valid, object_key: busyKey });
    expect(res.status).toBe(409);
    expect(await res.json()).toMatchObject({ active_task: '11111111-1111-4111-8111-111111111111', error: expect.stringMatching(/still converting videos\/busy\.mp4/) });
  });

  it('refuses a missing key with 401 and a wrong key with 403, as JSON', async () => {
    const missing = await post('/video/encoding', valid, {});
    expect(missing.status).toBe(401);
    expect(await missing.json()).toEqual({ error: 'missing ApiKey header' });
    const wrong = await post('/video/encoding', valid, { ApiKey: 'nope' });
    expect(wrong.status).toBe(403);
    expect(await wrong.json()).toEqual({ error: 'invalid ApiKey' });
  });
});

describe('GET /video/encoding/{task_id}', () => {
  it('answers task_id, task_status and task_result from the projection', async () => {
    const taskId = (await (await post('/video/encoding', valid)).json()) as string;
    const res = await fetch(`${base}/video/encoding/${taskId}`, { headers: { ApiKey: KEY } });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ task_id: taskId, task_status: 'PENDING', task_result: null });
  });

  it('404s an unknown or malformed task id', async () => {
    for (const id of ['6f1c2a8e-0000-4000-8000-000000000000', 'not-a-uuid']) {
      const res = await fetch(`${base}/video/encoding/${id}`, { headers: { ApiKey: KEY } });
      expect(res.status).toBe(404);
    }
  });
});

describe('POST /video/encoding/{task_id}/retry', () => {
  it('refuses a task that has not failed with 409, and an unknown one with 404', async () => {
    const taskId = (await (await post('/video/encoding', valid)).json()) as string;
    const res = await post(`/video/encoding/${taskId}/retry`, {});
    expect(res.status).toBe(409);
    expect(await res.json()).toEqual({ error: 'only a FAILED task can be retried; this one is PENDING' });
    expect((await post('/video/encoding/6f1c2a8e-0000-4000-8000-000000000000/retry', {})).status).toBe(404);
  });
});

describe('who may do what', () => {
  it('keeps /admin for the operators\' key when ADMIN_API_KEY is set: the client key gets 403 there', async () => {
    const asClient = await fetch(`${base}/admin/queues`, { headers: { ApiKey: KEY } });
    expect(asClient.status).toBe(403);
    expect(await asClient.json()).toEqual({ error: "this route needs the operators' key (ADMIN_API_KEY)" });
    expect((await post('/admin/projection/rebuild', {}, { ApiKey: KEY })).status).toBe(403);
    expect((await fetch(`${base}/admin/queues`, { headers: { ApiKey: ADMIN } })).status).toBe(200);
    expect((await post('/admin/projection/rebuild', {}, { ApiKey: ADMIN })).status).toBe(202);
    // The admin key may do what a client does.
    expect((await post('/video/encoding', valid, { ApiKey: ADMIN })).status).toBe(200);
  });
});

describe('POST /uploads', () => {
  it('hands out a presigned PUT URL for a fresh key', async () => {
    const res = await post('/uploads', { filename: '../../etc/my video.mp4' });
    expect(res.status).toBe(201);
    const body = (await res.json()) as { object_key: string; upload_url: string; method: string };
    expect(body.method).toBe('PUT');
    expect(body.object_key).toMatch(/^uploads\/[0-9a-f-]{36}\/my_video\.mp4$/);
    expect(body.upload_url).toContain(body.object_key);
  });
});

describe('helpers', () => {
  it('compares keys exactly', () => {
    expect(keyMatches('abc', 'abc')).toBe(true);
    expect(keyMatches('abd', 'abc')).toBe(false);
    expect(keyMatches('', 'abc')).toBe(false);
    expect(keyMatches(undefined, 'abc')).toBe(false);
  });

  it.each([
    ['video.mp4', 'video.mp4'],
    ['-rf $(x).mp4', 'rf_x_.mp4'],
    ['..', 'video'],
    ['a/b\\c.mov', 'c.mov'],
  ])('upload key for %j ends with %j', (name, tail) => {
    expect(uploadKey('id', name)).toBe(`uploads/id/${tail}`);
  });
});
