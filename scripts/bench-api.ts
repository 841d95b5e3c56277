/**
 * `npm run bench:api [-- --rate 200 --seconds 30 --readers 64 --read-seconds 10 --real-every 40 --catch-up-seconds 120 --profile dir]`: the front
 * door under a burst, with the whole mesh running on this machine.
 *
 * Starts nats-server, s3rver, the MongoDB stand-in, a webhook receiver and the eight services (one replica
 * each, logging at info as in production, the lines discarded), then:
 * 1. submits POST /video/encoding at a fixed rate, open loop (each request leaves at its scheduled time,
 *    whether or not the earlier ones have been answered, so a slow answer cannot hide the ones queued behind
 *    it). One job in `real-every` converts a real 2 s clip, so the transcoders, packager and uploader work
 *    throughout; the others name an object that is not there and fail at the downloader, as a client's
 *    mistake does: every job makes events, most make a failure and a webhook.
 * 2. meanwhile, ten times a second, reads the projector's cursor (its MongoDB document) and the event
 *    stream: how many events are not folded yet, and how old the oldest of them is (its JetStream
 *    timestamp): the projector's lag in events and in seconds. After the burst: how long until the
 *    projector has folded everything published during it (catch-up).
 * 3. then reads statuses as fast as it can: `readers` keep-alive connections GET random submitted tasks for
 *    `read-seconds`, from two worker threads, while the remaining real jobs still run.
 * Prints p50/p99 of both, the rates, the projector's peak lag and catch-up time, beside the targets.
 * On a 2-core host the client, the servers and every service share the CPU: the figures include that.
 * BENCH_LOGS=<file> keeps the services' log lines; `--profile <dir>` writes ingest-api's CPU profile there.
 */
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { MongoClient, type Collection } from 'mongodb';
import { STREAMS } from '@mesh/bus';
import { createS3, putObject } from '@mesh/storage';
import { formatLogLine, freePort, makeClip, meshEnv, startMesh, startMongo, startNats, s3ClientConfig, startS3, startWebhookReceiver, tempDir } from '@mesh/testkit';

const API_KEY = 'bench-api-key-0123456789abcdef0123456789';

interface Opts {
  rate: number;
  seconds: number;
  readers: number;
  readSeconds: number;
  realEvery: number;
  /** How long after the burst to wait for the projector to fold it before reporting how far behind it is. */
  catchUpSeconds: number;
  logLevel: string;
  /** A directory for ingest-api's CPU profile (written when it stops), to see where its time goes. */
  profile: string | undefined;
}

/** The projector's document: its cursor in JOB_EVENTS, and the collection it folds into. */
type Cursor = Collection<{ _id: string; seq: number; collection?: string }>;
type Jsm = Awaited<ReturnType<typeof jetstreamManager>>;

interface Sample {
  /** ms since the burst started */
  at: number;
  behind: number;
  lagMs: number;
  lastSeq: number;
  cursor: number;
}

const pct = (sorted: number[], p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! : NaN);
const ms = (x: number) => `${x.toFixed(1)} ms`;

function options(): Opts {
  const { values } = parseArgs({
    options: {
      rate: { type: 'string', default: '200' },
      seconds: { type: 'string', default: '30' },
      readers: { type: 'string', default: '64' },
      'read-seconds': { type: 'string', default: '10' },
      'real-every': { type: 'string', default: '40' },
      'catch-up-seconds': { type: 'string', default: '120' },
      'log-level': { type: 'string', default: 'info' },
      profile: { type: 'string' },
    },
  });
  const o = { rate: Number(values.rate), seconds: Number(values.seconds), readers: Number(values.readers), readSeconds: Number(values['read-seconds']), realEvery: Number(values['real-every']), catchUpSeconds: Number(values['catch-up-seconds']), logLevel: values['log-level'], profile: values.profile };
  for (const [k, v] of Object.entries(o)) if (typeof v === 'number' && !(v > 0)) throw new Error(`--${k}: a positive number, please (got ${v})`);
  return o;
}

/** One HTTP request on a keep-alive agent: status and body, with the time it took. */
function call(agent: Agent, port: number, method: string, path: string, body?: string): Promise<{ status: number; text: string; ms: number }> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, agent, headers: { ApiKey: API_KEY, ...(body ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } : {}) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), ms: performance.now() - started }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The GET readers (in a worker thread): `readers` loops on one keep-alive agent, until the deadline. */
interface Reads {
  latencies: number[];
  statuses: Record<number, number>;
  /** From the first request to the last answer, in this thread. */
  elapsedMs: number;
}

