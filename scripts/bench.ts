/**
 * `npm run bench [file]`: the mesh against the same work done by hand, measured in the same run.
 *
 * (a) raw: the same ffprobe, FFmpeg (720p, then 360p) and Shaka Packager commands the services build,
 *     run one after another on local files: first playable = 720p encoded + packaged; final = both.
 * (b) mesh: the eight services as processes on local servers; time from POST to the first playable
 *     manifest and to the final one, read from GET.
 * Input: the given file, or a generated 60 s 1080p30 clip with audio.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createLogger, RENDITION_NAMES, type Rendition } from '@mesh/common';
import { packagerArgs, planMedia, probeFile, PROFILES, runTool, transcodeArgs } from '@mesh/media';
import { createS3, putObject } from '@mesh/storage';
import { freePort, makeClip, meshEnv, startMesh, startMongo, startNats, startS3, startWebhookReceiver, tempDir } from '@mesh/testkit';

const log = createLogger('bench', 'warn');
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

async function main() {
  const work = await tempDir('bench');
  let input = process.argv[2];
  if (!input) {
    process.stdout.write('generating a 60 s 1920x1080 30 fps clip with audio...\n');
    input = await makeClip(join(work.path, 'source.mp4'), { width: 1920, height: 1080, seconds: 60, audio: true });
  }
  const raw = await rawPath(input, work.path);
  const mesh = await meshPath(input);
  await work.remove();

  const row = (name: string, r: number, m: number) => `${name.padEnd(26)} ${secs(r).padStart(9)} ${secs(m).padStart(9)} ${(m / r).toFixed(2).padStart(7)}x`;
  console.log(`\ninput: ${input === process.argv[2] ? input : 'generated 60 s 1080p30 with audio'}, ${raw.durationSec.toFixed(1)} s`);
  console.log(`${''.padEnd(26)} ${'raw'.padStart(9)} ${'mesh'.padStart(9)} ${'mesh/raw'.padStart(8)}`);
  console.log(row('first playable manifest', raw.firstMs, mesh.firstMs));
  console.log(row('final manifest', raw.finalMs, mesh.finalMs));
  console.log('\nraw steps:', Object.entries(raw.steps).map(([k, v]) => `${k} ${secs(v)}`).join(', '));
  console.log('mesh stages (start -> done, from POST):');
  for (const [stage, t] of Object.entries(mesh.stages)) console.log(`  ${stage.padEnd(16)} ${secs(t.start).padStart(7)} -> ${secs(t.end).padStart(7)}  (${secs(t.end - t.start)})`);
  console.log('peak RSS per service:', Object.entries(mesh.rss).map(([k, v]) => `${k} ${v} MB`).join(', '));
}

async function rawPath(input: string, dir: string) {
  const steps: Record<string, number> = {};
  const timed = async <T>(name: string, fn: () => Promise<T>) => {
    const t = Date.now();
    const out = await fn();
    steps[name] = Date.now() - t;
    return out;
  };
  const started = Date.now();
  const probe = await timed('ffprobe', () => probeFile(input, { log }));
  const plan = planMedia(probe, { hasAudio: true });
  const pkg = async (renditions: Rendition[], name: string) => {
    const out = join(dir, `pkg-${name}`);
    await mkdir(out);
    const inputs = renditions.map((r) => ({ rendition: r, path: join(dir, `${r}.mp4`) }));
    await timed(`package ${name}`, () => runTool('packager', packagerArgs({ renditions: inputs, audioFrom: inputs[0]!.path, outDir: out, segmentSeconds: plan.segmentSeconds }), { log }));
  };
  await timed('ffmpeg 720p', () => runTool('ffmpeg', transcodeArgs({ input, output: join(dir, '720p.mp4'), probe, plan, profile: PROFILES['720p'] }), { log }));
  await pkg(['720p'], '720p');
  const firstMs = Date.now() - started;
  await timed('ffmpeg 360p', () => runTool('ffmpeg', transcodeArgs({ input, output: join(dir, '360p.mp4'), probe, plan, profile: PROFILES['360p'] }), { log }));
  await pkg([...RENDITION_NAMES], 'both');
  return { firstMs, finalMs: Date.now() - started, steps, durationSec: probe.durationSec };
}

async function meshPath(input: string) {
  const buckets = { input: 'bench-in', output: 'bench-out', thumbnails: 'bench-thumbs', work: 'bench-work' };
  const [nats, s3server, mongo, backend] = await Promise.all([startNats(), startS3({ buckets: Object.values(buckets) }), startMongo(), startWebhookReceiver()]);
  const port = await freePort();
  const env = meshEnv({ natsUrl: nats.url, mongoUri: mongo.uri, s3: s3server, buckets, apiKey: 'bench', apiPort: port, backendUrl: backend.url, backendKey: 'bench', logLevel: 'warn' });
  const mesh = await startMesh({ env });
  try {
    const s3 = createS3({ endpoint: s3server.endpoint, region: 'us-east-1', credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
    await putObject(s3, { bucket: buckets.input, key: 'bench/source.mp4' }, await readFile(input));
    const api = `http://127.0.0.1:${port}`;
    const headers = { ApiKey: 'bench', 'content-type': 'application/json' };
    const started = Date.now();
    const res = await fetch(`${api}/video/encoding`, { method: 'POST', headers, body: JSON.stringify({ object_key: 'bench/source.mp4', base_url: 'https://cdn.example.test/bench/', video_id: 'bench', has_audio: true }) });
    const taskId = (await res.json()) as string;
    let firstMs = 0;
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    let job: any;
    for (;;) {
      job = await (await fetch(`${api}/video/encoding/${taskId}`, { headers })).json();
      if (job.task_status === 'SUCCESS' && !firstMs) firstMs = Date.now() - started;
      if (job.state === 'complete' || job.state === 'failed') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const finalMs = Date.now() - started;
    if (job.state === 'failed') throw new Error(`mesh job failed: ${JSON.stringify(job.error)}`);
    // The stage that made the job complete reports itself done a moment later.
    await new Promise((r) => setTimeout(r, 1000));
    job = await (await fetch(`${api}/video/encoding/${taskId}`, { headers })).json();
    const t0 = Date.parse(job.created_at);
    const stages: Record<string, { start: number; end: number }> = {};
    for (const [name, s] of Object.entries(job.stages as Record<string, { startedAt: string; finishedAt: string }>)) {
      stages[name] = { start: Date.parse(s.startedAt) - t0, end: Date.parse(s.finishedAt) - t0 };
    }
    const rss: Record<string, number> = {};
    for (const p of mesh.processes) {
      const status = await readFile(`/proc/${p.child.pid}/status`, 'utf8').catch(() => '');
      rss[p.id] = Math.round(Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024);
    }
    return { firstMs, finalMs, stages, rss };
  } finally {
    await mesh.stop();
    await Promise.allSettled([nats.stop(), s3server.stop(), mongo.stop(), backend.stop()]);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});

