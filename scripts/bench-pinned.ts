/**
 * `npm run bench -- --layout pinned`: the production layout, measured. Separate hosts are emulated on this
 * machine by pinning processes to CPUs (`taskset`: the process and every tool it starts may run on those
 * CPUs only, and FFmpeg and x264 size their threads to them, as on a host of that size); each emulated
 * host has its own ENCODE_YIELD_DIR, as containers have their own temp dirs, so encodes on different
 * hosts never pause each other. NATS, S3, MongoDB, the API, the downloader, the packager and the uploader
 * are not pinned: they are the rest of the cluster, and on this machine they share its two CPUs.
 *
 * 1. Two renditions, two one-core hosts: the raw path (the services' commands in sequence) pinned to one
 *    core, against the mesh with transcoder-720 on core 0 and transcoder-360 and the thumbnailer on core 1.
 * 2. One long video, chunked: a 120 s 1080p clip (720p only), one transcoder-720 replica on one core,
 *    then two replicas on two cores, and one replica with chunking off for the overhead.
 * 3. A model of the time to the final manifest of a 1-hour source on 1, 4 and 16 transcoder hosts, from
 *    the per-chunk and per-hop times measured here.
 */
import { execFile } from 'node:child_process';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DEFAULT_LADDER } from '@mesh/common';
import { makeClip, type ServiceName } from '@mesh/testkit';
import { load, median, rawPath, secs, startBenchMesh, type BenchMesh, type MeshResult, type RawResult } from './bench-mesh.ts';

const run = promisify(execFile);

/** The long clip of the chunked measurement. */
const LONG = { width: 1920, height: 1080, seconds: 120, fps: 30, audio: true };

/** Pins this process (all its threads) and the tools it starts from now on to `list`. */
async function pinSelf(list: string): Promise<void> {
  await run('taskset', ['-a', '-p', '-c', list, String(process.pid)]);
}

/** The emulated host of a service: the transcoders and the thumbnailer have one core each; the rest none of their own. */
function hostOf(name: ServiceName): '0' | '1' | undefined {
  if (name === 'transcoder-720') return '0';
  if (name === 'transcoder-360' || name === 'thumbnailer') return '1';
  return undefined;
}

/** What the transcoders log about each part of a chunked rung (libs/transcoder). */
interface PartLog {
  jobId: string;
  msg: string;
  /** ffmpeg done: how long the run took. */
  durationMs?: number;
  ffmpegMs?: number;
  frames?: number;
  downloadMs?: number;
  joinMs?: number;
  uploadMs?: number;
}

interface ChunkedRound {
  unchunked: MeshResult;
  one: MeshResult;
  two: MeshResult;
}

/** Makespan of `items` (seconds each) taken in order by `hosts` hosts, each taking the next when free from `freeAt`. */
export function fifoMakespan(items: number[], hosts: number, freeAt: number[] = Array.from({ length: hosts }, () => 0)): { end: number; freeAt: number[] } {
  const free = [...freeAt];
  for (const d of items) {
    const h = free.indexOf(Math.min(...free));
    free[h] = free[h]! + d;
  }
  return { end: Math.max(...free), freeAt: free };
}

export async function pinnedLayout(o: { input: string; work: string; rounds: number; shared: MeshResult }): Promise<void> {
  const all = `0-${cpus().length - 1}`;
  process.stdout.write('\npinned layout: generating a 120 s 1920x1080 30 fps clip with audio...\n');
  const long = await makeClip(join(o.work, 'long.mp4'), LONG);
  const hostDir = (host: string) => join(o.work, `host-${host}`);
  const parts: PartLog[] = [];
  const mesh = await startBenchMesh(o.input, {
    logs: process.env['BENCH_LOGS'],
    cpus: (name) => hostOf(name),
    serviceEnv: (name) => ({ ENCODE_YIELD_DIR: hostDir(hostOf(name) ?? 'rest') }),
    onRecord: (id, rec) => {
      if (id.startsWith('transcoder-720') && ['chunk encoded', 'audio encoded', 'rung joined', 'ffmpeg done'].includes(String(rec['msg']))) parts.push(rec as unknown as PartLog);
    },
  });
  const raws: RawResult[] = [];
  const meshes: MeshResult[] = [];
  const chunked: ChunkedRound[] = [];
  try {
    for (let i = 1; i <= o.rounds; i++) {
      await pinSelf('0');
      try {
        raws.push(await rawPath(o.input, join(o.work, `raw-pinned-${i}`)));
      } finally {
        await pinSelf(all);
      }
      meshes.push(await mesh.run(`pinned-${i}`));
      chunked.push(await chunkedRound(mesh, long, i, hostDir('1')));
      const c = chunked.at(-1)!;
      process.stdout.write(
        `pinned round ${i}: raw 1 core ${secs(raws.at(-1)!.finalMs)}, mesh 2 hosts ${secs(meshes.at(-1)!.finalMs)} (final); ` +
          `120 s to 720p: unchunked ${secs(c.unchunked.renditionMs['720p']!)}, 1 replica ${secs(c.one.renditionMs['720p']!)}, 2 replicas ${secs(c.two.renditionMs['720p']!)}; ${load()}\n`,
      );
    }
  } finally {
    await mesh.stop();
  }
  report(o, raws, meshes, chunked, parts);
}

