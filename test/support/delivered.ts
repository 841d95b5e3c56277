/**
 * What "delivered" means in the fault tests: the job ends complete with both renditions in a manifest
 * that names them, and the backend heard SUCCESS, each outcome under its own Idempotency-Key.
 */
import { expect } from 'vitest';
import { getText } from '@mesh/storage';
import type { ReceivedRequest } from '@mesh/testkit';
import { BUCKETS, waitForState, type AnySystem, type Job } from './harness.ts';
import { readMpd } from './mpd.ts';

/** The backend's calls about `taskId`, in the order received. */
export function callsFor(sys: AnySystem, taskId: string): ReceivedRequest[] {
  return sys.backend.received.filter((r) => (r.body as { taskId?: string }).taskId === taskId);
}

/**
 * The job ends complete, its manifest holds both renditions, and the backend heard SUCCESS, after the
 * outcomes `before` (statuses of earlier attempts): one Idempotency-Key per outcome, in that order.
 * Returns the job, the calls (a repeat of a key, at least once delivery, shows as an extra call) and the manifest.
 */
export async function expectDelivered(sys: AnySystem, taskId: string, before: string[] = []): Promise<{ job: Job; calls: ReceivedRequest[]; manifest: string }> {
  const job = await waitForState(sys, taskId, ['complete', 'failed'], 120_000);
  expect(job).toMatchObject({ task_status: 'SUCCESS', state: 'complete', renditions: ['720p', '360p'] });
  const manifest = (await getText(sys.s3, { bucket: BUCKETS.output, key: job['manifest'].key }))!;
  const mpd = readMpd(manifest);
  expect(mpd.representations.filter((r) => r.contentType === 'video').map((r) => r.height)).toEqual([720, 360]);
  await sys.backend.waitFor(() => callsFor(sys, taskId).length > 0);
  const calls = callsFor(sys, taskId);
  expect([...new Set(calls.map((r) => r.headers['idempotency-key']))]).toEqual([...before.map((s) => `${taskId}:${s}`), `${taskId}:SUCCESS`]);
  return { job, calls, manifest };
}
