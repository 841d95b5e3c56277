/**
 * notifier: events.<jobId> (job.playable, job.failed) -> PUT {MAIN_API_ENDPOINT}/video/processing/result
 *
 * Reads the event stream with its own durable consumer; every other event is acked and skipped.
 * Each sent (or finally refused) notification is recorded as a notification.sent event on the job.
 */
import { publishEvent, runService, runWorker, STREAMS } from '@mesh/bus';
import { EVENTS_SUBJECT_PREFIX, int, JobEvent, str, url, type Env } from '@mesh/common';
import { sendWebhook, type WebhookStatus } from './webhook.ts';

const config = (env: Env) => ({
  target: { endpoint: url(env, 'MAIN_API_ENDPOINT'), apiKey: str(env, 'MAIN_API_KEY'), timeoutMs: int(env, 'WEBHOOK_TIMEOUT_MS', 10_000, { min: 100 }) },
  maxDeliver: int(env, 'WEBHOOK_MAX_TRIES', 8, { min: 1, max: 100 }),
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
      maxDeliver: config.maxDeliver,
      ackWaitMs: common.ackWaitMs,
      drainMs: common.drainMs,
      async handle(event, { log }) {
        const status = STATUS[event.type];
        if (!status) return;
        const httpStatus = await sendWebhook(config.target, event.jobId, status);
        log.info({ status, httpStatus }, 'backend notified');
        await publishEvent(bus, { type: 'notification.sent', jobId: event.jobId, status, httpStatus }, `${event.jobId}:notified:${status}`);
      },
      async onGiveUp(event, _raw, err) {
        if (!event) return;
        const status = STATUS[event.type];
        if (!status) return;
        const httpStatus = (err as { httpStatus?: number }).httpStatus ?? 0;
        log.error({ jobId: event.jobId, status, httpStatus }, 'backend notification given up');
        await publishEvent(bus, { type: 'notification.sent', jobId: event.jobId, status, httpStatus }, `${event.jobId}:notified:${status}`);
        await publishEvent(bus, { type: 'stage.failed', jobId: event.jobId, stage: 'notify', code: 'WEBHOOK_REJECTED', reason: err instanceof Error ? err.message : String(err), fatal: false });
      },
    });
    return [worker];
  },
});
