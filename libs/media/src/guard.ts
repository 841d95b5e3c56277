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

/** A presigned S3 URL rather than a local file. */
export function isUrl(input: string): boolean {
  return /^https?:\/\//i.test(input);
}

export function inputGuard(input: string): string[] {
  return [
    // Only the kind of input we were given: a local file, or the presigned URL of the job's source
    // (HTTP(S) and what it runs on). Never file: beside a URL, nor concat:, subfile:, data: or pipe:.
    '-protocol_whitelist', isUrl(input) ? 'http,https,tcp,tls' : 'file',
    // Only real video containers: hls, concat, image sequences and the like are refused.
    '-format_whitelist', ALLOWED_DEMUXERS.join(','),
    // A long encode survives a dropped connection to S3: FFmpeg reconnects and resumes with a range request.
    ...(isUrl(input) ? ['-reconnect', '1', '-reconnect_on_network_error', '1', '-reconnect_delay_max', '10'] : []),
  ];
}
