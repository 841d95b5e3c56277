/**
 * The mesh on a three-node JetStream cluster with every stream, KV bucket and durable consumer on all
 * three (NATS_REPLICAS=3), the services given every node in NATS_URL: the node leading the WORK stream is
 * SIGKILLed while a job is being transcoded, and all three nodes are restarted one after another during a
 * job. Every job completes with both renditions in a valid manifest, nothing is lost, no service dies, and
 * the backend hears each outcome under one key (a repeat of the key, which at-least-once delivery allows,
 * is printed). A topology an earlier run left on one node is brought up to three when ingest-api starts,
 * and `npm start` runs the same cluster with NATS_CLUSTER=3.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JetStreamManager } from '@nats-io/jetstream';
import { BUCKETS as KV_BUCKETS, bucketStream, closeBus, connectBus, ensureConsumer, ensureStream, STREAMS } from '@mesh/bus';
import { createLogger, workRoute } from '@mesh/common';
import { openJobStates, openLeases } from '@mesh/jobs';
import { freePort, freePortRange, makeClip, meshEnv, natsServerVersion, REPO_ROOT, serializesCompareAndSet, startMongo, startNatsCluster, startService, type NatsCluster } from '@mesh/testkit';
import { api, API_KEY, BACKEND_KEY, BUCKETS, headers, putInput, startSystem, submit, until, waitForLog, waitForState, type System } from './support/harness.ts';
import { callsFor, expectDelivered } from './support/delivered.ts';
import { validateMpd } from './support/mpd.ts';

let sys: System<NatsCluster>;
let dir: string;
let clip: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cluster-'));
  // A crashed holder's message comes back after 3 s instead of 30.
  sys = await startSystem({ apiPort: await freePort(), natsCluster: 3, env: { ACK_WAIT_MS: '3000' }, startTimeoutMs: 90_000 });
  clip = await makeClip(join(dir, 'clip.mp4'), { width: 1280, height: 720, seconds: 8, audio: true });
}, 180_000);

afterAll(async () => {
  await sys?.stop();
  await rm(dir, { recursive: true, force: true });
});

/**
 * What a mesh run with NATS_REPLICAS=1 leaves on the cluster: every stream and KV bucket, and a durable
 * consumer, on one node.
 */
async function leaveOneCopy(nats: NatsCluster): Promise<void> {
  const bus = await connectBus({ url: nats.url, name: 'cluster-test', log: createLogger('cluster-test', 'silent') });
  try {
    for (const stream of Object.values(STREAMS)) await ensureStream(bus.jsm, { ...stream, num_replicas: 1 });
    await openJobStates(bus, { replicas: 1 });
    await openLeases(bus, 1);
    const { subject, consumer } = workRoute('download');
    await ensureConsumer(bus.jsm, { stream: STREAMS.work.name, durable: consumer, filterSubject: subject, ackWaitMs: 30_000, maxDeliver: 8, maxAckPending: 1000 });
  } finally {
    await closeBus(bus);
  }
}

let n = 0;
async function newJob(): Promise<string> {
  const key = `cluster/clip-${++n}.mp4`;
  await putInput(sys, key, clip);
  return submit(sys, { object_key: key, base_url: 'https://cdn.example.test/c/', video_id: `cluster-${n}`, has_audio: true });
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/**
 * Delivered (see expectDelivered), the manifest valid against the DASH schema, nothing of the job parked
 * as a dead letter, and every service still the process it was.
 */
async function expectWhole(taskId: string): Promise<void> {
  const { manifest } = await expectDelivered(sys, taskId);
  await validateMpd(manifest, dir);
  const letters = ((await (await api(sys, '/admin/dead-letters', { headers })).json()) as { dead_letters: { jobId: string }[] }).dead_letters;
  expect(letters.filter((l) => l.jobId === taskId)).toEqual([]);
  for (const p of sys.mesh.processes) expect(p.child.exitCode, p.id).toBeNull();
  // One call per outcome; a second call with the same Idempotency-Key is allowed (at least once), and shown.
  await new Promise((r) => setTimeout(r, 1000));
  const calls = callsFor(sys, taskId);
  const repeats = calls.length - new Set(calls.map((c) => c.headers['idempotency-key'])).size;
  if (repeats > 0) console.log(`cluster: job ${taskId}: the backend got ${repeats} repeated notification(s) with the same Idempotency-Key`);
}

/** Copies of every stream, KV bucket and durable consumer, from the JetStream API. */
async function copies(jsm: JetStreamManager): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for await (const s of jsm.streams.list()) {
    out[s.config.name] = 1 + (s.cluster?.replicas?.length ?? 0);
    for await (const c of jsm.consumers.list(s.config.name)) if (c.config.durable_name) out[`${s.config.name} > ${c.name}`] = 1 + (c.cluster?.replicas?.length ?? 0);
  }
  return out;
}

