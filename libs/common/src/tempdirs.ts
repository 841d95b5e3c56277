/**
 * Per-message scratch directories: `<tmpdir>/<owner>-<pid>-XXXXXX`, removed after each message. A process
 * that was killed leaves its directories behind; the next start of that service sweeps the ones whose
 * process is gone (in a container the restarted service may have the same pid as the dead one: at start
 * it made none before it started, so leftovers with its own pid from before then are stale too).
 */
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function makeTempDir(owner: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `${owner}-${process.pid}-`));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes `owner`'s scratch directories left by dead processes; returns how many. Call once, at start. */
export async function sweepStaleTempDirs(owner: string, dir = tmpdir()): Promise<number> {
  const pattern = new RegExp(`^${owner.replace(/[^\w]/g, (c) => `\\${c}`)}-(\\d+)-[\\w]{6}$`);
  const startedAt = Date.now() - process.uptime() * 1000;
  let swept = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const pid = Number(pattern.exec(name)?.[1]);
    if (!pid) continue;
    const stale = pid === process.pid ? await madeBefore(join(dir, name), startedAt) : !alive(pid);
    if (!stale) continue;
    await rm(join(dir, name), { recursive: true, force: true });
    swept++;
  }
  return swept;
}

async function madeBefore(path: string, time: number): Promise<boolean> {
  const info = await stat(path).catch(() => null);
  return info !== null && info.mtimeMs < time - 1000;
}
