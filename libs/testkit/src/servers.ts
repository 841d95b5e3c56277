/**
 * Real servers as child processes on free ports with their own temp dirs, like nats.js's test launcher:
 * nats-server with JetStream, s3rver (S3), jongodb (MongoDB wire protocol, in memory). Each waits for
 * readiness, keeps its output in a log file, and is killed with its parent if that exits first.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { createWriteStream, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { natsPasswordVariable, natsUserOf, natsUsers, NATS_USERS, renderNatsAuthorization, type NatsUser } from '@mesh/bus';
import { deployedRungs, sleep, type NatsAuth } from '@mesh/common';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager, type ClusterInfo, type JetStreamManager } from '@nats-io/jetstream';

/** The preset ladders (ladders/*.json at the repo's root). */
const LADDERS = fileURLToPath(new URL('../../../ladders/', import.meta.url));

const require = createRequire(import.meta.url);
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/** A port free on 127.0.0.1 now, for a server about to be started on it. */
export async function freePort(): Promise<number> {
  const low = ephemeralLow();
  // Below the kernel's ephemeral range: a port handed out for `listen(0)` or an outgoing connection (a
  // service's metrics server, a client socket) can never take it between this choice and the bind that
  // follows, as happened to an API port once in a benchmark. Random, so parallel suites rarely meet.
  for (let tries = 0; low > MIN_PORT + 1000 && tries < 50; tries++) {
    const port = MIN_PORT + Math.floor(Math.random() * (low - MIN_PORT));
    if (await bindable(port)) return port;
  }
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const address = srv.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** The lowest port we pick ourselves: above the well-known and most registered ones. */
const MIN_PORT = 20000;

/** The start of the kernel's ephemeral port range (Linux), or 65536 when unknown: then `listen(0)` decides. */
function ephemeralLow(): number {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 65536;
  } catch {
    return 65536;
  }
}

function bindable(port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

export async function freePortRange(n: number): Promise<number> {
  for (;;) {
    const base = await freePort();
    if (base + n > 65535) continue;
    const ports = Array.from({ length: n }, (_, i) => base + i);
    if ((await Promise.all(ports.map(bindable))).every(Boolean)) return base;
  }
}

export async function tempDir(prefix: string): Promise<{ path: string; remove(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `${prefix}-`));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

interface Launched {
  child: ChildProcess;
  logFile: string;
  /** SIGTERM, then SIGKILL after 5 s. */
  stop(): Promise<void>;
  /** SIGKILL: no goodbye, as when a host dies. */
  kill(): Promise<void>;
}

/** Spawns `cmd`, logging to `logFile`, and resolves once `ready()` holds (or rejects with the log tail). */
async function launch(name: string, cmd: string, args: string[], logFile: string, ready: () => Promise<boolean>, o: { timeoutMs?: number; env?: Record<string, string> } = {}): Promise<Launched> {
  const timeoutMs = o.timeoutMs ?? 15_000;
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(o.env ? { env: { ...process.env, ...o.env } } : {}) });
  live.add(child);
  const out = createWriteStream(logFile, { flags: 'a' });
  child.stdout!.pipe(out);
  child.stderr!.pipe(out);
  let exited = false;
  const exit = new Promise<void>((resolve) =>
    child.once('exit', () => {
      exited = true;
      live.delete(child);
      resolve();
    }),
  );
  child.once('error', () => undefined);
  const stop = async () => {
    if (!exited) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exit;
      clearTimeout(timer);
    }
  };
  const kill = async () => {
    if (!exited) child.kill('SIGKILL');
    await exit;
  };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exited || Date.now() > deadline) {
      // Why, before stop() makes every process one that exited.
      const why = exited ? `exited with ${child.exitCode}` : `not ready in ${timeoutMs} ms`;
      await stop();
      const log = await readFile(logFile, 'utf8').catch(() => '');
      throw new Error(`${name} did not start (${why}): ${cmd} ${args.join(' ')}\n${log.split('\n').slice(-20).join('\n')}`);
    }
    if (await ready().catch(() => false)) return { child, logFile, stop, kill };
    await sleep(50);
  }
}

