/// <reference lib="dom" />
/**
 * Plays a manifest in headless Chromium the way a viewer's browser would, with the player a site would
 * use: Shaka Player (DASH and HLS), dash.js (DASH) or hls.js (HLS), each served from node_modules. Forces
 * one rendition (the lowest or the highest) and reports the height the video element decoded, and, with
 * Shaka or dash.js, the seek-preview thumbnail the manifest's image track gives for a time.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { chromium, type BrowserContext } from 'playwright-core';
import { tempDir } from '@mesh/testkit';
import { CHROMIUM } from './playback.ts';

const require = createRequire(import.meta.url);

export type PlayerName = 'shaka' | 'dashjs' | 'hlsjs';

/** Each player's browser build, as [package, file in it] (packages' `exports` do not all list these files). */
const SCRIPTS: Record<PlayerName, [string, string]> = {
  shaka: ['shaka-player', 'dist/shaka-player.compiled.js'],
  dashjs: ['dashjs', 'dist/modern/umd/dash.all.min.js'],
  hlsjs: ['hls.js', 'dist/hls.min.js'],
};

/** A package's folder in node_modules, from its resolved entry point. */
function packageDir(name: string): string {
  const entry = require.resolve(name);
  const at = entry.lastIndexOf(`/node_modules/${name}/`);
  return entry.slice(0, at + `/node_modules/${name}/`.length);
}

export interface PlayReport {
  /** Heights of the video renditions the player found. */
  heights: number[];
  /** The height decoded after forcing the chosen rendition, and how far it played at it. */
  decodedHeight: number;
  playedSec: number;
  errors: string[];
  /**
   * Shaka and dash.js: the seek-preview thumbnail for `thumbnailAt`, if asked, from the manifest's image
   * track (Shaka getThumbnails, dash.js provideThumbnail): the sprite's URI and the tile's rectangle on it.
   */
  thumbnail?: { uri: string; x: number; y: number; width: number; height: number } | null;
}

export interface Browser {
  play(manifestUrl: string, o: { player: PlayerName; pick: 'lowest' | 'highest'; thumbnailAt?: number; screenshot?: string }): Promise<PlayReport>;
  close(): Promise<void>;
}

