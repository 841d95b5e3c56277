/**
 * `npm run soak [-- --jobs 200 --kill-every 4 --bad-share 0.3 --kill-after-work 0.05]`: many small jobs, a
 * share of them bad input, while random workers are SIGKILLed and restarted, on the local servers; and
 * every worker kills itself now and then right after its work succeeded, before it recorded it done or
 * before its ack (CHAOS_KILL_AFTER_WORK): the points a kill from outside rarely hits. The mesh runs
 * supervised, as `npm start` does, so a worker that killed itself comes back. Prints what happened to
 * every job and exits non-zero if one was lost, ended wrong, or was announced twice.
 *
 *   lost                  a job that never reached a terminal state, or whose terminal state never
 *                         reached the backend
 *   wrong outcome         a good input that failed, a bad one that converted, a failure without a reason,
 *                         or a manifest without the renditions it should hold
 *   duplicate notifications
 *                         the backend received the same (task, status) twice under different
 *                         Idempotency-Keys; a repeat under the same key (a notifier killed after the
 *                         backend answered, before its ack) is at-least-once delivery the backend drops,
 *                         and is counted apart
 *
 * Not part of `npm test`: it takes minutes and its point is volume and chaos, not a fixed scenario.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { createS3, getText, putObject } from '@mesh/storage';
import { freePort, makeClip, meshEnv, startMesh, startMongo, startNats, s3ClientConfig, startS3, startWebhookReceiver, tempDir, type ServiceName, type ServiceProcess } from '@mesh/testkit';
import { readMpd } from '../test/support/mpd.ts';

const run = promisify(execFile);

const { values: opts } = parseArgs({
  options: {
    jobs: { type: 'string', default: '200' },
    'kill-every': { type: 'string', default: '4' },
    'bad-share': { type: 'string', default: '0.3' },
    'timeout-min': { type: 'string', default: '20' },
    'kill-after-work': { type: 'string', default: '0.05' },
  },
});
const KILL_AFTER_WORK = Number(opts['kill-after-work']);
const JOBS = Number(opts.jobs);
const KILL_EVERY_MS = Number(opts['kill-every']) * 1000;
const BAD_SHARE = Number(opts['bad-share']);

/** Workers the chaos loop picks from: every stage service (the API is the client's door, not a worker). */
const WORKERS: ServiceName[] = ['downloader', 'transcoder-720', 'transcoder-360', 'packager', 'thumbnailer', 'uploader', 'notifier'];

interface Kind {
  name: string;
  /** Writes the input to `path`; absent: the object is never uploaded (a missing object). */
  make?: (path: string) => Promise<unknown>;
  hasAudio: boolean;
  /** Video representations the manifest must hold, or the error code the job must fail with. */
  expect: { videos: number } | { code: string };
}

const GOOD: Kind[] = [
  { name: '720p with audio', make: (p) => makeClip(p, { width: 1280, height: 720, seconds: 2, audio: true }), hasAudio: true, expect: { videos: 2 } },
  { name: '360p without audio', make: (p) => makeClip(p, { width: 640, height: 360, seconds: 2 }), hasAudio: false, expect: { videos: 1 } },
  { name: 'portrait phone clip', make: (p) => makeClip(p, { width: 1280, height: 720, seconds: 2, audio: true, rotation: 90 }), hasAudio: true, expect: { videos: 2 } },
  { name: 'shorter than a segment', make: (p) => makeClip(p, { width: 640, height: 360, seconds: 1, audio: true }), hasAudio: true, expect: { videos: 1 } },
];