async function readLoop(d: { port: number; ids: string[]; readers: number; untilMs: number }): Promise<Reads> {
  const agent = new Agent({ keepAlive: true, maxSockets: d.readers });
  const latencies: number[] = [];
  const statuses: Record<number, number> = {};
  const started = performance.now();
  const deadline = performance.timeOrigin + started + d.untilMs;
  await Promise.all(
    Array.from({ length: d.readers }, async () => {
      while (performance.timeOrigin + performance.now() < deadline) {
        const id = d.ids[Math.floor(Math.random() * d.ids.length)]!;
        const r = await call(agent, d.port, 'GET', `/video/encoding/${id}`);
        latencies.push(r.ms);
        statuses[r.status] = (statuses[r.status] ?? 0) + 1;
      }
    }),
  );
  agent.destroy();
  return { latencies, statuses, elapsedMs: performance.now() - started };
}

if (!isMainThread) {
  parentPort!.postMessage(await readLoop(workerData as Parameters<typeof readLoop>[0]));
} else {
  await main();
}

async function main() {
  const o = options();
  const work = await tempDir('bench-api');
  const buckets = { input: 'bapi-in', output: 'bapi-out', thumbnails: 'bapi-thumbs', work: 'bapi-work' };
  const [nats, s3server, mongo, backend] = await Promise.all([startNats(), startS3({ buckets: Object.values(buckets) }), startMongo(), startWebhookReceiver()]);
  const port = await freePort();
  const env = meshEnv({ natsUrl: nats.url, mongoUri: mongo.uri, s3: s3server, buckets, apiKey: API_KEY, apiPort: port, backendUrl: backend.url, backendKey: 'bench', logLevel: o.logLevel });
  const total = Math.round(o.rate * o.seconds);
  const realCount = Math.ceil(total / o.realEvery);
  process.stdout.write(`uploading ${realCount} copies of a 2 s 640x360 clip, starting the mesh...\n`);
  const clip = await readFile(await makeClip(join(work.path, 'clip.mp4'), { width: 640, height: 360, seconds: 2, audio: true }));
  const s3 = createS3(s3ClientConfig(s3server));
  for (let i = 0; i < realCount; i += 20) await Promise.all(Array.from({ length: Math.min(20, realCount - i) }, (_, j) => putObject(s3, { bucket: buckets.input, key: `bench/real-${i + j}.mp4` }, clip)));
  const profile: Record<string, string> = o.profile ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${o.profile}` } : {};
  const logFile = process.env['BENCH_LOGS'] ? createWriteStream(process.env['BENCH_LOGS']) : undefined;
  const mesh = await startMesh({ env, serviceEnv: (name) => (name === 'ingest-api' ? profile : {}), onLine: (id, line) => logFile?.write(`${formatLogLine(id, line)}\n`) });
  const nc = await connect({ servers: nats.url, name: 'bench-api' });
  const jsm = await jetstreamManager(nc);
  const mongoClient = await new MongoClient(mongo.uri).connect();
  const meta: Cursor = mongoClient.db().collection('projection');
  try {
    // Warm-up: a few jobs through the API, so the first requests measure the API and not its first JIT.
    for (let i = 0; i < 20; i++) await call(new Agent({ keepAlive: false }), port, 'POST', '/video/encoding', JSON.stringify({ object_key: `bench/warm-${i}.mp4`, base_url: 'https://cdn.example.test/warm/', video_id: `warm-${i}`, has_audio: true }));
    await waitCaughtUp(jsm, meta, 30_000);

    const samples: Sample[] = [];
    const t0 = performance.now();
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const s = await sample(jsm, meta, performance.now() - t0).catch(() => null);
        if (s) samples.push(s);
        await new Promise((r) => setTimeout(r, 100));
      }
    })();

    // 1. The burst, open loop.
    const agent = new Agent({ keepAlive: true, maxSockets: 256 });
    const posts: Promise<{ status: number; text: string; ms: number } | { status: -1; text: string; ms: number }>[] = [];
    for (let i = 0; i < total; i++) {
      const due = t0 + (i * 1000) / o.rate;
      const wait = due - performance.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      const real = i % o.realEvery === 0;
      const key = real ? `bench/real-${i / o.realEvery}.mp4` : `bench/missing-${i}.mp4`;
      const body = JSON.stringify({ object_key: key, base_url: `https://cdn.example.test/${key}/`, video_id: `burst-${i}`, has_audio: true });
      posts.push(call(agent, port, 'POST', '/video/encoding', body).catch((err: Error) => ({ status: -1 as const, text: err.message, ms: NaN })));
    }
    const sentIn = performance.now() - t0;
    const answers = await Promise.all(posts);
    const burstEnd = performance.now() - t0;
    const lastSeqAtEnd = (await jsm.streams.info(STREAMS.events.name)).state.last_seq;
    // On the MongoDB stand-in the projector can fall behind for good (see the stand-in line below): then the
    // figures say how far behind it stayed, and the reads still run.
    let caughtUpAt: number | null = null;
    try {
      caughtUpAt = (await waitCursor(meta, lastSeqAtEnd, o.catchUpSeconds * 1000)) ? performance.now() - t0 : null;
    } finally {
      sampling = false;
      await sampler;
    }
    const behindAfter = caughtUpAt === null ? lastSeqAtEnd - (await sample(jsm, meta, 0)).cursor : 0;
    agent.destroy();

    const ids = answers.filter((a) => a.status === 202 || a.status === 200).map((a) => JSON.parse(a.text) as string);
    const postStatuses = count(answers.map((a) => a.status));
    const postMs = answers.map((a) => a.ms).filter((x) => Number.isFinite(x)).sort((a, b) => a - b);

    // 3. Reads, as fast as they come, from two threads.
    process.stdout.write(`reading statuses for ${o.readSeconds} s with ${o.readers} connections...\n`);
    const halves = await Promise.all(
      [Math.ceil(o.readers / 2), Math.floor(o.readers / 2)].filter((n) => n > 0).map(
        (readers) =>
          new Promise<Reads>((resolve, reject) => {
            const w = new Worker(new URL(import.meta.url), { workerData: { port, ids, readers, untilMs: o.readSeconds * 1000 } });
            w.once('message', resolve);
            w.once('error', reject);
          }),
      ),
    );
    const readMs = Math.max(...halves.map((h) => h.elapsedMs));
    const getMs = halves.flatMap((h) => h.latencies).sort((a, b) => a - b);
    const getStatuses: Record<number, number> = {};
    for (const h of halves) for (const [s, n] of Object.entries(h.statuses)) getStatuses[Number(s)] = (getStatuses[Number(s)] ?? 0) + n;

    const api = mesh.processes.find((p) => p.name === 'ingest-api')!;
    const metrics = parseMetrics(await (await fetch(`http://127.0.0.1:${api.metricsPort}/metrics`)).text());
    const part = (name: string) => metrics.get(`mesh_projector_batch_seconds_sum{part="${name}"}`) ?? 0;
    const batches = metrics.get('mesh_projector_batch_seconds_count{part="store"}') ?? 0;
    const hits = metrics.get('mesh_view_cache_reads_total{result="hit"}') ?? 0;
    const misses = metrics.get('mesh_view_cache_reads_total{result="miss"}') ?? 0;

    // What one write costs the store now, with every job of the run in it: the projector pays it per job per batch.
    const jobsColl = mongoClient.db().collection<{ _id: string }>((await meta.findOne({ _id: 'jobs' }))?.collection ?? 'jobs');
    const docs = await jobsColl.countDocuments();
    const probeDoc = (await jobsColl.findOne({}))!;
    let t = performance.now();
    const found = await jobsColl.findOne({ _id: probeDoc._id });
    const findMs = performance.now() - t;
    t = performance.now();
    await jobsColl.replaceOne({ _id: probeDoc._id }, found!);
    const replaceMs = performance.now() - t;

    const peakBehind = Math.max(0, ...samples.map((s) => s.behind));
    const peakLag = Math.max(0, ...samples.map((s) => s.lagMs));
    const postRate = answers.length / (sentIn / 1000);
    const getRate = getMs.length / (readMs / 1000);
    const mark = (ok: boolean) => (ok ? 'met' : 'MISSED');
    const lines = [
      '',
      `POST /video/encoding: ${answers.length} sent in ${(sentIn / 1000).toFixed(1)} s (${postRate.toFixed(0)}/s asked ${o.rate}/s), answers ${fmtCounts(postStatuses)}`,
      `  latency p50 ${ms(pct(postMs, 50))}, p99 ${ms(pct(postMs, 99))}, max ${ms(postMs.at(-1) ?? NaN)}   target p99 <= 50 ms: ${mark(pct(postMs, 99) <= 50)}`,
      `GET /video/encoding/{id}: ${getMs.length} in ${(readMs / 1000).toFixed(1)} s = ${getRate.toFixed(0)} req/s on ${o.readers} connections, answers ${fmtCounts(getStatuses)}`,
      `  latency p50 ${ms(pct(getMs, 50))}, p99 ${ms(pct(getMs, 99))}   target >= 5000 req/s: ${mark(getRate >= 5000)}`,
      `projector: peak ${peakBehind} events behind, peak lag ${(peakLag / 1000).toFixed(2)} s   target <= 2 s: ${mark(peakLag <= 2000)}`,
      caughtUpAt !== null
        ? `  all ${lastSeqAtEnd} events of the burst folded ${((caughtUpAt - burstEnd) / 1000).toFixed(2)} s after its last answer`
        : `  NOT caught up ${o.catchUpSeconds} s after the burst's last answer: ${behindAfter} of its ${lastSeqAtEnd} events still to fold`,
      `  its time, over ${batches} batches of ${metrics.get('mesh_projector_events_total') ?? 0} events: MongoDB ${part('store').toFixed(1)} s, decoding ${part('decode').toFixed(1)} s, publishing views ${part('views').toFixed(1)} s`,
      `status reads from the view cache: ${hits} hits, ${misses} misses (MongoDB)`,
      `MongoDB stand-in at ${docs} job documents: one replaceOne of a job takes ${ms(replaceMs)}, one findOne by _id ${ms(findMs)} (real MongoDB: an _id index lookup, independent of the count)`,
      `mesh: ${mesh.processes.length} processes, ${realCount} real conversions among ${total} jobs; webhooks received so far ${backend.received.length}`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await nc.close();
    await mongoClient.close();
    await mesh.stop();
    await Promise.allSettled([nats.stop(), s3server.stop(), mongo.stop(), backend.stop()]);
    await work.remove();
  }
}

