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
  NATS_USER: '',
  NATS_PASSWORD: '',
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
    ['ingest-api', { ...good, SESSION_SECRET: 'short' }, /SESSION_SECRET must be at least 32 characters/],
    ['ingest-api', { ...good, JAEGER_UI_URL: 'jaeger:16686' }, /JAEGER_UI_URL must use http: or https:/],
    ['ingest-api', { ...good, QUEUE_HISTORY_INTERVAL_MS: '100' }, /QUEUE_HISTORY_INTERVAL_MS must be between 1000 and 60000/],
    ['transcoder-720', { ...good, NATS_URL: 'http://127.0.0.1:4222' }, /NATS_URL must use nats:/],
    ['packager', { ...good, NATS_URL: 'nats://127.0.0.1:1,,nats://127.0.0.1:2' }, /NATS_URL has an empty entry/],
    // Before: pino threw on the unknown level, a stack trace instead of exit 78.
    ['thumbnailer', { ...good, LOG_LEVEL: 'verbose' }, /LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got "verbose"/],
    ['uploader', { ...good, METRICS_HOST: 'not a host!' }, /METRICS_HOST must be a host name or IP address/],
    ['downloader', { ...good, OTEL_BSP_SCHEDULE_DELAY: 'soon' }, /OTEL_BSP_SCHEDULE_DELAY must be an integer/],
    ['ingest-api', { ...good, MONGODB_URI: 'mongodb://app:s3cr3t-pw@db1:27017,db2:27017,db3/video?replicaSet=rs0&authSource=admin', PORT: 'x' }, /PORT must be an integer/],
    ['packager', { ...good, NATS_PASSWORD: `p${'0'.repeat(40)}` }, /NATS_USER is required when NATS_PASSWORD is set/],
    ['packager', { ...good, NATS_USER: 'packager' }, /NATS_PASSWORD is required when NATS_USER is set/],
    ['packager', { ...good, NATS_USER: 'pack ager', NATS_PASSWORD: `p${'0'.repeat(40)}` }, /NATS_USER must be 1-64 letters/],
  ])('%s with %j', async (name, env, message) => {
    const { code, output } = await startWith(name, env);
    expect(code).toBe(78);
    expect(output).toMatch(message);
  });

  it('never prints a password from a connection string it refuses', async () => {
    // Before: the error echoed the whole URI, password included.
    const { code, output } = await startWith('ingest-api', { ...good, MONGODB_URI: 'mongodb://app:s3cr3t-pw@db1:27017,,db2:27017/video?replicaSet=rs0' });
    expect(code).toBe(78);
    expect(output).toMatch(/MONGODB_URI must be a MongoDB URI.*app:\*\*\*@db1/);
    expect(output).not.toContain('s3cr3t-pw');
    const nats = await startWith('downloader', { ...good, NATS_URL: 'nats://svc:s3cr3t-pw@127.0.0.1:4222,nats://svc:s3cr3t-pw@bad host' });
    expect(nats.code).toBe(78);
    expect(nats.output).not.toContain('s3cr3t-pw');
  });

  it('warns about a secret shorter than 32 characters, naming it but never showing it', async () => {
    // NATS is unreachable here: the warning comes before the service connects; stop it once it is out.
    const lines: string[] = [];
    const p = startService('ingest-api', { ...good, APP_API_KEY: 'short-key-123', NATS_URL: 'nats://127.0.0.1:1' }, { onLine: (_id, line) => lines.push(line) });
    const deadline = Date.now() + 15_000;
    while (!lines.some((l) => l.includes('APP_API_KEY is 13 characters long')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    await p.kill();
    expect(lines.join('\n')).toMatch(/"level":40.*APP_API_KEY is 13 characters long; use at least 32/);
    expect(lines.join('\n')).not.toContain('short-key-123');
  });

  it('a NATS password nats-server would read differently stops the service, without showing it', async () => {
    const password = '12345678901234567890123456789012345;x';
    const { code, output } = await startWith('thumbnailer', { ...good, NATS_USER: 'thumbnailer', NATS_PASSWORD: password });
    expect(code).toBe(78);
    expect(output).toMatch(/NATS_PASSWORD must be a letter then at least 31 letters, digits, _ or -/);
    expect(output).not.toContain(password);
  });
});
