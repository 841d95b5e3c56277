import { describe, expect, it } from 'vitest';
import type { JobEvent } from '@mesh/common';
import { applyEvent, NOTIFICATIONS_KEPT, stagesAhead, toApiResponse, type JobView, type StageView } from '../src/projection.ts';

const jobId = '00000000-0000-4000-8000-000000000002';
const at = '2026-11-24T10:00:00.000Z';
const spec = { jobId, objectKey: 'in/cat.mp4', baseUrl: 'https://cdn.test/cat/', videoId: '42', hasAudio: true, attempt: 1 };
const manifest = { bucket: 'out', key: 'in/cat.mp4/manifest.mpd' };

function fold(events: JobEvent[]): JobView | null {
  return events.reduce<JobView | null>((view, e, i) => applyEvent(view, e, i + 1), null);
}

describe('projection', () => {
  const created: JobEvent = { type: 'job.created', jobId, at, spec };

  it('answers PENDING right after creation, with the original fields', () => {
    const api = toApiResponse(fold([created])!);
    expect(api).toMatchObject({ task_id: jobId, task_status: 'PENDING', task_result: null, video_id: '42' });
  });

  it('counts a stage\'s tries, not its pieces of work: three manifests packaged are one try; a redelivery or a run after a failure is another', () => {
    const started = (stage: 'package' | 'upload' | 'download', delivery?: number) => ({ type: 'stage.started' as const, jobId, at, stage, ...(delivery ? { delivery } : {}) });
    const done = (stage: 'package' | 'upload' | 'download') => ({ type: 'stage.done' as const, jobId, at, stage });
    const v = fold([created, started('package', 1), done('package'), started('package', 1), done('package'), started('package', 1), done('package')])!;
    expect(v.stages.package).toMatchObject({ state: 'done', attempts: 1 });
    // The same piece of work delivered again (its process died before the ack): a second try.
    const again = fold([created, started('upload', 1), started('upload', 2), done('upload')])!;
    expect(again.stages.upload).toMatchObject({ state: 'done', attempts: 2 });
    // Started again after it failed (a retry of the job): a second try, though a first delivery.
    const failedThenRetried = fold([
      created,
      started('download', 1),
      { type: 'stage.failed', jobId, at, stage: 'download', code: 'STORAGE_FAILED', reason: 'S3 away', fatal: true },
      { type: 'job.reopened', jobId, at, reason: 'retried by the client', attempt: 2 },
      started('download', 1),
    ])!;
    expect(failedThenRetried.stages.download).toMatchObject({ state: 'running', attempts: 2 });
    // Events from before deliveries were recorded count each start, as they always did.
    expect(fold([created, started('package'), done('package'), started('package')])!.stages.package!.attempts).toBe(2);
  });

  it('keeps which replica took each stage, and the trace of the request that started the attempt', () => {
    const trace1 = '0af7651916cd43dd8448eb211c80319c';
    const trace2 = '4bf92f3577b34da6a3ce929d0e0e4736';
    const first = fold([
      { ...created, traceId: trace1 },
      { type: 'stage.started', jobId, at, stage: 'download', replica: 'host-a/101' },
      { type: 'stage.failed', jobId, at, stage: 'download', code: 'STORAGE_FAILED', reason: 'S3 away', fatal: true },
      { type: 'job.failed', jobId, at, stage: 'download', code: 'STORAGE_FAILED', reason: 'S3 away' },
    ])!;
    expect(toApiResponse(first)).toMatchObject({ trace_id: trace1, stages: { download: { replica: 'host-a/101', attempts: 1 } } });
    // The retry runs in its request's trace, on another replica; a delivery from a replica of before the
    // field leaves none rather than the previous one's name.
    const retried = [
      { type: 'job.reopened', jobId, at, reason: 'retried by the client', attempt: 2, traceId: trace2 },
      { type: 'stage.started', jobId, at, stage: 'download', replica: 'host-b/7' },
    ] satisfies JobEvent[];
    const second = retried.reduce<JobView>((v, e, i) => applyEvent(v, e, 10 + i)!, first);
    expect(toApiResponse(second)).toMatchObject({ trace_id: trace2, stages: { download: { replica: 'host-b/7', attempts: 2, state: 'running' } } });
    const unnamed = applyEvent(second, { type: 'stage.started', jobId, at, stage: 'download' }, 20)!;
    expect(unnamed.stages.download!.replica).toBeUndefined();
    expect(unnamed.stages.download!.attempts).toBe(3);
    // Jobs from before: no trace.
    expect(toApiResponse(fold([created])!).trace_id).toBeNull();
  });

  it('walks STARTED -> SUCCESS and lists stages, renditions and the manifest', () => {
    const view = fold([
      created,
      { type: 'stage.started', jobId, at, stage: 'download' },
      { type: 'stage.done', jobId, at, stage: 'download' },
      { type: 'stage.started', jobId, at, stage: 'transcode-720p' },
      { type: 'stage.progress', jobId, at, stage: 'transcode-720p', percent: 40 },
      { type: 'manifest.published', jobId, at, renditions: ['360p'], object: manifest, url: 'u1' },
      { type: 'job.playable', jobId, at, manifest, url: 'u1' },
    ])!;
    const api = toApiResponse(view);
    expect(api.task_status).toBe('SUCCESS');
    expect(api.task_result).toBe('42');
    expect(api.state).toBe('playable');
    expect(api.renditions).toEqual(['360p']);
    expect(api.stages['transcode-720p']).toMatchObject({ state: 'running', percent: 40, attempts: 1 });
    expect(api.stages.download).toMatchObject({ state: 'done' });
  });

  it('reports FAILURE with the reason as task_result', () => {
    const view = fold([created, { type: 'job.failed', jobId, at, stage: 'download', code: 'NOT_A_VIDEO', reason: 'not a video file' }])!;
    expect(toApiResponse(view)).toMatchObject({ task_status: 'FAILURE', task_result: 'not a video file', error: { stage: 'download' } });
  });

  it('ignores an event it has already applied, and events of unknown jobs', () => {
    const view = fold([created, { type: 'stage.started', jobId, at, stage: 'download' }])!;
    expect(applyEvent(view, { type: 'job.failed', jobId, at, stage: 'download', code: 'X', reason: 'r' }, 2)).toBe(view);
    expect(applyEvent(null, { type: 'stage.started', jobId, at, stage: 'download' }, 1)).toBeNull();
  });

  it('shows the seek previews once the thumbnailer has made them: the WebVTT track and how it is cut', () => {
    const plan = { durationSec: 61, intervalSec: 2, tileWidth: 160, tileHeight: 90, columns: 5, rows: 5, tiles: 31, sheets: 2 };
    const vtt = { bucket: 'out', key: `in/cat.mp4/${jobId}.1/thumbs/storyboard.vtt`, url: `https://s3.test/out/in/cat.mp4/${jobId}.1/thumbs/storyboard.vtt` };
    expect(toApiResponse(fold([created, { type: 'thumbnail.ready', jobId, at, object: { bucket: 'thumbs', key: '42' } }])!).storyboard).toBeNull();
    const view = fold([created, { type: 'thumbnail.ready', jobId, at, object: { bucket: 'thumbs', key: '42' }, storyboard: { vtt, plan } }])!;
    expect(toApiResponse(view).storyboard).toEqual({ ...vtt, intervalSec: 2, tileWidth: 160, tileHeight: 90, columns: 5, rows: 5, tiles: 31, sheets: 2 });
  });

  it("lists an event webhook's tries by event and rung, beside the result notification's", () => {
    const view = fold([
      created,
      { type: 'notification.sent', jobId, at, status: 'SUCCESS', httpStatus: 200, attempt: 1, outcome: 'delivered' },
      { type: 'notification.sent', jobId, at, status: 'SUCCESS', event: 'rendition.ready', rendition: '360p', httpStatus: 503, attempt: 1, outcome: 'retrying', error: 'the backend answered 503' },
    ])!;
    expect(toApiResponse(view).notifications).toEqual([
      { status: 'SUCCESS', httpStatus: 200, attempt: 1, outcome: 'delivered', at },
      { status: 'SUCCESS', event: 'rendition.ready', rendition: '360p', httpStatus: 503, attempt: 1, outcome: 'retrying', error: 'the backend answered 503', at },
    ]);
  });

  it('never shrinks the published renditions', () => {
    const view = fold([
      created,
      { type: 'manifest.published', jobId, at, renditions: ['720p', '360p'], object: manifest, url: 'u2' },
      { type: 'manifest.published', jobId, at, renditions: ['360p'], object: manifest, url: 'u1' },
    ])!;
    expect(view.renditions).toEqual(['720p', '360p']);
  });

  it('lists every try at the backend, oldest first, each status apart', () => {
    const sent = (status: 'SUCCESS' | 'FAILED', httpStatus: number, attempt: number, outcome: 'delivered' | 'retrying' | 'gave_up', error?: string): JobEvent => ({
      type: 'notification.sent', jobId, at, status, httpStatus, attempt, outcome, ...(error ? { error } : {}),
    });
    const view = fold([
      created,
      sent('FAILED', 503, 1, 'retrying', 'the backend answered 503'),
      sent('FAILED', 200, 2, 'delivered'),
      sent('SUCCESS', 0, 1, 'retrying', 'the backend did not answer: connection refused'),
      sent('SUCCESS', 200, 2, 'delivered'),
    ])!;
    expect(toApiResponse(view).notifications).toEqual([
      { status: 'FAILED', httpStatus: 503, attempt: 1, outcome: 'retrying', error: 'the backend answered 503', at },
      { status: 'FAILED', httpStatus: 200, attempt: 2, outcome: 'delivered', at },
      { status: 'SUCCESS', httpStatus: 0, attempt: 1, outcome: 'retrying', error: 'the backend did not answer: connection refused', at },
      { status: 'SUCCESS', httpStatus: 200, attempt: 2, outcome: 'delivered', at },
    ]);
  });

  it(`keeps only the last ${NOTIFICATIONS_KEPT} tries at the backend`, () => {
    const tries = Array.from({ length: NOTIFICATIONS_KEPT + 5 }, (_, i): JobEvent => ({ type: 'notification.sent', jobId, at, status: 'SUCCESS', httpStatus: 503, attempt: i + 1, outcome: 'retrying' }));
    const view = fold([created, ...tries])!;
    expect(view.notifications.map((n) => n.attempt)).toEqual(Array.from({ length: NOTIFICATIONS_KEPT }, (_, i) => i + 6));
  });

  it('keeps a playable job SUCCESS when a late job.failed arrives', () => {
    const view = fold([created, { type: 'job.playable', jobId, at, manifest, url: 'u' }, { type: 'job.failed', jobId, at, stage: 'upload', code: 'X', reason: 'late' }])!;
    expect(toApiResponse(view).task_status).toBe('SUCCESS');
  });
});

