/**
 * ingest-api: the REST API, and the projector that keeps the MongoDB job documents up to date (one API
 * replica leads it at a time). Every job operation is a named function of libs/jobs (operations.ts).
 */
import { cachedFor, deadLetterCount, listDeadLetters, queueDepths, runService } from '@mesh/bus';
import { ConfigError, int, ladderConfig, MIN_SECRET_LENGTH, mongoUri, optional, s3Config, secret, str, url, type Env } from '@mesh/common';
import { cancelJobOp, getJob, openJobStates, openLiveFeed, openProjectionStore, openViewCache, rebuildProjection, redriveDeadLetter, retryJob, runProjector, submitJob, waitingFor, type JobsContext } from '@mesh/jobs';
import { createS3, getBytes, presignPut, publicEndpoint, publicUrl } from '@mesh/storage';
import { annotate } from '@mesh/telemetry';
import { startQueueHistory } from './queue-history.ts';
import { registerQueueMetrics } from './queue-metrics.ts';
import { sessionSigner } from './session.ts';
import { createApp } from './app.ts';

/** Mixed into the key that signs the dashboard's sessions (optional: the API keys alone make one): change it to end every session. */
function sessionSecret(env: Env): string | undefined {
  const value = optional(env, 'SESSION_SECRET');
  if (value !== undefined && value.length < MIN_SECRET_LENGTH) throw new ConfigError(`SESSION_SECRET must be at least ${MIN_SECRET_LENGTH} characters (e.g. openssl rand -hex 32), got ${value.length}`);
  return value;
}

const config = (env: Env) => ({
  apiKey: secret(env, 'APP_API_KEY'),
  adminApiKey: optional(env, 'ADMIN_API_KEY'),
  port: int(env, 'PORT', 8000, { min: 0, max: 65535 }),
  host: str(env, 'HOST', '0.0.0.0'),
  mongoUri: mongoUri(env, 'MONGODB_URI', 'mongodb://127.0.0.1:27017/video_mesh'),
  s3: s3Config(env),
  uploadUrlTtlSec: int(env, 'UPLOAD_URL_TTL_SEC', 3600, { min: 60, max: 7 * 24 * 3600 }),
  // Where clients reach S3, when not at S3_ENDPOINT (MinIO inside Docker): upload URLs are signed for it,
  // and the thumbnail and package links in answers point there.
  publicS3Url: optional(env, 'S3_PUBLIC_URL'),
  // The rungs a job may ask for, and the transcoders' queues to watch.
  ladder: ladderConfig(env),
  // Live progress streams: a comment this often keeps proxies from closing them; a dashboard that comes
  // back from further behind than this many events gets a reset instead of its backlog.
  sseHeartbeatMs: int(env, 'SSE_HEARTBEAT_MS', 15_000, { min: 100, max: 3_600_000 }),
  sseMaxBacklog: int(env, 'SSE_MAX_BACKLOG', 10_000, { min: 1, max: 1_000_000 }),
  // Job documents kept in memory for status reads (libs/jobs views.ts); 0: every read goes to MongoDB.
  viewCacheSize: int(env, 'VIEW_CACHE_SIZE', 20_000, { min: 0, max: 10_000_000 }),
  // The dashboard: its sessions, where it links traces to, how often its queue charts get a point.
  sessionSecret: sessionSecret(env),
  sessionTtlSec: int(env, 'SESSION_TTL_SEC', 8 * 3600, { min: 60, max: 7 * 24 * 3600 }),
  jaegerUiUrl: env['JAEGER_UI_URL']?.trim() ? url(env, 'JAEGER_UI_URL') : undefined,
  queueHistoryIntervalMs: int(env, 'QUEUE_HISTORY_INTERVAL_MS', 10_000, { min: 1000, max: 60_000 }),
});

/** The queue charts cover this much. */
const QUEUE_HISTORY_WINDOW_MS = 15 * 60_000;

