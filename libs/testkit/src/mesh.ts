/**
 * Runs the eight services as separate processes, the way ops run them: same code, env config only.
 * Used by the end-to-end tests, the local runtime (`npm start`, which also has it restart what exits:
 * supervise.ts) and the benchmark.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { supervise, type ExitStatus, type RestartPolicy, type Supervised, type SupervisorEvent } from './supervise.ts';

/** The services a mesh starts by default. */
export const SERVICES = ['ingest-api', 'downloader', 'transcoder-720', 'transcoder-360', 'packager', 'thumbnailer', 'uploader', 'notifier'] as const;
/** ...and the transcoder for other rungs of the ladder (its RENDITIONS in its env), added with `mesh.add`. */
export type ServiceName = (typeof SERVICES)[number] | 'transcoder';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export interface ServiceProcess extends Supervised {
  name: ServiceName;
  /** `transcoder-720#2` for the second replica. */
  id: string;
  child: ChildProcess;
  /** The exit code, or 128 when a signal ended it (`exit` has which). */
  exited: Promise<number | null>;
  /** Resolves when the service has connected and is taking work. */
  ready: Promise<void>;
  /** Where it serves /metrics, once ready. */
  metricsPort?: number;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<number | null>;
  kill(): Promise<number | null>;
}

export type LineSink = (id: string, line: string) => void;

/**
 * Starts one service. `cpus` (a taskset CPU list, e.g. `0` or `0,1`) pins it and every tool it runs to
 * those CPUs, as if it ran on a host of that size (FFmpeg and x264 size their threads by the CPUs they
 * may use): the benchmark's emulation of separate hosts on one machine.
 */
