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

/**
 * A URI as it may be shown: the password (or a whole `user:pass` that does not parse) replaced, so a
 * config error never prints a credential.
 */
export function redactUri(value: string): string {
  return value.replace(/^([a-z][a-z0-9+.-]*:\/\/)([^@/?#]*)@/i, (_m, scheme: string, userinfo: string) => `${scheme}${userinfo.includes(':') ? `${userinfo.split(':')[0]}:***` : '***'}@`);
}

/** A number from 0 to 1. */
export function fraction(env: Env, name: string, fallback: number): number {
  const raw = env[name]?.trim();
  if (!raw) return fallback;
  const value = Number(raw);
  if (!/^\d*\.?\d+$/.test(raw) || value > 1) throw new ConfigError(`${name} must be a number from 0 to 1, got ${JSON.stringify(raw)}`);
  return value;
}

export function url(env: Env, name: string, fallback?: string, protocols = ['http:', 'https:']): string {
  const value = str(env, name, fallback);
  checkUrl(name, value, protocols);
  return value;
}

function checkUrl(name: string, value: string, protocols: string[]): void {
  let parsed: URL;
  try {
    parsed = new URL(value);
  } catch {
    throw new ConfigError(`${name} must be a URL, got ${JSON.stringify(redactUri(value))}`);
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(`${name} must use ${protocols.join(' or ')}, got ${parsed.protocol}`);
  }
}

/** One URL, or several separated by commas (the nodes of a cluster). */
export function urlList(env: Env, name: string, fallback: string, protocols: string[]): string {
  const value = str(env, name, fallback);
  const urls = value.split(',').map((u) => u.trim());
  if (urls.some((u) => u === '')) throw new ConfigError(`${name} has an empty entry in its comma-separated list`);
  for (const u of urls) checkUrl(name, u, protocols);
  return urls.join(',');
}

const HOST = /^(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

/**
 * A MongoDB connection string: `mongodb://[user:pass@]host[:port][,host[:port]...][/db][?options]` (a
 * replica set lists several hosts, which `new URL` refuses) or `mongodb+srv://[user:pass@]host[/db][?options]`.
 */
export function mongoUri(env: Env, name: string, fallback: string): string {
  const value = str(env, name, fallback);
  const m = /^(mongodb(?:\+srv)?):\/\/(?:[^@/?#]*@)?([^/?#]+)(\/[^?#]*)?(\?[^#]*)?$/.exec(value);
  const hosts = m?.[2]?.split(',') ?? [];
  if (!m || hosts.length === 0 || hosts.some((h) => !HOST.test(h))) {
    throw new ConfigError(`${name} must be a MongoDB URI (mongodb://host[:port][,host...][/db][?options] or mongodb+srv://host[/db]), got ${JSON.stringify(redactUri(value))}`);
  }
  if (m[1] === 'mongodb+srv' && (hosts.length > 1 || hosts[0]!.includes(':'))) throw new ConfigError(`${name}: a mongodb+srv URI names one host without a port`);
  return value;
}

/** A host name or IP address to listen on. */
export function host(env: Env, name: string, fallback: string): string {
  const value = str(env, name, fallback);
  if (!HOST.test(value) || value.includes(':') && !value.startsWith('[')) throw new ConfigError(`${name} must be a host name or IP address, got ${JSON.stringify(value)}`);
  return value;
}

export function oneOf<const T extends string>(env: Env, name: string, fallback: T, values: readonly T[]): T {
  const value = str(env, name, fallback);
  if (!(values as readonly string[]).includes(value)) throw new ConfigError(`${name} must be one of ${values.join(', ')}, got ${JSON.stringify(value)}`);
  return value as T;
}

/** An on/off switch: `1`/`true` or `0`/`false` (any case); unset or empty is `fallback`. */
export function flag(env: Env, name: string, fallback = false): boolean {
  const raw = env[name]?.trim().toLowerCase();
  if (!raw) return fallback;
  if (raw === '1' || raw === 'true') return true;
  if (raw === '0' || raw === 'false') return false;
  throw new ConfigError(`${name} must be 1, true, 0 or false, got ${JSON.stringify(env[name])}`);
}

/** A shorter secret is accepted, with a warning at start (never its value). */
export const MIN_SECRET_LENGTH = 32;

/** Warnings about the config that do not stop the service (a short secret), for runService to log once. */
export const configWarnings: string[] = [];

/** A required secret: never shown anywhere; a warning at start when it is short. */
export function secret(env: Env, name: string): string {
  const value = str(env, name);
  if (value.length < MIN_SECRET_LENGTH) configWarnings.push(`${name} is ${value.length} characters long; use at least ${MIN_SECRET_LENGTH} (e.g. openssl rand -hex 32)`);
  return value;
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

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
  metricsHost: string;
  /** Copies JetStream keeps of every stream, KV bucket and consumer (3 on a cluster). */
  natsReplicas: number;
  /**
   * Chaos testing only (the soak sets it): the chance that a worker SIGKILLs its own process right after a
   * handler succeeded, before its done-marker or before its ack, the points a random kill rarely hits.
   */
  chaosKillAfterWork: number;
  /** Retention of the job event and dead-letter streams (applied by ingest-api, which owns the topology). */
  streams: { eventsMaxAgeDays: number; eventsMaxBytes: number; deadLettersMaxAgeDays: number; deadLettersMaxBytes: number };
  /** The service's own NATS user (deploy: each service is allowed only its subjects); unset: no login. */
  natsAuth?: NatsAuth;
}

export interface NatsAuth {
  user: string;
  password: string;
}

/**
 * A NATS password as nats-server reads it from its environment (`password: $NATS_PASSWORD_<USER>` in its
 * config): it parses the value as config, so digits first become a number, and `;`, `,`, `#`, spaces or
 * quotes cut it short or break the file. A letter, then 31 or more letters, digits, `_` or `-` is read as
 * itself: `echo p$(openssl rand -hex 24)`.
 */
export const NATS_PASSWORD_PATTERN = /^[A-Za-z][A-Za-z0-9_-]{31,}$/;

/** NATS_USER and NATS_PASSWORD, both or neither; the password is never shown. */
export function natsAuth(env: Env): NatsAuth | undefined {
  const user = optional(env, 'NATS_USER');
  const password = optional(env, 'NATS_PASSWORD');
  if (!user && !password) return undefined;
  if (!user) throw new ConfigError('NATS_USER is required when NATS_PASSWORD is set');
  if (!password) throw new ConfigError('NATS_PASSWORD is required when NATS_USER is set');
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(user)) throw new ConfigError(`NATS_USER must be 1-64 letters, digits, _ or -, got ${JSON.stringify(user)}`);
  if (!NATS_PASSWORD_PATTERN.test(password)) {
    throw new ConfigError('NATS_PASSWORD must be a letter then at least 31 letters, digits, _ or - (nats-server reads other values differently), e.g. echo p$(openssl rand -hex 24)');
  }
  return { user, password };
}

export function commonConfig(env: Env): CommonConfig {
  // Read by the OpenTelemetry SDK itself; checked here so a bad value stops the service naming it.
  int(env, 'OTEL_BSP_SCHEDULE_DELAY', 5000, { min: 0, max: 3_600_000 });
  for (const name of ['OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT']) if (optional(env, name)) url(env, name);
  oneOf(env, 'OTEL_EXPORTER_OTLP_PROTOCOL', 'http/protobuf', ['http/protobuf', 'http/json']);
  const auth = natsAuth(env);
  return {
    natsUrl: urlList(env, 'NATS_URL', 'nats://127.0.0.1:4222', ['nats:', 'tls:', 'ws:', 'wss:']),
    logLevel: oneOf(env, 'LOG_LEVEL', 'info', LOG_LEVELS),
    ackWaitMs: int(env, 'ACK_WAIT_MS', 30_000, { min: 1000, max: 10 * 60_000 }),
    // Up to an hour: a transcoder scaled in finishes its encode (deploy/k8s gives it the grace to match).
    drainMs: int(env, 'DRAIN_MS', 25_000, { min: 0, max: 60 * 60_000 }),
    maxDeliver: int(env, 'MAX_DELIVER', 5, { min: 1, max: 100 }),
    // Prometheus /metrics; 0 picks a free port (several services on one host, in tests).
    metricsPort: int(env, 'METRICS_PORT', 9464, { min: 0, max: 65535 }),
    metricsHost: host(env, 'METRICS_HOST', '0.0.0.0'),
    natsReplicas: int(env, 'NATS_REPLICAS', 1, { min: 1, max: 5 }),
    chaosKillAfterWork: fraction(env, 'CHAOS_KILL_AFTER_WORK', 0),
    streams: {
      eventsMaxAgeDays: int(env, 'EVENTS_MAX_AGE_DAYS', 30, { min: 1, max: 3650 }),
      eventsMaxBytes: int(env, 'EVENTS_MAX_BYTES', 10 * 1024 ** 3, { min: 1024 ** 2 }),
      deadLettersMaxAgeDays: int(env, 'DEAD_LETTERS_MAX_AGE_DAYS', 30, { min: 1, max: 3650 }),
      deadLettersMaxBytes: int(env, 'DEAD_LETTERS_MAX_BYTES', 1024 ** 3, { min: 1024 ** 2 }),
    },
    ...(auth ? { natsAuth: auth } : {}),
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
