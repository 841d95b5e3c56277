/**
 * Ctrl-C while a command works. The phase decides what it means: during the upload it stops the upload
 * (nothing was submitted); once a job exists, it asks whether to cancel the job (a terminal), or leaves
 * the job running and says how to cancel it (no terminal to ask on). A Ctrl-C that comes between two
 * phases (while the job is being submitted) waits for the next one, so a job is never left unmentioned.
 */
import confirm from '@inquirer/confirm';

/** What a Ctrl-C does now: call a function, wait for the next phase's function ('defer'), or end the process with 130 ('exit'). */
export type OnInterrupt = (() => void) | 'defer' | 'exit';

export interface Interrupts {
  /** From now on, each Ctrl-C does `what`; one deferred until now is handed to a function now. */
  handle(what: OnInterrupt): void;
  /** Back to Node's own Ctrl-C. */
  release(): void;
}

/** Takes Ctrl-C over; at first it ends the process with 130, as Node would, until a phase says otherwise. */
export function trapInterrupts(proc: NodeJS.Process = process): Interrupts {
  let now: OnInterrupt = 'exit';
  let pending = false;
  const onSigint = () => {
    if (now === 'exit') proc.exit(130);
    else if (now === 'defer') pending = true;
    else now();
  };
  proc.on('SIGINT', onSigint);
  return {
    handle(what) {
      now = what;
      if (typeof what === 'function' && pending) {
        pending = false;
        what();
      }
    },
    release() {
      proc.off('SIGINT', onSigint);
    },
  };
}

/** Whether a person can be asked: a terminal to read the answer from. */
export function canAsk(stdin: { isTTY?: boolean | undefined } = process.stdin): boolean {
  return stdin.isTTY === true;
}

/**
 * Asks "Cancel job X? (y/N)" on the terminal. No is the default; a second Ctrl-C, or `signal` (the job
 * ended meanwhile), is a no.
 */
export async function askCancel(taskId: string, o: { signal?: AbortSignal; output?: NodeJS.WritableStream } = {}): Promise<boolean> {
  try {
    return await confirm({ message: `Cancel job ${taskId}?`, default: false }, { ...(o.signal ? { signal: o.signal } : {}), ...(o.output ? { output: o.output } : {}) });
  } catch {
    // ExitPromptError (Ctrl-C again) or AbortPromptError (the job ended while asking).
    return false;
  }
}

/** What to tell the person when they leave a job running. */
export function leftRunning(taskId: string): string {
  return `interrupted: job ${taskId} keeps running; follow it with \`video-mesh watch ${taskId}\`, cancel it with \`video-mesh cancel ${taskId}\``;
}