async function httpOk(url: string): Promise<boolean> {
  const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
  await res.body?.cancel();
  return res.ok;
}

export interface NatsServer {
  url: string;
  port: number;
  monitorPort: number;
  storeDir: string;
  /** With `users`: each service's NATS user (libs/bus permissions.ts) and `admin`, allowed everything (for tests). */
  users?: Record<NatsUser | 'admin', NatsAuth>;
  /** NATS_USER and NATS_PASSWORD of the user service `name` logs in as (nothing without `users`). */
  serviceEnv(name: string): Record<string, string>;
  /** Where nats-server writes its log (permission violations included). */
  logFile: string;
  stop(): Promise<void>;
  /** Stops and starts again on the same port and store: JetStream data survives. */
  restart(): Promise<void>;
}

/**
 * nats-server with JetStream. With `users`, it runs the config the deployments run (`authorization { users }`
 * rendered from libs/bus permissions.ts, passwords from its environment) plus an `admin` user for the test
 * itself; each user gets a fresh random password.
 */
export async function startNats(o: { port?: number; storeDir?: string; bin?: string; users?: boolean } = {}): Promise<NatsServer> {
  const port = o.port ?? (await freePort());
  const monitorPort = await freePort();
  const storeDir = o.storeDir ?? (await tempDir('nats')).path;
  await mkdir(storeDir, { recursive: true });
  const logFile = join(storeDir, 'nats-server.log');
  const users = o.users ? newNatsUsers() : undefined;
  const config: string[] = [];
  if (users) config.push('-c', await writeUsersConf(storeDir));
  const start = () =>
    launch('nats-server', o.bin ?? 'nats-server', [...config, '-js', '-sd', storeDir, '-a', '127.0.0.1', '-p', String(port), '-m', String(monitorPort)], logFile, () => httpOk(`http://127.0.0.1:${monitorPort}/healthz?js-enabled-only=true`), { env: passwordEnv(users) });
  let server = await start();
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    monitorPort,
    storeDir,
    ...(users ? { users } : {}),
    serviceEnv: (name) => serviceEnvOf(users, name),
    logFile,
    stop: () => server.stop(),
    async restart() {
      await server.stop();
      server = await start();
    },
  };
}

type NatsUsers = Record<NatsUser | 'admin', NatsAuth>;

/** Every service's NATS user and `admin`, each with a fresh random password. */
function newNatsUsers(): NatsUsers {
  return Object.fromEntries([...NATS_USERS, 'admin'].map((user) => [user, { user, password: `p${randomBytes(24).toString('hex')}` }])) as NatsUsers;
}

/** users.conf in `dir`: the users the deployments run plus `admin`, each password read from the server's environment. */
async function writeUsersConf(dir: string): Promise<string> {
  const file = join(dir, 'users.conf');
  const variable = (user: string) => `$${natsPasswordVariable(user)}`;
  // The users the deployments run: every preset ladder's rungs allowed (deploy/nats/users.conf).
  await writeFile(file, renderNatsAuthorization([...natsUsers(variable, deployedRungs(LADDERS, {})), { user: 'admin', password: variable('admin') }]));
  return file;
}

/** The environment nats-server reads the passwords from. */
function passwordEnv(users: NatsUsers | undefined): Record<string, string> {
  return Object.fromEntries(Object.values(users ?? {}).map(({ user, password }) => [natsPasswordVariable(user), password]));
}

function serviceEnvOf(users: NatsUsers | undefined, name: string): Record<string, string> {
  if (!users) return {};
  const { user, password } = users[natsUserOf(name)];
  return { NATS_USER: user, NATS_PASSWORD: password };
}

