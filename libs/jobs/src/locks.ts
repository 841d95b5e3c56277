/**
 * A lease on a NATS KV key: held by whoever created the key, renewed while the holder works, and checked
 * before each write. The bucket's TTL frees a dead holder's lease; a live one renews it well before that.
 *
 * Fencing: every write to the key is compare-and-set on the revision the holder last wrote, so a holder
 * that stalled past the TTL (an S3 call that hangs, a long GC pause) finds out instead of carrying on
 * beside the next holder: its renewal fails, its signal aborts, `assertHeld` throws LOCK_LOST, and its
 * release deletes the key only at its own revision, never the next holder's lease.
 *
 * A bucket without a leader for a few seconds (a cluster node lost) is waited out (retryUnavailable): a
 * renewal keeps trying while the lease still stands, and only one that cannot land in time, or is refused
 * because another holder wrote, loses it. A read may come from a replica that has not applied our last
 * write yet, or (seen on nats-server 2.9.10 during a rolling restart after a SIGKILL) one that answers our
 * own entry under another revision: a lease knows its entries by a token of its own, not by revision, and
 * reads again for a while before it concludes another holder has the key.
 */
import { randomUUID } from 'node:crypto';
import type { KV, KvEntry } from '@nats-io/kv';
import { retryUnavailable } from '@mesh/bus';
import { MeshError, reasonOf, sleep } from '@mesh/common';

export class LockLostError extends MeshError {
  override name = 'LockLostError';
  constructor(key: string, why: string) {
    super('LOCK_LOST', `lost the lock on ${key}: ${why}`);
  }
}

export interface Lease {
  /** Aborted when the lease is lost: stop writing. */
  readonly signal: AbortSignal;
  /** Throws LockLostError unless the key still holds this lease (check right before each write). */
  assertHeld(): Promise<void>;
}

export interface LockOptions {
  /** The bucket's TTL: how long a lease outlives a holder that stopped renewing it. */
  ttlMs: number;
  /** How long to wait for the lock before giving up (a retryable error). */
  waitMs?: number;
  /** Stops the wait (and the work, through the lease's signal): the service is stopping. */
  signal?: AbortSignal;
  /** Who holds it, for people reading the bucket. */
  holder?: string;
}

export async function withLock<T>(kv: KV, key: string, o: LockOptions, fn: (lease: Lease) => Promise<T>): Promise<T> {
  // This lease's own mark, in every value it writes: what it recognises as its own when it reads the key.
  const token = randomUUID();
  const value = () => holderValue(o, token);
  let revision = await acquire(kv, key, o, value);
  const lost = new AbortController();
  const loseLease = (why: string) => {
    if (!lost.signal.aborted) lost.abort(new LockLostError(key, why));
  };
  // Renew at a third of the TTL; a renewal that fails for want of a leader is tried again until a third of
  // the TTL before the lease would expire, so it never writes past its expiry.
  const every = Math.max(50, Math.floor(o.ttlMs / 3));
  const released = new AbortController();
  const renewing = (async () => {
    let renewedAt = Date.now();
    while (!lost.signal.aborted) {
      if (!(await sleep(every, released.signal).then(() => true, () => false))) return;
      try {
        revision = await retryUnavailable(() => kv.update(key, value(), revision), { withinMs: renewedAt + o.ttlMs - every - Date.now(), signal: released.signal });
        renewedAt = Date.now();
      } catch (err) {
        if (released.signal.aborted) return;
        loseLease(`renewal failed: ${reasonOf(err)}`);
      }
    }
  })();
  const lease: Lease = {
    signal: o.signal ? AbortSignal.any([lost.signal, o.signal]) : lost.signal,
    async assertHeld() {
      if (lost.signal.aborted) throw lost.signal.reason;
      // The key holds our lease while it holds a value with our token. A replica behind our last write may
      // answer nothing, the release before it, or an older holder's (revision below ours): read again for a
      // while before concluding. Only another holder's lease above our revision is conclusive at once.
      const ours = (e: KvEntry | null) => e !== null && e.operation === 'PUT' && leaseOf(e.string()).token === token;
      const behind = (e: KvEntry | null) => e === null || e.operation !== 'PUT' || e.revision < revision;
      let entry = await retryUnavailable(() => kv.get(key));
      for (let reads = 1; !ours(entry) && behind(entry) && reads < 20; reads++) {
        await sleep(100);
        entry = await retryUnavailable(() => kv.get(key));
      }
      if (!ours(entry)) {
        loseLease(entry && entry.operation === 'PUT' ? `another holder (${leaseOf(entry.string()).holder ?? 'unknown'}) has it since revision ${entry.revision}` : 'it expired');
        throw lost.signal.reason;
      }
    },
  };
  try {
    return await fn(lease);
  } finally {
    released.abort();
    await renewing;
    // Only our own revision: a lease that expired and was taken by another holder stays theirs.
    if (!lost.signal.aborted) await retryUnavailable(() => kv.delete(key, { previousSeq: revision })).catch(() => undefined);
  }
}

interface LeaseValue {
  holder?: string;
  at?: string;
  token?: string;
}

function holderValue(o: LockOptions, token: string): string {
  return JSON.stringify({ holder: o.holder ?? `pid ${process.pid}`, at: new Date().toISOString(), token } satisfies LeaseValue);
}

function leaseOf(value: string): LeaseValue {
  try {
    return JSON.parse(value) as LeaseValue;
  } catch {
    return {};
  }
}

async function acquire(kv: KV, key: string, o: LockOptions, value: () => string): Promise<number> {
  const deadline = Date.now() + (o.waitMs ?? o.ttlMs + 10_000);
  for (;;) {
    o.signal?.throwIfAborted();
    try {
      return await retryUnavailable(() => kv.create(key, value()), o.signal ? { signal: o.signal } : {});
    } catch (err) {
      if (!isConflict(err)) throw err;
      if (Date.now() > deadline) throw new MeshError('LOCK_LOST', `could not get the lock on ${key} within ${o.waitMs ?? o.ttlMs + 10_000} ms`);
      await sleep(100 + Math.random() * 150, o.signal);
    }
  }
}

export function isConflict(err: unknown): boolean {
  const text = String(err instanceof Error ? err.message : err).toLowerCase();
  return text.includes('wrong last sequence') || text.includes('10071') || text.includes('exists');
}
