/**
 * A whole local system for end-to-end tests: nats-server (or a JetStream cluster of several), the S3
 * stand-in, the MongoDB-compatible server, a backend webhook receiver, and the eight services as separate
 * processes.
 */
import { readFile } from 'node:fs/promises';
import { createS3, publicUrl, putObject } from '@mesh/storage';
import { meshEnv, startMesh, startMongo, startNats, startNatsCluster, s3ClientConfig, startS3, startWebhookReceiver, type Mesh, type NatsCluster, type NatsServer, type S3Server, type MongoServer, type ServiceName, type WebhookReceiver } from '@mesh/testkit';
import { ContractError, openApiContract, type Contract } from '@mesh/testkit/contract';
import type { S3Client } from '@aws-sdk/client-s3';
import { openApiDocument } from '../../services/ingest-api/src/openapi.ts';

export const BUCKETS = { input: 'e2e-input', output: 'e2e-output', thumbnails: 'e2e-thumbs', work: 'e2e-work' } as const;
export const API_KEY = 'e2e-api-key';
export const BACKEND_KEY = 'e2e-backend-key';

export interface System<N extends NatsServer | NatsCluster = NatsServer> {
  nats: N;
  s3server: S3Server;
  mongo: MongoServer;
  backend: WebhookReceiver;
  mesh: Mesh;
  s3: S3Client;
  api: string;
  /** Every line each service printed, by process id. */
  logs: Map<string, string[]>;
  stop(): Promise<void>;
}

/** A system on either kind of NATS, for the helpers below. */
export type AnySystem = System<NatsServer | NatsCluster>;

export interface SystemOptions {
  replicas?: Partial<Record<ServiceName, number>>;
  apiPort: number;
  env?: Record<string, string>;
  backend?: Parameters<typeof startWebhookReceiver>[0];
  /** Each service logs in as its own NATS user, allowed only its subjects (as deployed). */
  natsUsers?: boolean;
  /** A JetStream cluster of this many nodes instead of one server: the services get every node in NATS_URL and NATS_REPLICAS = nodes. */
  natsCluster?: number;
  /** How long each service may take to start (default 30 s): more on a machine shared with other work. */
  startTimeoutMs?: number;
}

export function startSystem(o: SystemOptions & { natsCluster: number }): Promise<System<NatsCluster>>;
export function startSystem(o: SystemOptions & { natsCluster?: undefined }): Promise<System<NatsServer>>;
export async function startSystem(o: SystemOptions): Promise<AnySystem> {
  const users = o.natsUsers ?? false;
  const nats = o.natsCluster ? await startNatsCluster({ nodes: o.natsCluster, users }) : await startNats({ users });
  // Buckets created at start with CORS, so a browser can play what the mesh writes.
  const s3server = await startS3({ buckets: Object.values(BUCKETS) });
  const mongo = await startMongo();
  const backend = await startWebhookReceiver(o.backend);
  const s3 = createS3(s3ClientConfig(s3server));
  const logs = new Map<string, string[]>();
  const mesh = await startMesh({
    replicas: o.replicas ?? {},
    ...(o.startTimeoutMs ? { timeoutMs: o.startTimeoutMs } : {}),
    serviceEnv: (name) => nats.serviceEnv(name),
    env: {
      ...meshEnv({ natsUrl: nats.url, mongoUri: mongo.uri, s3: s3server, buckets: BUCKETS, apiKey: API_KEY, apiPort: o.apiPort, backendUrl: backend.url, backendKey: BACKEND_KEY }),
      ...(o.natsCluster ? { NATS_REPLICAS: String(o.natsCluster) } : {}),
      ...o.env,
    },
    onLine: (id, line) => {
      if (!logs.has(id)) logs.set(id, []);
      logs.get(id)!.push(line);
      if (process.env['E2E_LOGS']) console.log(`[${id}] ${line}`);
    },
  });
  return {
    nats,
    s3server,
    mongo,
    backend,
    mesh,
    s3,
    api: `http://127.0.0.1:${o.apiPort}`,
    logs,
    async stop() {
      await mesh.stop();
      await Promise.allSettled([backend.stop(), mongo.stop(), s3server.stop(), nats.stop()]);
    },
  };
}

