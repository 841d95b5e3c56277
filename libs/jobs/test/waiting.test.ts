/** waitingFor: the stages a job still needs that have no replica, from the queues. */
import { describe, expect, it } from 'vitest';
import { createLogger } from '@mesh/common';
import type { QueueDepth } from '@mesh/bus';
import { applyEvent, waitingFor, type JobsContext, type JobView } from '../src/index.ts';

const jobId = '00000000-0000-4000-8000-000000000003';
const at = '2026-11-24T10:00:00.000Z';
const spec = { jobId, objectKey: 'in/cat.mp4', baseUrl: 'https://cdn.test/cat/', videoId: '42', hasAudio: true, attempt: 1 };
const view: JobView = {
  ...applyEvent(null, { type: 'job.created', jobId, at, spec }, 1)!,
  state: 'playable',
  planned: ['720p', '360p'],
  renditions: ['360p'],
  stages: { download: { state: 'done', attempts: 1 }, 'transcode-360p': { state: 'done', attempts: 1 }, 'transcode-720p': { state: 'running', attempts: 1 }, thumbnail: { state: 'done', attempts: 1 } },
};
const queue = (consumer: string, patch: Partial<QueueDepth>): QueueDepth => ({ consumer, stream: 'WORK', subject: `work.${consumer}`, pending: 0, ack_pending: 0, redelivered: 0, waiting: 1, exists: true, attached: true, stalled: false, last_active: null, ...patch });
const ctx = (queues: JobsContext['queues']) => ({ log: createLogger('test', 'silent'), queues }) as JobsContext;

describe('waitingFor', () => {
  it('names the stages ahead whose service has no replica, and why', async () => {
    const queues = [queue('transcoder-720', { attached: false, stalled: true, ack_pending: 1, waiting: 0 }), queue('packager', { exists: false, attached: false, waiting: 0 }), queue('uploader', {})];
    expect(await waitingFor(ctx(async () => queues), view)).toEqual([
      { stage: 'transcode-720p', service: 'transcoder-720', reason: 'no transcoder-720 replica is attached (none is asking for work or reporting progress on it); the job goes on once one runs' },
      { stage: 'package', service: 'packager', reason: 'no packager has started yet; the job goes on once one runs' },
    ]);
  });

  it('is empty when every stage ahead has a replica, when the job ended, or when the queues cannot be read', async () => {
    const all = ['transcoder-720', 'packager', 'uploader'].map((c) => queue(c, {}));
    expect(await waitingFor(ctx(async () => all), view)).toEqual([]);
    expect(await waitingFor(ctx(async () => [queue('transcoder-720', { attached: false })]), { ...view, state: 'complete' })).toEqual([]);
    expect(await waitingFor(ctx(async () => Promise.reject(new Error('NATS down'))), view)).toEqual([]);
  });
});
