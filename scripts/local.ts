/**
 * `npm start`: the whole mesh on this machine, on real servers started as processes.
 *
 * Starts nats-server (JetStream, store in .data/nats; with NATS_CLUSTER=3, a three-node JetStream cluster
 * on loopback with stores in .data/nats-1..3, every stream, KV bucket and consumer on all three), a local S3 server (s3rver, .data/s3), the
 * MongoDB-compatible server (in memory) and a stand-in for the backend webhook, then the eight services
 * as separate processes with prefixed logs, supervised as an orchestrator would: a service that exits is
 * reported (name, code or signal) and restarted with backoff, except one stopped by bad configuration
 * (exit 78). It converts a generated sample video, prints the dashboard and API addresses and how to
 * submit more, and serves until Ctrl-C.
 *
 * The API key is APP_API_KEY when set (never printed), else one generated on first start into
 * .data/api-key (printed). Point any piece at a real server instead: NATS_URL, MONGODB_URI, S3_ENDPOINT
 * (+ AWS credentials), MAIN_API_ENDPOINT. Ports: PORT (API and dashboard, 8000), LOCAL_NATS_PORT (4222; a
 * cluster takes that many client ports from it upward, then as many route ports, then monitoring ports),
 * LOCAL_S3_PORT (4569), LOCAL_MONGO_PORT (27017), LOCAL_WEBHOOK_PORT (8090). DATA_DIR moves .data;
 * SAMPLE=0 skips the sample conversion.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { int } from '@mesh/common';
import { join, resolve } from 'node:path';
import { publicUrl } from '@mesh/storage';
import {
  formatLogLine,
  localApiKey,
  makeClip,
  meshEnv,
  natsServerVersion,
  REPO_ROOT,
  serializesCompareAndSet,
  startMesh,
  startMongo,
  startNats,
  startNatsCluster,
  startS3,
  startWebhookReceiver,
  type S3Server,
  type SupervisorEvent,
} from '@mesh/testkit';

const env = process.env;
const dataDir = resolve(env['DATA_DIR'] || join(REPO_ROOT, '.data'));
const stops: (() => Promise<unknown>)[] = [];
const say = (text: string) => process.stdout.write(`\n\x1b[1m${text}\x1b[0m\n`);

async function main() {
  await mkdir(dataDir, { recursive: true });
  const buckets = {
    input: env['S3_INPUT_BUCKET'] ?? 'video-input',
    output: env['S3_OUTPUT_BUCKET'] ?? 'video-output',
    thumbnails: env['S3_THUMBNAIL_OUTPUT_BUCKET'] ?? 'video-thumbnails',
    work: env['S3_WORK_BUCKET'] ?? 'video-mesh-work',
  };

  let natsUrl = env['NATS_URL'];
  // NATS_CLUSTER=3: three nodes, and every stream, KV bucket and consumer kept on all of them.
  const nodes = int(env, 'NATS_CLUSTER', 1, { min: 1, max: 5 });
  const ownCluster = !natsUrl && nodes > 1;
  if (ownCluster) {
    const port = Number(env['LOCAL_NATS_PORT'] ?? 4222);
    const cluster = await startNatsCluster({ nodes, port, storeDirs: Array.from({ length: nodes }, (_, i) => join(dataDir, `nats-${i + 1}`)) });
    stops.push(() => cluster.stop());
    natsUrl = cluster.url;
    say(`NATS: a ${nodes}-node JetStream cluster, ${cluster.nodes.map((node) => `${node.name} ${node.url} (monitoring http://127.0.0.1:${node.monitorPort})`).join(', ')}`);
    const version = await natsServerVersion();
    if (!serializesCompareAndSet(version)) {
      say(
        `Note: nats-server ${version} lets two compare-and-set writes to one key of a replicated KV bucket both succeed (nats-server#4320, fixed in 2.9.21), ` +
          `so two changes to one job's record at the same moment can lose one. Good for trying failover; run a cluster you rely on with nats-server 2.10 or later, as docker-compose.yml and the Helm values do.`,
      );
    }
  } else if (!natsUrl) {
    const nats = await startNats({ port: Number(env['LOCAL_NATS_PORT'] ?? 4222), storeDir: join(dataDir, 'nats') });
    stops.push(() => nats.stop());
    natsUrl = nats.url;
  }
  let s3: S3Server | undefined;
  if (!env['S3_ENDPOINT']) {
    s3 = await startS3({ port: Number(env['LOCAL_S3_PORT'] ?? 4569), dir: join(dataDir, 's3'), buckets: Object.values(buckets) });
    stops.push(() => s3!.stop());
  }
  let mongoUri = env['MONGODB_URI'];
  if (!mongoUri) {
    const mongo = await startMongo({ port: Number(env['LOCAL_MONGO_PORT'] ?? 27017) });
    stops.push(() => mongo.stop());
    mongoUri = mongo.uri;
  }
  let webhookUrl = env['MAIN_API_ENDPOINT'];
  if (!webhookUrl) {
    const receiver = await startWebhookReceiver({ port: Number(env['LOCAL_WEBHOOK_PORT'] ?? 8090) });
    stops.push(() => receiver.stop());
    webhookUrl = receiver.url;
    const seen = new Set<object>();
    setInterval(() => {
      for (const r of receiver.received) {
        if (seen.has(r)) continue;
        seen.add(r);
        console.log(formatLogLine('backend (stand-in)', JSON.stringify({ level: 30, time: new Date().toISOString(), msg: `${r.method} ${r.path}`, body: r.body })));
      }
    }, 250).unref();
  }

  const { key: apiKey, shown: keyShown, curlHeader } = await localApiKey(env, dataDir);
  // With an operators' key set, /admin needs it: named, never printed.
  const adminHeader = env['ADMIN_API_KEY'] ? `-H "ApiKey: $ADMIN_API_KEY"` : curlHeader;
  const port = env['PORT'] ?? '8000';
  const servicesEnv = {
    ...meshEnv({
      natsUrl,
      mongoUri,
      ...(s3 ? { s3 } : {}),
      buckets,
      apiKey,
      apiPort: Number(port),
      backendUrl: webhookUrl,
      backendKey: env['MAIN_API_KEY'] ?? 'local-backend-key',
      logLevel: env['LOG_LEVEL'] ?? 'info',
    }),
    HOST: env['HOST'] ?? '127.0.0.1',
    ...(ownCluster && !env['NATS_REPLICAS'] ? { NATS_REPLICAS: String(nodes) } : {}),
  };
  say('Starting the 8 services...');
  // A first start on a busy or slow machine can take a while: waited for, not given up on after 30 s.
  const mesh = await startMesh({ env: servicesEnv, onLine: (id, line) => console.log(formatLogLine(id, line)), supervise: { report }, timeoutMs: 120_000 });
  stops.unshift(() => mesh.stop());
  const api = `http://127.0.0.1:${port}`;
  say(`Mesh is up.\n  Dashboard: ${api}/\n  API:       ${api}  ${keyShown}\n  API docs:  ${api}/docs (to read and try)`);
  say(`Metrics: ${mesh.processes.map((p) => `${p.id} http://127.0.0.1:${p.metricsPort}/metrics`).join(', ')}; queue depths: curl -s ${api}/admin/queues ${adminHeader}`);
  if (!env['OTEL_EXPORTER_OTLP_ENDPOINT']) say('Traces: set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://127.0.0.1:4318 for a local Jaeger) to export them; trace_id is on every log line of a job.');

  if (env['SAMPLE'] !== '0') await convertSample(api, { apiKey, curlHeader }, { s3Endpoint: s3?.endpoint ?? env['S3_ENDPOINT'], outputBucket: buckets.output });
  say(
    [
      'Submit your own video:',
      `  curl -s -X POST ${api}/uploads ${curlHeader} -H 'content-type: application/json' -d '{"filename":"my.mp4"}'`,
      `  curl -X PUT --upload-file my.mp4 -H 'Content-Type: video/mp4' "<upload_url from above>"`,
      `  curl -s -X POST ${api}/video/encoding ${curlHeader} -H 'content-type: application/json' \\`,
      `       -d '{"object_key":"<object_key from above>","base_url":"<where the package will be served>/","video_id":"my-video","has_audio":true}'`,
      `  curl -s ${api}/video/encoding/<task_id> ${curlHeader}`,
      `  curl -N ${api}/video/encoding/<task_id>/events ${curlHeader}   # live progress until it settles`,
      'Serving until Ctrl-C.',
    ].join('\n'),
  );
}

/** The supervisor's lines, among the services' own: an exit is a warning, a service left stopped an error. */
function report(event: SupervisorEvent): void {
  const level = { exited: 40, back: 30, given_up: 50 }[event.kind];
  console.log(formatLogLine('supervisor', JSON.stringify({ level, time: new Date().toISOString(), msg: event.message })));
}

