/**
 * The last 15 minutes of queue depths, for the dashboard's charts: the API process reads every stage's
 * queue every `intervalMs` (10 s) into a ring buffer of `windowMs`. Each API replica keeps its own, from
 * its start; they read the same queues, so any one of them tells the same story.
 */
import type { QueueDepth } from '@mesh/bus';
import { reasonOf, type Logger } from '@mesh/common';

/** What a chart needs of one stage at one time. */
export type QueuePoint = Pick<QueueDepth, 'consumer' | 'pending' | 'ack_pending' | 'redelivered' | 'waiting' | 'attached'>;

export interface QueueSample {
  at: string;
  queues: QueuePoint[];
}

export interface QueueHistory {
  intervalMs: number;
  windowMs: number;
  /** Oldest first. */
  samples(): QueueSample[];
  /** Takes a sample now (also what the timer does). */
  sample(): Promise<void>;
  stop(): void;
}

export function startQueueHistory(read: () => Promise<QueueDepth[]>, o: { intervalMs: number; windowMs: number; log: Logger; now?: () => number }): QueueHistory {
  const now = o.now ?? Date.now;
  // Both ends of the window: 15 min at 10 s is 91 points.
  const capacity = Math.ceil(o.windowMs / o.intervalMs) + 1;
  const ring: QueueSample[] = [];
  let failing = false;
  const history: QueueHistory = {
    intervalMs: o.intervalMs,
    windowMs: o.windowMs,
    samples: () => ring.filter((s) => now() - Date.parse(s.at) <= o.windowMs),
    async sample() {
      const at = new Date(now()).toISOString();
      try {
        const depths = await read();
        ring.push({ at, queues: depths.map(({ consumer, pending, ack_pending, redelivered, waiting, attached }) => ({ consumer, pending, ack_pending, redelivered, waiting, attached })) });
        if (ring.length > capacity) ring.splice(0, ring.length - capacity);
        failing = false;
      } catch (err) {
        // A gap in the chart says it; one line in the log, not one per tick.
        if (!failing) o.log.warn({ err: reasonOf(err) }, 'queue history: could not read the queues');
        failing = true;
      }
    },
    stop: () => clearInterval(timer),
  };
  const timer = setInterval(() => void history.sample(), o.intervalMs);
  timer.unref();
  void history.sample();
  return history;
}
