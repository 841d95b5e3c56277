/**
 * The API on fake job operations, listening on a random port, for the tests of the HTTP layer: jobs are
 * folded in memory; a few object keys and task ids make an operation fail the ways the real ones can.
 */
import type { AddressInfo } from 'node:net';
import { createLogger, type JobSpec } from '@mesh/common';
import { applyEvent, JobConflictError, JobNotFoundError, JobUnavailableError, OutputBusyError, toApiResponse, type JobView } from '@mesh/jobs';
import { createApp, type ApiDeps } from '../src/app.ts';

export const KEY = 'test-key-123';
export const ADMIN = 'admin-key-456';
/** Submitting this key answers 409: another task converts it. */
export const BUSY_KEY = 'videos/busy.mp4';
export const BUSY_TASK = '11111111-1111-4111-8111-111111111111';
/** Cancelling this task fails with an error of our own (500); retrying it cannot be queued now (503). */
export const BROKEN_TASK = '22222222-2222-4222-8222-222222222222';

export interface FakeApi {
  base: string;
  submitted: JobSpec[];
  views: Map<string, JobView>;
  deps: ApiDeps;
  close(): Promise<void>;
}

/** Job operations in memory, and what was submitted. */
export function fakeDeps(o: Partial<ApiDeps> = {}): Pick<FakeApi, 'deps' | 'submitted' | 'views'> {
  const submitted: JobSpec[] = [];
  const views = new Map<string, JobView>();
  const deps: ApiDeps = {
    apiKey: KEY,
    adminApiKey: ADMIN,
    log: createLogger('test', 'silent'),
    jobs: {
      submit: async (spec) => {
        if (spec.objectKey === BUSY_KEY) throw new OutputBusyError(spec.objectKey, BUSY_TASK);
        submitted.push(spec);
        views.set(spec.jobId, applyEvent(null, { type: 'job.created', jobId: spec.jobId, at: new Date().toISOString(), spec }, 1)!);
      },
      get: async (id) => views.get(id) ?? null,
      retry: async (id) => {
        if (id === BROKEN_TASK) throw new JobUnavailableError('the retry could not be queued (NATS is away); nothing changed, try again');
        const view = views.get(id);
        if (!view) throw new JobNotFoundError(`task ${id}`);
        throw new JobConflictError(`only a FAILED task can be retried; this one is ${toApiResponse(view).task_status}`);
      },
      cancel: async (id) => {
        if (id === BROKEN_TASK) throw new Error('connection to the job store lost');
        if (!views.has(id)) throw new JobNotFoundError(`task ${id}`);
      },
    },
    presignUpload: async (key) => ({ url: `http://s3.test/in/${key}?sig`, bucket: 'in-bucket', expiresInSec: 3600 }),
    links: { thumbnailUrl: (ref) => `http://s3.test/${ref.bucket}/${ref.key}`, packageBaseUrl: (key) => `http://s3.test/out-bucket/${key}/` },
    admin: {
      rebuild: async () => ({ accepted: true, rebuild: { state: 'requested', requestedAt: new Date().toISOString() } }),
      queues: async () => ({ queues: [], dead_letters: 0 }),
      deadLetters: async () => [],
      redrive: async (seq) => {
        throw new JobNotFoundError(`dead letter ${seq}`);
      },
    },
    bodyLimitBytes: 1024,
    ...o,
  };
  return { deps, submitted, views };
}

export async function startFakeApi(o: Partial<ApiDeps> = {}): Promise<FakeApi> {
  const { deps, submitted, views } = fakeDeps(o);
  const server = createApp(deps).listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  return {
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    submitted,
    views,
    deps,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
