/**
 * Streams and consumers, declared once. Every service calls `ensureStream`/`ensureConsumer` for what it
 * uses at start, so services can start in any order. See docs/architecture.md.
 */
import { AckPolicy, DeliverPolicy, RetentionPolicy, StorageType, type ConsumerConfig, type JetStreamManager, type StreamConfig } from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import { EVENTS_SUBJECT_PREFIX } from '@mesh/common';

const DAY_MS = 24 * 3600 * 1000;

export const STREAMS = {
  /** Work items, one subject per stage. Work-queue retention: a message is gone once a stage acks it. */
  work: {
    name: 'WORK',
    subjects: ['work.>'],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    max_age: nanos(7 * DAY_MS),
    duplicate_window: nanos(2 * 60 * 1000),
  },
  /** Every job's history. Kept 30 days: the MongoDB projection is rebuilt from it. */
  events: {
    name: 'JOB_EVENTS',
    subjects: [`${EVENTS_SUBJECT_PREFIX}.>`],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    max_age: nanos(30 * DAY_MS),
    duplicate_window: nanos(2 * 60 * 1000),
  },
  /** Messages given up on, kept for operators to inspect and re-drive: `dead.<consumer>`. */
  deadLetters: {
    name: 'DEAD_LETTERS',
    subjects: ['dead.>'],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    max_age: nanos(30 * DAY_MS),
    duplicate_window: nanos(2 * 60 * 1000),
  },
} satisfies Record<string, Partial<StreamConfig> & { name: string; subjects: string[] }>;

export type StreamName = (typeof STREAMS)[keyof typeof STREAMS]['name'];

export async function ensureStream(jsm: JetStreamManager, config: (typeof STREAMS)[keyof typeof STREAMS]): Promise<void> {
  try {
    await jsm.streams.info(config.name);
    await jsm.streams.update(config.name, config);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    await jsm.streams.add(config);
  }
}

export interface ConsumerSpec {
  stream: StreamName;
  durable: string;
  filterSubject: string;
  /** A crashed worker's message comes back after this long; live workers extend it with working(). */
  ackWaitMs: number;
  maxDeliver: number;
  maxAckPending: number;
}

export function consumerConfig(spec: ConsumerSpec): Partial<ConsumerConfig> & { durable_name: string } {
  return {
    durable_name: spec.durable,
    filter_subject: spec.filterSubject,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(spec.ackWaitMs),
    max_deliver: spec.maxDeliver,
    max_ack_pending: spec.maxAckPending,
  };
}

/** Creates the durable pull consumer, or brings an existing one up to date: replicas share it. */
export async function ensureConsumer(jsm: JetStreamManager, spec: ConsumerSpec): Promise<void> {
  const config = consumerConfig(spec);
  try {
    await jsm.consumers.info(spec.stream, spec.durable);
    const { durable_name: _name, deliver_policy: _deliver, filter_subject: _filter, ...mutable } = config;
    await jsm.consumers.update(spec.stream, spec.durable, mutable);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    try {
      await jsm.consumers.add(spec.stream, config);
    } catch (addErr) {
      // Another replica created it between our info and add.
      if (!String(addErr).includes('already')) throw addErr;
    }
  }
}

function isNotFound(err: unknown): boolean {
  const text = String(err instanceof Error ? `${err.name} ${err.message}` : err).toLowerCase();
  return text.includes('not found') || text.includes('notfound');
}
