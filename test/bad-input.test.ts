/**
 * Hostile and broken inputs on the running mesh, all in flight at once: each gets a terminal status
 * with a readable reason (or, where it really is a video, a correct conversion), no service dies, and
 * the good jobs beside them finish.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { getText } from '@mesh/storage';
import { freePort, makeClip, type ClipOptions } from '@mesh/testkit';
import { api, BUCKETS, headers, putInput, startSystem, submit, waitForState, type Job, type System } from './support/harness.ts';
import { readMpd } from './support/mpd.ts';

const run = promisify(execFile);
let sys: System;
let dir: string;

interface Case {
  name: string;
  key: string;
  make: (path: string) => Promise<unknown>;
  hasAudio?: boolean;
  /** Expected video representation sizes and whether an audio track is published, or a failure code. */
  expect: { sizes: [number, number][]; audio: boolean } | { code: string; reason: RegExp; transcoded?: false };
}

const clip = (o: ClipOptions) => (path: string) => makeClip(path, o);

const CASES: Case[] = [
  { name: 'odd dimensions 853x479', key: 'odd.mp4', make: clip({ width: 853, height: 479, seconds: 2, audio: true }), expect: { sizes: [[642, 360]], audio: true } },
  { name: 'portrait phone video with rotation metadata', key: 'phone.mp4', make: clip({ width: 1280, height: 720, seconds: 2, audio: true, rotation: 90 }), expect: { sizes: [[720, 1280], [360, 640]], audio: true } },
  { name: 'clip shorter than one segment', key: 'short.mp4', make: clip({ width: 640, height: 360, seconds: 1.5, audio: true }), expect: { sizes: [[640, 360]], audio: true } },
  { name: 'variable frame rate', key: 'vfr.mp4', make: clip({ width: 640, height: 360, seconds: 3, audio: true, vfr: true }), expect: { sizes: [[640, 360]], audio: true } },
  { name: '10-bit HEVC', key: 'hevc10.mp4', make: clip({ width: 640, height: 360, seconds: 2, codec: 'hevc', pixFmt: 'yuv420p10le' }), expect: { sizes: [[640, 360]], audio: false } },
  { name: 'interlaced PAL with 16:15 pixels', key: 'interlaced.mp4', make: clip({ width: 720, height: 576, seconds: 2, interlaced: true, sar: '16/15', audio: true }), expect: { sizes: [[480, 360]], audio: true } },
  { name: 'no audio stream but has_audio true', key: 'mute.mp4', make: clip({ width: 640, height: 360, seconds: 2 }), hasAudio: true, expect: { sizes: [[640, 360]], audio: false } },
  { name: 'audio present but has_audio false', key: 'drop-audio.mp4', make: clip({ width: 640, height: 360, seconds: 2, audio: true }), hasAudio: false, expect: { sizes: [[640, 360]], audio: false } },
  { name: 'a key with spaces and unicode', key: 'dir with space/vidéo ü 日本.mp4', make: clip({ width: 640, height: 360, seconds: 2 }), expect: { sizes: [[640, 360]], audio: false } },
  { name: 'a key with quotes and shell metacharacters', key: `it's "$(rm -rf ~)"; a|b&c \`x\` *.mp4`, make: clip({ width: 640, height: 360, seconds: 2 }), expect: { sizes: [[640, 360]], audio: false } },
  { name: 'a key with a leading dash and a plus', key: '-i input+1.mp4', make: clip({ width: 640, height: 360, seconds: 2 }), expect: { sizes: [[640, 360]], audio: false } },
  { name: 'bytes that are not media', key: 'text.mp4', make: (p) => writeFile(p, 'just some text, no frames here\n'.repeat(200)), expect: { code: 'NOT_A_VIDEO', reason: /not a video/, transcoded: false } },
  { name: 'a zero-byte object', key: 'empty.mp4', make: (p) => writeFile(p, ''), expect: { code: 'SOURCE_EMPTY', reason: /empty/, transcoded: false } },
  {
    name: 'a truncated MP4',
    key: 'truncated.mp4',
    make: async (p) => {
      await makeClip(`${p}.full.mp4`, { width: 640, height: 360, seconds: 3, audio: true });
      const full = await readFile(`${p}.full.mp4`);
      await writeFile(p, full.subarray(0, Math.floor(full.length / 2)));
    },
    expect: { code: 'NOT_A_VIDEO', reason: /moov atom not found/, transcoded: false },
  },
  {
    name: 'an audio-only file',
    key: 'song.mp4',
    make: (p) => run('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', 'sine', '-t', '2', '-c:a', 'aac', p]),
    expect: { code: 'NOT_A_VIDEO', reason: /no video stream, only audio/, transcoded: false },
  },
  {
    name: 'an HLS playlist naming a local file',
    key: 'playlist.mp4',
    make: (p) => writeFile(p, '#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n/etc/passwd\n#EXT-X-ENDLIST\n'),
    expect: { code: 'NOT_A_VIDEO', reason: /not an allowed video format/, transcoded: false },
  },
  { name: 'a video over the duration limit', key: 'long.mp4', make: clip({ width: 160, height: 120, seconds: 25 }), expect: { code: 'SOURCE_TOO_LONG', reason: /lasts 25 s, over the 20 s limit/, transcoded: false } },
  { name: 'a picture over the pixel limit', key: 'huge.mp4', make: clip({ width: 2560, height: 1440, seconds: 1 }), expect: { code: 'SOURCE_TOO_LARGE', reason: /2560x1440, over the limit/, transcoded: false } },
  { name: 'an object over the size limit', key: 'big.mp4', make: (p) => writeFile(p, Buffer.alloc(7_000_000, 7)), expect: { code: 'SOURCE_TOO_LARGE', reason: /over the 0.006 GiB limit/, transcoded: false } },
];

