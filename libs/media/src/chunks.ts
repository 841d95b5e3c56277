/**
 * Chunked encoding of long sources: each rung of a long video is cut into chunks on the output frame grid,
 * encoded by whichever replicas of the rung are free, and joined by stream copy. Pure planning here; the
 * argument arrays are in ffmpeg.ts, the bookkeeping (who joins) in libs/jobs/src/chunks.ts.
 *
 * Frame n of the output is at n / frameRate from the start of the source (the `fps` filter puts every
 * frame on that grid, in the whole encode and in each chunk alike), and a segment starts at the first
 * frame at or after each multiple of the segment duration. Chunks start on segment starts, so every chunk
 * begins with the keyframe the whole encode would have there, and the joined rendition has the same
 * frames, keyframes and timestamps as one encode of the whole source.
 */
import { ConfigError, int, MeshError, type Env, type Logger, type MediaPlan, type Probe, type TranscodeChunk } from '@mesh/common';
import { chunkCheckArgs } from './ffmpeg.ts';
import { PROBE_BUDGET_MS } from './limits.ts';
import { SEGMENT_SECONDS } from './profiles.ts';
import { runTool } from './run.ts';

export interface ChunkConfig {
  /** Sources at least this long are chunked; 0 turns chunking off. */
  minSourceSec: number;
  /** Length of a chunk: a whole number of segments. */
  chunkSeconds: number;
}

export const DEFAULT_CHUNK_CONFIG: ChunkConfig = { minSourceSec: 120, chunkSeconds: 60 };

/** CHUNK_MIN_SOURCE_SEC (0: off) and CHUNK_SECONDS (a multiple of the segment duration), checked at start. */
export function chunkConfig(env: Env): ChunkConfig {
  const minSourceSec = int(env, 'CHUNK_MIN_SOURCE_SEC', DEFAULT_CHUNK_CONFIG.minSourceSec, { min: 0, max: 24 * 3600 });
  const chunkSeconds = int(env, 'CHUNK_SECONDS', DEFAULT_CHUNK_CONFIG.chunkSeconds, { min: SEGMENT_SECONDS, max: 3600 });
  if (chunkSeconds % SEGMENT_SECONDS !== 0) {
    throw new ConfigError(`CHUNK_SECONDS must be a multiple of the segment duration (${SEGMENT_SECONDS} s), so chunks start on segment boundaries; got ${chunkSeconds}`);
  }
  return { minSourceSec, chunkSeconds };
}

/** The first frame at or after `m` segment durations: where segment `m` starts (its keyframe). */
export function segmentStartFrame(plan: Pick<MediaPlan, 'frameRate' | 'segmentSeconds'>, m: number): number {
  const { num, den } = plan.frameRate;
  const seg = plan.segmentSeconds;
  // Integers where they can be (exact); a fractional segment length would be rounded the same way by the encoder.
  return Number.isInteger(seg) ? Math.floor((m * seg * num + den - 1) / den) : Math.ceil((m * seg * num) / den - 1e-9);
}

/** A chunk's frame range, as the work item carries it. */
export type ChunkRange = Extract<TranscodeChunk, { part: 'video' }>;

/**
 * The chunks of a rung, or null when the source is encoded in one piece (shorter than `minSourceSec`,
 * chunking off, or too short for two chunks). `round(duration / chunkSeconds)` chunks: the last one runs to
 * the end of the source (its frame count is whatever the source holds), so it is between half and one and a
 * half chunks long. Every rung of a job gets the same chunks.
 */
export function planChunks(probe: Pick<Probe, 'durationSec'>, plan: Pick<MediaPlan, 'frameRate' | 'segmentSeconds'>, config: ChunkConfig): ChunkRange[] | null {
  if (config.minSourceSec === 0 || probe.durationSec < config.minSourceSec) return null;
  const segments = config.chunkSeconds / plan.segmentSeconds;
  if (!Number.isInteger(segments) || segments < 1) throw new Error(`planChunks: chunks of ${config.chunkSeconds} s are not a whole number of ${plan.segmentSeconds} s segments`);
  const count = Math.round(probe.durationSec / config.chunkSeconds);
  if (count < 2) return null;
  return Array.from({ length: count }, (_, index) => ({
    part: 'video' as const,
    index,
    count,
    startFrame: segmentStartFrame(plan, index * segments),
    endFrame: index === count - 1 ? null : segmentStartFrame(plan, (index + 1) * segments),
  }));
}

/** Containers whose index lets FFmpeg seek to the keyframe before a time (MP4/MOV sample tables, Matroska cues). */
const INDEXED = /(^|,)(mov|mp4|matroska|webm)(,|$)/;

