/**
 * `npm run bench [-- file] [--runs 3]`: the mesh against the same work done by hand, measured in the same run.
 *
 * (a) raw: the same ffprobe, FFmpeg (720p, then 360p) and Shaka Packager commands the services build,
 *     run one after another on local files: first playable = 720p encoded + packaged; final = both.
 * (b) mesh: the eight services as processes on local servers; time from POST to the first playable
 *     manifest and to the final one, from the job's own timestamps (GET polled once a second).
 * Rounds alternate raw and mesh, and the medians are compared: on a shared 2-core VM one encode can
 * take 15% longer than the same encode a minute later, so a single pair would measure the noise.
 * Input: the given file, or a generated 60 s 1080p30 clip with audio. BENCH_LOGS=<file> keeps the
 * services' log lines (at info level).
 */
import { createWriteStream, readFileSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createLogger, DEFAULT_LADDER, type Rendition } from '@mesh/common';
import { packagerArgs, planMedia, probeFile, runTool, transcodeArgs } from '@mesh/media';
import { createS3, putObject } from '@mesh/storage';
import { formatLogLine, freePort, makeClip, meshEnv, startMesh, startMongo, startNats, startS3, startWebhookReceiver, tempDir } from '@mesh/testkit';

const log = createLogger('bench', 'warn');
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const { values: opts, positionals } = parseArgs({ allowPositionals: true, options: { runs: { type: 'string', default: '3' } } });

interface RawResult {
  firstMs: number;
  finalMs: number;
  steps: Record<string, number>;
  durationSec: number;
}
interface MeshResult {
  firstMs: number;
  finalMs: number;
  stages: Record<string, { start: number; end: number }>;
}

async function main() {
  const work = await tempDir('bench');
  let input = positionals[0];
  if (!input) {
    process.stdout.write('generating a 60 s 1920x1080 30 fps clip with audio...\n');
    input = await makeClip(join(work.path, 'source.mp4'), { width: 1920, height: 1080, seconds: 60, audio: true });
  }
  const mesh = await startBenchMesh(input);
  const raws: RawResult[] = [];
  const meshes: MeshResult[] = [];
  try {
    for (let i = 1; i <= Number(opts.runs); i++) {
      raws.push(await rawPath(input, join(work.path, `raw-${i}`)));
      meshes.push(await mesh.run(i));
      process.stdout.write(`round ${i}: raw ${secs(raws.at(-1)!.firstMs)} / ${secs(raws.at(-1)!.finalMs)}, mesh ${secs(meshes.at(-1)!.firstMs)} / ${secs(meshes.at(-1)!.finalMs)} (first playable / final)\n`);
    }
  } finally {
    await mesh.stop();
  }
  await work.remove();

  const raw = { firstMs: median(raws.map((r) => r.firstMs)), finalMs: median(raws.map((r) => r.finalMs)) };
  const m = { firstMs: median(meshes.map((r) => r.firstMs)), finalMs: median(meshes.map((r) => r.finalMs)) };
  // The round whose mesh final time is the median shows the stage breakdown.
  const shown = meshes.find((r) => r.finalMs === m.finalMs)!;
  const row = (name: string, r: number, x: number) => `${name.padEnd(26)} ${secs(r).padStart(9)} ${secs(x).padStart(9)} ${(x / r).toFixed(2).padStart(7)}x`;
  console.log(`\ninput: ${input === positionals[0] ? input : 'generated 60 s 1080p30 with audio'}, ${raws[0]!.durationSec.toFixed(1)} s; medians of ${raws.length} alternating rounds`);
  console.log(`${''.padEnd(26)} ${'raw'.padStart(9)} ${'mesh'.padStart(9)} ${'mesh/raw'.padStart(8)}`);
  console.log(row('first playable manifest', raw.firstMs, m.firstMs));
  console.log(row('final manifest', raw.finalMs, m.finalMs));
  const steps = Object.keys(raws[0]!.steps);
  console.log('\nraw steps (median):', steps.map((k) => `${k} ${secs(median(raws.map((r) => r.steps[k]!)))}`).join(', '));
  console.log('mesh stages (start -> done, from POST; the median round):');
  for (const [stage, t] of Object.entries(shown.stages)) console.log(`  ${stage.padEnd(16)} ${secs(t.start).padStart(7)} -> ${secs(t.end).padStart(7)}  (${secs(t.end - t.start)})`);
  // A hop: from one stage's done event to the next stage's started event, i.e. publish, queue, pull, validate.
  const st = shown.stages;
  const hop = (from: string, to: string) => (st[from] && st[to] ? `${from} -> ${to} ${Math.round(st[to].start - st[from].end)} ms` : undefined);
  const lastTranscode = ['transcode-720p', 'transcode-360p'].filter((s) => st[s]).sort((a, b) => st[b]!.end - st[a]!.end)[0]!;
  const hops = [hop('download', 'transcode-720p'), hop('download', 'transcode-360p'), hop('download', 'thumbnail'), hop(lastTranscode, 'package'), hop('package', 'upload')].filter(Boolean);
  console.log(`overhead per hop: ${hops.join(', ')}`);
  console.log('peak RSS per service:', Object.entries(mesh.rss()).map(([k, v]) => `${k} ${v} MB`).join(', '));
}

