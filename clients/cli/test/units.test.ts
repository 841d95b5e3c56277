/**
 * The client's pure parts: where the API is, the texts a person reads, the rules checked before an
 * upload (held to the API's own), and what Ctrl-C does in each phase.
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { DeadLetter as ApiDeadLetter, QueueDepth as ApiQueueDepth } from '@mesh/bus';
import { VIDEO_ID_PATTERN } from '@mesh/common';
import type { TaskStatus } from '../../../services/ingest-api/src/schemas.ts';
import { resolveEndpoint, type Task } from '../src/api.ts';
import { deadLetterLines, queueLines, VIDEO_ID, type DeadLetter, type QueueDepth } from '../src/commands.ts';
import { chooseMode, formatBytes, orderedStages, stageText, statusLines, taskLines } from '../src/display.ts';
import { ApiProblemError, EXIT, networkReason } from '../src/errors.ts';
import { canAsk, trapInterrupts } from '../src/interrupts.ts';
import { reconnectDelay } from '../src/live.ts';
import { contentTypeOf } from '../src/upload.ts';
import { task } from './tasks.ts';

// What the API answers is what the client reads: a field the client relies on that the API's schema
// drops or retypes fails the type check here (the client is a package of its own: it cannot import them).
const fromApi = (t: TaskStatus, q: ApiQueueDepth, d: ApiDeadLetter): [Task, QueueDepth, DeadLetter] => [t, q, d];
void fromApi;

describe('resolveEndpoint', () => {
  it.each([
    ['flags first', { url: 'https://api.example.test/', apiKey: 'a' }, { VIDEO_MESH_URL: 'http://other', VIDEO_MESH_API_KEY: 'b' }, { url: 'https://api.example.test', apiKey: 'a' }],
    ['then the environment', {}, { VIDEO_MESH_URL: 'http://mesh.test:8000', VIDEO_MESH_API_KEY: 'b' }, { url: 'http://mesh.test:8000', apiKey: 'b' }],
    ['then the local mesh', {}, { VIDEO_MESH_API_KEY: 'b' }, { url: 'http://127.0.0.1:8000', apiKey: 'b' }],
    ['a path prefix is kept (an API behind a proxy)', { url: 'https://h.test/mesh/' }, { VIDEO_MESH_API_KEY: 'b' }, { url: 'https://h.test/mesh', apiKey: 'b' }],
  ])('%s', (_name, flags, env, expected) => {
    expect(resolveEndpoint(flags, env)).toEqual(expected);
  });

  it.each([
    [{}, {}, 'no API key: give --api-key or set VIDEO_MESH_API_KEY'],
    [{ url: 'localhost:8000' }, { VIDEO_MESH_API_KEY: 'k' }, '--url: must be an http or https URL, not localhost:'],
    [{}, { VIDEO_MESH_URL: '::', VIDEO_MESH_API_KEY: 'k' }, 'VIDEO_MESH_URL: not a URL: ::'],
    [{ url: 'https://u:p@h.test' }, { VIDEO_MESH_API_KEY: 'k' }, '--url: must not carry a user or password; give the key with --api-key or VIDEO_MESH_API_KEY'],
  ])('refuses %j %j', (flags, env, message) => {
    expect(() => resolveEndpoint(flags, env)).toThrow(message);
  });
});

describe('exit codes of API problems', () => {
  it.each([
    [400, EXIT.usage],
    [404, EXIT.usage],
    [409, EXIT.usage],
    [401, EXIT.unreachable],
    [403, EXIT.unreachable],
    [500, EXIT.unreachable],
    [503, EXIT.unreachable],
  ])('%i is exit %i', (status, code) => {
    expect(new ApiProblemError('x', status, undefined).exitCode).toBe(code);
  });

  it('a network error reads as its cause', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' });
    expect(networkReason(new TypeError('fetch failed', { cause: refused }))).toBe('connection refused');
    expect(networkReason(new TypeError('fetch failed', { cause: new AggregateError([Object.assign(new Error('x'), { code: 'ENOTFOUND' })]) }))).toBe('host not found');
  });
});

describe('texts', () => {
  const running = task({
    stages: {
      thumbnail: { state: 'running', attempts: 1, percent: 0 },
      'transcode-360p': { state: 'running', attempts: 1, percent: 12.5 },
      download: { state: 'done', attempts: 1, percent: 100 },
      'transcode-1080p': { state: 'running', attempts: 2, percent: 3 },
    },
  });

  it('orders stages as the pipeline runs them, the larger rung first', () => {
    expect(orderedStages(running).map(([n]) => n)).toEqual(['download', 'transcode-1080p', 'transcode-360p', 'thumbnail']);
  });

  it('says what changed: the job state, a stage state, every 10 %, a new attempt', () => {
    expect(statusLines(undefined, running)).toEqual([
      `job ${running.task_id}: processing`,
      '  download: done',
      '  transcode-1080p: running 3% (attempt 2)',
      '  transcode-360p: running 12%',
      '  thumbnail: running 0%',
    ]);
    const step = (percent: number) => task({ stages: { ...running.stages, 'transcode-360p': { state: 'running', attempts: 1, percent } } });
    expect(statusLines(running, step(19))).toEqual([]);
    expect(statusLines(running, step(20))).toEqual(['  transcode-360p: running 20%']);
    const failed = task({ ...running, task_status: 'FAILURE', state: 'failed', stages: { ...running.stages, 'transcode-360p': { state: 'failed', attempts: 1, code: 'TOOL_FAILED', reason: 'ffmpeg exited 1' } } });
    expect(statusLines(running, failed)).toEqual([`job ${running.task_id}: failed`, '  transcode-360p: failed TOOL_FAILED: ffmpeg exited 1']);
    const playable = task({ state: 'playable', attempt: 2, manifest: { url: 'http://s3.test/m.mpd' }, stages: running.stages });
    expect(statusLines(running, playable)[0]).toBe(`job ${running.task_id}: playable (attempt 2), manifest http://s3.test/m.mpd`);
  });

  it('a failed task says why, where, and where to look', () => {
    const failed = task({
      task_status: 'FAILURE',
      task_result: 'the source is not a video',
      state: 'failed',
      error: { stage: 'download', code: 'NOT_A_VIDEO', reason: 'the source is not a video' },
      stages: { download: { state: 'failed', attempts: 1, code: 'NOT_A_VIDEO', reason: 'the source is not a video' } },
      waiting_for: [],
    });
    expect(taskLines(failed, 'http://api.test')).toEqual([
      `task ${failed.task_id}: FAILURE (failed)`,
      '  video id:   v1',
      '  object key: uploads/x/v.mp4',
      '  renditions: none yet of 360p',
      '  stages:',
      '    download  failed NOT_A_VIDEO: the source is not a video',
      '  reason:     the source is not a video (download, NOT_A_VIDEO)',
      `  dashboard:  http://api.test/#/jobs/${failed.task_id}`,
    ]);
  });

  it('stage texts', () => {
    expect(stageText({ state: 'running', attempts: 1 })).toBe('running');
    expect(stageText({ state: 'done', attempts: 3, percent: 100 })).toBe('done');
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(12_345_678)).toBe('12.3 MB');
  });

  it('queues and dead letters as tables', () => {
    const q = (consumer: string, o: Partial<{ pending: number; ack_pending: number; waiting: number; exists: boolean; attached: boolean; stalled: boolean }>) => ({ consumer, pending: 0, ack_pending: 0, waiting: 0, exists: true, attached: true, stalled: false, last_active: null, ...o });
    expect(queueLines({ queues: [q('downloader', { waiting: 2 }), q('transcoder-720', { pending: 3, attached: false, stalled: true }), q('transcoder-1080', { exists: false, attached: false })], dead_letters: 1 })).toEqual([
      'stage            waiting  held  idle pulls  replicas',
      'downloader       0        0     2           attached',
      'transcoder-720   3        0     0           STALLED: work and no replica',
      'transcoder-1080  0        0     0           never started',
      'dead letters: 1',
    ]);
    expect(deadLetterLines([])).toEqual(['no dead letters']);
    expect(deadLetterLines([{ seq: 7, consumer: 'packager', subject: 'work.package', jobId: null, reason: 'bad', deliveries: 5, at: '2026-01-01T00:00:00.000Z' }])).toEqual([
      'seq  stage     job  deliveries  at                        reason',
      '7    packager  -    5           2026-01-01T00:00:00.000Z  bad',
    ]);
  });

  it('bars on a terminal, lines otherwise, nothing with --json', () => {
    expect(chooseMode({ json: false, isTTY: true })).toBe('bars');
    expect(chooseMode({ json: false, isTTY: undefined })).toBe('lines');
    expect(chooseMode({ json: true, isTTY: true })).toBe('quiet');
  });
});

describe('what submit checks before uploading', () => {
  it('the video id rule is the API\'s', () => {
    expect(VIDEO_ID.source).toBe(VIDEO_ID_PATTERN.source);
  });

  it('guesses the Content-Type from the extension', () => {
    expect(contentTypeOf('a/b/Clip.MOV')).toBe('video/quicktime');
    expect(contentTypeOf('x.mp4')).toBe('video/mp4');
    expect(contentTypeOf('notes.txt')).toBe('application/octet-stream');
  });
});

describe('Ctrl-C', () => {
  const fakeProcess = () => {
    const proc = new EventEmitter() as EventEmitter & { exitCode?: number; exit: (code: number) => void };
    proc.exit = (code) => void (proc.exitCode = code);
    return proc;
  };

  it('ends with 130 at first; a phase may take it, or defer it to the next phase', () => {
    const proc = fakeProcess();
    const interrupts = trapInterrupts(proc as unknown as NodeJS.Process);
    proc.emit('SIGINT');
    expect(proc.exitCode).toBe(130);
    delete proc.exitCode;

    let calls = 0;
    interrupts.handle(() => calls++);
    proc.emit('SIGINT');
    expect(calls).toBe(1);
    // Between upload and job: held until the job's phase takes it.
    interrupts.handle('defer');
    proc.emit('SIGINT');
    expect(calls).toBe(1);
    interrupts.handle(() => calls++);
    expect(calls).toBe(2);
    expect(proc.exitCode).toBeUndefined();
    interrupts.release();
    expect(proc.listenerCount('SIGINT')).toBe(0);
  });

  it('asks only with a terminal to read the answer from', () => {
    expect(canAsk({ isTTY: true })).toBe(true);
    expect(canAsk({})).toBe(false);
  });

  it('reconnects quickly at first, then every 5 s', () => {
    expect([0, 1, 2, 3, 4, 5, 10].map(reconnectDelay)).toEqual([250, 500, 1000, 2000, 4000, 5000, 5000]);
  });
});
