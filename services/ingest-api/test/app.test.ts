import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile } from 'node:fs/promises';
import { REPO_ROOT } from '@mesh/testkit';
import type { QueueDepth } from '@mesh/bus';
import { applyEvent } from '@mesh/jobs';
import { openApiContract } from '@mesh/testkit/contract';
import { keyMatches } from '../src/auth.ts';
import { openApiDocument, ROUTES } from '../src/openapi.ts';
import { uploadKey } from '../src/request.ts';
import { PROBLEMS, problemType, type ProblemKind } from '../src/problems.ts';
import { ADMIN, BROKEN_TASK, BUSY_KEY, BUSY_TASK, KEY, startFakeApi, type FakeApi } from './fakes.ts';

// Every answer in this file is checked against the API document: route, status, Content-Type and body.
const contract = openApiContract(openApiDocument());
let api: FakeApi;

beforeAll(async () => {
  api = await startFakeApi();
});
afterAll(() => api.close());

const call = (path: string, init: RequestInit = {}, on: FakeApi = api) => contract.fetch(on.base + path, init);
const get = (path: string, headers: Record<string, string> = { ApiKey: KEY }) => call(path, { headers });
const post = (path: string, body: unknown, headers: Record<string, string> = { ApiKey: KEY }) =>
  call(path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });

/** The answer is the problem of `kind`, as RFC 9457 shapes it, with `detail` and its `error` alias. */
async function expectProblem(res: Response, kind: ProblemKind, detail: string | RegExp, extra: Record<string, unknown> = {}) {
  expect(res.status).toBe(PROBLEMS[kind].status);
  expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  const body = (await res.json()) as Record<string, unknown>;
  expect(body).toMatchObject({ type: problemType(kind), title: PROBLEMS[kind].title, status: PROBLEMS[kind].status, ...extra });
  expect(body['detail']).toMatch(detail);
  expect(body['error']).toBe(body['detail']);
  return body;
}

const valid = { object_key: 'videos/cat 1.mp4', base_url: 'https://cdn.example.test/cat/', video_id: '42', has_audio: true };
const validCamel = { objectKey: 'a.mp4', baseUrl: 'http://x.test/', videoId: '7', hasAudio: false };

