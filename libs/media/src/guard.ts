/**
 * Input options for every ffmpeg/ffprobe call on an untrusted upload. Without them, an "mp4" that is
 * really an HLS playlist or a concat list makes FFmpeg open the local files or URLs it names
 * (CVE-2016-1898, CVE-2017-9993). They go before `-i`.
 */
export const ALLOWED_DEMUXERS = [
  'mov,mp4,m4a,3gp,3g2,mj2', // MP4 / QuickTime family (one demuxer, several names)
  'matroska,webm',
  'avi',
  'flv',
  'mpegts',
  'mpeg', // MPEG-PS
  'asf', // WMV
  'ogg',
  'mxf',
];

export function inputGuard(): string[] {
  return [
    // Only the local file we were given: no http, no tcp, no concat:, no subfile:.
    '-protocol_whitelist', 'file',
    // Only real video containers: hls, concat, image sequences and the like are refused.
    '-format_whitelist', ALLOWED_DEMUXERS.join(','),
  ];
}