export const headers = { ApiKey: API_KEY, 'content-type': 'application/json' };

let contract: Contract | undefined;

/**
 * `fetch` to the API at `path`, the answer checked against the API's OpenAPI document (route, status,
 * Content-Type, body; ContractError when it breaks it). Every call to the API in the end-to-end tests
 * goes through here.
 */
export function api(sys: AnySystem, path: string, init: RequestInit = {}): Promise<Response> {
  contract ??= openApiContract(openApiDocument());
  return contract.fetch(sys.api + path, init);
}

export async function submit(sys: AnySystem, body: Record<string, unknown>): Promise<string> {
  const res = await api(sys, '/video/encoding', { method: 'POST', headers, body: JSON.stringify(body) });
  if (res.status !== 200) throw new Error(`POST /video/encoding: ${res.status} ${await res.text()}`);
  return (await res.json()) as string;
}

export async function putInput(sys: AnySystem, key: string, path: string): Promise<void> {
  await putObject(sys.s3, { bucket: BUCKETS.input, key }, await readFile(path), { contentType: 'video/mp4' });
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Job = Record<string, any>;

/** Where the package of `objectKey` can be fetched from: the base_url a client would send. */
export function outputBaseUrl(sys: AnySystem, objectKey: string): string {
  return `${publicUrl(sys.s3server.endpoint, { bucket: BUCKETS.output, key: objectKey })}/`;
}

export async function getJob(sys: AnySystem, taskId: string): Promise<Job> {
  const res = await api(sys, `/video/encoding/${taskId}`, { headers });
  if (res.status !== 200) throw new Error(`GET: ${res.status} ${await res.text()}`);
  return (await res.json()) as Job;
}

/** Polls GET until the job reaches one of `states`; an API that is down or restarting is waited for. */
export async function waitForState(sys: AnySystem, taskId: string, states: string[], timeoutMs = 120_000): Promise<Job> {
  const deadline = Date.now() + timeoutMs;
  let job: Job = {};
  while (Date.now() < deadline) {
    job = await getJob(sys, taskId).catch((err: unknown) => {
      // An API that breaks its document is a failure, not an API that is away.
      if (err instanceof ContractError) throw err;
      return { unavailable: String(err) };
    });
    if (states.includes(job['state'])) return job;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`job ${taskId} not ${states.join('/')} within ${timeoutMs} ms: ${JSON.stringify(job)}`);
}

/**
 * Polls GET until the job reaches one of `states` and no stage is still running: the stage that
 * completes a job reports itself done a moment after the job's phase changes.
 */
export async function waitForSettled(sys: AnySystem, taskId: string, states: string[], timeoutMs = 120_000): Promise<Job> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const job = await waitForState(sys, taskId, states, Math.max(1, deadline - Date.now()));
    if (Object.values(job['stages'] as Record<string, { state: string }>).every((s) => s.state !== 'running')) return job;
    if (Date.now() > deadline) throw new Error(`job ${taskId}: stages still running: ${JSON.stringify(job['stages'])}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Waits until service `id` has logged a line with all of `fields`, and returns it. */
export async function waitForLog(sys: AnySystem, id: string, fields: Record<string, unknown>, timeoutMs = 60_000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = logLines(sys, id, fields)[0];
    if (line) return line;
    if (Date.now() > deadline) throw new Error(`${id} did not log ${JSON.stringify(fields)} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Lines of service `id` whose JSON has all of `fields`. */
export function logLines(sys: AnySystem, id: string, fields: Record<string, unknown>): Record<string, unknown>[] {
  return (sys.logs.get(id) ?? [])
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return {};
      }
    })
    .filter((rec) => Object.entries(fields).every(([k, v]) => rec[k] === v));
}

/** Calls `get` every 200 ms until `ok` holds for what it returns (a call that throws counts as not yet); past `ms` throws with the last value. */
export async function until<T>(get: () => Promise<T>, ok: (v: T) => boolean, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await get().catch(() => undefined);
    if (v !== undefined && ok(v)) return v;
    if (Date.now() > end) throw new Error(`timed out; last ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
