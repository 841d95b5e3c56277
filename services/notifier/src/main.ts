/**
 * notifier: events.<jobId> (job.playable, job.failed) -> PUT {MAIN_API_ENDPOINT}/video/processing/result
 * (notifier.ts: what is sent and retried; webhook.ts: the request and its signature; config.ts: settings).
 */
import { runService } from '@mesh/bus';
import { notifierConfig } from './config.ts';
import { startNotifier } from './notifier.ts';

await runService({
  name: 'notifier',
  config: notifierConfig,
  start: async (ctx) => [await startNotifier(ctx)],
});