export function startService(name: ServiceName, env: Record<string, string>, o: { replica?: number; onLine?: LineSink; cpus?: string } = {}): ServiceProcess {
  const id = o.replica && o.replica > 1 ? `${name}#${o.replica}` : name;
  const main = join(REPO_ROOT, 'services', name, 'src', 'main.ts');
  // taskset execs node: same pid, and the IPC channel (an inherited fd) still reaches it.
  const [cmd, args] = o.cpus ? ['taskset', ['-c', o.cpus, process.execPath, main]] : [process.execPath, [main]];
  const child = spawn(cmd, args, {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    // The IPC channel carries the service's "ready" message.
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  const sink = o.onLine ?? (() => undefined);
  for (const stream of [child.stdout, child.stderr]) createInterface({ input: stream! }).on('line', (line) => sink(id, line));
  const exit = new Promise<ExitStatus>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const exited = exit.then(({ code, signal }) => code ?? (signal ? 128 : null));
  let process_: ServiceProcess;
  const ready = new Promise<void>((resolve) =>
    child.on('message', (m: { ready?: boolean; metricsPort?: number }) => {
      if (!m?.ready) return;
      if (m.metricsPort) process_.metricsPort = m.metricsPort;
      resolve();
    }),
  );
  const stop = async (graceMs = 10_000) => {
    process_.stopRequested = true;
    if (child.exitCode !== null || child.signalCode !== null) return exited;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    const code = await exited;
    clearTimeout(timer);
    return code;
  };
  const kill = async () => {
    process_.stopRequested = true;
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    return exited;
  };
  process_ = { name, id, child, exit, exited, ready, stop, kill, stopRequested: false, startedAt: Date.now() };
  return process_;
}

export interface Mesh {
  /** The processes running now: a supervised restart takes the place of the run it replaces. */
  processes: ServiceProcess[];
  /** Starts one more replica of a service (scaling), resolved once it is consuming; `env` adds to the mesh's, `cpus` pins it (startService). */
  add(name: ServiceName, env?: Record<string, string>, o?: { cpus?: string }): Promise<ServiceProcess>;
  /** Starts a stopped or killed process again under the same id (a restart by the supervisor). */
  respawn(p: ServiceProcess): Promise<ServiceProcess>;
  stop(): Promise<void>;
}

export interface SuperviseOptions {
  /** Told of every exit, restart and give-up (the event's `message` is the line to print). */
  report: (event: SupervisorEvent) => void;
  policy?: Partial<RestartPolicy>;
}

/**
 * Starts the services (default: one of each) and resolves once each has logged that it started.
 * A service that exits before that rejects with its last output. With `supervise`, a service that exits
 * later without being asked to (stop(), kill(), respawn()) is reported and restarted (supervise.ts);
 * without it (tests that kill and respawn processes themselves), an exit is left as it is.
 */
export async function startMesh(o: {
  env: Record<string, string>;
  /** What one service gets on top of `env`: its own NATS user (NatsServer.serviceEnv). */
  serviceEnv?: (name: ServiceName) => Record<string, string>;
  replicas?: Partial<Record<ServiceName, number>>;
  onLine?: LineSink;
  timeoutMs?: number;
  supervise?: SuperviseOptions;
  /** The CPUs each replica is pinned to (startService), e.g. to emulate separate hosts; unpinned when undefined. */
  cpus?: (name: ServiceName, replica: number) => string | undefined;
}): Promise<Mesh> {
  const processes: ServiceProcess[] = [];
  const stopping = new AbortController();
  const run = (name: ServiceName, replica: number, extraEnv: Record<string, string>, tail?: string[], pinned?: string) => {
    const cpus = pinned ?? o.cpus?.(name, replica);
    return startService(name, { ...o.env, ...o.serviceEnv?.(name), ...extraEnv }, {
      replica,
      ...(cpus ? { cpus } : {}),
      onLine: (id, line) => {
        if (tail) {
          tail.push(line);
          if (tail.length > 30) tail.shift();
        }
        o.onLine?.(id, line);
      },
    });
  };
  const launch = async (name: ServiceName, replica: number, extraEnv: Record<string, string> = {}, cpus?: string) => {
    const tail: string[] = [];
    const p = run(name, replica, extraEnv, tail, cpus);
    processes.push(p);
    // Generous: a service on a host busy with other encodes (2 cores, a test suite in parallel) can take
    // tens of seconds to load; one that exits fails at once, whatever this says.
    const timeoutMs = o.timeoutMs ?? 120_000;
    const outcome = await Promise.race([
      p.ready.then(() => 'ready' as const),
      p.exited.then((code) => `exited with ${code}` as const),
      new Promise<string>((resolve) => setTimeout(() => resolve(`not started within ${timeoutMs} ms`), timeoutMs).unref()),
    ]);
    if (outcome !== 'ready') throw new Error(`${p.id} ${outcome}:\n${tail.join('\n')}`);
    if (o.supervise) {
      supervise(p, {
        ...o.supervise,
        stopping: stopping.signal,
        restart(prev) {
          const next = run(name, replica, extraEnv, undefined, cpus);
          const at = processes.indexOf(prev);
          if (at >= 0) processes[at] = next;
          else processes.push(next);
          return next;
        },
      });
    }
    return p;
  };
  const counts = new Map<ServiceName, number>();
  const add = (name: ServiceName, env?: Record<string, string>, a: { cpus?: string } = {}) => {
    const n = (counts.get(name) ?? 0) + 1;
    counts.set(name, n);
    return launch(name, n, env, a.cpus);
  };
  const mesh: Mesh = {
    processes,
    add,
    async respawn(old) {
      await old.kill();
      const at = processes.indexOf(old);
      if (at >= 0) processes.splice(at, 1);
      return launch(old.name, Number(old.id.split('#')[1] ?? 1));
    },
    async stop() {
      stopping.abort();
      await Promise.all(processes.map((p) => p.stop()));
    },
  };
  try {
    await Promise.all(SERVICES.flatMap((name) => Array.from({ length: o.replicas?.[name] ?? 1 }, () => add(name))));
  } catch (err) {
    await mesh.stop();
    throw err;
  }
  return mesh;
}

/** Turns a pino JSON line into `HH:MM:SS service LEVEL message key=value ...` for people. */
export function formatLogLine(id: string, line: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return `${id.padEnd(16)} ${line}`;
  }
  const { time, level, msg, service: _s, name: _n, pid: _p, hostname: _h, ...rest } = rec;
  const levelName = ({ 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' } as Record<number, string>)[level as number] ?? String(level);
  const clock = typeof time === 'string' ? time.slice(11, 23) : '';
  const extras = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
  return `${clock} ${id.padEnd(16)} ${levelName.padEnd(5)} ${String(msg ?? '')}${extras ? `  ${extras}` : ''}`;
}

export interface MeshEndpoints {
  natsUrl: string;
  mongoUri: string;
  /** The local S3 stand-in; leave out to use S3_ENDPOINT / AWS credentials from the environment. */
  s3?: { endpoint: string; accessKeyId: string; secretAccessKey: string };
  buckets: { input: string; output: string; thumbnails: string; work: string };
  apiKey: string;
  apiPort: number;
  backendUrl: string;
  backendKey: string;
  logLevel?: string;
}

/** The environment every service of a local mesh gets: the same variables ops set in production. */
/** The S3 settings of a service: the local stand-in (or, left out, S3_ENDPOINT / AWS credentials from the environment) and the buckets. */
export function s3Env(s3: MeshEndpoints['s3'], buckets: MeshEndpoints['buckets']): Record<string, string> {
  return {
    ...(s3 ? { S3_ENDPOINT: s3.endpoint, AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: 'us-east-1' } : {}),
    S3_INPUT_BUCKET: buckets.input,
    S3_OUTPUT_BUCKET: buckets.output,
    S3_THUMBNAIL_OUTPUT_BUCKET: buckets.thumbnails,
    S3_WORK_BUCKET: buckets.work,
  };
}

export function meshEnv(o: MeshEndpoints): Record<string, string> {
  return {
    NATS_URL: o.natsUrl,
    MONGODB_URI: o.mongoUri,
    ...s3Env(o.s3, o.buckets),
    APP_API_KEY: o.apiKey,
    PORT: String(o.apiPort),
    HOST: '127.0.0.1',
    MAIN_API_ENDPOINT: o.backendUrl,
    MAIN_API_KEY: o.backendKey,
    // The local backend stand-in speaks plain http, which the notifier refuses unless allowed.
    ...(o.backendUrl.startsWith('http:') ? { WEBHOOK_ALLOW_HTTP: '1' } : {}),
    LOG_LEVEL: o.logLevel ?? 'info',
    // Several services on one host: each picks a free port for /metrics and reports it when ready.
    METRICS_PORT: '0',
    METRICS_HOST: '127.0.0.1',
    // Encodes of this mesh yield to each other, not to those of another mesh on the same machine (tests run two at once).
    ENCODE_YIELD_DIR: join(tmpdir(), `video-mesh-encodes-${process.pid}-${o.apiPort}`),
  };
}
