/**
 * transcoder: work.transcode.<rung> -> one H.264/AAC MP4 in the work bucket -> work.package
 *
 * One process encodes the rungs of the ladder named in RENDITIONS (transcoder-720 and transcoder-360 are
 * this code with their own default), one durable consumer each (`transcoder-1080` for `1080p`), so each
 * rung scales on its own; replicas of one share its consumer. A long encode keeps its message alive (the
 * consume loop calls working()).
 * FFmpeg reads the client's object straight from S3 through a presigned URL (range requests, no local copy),
 * and the object's ETag is checked after, so a source replaced mid-encode fails the rendition (SOURCE_CHANGED).
 *
 * A long source's rung comes as parts (`chunk` in the message, planned by the downloader): video chunks and
 * the audio, taken by whichever replicas of the rung are free. Each part is encoded and uploaded to the
 * work bucket on its own; the worker whose part completes the rung (libs/jobs chunks.ts) joins the parts by
 * stream copy and hands the rendition on exactly as a whole encode does.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { publishEvent, publishWork, type Bus } from '@mesh/bus';
import {
  chunkName,
  chunkRef,
  ConfigError,
  InputError,
  int,
  ladderConfig,
  layout,
  mapLimit,
  msgId,
  optional,
  s3Config,
  transcodeStage,
  type ChunkRef,
  type Env,
  type Logger,
  type RenditionOutput,
  type S3Config,
  type TranscodeChunk,
  type TranscodeWork,
} from '@mesh/common';
import { getChunkSet, recordPart, runStageService, type JobStates } from '@mesh/jobs';
import {
  audioArgs,
  chunkArgs,
  concatList,
  encodeChunkChecked,
  encodeProfile,
  holdUrgency,
  joinArgs,
  outputSize,
  remuxBudgetMs,
  runTool,
  timeFactorConfig,
  toolBudgetMs,
  transcodeArgs,
  yieldConfig,
  type EncodeProfile,
  type RunOptions,
} from '@mesh/media';
import { downloadToFile, s3url, uploadFile, withSourceUrl } from '@mesh/storage';
import { annotate, ffmpegSpeed, inSpan } from '@mesh/telemetry';
import type { S3Client } from '@aws-sdk/client-s3';

/** How often progress reaches the job's status. */
const PROGRESS_EVERY_MS = 2000;

/** One rung this process encodes, and how it shares the host. */
interface RungConfig {
  profile: EncodeProfile;
  niceness: number;
  yieldTo: ReturnType<typeof yieldConfig>;
}

/** RENDITIONS: the rungs to encode (comma-separated names of the ladder's), `defaults` when unset. */
function renditionsConfig(env: Env, defaults: string[]): RungConfig[] {
  const { rungs, first } = ladderConfig(env);
  const names = (optional(env, 'RENDITIONS') ?? defaults.join(',')).split(',').map((n) => n.trim()).filter(Boolean);
  if (names.length === 0) throw new ConfigError('RENDITIONS must name at least one rung of the ladder');
  return names.map((name) => {
    const rung = rungs.find((r) => r.name === name);
    if (!rung) throw new ConfigError(`RENDITIONS names ${JSON.stringify(name)}, which is not a rung of the ladder (${rungs.map((r) => r.name).join(', ')})`);
    const profile = encodeProfile(rung, first);
    // Encodes on one host pause while a more urgent one runs.
    return { profile, niceness: int(env, 'FFMPEG_NICENESS', profile.niceness, { min: 0, max: 19 }), yieldTo: yieldConfig(env, profile.rank) };
  });
}

interface Service {
  bus: Bus;
  s3: S3Client;
  config: { s3: S3Config; timeFactor: number };
}

/** What one encode of a message needs: where it reads, how it runs, how it reports. */
interface EncodeContext {
  message: TranscodeWork;
  rung: RungConfig;
  service: Service;
  log: Logger;
  signal: AbortSignal;
  stage: string;
}

