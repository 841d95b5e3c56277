/**
 * Named errors with a stable code. What reaches a job is `message`: a reason a person can read.
 * `permanent` errors fail the job at once; the others are retried by the consume loop.
 */
export type ErrorCode =
  | 'CONFIG_INVALID'
  | 'INVALID_MESSAGE'
  | 'SOURCE_NOT_FOUND'
  | 'SOURCE_EMPTY'
  /** The client's object was replaced or deleted while the job read it. */
  | 'SOURCE_CHANGED'
  | 'NOT_A_VIDEO'
  | 'SOURCE_UNSUPPORTED'
  | 'SOURCE_TOO_LARGE'
  | 'SOURCE_TOO_LONG'
  | 'TOOL_FAILED'
  /** An external tool ran past its wall-clock budget and was stopped. */
  | 'TOOL_TIMEOUT'
  | 'STORAGE_FAILED'
  /** A conditional S3 write (If-Match / If-None-Match) found the object not as expected. */
  | 'WRITE_CONFLICT'
  | 'NO_RENDITION'
  | 'WEBHOOK_REJECTED'
  | 'RETRIES_EXHAUSTED'
  | 'CANCELLED'
  /** An object key that would leave its bucket (keys.ts). */
  | 'INVALID_KEY'
  /** Another job is still writing the same output prefix. */
  | 'OUTPUT_BUSY'
  /** A job's manifest would replace a larger one another job published at the same prefix. */
  | 'OUTPUT_CONFLICT'
  /** A dependency (NATS, S3, MongoDB) did not answer in time: nothing was changed, try again. */
  | 'UNAVAILABLE'
  /** A lock holder found its lease taken over: it must not write. */
  | 'LOCK_LOST'
  /** Work that arrives for a job that has failed meanwhile: parked as a dead letter, not done. */
  | 'JOB_FAILED';

export class MeshError extends Error {
  override name = 'MeshError';
  readonly code: ErrorCode;
  readonly permanent: boolean;
  constructor(code: ErrorCode, message: string, options: { permanent?: boolean; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.code = code;
    this.permanent = options.permanent ?? false;
  }
}

/** The exit code of a service stopped by bad configuration (sysexits EX_CONFIG): restarting it cannot help. */
export const EX_CONFIG = 78;

/** Bad configuration: the service must not start. */
export class ConfigError extends MeshError {
  override name = 'ConfigError';
  constructor(message: string) {
    super('CONFIG_INVALID', message, { permanent: true });
  }
}

/** The input itself is wrong (not media, missing, unsupported): retrying cannot help. */
export class InputError extends MeshError {
  override name = 'InputError';
  constructor(code: ErrorCode, message: string, cause?: unknown) {
    super(code, message, { permanent: true, cause });
  }
}

/** An external tool (ffmpeg, ffprobe, packager) exited non-zero. Retryable: it may be a resource problem. */
export class ToolError extends MeshError {
  override name = 'ToolError';
  readonly tool: string;
  readonly exitCode: number | undefined;
  readonly stderrTail: string;
  constructor(tool: string, exitCode: number | undefined, stderrTail: string, options: { permanent?: boolean } = {}) {
    super('TOOL_FAILED', `${tool} failed${exitCode === undefined ? '' : ` (exit ${exitCode})`}: ${lastLine(stderrTail)}`, options);
    this.tool = tool;
    this.exitCode = exitCode;
    this.stderrTail = stderrTail;
  }
}

/** A message that does not match its subject's schema. Never retried. */
export class InvalidMessageError extends MeshError {
  override name = 'InvalidMessageError';
  constructor(subject: string, detail: string) {
    super('INVALID_MESSAGE', `invalid message on ${subject}: ${detail}`, { permanent: true });
  }
}

export function isPermanent(err: unknown): boolean {
  return err instanceof MeshError && err.permanent;
}

/** The text a person should see for any thrown value. */
export function reasonOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

function lastLine(text: string): string {
  const lines = text.trim().split('\n').map((l) => l.trim()).filter(Boolean);
  return lines.at(-1) ?? 'no output';
}
