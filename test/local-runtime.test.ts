/**
 * `npm start` as a new user meets it: `node scripts/local.ts` as a real process, on free ports and a temp
 * data dir. A hung transcoder-720 (SIGSTOP) shows as a stalled stage in /admin/queues and in the job's
 * status while the job is playable at 360p; the same transcoder SIGKILLed mid-encode is reported and
 * restarted, and the job completes. The key, set in the environment, is never printed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, makeClip, REPO_ROOT, tempDir } from '@mesh/testkit';

const SECRET = 'a-key-the-user-set-in-the-environment-0123456789';
/** Short, so the killed transcoder's message comes back to its restarted replica within seconds. */
const ACK_WAIT_MS = 4000;

let local: ChildProcess;
let data: { path: string; remove(): Promise<void> };
let api: string;
const output: string[] = [];
/** FFmpeg processes the test kills itself: killed again at the end in case the test failed first. */
const orphans: number[] = [];
const headers = { ApiKey: SECRET, 'content-type': 'application/json' };

// eslint-disable-next-line no-control-regex
const plain = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, '');

async function until<T>(what: string, get: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs: number, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await get();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}\n--- last output ---\n${output.slice(-40).join('\n')}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Processes whose parent is `ppid` (from /proc), with their command lines. */
function childrenOf(ppid: number): { pid: number; cmd: string }[] {
  const found: { pid: number; cmd: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // The command name is in parentheses and may hold spaces: the parent pid is the second field after it.
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (parent === ppid) found.push({ pid: Number(entry), cmd: readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ') });
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

const transcoder720 = () => childrenOf(local.pid!).find((p) => p.cmd.includes(join('services', 'transcoder-720', 'src', 'main.ts')))?.pid;

async function getJson<T>(path: string): Promise<T> {
  const res = await fetch(`${api}${path}`, { headers });
  if (!res.ok) throw new Error(`GET ${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}
type Queue = { consumer: string; pending: number; ack_pending: number; waiting: number; attached: boolean; stalled: boolean };
type Job = { state: string; renditions: string[]; waiting_for: { stage: string; service: string; reason: string }[]; stages: Record<string, { state: string }> };
const queue720 = async () => (await getJson<{ queues: Queue[] }>('/admin/queues')).queues.find((q) => q.consumer === 'transcoder-720')!;

beforeAll(async () => {
  data = await tempDir('local-runtime');
  const port = await freePort();
  api = `http://127.0.0.1:${port}`;
  const env: Record<string, string | undefined> = { ...process.env };
  // Nothing from the developer's shell points this run elsewhere.
  for (const name of ['NATS_URL', 'MONGODB_URI', 'S3_ENDPOINT', 'MAIN_API_ENDPOINT', 'ADMIN_API_KEY', 'OTEL_EXPORTER_OTLP_ENDPOINT', 'HOST']) delete env[name];
  Object.assign(env, {
    APP_API_KEY: SECRET,
    PORT: String(port),
    LOCAL_NATS_PORT: String(await freePort()),
    LOCAL_S3_PORT: String(await freePort()),
    LOCAL_MONGO_PORT: String(await freePort()),
    LOCAL_WEBHOOK_PORT: String(await freePort()),
    DATA_DIR: data.path,
    SAMPLE: '0',
    ACK_WAIT_MS: String(ACK_WAIT_MS),
    LOG_LEVEL: 'info',
  });
  local = spawn(process.execPath, [join(REPO_ROOT, 'scripts', 'local.ts')], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  for (const stream of [local.stdout!, local.stderr!]) {
    let rest = '';
    stream.on('data', (chunk: Buffer) => {
      const lines = (rest + chunk.toString()).split('\n');
      rest = lines.pop()!;
      output.push(...lines.map(plain));
    });
  }
  // About 10 s on an idle machine; much more when other suites share the two cores.
  await until('the mesh is up and serving', () => output.some((l) => l.includes('Serving until Ctrl-C.')) || local.exitCode !== null, 150_000);
  if (local.exitCode !== null) throw new Error(`scripts/local.ts exited with ${local.exitCode}:\n${output.slice(-40).join('\n')}`);
}, 160_000);

afterAll(async () => {
  for (const pid of orphans) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already done.
    }
  }
  if (local && local.exitCode === null) {
    const exited = new Promise((resolve) => local.once('exit', resolve));
    local.kill('SIGINT');
    const timer = setTimeout(() => local.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(timer);
  }
  await data?.remove();
}, 30_000);

describe('npm start (scripts/local.ts)', () => {
  it('prints the dashboard and API addresses, and names a key from the environment without printing it', () => {
    const text = output.join('\n');
    expect(text).toContain(`Dashboard: ${api}/`);
    expect(text).toContain('ApiKey: the APP_API_KEY you set');
    expect(text).toContain(`curl -s ${api}/video/encoding/<task_id> -H "ApiKey: $APP_API_KEY"`);
    expect(text).not.toContain(SECRET);
  });

  it('shows a stage with work and no replica, then reports and restarts a killed service, and the job completes', async () => {
    // A hung transcoder-720: alive (nothing to restart), but it asks for no work.
    const hung = transcoder720()!;
    expect(hung).toBeGreaterThan(0);
    process.kill(hung, 'SIGSTOP');

    const clip = await makeClip(join(data.path, 'clip.mp4'), { width: 1280, height: 720, seconds: 4, audio: true });
    const upload = await (await fetch(`${api}/uploads`, { method: 'POST', headers, body: JSON.stringify({ filename: 'clip.mp4' }) })).json() as { object_key: string; upload_url: string };
    expect((await fetch(upload.upload_url, { method: 'PUT', headers: { 'content-type': 'video/mp4' }, body: await readFile(clip) })).ok).toBe(true);
    const submitted = await fetch(`${api}/video/encoding`, { method: 'POST', headers, body: JSON.stringify({ object_key: upload.object_key, base_url: 'https://cdn.example.test/clip/', video_id: 'clip', has_audio: true }) });
    const taskId = (await submitted.json()) as string;

    // Playable at 360p, its 720p work waiting with no replica: the job says so, and so do the queues.
    const waiting = await until(
      'the job playable at 360p and waiting for transcoder-720',
      async () => {
        const job = await getJson<Job>(`/video/encoding/${taskId}`);
        return job.state === 'playable' && job.waiting_for.some((w) => w.service === 'transcoder-720') && job;
      },
      30_000,
      250,
    );
    expect(waiting.renditions).toEqual(['360p']);
    expect(waiting.waiting_for).toContainEqual({ stage: 'transcode-720p', service: 'transcoder-720', reason: expect.stringMatching(/no transcoder-720 replica is attached/) });
    // The 720p work waits in the queue, or was handed to the pull the process had open when it hung: held, with no report since.
    const stalled = await queue720();
    expect(stalled).toMatchObject({ waiting: 0, attached: false, stalled: true });
    expect(stalled.pending + stalled.ack_pending).toBe(1);

    // It wakes up, takes the work, and dies (kill -9) while FFmpeg encodes the 720p.
    process.kill(hung, 'SIGCONT');
    const ffmpeg = await until('transcoder-720 running FFmpeg', () => childrenOf(hung).find((p) => p.cmd.startsWith('ffmpeg')), 20_000, 50);
    orphans.push(ffmpeg.pid);
    process.kill(hung, 'SIGKILL');
    // Its FFmpeg too, as when a container is killed: it would only compete for the CPU.
    process.kill(ffmpeg.pid, 'SIGKILL');
    await until('the exit reported', () => output.some((l) => l.includes('supervisor') && l.includes('transcoder-720 exited (signal SIGKILL); restarting in 1 s')), 5000);
    const back = await until('the service back', () => output.map((l) => /transcoder-720 back \(pid (\d+)\)/.exec(l)?.[1]).find(Boolean), 20_000);
    const restarted = Number(back);
    expect(restarted).not.toBe(hung);
    expect(transcoder720()).toBe(restarted);
    await until('transcoder-720 attached again', async () => (await queue720()).attached, 10_000, 200);

    // The killed replica's message comes back after ack_wait to the restarted one: the job completes.
    const done = await until('the job complete', async () => {
      const job = await getJson<Job>(`/video/encoding/${taskId}`);
      return job.state === 'complete' && job;
    }, 45_000, 250);
    expect(done.renditions.sort()).toEqual(['360p', '720p']);
    expect(done.waiting_for).toEqual([]);
    expect(await queue720()).toMatchObject({ pending: 0, ack_pending: 0, stalled: false });
    expect(output.join('\n')).not.toContain(SECRET);
  }, 120_000);
});
