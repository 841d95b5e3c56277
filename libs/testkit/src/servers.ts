/**
 * Real servers as child processes on free ports with their own temp dirs, like nats.js's test launcher:
 * nats-server with JetStream, s3rver (S3), jongodb (MongoDB wire protocol, in memory). Each waits for
 * readiness, keeps its output in a log file, and is killed with its parent if that exits first.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { natsPasswordVariable, natsUserOf, natsUsers, NATS_USERS, renderNatsAuthorization, type NatsUser } from '@mesh/bus';
import { deployedRungs, sleep, type NatsAuth } from '@mesh/common';

/** The preset ladders (ladders/*.json at the repo's root). */
const LADDERS = fileURLToPath(new URL('../../../ladders/', import.meta.url));

const require = createRequire(import.meta.url);
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

export async function freePort(): Promise<number> {
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

export async function tempDir(prefix: string): Promise<{ path: string; remove(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `${prefix}-`));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

interface Launched {
  child: ChildProcess;
  logFile: string;
  stop(): Promise<void>;
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
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exited || Date.now() > deadline) {
      await stop();
      const log = await readFile(logFile, 'utf8').catch(() => '');
      throw new Error(`${name} did not start (${exited ? `exited with ${child.exitCode}` : `not ready in ${timeoutMs} ms`}): ${cmd} ${args.join(' ')}\n${log.split('\n').slice(-20).join('\n')}`);
    }
    if (await ready().catch(() => false)) return { child, logFile, stop };
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
  const users = o.users ? Object.fromEntries([...NATS_USERS, 'admin'].map((user) => [user, { user, password: `p${randomBytes(24).toString('hex')}` }])) as Record<NatsUser | 'admin', NatsAuth> : undefined;
  const config: string[] = [];
  const env: Record<string, string> = {};
  if (users) {
    const file = join(storeDir, 'users.conf');
    const variable = (user: string) => `$${natsPasswordVariable(user)}`;
    // The users the deployments run: every preset ladder's rungs allowed (deploy/nats/users.conf).
    await writeFile(file, renderNatsAuthorization([...natsUsers(variable, deployedRungs(LADDERS, {})), { user: 'admin', password: variable('admin') }]));
    for (const { user, password } of Object.values(users)) env[natsPasswordVariable(user)] = password;
    config.push('-c', file);
  }
  const start = () =>
    launch('nats-server', o.bin ?? 'nats-server', [...config, '-js', '-sd', storeDir, '-a', '127.0.0.1', '-p', String(port), '-m', String(monitorPort)], logFile, () => httpOk(`http://127.0.0.1:${monitorPort}/healthz?js-enabled-only=true`), { env });
  let server = await start();
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    monitorPort,
    storeDir,
    ...(users ? { users } : {}),
    serviceEnv(name): Record<string, string> {
      if (!users) return {};
      const { user, password } = users[natsUserOf(name)];
      return { NATS_USER: user, NATS_PASSWORD: password };
    },
    logFile,
    stop: () => server.stop(),
    async restart() {
      await server.stop();
      server = await start();
    },
  };
}

export interface S3Server {
  endpoint: string;
  port: number;
  dir: string;
  accessKeyId: string;
  secretAccessKey: string;
  stop(): Promise<void>;
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
