/// <reference lib="dom" />
/**
 * Plays a DASH manifest in headless Chromium with Shaka Player, the way a viewer's browser would:
 * loads it, plays a few seconds, forces the lowest rendition, and reports what happened.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';
import { expect } from 'vitest';
import { tempDir } from '@mesh/testkit';

const require = createRequire(import.meta.url);

export const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';

export interface PlaybackReport {
  tracks: { width: number; height: number }[];
  playedSec: number;
  /** Height of the picture after forcing the lowest rendition. */
  switchedHeight: number;
  playedAfterSwitchSec: number;
  errors: string[];
}

const PAGE = `<!doctype html><html><body><video id="v" muted playsinline width="640"></video>
<script src="/shaka-player.js"></script></body></html>`;

export async function playInBrowser(manifestUrl: string, o: { screenshot?: string } = {}): Promise<PlaybackReport> {
  const player = await readFile(require.resolve('shaka-player/dist/shaka-player.compiled.js'));
  const server = createServer((req, res) => {
    if (req.url === '/shaka-player.js') {
      res.setHeader('content-type', 'text/javascript');
      res.end(player);
    } else {
      res.setHeader('content-type', 'text/html');
      res.end(PAGE);
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const profile = await tempDir('chromium');
  const context = await chromium.launchPersistentContext(profile.path, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
  });
  try {
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
    const report = await page.evaluate(async (url: string) => {
      // Runs in the page.
      const w = window as unknown as { shaka: any };
      const errors: string[] = [];
      const video = document.getElementById('v') as HTMLVideoElement;
      w.shaka.polyfill.installAll();
      const p = new w.shaka.Player();
      await p.attach(video);
      p.addEventListener('error', (e: { detail: { code: number; message?: string } }) => errors.push(`shaka error ${e.detail.code}`));
      const until = async (cond: () => boolean, ms: number) => {
        const end = Date.now() + ms;
        while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
      };
      try {
        await p.load(url);
        await video.play();
      } catch (e) {
        errors.push(`load: ${(e as { code?: number }).code ?? String(e)}`);
        return { tracks: [], playedSec: 0, switchedHeight: 0, playedAfterSwitchSec: 0, errors };
      }
      await until(() => video.currentTime > 2, 20_000);
      const playedSec = video.currentTime;
      const tracks = p.getVariantTracks().map((t: { width: number; height: number }) => ({ width: t.width, height: t.height }));
      p.configure({ abr: { enabled: false } });
      const lowest = [...p.getVariantTracks()].sort((a: { height: number }, b: { height: number }) => a.height - b.height)[0];
      p.selectVariantTrack(lowest, true);
      const before = video.currentTime;
      await until(() => video.videoHeight === lowest.height && video.currentTime > before + 1.5, 20_000);
      return { tracks, playedSec, switchedHeight: video.videoHeight, playedAfterSwitchSec: video.currentTime - before, errors };
    }, manifestUrl);
    if (o.screenshot) await page.screenshot({ path: o.screenshot });
    return report;
  } finally {
    await context.close();
    await profile.remove();
    server.close();
  }
}

/**
 * What a play of the default ladder's manifest must show: both renditions found, no error, seconds played,
 * then the switch to 360p and seconds more at it.
 */
export function expectPlaysBothRenditions(report: PlaybackReport): void {
  expect(report.errors).toEqual([]);
  expect(report.tracks.map((t) => t.height).sort()).toEqual([360, 720]);
  expect(report.playedSec).toBeGreaterThan(2);
  expect(report.switchedHeight).toBe(360);
  expect(report.playedAfterSwitchSec).toBeGreaterThan(1.5);
}
