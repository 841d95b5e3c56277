/**
 * Queue depth per stage, read from JetStream: what an autoscaler (or a person) needs to decide how many
 * replicas of a stage to run, and whether a stage has work but nobody to do it. Served by ingest-api as
 * JSON (`GET /admin/queues`), as metrics, and in each job's status (`waiting_for`).
 */
import { DEFAULT_LADDER, EVENTS_SUBJECT_PREFIX, WORK, workRoute, type Ladder, type WorkKind } from '@mesh/common';
import type { ConsumerInfo } from '@nats-io/jetstream';
import type { Bus } from './connect.ts';
import { isNotFound, STREAMS } from './topology.ts';
import { PULL } from './worker.ts';

export interface QueueDepth {
  /** The stage's durable consumer, shared by its replicas (named after the service). */
  consumer: string;
  stream: string;
  subject: string;
  /** Messages waiting for any replica to take them (when the consumer does not exist yet: the messages stored for it). */
  pending: number;
  /** Messages a replica holds now (being worked on or waiting for a retry), or a crashed holder's. */
  ack_pending: number;
  /** Messages delivered more than once and still unacknowledged. */
  redelivered: number;
  /** Pull requests waiting at the server: replicas (or their free slots) attached and idle. */
  waiting: number;
  /** False when the consumer does not exist yet (its stage never started). */
  exists: boolean;
  /** A replica is there: see `isAttached`. */
  attached: boolean;
  /** Work is waiting (or held by a replica that is gone) and no replica is attached to do it. */
  stalled: boolean;
  /** When a replica last took a message or reported progress on one (ISO time), if ever. */
  last_active: string | null;
}

export interface Queue {
  stream: string;
  consumer: string;
  subject: string;
}

/** The durable consumers a mesh running `ladder` has: each stage's, one per rung for the transcoders, and the notifier's. */
export function queuesOf(ladder: Ladder = DEFAULT_LADDER): Queue[] {
  const kinds = Object.keys(WORK) as WorkKind[];
  return [
    ...kinds.flatMap((kind) => (kind === 'transcode' ? ladder.map((r) => workRoute(kind, r.name)) : [workRoute(kind)])).map((w) => ({ stream: STREAMS.work.name, ...w })),
    { stream: STREAMS.events.name, consumer: 'notifier', subject: `${EVENTS_SUBJECT_PREFIX}.>` },
  ];
}

/** What `isAttached` reads of a consumer's info (nats-server 2.9 sends `last_active` as an ISO time). */
export type ConsumerActivity = Pick<ConsumerInfo, 'num_waiting' | 'num_ack_pending'> & {
  delivered?: { last_active?: unknown };
  ack_floor?: { last_active?: unknown };
  config: { ack_wait?: number };
};

/**
 * Whether any replica is attached to a consumer, from its info alone:
 * - a pull request is waiting at the server: an idle replica asked for work within the pull's expiry (2 s);
 * - or a message is held and was delivered, or reported on with `working()` (which the server counts as
 *   activity), within the consumer's ack_wait: a busy replica reports every ack_wait/3, and a holder
 *   silent for a whole ack_wait is gone, by the server's own rule for taking its message back. A holder
 *   that died is thus seen as gone one ack_wait after its last report (its message stays counted in
 *   ack_pending even then: nats-server 2.9 moves it back to `pending` only when it redelivers it);
 * - or a replica took or acked a message moments ago (within a pull's expiry and a second): between
 *   finishing one message and asking for the next, a live replica has neither a pull nor a message.
 * The times are the server's, compared with this clock: a skew of seconds only moves when it is seen.
 */
export function isAttached(info: ConsumerActivity, now = Date.now()): boolean {
  if (info.num_waiting > 0) return true;
  const delivered = timeOf(info.delivered?.last_active);
  const acked = timeOf(info.ack_floor?.last_active);
  const ackWaitMs = (info.config.ack_wait ?? 0) / 1e6;
  if (info.num_ack_pending > 0 && delivered !== undefined && now - delivered < ackWaitMs) return true;
  const latest = Math.max(delivered ?? -Infinity, acked ?? -Infinity);
  return now - latest < PULL.expires + 1000;
}

function timeOf(value: unknown): number | undefined {
  if (typeof value !== 'string') return undefined;
  const ms = Date.parse(value);
  // Go's zero time (0001-01-01...) means "never".
  return Number.isFinite(ms) && ms > 0 ? ms : undefined;
}

/** The depth row for a consumer's info. */
export function depthOf(q: Queue, info: ConsumerInfo, now = Date.now()): QueueDepth {
  const attached = isAttached(info, now);
  const lastActive = timeOf(info.delivered?.last_active);
  return {
    ...q,
    pending: info.num_pending,
    ack_pending: info.num_ack_pending,
    redelivered: info.num_redelivered,
    waiting: info.num_waiting,
    exists: true,
    attached,
    stalled: !attached && info.num_pending + info.num_ack_pending > 0,
    last_active: lastActive === undefined ? null : new Date(lastActive).toISOString(),
  };
}

export async function queueDepths(bus: Bus, ladder: Ladder = DEFAULT_LADDER): Promise<QueueDepth[]> {
  return Promise.all(
    queuesOf(ladder).map(async (q) => {
      try {
        return depthOf(q, await bus.jsm.consumers.info(q.stream, q.consumer));
      } catch (err) {
        if (!isNotFound(err)) throw err;
        // Its stage never started here: what is stored for it waits (a new consumer starts at the first message).
        const pending = await storedFor(bus, q);
        return { ...q, pending, ack_pending: 0, redelivered: 0, waiting: 0, exists: false, attached: false, stalled: pending > 0, last_active: null };
      }
    }),
  );
}

/** Messages a stream holds on a queue's subject. */
async function storedFor(bus: Bus, q: Queue): Promise<number> {
  const stream = Object.values(STREAMS).find((s) => s.name === q.stream);
  // The filter is the whole stream (the notifier's): its count, without listing every job's subject.
  if (stream?.subjects.length === 1 && stream.subjects[0] === q.subject) return (await bus.jsm.streams.info(q.stream)).state.messages;
  const info = await bus.jsm.streams.info(q.stream, { subjects_filter: q.subject });
  return Object.values(info.state.subjects ?? {}).reduce((sum, n) => sum + n, 0);
}

/**
 * `read`, shared by the callers of the next `ttlMs` (a failed read is not kept): the job status asks
 * for the queues on every GET, and must not cost the server a consumer info each time.
 */
export function cachedFor<T>(read: () => Promise<T>, ttlMs: number): () => Promise<T> {
  let current: Promise<T> | undefined;
  return () => {
    if (!current) {
      const p = read();
      current = p;
      p.then(
        () => setTimeout(() => current === p && (current = undefined), ttlMs).unref(),
        () => current === p && (current = undefined),
      );
    }
    return current;
  };
}

/** Messages kept on the dead-letter stream. */
export async function deadLetterCount(bus: Bus): Promise<number> {
  return (await bus.jsm.streams.info(STREAMS.deadLetters.name)).state.messages;
}
