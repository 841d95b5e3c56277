/**
 * Colour: every output is BT.709, limited range, 8-bit, and says so; whatever the source is.
 *
 * Phones record 10-bit HDR (HLG or PQ, BT.2020 primaries; Dolby Vision profile 8 on top of either). An
 * H.264 ladder for browsers is SDR: HDR sources are tone-mapped to BT.709 (zscale + tonemap), wide-gamut
 * SDR is gamut-mapped, SDR in another matrix or full range is converted, and the outputs are tagged
 * explicitly in the container and the H.264 VUI, so no player guesses. See docs/architecture.md, "Colour and HDR".
 */
import type { Probe } from '@mesh/common';

/** How the source's picture is encoded, as far as turning it into BT.709 SDR goes. */
export type SourceRange = 'sdr' | 'wide-gamut' | 'hlg' | 'pq';

/**
 * Nominal peak luminance for linear light (cd/m² that 1.0 means): SDR reference white. The same 100 that
 * FFmpeg's tonemap counts its `peak` in, so a peak in cd/m² is divided by it.
 */
export const LINEAR_NITS = 100;

/**
 * The tone-mapping operator and its knee, in linear light (1.0 = SDR white). Mobius is linear up to the knee
 * and rolls off smoothly above it up to the source's peak: tones SDR can show stay where they were (at 0.5:
 * everything up to a 75% signal, the SMPTE bars), highlights above keep a gradient instead of clipping flat.
 * Hable and Reinhard darken the whole picture (measured in docs/architecture.md, "Colour and HDR").
 */
export const TONEMAP = 'mobius:param=0.5';

/** What HLG's 100% signal is on the 1000 cd/m² reference display zscale assumes. */
const HLG_PEAK_NITS = 1000;
/** PQ without metadata: what phones master to (PQ itself reaches 10000 cd/m²). */
const PQ_DEFAULT_PEAK_NITS = 1000;

/** Dolby Vision base-layer signal (dv_bl_signal_compatibility_id): 1 HDR10 and 6 UHD Blu-ray are PQ, 4 is HLG. */
const DV_PQ = new Set([1, 6]);
const DV_HLG = new Set([4]);

export function sourceRange(probe: Probe): SourceRange {
  const c = probe.video.colour ?? {};
  const hdr = probe.video.hdr;
  if (c.transfer === 'smpte2084') return 'pq';
  if (c.transfer === 'arib-std-b67') return 'hlg';
  if (c.transfer === undefined) {
    // Dolby Vision profile 8 says what its base layer is even when the stream's own tags are missing.
    const dv = hdr?.dolbyVision?.compatibility;
    if (dv !== undefined && DV_PQ.has(dv)) return 'pq';
    if (dv !== undefined && DV_HLG.has(dv)) return 'hlg';
    // HDR10 metadata (ST 2086 / MaxCLL) only exists for PQ: a 10-bit BT.2020 stream carrying it is PQ.
    if (c.primaries === 'bt2020' && (c.bitDepth ?? 8) >= 10 && (hdr?.masteringDisplay || hdr?.contentLight)) return 'pq';
  }
  // BT.2020 with an SDR (or no) transfer: wide-gamut SDR. An HLG stream that lost its tag lands here too,
  // and HLG is made to look right on an SDR display, so gamut mapping alone serves it.
  if (c.primaries === 'bt2020') return 'wide-gamut';
  return 'sdr';
}

/** The peak the tone map rolls off to, in units of LINEAR_NITS: MaxCLL, else the mastering display's, else the nominal. */
export function signalPeak(probe: Probe, range: 'hlg' | 'pq'): number {
  // zscale's HLG reference display is fixed at 1000 cd/m²: HLG's linear light peaks there whatever the metadata says.
  const hdr = probe.video.hdr;
  const nits = range === 'hlg' ? HLG_PEAK_NITS : hdr?.contentLight?.maxCll || hdr?.masteringDisplay?.maxLuminance || PQ_DEFAULT_PEAK_NITS;
  // A peak at or below SDR white needs no roll-off (and mobius needs peak > 1).
  return Math.max(1, Math.round((nits / LINEAR_NITS) * 100) / 100);
}

/** swscale's names for the matrices a source may declare (ffprobe's `color_space`). */
const SWS_MATRIX: Record<string, string> = {
  bt709: 'bt709',
  smpte170m: 'smpte170m',
  bt470bg: 'bt470',
  fcc: 'fcc',
  smpte240m: 'smpte240m',
  bt2020nc: 'bt2020',
  bt2020c: 'bt2020',
};

