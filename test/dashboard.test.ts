/// <reference lib="dom" />
/**
 * The operations dashboard in a real browser (playwright-core driving Debian's Chromium) on one real
 * mesh with ADMIN_API_KEY set: sign in; a job submitted through the API goes through the stages to
 * complete in its row without a reload; its page plays the manifest and shows the thumbnail; a running
 * job is cancelled and a failed one retried from their pages (with the keyboard, and by pointer); a dead
 * letter is re-driven; the queues page shows every stage and its chart; the pages fit a phone's width;
 * the client key is refused the operators' actions. Any console error, uncaught error, CSP violation or
 * failed answer to the page fails the test.
 *
 * Screenshots are saved on every run (the directory is printed); with UPDATE_SCREENSHOTS=1, the jobs,
 * job and queues pages at 1366x800 also go to docs/screenshots/, which the README shows.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, DeleteBucketCommand } from '@aws-sdk/client-s3';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { deletePrefix, getBytes, listKeys, putObject } from '@mesh/storage';
import { freePort, makeClip, REPO_ROOT, tempDir } from '@mesh/testkit';
import { API_KEY, api, BUCKETS, getJob, headers, outputBaseUrl, putInput, startSystem, submit, waitForState, type System } from './support/harness.ts';
import { CHROMIUM } from './support/playback.ts';

const ADMIN_KEY = 'dashboard-admin-key-0123456789abcdef0123';
const JAEGER = 'http://jaeger.test:16686';
const adminHeaders = { ...headers, ApiKey: ADMIN_KEY };

let sys: System;
let dir: string;
let shots: string;
let short: string;
let long: string;
let context: BrowserContext;
let profile: Awaited<ReturnType<typeof tempDir>>;
let page: Page;
/** What went wrong in the page: console errors, uncaught errors, CSP violations, failed answers. */
const problems: string[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dashboard-'));
  shots = await mkdtemp(join(tmpdir(), 'dashboard-screenshots-'));
  console.log(`dashboard screenshots: ${shots}`);
  short = await makeClip(join(dir, 'short.mp4'), { width: 1280, height: 720, seconds: 6, audio: true });
  long = await makeClip(join(dir, 'long.mp4'), { width: 1280, height: 720, seconds: 24, audio: true });
  sys = await startSystem({
    apiPort: await freePort(),
    // A point on the queue charts every 2 s; a failing stage gives up after 2 tries.
    env: { ADMIN_API_KEY: ADMIN_KEY, QUEUE_HISTORY_INTERVAL_MS: '2000', MAX_DELIVER: '2', JAEGER_UI_URL: JAEGER, SESSION_SECRET: 'dashboard-test-session-secret-0123456789' },
    startTimeoutMs: 120_000,
  });
  profile = await tempDir('dashboard-chromium');
  context = await chromium.launchPersistentContext(profile.path, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1366, height: 800 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
  });
  // Injected by the browser itself, so the page's CSP does not apply to it: records what that CSP refused.
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()}`));
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('response', (r) => r.status() >= 400 && problems.push(`${r.request().method()} ${r.url()} -> ${r.status()}`));
}, 300_000);

afterEach(() => {
  const seen = problems.splice(0);
  expect(seen, 'no console errors, uncaught errors, CSP violations or failed requests').toEqual([]);
});

afterAll(async () => {
  await context?.close();
  await profile?.remove();
  await sys?.stop();
  await rm(dir, { recursive: true, force: true });
});

let n = 0;
async function newJob(clip: string | null, o: { name?: string } = {}): Promise<{ taskId: string; key: string; videoId: string }> {
  const key = `dashboard/${o.name ?? 'clip'}-${++n}.mp4`;
  if (clip) await putInput(sys, key, clip);
  const videoId = `${o.name ?? 'clip'}-${n}`;
  const taskId = await submit(sys, { object_key: key, base_url: outputBaseUrl(sys, key), video_id: videoId, has_audio: true });
  return { taskId, key, videoId };
}

async function screenshot(name: string, commit = false): Promise<void> {
  const path = join(shots, `${name}.png`);
  await page.screenshot({ path });
  if (commit && process.env['UPDATE_SCREENSHOTS'] === '1') {
    await mkdir(join(REPO_ROOT, 'docs', 'screenshots'), { recursive: true });
    await copyFile(path, join(REPO_ROOT, 'docs', 'screenshots', `${name}.png`));
  }
}

const row = (taskId: string) => page.locator(`tr[data-task-id="${taskId}"]`);
const badge = () => page.locator('.page-head h1 .badge');

async function signIn(key: string): Promise<void> {
  await page.locator('#key').fill(key);
  await page.locator('#key').press('Enter');
  await page.locator('#nav').waitFor();
}

async function until<T>(get: () => Promise<T>, ok: (v: T) => boolean, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await get();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`timed out; last ${JSON.stringify(v).slice(0, 500)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('the dashboard', () => {
  let a: Awaited<ReturnType<typeof newJob>>;

  it('signs in with a key once: an HttpOnly, SameSite=Strict session cookie, and the key kept nowhere', async () => {
    await page.goto(`${sys.api}/`);
    await expect.poll(() => page.locator('#key').evaluate((el) => el === document.activeElement)).toBe(true);
    await signIn(ADMIN_KEY);
    expect(await page.locator('#role').textContent()).toBe('operator');
    const cookies = await context.cookies(sys.api);
    expect(cookies).toHaveLength(1);
    expect(cookies[0]).toMatchObject({ name: 'mesh_session', httpOnly: true, sameSite: 'Strict', path: '/' });
    expect(cookies[0]!.expires).toBeGreaterThan(Date.now() / 1000 + 3600);
    expect(cookies[0]!.value).not.toContain(ADMIN_KEY);
    const kept = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie + location.href + history.length);
    expect(kept).not.toContain(ADMIN_KEY);
    expect(await page.locator('#key').count()).toBe(0);
    await expect.poll(() => page.locator('#live').textContent()).toBe('live');
  });

  it("shows a job submitted through the API going through the stages to complete in its row, without a reload", async () => {
    await page.evaluate(() => ((window as unknown as { stillHere: boolean }).stillHere = true));
    a = await newJob(short, { name: 'watched' });
    const seen: string[] = [];
    await until(
      async () => {
        const r = row(a.taskId);
        if ((await r.count()) === 0) return 'absent';
        const state = (await r.getAttribute('data-state')) ?? '';
        const stages = await r.locator('.stage').evaluateAll((els) => els.map((e) => e.className.replace('stage stage-', '')).join(','));
        const step = `${state}:${stages}`;
        if (seen.at(-1) !== step) seen.push(step);
        return state;
      },
      (state) => state === 'complete',
      120_000,
    );
    // It appeared by itself, then moved: queued or processing, stages running, before complete.
    expect(seen.length).toBeGreaterThanOrEqual(3);
    expect(seen.some((s) => /^(queued|processing|playable):/.test(s))).toBe(true);
    expect(seen.some((s) => s.includes('running'))).toBe(true);
    expect(await page.evaluate(() => (window as unknown as { stillHere?: boolean }).stillHere)).toBe(true);
    const done = row(a.taskId);
    expect(await done.locator('.chip-on').allTextContents()).toEqual(['720p', '360p']);
    await expect.poll(() => done.locator('.stage').evaluateAll((els) => els.map((e) => e.className))).toEqual(expect.arrayContaining(['stage stage-done']));
    expect(await done.locator('.stage-running, .stage-failed').count()).toBe(0);
  });

  it("opens the job's page: stages with their replica, the player plays the manifest, the thumbnail loads, the trace links to Jaeger", async () => {
    await row(a.taskId).locator('a').click();
    await page.waitForURL(`**/#/jobs/${a.taskId}`);
    await expect.poll(() => badge().textContent()).toBe('complete');
    const img = page.locator('#thumbnail');
    await img.waitFor();
    await expect.poll(() => img.evaluate((el: HTMLImageElement) => el.complete && el.naturalWidth)).toBeGreaterThan(100);
    const video = page.locator('.player video');
    await expect.poll(() => video.evaluate((v: HTMLVideoElement) => v.readyState), { timeout: 30_000 }).toBeGreaterThanOrEqual(2);
    await video.evaluate((v: HTMLVideoElement) => v.play());
    await expect.poll(() => video.evaluate((v: HTMLVideoElement) => v.currentTime), { timeout: 30_000 }).toBeGreaterThan(1.5);
    await video.evaluate((v: HTMLVideoElement) => v.pause());
    // Every stage that ran names the process that took it.
    const replicas = await page.locator('table.timeline tbody tr[data-state="done"] td.mono').allTextContents();
    expect(replicas.length).toBeGreaterThanOrEqual(6);
    for (const r of replicas) expect(r).toMatch(/^[\w.-]+\/\d+$/);
    const job = await getJob(sys, a.taskId);
    expect(job['trace_id']).toMatch(/^[0-9a-f]{32}$/);
    expect(await page.locator(`a[href="${JAEGER}/trace/${job['trace_id']}"]`).count()).toBe(1);
    expect(await page.locator('table.webhook .badge').first().textContent()).toBe('delivered');
    expect(await page.locator('.job-side a', { hasText: 'manifest.mpd' }).getAttribute('href')).toBe(job['manifest'].url);
    // The seek previews' track, as the status gives it.
    await expect.poll(async () => (await getJob(sys, a.taskId))['storyboard']?.url ?? null).toMatch(/storyboard\.vtt$/);
    const storyboard = (await getJob(sys, a.taskId))['storyboard'].url;
    await expect.poll(() => page.locator('.job-side a', { hasText: 'storyboard.vtt' }).getAttribute('href')).toBe(storyboard);
    await screenshot('job-detail', true);
  });

  it('cancels a running job from its page with the keyboard: Tab to Cancel, Enter, and Enter confirms', async () => {
    const b = await newJob(long, { name: 'cancelled' });
    await page.goto(`${sys.api}/#/jobs/${b.taskId}`);
    await expect.poll(() => badge().textContent(), { timeout: 60_000 }).toBe('processing');
    await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());
    for (let i = 0; i < 40 && !(await page.evaluate(() => document.activeElement?.id === 'cancel')); i++) await page.keyboard.press('Tab');
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('cancel');
    await page.keyboard.press('Enter');
    await page.locator('dialog#confirm[open]').waitFor();
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('confirm-yes');
    await page.keyboard.press('Enter');
    await expect.poll(() => badge().textContent(), { timeout: 20_000 }).toBe('cancelled');
    // The change may arrive live before the answer to the request.
    await expect.poll(() => page.locator('#flash').textContent()).toContain('is cancelled');
    expect(await getJob(sys, b.taskId)).toMatchObject({ state: 'cancelled', task_status: 'FAILURE' });
    // Escape keeps things as they are: Retry asked, and refused.
    await page.locator('#retry').click();
    await page.keyboard.press('Escape');
    expect(await page.locator('dialog#confirm[open]').count()).toBe(0);
    expect((await getJob(sys, b.taskId))['attempt']).toBe(1);
  });

  it('retries a failed job from its page, and it completes', async () => {
    // The source is not there yet: the job fails at the download.
    const c = await newJob(null, { name: 'retried' });
    await page.goto(`${sys.api}/#/jobs/${c.taskId}`);
    await expect.poll(() => badge().textContent(), { timeout: 60_000 }).toBe('failed');
    expect(await page.locator('.job-main .error').first().textContent()).toMatch(/^download: /);
    await putInput(sys, c.key, short);
    await page.locator('#retry').click();
    await page.locator('#confirm-yes').click();
    await expect.poll(() => badge().textContent(), { timeout: 120_000 }).toBe('complete');
    expect(await page.locator('.page-head .mono').textContent()).toContain('attempt 2');
    // The page heard it live; the API's GET (the projection) follows a moment later.
    expect(await waitForState(sys, c.taskId, ['complete'], 10_000)).toMatchObject({ state: 'complete', attempt: 2 });
    // And shows its thumbnail, once GET has it: loaded before the next test takes the thumbnail bucket away
    // (a load racing that was a 404 in the next test's console).
    const img = page.locator('#thumbnail');
    await img.waitFor({ timeout: 20_000 });
    await expect.poll(() => img.evaluate((el: HTMLImageElement) => el.complete && el.naturalWidth)).toBeGreaterThan(100);
  });

  it('re-drives a dead letter from its page once its cause is fixed', async () => {
    // The thumbnail bucket disappears: the thumbnailer gives up (the job completes without it) and keeps the
    // work. The earlier jobs' thumbnails are put back with the bucket.
    const kept = await Promise.all((await listKeys(sys.s3, BUCKETS.thumbnails, '')).map(async (key) => ({ key, bytes: (await getBytes(sys.s3, { bucket: BUCKETS.thumbnails, key }))! })));
    expect(kept.length).toBeGreaterThanOrEqual(2);
    await deletePrefix(sys.s3, BUCKETS.thumbnails, '');
    await sys.s3.send(new DeleteBucketCommand({ Bucket: BUCKETS.thumbnails }));
    let d: Awaited<ReturnType<typeof newJob>>;
    try {
      d = await newJob(short, { name: 'redriven' });
      await until(
        async () => ((await (await api(sys, '/admin/dead-letters', { headers: adminHeaders })).json()) as { dead_letters: { jobId: string }[] }).dead_letters,
        (all) => all.some((l) => l.jobId === d.taskId),
      );
    } finally {
      await sys.s3.send(new CreateBucketCommand({ Bucket: BUCKETS.thumbnails }));
      for (const { key, bytes } of kept) await putObject(sys.s3, { bucket: BUCKETS.thumbnails, key }, bytes, { contentType: 'image/jpeg' });
    }
    await waitForState(sys, d.taskId, ['complete']);
    expect((await getJob(sys, d.taskId))['thumbnail']).toBeNull();
    await page.goto(`${sys.api}/#/dead-letters`);
    const letter = page.locator('table.dead-letters tbody tr', { has: page.locator(`a[href="#/jobs/${d.taskId}"]`) });
    await letter.waitFor();
    expect(await letter.locator('.reason').textContent()).toMatch(/bucket/i);
    await screenshot('dead-letters');
    await letter.locator('button.redrive').click();
    await page.locator('#confirm-yes').click();
    await expect.poll(() => page.locator('#flash').textContent()).toMatch(/^Dead letter \d+ re-driven to work\.thumbnail\.$/);
    await expect.poll(() => letter.count(), { timeout: 20_000 }).toBe(0);
    await until(() => getJob(sys, d.taskId), (job) => job['thumbnail'] !== null);
  });

  it('shows every stage\'s queue, its replicas and a chart of the last minutes', async () => {
    await page.goto(`${sys.api}/#/queues`);
    const stages = ['downloader', 'transcoder-720', 'transcoder-360', 'packager', 'uploader', 'thumbnailer', 'notifier'];
    for (const consumer of stages) {
      const r = page.locator(`table.queues tr[data-consumer="${consumer}"]`);
      await r.waitFor();
      await expect.poll(() => r.locator('.badge').textContent()).toBe('attached');
    }
    // A job in flight makes the numbers move.
    await newJob(long, { name: 'queued' });
    await expect.poll(() => page.locator('tr[data-consumer="transcoder-720"] [data-field="ack_pending"]').textContent(), { timeout: 30_000 }).toBe('1');
    for (const consumer of stages) await page.locator(`tr[data-consumer="${consumer}"] .chart canvas`).waitFor();
    await page.waitForTimeout(2500);
    await screenshot('queues', true);
  });

  it('lists the jobs newest first, filtered by state and searched, and fits a phone\'s width', async () => {
    await page.goto(`${sys.api}/#/jobs`);
    await page.locator('table.jobs tbody tr').first().waitFor();
    const states = await page.locator('table.jobs tbody tr').evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset['state']));
    expect(states.length).toBeGreaterThanOrEqual(5);
    expect(states).toEqual(expect.arrayContaining(['complete', 'cancelled']));
    // The job the queues page watched is still on its way.
    expect(states.some((s) => s === 'processing' || s === 'playable')).toBe(true);
    await screenshot('jobs', true);
    await page.locator('#filter-state').selectOption('cancelled');
    await expect.poll(() => page.locator('table.jobs tbody tr').evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset['state']))).toEqual(['cancelled']);
    await page.locator('#filter-state').selectOption('');
    await page.locator('#filter-search').fill('retried');
    await expect.poll(() => page.locator('table.jobs tbody tr .video a').allTextContents()).toEqual([expect.stringMatching(/^retried-\d+$/)]);
    expect(page.url()).toContain('search=retried');

    await page.setViewportSize({ width: 390, height: 844 });
    try {
      for (const hash of ['#/jobs', `#/jobs/${a.taskId}`, '#/queues', '#/dead-letters']) {
        await page.goto(`${sys.api}/${hash}`);
        await page.locator('main .page').waitFor();
        await page.waitForTimeout(500);
        const { scroll, width } = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, width: document.documentElement.clientWidth }));
        expect(scroll, `${hash} fits ${width} px`).toBeLessThanOrEqual(width);
        await screenshot(`phone-${hash.split('/')[1]}${hash.split('/')[2] ? '-job' : ''}`);
      }
    } finally {
      await page.setViewportSize({ width: 1366, height: 800 });
    }
  });

  it("refuses the client key the operators' actions: no buttons, and the API answers 403", async () => {
    await page.locator('#sign-out').click();
    await page.locator('#key').waitFor();
    expect(await context.cookies(sys.api)).toEqual([]);
    await signIn(API_KEY);
    expect(await page.locator('#role').textContent()).toBe('client (read only)');
    const running = await newJob(long, { name: 'client-view' });
    await page.goto(`${sys.api}/#/jobs/${running.taskId}`);
    await expect.poll(() => badge().textContent(), { timeout: 60_000 }).toMatch(/queued|processing/);
    expect(await page.locator('#cancel, #retry').count()).toBe(0);
    expect(await page.locator('.page-head').textContent()).toContain("Retry and Cancel need the operators' key");
    await page.goto(`${sys.api}/#/queues`);
    await expect.poll(() => page.locator('main').textContent()).toContain("Queues need the operators' key");
    // The session's own requests, as the page would send them (same origin, the cookie): refused.
    for (const path of [`/admin/jobs/${running.taskId}/cancel`, '/admin/dead-letters/1/redrive']) {
      const res = await page.request.post(`${sys.api}${path}`, { headers: { Origin: sys.api } });
      expect(res.status(), path).toBe(403);
    }
    expect((await getJob(sys, running.taskId))['state']).not.toBe('cancelled');
    const cancelled = await api(sys, `/video/encoding/${running.taskId}/cancel`, { method: 'POST', headers: adminHeaders });
    expect(cancelled.status).toBe(202);
  });

  it('never wrote a key to a log line', () => {
    const lines = [...sys.logs.values()].flat();
    expect(lines.some((l) => l.includes('dashboard session started'))).toBe(true);
    expect(lines.filter((l) => l.includes(ADMIN_KEY) || l.includes(API_KEY))).toEqual([]);
  });
});