const jobs = new Map<string, Job>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bad-input-'));
  sys = await startSystem({
    apiPort: await freePort(),
    env: { MAX_SOURCE_DURATION_SEC: '20', MAX_SOURCE_PIXELS: String(1920 * 1080), MAX_SOURCE_BYTES: '6000000' },
  });
  const tasks = await Promise.all(
    CASES.map(async (c, i) => {
      const path = join(dir, `case-${i}.mp4`);
      await c.make(path);
      await putInput(sys, c.key, path);
      return submit(sys, { object_key: c.key, base_url: 'https://cdn.example.test/x/', video_id: `case-${i}`, has_audio: c.hasAudio ?? true });
    }),
  );
  await Promise.all(CASES.map(async (c, i) => jobs.set(c.name, await waitForState(sys, tasks[i]!, ['complete', 'failed'], 240_000))));
}, 300_000);

afterAll(async () => {
  await sys?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe.each(CASES)('$name', (c) => {
  it(`ends ${'code' in c.expect ? `FAILURE ${c.expect.code}` : 'converted'}`, async () => {
    const job = jobs.get(c.name)!;
    if ('code' in c.expect) {
      expect(job).toMatchObject({ task_status: 'FAILURE', state: 'failed', error: { code: c.expect.code } });
      expect(job['task_result']).toMatch(c.expect.reason);
      // Rejected before any transcoding was spent on it.
      expect(Object.keys(job['stages']).filter((s) => s.startsWith('transcode'))).toEqual([]);
      return;
    }
    expect(job).toMatchObject({ task_status: 'SUCCESS', state: 'complete' });
    const mpd = readMpd((await getText(sys.s3, { bucket: BUCKETS.output, key: `${c.key}/manifest.mpd` }))!);
    const video = mpd.representations.filter((r) => r.contentType === 'video');
    expect(video.map((r) => [r.width, r.height])).toEqual(c.expect.sizes);
    expect(video.every((r) => r.codecs.startsWith('avc1.'))).toBe(true);
    expect(mpd.representations.some((r) => r.contentType === 'audio')).toBe(c.expect.audio);
  });
});

describe('after all of that', () => {
  it('every service is still running', () => {
    for (const p of sys.mesh.processes) expect(p.child.exitCode, p.id).toBeNull();
  });

  it("no failure on the client's input is an operator's dead letter (an exhausted retry is: faults.test.ts)", async () => {
    const failed = CASES.filter((c) => 'code' in c.expect).map((c) => jobs.get(c.name)!['task_id']);
    expect(failed.length).toBeGreaterThan(5);
    const res = await api(sys, '/admin/dead-letters', { headers });
    expect(res.status).toBe(200);
    const letters = ((await res.json()) as { dead_letters: { jobId: string; reason: string }[] }).dead_letters;
    expect(letters.filter((l) => failed.includes(l.jobId))).toEqual([]);
  });

  it('the API refuses a key with .. segments before any work starts', async () => {
    const res = await api(sys, `/video/encoding`, { method: 'POST', headers, body: JSON.stringify({ object_key: 'a/../../b.mp4', base_url: 'https://x.test/', video_id: 'v' }) });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ field: 'object_key' });
  });
});