/** One Chromium for many plays (a start costs seconds); each play in a fresh page. */
export async function openBrowser(): Promise<Browser> {
  const scripts = Object.fromEntries(await Promise.all(Object.entries(SCRIPTS).map(async ([name, [pkg, file]]) => [name, await readFile(packageDir(pkg) + file)]))) as Record<PlayerName, Buffer>;
  const server = createServer((req, res) => {
    const name = /^\/(\w+)\.js$/.exec(req.url ?? '')?.[1] as PlayerName | undefined;
    if (name && scripts[name]) {
      res.setHeader('content-type', 'text/javascript');
      res.end(scripts[name]);
      return;
    }
    const player = new URL(req.url ?? '/', 'http://x').searchParams.get('player') ?? 'shaka';
    res.setHeader('content-type', 'text/html');
    res.end(`<!doctype html><html><body><video id="v" muted playsinline width="640"></video><script src="/${player}.js"></script></body></html>`);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const profile = await tempDir('chromium');
  const context: BrowserContext = await chromium.launchPersistentContext(profile.path, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
  });
  return {
    async play(url, o) {
      const page = await context.newPage();
      try {
        await page.goto(`${base}/?player=${o.player}`);
        const report = await page.evaluate(playInPage, { url, player: o.player, pick: o.pick, thumbnailAt: o.thumbnailAt ?? null });
        if (o.screenshot) await page.screenshot({ path: o.screenshot });
        return report;
      } finally {
        await page.close();
      }
    },
    async close() {
      await context.close();
      await profile.remove();
      server.close();
    },
  };
}

/** Runs in the page. */
async function playInPage(a: { url: string; player: PlayerName; pick: 'lowest' | 'highest'; thumbnailAt: number | null }): Promise<PlayReport> {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const w = window as any;
  const video = document.getElementById('v') as HTMLVideoElement;
  const errors: string[] = [];
  const until = async (cond: () => boolean, ms: number) => {
    const end = Date.now() + ms;
    while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
  };
  const byHeight = (hs: number[]) => [...hs].sort((x, y) => x - y);
  let heights: number[] = [];
  let choose: (height: number) => void;
  let thumbnail: PlayReport['thumbnail'];
  try {
    if (a.player === 'shaka') {
      w.shaka.polyfill.installAll();
      const p = new w.shaka.Player();
      await p.attach(video);
      p.addEventListener('error', (e: { detail: { code: number } }) => errors.push(`shaka error ${e.detail.code}`));
      await p.load(a.url);
      heights = p.getVariantTracks().map((t: { height: number }) => t.height);
      choose = (h) => {
        p.configure({ abr: { enabled: false } });
        p.selectVariantTrack(p.getVariantTracks().find((t: { height: number }) => t.height === h), true);
      };
      if (a.thumbnailAt !== null) {
        const track = p.getImageTracks()[0];
        const t = track ? await p.getThumbnails(track.id, a.thumbnailAt) : null;
        thumbnail = t ? { uri: t.uris[0], x: t.positionX, y: t.positionY, width: t.width, height: t.height } : null;
      }
    } else if (a.player === 'dashjs') {
      const p = w.dashjs.MediaPlayer().create();
      p.on('error', (e: { error?: { code?: number; message?: string } }) => errors.push(`dash.js error ${e.error?.code ?? ''} ${e.error?.message ?? ''}`));
      p.initialize(video, a.url, true);
      await until(() => p.getRepresentationsByType?.('video')?.length > 0, 20_000);
      const reps: { height: number; id: string }[] = p.getRepresentationsByType('video');
      if (a.thumbnailAt !== null) {
        const at = a.thumbnailAt;
        const t = await new Promise<{ url: string; x: number; y: number; width: number; height: number } | null>((resolve) => p.provideThumbnail(at, resolve));
        thumbnail = t ? { uri: t.url, x: t.x, y: t.y, width: t.width, height: t.height } : null;
      }
      heights = reps.map((r) => r.height);
      choose = (h) => {
        p.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: false } } } });
        p.setRepresentationForTypeById('video', reps.find((r) => r.height === h)!.id, true);
      };
    } else {
      const hls = new w.Hls();
      hls.on(w.Hls.Events.ERROR, (_e: unknown, d: { fatal: boolean; details: string }) => d.fatal && errors.push(`hls.js error ${d.details}`));
      hls.loadSource(a.url);
      hls.attachMedia(video);
      await until(() => hls.levels?.length > 0, 20_000);
      heights = hls.levels.map((l: { height: number }) => l.height);
      choose = (h) => {
        hls.currentLevel = hls.levels.findIndex((l: { height: number }) => l.height === h);
      };
    }
    // Force the rendition before playing: switching mid-play races the player's ABR, which may already
    // hold the short clip's whole buffer at its first guess (a loaded machine showed that rendition only).
    const sorted = byHeight(heights);
    choose!(a.pick === 'lowest' ? sorted[0]! : sorted.at(-1)!);
    await video.play();
  } catch (e) {
    errors.push(`load: ${(e as { code?: number; message?: string }).code ?? (e as Error).message ?? String(e)}`);
    return { heights, decodedHeight: 0, playedSec: 0, errors, ...(thumbnail !== undefined ? { thumbnail } : {}) };
  }
  const sorted = byHeight(heights);
  const target = a.pick === 'lowest' ? sorted[0]! : sorted.at(-1)!;
  const from = video.currentTime;
  await until(() => video.videoHeight === target && video.currentTime > from + 1.5, 30_000);
  return { heights, decodedHeight: video.videoHeight, playedSec: video.currentTime - from, errors, ...(thumbnail !== undefined ? { thumbnail } : {}) };
}
