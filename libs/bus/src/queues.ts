/**
 * Queue depth per stage, read from JetStream: what an autoscaler (or a person) needs to decide how many
 * replicas of a stage to run. Served by ingest-api as JSON (`GET /admin/queues`) and as metrics.
 */
import { EVENTS_SUBJECT_PREFIX, WORK } from '@mesh/common';
import type { Bus } from './connect.ts';
import { STREAMS } from './topology.ts';

export interface QueueDepth {
  /** The stage's durable consumer, shared by its replicas. */
  consumer: string;
  stream: string;
  subject: string;
  /** Messages waiting for any replica to take them. */
  pending: number;
  /** Messages a replica holds now (being worked on, or a crashed holder's, until ack_wait). */
  ack_pending: number;
  /** Messages delivered more than once and still unacknowledged. */
  redelivered: number;
  /** Pull requests waiting at the server: replicas (or their free slots) attached and idle. */
  waiting: number;
  /** False when the consumer does not exist yet (its stage never started). */
  exists: boolean;
}

export const QUEUES = [
  ...Object.values(WORK).map((w) => ({ stream: STREAMS.work.name, consumer: w.consumer, subject: w.subject })),
  { stream: STREAMS.events.name, consumer: 'notifier', subject: `${EVENTS_SUBJECT_PREFIX}.>` },
  { stream: STREAMS.events.name, consumer: 'projector', subject: `${EVENTS_SUBJECT_PREFIX}.>` },
];

export async function queueDepths(bus: Bus): Promise<QueueDepth[]> {
  return Promise.all(
    QUEUES.map(async (q) => {
      try {
        const info = await bus.jsm.consumers.info(q.stream, q.consumer);
        return { ...q, pending: info.num_pending, ack_pending: info.num_ack_pending, redelivered: info.num_redelivered, waiting: info.num_waiting, exists: true };
      } catch {
        return { ...q, pending: 0, ack_pending: 0, redelivered: 0, waiting: 0, exists: false };
      }
    }),
  );
}

/** Messages kept on the dead-letter stream. */
export async function deadLetterCount(bus: Bus): Promise<number> {
  return (await bus.jsm.streams.info(STREAMS.deadLetters.name)).state.messages;
}
