/**
 * ingest-api alone, as a process, on its own nats-server and MongoDB stand-in: for tests and benchmarks
 * of the API that drive jobs by publishing their events themselves (no stage runs, no S3 is touched).
 */
import { freePort, startMongo, startNats, type MongoServer, type NatsServer } from './servers.ts';
import { meshEnv, startService, type ServiceProcess } from './mesh.ts';

export interface LoneApi {
  url: string;
  apiKey: string;
  nats: NatsServer;
  mongo: MongoServer;
  process: ServiceProcess;
  /** Stops the API process and starts a fresh one on the same servers, port and settings. */
  restart(): Promise<void>;
  /** POSTs a job (its work waits in the queue: no downloader runs) and answers its task id. */
  submit(objectKey?: string): Promise<string>;
  stop(): Promise<void>;
}

export async function startLoneApi(o: { env?: Record<string, string>; onLine?: (line: string) => void } = {}): Promise<LoneApi> {
  const [nats, mongo] = await Promise.all([startNats(), startMongo()]);
  const port = await freePort();
  const apiKey = 'lone-api-key-0123456789abcdef0123456789';
  const env = {
    ...meshEnv({
      natsUrl: nats.url,
      mongoUri: mongo.uri,
      buckets: { input: 'lone-in', output: 'lone-out', thumbnails: 'lone-thumbs', work: 'lone-work' },
      apiKey,
      apiPort: port,
      backendUrl: 'http://127.0.0.1:9/unused',
      backendKey: 'unused',
      logLevel: 'warn',
    }),
    ...o.env,
  };
  const launch = async () => {
    const proc = startService('ingest-api', env, o.onLine ? { onLine: (_id, line) => o.onLine!(line) } : {});
    if (await Promise.race([proc.ready.then(() => true), proc.exited.then(() => false)])) return proc;
    throw new Error('ingest-api exited at start');
  };
  const proc = await launch().catch(async (err: unknown) => {
    await Promise.all([nats.stop(), mongo.stop()]);
    throw err;
  });
  const url = `http://127.0.0.1:${port}`;
  let n = 0;
  const api: LoneApi = {
    url,
    apiKey,
    nats,
    mongo,
    process: proc,
    async restart() {
      await api.process.stop();
      api.process = await launch();
    },
    async submit(objectKey = `videos/lone-${process.pid}-${++n}-${Date.now()}.mp4`) {
      const res = await fetch(`${url}/video/encoding`, {
        method: 'POST',
        headers: { ApiKey: apiKey, 'content-type': 'application/json' },
        body: JSON.stringify({ object_key: objectKey, base_url: 'https://cdn.example.test/v/', video_id: `v${n}`, has_audio: true }),
      });
      if (res.status !== 200) throw new Error(`POST /video/encoding answered ${res.status}: ${await res.text()}`);
      return (await res.json()) as string;
    },
    async stop() {
      await api.process.stop();
      await Promise.all([nats.stop(), mongo.stop()]);
    },
  };
  return api;
}
