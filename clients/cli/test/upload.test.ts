/**
 * `submit`'s upload against an HTTP server of the test's own that plays the API (POST /uploads, POST
 * /video/encoding) and the storage the upload URL points at, so the test can look at the PUT itself,
 * refuse it, or stall it to press Ctrl-C mid-upload. The real flow end to end is test/cli.test.ts.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ID } from './tasks.ts';

const BIN = fileURLToPath(new URL('../bin/video-mesh.js', import.meta.url));
const KEY = 'upload-test-key';

let server: Server;
let base: string;
let dir: string;
/** What the storage does with the next PUT. */
let storage: 'take' | 'refuse' | 'stall';
let puts: { headers: IncomingMessage['headers']; bytes: number }[];
let submitted: unknown[];

const read = async (req: IncomingMessage) => {
  let body = '';
  for await (const c of req) body += c;
  return body;
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cli-upload-'));
  server = createServer(async (req, res) => {
    if (req.method === 'POST' && req.url === '/uploads') {
      const body = JSON.parse(await read(req)) as { filename: string; content_type: string };
      const key = `uploads/u1/${body.filename}`;
      res.writeHead(201, { 'content-type': 'application/json' }).end(
        JSON.stringify({ object_key: key, bucket: 'in', upload_url: `${base}/s3/in/${key}?X-Amz-Signature=secret-signature`, method: 'PUT', headers: { 'Content-Type': body.content_type }, expires_in: 3600, base_url: `${base}/s3/out/${key}/` }),
      );
      return;
    }
    if (req.method === 'PUT' && req.url?.startsWith('/s3/')) {
      if (storage === 'stall') {
        // Takes nothing and never answers: the client's buffers fill and the upload hangs.
        req.pause();
        puts.push({ headers: req.headers, bytes: 0 });
        return;
      }
      let bytes = 0;
      for await (const c of req) bytes += (c as Buffer).length;
      puts.push({ headers: req.headers, bytes });
      if (storage === 'refuse') res.writeHead(403, { 'content-type': 'application/xml' }).end('<?xml version="1.0"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>');
      else res.writeHead(200).end();
      return;
    }
    if (req.method === 'POST' && req.url === '/video/encoding') {
      submitted.push(JSON.parse(await read(req)));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(ID));
      return;
    }
    res.writeHead(404, { 'content-type': 'application/problem+json' }).end(JSON.stringify({ status: 404, detail: 'no such route' }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  await rm(dir, { recursive: true, force: true });
});
beforeEach(() => {
  storage = 'take';
  puts = [];
  submitted = [];
});

function submit(args: string[]) {
  const child = spawn(process.execPath, [BIN, 'submit', ...args], { env: { PATH: process.env['PATH'] ?? '', VIDEO_MESH_URL: base, VIDEO_MESH_API_KEY: KEY }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c));
  child.stderr.on('data', (c: Buffer) => (stderr += c));
  return { child, done: new Promise<{ code: number | null; stdout: string; stderr: string }>((r) => child.once('close', (code) => r({ code, stdout, stderr }))), stdout: () => stdout };
}

async function file(name: string, bytes: number): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, Buffer.alloc(bytes, 7));
  return path;
}

describe('submit FILE --no-wait', () => {
  it('PUTs the whole file with its Content-Length and Content-Type, showing the bytes sent, then submits it', async () => {
    const path = await file('clip.mov', 1_000_000);
    const run = await submit([path, '--no-wait', '--video-id', 'v9']).done;
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(puts).toHaveLength(1);
    expect(puts[0]).toMatchObject({ bytes: 1_000_000, headers: { 'content-length': '1000000', 'content-type': 'video/quicktime' } });
    expect(puts[0]!.headers['transfer-encoding']).toBeUndefined();
    expect(submitted).toEqual([{ object_key: 'uploads/u1/clip.mov', base_url: `${base}/s3/out/uploads/u1/clip.mov/`, video_id: 'v9', has_audio: true }]);
    expect(run.stdout.split('\n')).toEqual([
      'uploading clip.mov (1.0 MB)',
      '  upload 25% (262.1 KB of 1.0 MB)',
      '  upload 50% (524.3 KB of 1.0 MB)',
      '  upload 75% (786.4 KB of 1.0 MB)',
      '  upload 100% (1.0 MB)',
      `submitted: task ${ID} (video id v9); follow it with \`video-mesh watch ${ID}\``,
      '',
    ]);
  });

  it('--base-url is sent as given; without --video-id a fresh UUID is', async () => {
    const path = await file('a.mp4', 10);
    expect((await submit([path, '--no-wait', '--base-url', 'https://cdn.example.test/a/']).done).code).toBe(0);
    expect(submitted).toEqual([expect.objectContaining({ base_url: 'https://cdn.example.test/a/', video_id: expect.stringMatching(/^[0-9a-f-]{36}$/) })]);
  });

  it('an upload the storage refuses is exit 3 with its reason, without the signed query; nothing is submitted', async () => {
    storage = 'refuse';
    const run = await submit([await file('b.mp4', 100_000), '--no-wait']).done;
    expect(run.code).toBe(3);
    expect(run.stderr).toBe(`error: the storage at ${base} refused the upload (HTTP 403): AccessDenied: Request has expired\n`);
    expect(run.stderr + run.stdout).not.toContain('secret-signature');
    expect(submitted).toEqual([]);
  });

  it('Ctrl-C during the upload stops it: exit 130, nothing submitted', async () => {
    storage = 'stall';
    const running = submit([await file('big.mp4', 50_000_000)]);
    while (puts.length === 0) await new Promise((r) => setTimeout(r, 20));
    running.child.kill('SIGINT');
    const run = await running.done;
    expect(run.code).toBe(130);
    expect(run.stderr).toBe('error: interrupted: the upload stopped; nothing was submitted\n');
    expect(submitted).toEqual([]);
  });
});
