/** Test media made by FFmpeg on the spot: no binary fixtures in the repo. */
import { execFile } from 'node:child_process';
import { rename, rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import { BT709_TAGS, LINEAR_NITS } from '@mesh/media';

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
  /** SMPTE colour bars (BT.709, limited range, tagged) instead of the moving testsrc2 picture. */
  picture?: 'testsrc2' | 'bars';
  /**
   * 10-bit HEVC HDR as phones record it (BT.2020, tagged in the VUI and the MP4): the BT.709 picture
   * converted through linear light with SDR white at LINEAR_NITS, so SDR tones keep their light. PQ also
   * carries HDR10 metadata (mastering display 1000 cd/m², MaxCLL 1000, MaxFALL 400).
   */
  hdr?: 'hlg' | 'pq';
}

function lavfiPicture(o: Pick<ClipOptions, 'width' | 'height' | 'picture'>, fps: number): string[] {
  const picture = o.picture === 'bars' ? 'smptebars' : 'testsrc2';
  return ['-f', 'lavfi', '-i', `${picture}=size=${o.width}x${o.height}:rate=${fps}`];
}
/** The picture as 8-bit BT.709 limited range (smptebars is drawn in BT.601: converted, not relabelled). */
const BT709_PICTURE = 'scale=out_color_matrix=bt709:out_range=tv,format=yuv420p';

/** Encoder options of a 10-bit HEVC HDR clip: SDR -> linear -> BT.2020 HLG or PQ, tagged everywhere. */
function hdrEncode(hdr: 'hlg' | 'pq'): { filter: string; args: string[] } {
  const transfer = hdr === 'hlg' ? 'arib-std-b67' : 'smpte2084';
  const filter = [
    BT709_PICTURE,
    `zscale=tin=bt709:pin=bt709:min=bt709:rin=limited:t=linear:p=bt709:npl=${LINEAR_NITS}`,
    'format=gbrpf32le',
    `zscale=p=bt2020:t=${transfer}:m=bt2020nc:r=limited:npl=${LINEAR_NITS}`,
    'format=yuv420p10le',
  ].join(',');
  const hdr10 = hdr === 'pq' ? ':master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1):max-cll=1000,400:hdr10=1' : '';
  const args = [
    '-c:v', 'libx265', '-preset', 'ultrafast', '-crf', '12',
    '-x265-params', `log-level=error:colorprim=bt2020:transfer=${transfer}:colormatrix=bt2020nc:range=limited${hdr10}`,
    '-tag:v', 'hvc1', '-pix_fmt', 'yuv420p10le',
    '-color_primaries', 'bt2020', '-color_trc', transfer, '-colorspace', 'bt2020nc', '-color_range', 'tv',
  ];
  return { filter, args };
}

/** Writes an MP4 test clip (testsrc2 picture or colour bars, 440 Hz tone) to `path` and returns `path`. */
export async function makeClip(path: string, o: ClipOptions): Promise<string> {
  const fps = o.fps ?? 30;
  const args = ['-hide_banner', '-v', 'error', '-y', ...lavfiPicture(o, fps)];
  if (o.audio) args.push('-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000');
  args.push('-t', String(o.seconds), '-map', '0:v');
  if (o.audio) args.push('-map', '1:a', '-c:a', 'aac', '-b:a', '96k');
  if (o.hdr) {
    const { filter, args: encode } = hdrEncode(o.hdr);
    args.push('-vf', filter, ...encode);
  } else {
    if (o.codec === 'hevc') args.push('-c:v', 'libx265', '-preset', 'ultrafast', '-x265-params', 'log-level=error', '-tag:v', 'hvc1');
    else args.push('-c:v', 'libx264', '-preset', 'ultrafast');
    args.push('-pix_fmt', o.pixFmt ?? 'yuv420p');
    if (o.picture === 'bars') args.push('-vf', BT709_PICTURE, ...BT709_TAGS);
  }
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

/** A named rectangle of the SMPTE bars picture, in luma pixels: [x0, y0, x1, y1). */
export interface Patch {
  name: string;
  box: [number, number, number, number];
}

/**
 * The flat patches of FFmpeg's smptebars at `width`x`height`: the seven 75% bars (top two thirds), and on the
 * bottom row -I, 100% white and +Q; each inset by an eighth of a bar so edges and chroma blur stay out.
 */
export function smpteBarPatches(width: number, height: number): Patch[] {
  const bar = width / 7;
  const inset = Math.ceil(bar / 8);
  const box = (x0: number, y0: number, x1: number, y1: number): Patch['box'] => [Math.round(x0) + inset, Math.round(y0) + inset, Math.round(x1) - inset, Math.round(y1) - inset];
  const top = ['grey 75%', 'yellow', 'cyan', 'green', 'magenta', 'red', 'blue'].map((name, i) => ({ name, box: box(i * bar, 0, (i + 1) * bar, (height * 2) / 3) }));
  // The bottom quarter: -I, white and +Q are each 5/4 of a bar wide.
  const wide = (bar * 5) / 4;
  const bottom = ['-I', 'white 100%', '+Q'].map((name, i) => ({ name, box: box(i * wide, (height * 3) / 4, (i + 1) * wide, height) }));
  return [...top, ...bottom];
}

/** Mean Y, U and V (8-bit code values) of each patch in the first frame FFmpeg decodes from `input` (8-bit 4:2:0). */
export async function patchMeans(inputArgs: string[], width: number, height: number, patches: Patch[]): Promise<Map<string, [number, number, number]>> {
  const { stdout } = await run('ffmpeg', ['-hide_banner', '-v', 'error', ...inputArgs, '-frames:v', '1', '-f', 'rawvideo', '-pix_fmt', 'yuv420p', '-'], { encoding: 'buffer', maxBuffer: width * height * 2 });
  if (stdout.length !== (width * height * 3) / 2) throw new Error(`expected one ${width}x${height} yuv420p frame, got ${stdout.length} bytes`);
  const plane = (offset: number, stride: number, [x0, y0, x1, y1]: number[]) => {
    let sum = 0;
    for (let y = y0!; y < y1!; y++) for (let x = x0!; x < x1!; x++) sum += stdout[offset + y * stride + x]!;
    return sum / ((x1! - x0!) * (y1! - y0!));
  };
  const chroma = width * height;
  const half = (b: Patch['box']) => b.map((v) => v >> 1);
  return new Map(patches.map((p) => [p.name, [plane(0, width, p.box), plane(chroma, width / 2, half(p.box)), plane(chroma + chroma / 4, width / 2, half(p.box))]]));
}

/** ffmpeg input arguments for the original the bars clips are made from: smptebars as 8-bit BT.709. */
export function smpteBarsOriginal(width: number, height: number): string[] {
  return ['-f', 'lavfi', '-i', `smptebars=size=${width}x${height}:rate=1`, '-vf', BT709_PICTURE];
}
