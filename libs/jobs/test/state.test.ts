import { describe, expect, it } from 'vitest';
import { mayPublish, newRecord, pendingAnnouncements, reopened, withAnnounced, withFailure, withPlan, withPublished, withRendition, type JobRecord } from '../src/state.ts';

const JOB = '00000000-0000-4000-8000-000000000001';
const manifest = { object: { bucket: 'out', key: 'k/manifest.mpd' }, url: 'http://x/k/manifest.mpd' };
const planned = () => withPlan(newRecord(JOB), ['720p', '360p']);

describe('job coordination record', () => {
  it('becomes playable with the first manifest and complete when every rendition is published', () => {
    let rec = withRendition(planned(), '360p', { ok: true });
    expect(rec.phase).toBe('active');
    rec = withPublished(rec, ['360p'], manifest);
    expect(rec.phase).toBe('playable');
    expect(pendingAnnouncements(rec).map((e) => e.type)).toEqual(['job.playable']);
    rec = withAnnounced(rec, ['job.playable']);
    rec = withRendition(rec, '720p', { ok: true });
    expect(rec.phase).toBe('playable');
    rec = withPublished(rec, ['720p', '360p'], manifest);
    expect(rec.phase).toBe('complete');
    expect(pendingAnnouncements(rec).map((e) => e.type)).toEqual(['job.completed']);
  });

  it('announces where the manifests are and what they hold, the previews when the manifest names them', () => {
    const hls = { bucket: 'out', key: 'k/master.m3u8', url: 'http://x/k/master.m3u8' };
    const storyboard = { bucket: 'out', key: 'k/j.1/thumbs/storyboard.vtt', url: 'http://x/k/j.1/thumbs/storyboard.vtt' };
    let rec = withPublished(withRendition(planned(), '720p', { ok: true }), ['720p'], { ...manifest, hls });
    expect(pendingAnnouncements(rec)).toEqual([{ type: 'job.playable', jobId: JOB, attempt: 1, manifest: manifest.object, url: manifest.url, renditions: ['720p'], hls }]);
    rec = withAnnounced(rec, ['job.playable']);
    rec = withPublished(withRendition(rec, '360p', { ok: true }), ['720p', '360p'], { ...manifest, hls, storyboard });
    expect(pendingAnnouncements(rec)).toEqual([{ type: 'job.completed', jobId: JOB, attempt: 1, renditions: ['720p', '360p'], manifest: manifest.object, url: manifest.url, hls, storyboard }]);
  });

  it('names the renditions in the order of the plan (largest first), whatever order they came out in', () => {
    let rec = withPublished(withRendition(planned(), '360p', { ok: true }), ['360p'], manifest);
    rec = withAnnounced(rec, ['job.playable']);
    rec = withPublished(withRendition(rec, '720p', { ok: true }), ['720p', '360p'], manifest);
    expect(rec.published).toEqual(['360p', '720p']);
    expect(pendingAnnouncements(rec)).toMatchObject([{ type: 'job.completed', renditions: ['720p', '360p'] }]);
  });

  it('announces playable and completed together when both arrive in one step', () => {
    let rec = withRendition(withRendition(planned(), '360p', { ok: true }), '720p', { ok: true });
    rec = withPublished(rec, ['720p', '360p'], manifest);
    expect(pendingAnnouncements(rec).map((e) => e.type)).toEqual(['job.playable', 'job.completed']);
  });

  it('fails only when every rendition failed, naming each reason', () => {
    let rec = withRendition(planned(), '720p', { ok: false, reason: 'encoder crashed' });
    expect(rec.phase).toBe('active');
    rec = withRendition(rec, '360p', { ok: false, reason: 'out of disk' });
    expect(rec.phase).toBe('failed');
    expect(rec.failure?.reason).toContain('720p: encoder crashed');
    expect(rec.failure?.reason).toContain('360p: out of disk');
    expect(pendingAnnouncements(rec)).toMatchObject([{ type: 'job.failed', code: 'NO_RENDITION' }]);
  });

  it('completes with the renditions that made it when one failed after the job was playable', () => {
    let rec = withPublished(withRendition(planned(), '720p', { ok: true }), ['720p'], manifest);
    rec = withRendition(rec, '360p', { ok: false, reason: 'boom' });
    expect(rec.phase).toBe('complete');
    expect(rec.published).toEqual(['720p']);
  });

  it('never fails a playable job', () => {
    const rec = withPublished(withRendition(planned(), '720p', { ok: true }), ['720p'], manifest);
    expect(withFailure(rec, { stage: 'upload', code: 'X', reason: 'late' }).phase).toBe('playable');
  });

  it('a fatal failure while active fails the job once', () => {
    const rec = withFailure(newRecord(JOB), { stage: 'download', code: 'NOT_A_VIDEO', reason: 'not a video' });
    expect(rec.phase).toBe('failed');
    expect(withFailure(rec, { stage: 'package', code: 'Y', reason: 'other' }).failure?.stage).toBe('download');
    const announced = withAnnounced(rec, ['job.failed']);
    expect(pendingAnnouncements(announced)).toEqual([]);
  });

  it('announces the outcome with the job attempt it belongs to, so a retried job is told apart', () => {
    const failed = withAnnounced(withFailure(newRecord(JOB), { stage: 'download', code: 'SOURCE_NOT_FOUND', reason: 'missing' }), ['job.failed']);
    const again = withFailure(reopened(failed, new Date().toISOString()), { stage: 'download', code: 'SOURCE_NOT_FOUND', reason: 'still missing' });
    expect(pendingAnnouncements(again)).toMatchObject([{ type: 'job.failed', attempt: 2 }]);
    const playable = withPublished(withRendition(withPlan(reopened(failed, new Date().toISOString()), ['360p']), '360p', { ok: true }), ['360p'], manifest);
    expect(pendingAnnouncements(playable)).toMatchObject([{ type: 'job.playable', attempt: 2 }, { type: 'job.completed' }]);
  });

  it.each<[string[], string[], boolean]>([
    [[], ['360p'], true],
    [['360p'], ['360p'], true],
    [['360p'], ['720p', '360p'], true],
    [['720p', '360p'], ['720p'], false],
    [['720p'], ['360p'], false],
  ])('published %j, publishing %j is allowed: %s', (published, next, allowed) => {
    const rec: JobRecord = { ...planned(), published: published as JobRecord['published'] };
    expect(mayPublish(rec, next as JobRecord['published'])).toBe(allowed);
  });

  it('a stale manifest never shrinks what is published', () => {
    let rec = withRendition(withRendition(planned(), '360p', { ok: true }), '720p', { ok: true });
    rec = withPublished(rec, ['720p', '360p'], manifest);
    rec = withPublished(rec, ['360p'], { ...manifest, url: 'stale' });
    expect(rec.published).toEqual(['720p', '360p']);
    expect(rec.manifest?.url).toBe(manifest.url);
  });
});
