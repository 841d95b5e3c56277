/**
 * The projector folds JOB_EVENTS into MongoDB. One API replica leads at a time (a lease in the KV bucket
 * `mesh-leases`, taken over within seconds when its holder dies); the leader reads the stream in order
 * with an ordered consumer from the cursor stored beside the documents, folds each batch with one read and
 * one bulk write, moves the cursor, and publishes the changed documents to JOB_VIEWS (the compacted state
 * per job). Nothing is acked, so stopping (an API shutdown) never leaves an event hanging for ack_wait.
 *
 * A rebuild (`requestRebuild`, one at a time) folds everything again into a fresh collection beside the
 * live one, starting from JOB_VIEWS for jobs whose first events have aged out of JOB_EVENTS and from the
 * events themselves for the rest, while the live collection keeps answering and keeps being updated. When
 * the rebuild has caught up, the live fold pauses for one batch, the rebuild takes the last events, and
 * the pointer switches to the new collection.
 */
import { Kvm, type KV } from '@nats-io/kv';
import type { JsMsg } from '@nats-io/jetstream';
import { BUCKETS, followStream, retryUnavailable, STREAMS, type Bus } from '@mesh/bus';
import { eventFitsSubject, JobEvent, reasonOf, sleep, type Logger } from '@mesh/common';
import { extractContext, inSpan, projectorBatch, projectorEvents, projectorLag, SpanKind } from '@mesh/telemetry';
import { withLock } from './locks.ts';
import type { JobView } from './projection.ts';
import { CursorMovedError, type ProjectionStore, type SequencedEvent } from './store.ts';

export interface Projector {
  stop(): Promise<void>;
}

/** A leader that stops renewing is replaced after this long. */
export const LEASE_TTL_MS = 6000;

export async function openLeases(bus: Bus, replicas = 1): Promise<KV> {
  return retryUnavailable(() => new Kvm(bus.nc).create(BUCKETS.leases, { history: 1, ttl: LEASE_TTL_MS, replicas }));
}

export async function runProjector(bus: Bus, store: ProjectionStore, log: Logger, o: { replicas?: number; batch?: number } = {}): Promise<Projector> {
  const leases = await openLeases(bus, o.replicas);
  const stop = new AbortController();
  const holder = `${process.pid}@${bus.nc.info?.client_ip ?? 'local'}`;
  const loop = async () => {
    while (!stop.signal.aborted) {
      try {
        await withLock(leases, 'projector', { ttlMs: LEASE_TTL_MS, waitMs: Number.POSITIVE_INFINITY, signal: stop.signal, holder }, (lease) => lead(bus, store, log, lease.signal, o.batch ?? 256));
      } catch (err) {
        if (stop.signal.aborted) break;
        // A moved cursor (the documents were lost: MongoDB restarted empty) folds again from where it now is.
        log.warn({ err: reasonOf(err) }, err instanceof CursorMovedError ? 'projector: the stored cursor moved; folding again from it' : 'projector: lost the lead or could not fold; trying again');
        await sleep(1000, stop.signal).catch(() => undefined);
      }
    }
  };
  const done = loop();
  return {
    async stop() {
      stop.abort();
      await done;
    },
  };
}

/** One turn at a time for the live fold and the rebuild's final catch-up. */
function mutex() {
  let tail = Promise.resolve();
  return <T>(fn: () => Promise<T>): Promise<T> => {
    const run = tail.then(fn);
    tail = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  };
}

function decode(msgs: JsMsg[], log: Logger): SequencedEvent[] {
  const out: SequencedEvent[] = [];
  for (const m of msgs) {
    const parsed = JobEvent.safeParse(safeJson(m));
    // Not ours to fix and not worth blocking every other job for: log it loudly and move on. An event
    // whose type is not its subject's was published by a service not allowed to publish that type.
    if (parsed.success && eventFitsSubject(parsed.data, m.subject)) out.push({ event: parsed.data, seq: m.seq });
    else log.error({ seq: m.seq, subject: m.subject, err: parsed.success ? `a ${parsed.data.type} event does not belong on this subject` : parsed.error.issues[0]?.message }, 'projector: invalid event skipped');
  }
  return out;
}

function safeJson(m: JsMsg): unknown {
  try {
    return m.json();
  } catch {
    return undefined;
  }
}

async function lead(bus: Bus, store: ProjectionStore, log: Logger, leaseSignal: AbortSignal, max: number): Promise<void> {
  const meta = await store.meta();
  log.info({ seq: meta.seq, collection: meta.collection }, 'projector: leading');
  const turn = mutex();
  let liveSeq = meta.seq;
  // Ends the rebuild watcher too when the live fold stops, whatever the reason.
  const ended = new AbortController();
  const signal = AbortSignal.any([leaseSignal, ended.signal]);
  const rebuilds = watchRebuilds(bus, store, log, signal, turn, () => liveSeq);
  try {
    await followStream(bus, {
      stream: STREAMS.events.name,
      fromSeq: meta.seq + 1,
      max,
      signal,
      onBatch: (msgs) =>
        turn(async () => {
          const decoding = projectorBatch.startTimer({ part: 'decode' });
          const batch = decode(msgs, log);
          decoding();
          // Each event is a hop of its job's trace (a CONSUMER span under its publish); the batch's one
          // MongoDB write hangs under the first.
          const [first, ...rest] = msgs;
          for (const m of rest) await inSpan(`process ${m.subject}`, { kind: SpanKind.CONSUMER, parent: extractContext(m.headers), attributes: consumeAttributes(m) }, async () => undefined);
          await inSpan(`process ${first!.subject}`, { kind: SpanKind.CONSUMER, parent: extractContext(first!.headers), attributes: { ...consumeAttributes(first!), 'mesh.batch': msgs.length } }, async () => {
            const last = msgs.at(-1)!;
            const storing = projectorBatch.startTimer({ part: 'store' });
            const changed = await store.applyBatch(batch, { cursor: { from: liveSeq, to: last.seq } });
            storing();
            liveSeq = last.seq;
            projectorEvents.inc(msgs.length);
            projectorLag.set(Math.max(0, Date.now() - last.info.timestampNanos / 1e6) / 1000);
            const publishing = projectorBatch.startTimer({ part: 'views' });
            await publishViews(bus, changed, log);
            publishing();
          });
        }),
    });
  } finally {
    ended.abort();
    await rebuilds;
  }
}