describe('POST /video/encoding', () => {
  it('answers the task id as a JSON string and queues the job', async () => {
    const res = await post('/video/encoding', valid);
    expect(res.status).toBe(200);
    const taskId = await res.json();
    expect(typeof taskId).toBe('string');
    expect(api.submitted.at(-1)).toEqual({ jobId: taskId, objectKey: 'videos/cat 1.mp4', baseUrl: valid.base_url, videoId: '42', hasAudio: true, attempt: 1 });
  });

  it('takes the rungs a job asks for, in either spelling, once each', async () => {
    expect((await post('/video/encoding', { ...valid, renditions: ['360p', '360p'] })).status).toBe(200);
    expect(api.submitted.at(-1)).toMatchObject({ renditions: ['360p'] });
    expect((await post('/video/encoding', { ...validCamel, renditions: ['720p'] })).status).toBe(200);
    expect(api.submitted.at(-1)).toMatchObject({ objectKey: 'a.mp4', renditions: ['720p'] });
    expect((await post('/video/encoding', valid)).status).toBe(200);
    expect(api.submitted.at(-1)!.renditions).toBeUndefined();
  });

  it('accepts the camelCase spelling and a numeric video id', async () => {
    const res = await post('/video/encoding', { ...validCamel, videoId: 7 });
    expect(res.status).toBe(200);
    expect(api.submitted.at(-1)).toMatchObject({ objectKey: 'a.mp4', videoId: '7', hasAudio: false });
  });

  it.each<[string, unknown, string | undefined, string | RegExp]>([
    ['missing object_key', { ...valid, object_key: undefined }, 'object_key', 'object_key: is required'],
    ['object_key of the wrong type', { ...valid, object_key: 5 }, 'object_key', 'object_key: must be a string, not a number'],
    ['has_audio of the wrong type', { ...valid, has_audio: 'yes' }, 'has_audio', 'has_audio: must be a boolean, not a string'],
    ['has_audio null', { ...valid, has_audio: null }, 'has_audio', 'has_audio: must be a boolean, not null'],
    ['base_url of the wrong type', { ...valid, base_url: ['https://x.test/'] }, 'base_url', 'base_url: must be a string, not an array'],
    ['base_url not http(s)', { ...valid, base_url: 'file:///etc/passwd' }, 'base_url', 'base_url: must be an absolute http(s) URL'],
    ['empty object_key', { ...valid, object_key: '' }, 'object_key', 'object_key: must not be empty'],
    ['object_key with ..', { ...valid, object_key: 'videos/../../etc/passwd' }, 'object_key', /^object_key: .*'\.\.'/],
    ['object_key with a leading /', { ...valid, object_key: '/videos/a.mp4' }, 'object_key', "object_key: must not start with '/'"],
    ['object_key with a control character', { ...valid, object_key: 'a\nb.mp4' }, 'object_key', /^object_key: /],
    ['object_key with an empty segment', { ...valid, object_key: 'videos//a.mp4' }, 'object_key', /^object_key: /],
    ['video_id that leaves the thumbnail bucket', { ...valid, video_id: '../video-output/videos/cat 1.mp4/manifest.mpd' }, 'video_id', /^video_id: must be 1 to 128 letters/],
    ['video_id with a slash', { ...valid, video_id: 'a/b' }, 'video_id', /^video_id: must be 1 to 128 letters/],
    ['video_id too long', { ...valid, video_id: 'x'.repeat(129) }, 'video_id', /^video_id: must be 1 to 128 letters/],
    ['video_id of the wrong type', { ...valid, video_id: true }, 'video_id', 'video_id: must be a string or a non-negative integer'],
    ['a negative video_id', { ...valid, video_id: -1 }, 'video_id', 'video_id: must be at least 0'],
    ['unknown field', { ...valid, priority: 1 }, 'priority', 'unknown field priority'],
    ['a rung not in the ladder', { ...valid, renditions: ['720p', '4k'] }, 'renditions', 'renditions: 4k is not in the ladder (720p, 360p)'],
    ['no rung at all', { ...valid, renditions: [] }, 'renditions', 'renditions: must be at least 1'],
    ['a rung name that cannot be one', { ...valid, renditions: ['../x'] }, 'renditions.0', 'renditions.0: must be a rung name like 720p'],
    ['both spellings of a field', { ...valid, objectKey: 'b.mp4' }, 'object_key', 'give object_key or objectKey, not both'],
    ['spellings mixed', { objectKey: 'a.mp4', base_url: 'http://x.test/', video_id: '1' }, 'objectKey', /^use one spelling for every field, .*: this body has objectKey and base_url$/],
    ['a camelCase field of the wrong type, named as sent', { ...validCamel, objectKey: 5 }, 'objectKey', 'objectKey: must be a string, not a number'],
    ['a missing camelCase field, named as sent', { ...validCamel, baseUrl: undefined }, 'baseUrl', 'baseUrl: is required'],
    ['not an object', [1, 2], undefined, 'body must be a JSON object'],
    ['malformed JSON', '{"object_key":', undefined, 'body is not valid JSON'],
  ])('%s: 400 saying what was wrong, naming the field', async (_name, body, field, detail) => {
    const problem = await expectProblem(await post('/video/encoding', body), 'invalid-request', detail);
    expect(problem['field']).toBe(field);
  });

  it('refuses an oversize body with 413', async () => {
    await expectProblem(await post('/video/encoding', { ...valid, base_url: `https://x.test/${'x'.repeat(2000)}` }), 'too-large', 'body larger than 1024 bytes');
  });

  it('answers 409 naming the running task when another job still converts the same object_key', async () => {
    await expectProblem(await post('/video/encoding', { ...valid, object_key: BUSY_KEY }), 'output-busy', /still converting videos\/busy\.mp4/, { active_task: BUSY_TASK });
  });

  it('refuses a missing key with 401 and a wrong key with 403, as problems', async () => {
    await expectProblem(await post('/video/encoding', valid, {}), 'missing-api-key', 'missing ApiKey header');
    await expectProblem(await post('/video/encoding', valid, { ApiKey: 'nope' }), 'forbidden', 'invalid ApiKey');
  });
});

