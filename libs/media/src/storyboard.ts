/**
 * Seek previews ("storyboards"): small frames every few seconds tiled into JPEG sprite sheets (made by the
 * thumbnailer's FFmpeg run, ffmpeg.ts thumbnailArgs), a WebVTT track whose cues point into them with
 * `#xywh=` (for players that read one), and a DASH-IF thumbnail-tile image AdaptationSet, which Shaka Player
 * (getImageTracks/getThumbnails) and dash.js (provideThumbnail) read from the manifest. Pure functions.
 */
import type { StoryboardPlan } from '@mesh/common';
import { escapeXml } from './packager.ts';

/** Tiles are this wide (height by the picture's aspect ratio), as the sites that show seek previews make them. */
export const STORYBOARD_TILE_WIDTH = 160;
/** A tall picture's tiles are at most this high (and narrower): a sheet stays a sensible size. */
export const STORYBOARD_MAX_TILE_HEIGHT = 320;
/** At most this many tiles across and down a sheet: 5 x 5 = 25 tiles, 800 px wide. */
export const STORYBOARD_GRID = 5;

const even = (n: number) => Math.max(2, 2 * Math.round(n / 2));

/**
 * One tile every 2 s up to 200 s of video, then fewer so a video has about 100 tiles, and never fewer
 * than one every 10 s. Whole seconds: the cues' times are exact.
 */
export function storyboardInterval(durationSec: number): number {
  return Math.min(10, Math.max(2, Math.ceil(durationSec / 100)));
}

/**
 * The storyboard of a video of `durationSec` whose picture shows at `display` (upright, square pixels):
 * tiles `STORYBOARD_TILE_WIDTH` wide and even-sized, as many as the intervals that start before the end,
 * laid out on sheets of at most STORYBOARD_GRID x STORYBOARD_GRID (fewer columns and rows when there are
 * fewer tiles, so a short video's only sheet is not mostly empty).
 */
export function storyboardPlan(durationSec: number, display: { width: number; height: number }): StoryboardPlan {
  if (!(durationSec > 0)) throw new Error(`storyboardPlan: the duration must be positive, got ${durationSec}`);
  const intervalSec = storyboardInterval(durationSec);
  // In milliseconds, as the cues are: a duration a hair over a whole number of intervals gets its last tile.
  const tiles = Math.max(1, Math.ceil(Math.round(durationSec * 1000) / (intervalSec * 1000)));
  let tileWidth = STORYBOARD_TILE_WIDTH;
  let tileHeight = even((STORYBOARD_TILE_WIDTH * display.height) / display.width);
  if (tileHeight > STORYBOARD_MAX_TILE_HEIGHT) {
    tileHeight = STORYBOARD_MAX_TILE_HEIGHT;
    tileWidth = even((STORYBOARD_MAX_TILE_HEIGHT * display.width) / display.height);
  }
  const columns = Math.min(STORYBOARD_GRID, tiles);
  const rows = Math.min(STORYBOARD_GRID, Math.ceil(tiles / columns));
  return { durationSec, intervalSec, tileWidth, tileHeight, columns, rows, tiles, sheets: Math.ceil(tiles / (columns * rows)) };
}

/** Where tile `index` (from 0) is: its sheet (from 1) and its rectangle on it. */
export function tileAt(plan: StoryboardPlan, index: number): { sheet: number; x: number; y: number; w: number; h: number } {
  const perSheet = plan.columns * plan.rows;
  const at = index % perSheet;
  return { sheet: Math.floor(index / perSheet) + 1, x: (at % plan.columns) * plan.tileWidth, y: Math.floor(at / plan.columns) * plan.tileHeight, w: plan.tileWidth, h: plan.tileHeight };
}