/** Runs FFmpeg on the pinned source (read in place through a presigned URL), bounded and reporting progress as `percent` of `part`. */
function encodeFromSource(c: EncodeContext, args: (input: string, ifMatch: string | undefined) => string[], o: { decodedSec: number; percent: (sourceSec: number) => number; chunk?: ChunkRef } & Pick<RunOptions, 'position'>) {
  const { message, rung, service } = c;
  const { job, probe, source } = message;
  let lastProgress = 0;
  const onProgress = (seconds: number) => {
    if (Date.now() - lastProgress < PROGRESS_EVERY_MS) return;
    lastProgress = Date.now();
    const percent = Math.max(0, Math.min(99, Math.round(o.percent(seconds))));
    publishEvent(service.bus, { type: 'stage.progress', jobId: job.jobId, stage: c.stage, percent, ...(o.chunk ? { chunk: o.chunk } : {}) }).catch(() => undefined);
  };
  const pinned = { bucket: service.config.s3.inputBucket, key: layout.source(job), ...source };
  return withSourceUrl(service.s3, pinned, (input, { ifMatch }) =>
    runTool('ffmpeg', args(input, ifMatch), {
      log: c.log,
      signal: c.signal,
      onProgress,
      // Bounded by the probed duration and a wall-clock budget from what it decodes (libs/media/src/limits.ts).
      declaredSec: probe.durationSec,
      ...(o.position ? { position: o.position } : {}),
      timeoutMs: toolBudgetMs(o.decodedSec, service.config.timeFactor),
      niceness: rung.niceness,
      redact: { [input]: s3url(pinned) },
      ...(rung.yieldTo ? { yieldTo: rung.yieldTo } : {}),
    }),
  );
}

/** The rendition is in the work bucket: its outcome goes to the packager, as for every rendition. */
async function handOn(c: EncodeContext, file: string): Promise<void> {
  const { job, rendition, plan, probe } = c.message;
  const { bus, s3, config } = c.service;
  const result: RenditionOutput = { rendition, ...(plan.sizes[rendition] ?? outputSize(probe, c.rung.profile.shortSide)) };
  await uploadFile(s3, { bucket: config.s3.workBucket, key: layout.rendition(job, rendition) }, file, { contentType: 'video/mp4', signal: c.signal });
  await publishEvent(bus, { type: 'rendition.ready', jobId: job.jobId, output: result }, msgId(job, 'rendition.ready', rendition));
  await publishWork(bus, 'package', { kind: 'package', job, plan, outcome: { ok: true, output: result } }, msgId(job, 'package', rendition));
}

/** The whole rendition in one encode. */
async function encodeWhole(c: EncodeContext, tmp: string): Promise<void> {
  const { message, rung } = c;
  const { probe, plan, rendition } = message;
  const output = join(tmp, `${rendition}.mp4`);
  const { durationMs } = await encodeFromSource(c, (input, ifMatch) => transcodeArgs({ input, ...(ifMatch ? { ifMatch } : {}), output, probe, plan, profile: rung.profile }), {
    decodedSec: probe.durationSec,
    percent: (sec) => (100 * sec) / probe.durationSec,
  });
  const speed = probe.durationSec / Math.max(0.001, durationMs / 1000);
  ffmpegSpeed.observe({ work: `transcode-${rendition}` }, speed);
  annotate({ 'media.duration_s': probe.durationSec, 'media.ffmpeg_speed': Number(speed.toFixed(2)) });
  await handOn(c, output);
}

