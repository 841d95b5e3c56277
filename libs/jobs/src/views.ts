/**
 * The job documents an API process has seen lately, kept in memory so a status GET does not cost a
 * MongoDB read. The cache is fed by the projector itself: after each fold it publishes every changed
 * document on `views.<jobId>` (projector.ts), and every API process listens there, so what the cache
 * holds is what MongoDB holds, a moment later at most. A document is replaced only by one that has folded
 * more events (`lastSeq`), so a slow MongoDB read cannot put an older one back.
 *
 * What could make it hold an old document, and the answer to each:
 * - messages missed while disconnected from NATS: the cache empties on every reconnect;
 * - a change whose document could not be published (the projector logs it): each entry is trusted for
 *   `maxAgeMs` after it last changed, then read from MongoDB again;
 * - a projection rebuilt into a new collection: the same bound (`maxAgeMs`).
 */
import type { Subscription } from '@nats-io/transport-node';
import type { Bus } from '@mesh/bus';
import type { Logger } from '@mesh/common';
import { viewCacheReads } from '@mesh/telemetry';
import type { JobView } from './projection.ts';

export interface ViewCache {
  /** The job's document if cached and fresh, else undefined (a miss: read MongoDB and `offer` it). */
  get(jobId: string): JobView | undefined;
  /** Remembers a document read from MongoDB (or waited for), unless a newer one is cached. */
  offer(view: JobView): void;
  stats(): { size: number; hits: number; misses: number; fed: number; clears: number };
  stop(): void;
}

interface Entry {
  view: JobView;
  at: number;
}

export function openViewCache(bus: Bus, log: Logger, o: { max?: number; maxAgeMs?: number } = {}): ViewCache {
  const max = o.max ?? 20_000;
  const maxAgeMs = o.maxAgeMs ?? 30_000;
  // A Map keeps insertion order: re-inserting on every change makes the first key the least recently changed.
  const entries = new Map<string, Entry>();
  const counts = { hits: 0, misses: 0, fed: 0, clears: 0 };

  const put = (view: JobView) => {
    const had = entries.get(view._id);
    // An equal one is a confirmation (a fresh MongoDB read): it is trusted for another maxAgeMs.
    if (had && had.view.lastSeq > view.lastSeq) return;
    entries.delete(view._id);
    entries.set(view._id, { view, at: Date.now() });
    if (entries.size > max) entries.delete(entries.keys().next().value!);
  };

  const sub: Subscription = bus.nc.subscribe('views.*', {
    callback: (err, msg) => {
      if (err) return;
      try {
        const view = msg.json<JobView>();
        if (typeof view?._id === 'string' && typeof view.lastSeq === 'number') {
          counts.fed++;
          put(view);
        }
      } catch {
        // Not a document: nothing to remember.
      }
    },
  });

  // Whatever was published while the connection was down did not reach us.
  const watching = (async () => {
    for await (const s of bus.nc.status()) {
      if (s.type === 'disconnect' || s.type === 'reconnect') {
        if (entries.size > 0) log.debug({ dropped: entries.size, status: s.type }, 'job view cache emptied');
        entries.clear();
        counts.clears++;
      }
    }
  })();
  void watching.catch(() => undefined);

  return {
    get(jobId) {
      const e = entries.get(jobId);
      if (e && Date.now() - e.at < maxAgeMs) {
        counts.hits++;
        viewCacheReads.inc({ result: 'hit' });
        return e.view;
      }
      if (e) entries.delete(jobId);
      counts.misses++;
      viewCacheReads.inc({ result: 'miss' });
      return undefined;
    },
    offer: put,
    stats: () => ({ size: entries.size, ...counts }),
    stop() {
      sub.unsubscribe();
      entries.clear();
    },
  };
}