const BAD: Kind[] = [
  { name: 'not media', make: (p) => writeFile(p, 'no frames here\n'.repeat(100)), hasAudio: true, expect: { code: 'NOT_A_VIDEO' } },
  { name: 'zero bytes', make: (p) => writeFile(p, ''), hasAudio: true, expect: { code: 'SOURCE_EMPTY' } },
  {
    name: 'truncated MP4',
    make: async (p) => {
      await makeClip(`${p}.full.mp4`, { width: 640, height: 360, seconds: 2, audio: true });
      const full = await readFile(`${p}.full.mp4`);
      await writeFile(p, full.subarray(0, full.length >> 1));
    },
    hasAudio: true,
    expect: { code: 'NOT_A_VIDEO' },
  },
  { name: 'missing object', hasAudio: true, expect: { code: 'SOURCE_NOT_FOUND' } },
  { name: 'audio only', make: (p) => run('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', 'sine', '-t', '2', '-c:a', 'aac', '-f', 'mp4', p]), hasAudio: true, expect: { code: 'NOT_A_VIDEO' } },
  { name: 'HLS playlist', make: (p) => writeFile(p, '#EXTM3U\n#EXTINF:10.0,\n/etc/passwd\n#EXT-X-ENDLIST\n'), hasAudio: true, expect: { code: 'NOT_A_VIDEO' } },
  { name: 'over the duration limit', make: (p) => makeClip(p, { width: 160, height: 120, seconds: 35 }), hasAudio: false, expect: { code: 'SOURCE_TOO_LONG' } },
];

interface Submitted {
  taskId: string;
  kind: Kind;
  key: string;
}