describe('a three-node JetStream cluster', () => {
  it('keeps every stream, KV bucket and durable consumer on three nodes, and a job goes through', async () => {
    const expected = [...Object.values(STREAMS).map((s) => s.name), ...Object.values(KV_BUCKETS).map(bucketStream), 'WORK > downloader', 'WORK > transcoder-720', 'WORK > transcoder-360', 'WORK > packager', 'WORK > uploader', 'WORK > thumbnailer', 'JOB_EVENTS > notifier'];
    expect(await sys.nats.withJsm(copies)).toEqual(Object.fromEntries(expected.map((name) => [name, 3])));
    // The baseline for the faults below.
    const started = Date.now();
    const taskId = await newJob();
    await expectWhole(taskId);
    console.log(`cluster: a job without faults completed in ${seconds(Date.now() - started)}`);
  }, 150_000);

  it('loses nothing when the node leading the WORK stream is SIGKILLed while a job is being transcoded', async () => {
    const started = Date.now();
    const taskId = await newJob();
    await waitForLog(sys, 'transcoder-720', { msg: 'running ffmpeg', jobId: taskId });
    const leader = await sys.nats.streamLeader(STREAMS.work.name);
    const killedAt = Date.now();
    await leader.kill();
    await waitForState(sys, taskId, ['complete', 'failed'], 120_000);
    const completedAt = Date.now();
    await expectWhole(taskId);
    console.log(`cluster: ${leader.name} (WORK leader) SIGKILLed ${seconds(killedAt - started)} after submit; job complete ${seconds(completedAt - killedAt)} after the kill, ${seconds(completedAt - started)} after submit`);
    const restartedAt = Date.now();
    await leader.start();
    await sys.nats.waitCurrent(leader);
    console.log(`cluster: ${leader.name} restarted and current again in ${seconds(Date.now() - restartedAt)}`);
  }, 150_000);

  it('loses nothing when the three nodes are restarted one after another during a job; a job submitted meanwhile completes too', async () => {
    const started = Date.now();
    const first = await newJob();
    await waitForLog(sys, 'transcoder-720', { msg: 'running ffmpeg', jobId: first });
    let second: Promise<string> | undefined;
    for (const node of sys.nats.nodes) {
      const at = Date.now();
      await node.stop();
      // Submitted with one node down.
      second ??= newJob();
      await node.start();
      await sys.nats.waitCurrent(node);
      console.log(`cluster: ${node.name} stopped, started and current again in ${seconds(Date.now() - at)}`);
    }
    console.log(`cluster: rolling restart done ${seconds(Date.now() - started)} after submit`);
    await expectWhole(first);
    await expectWhole(await second!);
    console.log(`cluster: both jobs complete ${seconds(Date.now() - started)} after the first submit`);
  }, 150_000);

  it('brings a topology an earlier run left on one node (streams, KV buckets, consumers) up to NATS_REPLICAS when ingest-api starts', async () => {
    // A cluster of its own, with only ingest-api: the one service that applies the streams' settings.
    const [upgrade, mongo] = await Promise.all([startNatsCluster({ nodes: 3 }), startMongo()]);
    try {
      await leaveOneCopy(upgrade);
      const before = await upgrade.withJsm(copies);
      expect(Object.values(before).every((v) => v === 1)).toBe(true);
      const env = meshEnv({ natsUrl: upgrade.url, mongoUri: mongo.uri, s3: sys.s3server, buckets: BUCKETS, apiKey: API_KEY, apiPort: await freePort(), backendUrl: sys.backend.url, backendKey: BACKEND_KEY });
      const ingest = startService('ingest-api', { ...env, NATS_REPLICAS: '3' });
      try {
        await Promise.race([ingest.ready, ingest.exited.then((code) => Promise.reject(new Error(`ingest-api exited with ${code}`)))]);
        // The servers move the data to the new peers in the background; a consumer follows its stream.
        // (A listing can leave out a stream whose leader is busy moving it: every one that was there must show.)
        const after = await until(() => upgrade.withJsm(copies), (c) => Object.keys(before).every((name) => c[name] === 3), 30_000).catch(() => upgrade.withJsm(copies));
        expect(after).toEqual(Object.fromEntries(Object.keys(before).map((name) => [name, 3])));
        expect(Object.keys(after)).toEqual(expect.arrayContaining([...Object.values(KV_BUCKETS).map(bucketStream), 'WORK > downloader']));
      } finally {
        await ingest.stop();
      }
    } finally {
      await Promise.all([upgrade.stop(), mongo.stop()]);
    }
  }, 90_000);
});