/** One video chunk, checked (libs/media encodeChunkChecked: a seek that missed its first frames is redone from the start). */
async function encodeChunk(c: EncodeContext, chunk: Extract<TranscodeChunk, { part: 'video' }>, output: string): Promise<void> {
  const { probe, plan } = c.message;
  const { num, den } = plan.frameRate;
  const startSec = (chunk.startFrame * den) / num;
  const endSec = chunk.endFrame === null ? probe.durationSec : (chunk.endFrame * den) / num;
  const { result, facts, seekSec } = await encodeChunkChecked(chunk, {
    plan,
    probe,
    output,
    log: c.log,
    signal: c.signal,
    encode: (seek) =>
      encodeFromSource(c, (input, ifMatch) => chunkArgs({ input, ...(ifMatch ? { ifMatch } : {}), output, probe, plan, profile: c.rung.profile, chunk, seekSec: seek }), {
        decodedSec: endSec - seek,
        // Where in the source it is: the chunk's frames counted from its first (its output clock starts at 0, the audio read along keeps the source's).
        position: ({ frames }) => startSec + (frames * den) / num,
        percent: (sec) => (100 * (sec - startSec)) / Math.max(0.001, endSec - startSec),
        chunk: chunkRef(chunk),
      }),
  });
  const speed = (endSec - startSec) / Math.max(0.001, result.durationMs / 1000);
  annotate({ 'media.chunk.frames': facts.frames, 'media.duration_s': Number((endSec - startSec).toFixed(3)), 'media.ffmpeg_speed': Number(speed.toFixed(2)), 'media.seek_s': seekSec });
  c.log.info({ chunk: chunk.index, frames: facts.frames, ffmpegMs: result.durationMs, seekSec }, 'chunk encoded');
}

/**
 * The rung's parts are all in and this worker completed the set: download them, join them by stream copy
 * (audio muxed in), hand the rendition on, and say the rung is done (each part's stage.done is its own).
 */
async function joinRung(c: EncodeContext, chunk: ChunkRef, tmp: string): Promise<void> {
  const { job, rendition, plan } = c.message;
  const { s3, config, bus } = c.service;
  const dir = join(tmp, 'join');
  await mkdir(dir);
  const started = Date.now();
  const files = Array.from({ length: chunk.count }, (_, i) => `${i}.mp4`);
  const parts: [number | 'audio', string][] = [...files.map((f, i): [number, string] => [i, f]), ...(plan.audio ? [['audio', 'audio.mp4'] as [number | 'audio', string]] : [])];
  const sizes = await mapLimit(parts, 4, ([part, file]) => downloadToFile(s3, { bucket: config.s3.workBucket, key: layout.chunk(job, rendition, part) }, join(dir, file), c.signal));
  const downloadMs = Date.now() - started;
  await writeFile(join(dir, 'list.txt'), concatList(files));
  const output = join(dir, `${rendition}.mp4`);
  const bytes = sizes.reduce((a, b) => a + b, 0);
  await runTool('ffmpeg', joinArgs({ list: join(dir, 'list.txt'), ...(plan.audio ? { audio: join(dir, 'audio.mp4') } : {}), output }), { log: c.log, signal: c.signal, cwd: dir, timeoutMs: remuxBudgetMs(bytes) });
  const joinedMs = Date.now() - started;
  await handOn(c, output);
  const stage = transcodeStage(rendition);
  await publishEvent(bus, { type: 'stage.done', jobId: job.jobId, stage }, msgId(job, 'stage.done', stage));
  annotate({ 'media.chunks': chunk.count, 'mesh.bytes': bytes });
  c.log.info({ chunks: chunk.count, downloadMs, joinMs: joinedMs - downloadMs, uploadMs: Date.now() - started - joinedMs, totalMs: Date.now() - started }, 'rung joined');
}

