/**
 * Input options for every ffmpeg/ffprobe call on an untrusted upload. Without them, an "mp4" that is
 * really an HLS playlist or a concat list makes FFmpeg open the local files or URLs it names
 * (CVE-2016-1898, CVE-2017-9993), any of FFmpeg's ~500 decoders can be made to parse the bytes, and a
 * stalled S3 connection holds the work forever. They go before `-i`.
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

/**
 * Decoders FFmpeg may open, by decoder name (what `-codec_whitelist` matches: FFmpeg 5.1 picks the first
 * decoder registered for a codec and then checks its name, so AV1 is `libdav1d` and MP3 `mp3float` on
 * Debian's build). Video: what cameras, phones, editors and the web produce in the containers above.
 */
export const VIDEO_DECODERS = [
  'h264', 'hevc', 'vp8', 'vp9', 'libdav1d', 'libaom-av1', 'av1',
  'mpeg4', 'msmpeg4', 'h263', 'mpeg2video', 'mpeg1video', 'mjpeg', 'prores', 'dnxhd',
  'vc1', 'wmv1', 'wmv2', 'wmv3', 'theora', 'flv',
];

export const AUDIO_DECODERS = [
  'aac', 'aac_latm', 'mp3float', 'mp3', 'mp2', 'mp2float', 'opus', 'vorbis', 'ac3', 'eac3', 'dca', 'flac', 'alac',
  'pcm_s16le', 'pcm_s16be', 'pcm_s24le', 'pcm_s24be', 'pcm_s32le', 'pcm_f32le', 'pcm_u8', 'pcm_alaw', 'pcm_mulaw', 'pcm_dvd',
  'wmav1', 'wmav2', 'wmapro', 'amrnb', 'amrwb',
];

/**
 * Never decoded by the mesh (it maps only video and audio), but ffprobe opens a decoder for every stream
 * and gives up on the whole file when one is refused: subtitles phones and editors add, and cover art.
 */
export const SIDE_DECODERS = ['mov_text', 'subrip', 'srt', 'ass', 'ssa', 'webvtt', 'text', 'dvdsub', 'dvbsub', 'pgssub', 'cc_dec', 'png'];

export const ALLOWED_DECODERS = [...VIDEO_DECODERS, ...AUDIO_DECODERS, ...SIDE_DECODERS];

/**
 * How long an HTTP read of the source may stall (no byte, no connection) before FFmpeg gives up on that
 * attempt; with reconnection (below) a dead S3 fails the run after 5 attempts and ~11 s of back-off.
 */
export const URL_READ_TIMEOUT_MS = 30_000;

/** A presigned S3 URL rather than a local file. */
export function isUrl(input: string): boolean {
  return /^https?:\/\//i.test(input);
}

export interface GuardOptions {
  /**
   * For a URL: the If-Match value (a quoted ETag) the URL was signed with (libs/storage withSourceUrl).
   * Sent with every request, so S3 refuses (412) to serve a source replaced after it was probed.
   */
  ifMatch?: string;
  /** For a URL: the stall timeout, URL_READ_TIMEOUT_MS by default. */
  readTimeoutMs?: number;
}

export function inputGuard(input: string, o: GuardOptions = {}): string[] {
  const url = isUrl(input);
  if (o.ifMatch !== undefined && !/^"[\x21\x23-\x7e]+"$/.test(o.ifMatch)) {
    // It becomes an HTTP header line: nothing but a quoted visible-ASCII ETag may get there.
    throw new Error(`ifMatch must be a quoted ETag, got ${JSON.stringify(o.ifMatch)}`);
  }
  return [
    // Only the kind of input we were given: a local file, or the presigned URL of the job's source
    // (HTTP(S) and what it runs on). Never file: beside a URL, nor concat:, subfile:, data: or pipe:.
    '-protocol_whitelist', url ? 'http,https,tcp,tls' : 'file',
    // Only real video containers: hls, concat, image sequences and the like are refused.
    '-format_whitelist', ALLOWED_DEMUXERS.join(','),
    // Only the decoders of the codecs we convert: exotic decoders (the usual home of parser bugs) never
    // see the bytes, and a source in another codec is refused with its name (probe.ts).
    '-codec_whitelist', ALLOWED_DECODERS.join(','),
    ...(url
      ? [
          // A long encode survives a dropped connection to S3: FFmpeg reconnects and resumes with a range request.
          '-reconnect', '1', '-reconnect_on_network_error', '1', '-reconnect_delay_max', '10',
          // ...but an S3 that accepts and never answers fails the read instead of holding the work forever (µs).
          '-rw_timeout', String((o.readTimeoutMs ?? URL_READ_TIMEOUT_MS) * 1000),
          // Pinned to the probed object: a swapped source fails the first request after the swap (412).
          ...(o.ifMatch ? ['-headers', `If-Match: ${o.ifMatch}\r\n`] : []),
        ]
      : []),
  ];
}
