/**
 * packager: work.package (one rendition ready, or failed) -> DASH and HLS package of every ready rendition -> work.upload
 *
 * Records the rendition's outcome on the job (compare-and-set), then packages all renditions ready so far,
 * so the first one out is playable at once and each later one grows the manifest. Segments go straight
 * to the output, into the job attempt's own folder (`<object_key>/<jobId>.<attempt>/`), each written once:
 * a later packaging of the same attempt keeps what is there, so segments (init segments too) never change
 * once a manifest may name them, and another job or attempt can never overwrite or mix them. The DASH
 * manifest and the HLS master (one Shaka Packager run, the same CMAF segments) wait in the work bucket for
 * the uploader, which publishes them. Nothing names a segment before it is in place.
 */
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { publishWork } from '@mesh/bus';
import { int, layout, mapLimit, MeshError, msgId, s3Config, type Env } from '@mesh/common';
import { mayPublish, runStageService, settleRendition } from '@mesh/jobs';
import { holdUrgency, packagerArgs, packagerBudgetMs, runTool, setBaseUrl, yieldConfig } from '@mesh/media';
import { downloadToFile, uploadFile, uploadOnce } from '@mesh/storage';
import { annotate } from '@mesh/telemetry';

/** Segments are immutable once written; the manifest changes as renditions are added. */
const SEGMENT_CACHE = 'public, max-age=31536000, immutable';

await runStageService({
  name: 'packager',
  kind: 'package',
  config: (env: Env) => ({
    s3: s3Config(env),
    concurrency: int(env, 'PACKAGER_CONCURRENCY', 2, { min: 1, max: 16 }),
    // The first manifest of a job is the most urgent work there is: encodes on this host wait for it.
    firstManifest: yieldConfig(env, 0),
  }),
  stage: () => 'package',
  // One item per rendition outcome: a repeat of the same outcome (a late duplicate) is skipped.
  item: ({ outcome }) => (outcome.ok ? outcome.output.rendition : `${outcome.rendition}-failed`),
  async handle({ job, plan, outcome }, { tmp, signal, log }, { bus, states, s3, config }) {
    const rendition = outcome.ok ? outcome.output.rendition : outcome.rendition;
    const rec = await settleRendition(states, job, rendition, outcome.ok ? { ok: true } : { ok: false, reason: outcome.reason });
    if (!outcome.ok) return;
    if (rec.attempt !== job.attempt) {
      log.info({ attempt: job.attempt, current: rec.attempt }, 'work of an earlier attempt of the job; dropped');
      return;
    }
    if (rec.phase === 'failed') throw new MeshError('JOB_FAILED', `${rendition} was ready after the job had failed; kept to be re-driven`, { permanent: true });
    // In the plan's order (largest first), as the manifest lists them.
    const ready = plan.renditions.filter((r) => rec.ready.includes(r));
    if (!mayPublish(rec, ready)) {
      log.info({ ready, published: rec.published }, 'a manifest with more renditions is out already; nothing to package');
      return;
    }

    const release = rec.published.length === 0 && config.firstManifest ? holdUrgency(config.firstManifest, log) : undefined;
    try {
      let inputBytes = 0;
      const inputs = await mapLimit(ready, 2, async (r) => {
        const path = join(tmp, `${r}.mp4`);
        inputBytes += await downloadToFile(s3, { bucket: config.s3.workBucket, key: layout.rendition(job, r) }, path, signal);
        return { rendition: r, path };
      });
      const outDir = join(tmp, 'package');
      await mkdir(outDir);
      const folder = layout.packageFolder(job);
      // Audio always from the rendition published first: its segments are the ones already in place.
      const audioFrom = plan.audio ? { audioFrom: inputs.find((i) => i.rendition === (rec.published[0] ?? ready[0]))!.path } : {};
      await runTool('packager', packagerArgs({ renditions: inputs, ...audioFrom, outDir, segmentDir: folder, segmentSeconds: plan.segmentSeconds }), { log, signal, cwd: tmp, timeoutMs: packagerBudgetMs(inputBytes) });

      const manifestPath = join(outDir, 'manifest.mpd');
      const entries = await readdir(join(outDir, folder), { recursive: true, withFileTypes: true });
      const segments = entries.filter((d) => d.isFile()).map((d) => relative(outDir, join(d.parentPath, d.name)));
      const to = { bucket: config.s3.outputBucket, prefix: `${layout.output(job, folder)}/`, keyOf: (file: string) => layout.output(job, ...file.split('/')) };
      const { uploaded, kept } = await uploadOnce(s3, outDir, segments, to, { cacheControl: SEGMENT_CACHE, signal });
      annotate({ 'mesh.segments_uploaded': uploaded.length, 'mesh.segments_kept': kept.length });
      log.info({ renditions: ready, uploaded: uploaded.length, kept: kept.length }, 'segments in the output');

      // Shaka percent-encodes --base_urls; the manifest must carry base_url exactly as the client gave it.
      await writeFile(manifestPath, setBaseUrl(await readFile(manifestPath, 'utf8'), job.baseUrl));
      await uploadFile(s3, { bucket: config.s3.workBucket, key: layout.workManifest(job, ready) }, manifestPath, { signal });
      // The HLS master of the same segments: relative URIs, so no base to set.
      await uploadFile(s3, { bucket: config.s3.workBucket, key: layout.workMaster(job, ready) }, join(outDir, 'master.m3u8'), { signal });
      await publishWork(bus, 'upload', { kind: 'upload', job, renditions: ready }, msgId(job, 'upload', ready.join('-')));
    } finally {
      release?.();
    }
  },
});
