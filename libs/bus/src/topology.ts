/**
 * Streams, KV buckets and consumers, declared once. Every service calls `ensureStream`/`ensureConsumer`
 * for what it uses at start, so services can start in any order. See docs/architecture.md. What each
 * service may do with them on NATS is derived from these declarations in permissions.ts.
 */
import { AckPolicy, DeliverPolicy, RetentionPolicy, StorageType, type ConsumerConfig, type JetStreamManager, type StreamConfig } from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import { ConfigError, EVENTS_SUBJECT_PREFIX } from '@mesh/common';
import { retryUnavailable } from './retry.ts';

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
  /**
   * Each job's status as the projector last folded it, one message per job (`views.<jobId>`): the
   * compacted state a rebuild starts from once the job's own events have aged out of JOB_EVENTS.
   */
  views: {
    name: 'JOB_VIEWS',
    subjects: ['views.>'],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    max_msgs_per_subject: 1,
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
export type StreamSpec = Partial<StreamConfig> & { name: string; subjects: string[] };

/** Retention limits operators set (CommonConfig.streams), and the copies JetStream keeps (NATS_REPLICAS). */
export interface StreamLimits {
  replicas: number;
  eventsMaxAgeDays: number;
  eventsMaxBytes: number;
  deadLettersMaxAgeDays: number;
  deadLettersMaxBytes: number;
}

/** The streams as configured: every one on `replicas` nodes; the event and dead-letter streams bounded by age and bytes. */
export function configuredStreams(l: StreamLimits): StreamSpec[] {
  return [
    { ...STREAMS.work, num_replicas: l.replicas },
    { ...STREAMS.events, num_replicas: l.replicas, max_age: nanos(l.eventsMaxAgeDays * DAY_MS), max_bytes: l.eventsMaxBytes },
    { ...STREAMS.views, num_replicas: l.replicas },
    { ...STREAMS.deadLetters, num_replicas: l.replicas, max_age: nanos(l.deadLettersMaxAgeDays * DAY_MS), max_bytes: l.deadLettersMaxBytes },
  ];
}

/** KV buckets (each kept in the stream `KV_<bucket>`, subjects `$KV.<bucket>.<key>`); libs/jobs says what each holds. */
/** The streams every service makes sure of at start (JOB_VIEWS is ingest-api's alone). */
export const SHARED_STREAM_NAMES: string[] = [STREAMS.work.name, STREAMS.events.name, STREAMS.deadLetters.name];

export const BUCKETS = {
  jobState: 'job-state',
  locks: 'job-locks',
  owners: 'output-owners',
  done: 'work-done',
  /** Who leads the projector (ingest-api). */
  leases: 'mesh-leases',
} as const;
export type Bucket = (typeof BUCKETS)[keyof typeof BUCKETS];

/** The stream a KV bucket is kept in. */
export function bucketStream(bucket: Bucket): string {
  return `KV_${bucket}`;
}

/**
 * Brings every existing KV bucket to `replicas` copies (nats-server moves its data to the new peers); a
 * bucket still missing is created with that many by whoever opens it first (openJobStates, openLeases).
 * Like stream settings, only the service that owns the streams (ingest-api) does this.
 */
export async function ensureBucketReplicas(jsm: JetStreamManager, replicas: number): Promise<void> {
  for (const bucket of Object.values(BUCKETS)) {
    const name = bucketStream(bucket);
    let current: number;
    try {
      current = (await retryUnavailable(() => jsm.streams.info(name))).config.num_replicas;
    } catch (err) {
      if (isNotFound(err)) continue;
      throw err;
    }
    if (current !== replicas) await retryUnavailable(() => jsm.streams.update(name, { num_replicas: replicas }));
  }
}

/**
 * Creates the stream if it is missing; `update` also applies these settings to an existing one. Only the
 * service that owns the streams (ingest-api) updates them: the others' NATS users may not, so a
 * compromised stage cannot rewrite a stream's settings (deploy: libs/bus/src/permissions.ts), and services
 * started with other settings never fight over a stream's configuration. On a cluster, making a replicated
 * stream can outlast the request while every service starts at once: it is asked again (retryUnavailable).
 */
export function ensureStream(jsm: JetStreamManager, config: StreamSpec, o: { update?: boolean } = {}): Promise<void> {
  return retryUnavailable(() => applyStream(jsm, config, o.update ?? true));
}

async function applyStream(jsm: JetStreamManager, config: StreamSpec, update: boolean): Promise<void> {
  try {
    await jsm.streams.info(config.name);
    if (update) await jsm.streams.update(config.name, config);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    await jsm.streams.add(config).catch(async (addErr: unknown) => {
      // Another service created it between our info and add.
      if (!String(addErr).includes('already')) throw addErr;
    });
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
  /** The settings a person changes to make replicas agree, for the error when they do not (default ACK_WAIT_MS and MAX_DELIVER). */
  hint?: string;
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

/**
 * Creates the durable pull consumer that the stage's replicas share, or checks an existing one. Its
 * settings are shared, so replicas must agree on them: one that asks for different settings while other
 * replicas are attached refuses to start (ConfigError, exit 78) instead of rewriting them under the
 * others' feet (a shorter ack wait would redeliver their long encodes mid-run). With no replica attached
 * (all stopped for a change), the settings are updated.
 */
export function ensureConsumer(jsm: JetStreamManager, spec: ConsumerSpec): Promise<void> {
  return retryUnavailable(() => applyConsumer(jsm, spec));
}

async function applyConsumer(jsm: JetStreamManager, spec: ConsumerSpec): Promise<void> {
  const config = consumerConfig(spec);
  let info;
  try {
    info = await jsm.consumers.info(spec.stream, spec.durable);
  } catch (err) {
    if (!isNotFound(err)) throw err;
    try {
      await jsm.consumers.add(spec.stream, config);
      return;
    } catch (addErr) {
      // Another replica created it between our info and add: check it like an existing one.
      if (!String(addErr).includes('already')) throw addErr;
      info = await jsm.consumers.info(spec.stream, spec.durable);
    }
  }
  const theirs = { ack_wait: info.config.ack_wait, max_deliver: info.config.max_deliver, max_ack_pending: info.config.max_ack_pending };
  const ours = { ack_wait: config.ack_wait, max_deliver: config.max_deliver, max_ack_pending: config.max_ack_pending };
  if (JSON.stringify(theirs) === JSON.stringify(ours)) return;
  const attached = info.num_waiting > 0 || info.num_ack_pending > 0;
  if (attached) {
    const show = (c: typeof ours) => `ack_wait ${Number(c.ack_wait) / 1e6} ms, max_deliver ${c.max_deliver}, max_ack_pending ${c.max_ack_pending}`;
    throw new ConfigError(
      `consumer ${spec.durable} is shared by running replicas with ${show(theirs)}; this one asks for ${show(ours)}. ` +
        `Give every replica of ${spec.durable} the same ${spec.hint ?? 'ACK_WAIT_MS and MAX_DELIVER'} (to change them, stop every replica first).`,
    );
  }
  const { durable_name: _name, deliver_policy: _deliver, filter_subject: _filter, ...mutable } = config;
  await jsm.consumers.update(spec.stream, spec.durable, mutable);
}

/** The JetStream API's "no such stream or consumer" (10059, 10014), as opposed to NATS being unreachable. */
export function isNotFound(err: unknown): boolean {
  const text = String(err instanceof Error ? `${err.name} ${err.message}` : err).toLowerCase();
  return text.includes('not found') || text.includes('notfound');
}
