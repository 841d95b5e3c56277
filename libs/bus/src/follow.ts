/**
 * Reads a stream in order, from a sequence, in batches: an ordered consumer (no acks, nothing to stall
 * when the reader stops) feeding a small bounded queue, handed to `onBatch` one batch at a time with
 * whatever has arrived meanwhile. Used by the projector (and its rebuild) and by the live progress streams.
 */
import { DeliverPolicy, type JsMsg } from '@nats-io/jetstream';
import type { Bus } from './connect.ts';

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

export async function followStream(bus: Bus, o: FollowOptions): Promise<void> {
  const max = o.max ?? 256;
  const consumer = await bus.js.consumers.get(o.stream, {
    ...(o.fromSeq > 1 ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: o.fromSeq } : { deliver_policy: DeliverPolicy.All }),
    ...(o.subject ? { filter_subjects: o.subject } : {}),
  });
  const messages = await consumer.consume({ max_messages: Math.max(64, max) });
  const queue: JsMsg[] = [];
  let wake: (() => void) | undefined;
  let room: (() => void) | undefined;
  let ended = false;
  const stop = () => {
    ended = true;
    messages.stop();
    wake?.();
    room?.();
  };
  o.signal.addEventListener('abort', stop, { once: true });
  const reader = (async () => {
    for await (const m of messages) {
      queue.push(m);
      wake?.();
      // Backpressure: the iterator pulls more only as we take them.
      if (queue.length >= 4 * max && !ended) await new Promise<void>((r) => (room = r));
    }
    ended = true;
    wake?.();
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
}
