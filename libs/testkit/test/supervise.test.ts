/** The supervisor of `npm start`: what exits on its own is reported and restarted with backoff; exit 78 is not. */
import { spawn } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { describeExit, restartDelayMs, RESTART_POLICY, supervise, type ExitStatus, type Supervised, type SupervisorEvent } from '../src/index.ts';

describe('restartDelayMs', () => {
  it.each([
    [1, 1000],
    [2, 2000],
    [3, 4000],
    [5, 16_000],
    [6, 30_000],
    [20, 30_000],
  ])('after %i exits in a row: %i ms', (n, ms) => {
    expect(restartDelayMs(n, RESTART_POLICY)).toBe(ms);
  });

  it('describes exits for people', () => {
    expect(describeExit({ code: null, signal: 'SIGKILL' })).toBe('signal SIGKILL');
    expect(describeExit({ code: 1, signal: null })).toBe('code 1');
    expect(describeExit({ code: 78, signal: null })).toBe('code 78: configuration error');
  });
});

/** A process that prints "ready" when it is (like a service's IPC message) and then runs `then`. */
const started: Supervised[] = [];
function run(id: string, then: string, ready = true): Supervised {
  const child = spawn(process.execPath, ['-e', `${ready ? "console.log('ready');" : ''}${then}`], { stdio: ['ignore', 'pipe', 'ignore'] });
  const exit = new Promise<ExitStatus>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const readyP = new Promise<void>((resolve) => child.stdout.on('data', (d: Buffer) => d.toString().includes('ready') && resolve()));
  const p = { id, child, exit, ready: readyP, stopRequested: false, startedAt: Date.now() };
  started.push(p);
  return p;
}
const STAY_UP = 'setInterval(() => undefined, 1000)';
const policy = { firstDelayMs: 50, maxDelayMs: 120, resetAfterMs: 10_000 };

afterEach(() => {
  for (const p of started.splice(0)) p.child.kill('SIGKILL');
});

async function until<T>(what: string, get: () => T | undefined, ms = 10_000): Promise<T> {
  for (const end = Date.now() + ms; ; await new Promise((r) => setTimeout(r, 10))) {
    const value = get();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
  }
}

describe('supervise', () => {
  it('reports a killed service with its signal, restarts it, and reports it back', async () => {
    const events: SupervisorEvent[] = [];
    const first = run('transcoder-720', STAY_UP);
    await first.ready;
    let current = first;
    supervise(first, { report: (e) => events.push(e), stopping: new AbortController().signal, policy, restart: () => (current = run('transcoder-720', STAY_UP)) });
    first.child.kill('SIGKILL');
    await until('back', () => events.find((e) => e.kind === 'back'));
    expect(events.map((e) => e.message)).toEqual(['transcoder-720 exited (signal SIGKILL); restarting in 50 ms', `transcoder-720 back (pid ${current.child.pid})`]);
    expect(current).not.toBe(first);
    expect(current.child.exitCode).toBeNull();
  });

  it('waits longer after each exit in a row, up to the cap, and again from the start after a healthy run', async () => {
    const events: SupervisorEvent[] = [];
    // Three runs that die before they are ready, then one that stays up.
    const scripts = ['process.exit(3)', 'process.exit(3)', 'process.exit(3)', STAY_UP];
    const first = run('packager', 'process.exit(1)');
    supervise(first, { report: (e) => events.push(e), stopping: new AbortController().signal, policy, restart: () => run('packager', scripts.shift()!, scripts.length === 0) });
    await until('back', () => events.find((e) => e.kind === 'back'));
    expect(events.filter((e) => e.kind === 'exited').map((e) => [describeExit(e.status), e.restartInMs])).toEqual([
      ['code 1', 50],
      ['code 3', 100],
      ['code 3', 120],
      ['code 3', 120],
    ]);

    // A run that was healthy for resetAfterMs: the next wait is the first one again.
    const healthy: SupervisorEvent[] = [];
    const long = run('uploader', 'setTimeout(() => process.exit(2), 400)');
    supervise(long, { report: (e) => healthy.push(e), stopping: new AbortController().signal, policy: { ...policy, resetAfterMs: 300 }, restart: () => run('uploader', 'setTimeout(() => process.exit(2), 400)') });
    await until('three exits', () => (healthy.filter((e) => e.kind === 'exited').length >= 3 ? true : undefined));
    expect(healthy.filter((e) => e.kind === 'exited').map((e) => e.kind === 'exited' && e.restartInMs)).toEqual([50, 50, 50]);
  });

  it('does not restart a service stopped by bad configuration (exit 78), and says why', async () => {
    const events: SupervisorEvent[] = [];
    let restarts = 0;
    const first = run('notifier', 'setTimeout(() => process.exit(78), 50)');
    supervise(first, { report: (e) => events.push(e), stopping: new AbortController().signal, policy, restart: () => (restarts++, run('notifier', STAY_UP)) });
    await first.exit;
    await new Promise((r) => setTimeout(r, 300));
    expect(restarts).toBe(0);
    expect(events).toMatchObject([{ kind: 'given_up', id: 'notifier', status: { code: 78 } }]);
    expect(events[0]!.message).toBe('notifier exited (code 78: configuration error); not restarting it: fix the setting its last lines name, then start it again');
  });

  it('leaves alone an exit that was asked for, and restarts nothing once the mesh is stopping', async () => {
    const events: SupervisorEvent[] = [];
    let restarts = 0;
    const restart = () => (restarts++, run('x', STAY_UP));
    const stopped = run('downloader', STAY_UP);
    supervise(stopped, { report: (e) => events.push(e), stopping: new AbortController().signal, policy, restart });
    stopped.stopRequested = true;
    stopped.child.kill('SIGTERM');
    await stopped.exit;

    const stopping = new AbortController();
    const dying = run('thumbnailer', STAY_UP);
    supervise(dying, { report: (e) => events.push(e), stopping: stopping.signal, policy: { ...policy, firstDelayMs: 200, maxDelayMs: 200 }, restart });
    dying.child.kill('SIGKILL');
    await until('exit reported', () => events.find((e) => e.id === 'thumbnailer'));
    stopping.abort();
    await new Promise((r) => setTimeout(r, 400));
    expect(restarts).toBe(0);
    expect(events.map((e) => e.message)).toEqual(['thumbnailer exited (signal SIGKILL); restarting in 200 ms']);
  });
});
