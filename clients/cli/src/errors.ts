/**
 * What can go wrong, as errors that carry the process's exit code. What reaches the person is the
 * message: one line that says what was wrong, never the API key.
 */

/** The exit codes, as the README documents them. */
export const EXIT = {
  /** The command did what it was asked (submit/watch: the job ended in SUCCESS). */
  ok: 0,
  /** The job failed (or was cancelled); its reason is printed. */
  jobFailed: 1,
  /** Bad usage or bad input: an unknown option, a missing file, a task or dead letter the API does not know, a request it refused. */
  usage: 2,
  /** The API (or the storage an upload goes to) could not be reached, refused the key, or failed (5xx). */
  unreachable: 3,
  /** Interrupted with Ctrl-C (128 + SIGINT): the job, if there was one, keeps running unless it was cancelled. */
  interrupted: 130,
} as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export class CliError extends Error {
  override name = 'CliError';
  readonly exitCode: ExitCode;
  constructor(message: string, exitCode: ExitCode) {
    super(message);
    this.exitCode = exitCode;
  }
}

/** Bad usage or input the person can fix (exit 2). */
export class UsageError extends CliError {
  override name = 'UsageError';
  constructor(message: string) {
    super(message, EXIT.usage);
  }
}

/** The API could not be reached or would not serve us (exit 3). */
export class UnreachableError extends CliError {
  override name = 'UnreachableError';
  constructor(message: string) {
    super(message, EXIT.unreachable);
  }
}

/** The API answered with a problem (RFC 9457): `detail` says what was wrong. */
export class ApiProblemError extends CliError {
  override name = 'ApiProblemError';
  readonly status: number;
  readonly type: string | undefined;
  constructor(message: string, status: number, type: string | undefined) {
    // A refused key and the API's own failures are not the person's input: exit 3, like an API that is away.
    super(message, status === 401 || status === 403 || status >= 500 ? EXIT.unreachable : EXIT.usage);
    this.status = status;
    this.type = type;
  }
}

/** Why a network call failed, for a person: the system's code (ECONNREFUSED...) rather than "fetch failed". */
export function networkReason(err: unknown): string {
  let e: unknown = err;
  // fetch wraps the socket's error in `cause` (sometimes twice, an AggregateError for several addresses).
  for (let i = 0; i < 4 && e instanceof Error && e.cause; i++) e = e.cause;
  if (e instanceof AggregateError && e.errors[0]) e = e.errors[0];
  const code = (e as { code?: unknown } | null)?.code;
  const known: Record<string, string> = {
    ECONNREFUSED: 'connection refused',
    ENOTFOUND: 'host not found',
    EAI_AGAIN: 'host not found (DNS)',
    ECONNRESET: 'connection reset',
    ETIMEDOUT: 'timed out',
    EHOSTUNREACH: 'host unreachable',
    ENETUNREACH: 'network unreachable',
    UND_ERR_CONNECT_TIMEOUT: 'connection timed out',
    UND_ERR_SOCKET: 'connection closed',
  };
  if (typeof code === 'string') return known[code] ?? code;
  if (e instanceof Error && e.name === 'TimeoutError') return 'no answer in time';
  return e instanceof Error ? e.message : String(e);
}
