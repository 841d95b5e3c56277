/// <reference lib="dom" />
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'node:http';
import { chromium, type BrowserContext } from 'playwright-core';
import { tempDir } from '@mesh/testkit';
import { openApiContract } from '@mesh/testkit/contract';
import { DOCS_CSP } from '../src/docs.ts';
import { openApiDocument } from '../src/openapi.ts';
import { KEY, startFakeApi, type FakeApi } from './fakes.ts';

const contract = openApiContract(openApiDocument());
let api: FakeApi;

beforeAll(async () => {
  api = await startFakeApi();
});
afterAll(() => api.close());

/** A GET sent as written: fetch would resolve `..` before sending it. */
function rawGet(path: string): Promise<{ status: number; type: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${api.base}/`, { path }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => resolve({ status: res.statusCode!, type: res.headers['content-type'], body }));
    });
    req.on('error', reject).end();
  });
}

describe('GET /docs', () => {
  it('is a page whose every script, style and icon comes from this server, with the type it is', async () => {
    const res = await contract.fetch(`${api.base}/docs`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(res.headers.get('content-security-policy')).toBe(DOCS_CSP);
    const html = await res.text();
    const refs = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    expect(refs.length).toBeGreaterThanOrEqual(5);
    const types: Record<string, string> = { css: 'text/css; charset=utf-8', js: 'text/javascript; charset=utf-8', png: 'image/png' };
    for (const ref of refs) {
      expect(ref, ref).toMatch(/^\/docs\/[\w.-]+$/);
      const asset = await contract.fetch(api.base + ref);
      expect(asset.status, ref).toBe(200);
      expect(asset.headers.get('content-type'), ref).toBe(types[ref.split('.').pop()!]);
      expect(asset.headers.get('x-content-type-options'), ref).toBe('nosniff');
      expect((await asset.arrayBuffer()).byteLength, ref).toBeGreaterThan(100);
    }
  });

  it.each([
    '/docs/..%2F..%2Fpackage.json',
    '/docs/%2e%2e%2f%2e%2e%2fpackage.json',
    '/docs/..%5C..%5Cpackage.json',
    '/docs/swagger-initializer.js',
    '/docs/index.html',
    '/docs/swagger-ui-bundle.js.map',
    '/docs/constructor',
    '/docs/__proto__',
    '/docs/docs.html',
  ])('serves no other file: %s is 404', async (path) => {
    const res = await contract.fetch(api.base + path);
    expect(res.status).toBe(404);
    expect(((await res.json()) as { type: string }).type).toMatch(/not-found$/);
  });

  it.each(['/docs/../package.json', '/docs/../../package.json', '/docs/../src/main.ts', '/docs//etc/passwd'])('resolves no path sent as written: %s is 404', async (path) => {
    const res = await rawGet(path);
    expect(res.status).toBe(404);
    expect(res.type).toMatch(/^application\/problem\+json/);
    expect(res.body).not.toMatch(/"name"|import /);
  });
});

describe('the docs page in a browser', () => {
  const HOST = 'api.video-mesh.test';
  let context: BrowserContext;
  let profile: Awaited<ReturnType<typeof tempDir>>;
  beforeAll(async () => {
    profile = await tempDir('docs-chromium');
    context = await chromium.launchPersistentContext(profile.path, {
      executablePath: process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium',
      headless: true,
      // A public-looking name for the server: Swagger UI calls out to validator.swagger.io for such hosts
      // unless told not to (it stays quiet for localhost), and the test must see it try.
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', `--host-resolver-rules=MAP ${HOST} 127.0.0.1`],
    });
  });
  afterAll(async () => {
    await context?.close();
    await profile?.remove();
  });

  it('tries a route against this server with the key given under Authorize, loading nothing from elsewhere', async () => {
    const taskId = (await (await fetch(`${api.base}/video/encoding`, { method: 'POST', headers: { ApiKey: KEY }, body: JSON.stringify({ object_key: 'docs/try.mp4', base_url: 'https://cdn.test/', video_id: 'try' }) })).json()) as string;
    const page = await context.newPage();
    const requests: string[] = [];
    const problems: string[] = [];
    page.on('request', (r) => requests.push(r.url()));
    page.on('console', (m) => m.type() === 'error' && problems.push(m.text()));
    page.on('pageerror', (e) => problems.push(String(e)));

    const origin = api.base.replace('127.0.0.1', HOST);
    await page.goto(`${origin}/docs`);
    await page.locator('.info .title').filter({ hasText: 'video-mesh ingest API' }).waitFor();
    await page.locator('button.authorize').first().click();
    await page.locator('.auth-container input').fill(KEY);
    await page.locator('.auth-btn-wrapper button.authorize').click();
    await page.locator('.auth-btn-wrapper button.btn-done').click();

    const op = page.locator('#operations-tasks-getTask');
    await op.locator('.opblock-summary').first().click();
    await op.locator('button.try-out__btn').click();
    await op.locator('input[placeholder="task_id"]').fill(taskId);
    const answered = page.waitForResponse((r) => r.url().endsWith(`/video/encoding/${taskId}`));
    await op.locator('button.execute').click();
    const res = await answered;
    expect(res.status()).toBe(200);
    expect(await res.request().headerValue('apikey')).toBe(KEY);
    const shown = op.locator('.live-responses-table tbody tr.response').first();
    await expect.poll(() => shown.locator('.response-col_status').textContent()).toBe('200');
    expect(await shown.locator('.response-col_description code').textContent()).toContain('"task_status": "PENDING"');

    // The key stays in the page: nothing in the browser's storage.
    expect(await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie)).not.toContain(KEY);
    expect(requests.length).toBeGreaterThan(5);
    expect(requests.filter((u) => !u.startsWith(`${origin}/`))).toEqual([]);
    expect(problems).toEqual([]);
  }, 60_000);
});