describe('GET /video/encoding/{task_id}', () => {
  it('answers task_id, task_status and task_result from the projection', async () => {
    const taskId = (await (await post('/video/encoding', valid)).json()) as string;
    const res = await get(`/video/encoding/${taskId}`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ task_id: taskId, task_status: 'PENDING', task_result: null });
  });

  it('gives the thumbnail with the URL it is fetched from', async () => {
    const taskId = (await (await post('/video/encoding', valid)).json()) as string;
    api.views.set(taskId, applyEvent(api.views.get(taskId)!, { type: 'thumbnail.ready', jobId: taskId, at: new Date().toISOString(), object: { bucket: 'thumbs', key: '42' } }, 2)!);
    expect((await (await get(`/video/encoding/${taskId}`)).json()).thumbnail).toEqual({ bucket: 'thumbs', key: '42', url: 'http://s3.test/thumbs/42' });
  });

  it('404s an unknown or malformed task id', async () => {
    for (const id of ['6f1c2a8e-0000-4000-8000-000000000000', 'not-a-uuid']) {
      await expectProblem(await get(`/video/encoding/${id}`), 'not-found', `no task ${id}`);
    }
  });
});

describe('POST /video/encoding/{task_id}/retry and /cancel', () => {
  it('refuses a task that has not failed with 409, and an unknown one with 404', async () => {
    const taskId = (await (await post('/video/encoding', valid)).json()) as string;
    await expectProblem(await post(`/video/encoding/${taskId}/retry`, {}), 'conflict', 'only a FAILED task can be retried; this one is PENDING');
    await expectProblem(await post('/video/encoding/6f1c2a8e-0000-4000-8000-000000000000/retry', {}), 'not-found', /^no task/);
  });

  it('answers 503 when the retry cannot be queued now', async () => {
    await expectProblem(await post(`/video/encoding/${BROKEN_TASK}/retry`, {}), 'unavailable', /could not be queued/);
  });

  it('cancels with 202 and the task id', async () => {
    const taskId = (await (await post('/video/encoding', valid)).json()) as string;
    const res = await post(`/video/encoding/${taskId}/cancel`, {});
    expect(res.status).toBe(202);
    expect(await res.json()).toBe(taskId);
  });

  it('answers a failure of its own with a 500 problem that tells nothing of it', async () => {
    const problem = await expectProblem(await post(`/video/encoding/${BROKEN_TASK}/cancel`, {}), 'internal', 'internal error');
    expect(JSON.stringify(problem)).not.toMatch(/job store/);
  });
});

describe('who may do what', () => {
  it('keeps /admin for the operators\' key when ADMIN_API_KEY is set: the client key gets 403 there', async () => {
    await expectProblem(await get('/admin/queues'), 'forbidden', "this route needs the operators' key (ADMIN_API_KEY)");
    expect((await post('/admin/projection/rebuild', {}, { ApiKey: KEY })).status).toBe(403);
    expect((await get('/admin/queues', { ApiKey: ADMIN })).status).toBe(200);
    expect((await get('/admin/dead-letters', { ApiKey: ADMIN })).status).toBe(200);
    expect((await post('/admin/projection/rebuild', {}, { ApiKey: ADMIN })).status).toBe(202);
    await expectProblem(await post('/admin/dead-letters/7/redrive', {}, { ApiKey: ADMIN }), 'not-found', 'no dead letter 7');
    // The admin key may do what a client does.
    expect((await post('/video/encoding', valid, { ApiKey: ADMIN })).status).toBe(200);
  });

  it('refuses the client key every operators\' route in any letter case (the router matches paths so)', async () => {
    // Before: /admin was recognized by the request's path, case and all: GET /ADMIN/dead-letters with the
    // client key answered 200, POST /ADMIN/projection/rebuild 202. Not through the contract: these paths
    // are not in the document.
    const admin = ROUTES.filter((r) => r.access === 'admin');
    expect(admin.length).toBeGreaterThanOrEqual(7);
    for (const route of admin) {
      const path = route.path.replace('{task_id}', '00000000-0000-4000-8000-0000000000a1').replace('{seq}', '7');
      for (const variant of [path.toUpperCase(), path.replace('/admin/', '/Admin/'), path.replace('/admin/', '/ADMIN/')]) {
        const res = await fetch(api.base + variant, { method: route.method.toUpperCase(), headers: { ApiKey: KEY, 'content-type': 'application/json' }, ...(route.method === 'post' ? { body: '{}' } : {}) });
        expect(res.status, `${route.method} ${variant}`).toBe(403);
      }
    }
  });

  it('serves /healthz, /openapi.json and /docs without a key', async () => {
    expect(await (await get('/healthz', {})).json()).toEqual({ ok: true });
    expect((await get('/openapi.json', {})).status).toBe(200);
    expect((await get('/docs', {})).status).toBe(200);
  });
});