async function convertSample(api: string, key: { apiKey: string; curlHeader: string }, out: { s3Endpoint: string | undefined; outputBucket: string }) {
  const { apiKey, curlHeader } = key;
  const clip = await makeClip(join(dataDir, 'sample.mp4'), { width: 1280, height: 720, seconds: 10, audio: true });
  say('Converting a generated sample (10 s, 1280x720, with audio)...');
  const headers = { ApiKey: apiKey, 'content-type': 'application/json' };
  const upload = (await (await fetch(`${api}/uploads`, { method: 'POST', headers, body: JSON.stringify({ filename: 'sample.mp4' }) })).json()) as { object_key: string; upload_url: string };
  const put = await fetch(upload.upload_url, { method: 'PUT', headers: { 'content-type': 'video/mp4' }, body: await readFile(clip) });
  if (!put.ok) throw new Error(`sample upload failed: ${put.status}`);
  // base_url = where the package will be served from: here, the S3 endpoint itself.
  const outputBase = out.s3Endpoint ? `${publicUrl(out.s3Endpoint, { bucket: out.outputBucket, key: upload.object_key })}/` : `https://example.invalid/${upload.object_key}/`;
  const started = Date.now();
  const taskId = (await (
    await fetch(`${api}/video/encoding`, { method: 'POST', headers, body: JSON.stringify({ object_key: upload.object_key, base_url: outputBase, video_id: 'sample', has_audio: true }) })
  ).json()) as string;
  let job: {
    task_status: string;
    state: string;
    renditions: string[];
    manifest: { url: string } | null;
    thumbnail: { bucket: string; key: string } | null;
    error: unknown;
    waiting_for: { service: string; reason: string }[];
  };
  let playableAt = 0;
  let waitingShown = '';
  for (;;) {
    job = (await (await fetch(`${api}/video/encoding/${taskId}`, { headers })).json()) as typeof job;
    if (job.task_status === 'SUCCESS' && !playableAt) playableAt = Date.now() - started;
    // A stage with nobody to run it: say so once, rather than waiting in silence.
    const waiting = job.waiting_for.map((w) => `${w.service}: ${w.reason}`).join('; ');
    if (waiting && waiting !== waitingShown) say(`Sample waits for ${waiting}`);
    waitingShown = waiting;
    if (job.state === 'complete' || job.state === 'failed') break;
    if (Date.now() - started > 300_000) throw new Error('sample did not finish within 5 minutes');
    await new Promise((r) => setTimeout(r, 250));
  }
  if (job.state === 'failed') {
    say(`Sample FAILED: ${JSON.stringify(job.error)}`);
    return;
  }
  say(
    [
      `Sample converted: task ${taskId}`,
      `  first playable manifest after ${(playableAt / 1000).toFixed(1)} s, all renditions (${job.renditions.join(', ')}) after ${((Date.now() - started) / 1000).toFixed(1)} s`,
      `  manifest:  ${job.manifest?.url}`,
      `  thumbnail: ${!job.thumbnail ? 'none (see stages.thumbnail in the status)' : out.s3Endpoint ? publicUrl(out.s3Endpoint, job.thumbnail) : `s3://${job.thumbnail.bucket}/${job.thumbnail.key}`}`,
      `  status:    curl -s ${api}/video/encoding/${taskId} ${curlHeader}`,
    ].join('\n'),
  );
}

let stopping = false;
async function shutdown(code: number) {
  if (stopping) return;
  stopping = true;
  say('Stopping everything...');
  for (const stop of stops) await stop().catch((err: unknown) => console.error(err));
  process.exit(code);
}
process.on('SIGINT', () => void shutdown(0));
process.on('SIGTERM', () => void shutdown(0));

main().catch(async (err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  await shutdown(1);
});
