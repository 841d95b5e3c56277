/**
 * events.<jobId> (job.playable, job.failed) -> the backend's webhook (webhook.ts).
 *
 * Reads the event stream with its own durable consumer; every other event is acked and skipped.
 * A backend that is down or answers 408, 429 or 5xx is retried with exponential backoff and jitter, at
 * most WEBHOOK_MAX_TRIES times; another 4xx or a redirect is not retried. Every try is recorded on the
 * job (notification.sent) with a reason that names no address; the log line keeps the backend's host.
 */
import { publishEvent, runWorker, STREAMS, type Bus, type Worker } from '@mesh/bus';
import { eventFitsSubject, EVENTS_SUBJECT_PREFIX, isPermanent, JobEvent, msgId, reasonOf, type CommonConfig, type Logger } from '@mesh/common';
import type { NotifierConfig } from './config.ts';
import { sendWebhook, WebhookError, type Notification, type WebhookStatus } from './webhook.ts';

const STATUS: Partial<Record<JobEvent['type'], WebhookStatus>> = { 'job.playable': 'SUCCESS', 'job.failed': 'FAILED' };

/** The notification an event asks for, if any. Events written before they carried the job attempt are attempt 1. */
export function notificationOf(event: JobEvent): Notification | undefined {
  const status = STATUS[event.type];
  if (!status) return undefined;
  const attempt = event.type === 'job.playable' || event.type === 'job.failed' ? (event.attempt ?? 1) : 1;
  return { taskId: event.jobId, attempt, status };
}

export function startNotifier({ bus, log, config, common }: { bus: Bus; log: Logger; config: NotifierConfig; common: CommonConfig }): Promise<Worker> {
  const host = new URL(config.target.endpoint).host;
  return runWorker({
    bus,
    log,
    source: { stream: STREAMS.events.name, durable: 'notifier', subject: `${EVENTS_SUBJECT_PREFIX}.>`, schema: JobEvent, jobIdOf: (e) => e.jobId, fits: eventFitsSubject },
    concurrency: 4,
    maxDeliver: config.maxTries,
    settingsHint: 'ACK_WAIT_MS and WEBHOOK_MAX_TRIES',
    ackWaitMs: common.ackWaitMs,
    drainMs: common.drainMs,
    chaosKillAfterWork: common.chaosKillAfterWork,
    async handle(event, { log, deliveryCount: tryNo }) {
      const n = notificationOf(event);
      if (!n) return 'skipped';
      // One record per try of this job attempt's notification: a retried job's tries are not repeats of the first one's.
      const record = (httpStatus: number, outcome: 'delivered' | 'retrying' | 'gave_up', error?: string) =>
        publishEvent(bus, { type: 'notification.sent', jobId: n.taskId, status: n.status, httpStatus, attempt: tryNo, outcome, ...(error ? { error } : {}) }, msgId({ jobId: n.taskId, attempt: n.attempt }, 'notified', n.status, tryNo));
      try {
        const httpStatus = await sendWebhook(config.target, n);
        log.info({ status: n.status, jobAttempt: n.attempt, httpStatus, try: tryNo, host }, 'backend notified');
        await record(httpStatus, 'delivered');
      } catch (err) {
        const last = isPermanent(err) || tryNo >= config.maxTries;
        const httpStatus = err instanceof WebhookError ? err.httpStatus : 0;
        // The log may name the host and Node's own words; the job's status gets the plain reason only.
        log.warn({ status: n.status, jobAttempt: n.attempt, httpStatus, try: tryNo, host, err: reasonOf(err), detail: err instanceof Error && err.cause ? reasonOf(err.cause) : undefined }, 'backend not notified');
        await record(httpStatus, last ? 'gave_up' : 'retrying', reasonOf(err));
        throw err;
      }
    },
    async onGiveUp(event, _raw, err) {
      if (!event || !STATUS[event.type]) return;
      await publishEvent(bus, { type: 'stage.failed', jobId: event.jobId, stage: 'notify', code: 'WEBHOOK_REJECTED', reason: reasonOf(err), fatal: false });
    },
  });
}
