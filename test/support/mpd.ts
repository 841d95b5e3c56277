import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { randomUUID } from 'node:crypto';
import { REPO_ROOT } from '@mesh/testkit';

const run = promisify(execFile);

/** The DASH schema, from /work/shared (a sibling of the repository). */
export const DASH_SCHEMA = join(REPO_ROOT, '..', 'shared', 'conformance', 'dash', 'DASH-MPD.xsd');

/** Rejects with xmllint's complaint unless `xml` is valid against the DASH schema (written to `dir` to check). */
export async function validateMpd(xml: string, dir: string): Promise<void> {
  const file = join(dir, `${randomUUID()}.mpd`);
  await writeFile(file, xml);
  await run('xmllint', ['--noout', '--schema', DASH_SCHEMA, file]);
}

/**
 * Just enough MPD reading for tests: representations with their sizes and the segment files they name
 * (SegmentTemplate with SegmentTimeline, as Shaka Packager writes for static live-profile manifests), and
 * the seek previews' image track (its sprites, named the same way).
 */
export interface SegmentRef {
  number: number;
  /** Start in seconds. */
  start: number;
  path: string;
}

export interface RepresentationInfo {
  id: string;
  contentType: 'video' | 'audio';
  width?: number;
  height?: number;
  bandwidth: number;
  codecs: string;
  init: string;
  segments: SegmentRef[];
}

/** The DASH-IF thumbnail-tile image track: its sprite size, tiles per sprite (`5x5`) and the sprites it names. */
export interface ImageTrackInfo {
  width: number;
  height: number;
  tiles: string;
  segments: SegmentRef[];
}

const attr = (tag: string, name: string): string | undefined => new RegExp(`\\s${name}="([^"]*)"`).exec(tag)?.[1];

/** The segments a SegmentTemplate with a SegmentTimeline names. */
function segmentsOf(tpl: RegExpExecArray): SegmentRef[] {
  const timescale = Number(attr(tpl[1]!, 'timescale') ?? 1);
  const media = attr(tpl[1]!, 'media')!;
  let number = Number(attr(tpl[1]!, 'startNumber') ?? 1);
  let t = 0;
  const segments: SegmentRef[] = [];
  for (const s of tpl[2]!.matchAll(/<S\s([^>]*)\/>/g)) {
    const st = attr(` ${s[1]!}`, 't');
    if (st !== undefined) t = Number(st);
    const d = Number(attr(` ${s[1]!}`, 'd'));
    const r = Number(attr(` ${s[1]!}`, 'r') ?? 0);
    for (let i = 0; i <= r; i++) {
      segments.push({ number, start: t / timescale, path: media.replace('$Number$', String(number)) });
      number++;
      t += d;
    }
  }
  return segments;
}

/** Representations of the audio and video sets, and apart from them the image (thumbnail) tracks. */
export function readMpd(xml: string): { baseUrl: string | undefined; representations: RepresentationInfo[]; images: ImageTrackInfo[] } {
  const baseUrl = /<MPD[\s\S]*?<BaseURL>([^<]*)<\/BaseURL>/.exec(xml)?.[1];
  const representations: RepresentationInfo[] = [];
  const images: ImageTrackInfo[] = [];
  for (const set of xml.matchAll(/<AdaptationSet([^>]*)>([\s\S]*?)<\/AdaptationSet>/g)) {
    const contentType = attr(set[1]!, 'contentType') as 'video' | 'audio' | 'image';
    if (contentType === 'image') {
      const rep = /<Representation([^>]*)>([\s\S]*?)<\/Representation>/.exec(set[2]!)!;
      images.push({
        width: Number(attr(rep[1]!, 'width')),
        height: Number(attr(rep[1]!, 'height')),
        tiles: /schemeIdUri="http:\/\/dashif\.org\/thumbnail_tile" value="([^"]*)"/.exec(rep[2]!)?.[1] ?? '',
        segments: segmentsOf(/<SegmentTemplate([^>]*)>([\s\S]*?)<\/SegmentTemplate>/.exec(set[2]!)!),
      });
      continue;
    }
    // Attributes on the AdaptationSet hold for each of its Representations (Shaka puts them there when there is one).
    const inherited = (tag: string, name: string) => attr(tag, name) ?? attr(set[1]!, name);
    for (const rep of set[2]!.matchAll(/<Representation([^>]*)>([\s\S]*?)<\/Representation>/g)) {
      const tag = rep[1]!;
      const tpl = /<SegmentTemplate([^>]*)>([\s\S]*?)<\/SegmentTemplate>/.exec(rep[2]!)!;
      const width = inherited(tag, 'width');
      const height = inherited(tag, 'height');
      representations.push({
        id: attr(tag, 'id')!,
        contentType,
        ...(width ? { width: Number(width) } : {}),
        ...(height ? { height: Number(height) } : {}),
        bandwidth: Number(attr(tag, 'bandwidth')),
        codecs: inherited(tag, 'codecs') ?? '',
        init: attr(tpl[1]!, 'initialization')!,
        segments: segmentsOf(tpl),
      });
    }
  }
  return { baseUrl: baseUrl === undefined ? undefined : decodeXml(baseUrl), representations, images };
}

function decodeXml(s: string): string {
  return s.replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&quot;', '"').replaceAll('&apos;', "'").replaceAll('&amp;', '&');
}

/**
 * The first video packet of one segment of `rep` (its init segment and that media segment, read with
 * `read`), as ffprobe sees it: its time and whether it is a keyframe. `dir` holds the joined file.
 */
export async function firstVideoPacket(read: (key: string) => Promise<Buffer>, prefix: string, rep: RepresentationInfo, segment: number, dir: string): Promise<{ pts: number; key: boolean }> {
  const file = join(dir, `${rep.id}-${segment}.mp4`);
  await writeFile(file, Buffer.concat([await read(prefix + rep.init), await read(prefix + rep.segments[segment]!.path)]));
  const { stdout } = await run('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'packet=pts_time,flags', '-read_intervals', '%+#1', '-of', 'csv=p=0', file]);
  const [pts, flags] = stdout.trim().split('\n')[0]!.split(',');
  return { pts: Number(pts), key: (flags ?? '').includes('K') };
}