describe('stagesAhead: what a running job still needs', () => {
  const base = fold([{ type: 'job.created', jobId, at, spec }])!;
  const done: StageView = { state: 'done', attempts: 1 };
  const running: StageView = { state: 'running', attempts: 1 };
  const failed: StageView = { state: 'failed', attempts: 1 };
  const both = ['720p', '360p'] as const;
  it.each<[string, Partial<JobView>, string[]]>([
    ['queued: the download', {}, ['download']],
    ['downloading', { state: 'processing', stages: { download: running } }, ['download']],
    ['probed: both transcodes, the thumbnail, then packaging and upload', { state: 'processing', planned: [...both], stages: { download: done } }, ['transcode-720p', 'transcode-360p', 'thumbnail', 'package', 'upload']],
    [
      'playable at 360p with the 720p encode running (or held by a dead replica)',
      { state: 'playable', planned: [...both], renditions: ['360p'], stages: { download: done, 'transcode-360p': done, 'transcode-720p': running, thumbnail: done, package: done, upload: done } },
      ['transcode-720p', 'package', 'upload'],
    ],
    ['every rendition encoded, the last one not yet in the manifest', { state: 'playable', planned: [...both], renditions: ['360p'], stages: { download: done, 'transcode-360p': done, 'transcode-720p': done, thumbnail: done } }, ['package', 'upload']],
    ['the 720p failed (the job goes on without it): nothing more', { state: 'playable', planned: [...both], renditions: ['360p'], stages: { download: done, 'transcode-360p': done, 'transcode-720p': failed, thumbnail: failed } }, []],
    ['complete', { state: 'complete', planned: [...both], renditions: [...both], stages: { download: done } }, []],
    ['failed', { state: 'failed', stages: { download: failed } }, []],
    ['cancelled while downloading', { state: 'cancelled', stages: { download: running } }, []],
  ])('%s', (_name, patch, expected) => {
    expect(stagesAhead({ ...base, ...patch })).toEqual(expected);
  });

  it('the API answer carries what the job waits for, and an empty list when nothing', () => {
    const waiting = [{ stage: 'transcode-720p' as const, service: 'transcoder-720', reason: 'no transcoder-720 replica is attached' }];
    expect(toApiResponse(base, { waitingFor: waiting }).waiting_for).toEqual(waiting);
    expect(toApiResponse(base).waiting_for).toEqual([]);
  });
});
