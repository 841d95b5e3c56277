/**
 * `npm run bench [-- file] [--runs 3] [--layout shared|pinned]`: the mesh against the same work done by hand, measured in the same run.
 *
 * (a) raw: the same ffprobe, FFmpeg (720p, then 360p) and Shaka Packager commands the services build,
 *     run one after another on local files: first playable = 720p encoded + packaged; final = both.
 * (b) mesh: the eight services as processes on local servers; time from POST to the first playable
 *     manifest and to the final one, from the job's own timestamps (GET polled once a second).
 * Rounds alternate raw and mesh, and the medians are compared: on a shared 2-core VM one encode can
 * take 15% longer than the same encode a minute later, so a single pair would measure the noise.
 * Input: the given file, or a generated 60 s 1080p30 clip with audio. BENCH_LOGS=<file> keeps the
 * services' log lines (at info level).
 *
 * `--layout pinned` then measures the production layout, separate hosts emulated on this machine by
 * pinning processes to CPUs (scripts/bench-pinned.ts), and prints it beside these figures.
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { makeClip, tempDir } from '@mesh/testkit';
import { load, median, rawPath, secs, startBenchMesh, type MeshResult, type RawResult } from './bench-mesh.ts';
import { pinnedLayout } from './bench-pinned.ts';

const { values: opts, positionals } = parseArgs({ allowPositionals: true, options: { runs: { type: 'string', default: '3' }, layout: { type: 'string', default: 'shared' } } });
if (opts.layout !== 'shared' && opts.layout !== 'pinned') throw new Error(`--layout must be shared or pinned, got ${opts.layout}`);


async function main() {
  const work = await tempDir('bench');
  let input = positionals[0];
  if (!input) {
    process.stdout.write('generating a 60 s 1920x1080 30 fps clip with audio...\n');
    input = await makeClip(join(work.path, 'source.mp4'), { width: 1920, height: 1080, seconds: 60, audio: true });
  }
  const mesh = await startBenchMesh(input, { logs: process.env['BENCH_LOGS'] });
  const raws: RawResult[] = [];
  const meshes: MeshResult[] = [];
  try {
    for (let i = 1; i <= Number(opts.runs); i++) {
      raws.push(await rawPath(input, join(work.path, `raw-${i}`)));
      meshes.push(await mesh.run(`round-${i}`));
      process.stdout.write(`round ${i}: raw ${secs(raws.at(-1)!.firstMs)} / ${secs(raws.at(-1)!.finalMs)}, mesh ${secs(meshes.at(-1)!.firstMs)} / ${secs(meshes.at(-1)!.finalMs)} (first playable / final); ${load()}\n`);
    }
  } finally {
    await mesh.stop();
  }

  const raw = { firstMs: median(raws.map((r) => r.firstMs)), finalMs: median(raws.map((r) => r.finalMs)) };
  const m = { firstMs: median(meshes.map((r) => r.firstMs)), finalMs: median(meshes.map((r) => r.finalMs)) };
  // The round whose mesh final time is the median shows the stage breakdown.
  const shown = meshes.find((r) => r.finalMs === m.finalMs)!;
  const row = (name: string, r: number, x: number) => `${name.padEnd(26)} ${secs(r).padStart(9)} ${secs(x).padStart(9)} ${(x / r).toFixed(2).padStart(7)}x`;
  console.log(`\ninput: ${input === positionals[0] ? input : 'generated 60 s 1080p30 with audio'}, ${raws[0]!.durationSec.toFixed(1)} s; medians of ${raws.length} alternating rounds`);
  console.log(`${''.padEnd(26)} ${'raw'.padStart(9)} ${'mesh'.padStart(9)} ${'mesh/raw'.padStart(8)}`);
  console.log(row('first playable manifest', raw.firstMs, m.firstMs));
  console.log(row('final manifest', raw.finalMs, m.finalMs));
  const steps = Object.keys(raws[0]!.steps);
  console.log('\nraw steps (median):', steps.map((k) => `${k} ${secs(median(raws.map((r) => r.steps[k]!)))}`).join(', '));
  console.log('mesh stages (start -> done, from POST; the median round):');
  for (const [stage, t] of Object.entries(shown.stages)) console.log(`  ${stage.padEnd(16)} ${secs(t.start).padStart(7)} -> ${secs(t.end).padStart(7)}  (${secs(t.end - t.start)})`);
  // A hop: from one stage's done event to the next stage's started event, i.e. publish, queue, pull, validate.
  const st = shown.stages;
  const hop = (from: string, to: string) => (st[from] && st[to] ? `${from} -> ${to} ${Math.round(st[to].start - st[from].end)} ms` : undefined);
  const lastTranscode = ['transcode-720p', 'transcode-360p'].filter((s) => st[s]).sort((a, b) => st[b]!.end - st[a]!.end)[0]!;
  const hops = [hop('download', 'transcode-720p'), hop('download', 'transcode-360p'), hop('download', 'thumbnail'), hop(lastTranscode, 'package'), hop('package', 'upload')].filter(Boolean);
  console.log(`overhead per hop: ${hops.join(', ')}`);
  console.log('peak RSS per service:', Object.entries(mesh.rss()).map(([k, v]) => `${k} ${v} MB`).join(', '));

  if (opts.layout === 'pinned') await pinnedLayout({ input, work: work.path, rounds: Number(opts.runs), shared: shown });
  await work.remove();
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
