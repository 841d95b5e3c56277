/**
 * thumbnailer: work.thumbnail -> JPEG poster in S3_THUMBNAIL_OUTPUT_BUCKET (key = video_id), and the seek
 * previews (storyboard) in the job attempt's folder of S3_OUTPUT_BUCKET: sprite sheets, their WebVTT track
 * and a descriptor the uploader reads to name them in the DASH manifest. One FFmpeg run makes both.
 *
 * A missing thumbnail does not fail the video: when it gives up, the failure is recorded on its stage only.
 * The previews are written once, like the packager's segments, descriptor last; then the uploader is asked
 * to publish the manifest in place again with them (a manifest published from now on has them anyway).
 */
import { readdir, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { publishEvent, publishWork } from '@mesh/bus';
import { int, layout, MeshError, msgId, optional, s3Config, sheetName, STORYBOARD_JSON, STORYBOARD_VTT, type Env, type StoryboardDescriptor, type StoryboardRef } from '@mesh/common';
import { runStageService } from '@mesh/jobs';
import { displaySize, runTool, storyboardPlan, storyboardVtt, thumbnailArgs, thumbnailTime, timeFactorConfig, toolBudgetMs, yieldConfig } from '@mesh/media';
import { publicEndpoint, publicUrl, s3url, uploadFile, uploadOnce, withSourceUrl } from '@mesh/storage';

/** The previews of an attempt never change once written, like its segments. */
const PREVIEW_CACHE = 'public, max-age=31536000, immutable';

await runStageService({
  name: 'thumbnailer',
  kind: 'thumbnail',
  config: (env: Env) => ({
    s3: s3Config(env),
    /** Where clients fetch outputs from, when not the S3 endpoint itself (a CDN, say): the storyboard's URL. */
    publicBaseUrl: optional(env, 'S3_PUBLIC_URL'),
    concurrency: int(env, 'THUMBNAILER_CONCURRENCY', 2, { min: 1, max: 16 }),
    // The preview is not on the way to a playable manifest: on a shared host it yields to the 720p encode
    // (paused while it runs, see libs/media/src/yield.ts) and runs beside the 360p one at a lower priority.
    niceness: int(env, 'FFMPEG_NICENESS', 10, { min: 0, max: 19 }),
    yieldTo: yieldConfig(env, 1),
    timeFactor: timeFactorConfig(env),
  }),
  stage: () => 'thumbnail',
  async handle({ job, source, probe }, { tmp, signal, log }, { bus, s3, config }) {
    const poster = join(tmp, 'thumbnail.jpg');
    const plan = storyboardPlan(probe.durationSec, displaySize(probe));
    const pinned = { bucket: config.s3.inputBucket, key: layout.source(job), ...source };
    // FFmpeg reads the source in place through a presigned URL, all of it (the sheets cover the video).
    const timeoutMs = toolBudgetMs(probe.durationSec, config.timeFactor);
    await withSourceUrl(s3, pinned, (input, { ifMatch }) =>
      runTool('ffmpeg', thumbnailArgs({ input, ifMatch, probe, plan, poster, sheets: join(tmp, sheetName('%d')) }), { log, signal, timeoutMs, niceness: config.niceness, redact: { [input]: s3url(pinned) }, ...(config.yieldTo ? { yieldTo: config.yieldTo } : {}) }),
    );
    const made = new Set(await readdir(tmp));
    // FFmpeg ends without writing a frame it never decoded: a file that holds less than it declares.
    if (!made.has(basename(poster))) throw new MeshError('TOOL_FAILED', `ffmpeg found no frame at ${thumbnailTime(probe.durationSec).toFixed(1)} s for the thumbnail: the video holds less than the ${Math.round(probe.durationSec)} s it declares`, { permanent: true });
    // The thumbnail's key is video_id, as the original service did: validated to be one plain segment.
    const object = { bucket: config.s3.thumbnailBucket, key: layout.thumbnail(job) };
    await uploadFile(s3, object, poster, { contentType: 'image/jpeg', signal });

    const sheets = Array.from({ length: plan.sheets }, (_, i) => sheetName(i + 1));
    const missing = sheets.filter((name) => !made.has(name));
    let storyboard: StoryboardRef | undefined;
    if (missing.length > 0) {
      // FFmpeg decoded no frame for them: the poster is still worth having; nothing names absent sheets.
      log.warn({ missing, sheets: plan.sheets }, 'no storyboard: FFmpeg wrote fewer sprite sheets than planned');
    } else {
      // Cues name the sheets relative to the track, which sits beside them.
      await writeFile(join(tmp, STORYBOARD_VTT), storyboardVtt(plan, sheetName));
      const maxSheetBytes = Math.max(...(await Promise.all(sheets.map(async (name) => (await stat(join(tmp, name))).size))));
      await writeFile(join(tmp, STORYBOARD_JSON), JSON.stringify({ plan, maxSheetBytes } satisfies StoryboardDescriptor));
      const to = { bucket: config.s3.outputBucket, prefix: `${layout.storyboardFolder(job)}/`, keyOf: (name: string) => layout.storyboard(job, name) };
      // Write-once, as the attempt's segments are: a repeat keeps what is there. The descriptor last, so
      // the uploader never names sheets or a track that are not in place.
      await uploadOnce(s3, tmp, [...sheets, STORYBOARD_VTT], to, { cacheControl: PREVIEW_CACHE, signal });
      await uploadOnce(s3, tmp, [STORYBOARD_JSON], to, { cacheControl: PREVIEW_CACHE, signal });
      const vtt = { bucket: config.s3.outputBucket, key: layout.storyboard(job, STORYBOARD_VTT) };
      storyboard = { vtt: { ...vtt, url: publicUrl(publicEndpoint(config.publicBaseUrl, config.s3), vtt) }, plan };
      // The manifest already out (if any) does not name them yet: the uploader publishes it again with them.
      await publishWork(bus, 'upload', { kind: 'upload', job, refresh: true }, msgId(job, 'upload', 'refresh-thumbs'));
      log.info({ sheets: plan.sheets, tiles: plan.tiles, intervalSec: plan.intervalSec }, 'storyboard written');
    }
    await publishEvent(bus, { type: 'thumbnail.ready', jobId: job.jobId, object, ...(storyboard ? { storyboard } : {}) }, msgId(job, 'thumbnail.ready'));
  },
  async onGiveUp({ job }, _err, { stage, code, reason }, { bus }) {
    await publishEvent(bus, { type: 'stage.failed', jobId: job.jobId, stage, code, reason, fatal: false });
  },
});
