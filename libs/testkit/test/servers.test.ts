/** The launchers start real servers on free ports, and NATS keeps JetStream data across a restart. */
import { describe, expect, it } from 'vitest';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { MongoClient } from 'mongodb';
import { startMongo, startNats, startS3 } from '../src/index.ts';

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
});