async function rawPath(input: string, dir: string): Promise<RawResult> {
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

async function startBenchMesh(input: string) {
  const buckets = { input: 'bench-in', output: 'bench-out', thumbnails: 'bench-thumbs', work: 'bench-work' };
  const [nats, s3server, mongo, backend] = await Promise.all([startNats(), startS3({ buckets: Object.values(buckets) }), startMongo(), startWebhookReceiver()]);
  const port = await freePort();
  const logFile = process.env['BENCH_LOGS'] ? createWriteStream(process.env['BENCH_LOGS']) : undefined;
  const env = meshEnv({ natsUrl: nats.url, mongoUri: mongo.uri, s3: s3server, buckets, apiKey: 'bench', apiPort: port, backendUrl: backend.url, backendKey: 'bench', logLevel: logFile ? 'info' : 'warn' });
  const mesh = await startMesh({ env, ...(logFile ? { onLine: (id: string, line: string) => logFile.write(`${formatLogLine(id, line)}\n`) } : {}) });
  const s3 = createS3({ endpoint: s3server.endpoint, region: 'us-east-1', credentials: { accessKeyId: s3server.accessKeyId, secretAccessKey: s3server.secretAccessKey } });
  const source = await readFile(input);
  const api = `http://127.0.0.1:${port}`;
  const headers = { ApiKey: 'bench', 'content-type': 'application/json' };

  return {
    async run(round: number): Promise<MeshResult> {
      const key = `bench/round-${round}.mp4`;
      await putObject(s3, { bucket: buckets.input, key }, source);
      const started = Date.now();
      const res = await fetch(`${api}/video/encoding`, { method: 'POST', headers, body: JSON.stringify({ object_key: key, base_url: `https://cdn.example.test/${key}/`, video_id: `bench-${round}`, has_audio: true }) });
      const taskId = (await res.json()) as string;
      // The job's own timestamps tell when it became playable and complete; polling once a second, as a
      // client would, keeps the measurement from taking CPU from the encodes.
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      let job: any;
      for (;;) {
        await new Promise((r) => setTimeout(r, 1000));
        job = await (await fetch(`${api}/video/encoding/${taskId}`, { headers })).json();
        if (job.state === 'failed') throw new Error(`mesh job failed: ${JSON.stringify(job.error)}`);
        // The stage that made the job complete reports itself done a moment after.
        if (job.state === 'complete' && Object.values(job.stages as Record<string, { state: string }>).every((s) => s.state !== 'running')) break;
      }
      const t0 = Date.parse(job.created_at);
      const stages: Record<string, { start: number; end: number }> = {};
      for (const [name, s] of Object.entries(job.stages as Record<string, { startedAt: string; finishedAt: string }>)) {
        stages[name] = { start: Date.parse(s.startedAt) - t0, end: Date.parse(s.finishedAt) - t0 };
      }
      return { firstMs: Date.parse(job.playable_at) - started, finalMs: Date.parse(job.completed_at) - started, stages };
    },
    /** Peak RSS of each service process so far, in MB. */
    rss(): Record<string, number> {
      return rssOf(mesh.processes.map((p) => ({ id: p.id, pid: p.child.pid })));
    },
    async stop() {
      lastRss = rssOf(mesh.processes.map((p) => ({ id: p.id, pid: p.child.pid })));
      await mesh.stop();
      await Promise.allSettled([nats.stop(), s3server.stop(), mongo.stop(), backend.stop()]);
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

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