await runService({
  name: 'ingest-api',
  config,
  // Applies the streams' limits and replicas (EVENTS_MAX_*, DEAD_LETTERS_MAX_*, NATS_REPLICAS) and keeps JOB_VIEWS.
  ownsStreams: true,
  async start({ bus, log, config, common }) {
    const store = await openProjectionStore(config.mongoUri);
    const projector = await runProjector(bus, store, log.child({ part: 'projector' }), { replicas: common.natsReplicas });
    const s3 = createS3(config.s3);
    const presigner = config.publicS3Url ? createS3({ ...config.s3, endpoint: config.publicS3Url }) : s3;
    // The uploader writes manifest URLs on the same base.
    const publicBase = publicEndpoint(config.publicS3Url, config.s3);
    const views = config.viewCacheSize > 0 ? openViewCache(bus, log.child({ part: 'views' }), { max: config.viewCacheSize }) : undefined;
    // Job status GETs share one read of the queues per second and a half: cheap, and fresh enough to tell a person why a job waits.
    const ctx: JobsContext = { bus, states: await openJobStates(bus, { replicas: common.natsReplicas }), store, log, queues: cachedFor(() => queueDepths(bus, config.ladder.rungs), 1500), ...(views ? { views } : {}) };
    // One reader of the job events for every live stream this process serves.
    const live = openLiveFeed({ bus, store, log: log.child({ part: 'live' }) }, { maxBacklog: config.sseMaxBacklog });
    const queues = async () => ({ queues: await queueDepths(bus, config.ladder.rungs), dead_letters: await deadLetterCount(bus) });

    registerQueueMetrics(() => queueDepths(bus, config.ladder.rungs), () => deadLetterCount(bus));
    const history = startQueueHistory(() => queueDepths(bus, config.ladder.rungs), { intervalMs: config.queueHistoryIntervalMs, windowMs: QUEUE_HISTORY_WINDOW_MS, log });
    const sessions = sessionSigner({ secret: config.sessionSecret, apiKey: config.apiKey, adminApiKey: config.adminApiKey, ttlSec: config.sessionTtlSec });
    const app = createApp({
      apiKey: config.apiKey,
      rungs: config.ladder.rungs.map((r) => r.name),
      ...(config.adminApiKey ? { adminApiKey: config.adminApiKey } : {}),
      sessions,
      ...(config.jaegerUiUrl ? { jaegerUiUrl: config.jaegerUiUrl } : {}),
      log,
      jobs: {
        submit(spec) {
          annotate({ 'job.id': spec.jobId, 'video.id': spec.videoId });
          return submitJob(ctx, spec);
        },
        get: (taskId) => getJob(ctx, taskId),
        list: (q) => store.list(q),
        thumbnail: (ref) => getBytes(s3, ref),
        waitingFor: (view) => waitingFor(ctx, view),
        retry: (taskId) => retryJob(ctx, taskId),
        cancel: async (taskId) => void (await cancelJobOp(ctx, taskId)),
      },
      async presignUpload(key, contentType) {
        const ref = { bucket: config.s3.inputBucket, key };
        return { url: await presignPut(presigner, ref, { expiresSec: config.uploadUrlTtlSec, contentType }), bucket: ref.bucket, expiresInSec: config.uploadUrlTtlSec };
      },
      links: {
        thumbnailUrl: (ref) => publicUrl(publicBase, ref),
        packageBaseUrl: (objectKey) => `${publicUrl(publicBase, { bucket: config.s3.outputBucket, key: objectKey })}/`,
      },
      admin: {
        rebuild: () => rebuildProjection(ctx),
        queues,
        deadLetters: () => listDeadLetters(bus),
        redrive: (seq) => redriveDeadLetter(ctx, seq),
        queueHistory: () => ({ intervalMs: history.intervalMs, windowMs: history.windowMs, samples: history.samples() }),
      },
      live: { feed: live, heartbeatMs: config.sseHeartbeatMs },
    });
    const server = app.listen(config.port, config.host);
    await new Promise<void>((resolve, reject) => server.once('listening', resolve).once('error', reject));
    const address = server.address();
    log.info({ port: typeof address === 'object' && address ? address.port : config.port }, 'ingest-api listening');

    return [
      {
        async stop() {
          const closed = new Promise<void>((resolve) => server.close(() => resolve()));
          // No new connections now; open event streams end (clients resume elsewhere), or close would wait for them.
          await live.stop();
          await closed;
        },
      },
      projector,
      { stop: async () => views?.stop() },
      { stop: async () => history.stop() },
      { stop: () => store.close() },
    ];
  },
});