/** How far the projector is behind now: events not folded, and the age of the oldest of them. */
async function sample(jsm: Jsm, meta: Cursor, at: number): Promise<Sample> {
  const [info, doc] = await Promise.all([jsm.streams.info(STREAMS.events.name), meta.findOne({ _id: 'jobs' })]);
  const cursor = doc?.seq ?? 0;
  const lastSeq = info.state.last_seq;
  let lagMs = 0;
  if (cursor < lastSeq) {
    const oldest = await jsm.streams.getMessage(STREAMS.events.name, { seq: cursor + 1 }).catch(() => null);
    if (oldest) lagMs = Math.max(0, Date.now() - oldest.time.getTime());
  }
  return { at, behind: lastSeq - cursor, lagMs, lastSeq, cursor };
}

/** True once the projector's cursor is at `seq`; false when `timeoutMs` ran out first. */
async function waitCursor(meta: Cursor, seq: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (((await meta.findOne({ _id: 'jobs' }))?.seq ?? 0) < seq) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

async function waitCaughtUp(jsm: Jsm, meta: Cursor, timeoutMs: number): Promise<void> {
  const seq = (await jsm.streams.info(STREAMS.events.name)).state.last_seq;
  if (!(await waitCursor(meta, seq, timeoutMs))) throw new Error(`the projector did not fold up to event ${seq} within ${timeoutMs / 1000} s`);
}

/** Prometheus text as `name{labels}` -> value (no HELP/TYPE lines). */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    // Every service labels its metrics with its name: left out here.
    out.set(line.slice(0, at).replace(/,?service="[^"]*"/, '').replace('{,', '{').replace('{}', ''), Number(line.slice(at + 1)));
  }
  return out;
}

function count(xs: number[]): Record<number, number> {
  const out: Record<number, number> = {};
  for (const x of xs) out[x] = (out[x] ?? 0) + 1;
  return out;
}

function fmtCounts(c: Record<number, number>): string {
  return Object.entries(c)
    .map(([s, n]) => `${s === '-1' ? 'network error' : s}: ${n}`)
    .join(', ');
}