/** `nats-server --version`: e.g. `2.9.10`. */
export async function natsServerVersion(bin = 'nats-server'): Promise<string> {
  const { stdout } = await promisify(execFile)(bin, ['--version']);
  return /v?(\d+\.\d+\.\d+)/.exec(stdout)?.[1] ?? stdout.trim();
}

/**
 * Whether a replicated stream serializes compare-and-set (a KV update or create at an expected revision):
 * before 2.9.21 two at once on one key could both succeed (nats-server#4320).
 */
export function serializesCompareAndSet(version: string): boolean {
  const [major = 0, minor = 0, patch = 0] = version.split('.').map(Number);
  return major > 2 || (major === 2 && (minor > 9 || (minor === 9 && patch >= 21)));
}

export interface NatsNode {
  /** server_name: `nats-1`, `nats-2`, ... */
  name: string;
  url: string;
  port: number;
  clusterPort: number;
  monitorPort: number;
  storeDir: string;
  logFile: string;
  readonly running: boolean;
  /** SIGTERM (nats-server shuts down cleanly), then SIGKILL after 5 s. */
  stop(): Promise<void>;
  /** SIGKILL. */
  kill(): Promise<void>;
  /** Starts a stopped node again on its ports and store; resolves once it answers /healthz (JetStream current with the meta leader). */
  start(): Promise<void>;
}

export interface NatsCluster {
  nodes: NatsNode[];
  /** Every node's client URL. */
  urls: string[];
  /** The same, comma-separated: NATS_URL. */
  url: string;
  users?: NatsUsers;
  serviceEnv(name: string): Record<string, string>;
  /** The node that leads `stream` now (from the JetStream API, asked through any running node). */
  streamLeader(stream: string): Promise<NatsNode>;
  /**
   * Waits until `node` answers /healthz and is current in every stream and consumer it holds a copy of
   * (the leader, or a replica with `current` and no lag), as the JetStream API reports them.
   */
  waitCurrent(node: NatsNode, timeoutMs?: number): Promise<void>;
  /** Runs `fn` with a JetStream manager on the cluster (as `admin` with users), closed after. */
  withJsm<T>(fn: (jsm: JetStreamManager) => Promise<T>): Promise<T>;
  stop(): Promise<void>;
}

/**
 * A JetStream cluster of `nodes` nats-servers on loopback, as deploy/nats/nats.conf runs it: each node its
 * own client, cluster and monitoring port, `server_name` and store, one `cluster { name, routes }` listing
 * every node. With `port`, the client ports are port, port+1, ..., the cluster ports follow them and the
 * monitoring ports follow those (`npm start`: 4222-4224, 4225-4227, 4228-4230); otherwise free ports.
 * `storeDirs` names each node's store (default: temp dirs); its config and log are written there too.
 */