function consumeAttributes(m: JsMsg) {
  return { 'messaging.system': 'nats', 'messaging.operation.type': 'process', 'messaging.destination.name': m.subject, 'messaging.consumer.group.name': 'projector', 'job.id': m.subject.split('.')[1] ?? '' };
}

/** The compacted state per job: best effort, the next change of the job publishes it again. */
async function publishViews(bus: Bus, views: JobView[], log: Logger): Promise<void> {
  const results = await Promise.allSettled(views.map((v) => bus.js.publish(`views.${v._id}`, JSON.stringify(v))));
  const failed = results.filter((r) => r.status === 'rejected').length;
  if (failed > 0) log.warn({ failed }, 'projector: could not publish some job snapshots');
}

async function watchRebuilds(bus: Bus, store: ProjectionStore, log: Logger, signal: AbortSignal, turn: ReturnType<typeof mutex>, liveSeq: () => number): Promise<void> {
  while (!signal.aborted) {
    const meta = await store.meta().catch(() => null);
    if (meta?.rebuild?.state === 'requested' || meta?.rebuild?.state === 'running') {
      try {
        await rebuild(bus, store, log, signal, turn, liveSeq);
      } catch (err) {
        if (signal.aborted) return;
        log.error({ err: reasonOf(err) }, 'projector: rebuild failed');
        await store.updateRebuild({ state: 'failed', finishedAt: new Date().toISOString(), error: reasonOf(err) }).catch(() => undefined);
      }
    }
    await sleep(500, signal).catch(() => undefined);
  }
}

async function rebuild(bus: Bus, store: ProjectionStore, log: Logger, signal: AbortSignal, turn: ReturnType<typeof mutex>, liveSeq: () => number): Promise<void> {
  await store.updateRebuild({ state: 'running', startedAt: new Date().toISOString(), events: 0 });
  const target = await store.newCollection();
  const events = await bus.jsm.streams.info(STREAMS.events.name);
  const firstSeq = events.state.messages > 0 ? events.state.first_seq : events.state.last_seq + 1;
  log.info({ target, firstSeq, lastSeq: events.state.last_seq }, 'projector: rebuilding');

  // Jobs whose job.created has aged out of JOB_EVENTS come back from their last snapshot.
  const fromSnapshots = await loadSnapshots(bus, store, target, firstSeq, signal);

  // Then every retained event, in order, folded beside the live collection, up to the live cursor; the
  // last stretch runs while the live fold waits, and the pointer switches.
  let folded = 0;
  let at = firstSeq - 1;
  const stopAt = new AbortController();
  const both = AbortSignal.any([signal, stopAt.signal]);
  const foldUpTo = async (msgs: JsMsg[], limit: number) => {
    const batch = decode(msgs.filter((m) => m.seq <= limit), log);
    await store.applyBatch(batch, { collection: target });
    folded += batch.length;
    at = Math.max(at, ...msgs.filter((m) => m.seq <= limit).map((m) => m.seq));
  };
  if (liveSeq() > at) {
    await followStream(bus, {
      stream: STREAMS.events.name,
      fromSeq: firstSeq,
      max: 512,
      signal: both,
      onBatch: async (msgs) => {
        await foldUpTo(msgs, liveSeq());
        await store.updateRebuild({ events: folded });
        if (at >= liveSeq()) stopAt.abort();
      },
    });
  }
  signal.throwIfAborted();
  await turn(async () => {
    const until = liveSeq();
    if (until > at) {
      const rest = new AbortController();
      await followStream(bus, {
        stream: STREAMS.events.name,
        fromSeq: at + 1,
        max: 512,
        signal: AbortSignal.any([signal, rest.signal]),
        onBatch: async (msgs) => {
          await foldUpTo(msgs, until);
          if (at >= until) rest.abort();
        },
      });
    }
    signal.throwIfAborted();
    await store.switchTo(target, until);
  });
  await store.updateRebuild({ state: 'done', finishedAt: new Date().toISOString(), events: folded, fromSnapshots });
  log.info({ target, events: folded, fromSnapshots }, 'projector: rebuilt; now serving the new collection');
}

async function loadSnapshots(bus: Bus, store: ProjectionStore, target: string, firstSeq: number, signal: AbortSignal): Promise<number> {
  const info = await bus.jsm.streams.info(STREAMS.views.name).catch(() => null);
  const total = info?.state.messages ?? 0;
  if (total === 0) return 0;
  let seen = 0;
  let restored = 0;
  const done = new AbortController();
  await followStream(bus, {
    stream: STREAMS.views.name,
    fromSeq: 0,
    max: 500,
    signal: AbortSignal.any([signal, done.signal]),
    onBatch: async (msgs) => {
      seen += msgs.length;
      const views = msgs.map((m) => safeJson(m) as JobView).filter((v) => v && typeof v._id === 'string' && (v.createdSeq ?? 0) < firstSeq);
      await store.insertViews(target, views);
      restored += views.length;
      if (seen >= total || msgs.at(-1)!.seq >= info!.state.last_seq) done.abort();
    },
  });
  return restored;
}
