/**
 * events.<jobId> -> the backend's webhooks (webhook.ts): the result notification on job.playable and
 * job.failed, and, when the backend opted in (WEBHOOK_EVENTS), an event webhook for each of job.playable,
 * rendition.ready (one per rung, when a published manifest is the first to hold it), job.completed and
 * job.failed. What each needs (renditions, manifest URLs, previews) travels in the event itself.
 *
 * Reads the event stream with its own durable consumer; every other event is acked and skipped.
 * A backend that is down or answers 408, 429 or 5xx is retried with exponential backoff and jitter, at
 * most WEBHOOK_MAX_TRIES times; another 4xx or a redirect is not retried. Every try is recorded on the
 * job (notification.sent) with a reason that names no address; the log line keeps the backend's host.
 */
import { publishEvent, runWorker, STREAMS, type Bus, type Worker } from '@mesh/bus';
import { eventFitsSubject, EVENTS_SUBJECT_PREFIX, isPermanent, JobEvent, msgId, reasonOf, type CommonConfig, type Logger, type WebhookEvent } from '@mesh/common';
import type { NotifierConfig } from './config.ts';
import { sendWebhook, statusOf, webhookId, WebhookError, type EventBody, type EventWebhook, type Notification, type Webhook, type WebhookStatus } from './webhook.ts';

const STATUS: Partial<Record<JobEvent['type'], WebhookStatus>> = { 'job.playable': 'SUCCESS', 'job.failed': 'FAILED' };

/** The notification an event asks for, if any. Events written before they carried the job attempt are attempt 1. */
export function notificationOf(event: JobEvent): Notification | undefined {
  const status = STATUS[event.type];
  if (!status) return undefined;
  const attempt = event.type === 'job.playable' || event.type === 'job.failed' ? (event.attempt ?? 1) : 1;
  return { taskId: event.jobId, attempt, status };
}

/** The event webhooks `event` asks for among the `wanted` ones (WEBHOOK_EVENTS). */
export function eventWebhooksOf(event: JobEvent, wanted: readonly WebhookEvent[]): EventWebhook[] {
  const make = (type: WebhookEvent, attempt: number | undefined, body: Omit<EventBody, 'type' | 'taskId' | 'attempt' | 'at'>): EventWebhook => {
    const a = attempt ?? 1;
    return { taskId: event.jobId, attempt: a, event: type, ...(body.rendition ? { rendition: body.rendition } : {}), body: { type, taskId: event.jobId, attempt: a, at: event.at, ...body } };
  };
  const urls = (e: { url?: string | undefined; hls?: { url: string } | undefined; storyboard?: { url: string } | undefined }) => ({ dash: e.url ?? null, hls: e.hls?.url ?? null, storyboard: e.storyboard?.url ?? null });
  switch (event.type) {
    case 'job.playable':
      return wanted.includes('job.playable') ? [make('job.playable', event.attempt, { renditions: event.renditions ?? [], urls: urls(event) })] : [];
    case 'manifest.published':
      // One per rung, once: the manifest that first holds it (its URLs fetch it from then on).
      return wanted.includes('rendition.ready') ? (event.added ?? []).map((rendition) => make('rendition.ready', event.attempt, { rendition, renditions: event.renditions, urls: urls(event) })) : [];
    case 'job.completed':
      return wanted.includes('job.completed') ? [make('job.completed', event.attempt, { renditions: event.renditions, urls: urls(event) })] : [];
    case 'job.failed':
      return wanted.includes('job.failed') ? [make('job.failed', event.attempt, { renditions: [], urls: urls({}), error: { stage: event.stage, code: event.code, reason: event.reason } })] : [];
    default:
      return [];
  }
}

/** Every call `event` asks for: the result notification first, then the opt-in events. */
export function webhooksOf(event: JobEvent, wanted: readonly WebhookEvent[]): Webhook[] {
  const n = notificationOf(event);
  return [...(n ? [n] : []), ...eventWebhooksOf(event, wanted)];
}

/**
 * Webhooks this process has settled (delivered, or refused for good), so the retry of an event that asks
 * for several resends only those still owed. Bounded; a retry on another replica may resend one, with the
 * same webhook-id and Idempotency-Key (delivery is at least once either way).
 */
const SETTLED_KEPT = 10_000;

export function startNotifier({ bus, log, config, common }: { bus: Bus; log: Logger; config: NotifierConfig; common: CommonConfig }): Promise<Worker> {
  const host = new URL(config.target.endpoint).host;
  const settled = new Set<string>();
  const settle = (id: string) => {
    settled.add(id);
    if (settled.size > SETTLED_KEPT) settled.delete(settled.values().next().value!);
  };
  const gaveUp = (jobId: string, err: unknown) => publishEvent(bus, { type: 'stage.failed', jobId, stage: 'notify', code: 'WEBHOOK_REJECTED', reason: reasonOf(err), fatal: false });
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
      const hooks = webhooksOf(event, config.events).filter((w) => !settled.has(webhookId(w)));
      if (hooks.length === 0) return 'skipped';
      const failures: { w: Webhook; err: unknown }[] = [];
      for (const w of hooks) {
        const status = statusOf(w);
        const what = 'event' in w ? { event: w.event, ...(w.rendition ? { rendition: w.rendition } : {}) } : {};
        // One record per try of this job attempt's call: a retried job's tries are not repeats of the first one's.
        const record = (httpStatus: number, outcome: 'delivered' | 'retrying' | 'gave_up', error?: string) =>
          publishEvent(
            bus,
            { type: 'notification.sent', jobId: w.taskId, status, ...what, httpStatus, attempt: tryNo, outcome, ...(error ? { error } : {}) },
            msgId({ jobId: w.taskId, attempt: w.attempt }, 'notified', ...('event' in w ? [w.event, ...(w.rendition ? [w.rendition] : [])] : [status]), tryNo),
          );
        try {
          const httpStatus = await sendWebhook(config.target, w);
          log.info({ status, ...what, jobAttempt: w.attempt, httpStatus, try: tryNo, host }, 'backend notified');
          await record(httpStatus, 'delivered');
          settle(webhookId(w));
        } catch (err) {
          const last = isPermanent(err) || tryNo >= config.maxTries;
          const httpStatus = err instanceof WebhookError ? err.httpStatus : 0;
          // The log may name the host and Node's own words; the job's status gets the plain reason only.
          log.warn({ status, ...what, jobAttempt: w.attempt, httpStatus, try: tryNo, host, err: reasonOf(err), detail: err instanceof Error && err.cause ? reasonOf(err.cause) : undefined }, 'backend not notified');
          await record(httpStatus, last ? 'gave_up' : 'retrying', reasonOf(err));
          failures.push({ w, err });
        }
      }
      if (failures.length === 0) return;
      // Retried while any call may still get through; one refused for good meanwhile is recorded as given up now.
      const retry = failures.find((f) => !isPermanent(f.err) && tryNo < config.maxTries);
      if (!retry) throw failures[0]!.err;
      for (const f of failures.filter((f) => isPermanent(f.err))) {
        settle(webhookId(f.w));
        await gaveUp(event.jobId, f.err);
      }
      throw retry.err;
    },
    async onGiveUp(event, _raw, err) {
      if (!event || webhooksOf(event, config.events).length === 0) return;
      await gaveUp(event.jobId, err);
    },
  });
}
