/** A service with a missing or malformed setting stops at start with one line naming it (exit 78). */
import { describe, expect, it } from 'vitest';
import { startService, type ServiceName } from '@mesh/testkit';

const good = {
  NATS_URL: 'nats://127.0.0.1:1',
  S3_INPUT_BUCKET: 'in-bucket',
  S3_OUTPUT_BUCKET: 'out-bucket',
  S3_THUMBNAIL_OUTPUT_BUCKET: 'thumbs',
  APP_API_KEY: 'k',
  MAIN_API_ENDPOINT: 'http://127.0.0.1:1',
  MAIN_API_KEY: 'k',
  WEBHOOK_ALLOW_HTTP: '1',
  WEBHOOK_SECRET: '',
};

async function startWith(name: ServiceName, env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const lines: string[] = [];
  // Clear what the test runner's environment might set.
  const cleared = Object.fromEntries(Object.keys(good).map((k) => [k, '']));
  const p = startService(name, { ...cleared, ...env }, { onLine: (_id, line) => lines.push(line) });
  const code = await p.exited;
  return { code, output: lines.join('\n') };
}

describe('configuration errors', () => {
  it.each<[ServiceName, Record<string, string>, RegExp]>([
    ['downloader', { ...good, S3_INPUT_BUCKET: '' }, /S3_INPUT_BUCKET is required but not set/],
    ['uploader', { ...good, S3_OUTPUT_BUCKET: 'UPPER_case' }, /S3_OUTPUT_BUCKET must be an S3 bucket name/],
    ['notifier', { ...good, MAIN_API_ENDPOINT: 'not a url' }, /MAIN_API_ENDPOINT must be a URL/],
    ['notifier', { ...good, MAIN_API_KEY: '' }, /MAIN_API_KEY is required/],
    ['notifier', { ...good, WEBHOOK_ALLOW_HTTP: '' }, /MAIN_API_ENDPOINT must use https:.*WEBHOOK_ALLOW_HTTP=1/],
    ['notifier', { ...good, WEBHOOK_ALLOW_HTTP: 'yes' }, /WEBHOOK_ALLOW_HTTP must be 1, true, 0 or false/],
    ['notifier', { ...good, WEBHOOK_SECRET: 'hunter2' }, /WEBHOOK_SECRET must be whsec_/],
    ['ingest-api', { ...good, APP_API_KEY: '' }, /APP_API_KEY is required/],
    ['ingest-api', { ...good, PORT: 'eighty' }, /PORT must be an integer/],
    ['ingest-api', { ...good, SSE_HEARTBEAT_MS: '5' }, /SSE_HEARTBEAT_MS must be/],
    ['transcoder-720', { ...good, NATS_URL: 'http://127.0.0.1:4222' }, /NATS_URL must use nats:/],
  ])('%s with %j', async (name, env, message) => {
    const { code, output } = await startWith(name, env);
    expect(code).toBe(78);
    expect(output).toMatch(message);
  });
});
