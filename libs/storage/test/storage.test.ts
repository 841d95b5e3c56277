/** The S3 helpers against a real local S3 server. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, writeFile, readFile } from 'node:fs/promises';
import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { GetObjectCommand, HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { InputError } from '@mesh/common';
import { s3ClientConfig, startS3, tempDir, type S3Server } from '@mesh/testkit';
import {
  contentTypeFor,
  createS3,
  deletePrefix,
  downloadToFile,
  ensureBuckets,
  getText,
  headObject,
  listKeys,
  listObjects,
  PreconditionFailedError,
  presignGet,
  presignPut,
  publicUrl,
  putObject,
  uploadOnce,
  uploadFile,
  withSourceUrl,
} from '../src/index.ts';

let server: S3Server;
let s3: S3Client;
let dir: { path: string; remove(): Promise<void> };
const bucket = 'storage-test';

beforeAll(async () => {
  server = await startS3({ buckets: ['cors-bucket'] });
  s3 = createS3(s3ClientConfig(server));
  await ensureBuckets(s3, [bucket, bucket]);
  dir = await tempDir('storage');
});
afterAll(async () => {
  await server.stop();
  await dir.remove();
});

describe('storage', () => {
  it.each(['plain.mp4', 'with space/ü n\u00efcode.mp4', `quote's "and" $(shell);.mp4`, '-leading-dash.mp4'])('round-trips the key %j', async (key) => {
    await putObject(s3, { bucket, key }, 'hello');
    expect(await getText(s3, { bucket, key })).toBe('hello');
    const path = join(dir.path, 'down');
    expect(await downloadToFile(s3, { bucket, key }, path)).toBe(5);
  });

  it.each(['plain source.mp4', `it's "$(rm -rf ~)"; a|b&c +1 #x?.mp4`, 'dir/vidéo 日本.mp4'])('reads the client object %j in place through a presigned URL', async (key) => {
    const data = randomBytes(300_000);
    await putObject(s3, { bucket, key: `in/${key}` }, data);
    const head = (await headObject(s3, { bucket, key: `in/${key}` }))!;
    const got = await withSourceUrl(s3, { bucket, key: `in/${key}`, etag: head.etag }, async (url) => Buffer.from(await (await fetch(url)).arrayBuffer()));
    expect(got.equals(data)).toBe(true);
  });

  it('fails the reading when the object is replaced or deleted meanwhile, also when the reader failed', async () => {
    const ref = { bucket, key: 'in/moving.mp4' };
    await putObject(s3, ref, 'first');
    const source = { ...ref, etag: (await headObject(s3, ref))!.etag };
    const replaced = withSourceUrl(s3, source, () => putObject(s3, ref, 'second'));
    await expect(replaced).rejects.toMatchObject({ code: 'SOURCE_CHANGED', message: expect.stringMatching(/in\/moving.mp4 changed while it was being converted/) });
    const broken = withSourceUrl(s3, { ...ref, etag: (await headObject(s3, ref))!.etag }, async () => {
      await deletePrefix(s3, bucket, 'in/moving');
      throw new Error('ffmpeg: invalid data');
    });
    await expect(broken).rejects.toMatchObject({ code: 'SOURCE_NOT_FOUND', message: expect.stringMatching(/was deleted/) });
    // Unchanged: the reader's own error comes through.
    await putObject(s3, ref, 'third');
    const own = withSourceUrl(s3, { ...ref, etag: (await headObject(s3, ref))!.etag }, () => Promise.reject(new Error('own')));
    await expect(own).rejects.toThrow('own');
  });

  it('writes each file of a package folder once: what is there stays, as segments are immutable', async () => {
    const pkg = join(dir.path, 'pkg');
    await mkdir(join(pkg, 'video/720p'), { recursive: true });
    const a = randomBytes(200_000);
    await writeFile(join(pkg, 'video/720p/1.m4s'), a);
    await writeFile(join(pkg, 'video/720p/2.m4s'), randomBytes(200_000));
    const files = ['video/720p/1.m4s', 'video/720p/2.m4s'];
    const to = { bucket, prefix: 'out/ü clip.mp4/job.1/', keyOf: (f: string) => `out/ü clip.mp4/job.1/${f}` };
    expect((await uploadOnce(s3, pkg, files, to)).uploaded.sort()).toEqual(files);

    // A repeat packaging: one file differs (an init segment's creation time), one is new. Only the new one goes up.
    await writeFile(join(pkg, 'video/720p/2.m4s'), randomBytes(200_000));
    await mkdir(join(pkg, 'video/360p'));
    await writeFile(join(pkg, 'video/360p/1.m4s'), 'new');
    const again = await uploadOnce(s3, pkg, [...files, 'video/360p/1.m4s'], to, { cacheControl: 'immutable' });
    expect(again.kept.sort()).toEqual(files);
    expect(again.uploaded).toEqual(['video/360p/1.m4s']);
    expect(await headObject(s3, { bucket, key: to.keyOf('video/360p/1.m4s') })).toMatchObject({ cacheControl: 'immutable' });
    const down = join(dir.path, 'seg1');
    await downloadToFile(s3, { bucket, key: to.keyOf('video/720p/1.m4s') }, down);
    expect((await readFile(down)).equals(a)).toBe(true);
  });

  it('names a missing object and a missing bucket as input errors', async () => {
    const missing = await downloadToFile(s3, { bucket, key: 'nope.mp4' }, join(dir.path, 'x')).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(InputError);
    expect(missing).toMatchObject({ code: 'SOURCE_NOT_FOUND', message: 'object nope.mp4 does not exist' });
    const noBucket = await downloadToFile(s3, { bucket: 'no-such-bucket', key: 'a' }, join(dir.path, 'x')).catch((e: unknown) => e);
    expect(noBucket).toMatchObject({ code: 'SOURCE_NOT_FOUND', message: 'the input bucket does not exist' });
    expect(await getText(s3, { bucket, key: 'nope' })).toBeNull();
    expect(await headObject(s3, { bucket, key: 'nope' })).toBeNull();
  });

  it('uploads a 20 MB file in parts, with its content type', async () => {
    const path = join(dir.path, 'big.mp4');
    const data = randomBytes(20 * 1024 * 1024);
    await writeFile(path, data);
    expect(await uploadFile(s3, { bucket, key: 'big/video.mp4' }, path)).toBe(data.length);
    const head = await headObject(s3, { bucket, key: 'big/video.mp4' });
    expect(head).toMatchObject({ size: data.length, contentType: 'video/mp4' });
    await downloadToFile(s3, { bucket, key: 'big/video.mp4' }, join(dir.path, 'big2'));
    expect((await readFile(join(dir.path, 'big2'))).equals(data)).toBe(true);
  });

  it('sets content types, cache control and metadata on small objects', async () => {
    await putObject(s3, { bucket, key: 'out/manifest.mpd' }, '<MPD/>', { cacheControl: 'no-cache', metadata: { 'mesh-job': 'j' } });
    expect(await headObject(s3, { bucket, key: 'out/manifest.mpd' })).toMatchObject({ contentType: 'application/dash+xml', cacheControl: 'no-cache', metadata: { 'mesh-job': 'j' } });
  });

  it('lists and deletes by prefix', async () => {
    for (let i = 0; i < 3; i++) await putObject(s3, { bucket, key: `list/${i}.m4s` }, 'x');
    expect((await listKeys(s3, bucket, 'list/')).sort()).toEqual(['list/0.m4s', 'list/1.m4s', 'list/2.m4s']);
    expect(await deletePrefix(s3, bucket, 'list/')).toBe(3);
    expect(await listKeys(s3, bucket, 'list/')).toEqual([]);
  });

  it('hands out a presigned PUT that works without credentials', async () => {
    const url = await presignPut(s3, { bucket, key: 'uploads/my clip ü.mp4' }, { expiresSec: 60, contentType: 'video/mp4' });
    const res = await fetch(url, { method: 'PUT', headers: { 'content-type': 'video/mp4' }, body: 'video bytes' });
    expect(res.status).toBe(200);
    expect(await getText(s3, { bucket, key: 'uploads/my clip ü.mp4' })).toBe('video bytes');
  });

  it('lets a browser on another origin read a configured bucket (CORS)', async () => {
    await putObject(s3, { bucket: 'cors-bucket', key: 'a.m4s' }, 'seg');
    const res = await fetch(`${server.endpoint}/cors-bucket/a.m4s`, { headers: { Origin: 'http://player.example.test' } });
    expect(res.headers.get('access-control-allow-origin')).toBe('*');
  });

  it.each([
    ['manifest.mpd', 'application/dash+xml'],
    ['video/720p/1.m4s', 'video/iso.segment'],
    ['video/720p/init.mp4', 'video/mp4'],
    ['thumb.jpg', 'image/jpeg'],
    ['12345', 'application/octet-stream'],
  ])('content type of %s is %s', (key, type) => {
    expect(contentTypeFor(key)).toBe(type);
  });

  it('builds path-style public URLs with encoded keys', () => {
    expect(publicUrl('http://s3.test/', { bucket: 'out', key: 'a b/ü#1/manifest.mpd' })).toBe('http://s3.test/out/a%20b/%C3%BC%231/manifest.mpd');
  });
});

const md5 = (text: string) => createHash('md5').update(text).digest('hex');

describe('conditional writes', () => {
  it('puts only where nothing is (If-None-Match: *) and returns the new ETag', async () => {
    const ref = { bucket, key: 'cond/new.mpd' };
    expect(await putObject(s3, ref, 'v1', { ifNoneMatch: '*' })).toBe(md5('v1'));
    const err = await putObject(s3, ref, 'v2', { ifNoneMatch: '*' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PreconditionFailedError);
    expect(err).toMatchObject({ name: 'PreconditionFailedError', code: 'WRITE_CONFLICT', message: 'write to cond/new.mpd refused: an object with that key exists already', permanent: false });
    expect(await getText(s3, ref)).toBe('v1');
  });

  it('replaces only the version read (If-Match), and says when it is gone', async () => {
    const ref = { bucket, key: 'cond/manifest.mpd' };
    const first = await putObject(s3, ref, 'first');
    const second = await putObject(s3, ref, 'second', { ifMatch: first });
    expect(second).toBe(md5('second'));
    // A writer still holding the first version loses, and nothing is written.
    await expect(putObject(s3, ref, 'stale', { ifMatch: `"${first}"` })).rejects.toMatchObject({ name: 'PreconditionFailedError', message: `write to cond/manifest.mpd refused: the object is no longer ETag ${first}` });
    expect(await getText(s3, ref)).toBe('second');
    await expect(putObject(s3, { bucket, key: 'cond/missing.mpd' }, 'x', { ifMatch: second })).rejects.toMatchObject({ name: 'PreconditionFailedError', message: expect.stringMatching(/does not exist any more/) });
    expect(await getText(s3, { bucket, key: 'cond/missing.mpd' })).toBeNull();
  });

  it('lets exactly one of many concurrent creators win', async () => {
    const ref = { bucket, key: 'cond/race.mpd' };
    const bodies = Array.from({ length: 12 }, (_, i) => `writer ${i} `.repeat(2000));
    const results = await Promise.allSettled(bodies.map((body) => putObject(s3, ref, body, { ifNoneMatch: '*' })));
    const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
    expect(won).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(PreconditionFailedError);
    expect(await getText(s3, ref)).toBe(bodies[won[0]!]);
  });
});

describe('a source pinned to its probed ETag', () => {
  it('is refused by S3 through the SDK once it changed (GET and HEAD with If-Match: 412)', async () => {
    const ref = { bucket, key: 'pin/sdk.mp4' };
    const etag = await putObject(s3, ref, 'probed');
    const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: ref.key, IfMatch: `"${etag}"` }));
    expect(await got.Body!.transformToString()).toBe('probed');
    await putObject(s3, ref, 'swapped');
    for (const command of [new GetObjectCommand({ Bucket: bucket, Key: ref.key, IfMatch: `"${etag}"` }), new HeadObjectCommand({ Bucket: bucket, Key: ref.key, IfMatch: `"${etag}"` })]) {
      await expect(s3.send(command as GetObjectCommand)).rejects.toMatchObject({ $metadata: { httpStatusCode: 412 } });
    }
  });

  it('hands the reader a URL signed with If-Match (and the version, when known) and the header to send', async () => {
    const ref = { bucket, key: 'pin/reader.mp4' };
    const etag = await putObject(s3, ref, 'probed bytes');
    const seen = await withSourceUrl(s3, { ...ref, etag }, async (url, pin) => {
      expect(pin).toEqual({ ifMatch: `"${etag}"` });
      expect(new URL(url).searchParams.get('X-Amz-SignedHeaders')).toBe('host;if-match');
      return (await fetch(url, { headers: { 'If-Match': pin.ifMatch } })).text();
    });
    expect(seen).toBe('probed bytes');
    const versioned = new URL(await presignGet(s3, ref, { expiresSec: 60, ifMatch: `"${etag}"`, versionId: 'v-42' }));
    expect(versioned.searchParams.get('versionId')).toBe('v-42');
  });

  it('fails the reading at its first request once the object was swapped, as SOURCE_CHANGED saying S3 refused it', async () => {
    const ref = { bucket, key: 'pin/swapped.mp4' };
    const source = { ...ref, etag: await putObject(s3, ref, 'probed') };
    await putObject(s3, ref, 'swapped in');
    let status = 0;
    const err = await withSourceUrl(s3, source, async (url, pin) => {
      const res = await fetch(url, { headers: { 'If-Match': pin.ifMatch } });
      status = res.status;
      if (!res.ok) throw new Error(`GET failed: ${res.status} Precondition Failed`);
    }).catch((e: unknown) => e);
    expect(status).toBe(412);
    expect(err).toMatchObject({
      code: 'SOURCE_CHANGED',
      message: `object pin/swapped.mp4 changed while it was being converted (S3 refused to read it as probed (412 Precondition Failed; ETag ${source.etag} is now ${md5('swapped in')})); submit it again`,
    });
  });
});

describe('an S3 that accepts connections and never answers', () => {
  let stalled: ReturnType<typeof createServer>;
  let endpoint: string;
  const sockets: Socket[] = [];
  beforeAll(async () => {
    stalled = createServer((socket) => sockets.push(socket.on('error', () => undefined)));
    stalled.listen(0, '127.0.0.1');
    await once(stalled, 'listening');
    endpoint = `http://127.0.0.1:${(stalled.address() as { port: number }).port}`;
  });
  afterAll(() => {
    for (const socket of sockets) socket.destroy();
    stalled.close();
  });
  const client = (timeoutMs: number) => createS3({ endpoint, region: 'us-east-1', credentials: { accessKeyId: 'k', secretAccessKey: 's' }, timeoutMs });

  it.each<[string, (s3: S3Client) => Promise<unknown>]>([
    ['headObject', (c) => headObject(c, { bucket, key: 'a.mp4' })],
    ['putObject', (c) => putObject(c, { bucket, key: 'a.mpd' }, 'x')],
    ['listObjects', (c) => listObjects(c, bucket, 'p/')],
  ])('%s fails after the timeout (each of the SDK\'s attempts) with a readable STORAGE_FAILED', async (_name, call) => {
    const before = sockets.length;
    const err = await call(client(300)).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'STORAGE_FAILED', message: expect.stringMatching(/^(head of|upload to|listing of) \S+ failed: the request socket timed out after 300 ms of inactivity \(S3_TIMEOUT_MS\)$/) });
    // The standard retry mode is kept: three attempts, each given up after 300 ms of silence.
    expect(sockets.length - before).toBe(3);
  });

  it.each<[string, (s3: S3Client, signal: AbortSignal) => Promise<unknown>]>([
    ['putObject', (c, signal) => putObject(c, { bucket, key: 'a.mpd' }, 'x', { signal })],
    ['uploadFile', async (c, signal) => {
      await writeFile(join(dir.path, 'small.bin'), 'x');
      return uploadFile(c, { bucket, key: 'a.bin' }, join(dir.path, 'small.bin'), { signal });
    }],
    ['headObject', (c, signal) => headObject(c, { bucket, key: 'a' }, { signal })],
    ['listObjects', (c, signal) => listObjects(c, bucket, 'p/', { signal })],
  ])('%s stops when its signal aborts, long before the timeout', async (_name, call) => {
    const ac = new AbortController();
    const pending = call(client(60_000), ac.signal).catch((e: unknown) => e);
    setTimeout(() => ac.abort(new Error('service stopping')), 200);
    // Without the signal this waits for the 60 s timeout and fails the test by its own.
    const err = await pending;
    expect(err).toBeInstanceOf(Error);
    expect(err).toMatchObject({ code: 'STORAGE_FAILED' });
  }, 10_000);
});

