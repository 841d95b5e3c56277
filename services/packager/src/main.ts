/**
 * packager: work.package (one rendition ready, or failed) -> DASH package of every ready rendition -> work.upload
 *
 * Records the rendition's outcome on the job (compare-and-set), then packages all renditions ready so far,
 * so the first one out is playable at once and each later one grows the manifest. Shaka Packager writes
 * the same segments for the same input, so re-packaging a rendition overwrites it with identical bytes.
 */
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { publishWork } from '@mesh/bus';
import { int, layout, mapLimit, MeshError, msgId, RENDITION_NAMES, s3Config, type Env } from '@mesh/common';
import { mayPublish, runStageService, settleRendition } from '@mesh/jobs';
import { packagerArgs, runTool, setBaseUrl } from '@mesh/media';
import { downloadToFile, uploadFile } from '@mesh/storage';

await runStageService({
  name: 'packager',
  kind: 'package',
  config: (env: Env) => ({ s3: s3Config(env), concurrency: int(env, 'PACKAGER_CONCURRENCY', 2, { min: 1, max: 16 }) }),
  stage: () => 'package',
  async handle({ job, plan, outcome }, { tmp, signal, log }, { bus, states, s3, config }) {
    const rendition = outcome.ok ? outcome.output.rendition : outcome.rendition;
    const rec = await settleRendition(states, job.jobId, rendition, outcome.ok ? { ok: true } : { ok: false, reason: outcome.reason });
    if (!outcome.ok) return;
    if (rec.phase === 'failed') throw new MeshError('JOB_FAILED', `${rendition} was ready after the job had failed; kept to be re-driven`, { permanent: true });
    const ready = RENDITION_NAMES.filter((r) => rec.ready.includes(r));
    if (!mayPublish(rec, ready)) {
      log.info({ ready, published: rec.published }, 'a manifest with more renditions is out already; nothing to package');
      return;
    }

    const inputs = await mapLimit(ready, 2, async (r) => {
      const path = join(tmp, `${r}.mp4`);
      await downloadToFile(s3, { bucket: config.s3.workBucket, key: layout.rendition(job.jobId, r) }, path, signal);
      return { rendition: r, path };
    });
    const outDir = join(tmp, 'package');
    await mkdir(outDir);
    const audioFrom = plan.audio ? { audioFrom: inputs[0]!.path } : {};
    await runTool('packager', packagerArgs({ renditions: inputs, ...audioFrom, outDir, segmentSeconds: plan.segmentSeconds }), { log, signal, cwd: tmp });

    // Shaka percent-encodes --base_urls; the manifest must carry base_url exactly as the client gave it.
    const manifestPath = join(outDir, layout.manifestName);
    await writeFile(manifestPath, setBaseUrl(await readFile(manifestPath, 'utf8'), job.baseUrl));

    const prefix = layout.packagePrefix(job.jobId, ready);
    const entries = await readdir(outDir, { recursive: true, withFileTypes: true });
    const files = entries.filter((d) => d.isFile()).map((d) => relative(outDir, join(d.parentPath, d.name)));
    await mapLimit(files, 8, (file) => uploadFile(s3, { bucket: config.s3.workBucket, key: prefix + file }, join(outDir, file)));
    const pkg = { bucket: config.s3.workBucket, prefix, files, manifest: layout.manifestName };
    await publishWork(bus, 'upload', { kind: 'upload', job, renditions: ready, package: pkg }, msgId(job, 'upload', ready.join('-')));
  },
});
