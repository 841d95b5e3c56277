/** The launchers start real servers on free ports, and NATS keeps JetStream data across a restart. */
import { describe, expect, it } from 'vitest';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { MongoClient } from 'mongodb';
import { CompleteMultipartUploadCommand, CreateMultipartUploadCommand, S3Client, UploadPartCommand } from '@aws-sdk/client-s3';
import { ensureStream } from '@mesh/bus';
import { sleep } from '@mesh/common';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { freePort, serializesCompareAndSet, startMongo, startNats, startNatsCluster, startS3 } from '../src/index.ts';

describe('freePort', () => {
  it('picks ports below the kernel\'s ephemeral range, which listen(0) and outgoing connections use, and they bind', async () => {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    const ports = await Promise.all(Array.from({ length: 20 }, () => freePort()));
    for (const port of ports) {
      expect(port).toBeGreaterThanOrEqual(20000);
      expect(port).toBeLessThan(low);
      await new Promise<void>((resolve, reject) => {
        const srv = createServer().once('error', reject);
        srv.listen(port, '127.0.0.1', () => srv.close(() => resolve()));
      });
    }
  });
});

describe('launchers', () => {
  it('nats-server keeps JetStream streams across a restart on the same port', async () => {
    const nats = await startNats();
    try {
      let nc = await connect({ servers: nats.url });
      await (await jetstreamManager(nc)).streams.add({ name: 'KEEP', subjects: ['keep.>'] });
      await nc.close();
      await nats.restart();
      nc = await connect({ servers: nats.url });
      expect((await (await jetstreamManager(nc)).streams.info('KEEP')).config.name).toBe('KEEP');
      await nc.close();
    } finally {
      await nats.stop();
    }
  });

  it('the S3 stand-in answers', async () => {
    const s3 = await startS3();
    try {
      expect((await fetch(`${s3.endpoint}/`)).status).toBe(200);
    } finally {
      await s3.stop();
    }
    await expect(fetch(`${s3.endpoint}/`)).rejects.toThrow();
  });

  it('the S3 stand-in honours conditional requests as S3 does (an extension of s3rver)', async () => {
    const s3 = await startS3({ buckets: ['cond-bucket'] });
    const url = (key: string) => `${s3.endpoint}/cond-bucket/${key}`;
    const req = async (method: string, key: string, headers: Record<string, string> = {}, body?: string) => {
      const res = await fetch(url(key), { method, headers, ...(body === undefined ? {} : { body }) });
      const text = await res.text();
      return { status: res.status, code: /<Code>(\w+)<\/Code>/.exec(text)?.[1], etag: res.headers.get('etag') };
    };
    try {
      const { etag } = await req('PUT', 'a.mpd', {}, 'one');
      expect(etag).toMatch(/^"[0-9a-f]{32}"$/);
      const table: [string, string, Record<string, string>, string | undefined, number, string | undefined][] = [
        // method, key, headers, body -> status, error code
        ['GET', 'a.mpd', { 'If-Match': etag! }, undefined, 200, undefined],
        ['GET', 'a.mpd', { 'If-Match': etag!.replaceAll('"', '') }, undefined, 200, undefined],
        ['GET', 'a.mpd', { 'If-Match': '*' }, undefined, 200, undefined],
        ['GET', 'a.mpd', { 'If-Match': '"0123"' }, undefined, 412, 'PreconditionFailed'],
        ['HEAD', 'a.mpd', { 'If-Match': '"0123"' }, undefined, 412, undefined],
        ['GET', 'none.mpd', { 'If-Match': etag! }, undefined, 404, 'NoSuchKey'],
        ['PUT', 'a.mpd', { 'If-None-Match': '*' }, 'two', 412, 'PreconditionFailed'],
        ['PUT', 'a.mpd', { 'If-Match': '"0123"' }, 'two', 412, 'PreconditionFailed'],
        ['PUT', 'none.mpd', { 'If-Match': etag! }, 'two', 404, 'NoSuchKey'],
        ['PUT', 'a.mpd', { 'If-None-Match': etag! }, 'two', 501, 'NotImplemented'],
        ['PUT', 'b.mpd', { 'If-None-Match': '*' }, 'new', 200, undefined],
        ['PUT', 'a.mpd', { 'If-Match': etag! }, 'two', 200, undefined],
        ['GET', 'a.mpd', { 'If-Match': etag! }, undefined, 412, 'PreconditionFailed'],
      ];
      const got = [];
      for (const [method, key, headers, body] of table) got.push(Object.values(await req(method, key, headers, body)).slice(0, 2));
      expect(got).toEqual(table.map(([, , , , status, code]) => [status, code]));
      expect(await (await fetch(url('a.mpd'))).text()).toBe('two');

      // A multipart upload completes under the same rule.
      const client = new S3Client({ endpoint: s3.endpoint, forcePathStyle: true, region: 'us-east-1', credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
      const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: 'cond-bucket', Key: 'a.mpd' }));
      const part = await client.send(new UploadPartCommand({ Bucket: 'cond-bucket', Key: 'a.mpd', UploadId, PartNumber: 1, Body: 'three' }));
      const complete = client.send(new CompleteMultipartUploadCommand({ Bucket: 'cond-bucket', Key: 'a.mpd', UploadId, IfNoneMatch: '*', MultipartUpload: { Parts: [{ PartNumber: 1, ETag: part.ETag! }] } }));
      await expect(complete).rejects.toMatchObject({ $metadata: { httpStatusCode: 412 } });
      expect(await (await fetch(url('a.mpd'))).text()).toBe('two');
    } finally {
      await s3.stop();
    }
  });

  it('the MongoDB-compatible server answers a ping', async () => {
    const mongo = await startMongo();
    const client = new MongoClient(mongo.uri);
    try {
      await client.connect();
      expect(await client.db().command({ ping: 1 })).toMatchObject({ ok: 1 });
    } finally {
      await client.close();
      await mongo.stop();
    }
  });

  it('names the server and shows its log when it cannot start', async () => {
    const nats = await startNats();
    try {
      await expect(startNats({ port: nats.port })).rejects.toThrow(/nats-server did not start/);
    } finally {
      await nats.stop();
    }
  });

  it('a JetStream cluster: nodes with their own stores elect a stream leader, a killed one is replaced, and restarted it is current again', async () => {
    const cluster = await startNatsCluster({ nodes: 3 });
    try {
      expect(cluster.url).toBe(cluster.urls.join(','));
      expect(new Set(cluster.nodes.map((n) => n.storeDir)).size).toBe(3);
      // Making a replicated stream can take longer than one request on a loaded machine: asked again.
      await cluster.withJsm((jsm) => ensureStream(jsm, { name: 'R3', subjects: ['r3.>'], num_replicas: 3 }));
      const leader = await cluster.streamLeader('R3');
      await leader.kill();
      expect(leader.running).toBe(false);
      let next = leader;
      for (let tries = 0; next.name === leader.name && tries < 100; tries++) {
        await sleep(100);
        next = await cluster.streamLeader('R3').catch(() => leader);
      }
      expect(next.name).not.toBe(leader.name);
      await leader.start();
      await cluster.waitCurrent(leader);
      const info = await cluster.withJsm((jsm) => jsm.streams.info('R3'));
      expect([info.cluster?.leader, ...(info.cluster?.replicas ?? []).map((r) => r.name)].sort()).toEqual(['nats-1', 'nats-2', 'nats-3']);
    } finally {
      await cluster.stop();
    }
  }, 60_000);

  it('a JetStream cluster with users: each service logs in as its own, and nobody without a login', async () => {
    const cluster = await startNatsCluster({ nodes: 3, users: true });
    try {
      const env = cluster.serviceEnv('transcoder-720');
      expect(env['NATS_USER']).toBe('transcoder');
      const nc = await connect({ servers: cluster.urls, user: env['NATS_USER']!, pass: env['NATS_PASSWORD']! });
      await nc.close();
      await expect(connect({ servers: cluster.urls, maxReconnectAttempts: 0 })).rejects.toThrow();
      expect(await cluster.withJsm(async (jsm) => (await jsm.getAccountInfo()).streams)).toBe(0);
    } finally {
      await cluster.stop();
    }
  }, 60_000);

  it.each([
    ['2.9.10', false],
    ['2.9.20', false],
    ['2.9.21', true],
    ['2.10.0', true],
    ['3.0.1', true],
  ])('nats-server %s serializes compare-and-set on a replicated stream: %s (nats-server#4320)', (version, serialized) => {
    expect(serializesCompareAndSet(version)).toBe(serialized);
  });
});
