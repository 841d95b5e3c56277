/**
 * Following a task's event stream when the connection drops: the client resumes with Last-Event-ID and
 * neither misses nor repeats a change. The API side is a small HTTP server of the test's own that drops
 * the first connection after two changes (the real API's stream is tested in services/ingest-api and
 * test/cli.test.ts; dropping its connection at a chosen event is what this server is for).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { createApi, type Task } from '../src/api.ts';
import { ID, task } from './tasks.ts';
import { ApiProblemError } from '../src/errors.ts';
import { followTask } from '../src/live.ts';

const BIN = fileURLToPath(new URL('../bin/video-mesh.js', import.meta.url));
/** A task whose stream is answered 204, as the API answers a resume after the end. */
const SETTLED = '6f1c2a8e-1111-4000-8000-000000000002';
const KEY = 'live-test-key';

const CHANGES = [
  task({ stages: { download: { state: 'running', attempts: 1, percent: 0 } } }),
  task({ stages: { download: { state: 'done', attempts: 1, percent: 100 }, 'transcode-360p': { state: 'running', attempts: 1, percent: 40 } } }),
  task({ task_status: 'SUCCESS', task_result: 'v1', state: 'complete', renditions: ['360p'], manifest: { url: 'http://s3.test/out/m.mpd' }, stages: { download: { state: 'done', attempts: 1, percent: 100 }, 'transcode-360p': { state: 'done', attempts: 1, percent: 100 } } }),
];
const frame = (seq: number, t: Task) => `id: ${seq}\ndata: ${JSON.stringify({ seq, task: t })}\n\n`;

let server: Server;
let base: string;
/** The Last-Event-ID each connection to the stream came with. */
let resumes: (string | undefined)[] = [];

beforeAll(async () => {
  server = createServer((req: IncomingMessage, res) => {
    if (req.headers['apikey'] !== KEY) {
      res.writeHead(403, { 'content-type': 'application/problem+json' }).end(JSON.stringify({ status: 403, detail: 'invalid ApiKey' }));
      return;
    }
    if (req.url === `/video/encoding/${ID}`) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(CHANGES[2]));
      return;
    }
    if (req.url !== `/video/encoding/${ID}/events` && req.url !== `/video/encoding/${SETTLED}/events`) {
      res.writeHead(404, { 'content-type': 'application/problem+json' }).end(JSON.stringify({ status: 404, detail: `no task ${req.url}` }));
      return;
    }
    if (req.url === `/video/encoding/${SETTLED}/events`) {
      res.writeHead(204).end();
      return;
    }
    const after = req.headers['last-event-id'] as string | undefined;
    resumes.push(after);
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    if (after === undefined) {
      // Two changes, a heartbeat, then the connection drops (an API restart, a proxy's timeout).
      res.write(frame(10, CHANGES[0]!) + frame(11, CHANGES[1]!) + ': keep-alive\n\n');
      setTimeout(() => res.destroy(), 50);
      return;
    }
    // Resumed after the last change the client had: the rest, then the end.
    res.end(`${frame(12, CHANGES[2]!)}event: end\ndata: ${JSON.stringify({ seq: 12, task_id: ID, task_status: 'SUCCESS' })}\n\n`);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise((r) => server.close(r)));

describe('followTask', () => {
  it('resumes a dropped stream with Last-Event-ID: every change once, in order, then the end', async () => {
    resumes = [];
    const reconnects: string[] = [];
    const got = [];
    for await (const m of followTask(createApi({ url: base, apiKey: KEY }), ID, { onReconnect: (why) => reconnects.push(why) })) got.push(m);
    expect(got.map((m) => m.seq)).toEqual([10, 11, 12, 12]);
    expect(got.map((m) => m.kind)).toEqual(['status', 'status', 'status', 'end']);
    expect(got[3]).toEqual({ kind: 'end', seq: 12, task_id: ID, task_status: 'SUCCESS' });
    expect(resumes).toEqual([undefined, '11']);
    expect(reconnects).toHaveLength(1);
  });

  it('a stream answered 204 (the task settled before) ends at once', async () => {
    const got = [];
    for await (const m of followTask(createApi({ url: base, apiKey: KEY }), SETTLED, {})) got.push(m);
    expect(got).toEqual([]);
  });

  it('a refused key is not retried', async () => {
    resumes = [];
    const follow = followTask(createApi({ url: base, apiKey: 'wrong' }), ID, {});
    await expect(follow.next()).rejects.toThrow(new ApiProblemError('the API refused the key (403: invalid ApiKey)', 403, undefined));
  });
});

describe('video-mesh watch', () => {
  it('over a dropped stream prints each change once and ends with exit 0 and the links', async () => {
    resumes = [];
    const child = spawn(process.execPath, [BIN, 'watch', ID], { env: { PATH: process.env['PATH'] ?? '', VIDEO_MESH_URL: base, VIDEO_MESH_API_KEY: KEY }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c));
    child.stderr.on('data', (c: Buffer) => (stderr += c));
    const code = await new Promise((r) => child.once('close', r));
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(resumes).toEqual([undefined, '11']);
    expect(stdout.split('\n')).toEqual([
      `job ${ID}: processing`,
      '  download: running 0%',
      '  download: done',
      '  transcode-360p: running 40%',
      expect.stringMatching(/^live stream lost \(.+\); reconnecting in 250 ms$/),
      `job ${ID}: complete`,
      '  transcode-360p: done',
      `SUCCESS: job ${ID} is complete (360p)`,
      '  manifest:   http://s3.test/out/m.mpd',
      `  dashboard:  ${base}/#/jobs/${ID}`,
      '',
    ]);
  });
});
