/**
 * Runs ffmpeg, ffprobe and Shaka Packager with argument arrays (never a shell), logs each command
 * shell-quoted so it can be pasted, keeps only the tail of stderr, and reports ffmpeg progress.
 *
 * Every run is bounded (limits.ts): a wall-clock budget (`timeoutMs`, TOOL_TIMEOUT) and, for encodes,
 * the source's declared duration (`declaredSec`, SOURCE_TOO_LONG). And a tool dies with its service:
 * it runs under `setpriv --pdeathsig KILL` (the kernel kills it when the service dies, even by SIGKILL,
 * even while it is paused), in a process group of its own that is resumed and killed whole when the run
 * is stopped.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { setPriority } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { execa } from 'execa';
import { InputError, MeshError, shellCommand, ToolError, type Logger } from '@mesh/common';
import { inSpan, SpanKind, toolDuration } from '@mesh/telemetry';
import { durationSlackSec } from './limits.ts';
import { yieldToUrgentEncodes, type YieldOptions } from './yield.ts';

export type Tool = 'ffmpeg' | 'ffprobe' | 'packager';

const require = createRequire(import.meta.url);

export function toolPath(tool: Tool): string {
  const env = process.env;
  if (tool === 'ffmpeg') return env['FFMPEG_PATH'] ?? 'ffmpeg';
  if (tool === 'ffprobe') return env['FFPROBE_PATH'] ?? 'ffprobe';
  // The binary itself: the package's JS wrapper exits 0 even when packaging fails.
  return env['SHAKA_PACKAGER_PATH'] ?? join(dirname(require.resolve('shaka-packager/package.json')), 'bin', `packager-${process.platform === 'darwin' ? 'osx' : 'linux'}-${process.arch === 'arm64' ? 'arm64' : 'x64'}`);
}

/** util-linux setpriv (Debian's base system has it), looked up once; absent on other systems. */
const setpriv: string | null =
  process.platform === 'linux' ? ((process.env['PATH'] ?? '/usr/bin:/bin').split(delimiter).map((d) => join(d, 'setpriv')).find((p) => existsSync(p)) ?? null) : null;

/**
 * The command that runs `cmd args` so that it dies with this process. setpriv sets the parent-death
 * signal and execs the tool (same pid, so niceness and pausing still apply to it). The signal is tied to
 * the thread that forked, which is Node's main thread (libuv spawns there): it fires when the process ends.
 */
export function deathBoundCommand(cmd: string, args: string[], setprivPath: string | null = setpriv): [string, string[]] {
  return setprivPath ? [setprivPath, ['--pdeathsig', 'KILL', '--', cmd, ...args]] : [cmd, args];
}

let warnedNoSetpriv = false;

/**
 * Whether the process `pid` runs the tool already, not setpriv: only then is its parent-death signal
 * armed (setpriv sets it just before exec). Paused before that, it would never die with its parent.
 */
function execd(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== 'setpriv';
  } catch {
    return false;
  }
}

const STDERR_TAIL = 4096;
/** After SIGTERM, a tool has this long to exit before SIGKILL. */
const KILL_GRACE_MS = 3000;

/** Process groups of tools running now: on a normal exit they go too (pdeathsig covers the rest). */
const running = new Set<number>();
process.once('exit', () => {
  for (const pid of running) signalGroup(pid, 'SIGCONT', 'SIGKILL');
});

/** Signals the tool's whole process group; a paused group acts on SIGTERM only once resumed, so SIGCONT goes first. */
function signalGroup(pid: number, ...signals: NodeJS.Signals[]): void {
  for (const sig of signals) {
    try {
      process.kill(-pid, sig);
    } catch {
      // Gone already.
    }
  }
}

/** Runs `tool` in its own span (a child of the stage's), timed for /metrics; see runToolUntraced. */
export function runTool(tool: Tool, args: string[], o: Parameters<typeof runToolUntraced>[2]): ReturnType<typeof runToolUntraced> {
  return inSpan(tool, { kind: SpanKind.INTERNAL, attributes: { 'process.executable.name': tool, ...(o.niceness ? { 'process.niceness': o.niceness } : {}) } }, async (span) => {
    const started = Date.now();
    try {
      const result = await runToolUntraced(tool, args, o);
      toolDuration.observe({ tool, result: 'ok' }, result.durationMs / 1000);
      return result;
    } catch (err) {
      toolDuration.observe({ tool, result: 'failed' }, (Date.now() - started) / 1000);
      if (err instanceof ToolError && err.exitCode !== undefined) span.setAttribute('process.exit.code', err.exitCode);
      throw err;
    }
  });
}

export interface RunOptions {
  log: Logger;
  signal?: AbortSignal;
  cwd?: string;
  onProgress?: (outSeconds: number) => void;
  /** Secrets in the arguments (presigned URLs) and what to show instead, in logs and error messages. */
  redact?: Record<string, string>;
  /** CPU niceness of the tool (0-19): lower-priority work fills the gaps of higher-priority work on a shared host. */
  niceness?: number;
  /** Pause while a more urgent encode runs on this host (see yield.ts). */
  yieldTo?: YieldOptions;
  /** Wall-clock budget (limits.ts): past it the tool is stopped and the run fails with TOOL_TIMEOUT. Time paused by yieldTo is added. */
  timeoutMs?: number;
  /**
   * The source's probed duration, for runs that report progress (`-progress pipe:1`): output past it
   * (plus durationSlackSec) stops the run with SOURCE_TOO_LONG, as does ending there.
   */
  declaredSec?: number;
  /**
   * Where in the source a progress report is, in seconds (what onProgress gets and declaredSec bounds).
   * Default: the output time. A chunk counts its frames from its start instead.
   */
  position?: (report: { outSec: number; frames: number }) => number;
}