/** zscale's names, for the values it knows; anything else falls back to the range's usual value. */
const ZIMG_PRIMARIES = new Set(['bt709', 'bt2020', 'smpte432', 'smpte431', 'smpte170m', 'bt470bg', 'smpte240m']);
const ZIMG_MATRIX = new Set(['bt709', 'bt2020nc', 'bt2020c', 'smpte170m', 'bt470bg']);
const ZIMG_SDR_TRANSFER = new Set(['bt709', 'bt2020-10', 'bt2020-12', 'smpte170m']);

/**
 * The matrix an SDR source's YUV is in: what it declares, else what players assume from its size (BT.601
 * up to PAL's 720x576, BT.709 above). swscale alone would take BT.601 for any undeclared source.
 */
function sdrMatrix(probe: Probe): string {
  const declared = SWS_MATRIX[probe.video.colour?.space ?? ''];
  if (declared) return declared;
  return probe.video.width * probe.video.height > 720 * 576 ? 'bt709' : 'smpte170m';
}

/** zscale input options: the source's declared primaries, matrix and range, with `transfer` from the range. */
function zscaleInput(probe: Probe, transfer: string): string {
  const c = probe.video.colour ?? {};
  const primaries = c.primaries && ZIMG_PRIMARIES.has(c.primaries) ? c.primaries : 'bt2020';
  const matrix = c.space && ZIMG_MATRIX.has(c.space) ? c.space : 'bt2020nc';
  return `tin=${transfer}:pin=${primaries}:min=${matrix}:rin=${c.range === 'pc' ? 'full' : 'limited'}`;
}

/**
 * Filters that scale the picture to `size` (scale's `W:H`) and leave it 8-bit 4:2:0 BT.709 limited range
 * with square pixels, from any source. SDR is one swscale pass (matrix and range converted when the source
 * differs); wide gamut is gamut-mapped by zscale; HDR goes to linear BT.709 light in float, is tone-mapped
 * and encoded back. Scaling comes first, so the float work is done at the output size.
 */
export function bt709Filters(probe: Probe, size: string): string[] {
  const range = sourceRange(probe);
  if (range === 'sdr') {
    const c = probe.video.colour ?? {};
    const inRange = c.range === 'pc' || c.range === 'tv' ? `:in_range=${c.range}` : '';
    return [`scale=${size}:in_color_matrix=${sdrMatrix(probe)}${inRange}:out_color_matrix=bt709:out_range=tv`, 'setsar=1', 'format=yuv420p'];
  }
  const input = zscaleInput(probe, range === 'pq' ? 'smpte2084' : range === 'hlg' ? 'arib-std-b67' : sdrTransfer(probe));
  // zimg converts primaries in linear light; every output property is given, since zscale takes one left
  // out from the frame's tags, not from the input options.
  const bt709 = 'p=bt709:t=bt709:m=bt709:r=limited';
  return [
    // Resize only: swscale keeps the 10 bits, zscale below reads them.
    `scale=${size}`,
    'setsar=1',
    ...(range === 'wide-gamut'
      ? [`zscale=${input}:${bt709}`]
      : [
          // To linear BT.709 light in float (1.0 = SDR white); HDR highlights are above 1.
          `zscale=${input}:t=linear:p=bt709:npl=${LINEAR_NITS}`,
          'format=gbrpf32le',
          // desat=0: colours keep their saturation (the operator scales each pixel's channels alike, so hues stay).
          `tonemap=${TONEMAP}:desat=0:peak=${signalPeak(probe, range)}`,
          `zscale=${bt709}`,
        ]),
    'format=yuv420p',
  ];
}

function sdrTransfer(probe: Probe): string {
  const t = probe.video.colour?.transfer;
  return t && ZIMG_SDR_TRANSFER.has(t) ? t : 'bt709';
}

/** Output options that tag the stream BT.709 limited range in the container (MP4 `colr`). */
export const BT709_TAGS = ['-color_primaries', 'bt709', '-color_trc', 'bt709', '-colorspace', 'bt709', '-color_range', 'tv'];

/** The same in the H.264 bitstream's VUI, which survives repackaging (x264 option names). */
export const X264_BT709_VUI = 'colorprim=bt709:transfer=bt709:colormatrix=bt709:range=tv';

/** A JPEG is read as JFIF says: BT.601 matrix, full range. From the BT.709 picture bt709Filters made. */
export const JPEG_FILTERS = ['scale=in_color_matrix=bt709:in_range=tv:out_color_matrix=bt601:out_range=pc', 'format=yuvj420p'];
