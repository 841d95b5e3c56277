/** Test media made by FFmpeg on the spot: no binary fixtures in the repo. */
import { execFile } from 'node:child_process';
import { rename, rm } from 'node:fs/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface ClipOptions {
  width: number;
  height: number;
  seconds: number;
  fps?: number;
  audio?: boolean;
  /** Written as display-matrix metadata, the way phones record portrait video. */
  rotation?: 0 | 90 | 180 | 270;
  codec?: 'h264' | 'hevc';
  pixFmt?: string;
  interlaced?: boolean;
  /** Variable frame rate: frame durations jitter around 1/fps, as phones record. */
  vfr?: boolean;
  /** Pixel aspect ratio, e.g. '16/15' for PAL DV. */
  sar?: string;
}

/** Writes an MP4 test clip (testsrc2 picture, 440 Hz tone) to `path` and returns `path`. */
export async function makeClip(path: string, o: ClipOptions): Promise<string> {
  const fps = o.fps ?? 30;
  const args = ['-hide_banner', '-v', 'error', '-y', '-f', 'lavfi', '-i', `testsrc2=size=${o.width}x${o.height}:rate=${fps}`];
  if (o.audio) args.push('-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000');
  args.push('-t', String(o.seconds), '-map', '0:v');
  if (o.audio) args.push('-map', '1:a', '-c:a', 'aac', '-b:a', '96k');
  if (o.codec === 'hevc') args.push('-c:v', 'libx265', '-preset', 'ultrafast', '-x265-params', 'log-level=error', '-tag:v', 'hvc1');
  else args.push('-c:v', 'libx264', '-preset', 'ultrafast');
  args.push('-pix_fmt', o.pixFmt ?? 'yuv420p');
  if (o.interlaced) args.push('-flags', '+ildct+ilme', '-top', '1');
  if (o.sar) args.push('-vf', `setsar=${o.sar}`);
  if (o.vfr) {
    // Millisecond timestamps, every third frame 8 ms late; passthrough and a 1 ms encoder time base keep them.
    args.push('-vf', `settb=1/1000,setpts=trunc(N*1000/${fps})+8*not(mod(N\\,3))`, '-fps_mode', 'passthrough', '-enc_time_base', '1:1000', '-video_track_timescale', '1000');
  }
  const rotated = (o.rotation ?? 0) !== 0;
  const encoded = rotated ? `${path}.tmp.mp4` : path;
  await run('ffmpeg', [...args, encoded]);
  if (rotated) {
    // FFmpeg 5.1 writes the rotation into the display matrix only on a stream copy.
    await run('ffmpeg', ['-hide_banner', '-v', 'error', '-y', '-i', encoded, '-c', 'copy', '-metadata:s:v:0', `rotate=${o.rotation}`, `${path}.rot.mp4`]);
    await rename(`${path}.rot.mp4`, path);
    await rm(encoded, { force: true });
  }
  return path;
}