export async function startNatsCluster(o: { nodes?: number; users?: boolean; port?: number; storeDirs?: string[]; name?: string; bin?: string } = {}): Promise<NatsCluster> {
  const n = o.nodes ?? 3;
  const port = async (i: number) => (o.port ? o.port + i : freePort());
  const ports = await Promise.all(Array.from({ length: 3 * n }, (_, i) => port(i)));
  const users = o.users ? newNatsUsers() : undefined;
  const names = Array.from({ length: n }, (_, i) => `nats-${i + 1}`);
  const routes = names.map((_, i) => `nats-route://127.0.0.1:${ports[n + i]}`);
  const nodes = await Promise.all(
    names.map(async (name, i): Promise<NatsNode> => {
      const storeDir = o.storeDirs?.[i] ?? (await tempDir(name)).path;
      await mkdir(storeDir, { recursive: true });
      const [clientPort, clusterPort, monitorPort] = [ports[i]!, ports[n + i]!, ports[2 * n + i]!];
      const conf = join(storeDir, 'nats-server.conf');
      await writeFile(
        conf,
        [
          `server_name: ${JSON.stringify(name)}`,
          `listen: "127.0.0.1:${clientPort}"`,
          `http: "127.0.0.1:${monitorPort}"`,
          `jetstream { store_dir: ${JSON.stringify(storeDir)} }`,
          // Every node, itself included (a node skips the route to itself), as in deploy/nats/nats.conf.
          `cluster {\n  name: ${JSON.stringify(o.name ?? 'video-mesh')}\n  listen: "127.0.0.1:${clusterPort}"\n  routes: [\n${routes.map((r) => `    ${JSON.stringify(r)}`).join('\n')}\n  ]\n}`,
          ...(users ? [`include ${JSON.stringify(basename(await writeUsersConf(storeDir)))}`] : []),
          '',
        ].join('\n'),
      );
      const logFile = join(storeDir, 'nats-server.log');
      let server: Launched | undefined;
      const running = () => server !== undefined && server.child.exitCode === null && server.child.signalCode === null;
      return {
        name,
        url: `nats://127.0.0.1:${clientPort}`,
        port: clientPort,
        clusterPort,
        monitorPort,
        storeDir,
        logFile,
        get running() {
          return running();
        },
        async start() {
          if (running()) return;
          // /healthz answers 200 once JetStream is current with the meta leader: a lone first node waits for its peers.
          server = await launch(`nats-server ${name}`, o.bin ?? 'nats-server', ['-c', conf], logFile, () => httpOk(`http://127.0.0.1:${monitorPort}/healthz`), { env: passwordEnv(users), timeoutMs: 30_000 });
        },
        stop: async () => server?.stop(),
        kill: async () => server?.kill(),
      };
    }),
  );
  const urls = nodes.map((node) => node.url);
  const withJsm = async <T>(fn: (jsm: JetStreamManager) => Promise<T>): Promise<T> => {
    const nc = await connect({ servers: nodes.filter((node) => node.running).map((node) => node.url), ...(users ? { user: users.admin.user, pass: users.admin.password } : {}) });
    try {
      return await fn(await jetstreamManager(nc));
    } finally {
      await nc.close();
    }
  };
  const cluster: NatsCluster = {
    nodes,
    urls,
    url: urls.join(','),
    ...(users ? { users } : {}),
    serviceEnv: (name) => serviceEnvOf(users, name),
    withJsm,
    async streamLeader(stream) {
      const leader = await withJsm(async (jsm) => (await jsm.streams.info(stream)).cluster?.leader);
      const node = nodes.find((x) => x.name === leader);
      if (!node) throw new Error(`stream ${stream} has no leader now (${leader ?? 'none'})`);
      return node;
    },
    async waitCurrent(node, timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      let behind = 'not answering /healthz';
      const holds = (c: ClusterInfo | undefined) => c?.leader === node.name || !!c?.replicas?.some((r) => r.name === node.name);
      const current = (c: ClusterInfo | undefined) => c?.leader === node.name || !!c?.replicas?.some((r) => r.name === node.name && r.current && !r.offline && !r.lag);
      for (;;) {
        behind = await withJsm(async (jsm) => {
          if (!(await httpOk(`http://127.0.0.1:${node.monitorPort}/healthz`).catch(() => false))) return 'not answering /healthz';
          for await (const s of jsm.streams.list()) {
            if (holds(s.cluster) && !current(s.cluster)) return `stream ${s.config.name} ${JSON.stringify(s.cluster)}`;
            for await (const c of jsm.consumers.list(s.config.name)) if (holds(c.cluster) && !current(c.cluster)) return `consumer ${s.config.name} > ${c.name} ${JSON.stringify(c.cluster)}`;
          }
          return '';
        }).catch((err: unknown) => String(err));
        if (!behind) return;
        if (Date.now() > deadline) throw new Error(`${node.name} not current within ${timeoutMs} ms: ${behind}`);
        await sleep(100);
      }
    },
    async stop() {
      await Promise.all(nodes.map((node) => node.stop()));
    },
  };
  try {
    // Together: the meta group needs a quorum before any node is ready.
    await Promise.all(nodes.map((node) => node.start()));
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

export interface S3Server {
  endpoint: string;
  port: number;
  dir: string;
  accessKeyId: string;
  secretAccessKey: string;
  stop(): Promise<void>;
}

/** How a client reaches the local S3 server (for `createS3` of @mesh/storage): its endpoint and keys. */
export function s3ClientConfig(server: S3Server): { endpoint: string; region: string; credentials: { accessKeyId: string; secretAccessKey: string } } {
  return { endpoint: server.endpoint, region: 'us-east-1', credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey } };
}

/** Lets a browser on any origin play what the local S3 serves (GET/HEAD with Range) and PUT uploads. */
const CORS = `<CORSConfiguration>
  <CORSRule>
    <AllowedOrigin>*</AllowedOrigin>
    <AllowedMethod>GET</AllowedMethod>
    <AllowedMethod>HEAD</AllowedMethod>
    <AllowedMethod>PUT</AllowedMethod>
    <AllowedHeader>*</AllowedHeader>
    <ExposeHeader>Content-Length</ExposeHeader>
    <ExposeHeader>Content-Range</ExposeHeader>
    <ExposeHeader>ETag</ExposeHeader>
    <MaxAgeSeconds>3000</MaxAgeSeconds>
  </CORSRule>
</CORSConfiguration>
`;

/**
 * s3rver as a process (our launcher, s3rver-main.ts: s3rver plus the conditional requests of real S3,
 * If-Match on GET/HEAD and If-Match / If-None-Match: * on writes); `buckets` are created at start with
 * permissive CORS. Credentials: S3RVER/S3RVER.
 */
export async function startS3(o: { port?: number; dir?: string; buckets?: string[] } = {}): Promise<S3Server> {
  const port = o.port ?? (await freePort());
  const dir = o.dir ?? (await tempDir('s3')).path;
  await mkdir(dir, { recursive: true });
  const corsFile = join(dir, '.cors.xml');
  await writeFile(corsFile, CORS);
  const options = { port, address: '127.0.0.1', directory: join(dir, 'data'), buckets: (o.buckets ?? []).map((name) => ({ name, configs: [corsFile] })) };
  await mkdir(options.directory, { recursive: true });
  const endpoint = `http://127.0.0.1:${port}`;
  const main = join(dirname(fileURLToPath(import.meta.url)), 's3rver-main.ts');
  const server = await launch('s3rver', process.execPath, [main, JSON.stringify(options)], join(dir, 's3rver.log'), () => httpOk(`${endpoint}/`));
  return { endpoint, port, dir, accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', stop: server.stop };
}

export interface MongoServer {
  uri: string;
  port: number;
  stop(): Promise<void>;
  /** Stops and starts again on the same port: every document is gone (the server keeps them in memory). */
  restart(): Promise<void>;
}

/** The MongoDB-wire-compatible jongodb server (in memory: data is gone when it stops). */
export async function startMongo(o: { port?: number } = {}): Promise<MongoServer> {
  const port = o.port ?? (await freePort());
  const pkgDir = join(require.resolve('@jongodb/memory-server-bin-linux-x64-gnu/package.json'), '..');
  const logDir = (await tempDir('mongo')).path;
  const logFile = join(logDir, 'jongodb.log');
  const start = async () => {
    await writeFile(logFile, '');
    return launch('jongodb', join(pkgDir, 'bin', 'jongodb'), [`--host=127.0.0.1`, `--port=${port}`], logFile, async () => (await readFile(logFile, 'utf8')).includes('JONGODB_URI='));
  };
  let server = await start();
  const printed = /JONGODB_URI=(\S+)/.exec(await readFile(logFile, 'utf8'))![1]!;
  return {
    uri: printed,
    port,
    async stop() {
      await server.stop();
      await rm(logDir, { recursive: true, force: true });
    },
    async restart() {
      await server.stop();
      server = await start();
    },
  };
}
