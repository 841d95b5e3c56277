/**
 * The API on fake job operations, listening on a random port, for the tests of the HTTP layer: jobs are
 * folded in memory; a few object keys and task ids make an operation fail the ways the real ones can.
 */
import type { AddressInfo } from 'node:net';
import { createLogger, type JobSpec } from '@mesh/common';
import { applyEvent, JobConflictError, JobNotFoundError, JobUnavailableError, OutputBusyError, toApiResponse, type JobView } from '@mesh/jobs';
import { createApp, type ApiDeps } from '../src/app.ts';
import { sessionSigner } from '../src/session.ts';

export const KEY = 'test-key-123';
export const ADMIN = 'admin-key-456';
/** Submitting this key answers 409: another task converts it. */
export const BUSY_KEY = 'videos/busy.mp4';
export const BUSY_TASK = '11111111-1111-4111-8111-111111111111';
/** Cancelling this task fails with an error of our own (500); retrying it cannot be queued now (503). */
export const BROKEN_TASK = '22222222-2222-4222-8222-222222222222';
/** The bytes every thumbnail the fakes have reads as: a JPEG's start. */
export const THUMBNAIL = Uint8Array.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3, 0xff, 0xd9]);
export const SESSION_SECRET = 'fake-session-secret-0123456789abcdef';

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
    sessions: sessionSigner({ secret: SESSION_SECRET, apiKey: KEY, adminApiKey: o.adminApiKey === undefined && 'adminApiKey' in o ? undefined : ADMIN, ttlSec: 3600 }),
    jaegerUiUrl: 'http://jaeger.test:16686',
    log: createLogger('test', 'silent'),
    jobs: {
      submit: async (spec) => {
        if (spec.objectKey === BUSY_KEY) throw new OutputBusyError(spec.objectKey, BUSY_TASK);
        submitted.push(spec);
        views.set(spec.jobId, applyEvent(null, { type: 'job.created', jobId: spec.jobId, at: new Date().toISOString(), spec }, 1)!);
      },
      get: async (id) => views.get(id) ?? null,
      // What the store's list does, over the views in memory.
      list: async (q) =>
        [...views.values()]
          .filter((v) => (!q.state || v.state === q.state) && (!q.before || v.createdAt < q.before))
          .filter((v) => !q.search || v._id === q.search.toLowerCase() || [v.videoId, v.objectKey].some((f) => f.toLowerCase().includes(q.search!.toLowerCase())))
          .sort((a, b) => b.createdAt.localeCompare(a.createdAt))
          .slice(0, q.limit),
      thumbnail: async (ref) => (ref.key === 'missing' ? null : THUMBNAIL),
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
      queueHistory: () => ({
        intervalMs: 10_000,
        windowMs: 900_000,
        samples: [{ at: '2026-11-30T10:00:00.000Z', queues: [{ consumer: 'downloader', pending: 2, ack_pending: 1, redelivered: 0, waiting: 0, attached: true }] }],
      }),
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
