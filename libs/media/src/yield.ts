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
 */
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { int, str, type Env, type Logger } from '@mesh/common';

export interface YieldOptions {
  dir: string;
  rank: number;
  maxPauseMs: number;
  /** How often the markers are looked at. */
  everyMs?: number;
}

/** ENCODE_YIELD_DIR (shared by the encodes of one host; 'off' disables) and ENCODE_MAX_PAUSE_MS, for an encode of `rank`. */
export function yieldConfig(env: Env, rank: number): YieldOptions | undefined {
  const dir = str(env, 'ENCODE_YIELD_DIR', join(tmpdir(), 'video-mesh-encodes'));
  return dir === 'off' ? undefined : { dir, rank, maxPauseMs: int(env, 'ENCODE_MAX_PAUSE_MS', 120_000, { min: 0 }) };
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

let holds = 0;

/** Marks this process as doing work of `rank` until the returned function is called. */
export function holdUrgency(o: YieldOptions): () => void {
  mkdirSync(o.dir, { recursive: true });
  const marker = join(o.dir, `${o.rank}-${process.pid}-${++holds}`);
  writeFileSync(marker, '');
  return () => rmSync(marker, { force: true });
}

/** Starts yielding for the process `pid`; the returned function stops it (and resumes the process). */
export function yieldToUrgentEncodes(pid: number, o: YieldOptions, log: Logger): () => void {
  mkdirSync(o.dir, { recursive: true });
  const marker = join(o.dir, `${o.rank}-${pid}`);
  writeFileSync(marker, '');
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
    const urgent = readdirSync(o.dir).filter((name) => {
      const [rank, other] = name.split('-').map(Number);
      if (rank === undefined || other === undefined || Number.isNaN(rank) || Number.isNaN(other) || other === pid) return false;
      if (!alive(other)) {
        rmSync(join(o.dir, name), { force: true });
        return false;
      }
      return rank < o.rank;
    });
    const shouldPause = urgent.length > 0 && pausedMs < o.maxPauseMs;
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