/** `hh:mm:ss.ttt`, as WebVTT writes a cue time. */
function vttTime(ms: number): string {
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${pad(Math.floor(ms / 3_600_000))}:${pad(Math.floor(ms / 60_000) % 60)}:${pad(Math.floor(ms / 1000) % 60)}.${pad(ms % 1000, 3)}`;
}

/**
 * The WebVTT track of the storyboard: one cue per tile, back to back from 0 to the end of the video, each
 * `<sheet URI>#xywh=x,y,w,h` (the media-fragment form players read). `sheetUri(n)` names sheet n (from 1),
 * e.g. relative to the track, so it works wherever the two are served.
 */
export function storyboardVtt(plan: StoryboardPlan, sheetUri: (sheet: number) => string): string {
  const endMs = Math.round(plan.durationSec * 1000);
  const stepMs = plan.intervalSec * 1000;
  const cues: string[] = [];
  for (let i = 0; i < plan.tiles; i++) {
    const t = tileAt(plan, i);
    cues.push(`${vttTime(i * stepMs)} --> ${vttTime(Math.min((i + 1) * stepMs, endMs))}\n${sheetUri(t.sheet)}#xywh=${t.x},${t.y},${t.w},${t.h}`);
  }
  return `WEBVTT\n\n${cues.join('\n\n')}\n`;
}

/** DASH-IF IOP 6.2.6: an image AdaptationSet whose Representation's sheets hold `columns`x`rows` tiles each. */
export const THUMBNAIL_TILE_SCHEME = 'http://dashif.org/thumbnail_tile';

/**
 * The storyboard as a DASH-IF thumbnail-tile image AdaptationSet: sheet n is segment n (`media`, a
 * SegmentTemplate with `$Number$` from 1), each covering `columns * rows` intervals. A SegmentTimeline lists
 * exactly the sheets there are, so a player never asks for one past the last, even when the packaged
 * period ends a little after the probed duration. `bandwidth` (bit/s) is the largest sheet over its time.
 */
export function thumbnailAdaptationSet(plan: StoryboardPlan, o: { media: string; maxSheetBytes: number }): string {
  const sheetSec = plan.intervalSec * plan.columns * plan.rows;
  const bandwidth = Math.max(1, Math.ceil((o.maxSheetBytes * 8) / sheetSec));
  const repeat = plan.sheets > 1 ? ` r="${plan.sheets - 1}"` : '';
  return [
    '    <AdaptationSet contentType="image" mimeType="image/jpeg">',
    `      <SegmentTemplate media="${escapeXml(o.media)}" timescale="1" startNumber="1">`,
    '        <SegmentTimeline>',
    `          <S t="0" d="${sheetSec}"${repeat}/>`,
    '        </SegmentTimeline>',
    '      </SegmentTemplate>',
    `      <Representation id="thumbnails" bandwidth="${bandwidth}" width="${plan.tileWidth * plan.columns}" height="${plan.tileHeight * plan.rows}">`,
    `        <EssentialProperty schemeIdUri="${THUMBNAIL_TILE_SCHEME}" value="${plan.columns}x${plan.rows}"/>`,
    '      </Representation>',
    '    </AdaptationSet>',
  ].join('\n');
}

const IMAGE_SET = /\n?[ \t]*<AdaptationSet\b[^>]*\bcontentType="image"[^>]*>[\s\S]*?<\/AdaptationSet>/g;

/**
 * Puts `adaptationSet` (thumbnailAdaptationSet) in the MPD's Period, after the audio and video ones, in
 * place of any image AdaptationSet it had; null takes it out. The manifests the packager writes for VOD
 * have one Period.
 */
export function setThumbnailTrack(mpd: string, adaptationSet: string | null): string {
  const without = mpd.replace(IMAGE_SET, '');
  const periods = without.match(/<Period\b/g)?.length ?? 0;
  if (periods !== 1) throw new Error(`setThumbnailTrack: the MPD has ${periods} Periods, not one`);
  if (!adaptationSet) return without;
  const end = without.indexOf('</Period>');
  // Keep the closing tag's own indentation after the new set.
  const lineStart = without.lastIndexOf('\n', end) + 1;
  const indent = /^[ \t]*$/.test(without.slice(lineStart, end)) ? lineStart : end;
  return `${without.slice(0, indent)}${adaptationSet}\n${without.slice(indent)}`;
}
