/**
 * Runs ffmpeg, ffprobe and Shaka Packager with argument arrays (never a shell), logs each command
 * shell-quoted so it can be pasted, keeps only the tail of stderr, and reports ffmpeg progress.
 */
import { createRequire } from 'node:module';
import { setPriority } from 'node:os';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { MeshError, shellCommand, ToolError, type Logger } from '@mesh/common';
import { inSpan, SpanKind, toolDuration } from '@mesh/telemetry';
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

const STDERR_TAIL = 4096;

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

async function runToolUntraced(
  tool: Tool,
  args: string[],
  o: {
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
  },
): Promise<{ stdout: string; stderr: string; durationMs: number }> {
  const cmd = toolPath(tool);
  const hide = (text: string) =>
    Object.entries(o.redact ?? {})
      .reduce((t, [secret, shown]) => t.replaceAll(secret, shown), text)
      // And any presigned-URL credential that slipped through (a URL cut in two by the stderr tail).
      .replace(/(X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s'"]+/gi, '$1REDACTED');
  o.log.info({ tool, command: hide(shellCommand(cmd, args)), ...(o.niceness ? { niceness: o.niceness } : {}) }, `running ${tool}`);
  const started = Date.now();
  const child = execa(cmd, args, {
    ...(o.cwd ? { cwd: o.cwd } : {}),
    ...(o.signal ? { cancelSignal: o.signal } : {}),
    forceKillAfterDelay: 3000,
    stdin: 'ignore',
    buffer: false,
    reject: false,
    encoding: 'utf8',
  });
  if (o.niceness && child.pid) {
    try {
      setPriority(child.pid, o.niceness);
    } catch {
      // The process may already be gone; it then fails or finishes on its own.
    }
  }
  let stdout = '';
  let stderr = '';
  let pending = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    if (!o.onProgress) {
      stdout += chunk;
      return;
    }
    pending += chunk;
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      const m = /^out_time_us=(\d+)/.exec(line);
      if (m) o.onProgress(Number(m[1]) / 1e6);
    }
  });
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr = hide(stderr + chunk).slice(-STDERR_TAIL);
  });
  const stopYielding = o.yieldTo && child.pid ? yieldToUrgentEncodes(child.pid, o.yieldTo, o.log) : undefined;
  // A paused process acts on SIGTERM only once resumed: resume it as soon as it is to stop.
  if (stopYielding) o.signal?.addEventListener('abort', stopYielding, { once: true });
  const result = await child;
  stopYielding?.();
  const durationMs = Date.now() - started;
  if (result.isCanceled || (o.signal?.aborted ?? false)) {
    throw new MeshError('TOOL_FAILED', `${tool} stopped: ${String(o.signal?.reason ?? 'cancelled')}`);
  }
  if (result.failed) {
    o.log.warn({ tool, exitCode: result.exitCode, signal: result.signal, durationMs, stderr }, `${tool} failed`);
    if (result.exitCode === undefined && !result.signal) {
      throw new MeshError('TOOL_FAILED', `${tool} could not run: ${hide(result.shortMessage ?? 'unknown error')}`);
    }
    throw new ToolError(tool, result.exitCode, stderr || (result.signal ? `killed by ${result.signal}` : ''));
  }
  o.log.info({ tool, durationMs }, `${tool} done`);
  return { stdout, stderr, durationMs };
}
