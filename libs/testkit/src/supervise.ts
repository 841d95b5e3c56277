/**
 * Restarts a service that exits when nobody asked it to, as the orchestrators the mesh runs on would
 * (Kubernetes' restartPolicy Always with its CrashLoopBackOff, compose's `restart: unless-stopped`): the
 * exit is reported with its code or signal, the restart waits 1 s, then 2 s, 4 s... up to 30 s while the
 * service keeps dying, and the wait starts again at 1 s once it had run for a minute. A service that exits
 * with 78 (EX_CONFIG: its configuration is wrong) is reported and left stopped: restarting cannot help.
 */
import type { ChildProcess } from 'node:child_process';
import { EX_CONFIG, sleep } from '@mesh/common';

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** What the supervisor watches: one run of a service. */
export interface Supervised {
  id: string;
  child: ChildProcess;
  exit: Promise<ExitStatus>;
  /** Resolves when the service is taking work. */
  ready: Promise<void>;
  /** Set by stop() and kill(): an exit someone asked for is not restarted. */
  stopRequested: boolean;
  /** Date.now() when it was started. */
  startedAt: number;
}

export interface RestartPolicy {
  firstDelayMs: number;
  maxDelayMs: number;
  /** A run this long counts as healthy: the next exit waits firstDelayMs again. */
  resetAfterMs: number;
}

export const RESTART_POLICY: RestartPolicy = { firstDelayMs: 1000, maxDelayMs: 30_000, resetAfterMs: 60_000 };

export type SupervisorEvent =
  | { kind: 'exited'; id: string; pid: number | undefined; status: ExitStatus; restartInMs: number; message: string }
  | { kind: 'back'; id: string; pid: number | undefined; message: string }
  | { kind: 'given_up'; id: string; pid: number | undefined; status: ExitStatus; message: string };

/** The wait before the restart that follows the n-th exit in a row (1-based): doubling, capped. */
export function restartDelayMs(exitsInARow: number, policy: RestartPolicy = RESTART_POLICY): number {
  return Math.min(policy.maxDelayMs, policy.firstDelayMs * 2 ** Math.max(0, exitsInARow - 1));
}

/** `signal SIGKILL`, `code 1`, `code 78: configuration error`. */
export function describeExit(status: ExitStatus): string {
  if (status.signal) return `signal ${status.signal}`;
  return status.code === EX_CONFIG ? `code ${EX_CONFIG}: configuration error` : `code ${status.code}`;
}

const duration = (ms: number) => (ms >= 1000 ? `${ms / 1000} s` : `${ms} ms`);

/**
 * Watches `first` and every run that replaces it: `restart(prev)` starts the next run (and puts it where
 * `prev` was). Nothing is restarted once `stopping` aborts (the whole mesh is stopping).
 */
export function supervise<P extends Supervised>(first: P, o: { restart: (prev: P) => P; report: (event: SupervisorEvent) => void; stopping: AbortSignal; policy?: Partial<RestartPolicy> }): void {
  const policy = { ...RESTART_POLICY, ...o.policy };
  let exitsInARow = 0;
  const watch = (run: P) => {
    void run.exit.then(async (status) => {
      if (o.stopping.aborted || run.stopRequested) return;
      const pid = run.child.pid;
      if (status.code === EX_CONFIG) {
        o.report({ kind: 'given_up', id: run.id, pid, status, message: `${run.id} exited (${describeExit(status)}); not restarting it: fix the setting its last lines name, then start it again` });
        return;
      }
      exitsInARow = Date.now() - run.startedAt >= policy.resetAfterMs ? 1 : exitsInARow + 1;
      const restartInMs = restartDelayMs(exitsInARow, policy);
      o.report({ kind: 'exited', id: run.id, pid, status, restartInMs, message: `${run.id} exited (${describeExit(status)}); restarting in ${duration(restartInMs)}` });
      try {
        await sleep(restartInMs, o.stopping);
      } catch {
        return;
      }
      // Restarted or stopped by hand meanwhile (mesh.respawn): theirs to run.
      if (run.stopRequested) return;
      const next = o.restart(run);
      watch(next);
      // A run that dies before it is ready is reported by its own watch.
      if (await Promise.race([next.ready.then(() => true), next.exit.then(() => false)])) {
        if (!o.stopping.aborted) o.report({ kind: 'back', id: next.id, pid: next.child.pid, message: `${next.id} back (pid ${next.child.pid})` });
      }
    });
  };
  watch(first);
}
