/**
 * What the benchmarks share: the raw path (the services' own commands, run by hand in sequence) and a
 * mesh on local servers that converts a file and reports the job's own timings.
 */
import { createWriteStream, readFileSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { createLogger, DEFAULT_LADDER, type Rendition } from '@mesh/common';
import { packagerArgs, planMedia, probeFile, runTool, transcodeArgs } from '@mesh/media';
import { createS3, putObject } from '@mesh/storage';
import { formatLogLine, freePort, meshEnv, startMesh, startMongo, startNats, s3ClientConfig, startS3, startWebhookReceiver, type ServiceName } from '@mesh/testkit';

export const log = createLogger('bench', 'warn');
export const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
/** The machine's 1-minute load average: on a shared machine, what else ran beside the measurement. */
export const load = () => `load average ${loadavg()[0]!.toFixed(1)} on ${cpus().length} CPUs`;

export interface RawResult {
  firstMs: number;
  finalMs: number;
  steps: Record<string, number>;
  durationSec: number;
}

/** Start and end of each stage, ms from the job's creation. */
export type StageTimes = Record<string, { start: number; end: number }>;

export interface MeshResult {
  taskId: string;
  firstMs: number;
  finalMs: number;
  /** Each rendition's transcode done, ms from POST. */
  renditionMs: Record<string, number>;
  stages: StageTimes;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  job: any;
}

/** The services' commands by hand, one after another: 720p, package it (first playable), 360p, package both (final). */
export async function rawPath(input: string, dir: string): Promise<RawResult> {
  await mkdir(dir, { recursive: true });
  const steps: Record<string, number> = {};
  const timed = async <T>(name: string, fn: () => Promise<T>) => {
    const t = Date.now();
    const out = await fn();
    steps[name] = Date.now() - t;
    return out;
  };
  const started = Date.now();
  const probe = await timed('ffprobe', () => probeFile(input, { log }));
  const plan = planMedia(probe, { hasAudio: true, ladder: DEFAULT_LADDER });
  const [hd, sd] = DEFAULT_LADDER;
  const pkg = async (renditions: Rendition[], name: string) => {
    const out = join(dir, `pkg-${name}`);
    await mkdir(out);
    const inputs = renditions.map((r) => ({ rendition: r, path: join(dir, `${r}.mp4`) }));
    await timed(`package ${name}`, () => runTool('packager', packagerArgs({ renditions: inputs, audioFrom: inputs[0]!.path, outDir: out, segmentDir: 'job.1', segmentSeconds: plan.segmentSeconds }), { log }));
  };
  await timed('ffmpeg 720p', () => runTool('ffmpeg', transcodeArgs({ input, output: join(dir, '720p.mp4'), probe, plan, profile: hd! }), { log }));
  await pkg(['720p'], '720p');
  const firstMs = Date.now() - started;
  await timed('ffmpeg 360p', () => runTool('ffmpeg', transcodeArgs({ input, output: join(dir, '360p.mp4'), probe, plan, profile: sd! }), { log }));
  await pkg(DEFAULT_LADDER.map((r) => r.name), 'both');
  const finalMs = Date.now() - started;
  await rm(dir, { recursive: true, force: true });
  return { firstMs, finalMs, steps, durationSec: probe.durationSec };
}

export interface BenchMeshOptions {
  /** A file that keeps the services' log lines, readable. */
  logs?: string | undefined;
  /** Every log line, parsed (services then log at info level). */
  onRecord?: (id: string, rec: Record<string, unknown>) => void;
  /** Pins replicas to CPUs (startMesh). */
  cpus?: (name: ServiceName, replica: number) => string | undefined;
  /** What one service gets on top of the mesh's environment. */
  serviceEnv?: (name: ServiceName) => Record<string, string>;
  env?: Record<string, string>;
}

export type BenchMesh = Awaited<ReturnType<typeof startBenchMesh>>;

/** The eight services on local servers; `run` converts a file and answers the job's timings. */
export async function startBenchMesh(input: string, o: BenchMeshOptions = {}) {
  const buckets = { input: 'bench-in', output: 'bench-out', thumbnails: 'bench-thumbs', work: 'bench-work' };
  const [nats, s3server, mongo, backend] = await Promise.all([startNats(), startS3({ buckets: Object.values(buckets) }), startMongo(), startWebhookReceiver()]);
  const port = await freePort();
  const logFile = o.logs ? createWriteStream(o.logs, { flags: 'a' }) : undefined;
  const verbose = Boolean(logFile || o.onRecord);
  const env = { ...meshEnv({ natsUrl: nats.url, mongoUri: mongo.uri, s3: s3server, buckets, apiKey: 'bench', apiPort: port, backendUrl: backend.url, backendKey: 'bench', logLevel: verbose ? 'info' : 'warn' }), ...o.env };
  const onLine = (id: string, line: string) => {
    logFile?.write(`${formatLogLine(id, line)}\n`);
    if (!o.onRecord) return;
    try {
      o.onRecord(id, JSON.parse(line) as Record<string, unknown>);
    } catch {
      // not a log record
    }
  };
  const mesh = await startMesh({ env, ...(verbose ? { onLine } : {}), ...(o.cpus ? { cpus: o.cpus } : {}), ...(o.serviceEnv ? { serviceEnv: o.serviceEnv } : {}) });
  const s3 = createS3(s3ClientConfig(s3server));
  const sources = new Map<string, Buffer>();
  const api = `http://127.0.0.1:${port}`;
  const headers = { ApiKey: 'bench', 'content-type': 'application/json' };

  return {
    mesh,
    /** Converts `source` (default: the bench's input) under `name`; only `renditions` when given. */
    async run(name: string, r: { source?: string; renditions?: string[] } = {}): Promise<MeshResult> {
      const file = r.source ?? input;
      if (!sources.has(file)) sources.set(file, await readFile(file));
      const key = `bench/${name}.mp4`;
      await putObject(s3, { bucket: buckets.input, key }, sources.get(file)!);
      const started = Date.now();
      const res = await fetch(`${api}/video/encoding`, { method: 'POST', headers, body: JSON.stringify({ object_key: key, base_url: `https://cdn.example.test/${key}/`, video_id: `bench-${name}`, has_audio: true, ...(r.renditions ? { renditions: r.renditions } : {}) }) });
      const taskId = (await res.json()) as string;
      // The job's own timestamps tell when it became playable and complete; polling once a second, as a
      // client would, keeps the measurement from taking CPU from the encodes.
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      let job: any;
      for (;;) {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        job = await (await fetch(`${api}/video/encoding/${taskId}`, { headers })).json();
        if (job.state === 'failed') throw new Error(`mesh job failed: ${JSON.stringify(job.error)}`);
        // The stage that made the job complete reports itself done a moment after.
        if (job.state === 'complete' && Object.values(job.stages as Record<string, { state: string }>).every((s) => s.state !== 'running')) break;
      }
      const t0 = Date.parse(job.created_at);
      const stages: StageTimes = {};
      for (const [stage, s] of Object.entries(job.stages as Record<string, { startedAt: string; finishedAt: string }>)) {
        stages[stage] = { start: Date.parse(s.startedAt) - t0, end: Date.parse(s.finishedAt) - t0 };
      }
      const renditionMs = Object.fromEntries(
        Object.entries(job.stages as Record<string, { finishedAt: string }>)
          .filter(([stage]) => stage.startsWith('transcode-'))
          .map(([stage, s]) => [stage.slice('transcode-'.length), Date.parse(s.finishedAt) - started]),
      );
      return { taskId, firstMs: Date.parse(job.playable_at) - started, finalMs: Date.parse(job.completed_at) - started, renditionMs, stages, job };
    },
    /** Peak RSS of each service process so far, in MB. */
    rss(): Record<string, number> {
      return rssOf(mesh.processes.map((p) => ({ id: p.id, pid: p.child.pid })));
    },
    async stop() {
      lastRss = rssOf(mesh.processes.map((p) => ({ id: p.id, pid: p.child.pid })));
      await mesh.stop();
      await Promise.allSettled([nats.stop(), s3server.stop(), mongo.stop(), backend.stop()]);
      logFile?.end();
    },
  };
}

let lastRss: Record<string, number> = {};
function rssOf(procs: { id: string; pid: number | undefined }[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of procs) {
    let status = '';
    try {
      status = readFileSync(`/proc/${p.pid}/status`, 'utf8');
    } catch {
      // gone
    }
    const mb = Math.round(Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024);
    out[p.id] = mb || lastRss[p.id] || 0;
  }
  return out;
}
