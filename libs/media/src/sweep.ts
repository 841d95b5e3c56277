/**
 * Per-message scratch dirs (`<prefix>-<pid>-XXXXXX` in the temp dir, made by the consume loop) outlive a
 * service that is killed mid-work: renditions of gigabytes, left behind on every crash. A service sweeps
 * them at start: those of processes that are gone.
 */
import { lstatSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pidAlive } from './yield.ts';

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Removes the dirs `<prefix>-<pid>-XXXXXX` in `dir` (the temp dir) whose process is gone, and returns their
 * paths. Call it at start, before this process makes any: a dir carrying this process's own pid that is
 * older than this process belongs to an earlier one that had the same pid (a restarted container's pids
 * start over), and is removed too. Dirs of live processes, other users' dirs and links are left alone.
 */
export function sweepStaleTempDirs(prefix: string, o: { dir?: string } = {}): string[] {
  const dir = o.dir ?? tmpdir();
  const pattern = new RegExp(`^${escapeRegExp(prefix)}-(\\d+)-[A-Za-z0-9]{6}$`);
  const startedMs = Date.now() - process.uptime() * 1000;
  const uid = process.getuid?.();
  const removed: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const pid = Number(pattern.exec(entry.name)?.[1] ?? NaN);
    if (!entry.isDirectory() || !Number.isSafeInteger(pid)) continue;
    const path = join(dir, entry.name);
    try {
      const st = lstatSync(path);
      if (!st.isDirectory() || (uid !== undefined && st.uid !== uid)) continue;
      const stale = pid === process.pid ? st.mtimeMs < startedMs : !pidAlive(pid);
      if (!stale) continue;
      rmSync(path, { recursive: true, force: true });
      removed.push(path);
    } catch {
      // Removed meanwhile by someone else, or not ours to remove.
    }
  }
  return removed;
}
