/**
 * The command-line client (clients/cli) against the real mesh: the `video-mesh` bin run as a child
 * process with VIDEO_MESH_URL / VIDEO_MESH_API_KEY, as a person or a script runs it. No transcoder-720
 * runs here, so a 720p source stays running (playable at 360p, waiting for its 720p) as long as the tests
 * need a running job, while a 360p one converts end to end.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stripVTControlCharacters } from 'node:util';
import { freePort, makeClip, REPO_ROOT } from '@mesh/testkit';
import { API_KEY, getJob, startSystem, waitForSettled, waitForState, type Job, type System } from './support/harness.ts';

const BIN = join(REPO_ROOT, 'clients', 'cli', 'bin', 'video-mesh.js');

let sys: System;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cli-'));
  sys = await startSystem({ apiPort: await freePort(), replicas: { 'transcoder-720': 0 } });
}, 120_000);

afterAll(async () => {
  await sys?.stop();
  await rm(dir, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface Started {
  child: ChildProcess;
  /** stdout and stderr so far. */
  output(): string;
  /** Resolves once the output so far matches `re`. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  done: Promise<Run>;
}

/** Starts `video-mesh ARGS` (stdin /dev/null: no terminal), or `command` as given (stdin a pipe). */
function start(args: string[], o: { env?: Record<string, string>; command?: [string, string[]] } = {}): Started {
  const [cmd, argv] = o.command ?? [process.execPath, [BIN, ...args]];
  const child = spawn(cmd, argv, {
    env: { ...process.env, VIDEO_MESH_URL: sys.api, VIDEO_MESH_API_KEY: API_KEY, ...o.env },
    stdio: [o.command ? 'pipe' : 'ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const waiters = new Set<() => void>();
  const changed = () => waiters.forEach((w) => w());
  child.stdout!.on('data', (c: Buffer) => ((stdout += c), changed()));
  child.stderr!.on('data', (c: Buffer) => ((stderr += c), changed()));
  const done = new Promise<Run>((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
  return {
    child,
    output: () => stdout + stderr,
    waitFor(re, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          // Matched as a person reads it: without the terminal's colours and cursor moves.
          const m = stripVTControlCharacters(stdout + stderr).match(re);
          if (!m) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(m);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no ${re} in the output within ${timeoutMs} ms:\n${stdout}\n${stderr}`));
        }, timeoutMs);
        waiters.add(check);
        void done.then(() => setTimeout(check, 0));
        check();
      });
    },
    done,
  };
}

const cli = (args: string[], env?: Record<string, string>) => start(args, env ? { env } : {}).done;

describe('submit', () => {
  it('uploads a generated clip with progress, follows each stage, ends with exit 0 and prints URLs that fetch', async () => {
    const clip = await makeClip(join(dir, 'small clip.mp4'), { width: 640, height: 360, seconds: 3, audio: true });
    const run = await cli(['submit', clip, '--video-id', 'cli-small']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    // stdout is a pipe: plain lines, no bars or escape codes.
    expect(run.stdout).not.toMatch(/\x1b\[/);
    expect(run.stdout).toMatch(/^uploading small clip\.mp4 \(\d+(\.\d)? KB\)$/m);
    expect(run.stdout).toMatch(/^ {2}upload 100% /m);
    const taskId = run.stdout.match(/^submitted: task ([0-9a-f-]{36}) \(video id cli-small\)$/m)?.[1];
    expect(taskId).toBeDefined();
    for (const stage of ['download', 'transcode-360p', 'package', 'upload', 'thumbnail']) expect(run.stdout).toMatch(new RegExp(`^ {2}${stage}: done$`, 'm'));
    expect(run.stdout).toMatch(/^ {2}transcode-360p: running/m);
    expect(run.stdout).toMatch(new RegExp(`^SUCCESS: job ${taskId} is complete \\(360p\\)$`, 'm'));

    const link = (name: string) => run.stdout.match(new RegExp(`^ {2}${name}: +(https?://\\S+)$`, 'm'))?.[1];
    const job = await waitForSettled(sys, taskId!, ['complete']);
    expect(link('manifest')).toBe(job['manifest'].url);
    expect(link('HLS')).toBe(job['hls'].url);
    expect(link('dashboard')).toBe(`${sys.api}/#/jobs/${taskId}`);
    const manifest = await fetch(link('manifest')!);
    expect(manifest.status).toBe(200);
    expect(await manifest.text()).toContain('<MPD');
    expect((await fetch(link('HLS')!)).status).toBe(200);
    const thumbnail = await fetch(link('thumbnail')!);
    expect(thumbnail.status).toBe(200);
    // A JPEG: what the thumbnailer wrote under the video id.
    expect([...new Uint8Array(await thumbnail.arrayBuffer()).subarray(0, 2)]).toEqual([0xff, 0xd8]);
    expect(link('thumbnail')).toMatch(/\/cli-small$/);

    // The settled job, for scripts: status and watch --json parse, and say the same.
    const status = await cli(['--json', 'status', taskId!]);
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ task_id: taskId, task_status: 'SUCCESS', state: 'complete', thumbnail: { url: link('thumbnail') } });
    const watched = await cli(['watch', taskId!, '--json']);
    expect(watched.code).toBe(0);
    expect(JSON.parse(watched.stdout)).toMatchObject({ task_id: taskId, task_status: 'SUCCESS' });
  });

  it('a text file ends with exit 1 and the job\'s reason; with --json its status parses', async () => {
    const text = join(dir, 'notes.mp4');
    await writeFile(text, 'just some text, no frames here\n'.repeat(200));
    const run = await cli(['submit', text, '--json']);
    expect(run.code).toBe(1);
    const task = JSON.parse(run.stdout) as Job;
    expect(task).toMatchObject({ task_status: 'FAILURE', state: 'failed', error: { stage: 'download', code: 'NOT_A_VIDEO' } });
    expect(run.stderr.trim().split('\n')).toEqual([`error: job ${task['task_id']} failed at download (NOT_A_VIDEO): ${task['task_result']}`]);
    expect(run.stderr).toMatch(/not a video/);
  });

  it('--no-wait --json answers what was submitted at once', async () => {
    const text = join(dir, 'nowait.txt');
    await writeFile(text, 'not a video either\n');
    const run = await cli(['submit', text, '--no-wait', '--json', '--video-id', 'nowait-1']);
    expect(run.code).toBe(0);
    const body = JSON.parse(run.stdout) as Record<string, string>;
    expect(body).toMatchObject({ video_id: 'nowait-1', has_audio: true, object_key: expect.stringMatching(/^uploads\/[0-9a-f-]{36}\/nowait\.txt$/) });
    // The default base_url serves the package from where the mesh writes it.
    expect(body['base_url']).toBe(`${sys.s3server.endpoint}/e2e-output/${body['object_key']}/`);
    expect((await getJob(sys, body['task_id']!))['object_key']).toBe(body['object_key']);
  });
});

describe('bad input', () => {
  it('a wrong key is exit 3 with the API\'s reason', async () => {
    const run = await cli(['queues'], { VIDEO_MESH_API_KEY: 'not-the-key' });
    expect(run.code).toBe(3);
    expect(run.stderr).toBe('error: the API refused the key (403: invalid ApiKey)\n');
  });

  it('an unknown task is exit 2 with the API\'s reason', async () => {
    const run = await cli(['status', '6f1c2a8e-0000-4000-8000-000000000000']);
    expect(run.code).toBe(2);
    expect(run.stderr).toBe('error: no task 6f1c2a8e-0000-4000-8000-000000000000\n');
  });
});

describe('a running job', () => {
  let taskId: string;
  // Playable at 360p once that rung is published; never complete without its 720p.
  const RUNNING = ['processing', 'playable'];

  it('Ctrl-C without a terminal leaves the job running and says how to cancel it', async () => {
    // 720p: no transcoder-720 runs, so the job never completes.
    const clip = await makeClip(join(dir, 'waits.mp4'), { width: 1280, height: 720, seconds: 2 });
    const submitting = start(['submit', clip]);
    taskId = (await submitting.waitFor(/submitted: task ([0-9a-f-]{36})/))[1]!;
    await submitting.waitFor(/transcode-360p: done/);
    submitting.child.kill('SIGINT');
    const run = await submitting.done;
    expect(run.code).toBe(130);
    expect(run.stderr).toBe(`error: interrupted: job ${taskId} keeps running; follow it with \`video-mesh watch ${taskId}\`, cancel it with \`video-mesh cancel ${taskId}\`\n`);
    expect(RUNNING).toContain((await getJob(sys, taskId))['state']);

    const status = await cli(['status', taskId]);
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(new RegExp(`^task ${taskId}: (STARTED \\(processing\\)|SUCCESS \\(playable\\))$`, 'm'));
    expect(status.stdout).toMatch(/^ {2}waiting for transcoder-720: /m);
  });

  it('Ctrl-C on a terminal asks whether to cancel: no (Enter, or Ctrl-C again) leaves it running, yes cancels it and ends with exit 1', async () => {
    // A pseudo-terminal from util-linux `script`: the bytes written to its stdin are typed on the terminal.
    const onTerminal = () => start([], { command: ['script', ['-qfec', `exec ${process.execPath} ${BIN} watch ${taskId}`, '/dev/null']], env: { SHELL: '/bin/sh', TERM: 'xterm', COLUMNS: '120' } });
    const first = onTerminal();
    // The bars are drawn: the terminal is seen as one.
    await first.waitFor(/transcode-360p\s+\[[█░]+\] 100%/);
    first.child.stdin!.write('\x03');
    await first.waitFor(/Cancel job [0-9a-f-]{36}\? \(y\/N\)/);
    first.child.stdin!.write('\r');
    const left = await first.done;
    expect(left.code).toBe(130);
    expect(left.stdout).toContain(`error: interrupted: job ${taskId} keeps running`);
    expect(RUNNING).toContain((await getJob(sys, taskId))['state']);

    // Ctrl-C again at the question is a no too.
    const twice = onTerminal();
    await twice.waitFor(/transcode-360p\s+\[[█░]+\] 100%/);
    twice.child.stdin!.write('\x03');
    await twice.waitFor(/Cancel job [0-9a-f-]{36}\?/);
    twice.child.stdin!.write('\x03');
    expect((await twice.done).code).toBe(130);
    expect(RUNNING).toContain((await getJob(sys, taskId))['state']);

    const second = onTerminal();
    await second.waitFor(/transcode-360p\s+\[[█░]+\] 100%/);
    second.child.stdin!.write('\x03');
    await second.waitFor(/Cancel job [0-9a-f-]{36}\?/);
    expect(RUNNING).toContain((await getJob(sys, taskId))['state']);
    second.child.stdin!.write('y\r');
    const run = await second.done;
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/cancelling job/);
    expect(run.stdout).toContain(`error: job ${taskId} was cancelled: cancelled by the client`);
    expect((await waitForState(sys, taskId, ['cancelled'], 5_000))['task_status']).toBe('FAILURE');
  }, 120_000);

  it('retry runs it again and cancel stops it; watch of the cancelled job is exit 1, its --json parses', async () => {
    const retried = await cli(['retry', taskId]);
    expect(retried.code).toBe(0);
    expect(retried.stdout).toBe(`job ${taskId} runs again; follow it with \`video-mesh watch ${taskId}\`\n`);
    expect((await getJob(sys, taskId))['attempt']).toBe(2);
    const again = await cli(['retry', taskId]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/^error: only a FAILED task can be retried/);

    const cancelled = await cli(['cancel', taskId, '--json']);
    expect(cancelled.code).toBe(0);
    expect(JSON.parse(cancelled.stdout)).toEqual({ task_id: taskId, cancelled: true });
    await waitForState(sys, taskId, ['cancelled'], 10_000);
    const watched = await cli(['watch', taskId, '--json']);
    expect(watched.code).toBe(1);
    expect(JSON.parse(watched.stdout)).toMatchObject({ task_id: taskId, state: 'cancelled', attempt: 2, task_result: 'cancelled by the client' });
  });
});

describe('operators', () => {
  it('queues and dead-letters print tables, or JSON that parses', async () => {
    const table = await cli(['queues']);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^stage +waiting +held +idle pulls +replicas$/m);
    expect(table.stdout).toMatch(/^downloader +\d+ +\d+ +\d+ +attached$/m);
    expect(table.stdout).toMatch(/^dead letters: \d+$/m);
    const json = await cli(['queues', '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ queues: expect.arrayContaining([expect.objectContaining({ consumer: 'transcoder-720', attached: false })]) });

    const letters = await cli(['dead-letters', '--json']);
    expect(letters.code).toBe(0);
    expect(JSON.parse(letters.stdout)).toEqual({ dead_letters: expect.any(Array) });
    const unknown = await cli(['dead-letters', '--redrive', '999999']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/^error: .*999999/);
  });
});
