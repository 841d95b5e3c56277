/**
 * Ops scale a stage by running more replicas on its durable consumer: with several jobs queued, two
 * transcoder-720 processes both take work, and each job's 720p rendition is made exactly once.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { layout } from '@mesh/common';
import { headObject } from '@mesh/storage';
import { freePort, makeClip } from '@mesh/testkit';
import { BUCKETS, logLines, putInput, startSystem, submit, waitForState, type System } from './support/harness.ts';

let sys: System;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'scaling-'));
  sys = await startSystem({ apiPort: await freePort(), replicas: { 'transcoder-720': 2 } });
}, 120_000);

afterAll(async () => {
  await sys?.stop();
  await rm(dir, { recursive: true, force: true });
});

it('two transcoder-720 replicas share the queue and make each 720p once', async () => {
  const clip = await makeClip(join(dir, 'clip.mp4'), { width: 1280, height: 720, seconds: 6, audio: false });
  const jobs: string[] = [];
  for (let i = 0; i < 4; i++) {
    await putInput(sys, `scale/clip-${i}.mp4`, clip);
    jobs.push(await submit(sys, { object_key: `scale/clip-${i}.mp4`, base_url: 'https://cdn.example.test/s/', video_id: `scale-${i}`, has_audio: false }));
  }
  for (const taskId of jobs) {
    const job = await waitForState(sys, taskId, ['complete', 'failed'], 240_000);
    expect(job).toMatchObject({ task_status: 'SUCCESS', renditions: ['720p', '360p'] });
  }

  const done = (id: string) => logLines(sys, id, { msg: 'work done' }).map((l) => l['jobId'] as string);
  const first = done('transcoder-720');
  const second = done('transcoder-720#2');
  expect(first.length, 'replica 1 took work').toBeGreaterThan(0);
  expect(second.length, 'replica 2 took work').toBeGreaterThan(0);
  expect([...first, ...second].sort()).toEqual([...jobs].sort());
  for (const taskId of jobs) {
    expect(await headObject(sys.s3, { bucket: BUCKETS.work, key: layout.rendition({ jobId: taskId, attempt: 1 }, '720p') })).not.toBeNull();
  }
}, 300_000);
