/**
 * Per-message scratch directories: `<tmpdir>/<owner>-<pid>-XXXXXX`, removed after each message. A process
 * that was killed leaves its directories behind; the next start of that service sweeps the ones whose
 * process is gone (in a container the restarted service may have the same pid as the dead one: at start
 * it made none before it started, so leftovers with its own pid from before then are stale too).
 */
import { lstatSync, readdirSync, rmSync, type Dirent } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export function makeTempDir(owner: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `${owner}-${process.pid}-`));
}

/** Whether a process runs (EPERM: it does, as another user). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the dirs `<owner>-<pid>-XXXXXX` in `dir` (the temp dir) whose process is gone, and returns their
 * paths. Call it at start, before this process makes any: a dir carrying this process's own pid that is
 * older than this process belongs to an earlier one that had the same pid, and is removed too. Dirs of
 * live processes, other users' dirs and links are left alone.
 */
export function sweepStaleTempDirs(owner: string, o: { dir?: string } = {}): string[] {
  const dir = o.dir ?? tmpdir();
  const pattern = new RegExp(`^${owner.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}-(\\d+)-[A-Za-z0-9]{6}$`);
  const startedMs = Date.now() - process.uptime() * 1000;
  const uid = process.getuid?.();
  const removed: string[] = [];
  let entries: Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return removed;
  }
  for (const entry of entries) {
    const pid = Number(pattern.exec(entry.name)?.[1] ?? NaN);
    if (!entry.isDirectory() || !Number.isSafeInteger(pid)) continue;
    const path = join(dir, entry.name);
    try {
      const st = lstatSync(path);
      if (!st.isDirectory() || (uid !== undefined && st.uid !== uid)) continue;
      const stale = pid === process.pid ? st.mtimeMs < startedMs - 1000 : !pidAlive(pid);
      if (!stale) continue;
      rmSync(path, { recursive: true, force: true });
      removed.push(path);
    } catch {
      // Removed meanwhile by someone else, or not ours to remove.
    }
  }
  return removed;
}