describe('routes and methods that do not exist', () => {
  it('answers an unknown route 404 as a problem, with or without a key', async () => {
    await expectProblem(await get('/video/encodings'), 'not-found', 'no route GET /video/encodings');
    await expectProblem(await get('/nope', {}), 'not-found', 'no route GET /nope');
  });

  it('answers a method the path does not take 405, naming those it takes in Allow', async () => {
    const res = await call('/uploads', { method: 'DELETE', headers: { ApiKey: KEY } });
    expect(res.headers.get('allow')).toBe('POST');
    await expectProblem(res, 'method-not-allowed', '/uploads takes POST, not DELETE');
    await expectProblem(await get('/uploads'), 'method-not-allowed', '/uploads takes POST, not GET');
  });

  it('answers a method no route takes 501', async () => {
    await expectProblem(await call('/video/encoding', { method: 'PROPFIND', headers: { ApiKey: KEY } }), 'not-implemented', 'no route takes PROPFIND');
  });
});

describe('the README', () => {
  it('shows the problem a bad field gets, as the API answers it', async () => {
    const readme = await readFile(`${REPO_ROOT}/README.md`, 'utf8');
    const example = /-d '(\{"object_key":5[^']*)'\n# (\{[^\n]*)\n#\s+([^\n]*)/.exec(readme);
    expect(example).not.toBeNull();
    const [, body, first, rest] = example!;
    const res = await post('/video/encoding', body!);
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual(JSON.parse(`${first}${rest}`));
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
    // The base_url that serves the package from where the mesh will write it.
    expect((body as { base_url?: string }).base_url).toBe(`http://s3.test/out-bucket/${body.object_key}/`);
  });

  it('takes no body at all, and refuses a bad content_type naming it', async () => {
    expect((await call('/uploads', { method: 'POST', headers: { ApiKey: KEY } })).status).toBe(201);
    const problem = await expectProblem(await post('/uploads', { content_type: 'mp4' }), 'invalid-request', 'content_type: must be a MIME type like video/mp4');
    expect(problem['field']).toBe('content_type');
  });
});

describe('answers shaped by their schema', () => {
  const depth: QueueDepth = { consumer: 'downloader', stream: 'WORK', subject: 'work.download', pending: 1, ack_pending: 0, redelivered: 0, waiting: 2, exists: true, attached: true, stalled: false, last_active: null };

  it('sends only the fields the document names', async () => {
    const other = await startFakeApi({ adminApiKey: undefined, admin: { ...api.deps.admin, queues: async () => ({ queues: [{ ...depth, secret: 'x' } as QueueDepth], dead_letters: 0 }) } });
    try {
      const res = await call('/admin/queues', { headers: { ApiKey: KEY } }, other);
      expect(await res.json()).toEqual({ queues: [depth], dead_letters: 0 });
    } finally {
      await other.close();
    }
  });

  it('answers 500, not a body the document does not promise, when an answer breaks its schema', async () => {
    const other = await startFakeApi({ admin: { ...api.deps.admin, queues: async () => ({ queues: [{ ...depth, pending: -1 }], dead_letters: 0 }) } });
    try {
      await expectProblem(await call('/admin/queues', { headers: { ApiKey: ADMIN } }, other), 'internal', 'internal error');
    } finally {
      await other.close();
    }
  });

  it('answers a second rebuild 409 with the one under way', async () => {
    const rebuild = { state: 'running' as const, requestedAt: '2026-11-30T10:00:00.000Z', events: 12 };
    const other = await startFakeApi({ admin: { ...api.deps.admin, rebuild: async () => ({ accepted: false, rebuild }) } });
    try {
      await expectProblem(await call('/admin/projection/rebuild', { method: 'POST', headers: { ApiKey: ADMIN } }, other), 'rebuild-running', 'a rebuild is already running (requested 2026-11-30T10:00:00.000Z)', { rebuild });
    } finally {
      await other.close();
    }
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