describe('npm start with NATS_CLUSTER=3', () => {
  it('runs a three-node JetStream cluster on loopback, stores under .data/nats-1..3, every stream on all three, and stops cleanly', async () => {
    const data = await mkdtemp(join(tmpdir(), 'local-cluster-'));
    const natsPort = await freePortRange(9);
    const env: Record<string, string | undefined> = { ...process.env };
    for (const name of ['NATS_URL', 'NATS_REPLICAS', 'MONGODB_URI', 'S3_ENDPOINT', 'MAIN_API_ENDPOINT', 'ADMIN_API_KEY', 'OTEL_EXPORTER_OTLP_ENDPOINT', 'HOST']) delete env[name];
    Object.assign(env, { NATS_CLUSTER: '3', DATA_DIR: data, SAMPLE: '0', APP_API_KEY: 'a-cluster-test-key-0123456789abcdef', PORT: String(await freePort()), LOCAL_NATS_PORT: String(natsPort), LOCAL_S3_PORT: String(await freePort()), LOCAL_MONGO_PORT: String(await freePort()), LOCAL_WEBHOOK_PORT: String(await freePort()) });
    const local = spawn(process.execPath, [join(REPO_ROOT, 'scripts', 'local.ts')], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const output: string[] = [];
    for (const stream of [local.stdout!, local.stderr!]) stream.on('data', (chunk: Buffer) => output.push(chunk.toString()));
    const exited = new Promise<number | null>((resolve) => local.once('exit', (code) => resolve(code)));
    try {
      await until(async () => output.join('').includes('Serving until Ctrl-C.') || local.exitCode !== null, Boolean, 150_000);
      expect(local.exitCode, output.join('')).toBeNull();
      expect(output.join('')).toContain(`NATS: a 3-node JetStream cluster, nats-1 nats://127.0.0.1:${natsPort}`);
      // An older nats-server is named for what it gets wrong on a cluster.
      expect(output.join('').includes('nats-server#4320')).toBe(!serializesCompareAndSet(await natsServerVersion()));
      for (const node of ['nats-1', 'nats-2', 'nats-3']) expect(existsSync(join(data, node, 'jetstream'))).toBe(true);
      // Client ports, then route ports, then monitoring ports: nats-1 answers on the seventh.
      const jsz = (await (await fetch(`http://127.0.0.1:${natsPort + 6}/jsz?accounts=true&streams=true&config=true`)).json()) as { meta_cluster: { cluster_size: number }; account_details: { stream_detail: { name: string; config: { num_replicas: number } }[] }[] };
      expect(jsz.meta_cluster.cluster_size).toBe(3);
      const streams = jsz.account_details.flatMap((a) => a.stream_detail);
      expect(streams.find((s) => s.name === STREAMS.work.name)?.config.num_replicas).toBe(3);
      expect(streams.find((s) => s.name === bucketStream(KV_BUCKETS.jobState))?.config.num_replicas).toBe(3);
    } finally {
      local.kill('SIGINT');
      const timer = setTimeout(() => local.kill('SIGKILL'), 30_000);
      expect(await exited).toBe(0);
      clearTimeout(timer);
      await rm(data, { recursive: true, force: true });
    }
  }, 200_000);
});
