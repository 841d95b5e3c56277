/**
 * ingest-api: the REST API, and the projector that keeps the MongoDB job documents up to date.
 *
 * A job starts with `job.created` on the event stream (written straight into the projection too, so an
 * immediate GET finds it), then `work.download` queues the first stage.
 */
import { deadLetterCount, getDeadLetter, listDeadLetters, publishEvent, publishWork, queueDepths, redrive, runService } from '@mesh/bus';
import { int, msgId, optional, s3Config, str, url, type Env } from '@mesh/common';
import { cancelJob, openJobStates, openProjectionStore, rebuildProjection, reopenJob, runProjector } from '@mesh/jobs';
import { createS3, presignPut } from '@mesh/storage';
import { annotate } from '@mesh/telemetry';
import { registerQueueMetrics } from './queue-metrics.ts';
import { createApp } from './app.ts';

const config = (env: Env) => ({
  apiKey: str(env, 'APP_API_KEY'),
  port: int(env, 'PORT', 8000, { min: 0, max: 65535 }),
  host: str(env, 'HOST', '0.0.0.0'),
  mongoUri: url(env, 'MONGODB_URI', 'mongodb://127.0.0.1:27017/video_mesh', ['mongodb:', 'mongodb+srv:']),
  s3: s3Config(env),
  uploadUrlTtlSec: int(env, 'UPLOAD_URL_TTL_SEC', 3600, { min: 60, max: 7 * 24 * 3600 }),
  // Where clients reach S3, when not at S3_ENDPOINT (MinIO inside Docker): upload URLs are signed for it.
  publicS3Url: optional(env, 'S3_PUBLIC_URL'),
});

await runService({
  name: 'ingest-api',
  config,
  async start({ bus, log, config, common }) {
    const store = await openProjectionStore(config.mongoUri);
    const projector = await runProjector(bus, store, log.child({ part: 'projector' }), { ackWaitMs: common.ackWaitMs });
    const s3 = createS3(config.s3);
    const presigner = config.publicS3Url ? createS3({ ...config.s3, endpoint: config.publicS3Url }) : s3;
    const states = await openJobStates(bus);

    registerQueueMetrics(() => queueDepths(bus), () => deadLetterCount(bus));
    const app = createApp({
      queues: async () => ({ queues: await queueDepths(bus), dead_letters: await deadLetterCount(bus) }),
      apiKey: config.apiKey,
      log,
      store,
      async submit(spec) {
        annotate({ 'job.id': spec.jobId, 'video.id': spec.videoId });
        const { ack, event } = await publishEvent(bus, { type: 'job.created', jobId: spec.jobId, spec }, msgId(spec, 'created'));
        await store.apply(event, ack.seq);
        await publishWork(bus, 'download', { kind: 'download', job: spec }, msgId(spec, 'download'));
      },
      async presignUpload(key, contentType) {
        const ref = { bucket: config.s3.inputBucket, key };
        return { url: await presignPut(presigner, ref, { expiresSec: config.uploadUrlTtlSec, contentType }), bucket: ref.bucket, expiresInSec: config.uploadUrlTtlSec };
      },
      rebuildProjection: () => rebuildProjection(bus, store),
      async retry(view) {
        const reopened = await reopenJob(states, view._id, 'retried by the client');
        if (!reopened) throw new Error(`job ${view._id} is not failed`);
        // Into the projection now, so a GET right after the answer already shows the job running.
        await store.apply(reopened.published.event, reopened.published.ack.seq);
        const { attempt } = reopened;
        const spec = { jobId: view._id, objectKey: view.objectKey, baseUrl: view.baseUrl, videoId: view.videoId, hasAudio: view.hasAudio, attempt };
        await publishWork(bus, 'download', { kind: 'download', job: spec }, msgId(spec, 'download'));
        return attempt;
      },
      async cancel(view) {
        const published = await cancelJob(states, view._id);
        if (published) await store.apply(published.event, published.ack.seq);
        return published !== null;
      },
      deadLetters: {
        list: () => listDeadLetters(bus),
        async redrive(seq) {
          const letter = await getDeadLetter(bus, seq);
          // A failed job must be open again, or the stages would drop the re-driven work as moot.
          if (letter?.jobId) {
            const reopened = await reopenJob(states, letter.jobId, `dead letter ${seq} re-driven to ${letter.subject}`);
            if (reopened) await store.apply(reopened.published.event, reopened.published.ack.seq);
          }
          return redrive(bus, seq);
        },
      },
    });
    const server = app.listen(config.port, config.host);
    await new Promise<void>((resolve, reject) => server.once('listening', resolve).once('error', reject));
    const address = server.address();
    log.info({ port: typeof address === 'object' && address ? address.port : config.port }, 'ingest-api listening');

    return [
      { stop: () => new Promise<void>((resolve) => server.close(() => resolve())) },
      projector,
      { stop: () => store.close() },
    ];
  },
});
