/**
 * notifier: events.<jobId> (job.playable, job.failed) -> PUT {MAIN_API_ENDPOINT}/video/processing/result
 *
 * Reads the event stream with its own durable consumer; every other event is acked and skipped.
 * A backend that is down or answers 5xx is retried with exponential backoff and jitter, at most
 * WEBHOOK_MAX_TRIES times; a 4xx is not retried. Every try is recorded on the job (notification.sent),
 * so its status shows the outcome of the last one.
 */
import { publishEvent, runService, runWorker, STREAMS } from '@mesh/bus';
import { EVENTS_SUBJECT_PREFIX, int, isPermanent, JobEvent, reasonOf, str, url, type Env } from '@mesh/common';
import { sendWebhook, type WebhookStatus } from './webhook.ts';

const config = (env: Env) => ({
  target: { endpoint: url(env, 'MAIN_API_ENDPOINT'), apiKey: str(env, 'MAIN_API_KEY'), timeoutMs: int(env, 'WEBHOOK_TIMEOUT_MS', 10_000, { min: 100 }) },
  maxTries: int(env, 'WEBHOOK_MAX_TRIES', 8, { min: 1, max: 100 }),
});

const STATUS: Partial<Record<JobEvent['type'], WebhookStatus>> = { 'job.playable': 'SUCCESS', 'job.failed': 'FAILED' };

await runService({
  name: 'notifier',
  config,
  async start({ bus, log, config, common }) {
    const worker = await runWorker({
      bus,
      log,
      source: { stream: STREAMS.events.name, durable: 'notifier', subject: `${EVENTS_SUBJECT_PREFIX}.>`, schema: JobEvent, jobIdOf: (e) => e.jobId },
      concurrency: 4,
      maxDeliver: config.maxTries,
      ackWaitMs: common.ackWaitMs,
      drainMs: common.drainMs,
      async handle(event, { log, deliveryCount: attempt }) {
        const status = STATUS[event.type];
        if (!status) return;
        const record = (httpStatus: number, outcome: 'delivered' | 'retrying' | 'gave_up', error?: string) =>
          publishEvent(bus, { type: 'notification.sent', jobId: event.jobId, status, httpStatus, attempt, outcome, ...(error ? { error } : {}) }, `${event.jobId}:notified:${status}:${attempt}`);
        try {
          const httpStatus = await sendWebhook(config.target, event.jobId, status);
          log.info({ status, httpStatus, attempt }, 'backend notified');
          await record(httpStatus, 'delivered');
        } catch (err) {
          const last = isPermanent(err) || attempt >= config.maxTries;
          await record((err as { httpStatus?: number }).httpStatus ?? 0, last ? 'gave_up' : 'retrying', reasonOf(err));
          throw err;
        }
      },
      async onGiveUp(event, _raw, err) {
        if (!event || !STATUS[event.type]) return;
        await publishEvent(bus, { type: 'stage.failed', jobId: event.jobId, stage: 'notify', code: 'WEBHOOK_REJECTED', reason: reasonOf(err), fatal: false });
      },
    });
    return [worker];
  },
});