/**
 * How far before a chunk's first frame decoding starts. FFmpeg seeks an indexed container to the keyframe
 * at or before the seek point, so a second covers the frames the frame-rate conversion looks at. Other
 * containers (MPEG-TS, PS, FLV...) are seeked by timestamp and may land after the keyframe a chunk needs
 * (FFmpeg 5.1 on MPEG-TS: decoding resumes at the next keyframe), so decoding starts earlier than any
 * usual GOP. A chunk that still misses its first frames is found by checkChunk and encoded again from the
 * start of the source.
 */
export function seekPrerollSec(probe: Pick<Probe, 'formatName'>): number {
  return INDEXED.test(probe.formatName) ? 1 : 30;
}

/** Where decoding of a chunk starts (0: from the start, no seek): `preroll` before its first frame. */
export function chunkSeekSec(plan: Pick<MediaPlan, 'frameRate'>, startFrame: number, prerollSec: number): number {
  if (startFrame === 0) return 0;
  const start = (startFrame * plan.frameRate.den) / plan.frameRate.num;
  // Milliseconds: the argument is written with three decimals.
  return Math.max(0, Math.floor((start - prerollSec) * 1000) / 1000);
}

/** Decoding goes this far past a chunk's last frame: the frame-rate conversion looks one frame ahead. */
export const CHUNK_DECODE_MARGIN_SEC = 1;

/** What ffprobe says about an encoded chunk's video (chunkCheckArgs): no frames, no stream. */
export interface ChunkFacts {
  frames: number;
  /** Null when it holds no frames. */
  startSec: number | null;
}

export function parseChunkFacts(json: unknown): ChunkFacts {
  const stream = (json as { streams?: { nb_frames?: string; start_time?: string }[] }).streams?.[0];
  if (!stream) return { frames: 0, startSec: null };
  const frames = Number(stream.nb_frames ?? NaN);
  const startSec = Number(stream.start_time ?? NaN);
  if (!Number.isFinite(frames) || !Number.isFinite(startSec)) throw new Error(`ffprobe gave no frame count or start time for the chunk: ${JSON.stringify(json)}`);
  return { frames, startSec };
}

/**
 * Why an encoded chunk is not the frames it should hold, or null when it is: it must start at 0 (a later
 * start means decoding began after its first frame) and, unless it is the last, hold exactly its frames.
 */
export function chunkProblem(facts: ChunkFacts, chunk: Pick<ChunkRange, 'startFrame' | 'endFrame'>, plan: Pick<MediaPlan, 'frameRate'>): string | null {
  const frame = plan.frameRate.den / plan.frameRate.num;
  if (facts.frames === 0 || facts.startSec === null) return 'it holds no frames (decoding began after it, or the source ends before it)';
  if (Math.abs(facts.startSec) >= frame / 2) return `it starts at ${facts.startSec.toFixed(3)} s instead of 0 (${Math.round(facts.startSec / frame)} frames missing at its start)`;
  if (chunk.endFrame !== null && facts.frames !== chunk.endFrame - chunk.startFrame) return `it holds ${facts.frames} frames instead of ${chunk.endFrame - chunk.startFrame}`;
  return null;
}

/** ffprobe of an encoded chunk (a local file of ours): its frames and start. */
export async function readChunkFacts(path: string, o: { log: Logger; signal?: AbortSignal }): Promise<ChunkFacts> {
  const { stdout } = await runTool('ffprobe', chunkCheckArgs(path), { ...o, timeoutMs: PROBE_BUDGET_MS });
  return parseChunkFacts(JSON.parse(stdout));
}

/**
 * Encodes a chunk (`encode(seekSec)` writes `output`) and checks it. A chunk whose seek landed after its
 * first frame is encoded again decoding from the start of the source, which is always exact; one that is
 * still wrong fails (TOOL_FAILED, retried: a source read cut short by the network looks the same).
 */
export async function encodeChunkChecked<T>(
  chunk: ChunkRange,
  o: { plan: MediaPlan; probe: Pick<Probe, 'formatName'>; output: string; log: Logger; signal?: AbortSignal; encode: (seekSec: number) => Promise<T> },
): Promise<{ result: T; facts: ChunkFacts; seekSec: number; tries: number }> {
  let seekSec = chunkSeekSec(o.plan, chunk.startFrame, seekPrerollSec(o.probe));
  for (let tries = 1; ; tries++) {
    const result = await o.encode(seekSec);
    const facts = await readChunkFacts(o.output, o);
    const problem = chunkProblem(facts, chunk, o.plan);
    if (!problem) return { result, facts, seekSec, tries };
    if (seekSec === 0) throw new MeshError('TOOL_FAILED', `chunk ${chunk.index} is not the frames it should be: ${problem}`);
    o.log.warn({ chunk: chunk.index, seekSec, problem }, "the seek missed the chunk's first frames; encoding it again, decoding from the start of the source");
    seekSec = 0;
  }
}
