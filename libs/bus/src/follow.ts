/**
 * Reads a stream in order, from a sequence, in batches: an ordered consumer (no acks, nothing to stall
 * when the reader stops) feeding a small bounded queue, handed to `onBatch` one batch at a time with
 * whatever has arrived meanwhile. Used by the projector (and its rebuild) and by the live progress streams
 * (libs/jobs/src/live.ts). The consumer is deleted when the read ends.
 */
import { DeliverPolicy, type Consumer, type ConsumerMessages, type JsMsg, type MsgRequest } from '@nats-io/jetstream';
import { sleep } from '@mesh/common';
import type { Bus } from './connect.ts';
import { isUnavailable } from './retry.ts';

export interface FollowOptions {
  stream: string;
  /** Only these subjects (one filter: nats-server 2.9 takes no lists). */
  subject?: string;
  /** First sequence to read; 0 or 1 = from the start. */
  fromSeq: number;
  /** Largest batch handed over at once. */
  max?: number;
  signal: AbortSignal;
  onBatch: (messages: JsMsg[]) => Promise<void>;
}

/**
 * A follow whose consumer sat on a cluster node that died would wait for that node forever: an ordered
 * consumer is one copy on one node, and nats.js makes it again only when the server says it is gone, which
 * a dead node never says (nats-server 2.9.10 also sends no idle heartbeats to tell). So while no message
 * comes for WATCH_MS, the consumer is asked after; one that does not answer within WATCH_MS is replaced by
 * a new one from the next sequence, placed on a node that is up.
 */
const WATCH_MS = 2000;

export async function followStream(bus: Bus, o: FollowOptions): Promise<void> {
  const max = o.max ?? 256;
  const queue: JsMsg[] = [];
  let wake: (() => void) | undefined;
  let room: (() => void) | undefined;
  let ended = false;
  let messages: ConsumerMessages | undefined;
  let failure: unknown;
  const stop = () => {
    ended = true;
    messages?.stop();
    wake?.();
    room?.();
  };
  o.signal.addEventListener('abort', stop, { once: true });
  const reader = (async () => {
    let next = o.fromSeq;
    while (!ended) {
      let consumer: Consumer;
      try {
        consumer = await bus.js.consumers.get(o.stream, {
          ...(next > 1 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: next } : { deliver_policy: DeliverPolicy.All }),
          ...(o.subject ? { filter_subjects: o.subject } : {}),
        });
        messages = await consumer.consume({ max_messages: Math.max(64, max), expires: 5000 });
      } catch (err) {
        // Anything but a cluster electing a leader to make the consumer with ends the read, as it always did.
        if (!isUnavailable(err)) {
          failure = err;
          stop();
          return;
        }
        await sleep(1000, o.signal).catch(() => undefined);
        continue;
      }
      const current = messages;
      if (ended) current.stop();
      let lastAt = Date.now();
      let asking = false;
      const watch = setInterval(() => {
        if (asking || Date.now() - lastAt < WATCH_MS) return;
        asking = true;
        const silent = sleep(WATCH_MS).then(() => Promise.reject(new Error('no answer')));
        Promise.race([consumer.info(), silent])
          .then(() => (lastAt = Date.now()), () => current.stop())
          .finally(() => (asking = false));
      }, WATCH_MS / 2);
      try {
        for await (const m of current) {
          queue.push(m);
          next = m.seq + 1;
          lastAt = Date.now();
          wake?.();
          // Backpressure: the iterator pulls more only as we take them.
          if (queue.length >= 4 * max && !ended) await new Promise<void>((r) => (room = r));
          lastAt = Date.now();
        }
      } catch {
        // Ended by an error: made again below, from the next sequence.
      } finally {
        clearInterval(watch);
      }
      // An ordered consumer outlives its reader by its inactive threshold (5 min) unless deleted: short
      // reads (a listener's backlog, a rebuild's catch-up) would otherwise pile up on the server. Not
      // waited for while the read goes on: one on a dead node answers nothing until the request times out.
      const deleted = consumer.delete().catch(() => undefined);
      if (ended) await deleted;
    }
  })();
  try {
    while (!o.signal.aborted) {
      if (queue.length === 0) {
        if (ended) break;
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
        continue;
      }
      const batch = queue.splice(0, max);
      room?.();
      room = undefined;
      await o.onBatch(batch);
    }
  } finally {
    o.signal.removeEventListener('abort', stop);
    if (!ended) stop();
    await reader.catch(() => undefined);
  }
  if (failure !== undefined) throw failure;
}

export interface RangeOptions {
  stream: string;
  /** One subject filter (wildcards allowed). */
  subject: string;
  /** First and last sequence to read, both included. */
  from: number;
  to: number;
  signal?: AbortSignal;
  onMessage: (m: { seq: number; subject: string; json<T>(): T }) => Promise<void> | void;
}

/** Messages read one request each before a consumer is worth creating. */
const DIRECT_READS = 16;

/**
 * Reads the stored messages of `subject` with sequences in [from, to], in order, then returns: the first
 * few by single gets (the usual short backlog costs no consumer), the rest through `followStream`.
 */
export async function readRange(bus: Bus, o: RangeOptions): Promise<void> {
  let seq = o.from;
  for (let n = 0; n < DIRECT_READS; n++) {
    o.signal?.throwIfAborted();
    const m = await nextStored(bus, o.stream, o.subject, seq);
    if (!m || m.seq > o.to) return;
    await o.onMessage(m);
    seq = m.seq + 1;
  }
  // Longer: one ordered consumer from the next stored message, so there is always one to wait for.
  const first = await nextStored(bus, o.stream, o.subject, seq);
  if (!first || first.seq > o.to) return;
  const done = new AbortController();
  await followStream(bus, {
    stream: o.stream,
    subject: o.subject,
    fromSeq: first.seq,
    max: 512,
    signal: o.signal ? AbortSignal.any([o.signal, done.signal]) : done.signal,
    onBatch: async (msgs) => {
      for (const m of msgs) {
        if (m.seq > o.to) return done.abort();
        await o.onMessage(m);
        // Nothing more stored for the filter: the range holds no more either.
        if (m.seq >= o.to || m.info.pending === 0) return done.abort();
      }
    },
  });
  o.signal?.throwIfAborted();
}

/** The first stored message of `subject` at or after `seq`, or null. */
function nextStored(bus: Bus, stream: string, subject: string, seq: number) {
  // nats.js types `next_by_subj` for direct gets only; the server (2.9+) takes it in STREAM.MSG.GET too.
  return bus.jsm.streams.getMessage(stream, { seq, next_by_subj: subject } as unknown as MsgRequest);
}
