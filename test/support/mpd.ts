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
