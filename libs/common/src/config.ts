import { ConfigError } from './errors.ts';

/**
 * Reads env vars once, at start. A missing or malformed variable throws a ConfigError naming it,
 * and `main()` turns that into one clear line and exit code 78 (EX_CONFIG).
 */
export type Env = Record<string, string | undefined>;

export function str(env: Env, name: string, fallback?: string): string {
  const value = env[name]?.trim();
  if (value) return value;
  if (fallback !== undefined) return fallback;
  throw new ConfigError(`${name} is required but not set`);
}

export function optional(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value ? value : undefined;
}

export function int(env: Env, name: string, fallback: number, { min = 0, max = Number.MAX_SAFE_INTEGER } = {}): number {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  if (!/^-?\d+$/.test(raw)) throw new ConfigError(`${name} must be an integer, got ${JSON.stringify(raw)}`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(`${name} must be between ${min} and ${max}, got ${value}`);
  return value;
}

export function url(env: Env, name: string, fallback?: string, protocols = ['http:', 'https:']): string {
  const value = str(env, name, fallback);
  let parsed: URL;
  try {
    parsed = new URL(value);
  } catch {
    throw new ConfigError(`${name} must be a URL, got ${JSON.stringify(value)}`);
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(`${name} must use ${protocols.join(' or ')}, got ${parsed.protocol}`);
  }
  return value;
}

export function bucket(env: Env, name: string, fallback?: string): string {
  const value = str(env, name, fallback);
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(value)) {
    throw new ConfigError(`${name} must be an S3 bucket name (3-63 lowercase letters, digits, dots, dashes), got ${JSON.stringify(value)}`);
  }
  return value;
}

/** Settings every service shares. Each service reads its own extras with the helpers above. */
export interface CommonConfig {
  natsUrl: string;
  logLevel: string;
  /** How long a delivered message may go without an ack or a heartbeat before it is redelivered: how soon a crash is noticed. */
  ackWaitMs: number;
  /** On SIGTERM, how long work in flight may finish before it is stopped and handed back. */
  drainMs: number;
  /** Tries a stage gets at one message before it gives up on it (and dead-letters it). */
  maxDeliver: number;
  metricsPort: number;
}

export function commonConfig(env: Env): CommonConfig {
  return {
    natsUrl: url(env, 'NATS_URL', 'nats://127.0.0.1:4222', ['nats:', 'tls:', 'ws:', 'wss:']),
    logLevel: str(env, 'LOG_LEVEL', 'info'),
    ackWaitMs: int(env, 'ACK_WAIT_MS', 30_000, { min: 1000, max: 10 * 60_000 }),
    drainMs: int(env, 'DRAIN_MS', 25_000, { min: 0, max: 10 * 60_000 }),
    maxDeliver: int(env, 'MAX_DELIVER', 5, { min: 1, max: 100 }),
    // Prometheus /metrics; 0 picks a free port (several services on one host, in tests).
    metricsPort: int(env, 'METRICS_PORT', 9464, { min: 0, max: 65535 }),
  };
}

export interface S3Config {
  endpoint: string | undefined;
  region: string;
  inputBucket: string;
  outputBucket: string;
  thumbnailBucket: string;
  /** Scratch space shared by the stages: probed sources, renditions and packages, keyed by job id. */
  workBucket: string;
  /** How long an S3 call may wait for a connection, and for the server to answer or send more. */
  timeoutMs: number;
}

export function s3Config(env: Env): S3Config {
  const endpoint = optional(env, 'S3_ENDPOINT');
  if (endpoint) url(env, 'S3_ENDPOINT');
  return {
    endpoint,
    region: str(env, 'AWS_REGION', str(env, 'AWS_DEFAULT_REGION', 'us-east-1')),
    inputBucket: bucket(env, 'S3_INPUT_BUCKET'),
    outputBucket: bucket(env, 'S3_OUTPUT_BUCKET'),
    thumbnailBucket: bucket(env, 'S3_THUMBNAIL_OUTPUT_BUCKET'),
    workBucket: bucket(env, 'S3_WORK_BUCKET', 'video-mesh-work'),
    timeoutMs: int(env, 'S3_TIMEOUT_MS', 30_000, { min: 100, max: 10 * 60_000 }),
  };
}
