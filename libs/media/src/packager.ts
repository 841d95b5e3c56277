/** Shaka Packager arguments, and the BaseURL it cannot be trusted to write. */
import type { Rendition } from '@mesh/common';

export interface PackagerInput {
  rendition: Rendition;
  path: string;
}

function descriptorPath(path: string): string {
  // Stream descriptors are `key=value` pairs joined by commas: such characters would split them.
  if (/[,=]/.test(path)) throw new Error(`packager input/output path must not contain ',' or '=': ${path}`);
  return path;
}

/**
 * One run writes CMAF segments once and both manifests from them: the DASH `outDir/manifest.mpd` and the
 * HLS master `outDir/master.m3u8`, with one media playlist per rendition and one for audio. Segments and
 * media playlists go under `outDir/<segmentDir>/` (the job attempt's own folder), so both manifests name
 * them relative to themselves (`<segmentDir>/video/<r>/<n>.m4s`, `<segmentDir>/video_<r>.m3u8`): the
 * package works wherever it is served.
 */
export function packagerArgs(o: { renditions: PackagerInput[]; audioFrom?: string; outDir: string; segmentDir: string; segmentSeconds: number }): string[] {
  const out = descriptorPath(o.outDir);
  const seg = `${out}/${descriptorPath(o.segmentDir)}`;
  const dir = descriptorPath(o.segmentDir);
  const streams = o.renditions.map(
    ({ rendition, path }) =>
      `in=${descriptorPath(path)},stream=video,init_segment=${seg}/video/${rendition}/init.mp4,segment_template=${seg}/video/${rendition}/$Number$.m4s,playlist_name=${dir}/video_${rendition}.m3u8`,
  );
  if (o.audioFrom) {
    // One audio group every variant of the master refers to.
    streams.push(`in=${descriptorPath(o.audioFrom)},stream=audio,init_segment=${seg}/audio/init.mp4,segment_template=${seg}/audio/$Number$.m4s,playlist_name=${dir}/audio.m3u8,hls_group_id=audio,hls_name=Audio`);
  }
  return [
    ...streams,
    // Segments cut at the keyframes the transcoders put at every segment boundary.
    '--segment_duration', String(o.segmentSeconds),
    // A static (VOD) manifest using SegmentTemplate + $Number$: the live-profile layout players like best.
    '--generate_static_live_mpd',
    '--mpd_output', `${out}/manifest.mpd`,
    // HLS from the same segments: VOD playlists (EXT-X-PLAYLIST-TYPE:VOD, EXT-X-ENDLIST), relative URIs.
    '--hls_master_playlist_output', `${out}/master.m3u8`,
    '--hls_playlist_type', 'VOD',
    // No --base_urls: Shaka 3.2+ percent-encodes it (shaka-packager #1485, #1593). See setBaseUrl.
  ];
}

/** Text or an attribute value in XML: escaped, never URL-encoded. */
export function escapeXml(text: string): string {
  return text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;').replaceAll("'", '&apos;');
}

/**
 * Sets the MPD-level <BaseURL> to `baseUrl` exactly as given (XML-escaped, not URL-encoded), where the
 * DASH schema wants it: after any ProgramInformation, before everything else. Empty: no BaseURL.
 */
export function setBaseUrl(mpd: string, baseUrl: string): string {
  const open = /<MPD\b[^>]*>/.exec(mpd);
  if (!open) throw new Error('not an MPD: no <MPD> element');
  const start = open.index + open[0].length;
  const firstPeriod = mpd.indexOf('<Period', start);
  const head = mpd.slice(start, firstPeriod === -1 ? undefined : firstPeriod).replace(/\s*<BaseURL\b[^>]*>[^<]*<\/BaseURL>/g, '');
  const tail = firstPeriod === -1 ? '' : mpd.slice(firstPeriod);
  // Keep ProgramInformation first.
  const info = /^(\s*<ProgramInformation\b[\s\S]*?(<\/ProgramInformation>|\/>))*/.exec(head)![0];
  const element = baseUrl ? `\n  <BaseURL>${escapeXml(baseUrl)}</BaseURL>` : '';
  return mpd.slice(0, start) + info + element + head.slice(info.length) + tail;
}