async function main() {
  const work = await tempDir('soak');
  const buckets = { input: 'soak-in', output: 'soak-out', thumbnails: 'soak-thumbs', work: 'soak-work' };
  const [nats, s3server, mongo, backend] = await Promise.all([startNats(), startS3({ buckets: Object.values(buckets) }), startMongo(), startWebhookReceiver()]);
  const port = await freePort();
  const env = {
    ...meshEnv({ natsUrl: nats.url, mongoUri: mongo.uri, s3: s3server, buckets, apiKey: 'soak', apiPort: port, backendUrl: backend.url, backendKey: 'soak', logLevel: 'warn' }),
    // A killed holder's message comes back after 5 s; limits make the long clip a bad input.
    ACK_WAIT_MS: '5000',
    MAX_SOURCE_DURATION_SEC: '30',
    CHAOS_KILL_AFTER_WORK: String(KILL_AFTER_WORK),
  };
  const serviceErrors: string[] = [];
  const selfKills = new Map<string, number>();
  const mesh = await startMesh({
    env,
    replicas: { 'transcoder-720': 2, 'transcoder-360': 2 },
    onLine: (id, line) => {
      if (line.includes('chaos: killing this process')) selfKills.set(id.split('#')[0]!, (selfKills.get(id.split('#')[0]!) ?? 0) + 1);
      if (/"level":(50|60)/.test(line)) serviceErrors.push(`${id}: ${line.slice(0, 300)}`);
    },
    // A worker that killed itself comes back, as under npm start or an orchestrator.
    supervise: { report: () => undefined, policy: { firstDelayMs: 200, maxDelayMs: 2000 } },
  });
  const s3 = createS3(s3ClientConfig(s3server));
  const api = `http://127.0.0.1:${port}`;
  const headers = { ApiKey: 'soak', 'content-type': 'application/json' };

  // Peak RSS per service, over every incarnation of it (a killed process's peak is read before the kill).
  const peakMb = new Map<string, number>();
  const samplePeak = async (p: ServiceProcess) => {
    const status = await readFile(`/proc/${p.child.pid}/status`, 'utf8').catch(() => '');
    const mb = Math.round(Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024);
    const name = p.id.split('#')[0]!;
    peakMb.set(name, Math.max(peakMb.get(name) ?? 0, mb));
  };
  const sampler = setInterval(() => void Promise.all(mesh.processes.map(samplePeak)), 1000);

  try {
    process.stdout.write('making inputs... ');
    const inputs = new Map<Kind, Buffer>();
    for (const [i, kind] of [...GOOD, ...BAD].entries()) {
      if (!kind.make) continue;
      const path = join(work.path, `input-${i}.mp4`);
      await kind.make(path);
      inputs.set(kind, await readFile(path));
    }
    console.log('done');

    // Chaos: every KILL_EVERY_MS a random worker is SIGKILLed and restarted at once, as a supervisor would.
    const kills = new Map<string, number>();
    let chaos = true;
    const chaosLoop = (async () => {
      while (chaos) {
        await new Promise((r) => setTimeout(r, KILL_EVERY_MS * (0.5 + Math.random())));
        if (!chaos) break;
        const candidates = mesh.processes.filter((p) => WORKERS.includes(p.name));
        const victim = candidates[Math.floor(Math.random() * candidates.length)]!;
        await samplePeak(victim);
        await victim.kill();
        kills.set(victim.name, (kills.get(victim.name) ?? 0) + 1);
        await mesh.respawn(victim);
      }
    })();

    // Submissions: a steady stream, bad inputs spread through it.
    const started = Date.now();
    const jobs: Submitted[] = [];
    const used = { good: 0, bad: 0 };
    for (let i = 0; i < JOBS; i++) {
      // Bad inputs spread evenly: job i is bad when that keeps the bad count at the share so far.
      const bad = used.bad < Math.round((i + 1) * BAD_SHARE);
      const kind = bad ? BAD[used.bad++ % BAD.length]! : GOOD[used.good++ % GOOD.length]!;
      const key = `soak/${String(i).padStart(3, '0')} ${kind.name}.mp4`;
      const bytes = inputs.get(kind);
      if (bytes) await putObject(s3, { bucket: buckets.input, key }, bytes, { contentType: 'video/mp4' });
      const res = await fetch(`${api}/video/encoding`, { method: 'POST', headers, body: JSON.stringify({ object_key: key, base_url: 'https://cdn.example.test/soak/', video_id: `soak-${i}`, has_audio: kind.hasAudio }) });
      if (res.status !== 200) throw new Error(`POST ${key}: ${res.status} ${await res.text()}`);
      jobs.push({ taskId: (await res.json()) as string, kind, key });
      await new Promise((r) => setTimeout(r, 100));
    }
    console.log(`submitted ${jobs.length} jobs in ${((Date.now() - started) / 1000).toFixed(0)} s; waiting for them to end`);

    // Wait until every job is terminal (or the timeout), reporting progress.
    const deadline = Date.now() + Number(opts['timeout-min']) * 60_000;
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const final = new Map<string, any>();
    let lastReport = 0;
    while (final.size < jobs.length && Date.now() < deadline) {
      for (const j of jobs) {
        if (final.has(j.taskId)) continue;
        const res = await fetch(`${api}/video/encoding/${j.taskId}`, { headers }).catch(() => undefined);
        if (res?.status !== 200) continue;
        const job = await res.json();
        if (job.state === 'complete' || job.state === 'failed') final.set(j.taskId, job);
      }
      if (Date.now() - lastReport > 15_000) {
        lastReport = Date.now();
        console.log(`  ${final.size}/${jobs.length} ended after ${((Date.now() - started) / 1000).toFixed(0)} s, ${[...kills.values()].reduce((a, b) => a + b, 0)} kills so far`);
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
    chaos = false;
    await chaosLoop;
    const elapsed = Date.now() - started;

    // Every terminal state must reach the backend; give the notifier's retries time to land.
    const expectedCalls = (j: Submitted) => (final.get(j.taskId)?.state === 'complete' ? 'SUCCESS' : 'FAILED');
    const heard = (j: Submitted) => backend.received.some((r) => (r.body as { taskId?: string; status?: string }).taskId === j.taskId && (r.body as { status?: string }).status === expectedCalls(j));
    const settle = Date.now() + 60_000;
    while (jobs.some((j) => final.has(j.taskId) && !heard(j)) && Date.now() < settle) await new Promise((r) => setTimeout(r, 500));
    await new Promise((r) => setTimeout(r, 2000));

    // Tally.
    const wrong: string[] = [];
    const failureCodes = new Map<string, number>();
    let completed = 0;
    let failedWithReason = 0;
    for (const j of jobs) {
      const job = final.get(j.taskId);
      if (!job) continue;
      const label = `${j.key} (${j.taskId})`;
      if (job.state === 'failed') {
        const code = job.error?.code ?? '?';
        failureCodes.set(code, (failureCodes.get(code) ?? 0) + 1);
        if (typeof job.task_result === 'string' && job.task_result.length > 10) failedWithReason++;
        else wrong.push(`${label}: failed without a readable reason: ${JSON.stringify(job.task_result)}`);
        if (!('code' in j.kind.expect)) wrong.push(`${label}: a good input failed: ${job.task_result}`);
        else if (code !== j.kind.expect.code) wrong.push(`${label}: failed with ${code}, expected ${j.kind.expect.code}`);
        continue;
      }
      completed++;
      if ('code' in j.kind.expect) {
        wrong.push(`${label}: converted, expected ${j.kind.expect.code}`);
        continue;
      }
      const xml = await getText(s3, { bucket: buckets.output, key: job.manifest?.key ?? `${j.key}/manifest.mpd` });
      const videos = xml ? readMpd(xml).representations.filter((r) => r.contentType === 'video').length : 0;
      if (videos !== j.kind.expect.videos) wrong.push(`${label}: manifest holds ${videos} video renditions, expected ${j.kind.expect.videos}`);
    }
    const notLost = (j: Submitted) => final.has(j.taskId) && heard(j);
    const lost = jobs.filter((j) => !notLost(j));
    // Per (task, status): the distinct Idempotency-Keys it came with, and how many calls.
    const calls = new Map<string, { keys: Set<string>; n: number }>();
    for (const r of backend.received) {
      const b = r.body as { taskId?: string; status?: string };
      const entry = calls.get(`${b.taskId}:${b.status}`) ?? { keys: new Set<string>(), n: 0 };
      entry.keys.add(String(r.headers['idempotency-key']));
      entry.n++;
      calls.set(`${b.taskId}:${b.status}`, entry);
    }
    const duplicates = [...calls.values()].reduce((sum, c) => sum + c.keys.size - 1, 0);
    const repeats = [...calls.values()].reduce((sum, c) => sum + c.n - c.keys.size, 0);
    for (const p of mesh.processes) await samplePeak(p);

    console.log(`\nsoak: ${jobs.length} jobs (${Math.round(BAD_SHARE * 100)}% bad input), a worker SIGKILLed every ~${KILL_EVERY_MS / 1000} s, ${KILL_AFTER_WORK * 100}% of finished work items killed before their done-marker or ack, ${(elapsed / 1000).toFixed(0)} s`);
    console.log(`  jobs submitted            ${jobs.length}`);
    console.log(`  completed                 ${completed}`);
    console.log(`  failed with reason        ${failedWithReason}  (${[...failureCodes].map(([c, n]) => `${c} ${n}`).join(', ')})`);
    console.log(`  lost                      ${lost.length}`);
    console.log(`  wrong outcome             ${wrong.length}`);
    console.log(`  notifications received   ${backend.received.length}`);
    console.log(`  duplicate notifications   ${duplicates}`);
    console.log(`  repeats, same key         ${repeats}  (at-least-once: the backend drops them by Idempotency-Key)`);
    console.log(`  workers killed            ${[...kills.values()].reduce((a, b) => a + b, 0)}  (${[...kills].map(([s, n]) => `${s} ${n}`).join(', ')})`);
    console.log(`  killed after their work   ${[...selfKills.values()].reduce((a, b) => a + b, 0)}  (${[...selfKills].map(([s, n]) => `${s} ${n}`).join(', ')})`);
    console.log(`  error log lines           ${serviceErrors.length}`);
    console.log(`  peak RSS per service      ${[...peakMb].map(([s, mb]) => `${s} ${mb} MB`).join(', ')}`);
    for (const j of lost) console.log(`  LOST ${j.key} (${j.taskId}): ${final.has(j.taskId) ? `ended ${final.get(j.taskId).state} but the backend never heard` : 'never ended'}`);
    for (const w of wrong) console.log(`  WRONG ${w}`);
    for (const [key, c] of calls) if (c.keys.size > 1) console.log(`  DUPLICATE ${key} received under ${c.keys.size} keys`);
    for (const e of serviceErrors.slice(0, 10)) console.log(`  ERROR ${e}`);
    process.exitCode = lost.length || wrong.length || duplicates ? 1 : 0;
  } finally {
    clearInterval(sampler);
    await mesh.stop();
    await Promise.allSettled([nats.stop(), s3server.stop(), mongo.stop(), backend.stop()]);
    await work.remove();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
