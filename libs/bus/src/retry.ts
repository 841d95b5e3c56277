/**
 * A JetStream cluster that loses a node: each stream, KV bucket and consumer that node led has no leader
 * until the others elect one (4-6 s measured on nats-server 2.9.10, docs/architecture.md "A NATS cluster
 * losing a node"). Meanwhile a publish or a KV write fails at once with "jetstream is not enabled" (nobody
 * answers on the stream's subjects), and a request to a server that just went away times out. Those are
 * tried again with backoff for a bounded time; anything else (a refused permission, a compare-and-set
 * conflict, a schema error) is not. A publish is retried with its message id, so one that did land but
 * whose answer was lost is not stored twice.
 */
import { sleep } from '@mesh/common';

/** How long a publish or KV operation waits for a leader: longer than the 4-6 s an election takes, with room for two. */
export const UNAVAILABLE_RETRY_MS = 20_000;

/** NATS, or the leader of the stream an operation needs, is away for the moment: worth another try. */
export function isUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  switch (err.name) {
    // No responders on a JetStream subject: the stream has no leader (nats.js names it so).
    case 'JetStreamNotEnabled':
    case 'NoResponders':
    case 'TimeoutError':
      return true;
    case 'RequestError':
      return isUnavailable(err.cause) || /no responders|timeout/i.test(err.message);
    // "JetStream system temporarily unavailable" and the like.
    case 'JetStreamApiError':
      return (err as Error & { status?: number }).status === 503;
    default:
      return false;
  }
}

/**
 * Runs `fn`, and again while it fails with isUnavailable, waiting 200 ms, 400 ms, 800 ms, then 1 s between
 * tries (jittered), for at most `withinMs` in all; then the last error is thrown. Each try must be safe to
 * repeat: a publish with a message id, a KV read, a put, or a compare-and-set whose conflict the caller handles.
 */
export async function retryUnavailable<T>(fn: () => Promise<T>, o: { withinMs?: number; signal?: AbortSignal } = {}): Promise<T> {
  const deadline = Date.now() + (o.withinMs ?? UNAVAILABLE_RETRY_MS);
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const wait = Math.min(1000, 100 * 2 ** attempt) * (0.75 + Math.random() / 4);
      if (!isUnavailable(err) || Date.now() + wait > deadline) throw err;
      await sleep(wait, o.signal);
    }
  }
}
