/**
 * Encodes sharing one host yield to more urgent work. Each running encode leaves a marker file
 * `<dir>/<rank>-<pid>` (rank 0 = most urgent: the work on the way to the first playable manifest), and
 * so does a service doing urgent work of its own (holdUrgency: the 720p transcoder while it uploads, the
 * packager while it makes the first manifest). While a live process with a lower rank has a marker, an
 * encode is paused (SIGSTOP) and resumed (SIGCONT) when there is none, or after `maxPauseMs` so it is
 * never starved.
 *
 * Niceness alone still leaves the lesser encode ~15% of the CPU on two cores (measured in
 * docs/performance.md); pausing leaves it none. Containers have their own temp dirs: there it does
 * nothing, as it should, each having its own CPU budget.
 *
 * The directory is private: made 0700, refused when another user owns it or others may write in it
 * (whoever can add markers there can pause our encodes, or plant a symlink where a marker goes), and
 * markers are created exclusively without following links.
 */
import { closeSync, constants, lstatSync, mkdirSync, openSync, readdirSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, int, pidAlive, str, type Env, type Logger } from '@mesh/common';

export interface YieldOptions {
  dir: string;
  rank: number;
  maxPauseMs: number;
  /** How often the markers are looked at. */
  everyMs?: number;
}

/** Whether the process may be paused yet (runTool: once setpriv has armed the parent-death signal and exec'd the tool). */
export type PausableCheck = () => boolean;

/** The default directory: one per user, so services of different users never share (or fight over) one. */
export const defaultYieldDir = (): string => join(tmpdir(), `video-mesh-encodes-${process.getuid?.() ?? 'user'}`);

/**
 * ENCODE_YIELD_DIR (shared by the encodes of one host; 'off' disables) and ENCODE_MAX_PAUSE_MS, for an
 * encode of `rank`. The directory is made (0700) and checked here, so an unsafe one stops the service at
 * start with the reason.
 */
export function yieldConfig(env: Env, rank: number): YieldOptions | undefined {
  const dir = str(env, 'ENCODE_YIELD_DIR', defaultYieldDir());
  if (dir === 'off') return undefined;
  try {
    ensurePrivateDir(dir);
  } catch (err) {
    throw new ConfigError(`ENCODE_YIELD_DIR ${(err as Error).message}; use a directory of this user's (or 'off')`);
  }
  return { dir, rank, maxPauseMs: int(env, 'ENCODE_MAX_PAUSE_MS', 120_000, { min: 0 }) };
}

/** Makes `dir` (0700) if missing; throws, saying why, if it is not a directory of this user's that only this user can enter. */
export function ensurePrivateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  const uid = process.getuid?.();
  if (!st.isDirectory()) throw new Error(`${dir} is not a directory (a symlink?)`);
  if (uid !== undefined && st.uid !== uid) throw new Error(`${dir} belongs to user ${st.uid}, not to this user (${uid})`);
  if ((st.mode & 0o077) !== 0) throw new Error(`${dir} is open to other users (mode ${(st.mode & 0o777).toString(8)}, want 700)`);
}

/** Creates the empty file `path`: never through a link, never over another file (a stale one of a dead pid is replaced). */
function createMarker(path: string): void {
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
  let fd: number;
  try {
    fd = openSync(path, flags, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    // unlink removes a link itself, never what it points to.
    unlinkSync(path);
    fd = openSync(path, flags, 0o600);
  }
  closeSync(fd);
}

/** Makes the marker `name` in the checked directory; null (and a warning) when the directory is not safe to use any more. */
function placeMarker(o: YieldOptions, name: string, log: Logger | undefined): string | null {
  try {
    ensurePrivateDir(o.dir);
    const marker = join(o.dir, name);
    createMarker(marker);
    return marker;
  } catch (err) {
    log?.warn({ dir: o.dir, err: (err as Error).message }, 'not yielding: the encode yield directory is unsafe');
    return null;
  }
}

/** The marker names in `dir`; none when it is gone (a temp cleaner): nothing to yield to. */
function markers(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}


let holds = 0;

/** Marks this process as doing work of `rank` until the returned function is called. */
export function holdUrgency(o: YieldOptions, log?: Logger): () => void {
  const marker = placeMarker(o, `${o.rank}-${process.pid}-${++holds}`, log);
  return () => {
    if (marker) rmSync(marker, { force: true });
  };
}

/** Starts yielding for the process `pid`; the returned function stops it (and resumes the process). */
export function yieldToUrgentEncodes(pid: number, o: YieldOptions, log: Logger, pausable: PausableCheck = () => true): () => void {
  const marker = placeMarker(o, `${o.rank}-${pid}`, log);
  if (!marker) return () => undefined;
  let paused = false;
  let pausedMs = 0;
  let last = Date.now();
  const signal = (sig: 'SIGSTOP' | 'SIGCONT') => {
    try {
      process.kill(pid, sig);
    } catch {
      // It ended meanwhile.
    }
  };
  const check = () => {
    const now = Date.now();
    if (paused) pausedMs += now - last;
    last = now;
    const urgent = markers(o.dir).filter((name) => {
      const [rank, other] = name.split('-').map(Number);
      if (rank === undefined || other === undefined || Number.isNaN(rank) || Number.isNaN(other) || other === pid) return false;
      if (!pidAlive(other)) {
        rmSync(join(o.dir, name), { force: true });
        return false;
      }
      return rank < o.rank;
    });
    const shouldPause = urgent.length > 0 && pausedMs < o.maxPauseMs && (paused || pausable());
    if (shouldPause && !paused) {
      signal('SIGSTOP');
      log.info({ for: urgent }, 'encode paused: more urgent work runs on this host');
    } else if (!shouldPause && paused) {
      signal('SIGCONT');
      log.info({ pausedMs }, 'encode resumed');
    }
    paused = shouldPause;
  };
  // At once, too: encodes of one job start together, and the lesser ones should not run a moment beside the urgent one.
  check();
  const timer = setInterval(check, o.everyMs ?? 200);
  return () => {
    clearInterval(timer);
    if (paused) signal('SIGCONT');
    paused = false;
    rmSync(marker, { force: true });
  };
}
