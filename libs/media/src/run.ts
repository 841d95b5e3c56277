/**
 * Runs ffmpeg, ffprobe and Shaka Packager with argument arrays (never a shell), logs each command
 * shell-quoted so it can be pasted, keeps only the tail of stderr, and reports ffmpeg progress.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { MeshError, shellCommand, ToolError, type Logger } from '@mesh/common';

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

export async function runTool(
  tool: Tool,
  args: string[],
  o: { log: Logger; signal?: AbortSignal; cwd?: string; onProgress?: (outSeconds: number) => void },
): Promise<{ stdout: string; stderr: string; durationMs: number }> {
  const cmd = toolPath(tool);
  o.log.info({ tool, command: shellCommand(cmd, args) }, `running ${tool}`);
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
    stderr = (stderr + chunk).slice(-STDERR_TAIL);
  });
  const result = await child;
  const durationMs = Date.now() - started;
  if (result.isCanceled || (o.signal?.aborted ?? false)) {
    throw new MeshError('TOOL_FAILED', `${tool} stopped: ${String(o.signal?.reason ?? 'cancelled')}`);
  }
  if (result.failed) {
    o.log.warn({ tool, exitCode: result.exitCode, signal: result.signal, durationMs, stderr }, `${tool} failed`);
    if (result.exitCode === undefined && !result.signal) {
      throw new MeshError('TOOL_FAILED', `${tool} could not run: ${result.shortMessage ?? 'unknown error'}`);
    }
    throw new ToolError(tool, result.exitCode, stderr || (result.signal ? `killed by ${result.signal}` : ''));
  }
  o.log.info({ tool, durationMs }, `${tool} done`);
  return { stdout, stderr, durationMs };
}