/** One part of a chunked rung: encode and upload it (unless a delivery before did), record it, and join when it completed the rung. */
async function encodePart(c: EncodeContext, chunk: TranscodeChunk, tmp: string, states: JobStates): Promise<void> {
  const { job, rendition, plan, probe } = c.message;
  const ref = chunkRef(chunk);
  const name = chunkName(ref);
  const key = layout.chunk(job, rendition, chunk.part === 'video' ? chunk.index : 'audio');
  const output = join(tmp, `${name}.mp4`);
  // Recorded already: a delivery before was killed after uploading it (the joiner among them, mid-join).
  if ((await getChunkSet(states, job, rendition))?.parts.includes(name)) c.log.info({ part: name }, 'part encoded by a delivery before; not encoded again');
  else {
    if (chunk.part === 'video') await encodeChunk(c, chunk, output);
    else {
      const { durationMs } = await encodeFromSource(c, (input, ifMatch) => audioArgs({ input, ...(ifMatch ? { ifMatch } : {}), output, probe, profile: c.rung.profile }), {
        decodedSec: probe.durationSec,
        percent: (sec) => (100 * sec) / probe.durationSec,
        chunk: ref,
      });
      c.log.info({ ffmpegMs: durationMs }, 'audio encoded');
    }
    await uploadFile(c.service.s3, { bucket: c.service.config.s3.workBucket, key }, output, { contentType: 'video/mp4', signal: c.signal });
  }
  const { set, join: mine } = await recordPart(states, job, rendition, ref, plan.audio);
  c.log.info({ part: name, parts: set.parts.length, joiner: set.joiner ?? null }, 'part recorded');
  if (mine) await inSpan(`${c.stage} join`, { attributes: { 'job.id': job.jobId, 'media.rendition': rendition, 'media.chunks': ref.count } }, () => joinRung(c, ref, tmp));
}

/** `name` is the service's name; `defaults` the rungs it encodes unless RENDITIONS says otherwise. */
export function runTranscoder(o: { name: string; defaults: string[] }): Promise<void> {
  return runStageService({
    name: o.name,
    kind: 'transcode',
    config: (env: Env) => ({
      s3: s3Config(env),
      concurrency: int(env, 'TRANSCODER_CONCURRENCY', 1, { min: 1, max: 16 }),
      rungs: new Map(renditionsConfig(env, o.defaults).map((r) => [r.profile.name, r])),
      timeFactor: timeFactorConfig(env),
    }),
    renditions: (config) => [...config.rungs.keys()],
    stage: ({ rendition }) => transcodeStage(rendition),
    // A chunked rung's parts are items of their own: each is done once, and the rung when joined.
    item: ({ rendition, chunk }) => (chunk ? `${transcodeStage(rendition)}.${chunkName(chunkRef(chunk))}` : transcodeStage(rendition)),
    chunk: ({ chunk }) => (chunk ? chunkRef(chunk) : undefined),
    async handle(message, { tmp, signal, log, stage }, service) {
      const rung = service.config.rungs.get(message.rendition);
      // Only its own subjects reach it; a message that names another rung is a publisher's bug.
      if (!rung) throw new InputError('INVALID_MESSAGE', `this transcoder does not encode ${message.rendition}`);
      // Until its rendition (or part) is handed on (upload included), lesser encodes on this host wait.
      const release = rung.yieldTo ? holdUrgency(rung.yieldTo, log) : undefined;
      const c: EncodeContext = { message, rung, service, log, signal, stage };
      try {
        if (message.chunk) await encodePart(c, message.chunk, tmp, service.states);
        else await encodeWhole(c, tmp);
      } finally {
        release?.();
      }
    },
    // A failed rendition does not fail the job by itself: the packager decides, once it knows whether
    // another rendition made it. A chunk given up fails its rung.
    async onGiveUp({ job, plan, rendition, chunk }, _err, { stage, code, reason }, { bus }) {
      const ref = chunk ? chunkRef(chunk) : undefined;
      await publishEvent(bus, { type: 'stage.failed', jobId: job.jobId, stage, code, reason: ref ? `${ref.part === 'video' ? `chunk ${ref.index}` : 'audio'}: ${reason}` : reason, fatal: false, ...(ref ? { chunk: ref } : {}) });
      await publishWork(bus, 'package', { kind: 'package', job, plan, outcome: { ok: false, rendition, reason } }, msgId(job, 'package', rendition, 'failed'));
    },
  });
}
