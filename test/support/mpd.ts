import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '@mesh/testkit';

const run = promisify(execFile);

/** The DASH MPD schema (ISO/IEC 23009-1), kept beside the repository. */
export const DASH_SCHEMA = join(REPO_ROOT, '..', 'shared', 'conformance', 'dash', 'DASH-MPD.xsd');

/** Writes `xml` to `file` and validates it against the DASH schema (xmllint throws with the errors). */
export async function validateMpd(xml: string, file: string): Promise<void> {
  await writeFile(file, xml);
  await run('xmllint', ['--noout', '--schema', DASH_SCHEMA, file]);
}

/**
 * Just enough MPD reading for tests: representations with their sizes and the segment files they name
 * (SegmentTemplate with SegmentTimeline, as Shaka Packager writes for static live-profile manifests).
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

const attr = (tag: string, name: string): string | undefined => new RegExp(`\\s${name}="([^"]*)"`).exec(tag)?.[1];

export function readMpd(xml: string): { baseUrl: string | undefined; representations: RepresentationInfo[] } {
  const baseUrl = /<MPD[\s\S]*?<BaseURL>([^<]*)<\/BaseURL>/.exec(xml)?.[1];
  const representations: RepresentationInfo[] = [];
  for (const set of xml.matchAll(/<AdaptationSet([^>]*)>([\s\S]*?)<\/AdaptationSet>/g)) {
    const contentType = attr(set[1]!, 'contentType') as 'video' | 'audio';
    // Attributes on the AdaptationSet hold for each of its Representations (Shaka puts them there when there is one).
    const inherited = (tag: string, name: string) => attr(tag, name) ?? attr(set[1]!, name);
    for (const rep of set[2]!.matchAll(/<Representation([^>]*)>([\s\S]*?)<\/Representation>/g)) {
      const tag = rep[1]!;
      const tpl = /<SegmentTemplate([^>]*)>([\s\S]*?)<\/SegmentTemplate>/.exec(rep[2]!)!;
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
        segments,
      });
    }
  }
  return { baseUrl: baseUrl === undefined ? undefined : decodeXml(baseUrl), representations };
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