/** One round of the long video: 1 replica chunked, 2 replicas chunked, 1 replica unchunked (downloader restarted with chunking off). */
async function chunkedRound(bench: BenchMesh, long: string, round: number, secondHostDir: string): Promise<ChunkedRound> {
  const only720 = { source: long, renditions: ['720p'] };
  const one = await bench.run(`long-one-${round}`, only720);
  const second = await bench.mesh.add('transcoder-720', { ENCODE_YIELD_DIR: secondHostDir }, { cpus: '1' });
  let two: MeshResult;
  try {
    two = await bench.run(`long-two-${round}`, only720);
  } finally {
    await second.stop();
  }
  const downloader = () => bench.mesh.processes.filter((p) => p.name === 'downloader' && p.child.exitCode === null && p.child.signalCode === null);
  for (const p of downloader()) await p.stop();
  await bench.mesh.add('downloader', { CHUNK_MIN_SOURCE_SEC: '0' });
  let unchunked: MeshResult;
  try {
    unchunked = await bench.run(`long-unchunked-${round}`, only720);
  } finally {
    for (const p of downloader()) await p.stop();
    await bench.mesh.add('downloader');
  }
  return { unchunked, one, two };
}

function report(o: { rounds: number; shared: MeshResult }, raws: RawResult[], meshes: MeshResult[], chunked: ChunkedRound[], parts: PartLog[]): void {
  const med = (xs: number[]) => median(xs);
  const raw = { first: med(raws.map((r) => r.firstMs)), final: med(raws.map((r) => r.finalMs)) };
  const m = { first: med(meshes.map((r) => r.firstMs)), final: med(meshes.map((r) => r.finalMs)) };
  const step = (k: string) => med(raws.map((r) => r.steps[k]!));
  const slower = Math.max(step('ffmpeg 720p'), step('ffmpeg 360p'));
  const row = (name: string, r: number, x: number) => `${name.padEnd(30)} ${secs(r).padStart(10)} ${secs(x).padStart(12)} ${(x / r).toFixed(2).padStart(8)}x`;
  console.log(`\npinned layout: separate hosts emulated with taskset (NATS, S3, MongoDB, API, downloader, packager, uploader unpinned); medians of ${o.rounds} rounds`);
  console.log('two renditions, two one-core hosts (60 s 1080p):');
  console.log(`${''.padEnd(30)} ${'raw 1 core'.padStart(10)} ${'mesh 2 hosts'.padStart(12)} ${'mesh/raw'.padStart(9)}`);
  console.log(row('first playable manifest', raw.first, m.first));
  console.log(row('final manifest', raw.final, m.final));
  console.log(`  raw steps on one core: ${Object.keys(raws[0]!.steps).map((k) => `${k} ${secs(step(k))}`).join(', ')}`);
  const shown = meshes.find((r) => r.finalMs === m.final)!;
  console.log(`  mesh stages (median round): ${Object.entries(shown.stages).map(([s, t]) => `${s} ${secs(t.start)} -> ${secs(t.end)}`).join(', ')}`);
  console.log(`  final manifest - slower encode (720p alone on one core, ${secs(slower)}): ${secs(m.final - slower)} (target <= 1 s); below the one-core raw path: ${m.final < raw.final ? 'yes' : 'no'} (${(m.final / raw.final).toFixed(2)}x)`);

  const t = (k: keyof ChunkedRound) => med(chunked.map((c) => c[k].renditionMs['720p']!));
  const [t0, t1, t2] = [t('unchunked'), t('one'), t('two')];
  const logsOf = (taskId: string, msg: string) => parts.filter((p) => p.jobId === taskId && p.msg === msg);
  const perRound = chunked.map((c) => {
    const join = logsOf(c.one.taskId, 'rung joined')[0]!;
    const audio = logsOf(c.one.taskId, 'audio encoded')[0]!.ffmpegMs!;
    const chunks = logsOf(c.one.taskId, 'chunk encoded');
    // The whole encode's video: its FFmpeg run less the audio it also encoded (the audio part's run).
    const wholeVideoMs = logsOf(c.unchunked.taskId, 'ffmpeg done')[0]!.durationMs! - audio;
    const frames = chunks.reduce((a, p) => a + p.frames!, 0);
    // With one replica the parts run one after another: a chunk's wall time runs from the end of the part before
    // (the hop, FFmpeg, the check, the upload, the record), less its share of the whole encode's video is its start-up.
    const stage = c.one.job.stages['transcode-720p'];
    const t0 = Date.parse(c.one.job.created_at);
    const ends = [c.one.stages['download']!.end, ...stage.chunks.map((p: { finishedAt: string }) => Date.parse(p.finishedAt) - t0)].sort((a: number, b: number) => a - b);
    const walls = stage.chunks.map((p: { finishedAt: string }) => {
      const end = Date.parse(p.finishedAt) - t0;
      return end - ends[ends.indexOf(end) - 1]!;
    });
    const videoWalls = walls.filter((_: number, i: number) => stage.chunks[i].part === 'video');
    const startup = videoWalls.reduce((a: number, w: number) => a + w, 0) / videoWalls.length - wholeVideoMs / chunks.length;
    return { join: join.downloadMs! + join.joinMs!, upload: join.uploadMs!, audio, count: chunks.length, v720: frames / LONG.fps / (wholeVideoMs / 1000), startup };
  });
  const pick = (k: keyof (typeof perRound)[number]) => med(perRound.map((r) => r[k]));
  const [join, upload, audio, count, v720, startup] = [pick('join'), pick('upload'), pick('audio'), pick('count'), pick('v720'), pick('startup')];
  console.log(`\none long video, chunked (120 s 1080p, the 720p rung: ${count} chunks of 60 s and the audio), time from POST to the 720p rendition:`);
  console.log(`  1 replica, unchunked (1 core)   ${secs(t0).padStart(8)}`);
  console.log(`  1 replica, chunked (1 core)     ${secs(t1).padStart(8)}`);
  console.log(`  2 replicas, chunked (2 cores)   ${secs(t2).padStart(8)}   speed-up ${(t1 / t2).toFixed(2)}x against 1 replica (target >= 1.7x), ${(t0 / t2).toFixed(2)}x against unchunked`);
  console.log(`  chunk overhead on one core: ${secs(t1 - t0)} in all; join ${secs(join)} (download the parts, concat by copy); per-chunk start-up ${secs(startup)} (hop, FFmpeg start and seek, rate control starting over, the check, the upload, the record); the audio part ${secs(audio)} (encoded in the whole run too); the rendition's upload (${secs(upload)}) is the same either way`);

  // ---- the 1-hour model ----------------------------------------------------------------------------------
  const st = o.shared.stages;
  const hop = (from: string, to: string) => (st[to]!.start - st[from]!.end) / 1000;
  const kbps = (r: string) => DEFAULT_LADDER.find((x) => x.name === r)!;
  const share360 = (kbps('360p').videoKbps + kbps('360p').audioKbps) / (kbps('720p').videoKbps + kbps('720p').audioKbps);
  const hour = 3600;
  const perSec = { join: join / 1000 / LONG.seconds, upload: upload / 1000 / LONG.seconds, audio: audio / 1000 / LONG.seconds };
  // The raw 360p encode of the 60 s clip less its audio: the video's rate, as v720 is.
  const v360 = 60 / (step('ffmpeg 360p') / 1000 - perSec.audio * 60);
  const pkgFinal = ((st['package']!.end - st['package']!.start) / 1000) * (hour / 60);
  const pkgFirst = pkgFinal / (1 + share360);
  const before = st['download']!.end / 1000 + hop('download', 'transcode-720p');
  const after = (pkg: number) => hop('transcode-360p', 'package') + pkg + hop('package', 'upload') + (st['upload']!.end - st['upload']!.start) / 1000;
  const n = hour / 60;
  const c720 = 60 / v720 + startup / 1000;
  const c360 = 60 / v360 + startup / 1000;
  console.log(`\nmodel: a 1 h 1080p source, default ladder, chunks of 60 s (${n} per rung), transcoder hosts of one core like these`);
  console.log(`  from this run: video at 720p ${v720.toFixed(2)}x real time per core, at 360p ${v360.toFixed(2)}x, per-chunk start-up ${secs(startup)}, audio part ${(perSec.audio * 1000).toFixed(1)} ms per source s, join ${(perSec.join * 1000).toFixed(1)} ms and rendition upload ${(perSec.upload * 1000).toFixed(1)} ms per source s (720p; 360p x${share360.toFixed(2)}), packaging ${secs(pkgFinal * 1000)} for the final manifest, hops ${secs((before + after(0)) * 1000)} in all`);
  console.log(`  ${'hosts'.padEnd(8)} ${'first playable'.padStart(15)} ${'final manifest'.padStart(15)}`);
  for (const hosts of [1, 4, 16]) {
    const first = fifoMakespan([perSec.audio * hour, ...Array.from({ length: n }, () => c720)], hosts);
    const final = fifoMakespan([perSec.audio * hour, ...Array.from({ length: n }, () => c360)], hosts, first.freeAt);
    const firstAt = before + first.end + (perSec.join + perSec.upload) * hour + after(pkgFirst);
    const finalAt = before + final.end + (perSec.join + perSec.upload) * hour * share360 + after(pkgFinal);
    console.log(`  ${String(hosts).padEnd(8)} ${secs(firstAt * 1000).padStart(15)} ${secs(finalAt * 1000).padStart(15)}`);
  }
  const unchunked = before + hour / v720 + hour / v360 + 2 * perSec.audio * hour + perSec.upload * hour * share360 + after(pkgFinal);
  console.log(`  1, unchunked ${''.padStart(9)} ${secs(unchunked * 1000).padStart(15)}  (one encode per rung, one after the other)`);
}
