import { describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KeyError, layout, objectKey, objectKeyProblem, sweepStaleTempDirs, VIDEO_ID_PATTERN } from '../src/index.ts';

describe('objectKey', () => {
  it.each([
    [['a.mp4'], 'a.mp4'],
    [['videos', 'cat 1 ü.mp4', 'manifest.mpd'], 'videos/cat 1 ü.mp4/manifest.mpd'],
    [['..a', 'b..', '.hidden'], '..a/b../.hidden'],
  ])('joins %j', (segments, key) => {
    expect(objectKey(...segments)).toBe(key);
  });

  it.each([
    [['..', 'video-output', 'k', 'manifest.mpd'], /a '\.\.' segment/],
    [['a', '.', 'b'], /a '\.' segment/],
    [['a', '', 'b'], /an empty segment/],
    [['a/../b'], /'\/' inside a segment/],
    [['a\nb'], /control character/],
    [['x'.repeat(1025)], /longer than 1024 bytes/],
    [[], /at least one segment/],
  ])('refuses %j: it would leave its bucket or S3 refuses it', (segments, message) => {
    expect(() => objectKey(...segments)).toThrow(KeyError);
    expect(() => objectKey(...segments)).toThrow(message);
  });

  it('builds every layout key inside its bucket, whatever the client sent (validated or not)', () => {
    const job = { jobId: '6f1c2a8e-0000-4000-8000-000000000000', attempt: 2, objectKey: 'videos/cat.mp4', videoId: '42' };
    expect(layout.manifest(job)).toBe('videos/cat.mp4/manifest.mpd');
    expect(layout.output(job, layout.packageFolder(job), 'video', '720p', '1.m4s')).toBe(`videos/cat.mp4/${job.jobId}.2/video/720p/1.m4s`);
    expect(layout.rendition(job, '720p')).toBe(`jobs/${job.jobId}/2/renditions/720p.mp4`);
    expect(layout.thumbnail(job)).toBe('42');
    expect(() => layout.thumbnail({ videoId: '../video-output/videos/cat.mp4/manifest.mpd' })).toThrow(KeyError);
    expect(() => layout.manifest({ objectKey: 'a/../../b' })).toThrow(KeyError);
  });
});

describe('client keys', () => {
  it.each([
    ['videos/cat.mp4', null],
    ['/videos/cat.mp4', "must not start with '/'"],
    ['videos//cat.mp4', "must not contain an empty segment ('//' or a trailing '/')"],
    ['videos/', "must not contain an empty segment ('//' or a trailing '/')"],
    ['videos/../etc/passwd', "must not contain a '..' segment"],
  ])('object_key %j: %s', (key, problem) => {
    expect(objectKeyProblem(key)).toBe(problem);
  });

  it.each([
    ['42', true],
    ['video-with_audio.v2', true],
    ['_x', true],
    ['.hidden', false],
    ['-dash', false],
    ['a/b', false],
    ['../video-output/k/manifest.mpd', false],
    ['x'.repeat(128), true],
    ['x'.repeat(129), false],
    ['ü', false],
  ])('video_id %j allowed: %s', (id, ok) => {
    expect(VIDEO_ID_PATTERN.test(id)).toBe(ok);
  });
});

describe('sweepStaleTempDirs', () => {
  it("removes a dead process's scratch dirs and keeps a live one's", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'sweep-'));
    try {
      // A pid that surely does not run: above the kernel's default pid_max.
      await mkdir(join(dir, 'packager-4194999-abcdef'));
      await mkdir(join(dir, `packager-${process.ppid}-ghijkl`));
      await mkdir(join(dir, 'uploader-4194999-mnopqr'));
      expect(sweepStaleTempDirs('packager', { dir })).toEqual([join(dir, 'packager-4194999-abcdef')]);
      expect((await readdir(dir)).sort()).toEqual([`packager-${process.ppid}-ghijkl`, 'uploader-4194999-mnopqr']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