async function runToolUntraced(tool: Tool, args: string[], o: RunOptions): Promise<{ stdout: string; stderr: string; durationMs: number }> {
  const [cmd, argv] = deathBoundCommand(toolPath(tool), args);
  if (!setpriv && process.platform === 'linux' && !warnedNoSetpriv) {
    warnedNoSetpriv = true;
    o.log.warn('setpriv (util-linux) not found: a tool outlives this service if it is killed');
  }
  const hide = (text: string) =>
    Object.entries(o.redact ?? {})
      .reduce((t, [secret, shown]) => t.replaceAll(secret, shown), text)
      // And any presigned-URL credential that slipped through (a URL cut in two by the stderr tail).
      .replace(/(X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s'"]+/gi, '$1REDACTED');
  const stoppedBySignal = () => new MeshError('TOOL_FAILED', `${tool} stopped: ${String(o.signal?.reason ?? 'cancelled')}`);
  if (o.signal?.aborted) throw stoppedBySignal();
  o.log.info({ tool, command: hide(shellCommand(cmd, argv)), ...(o.niceness ? { niceness: o.niceness } : {}) }, `running ${tool}`);
  const started = Date.now();
  const child = execa(cmd, argv, {
    ...(o.cwd ? { cwd: o.cwd } : {}),
    // A process group of its own, so a stop reaches everything the tool started. (execa's exit cleanup
    // does not cover detached children: the 'exit' hook above and the parent-death signal do.)
    detached: true,
    stdin: 'ignore',
    buffer: false,
    reject: false,
    encoding: 'utf8',
  });
  const pid = child.pid;
  if (pid) running.add(pid);
  // Settled once it exited and its output was read (execa exposes no exit event). Between the two, a
  // stop still signals the group: its id is not reused that fast (Linux hands out pids in sequence).
  let exited = false;
  void child.then(() => (exited = true));
  if (o.niceness && pid) {
    try {
      setPriority(pid, o.niceness);
    } catch {
      // The process may already be gone; it then fails or finishes on its own.
    }
  }

  let stopped: Error | undefined;
  let killTimer: NodeJS.Timeout | undefined;
  const stopYielding = o.yieldTo && pid ? yieldToUrgentEncodes(pid, o.yieldTo, o.log, setpriv ? () => execd(pid) : undefined) : undefined;
  /** Stops the run for `why`: resumes the group if paused, SIGTERM, SIGKILL after a grace. */
  const stop = (why: Error) => {
    if (stopped || !pid) return;
    stopped = why;
    if (exited) return;
    stopYielding?.();
    signalGroup(pid, 'SIGCONT', 'SIGTERM');
    killTimer = setTimeout(() => signalGroup(pid, 'SIGCONT', 'SIGKILL'), KILL_GRACE_MS);
  };
  const onAbort = () => stop(stoppedBySignal());
  o.signal?.addEventListener('abort', onAbort, { once: true });
  const budgetMs = o.timeoutMs === undefined ? undefined : o.timeoutMs + (o.yieldTo?.maxPauseMs ?? 0);
  const budget =
    budgetMs === undefined
      ? undefined
      : setTimeout(() => stop(new MeshError('TOOL_TIMEOUT', `${tool} ran longer than its ${Math.round(budgetMs / 1000)} s budget and was stopped`)), budgetMs);

  // Output seconds past which the source is longer than it said.
  const tooLongAt = o.declaredSec === undefined ? Infinity : o.declaredSec + durationSlackSec(o.declaredSec);
  let outSec = 0;
  const report = { outSec: 0, frames: 0 };
  const tooLong = () =>
    new InputError(
      'SOURCE_TOO_LONG',
      `the video decodes longer than the ${Math.round(o.declaredSec ?? 0)} s it declared (still going at ${Math.round(outSec)} s): it may be several recordings joined end to end; remux it into one file and submit it again`,
    );
  let stdout = '';
  let stderr = '';
  let pending = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    if (!o.onProgress && o.declaredSec === undefined) {
      stdout += chunk;
      return;
    }
    pending += chunk;
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      const m = /^(out_time_us|frame)=(\d+)/.exec(line);
      if (!m) continue;
      if (m[1] === 'frame') report.frames = Number(m[2]);
      else report.outSec = Number(m[2]) / 1e6;
      outSec = Math.max(outSec, o.position ? o.position(report) : report.outSec);
      o.onProgress?.(outSec);
      if (outSec > tooLongAt) stop(tooLong());
    }
  });
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr = hide(stderr + chunk).slice(-STDERR_TAIL);
  });
  const result = await child;
  if (pid) running.delete(pid);
  clearTimeout(budget);
  clearTimeout(killTimer);
  o.signal?.removeEventListener('abort', onAbort);
  stopYielding?.();
  const durationMs = Date.now() - started;
  if (stopped) {
    o.log.warn({ tool, durationMs, reason: stopped.message }, `${tool} stopped`);
    throw stopped;
  }
  if (result.failed) {
    o.log.warn({ tool, exitCode: result.exitCode, signal: result.signal, durationMs, stderr }, `${tool} failed`);
    if (result.exitCode === undefined && !result.signal) {
      throw new MeshError('TOOL_FAILED', `${tool} could not run: ${hide(result.shortMessage ?? 'unknown error')}`);
    }
    throw new ToolError(tool, result.exitCode, stderr || (result.signal ? `killed by ${result.signal}` : ''));
  }
  // It ended on its own, cut by the input -t just past the slack: the file held more than it declared.
  if (outSec > tooLongAt) throw tooLong();
  o.log.info({ tool, durationMs }, `${tool} done`);
  return { stdout, stderr, durationMs };
}
