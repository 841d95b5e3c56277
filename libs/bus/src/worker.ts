/**
 * The consume loop every stage shares: pull one message, check it, run the handler while telling the
 * server we are still working, then ack; retry failures with backoff; give up after `maxDeliver` tries
 * or on a permanent error, and hand the failure to `onGiveUp` so the job gets a readable reason.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JsMsg } from '@nats-io/jetstream';
import type { z } from 'zod';
import { isPermanent, MeshError, reasonOf, WORK, type Logger, type WorkKind } from '@mesh/common';
import { annotate, extractContext, inFlight, inSpan, recordError, redeliveries, SpanKind, stageDuration, workItems } from '@mesh/telemetry';
import type { Bus } from './connect.ts';
import { ensureConsumer, STREAMS, type StreamName } from './topology.ts';
import { check, type WorkMessage } from './publish.ts';
import { deadLetter } from './dead-letters.ts';

export interface WorkContext {
  log: Logger;
  /** Aborted when the service stops and the deadline passes: kill child processes on it. */
  signal: AbortSignal;
  deliveryCount: number;
  /** A private directory for this message, removed after the handler whatever happens. */
  tmp: string;
}

/** Where a worker reads from: a durable consumer on a stream, and the schema of its messages. */
export interface Source<T> {
  stream: StreamName;
  durable: string;
  subject: string;
  schema: z.ZodType<T>;
  /** The job a message belongs to, for logs. */
  jobIdOf: (message: T) => string;
}

export function workSource<K extends WorkKind>(kind: K): Source<WorkMessage<K>> {
  const { subject, consumer, schema } = WORK[kind];
  return { stream: STREAMS.work.name, durable: consumer, subject, schema: schema as unknown as z.ZodType<WorkMessage<K>>, jobIdOf: (m) => m.job.jobId };
}

export interface WorkerOptions<T> {
  bus: Bus;
  source: Source<T>;
  log: Logger;
  handle: (message: T, ctx: WorkContext) => Promise<void>;
  /** Called once when the message will not be retried: record the failure on the job. */
  onGiveUp: (message: T | undefined, raw: unknown, err: unknown) => Promise<void>;
  /** Messages one process works on at once. */
  concurrency?: number;
  ackWaitMs?: number;
  maxDeliver?: number;
  /** How long stop() lets in-flight work finish before aborting it. */
  drainMs?: number;
}

export interface Worker {
  stop(): Promise<void>;
}

export const DEFAULT_ACK_WAIT_MS = 30_000;
export const DEFAULT_MAX_DELIVER = 5;
/** On SIGTERM, work in flight may finish for this long; then it is stopped and handed back. */
export const DEFAULT_DRAIN_MS = 25_000;

/**
 * One pull waits up to 5 s for a message. nats.js ends a pull after two missed idle heartbeats
 * (nats.js#150) and defaults the heartbeat to half the expiry, so that give-up raced the pull's own end:
 * seen here as "heartbeats missed" and a redelivery counted wrong. Heartbeats every second leave no race.
 */
export const PULL = { expires: 5000, idle_heartbeat: 1000 } as const;

/**
 * Delay before retrying after the n-th delivery (1-based): exponential (2 s, 4 s, 8 s ... capped at a
 * minute) with jitter over its upper half, so retries of many messages failing together spread out.
 */
export function retryDelayMs(deliveryCount: number, random: () => number = Math.random): number {
  const ceiling = Math.min(60_000, 2000 * 2 ** Math.max(0, deliveryCount - 1));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

export async function runWorker<T>(o: WorkerOptions<T>): Promise<Worker> {
  const { subject, durable, schema, stream } = o.source;
  const ackWaitMs = o.ackWaitMs ?? DEFAULT_ACK_WAIT_MS;
  const maxDeliver = o.maxDeliver ?? DEFAULT_MAX_DELIVER;
  const concurrency = o.concurrency ?? 1;
  await ensureConsumer(o.bus.jsm, {
    stream,
    durable,
    filterSubject: subject,
    ackWaitMs,
    // Headroom past our own limit: when recording a failure fails on the last try, the message must
    // still come back so the failure is recorded once NATS or S3 is reachable again.
    maxDeliver: maxDeliver + 3,
    maxAckPending: 1000,
  });
  const consumer = await o.bus.js.consumers.get(stream, durable);
  const abort = new AbortController();
  let stopping = false;
  o.log.info({ durable, subject, concurrency, ackWaitMs, maxDeliver }, 'worker consuming');

  /**
   * Each message is one CONSUMER span, child of the span that published it (its headers carry the
   * context), so a job's trace runs unbroken across the stages. Its outcome is counted for /metrics.
   */
  const processOne = (msg: JsMsg): Promise<void> => {
    const attributes = { 'messaging.system': 'nats', 'messaging.operation.type': 'process', 'messaging.destination.name': msg.subject, 'messaging.consumer.group.name': durable, 'messaging.nats.delivery_count': msg.info.deliveryCount };
    return inSpan(`process ${msg.subject}`, { kind: SpanKind.CONSUMER, parent: extractContext(msg.headers), attributes }, async () => {
      const startedAt = Date.now();
      inFlight.inc({ stage: durable });
      if (msg.info.deliveryCount > 1) redeliveries.inc({ stage: durable });
      let outcome = 'failed';
      try {
        outcome = await handleOne(msg);
      } finally {
        inFlight.dec({ stage: durable });
        workItems.inc({ stage: durable, outcome });
        stageDuration.observe({ stage: durable, outcome }, (Date.now() - startedAt) / 1000);
      }
    });
  };

  /** Runs the handler for one message and settles it; returns the outcome. */
  const handleOne = async (msg: JsMsg): Promise<'done' | 'retry' | 'failed' | 'cancelled' | 'handed_back' | 'parked'> => {
    const deliveryCount = msg.info.deliveryCount;
    let raw: unknown;
    let message: T | undefined;
    const heartbeat = setInterval(() => msg.working(), Math.max(1000, ackWaitMs / 3));
    const startedAt = Date.now();
    let log = o.log.child({ seq: msg.seq, delivery: deliveryCount });
    let tmp: string | undefined;
    try {
      tmp = await mkdtemp(join(tmpdir(), `${durable}-`));
      raw = parseJson(msg.data);
      message = check(schema, raw, msg.subject);
      const jobId = o.source.jobIdOf(message);
      annotate({ 'job.id': jobId });
      log = log.child({ jobId });
      log.info('work started');
      await o.handle(message, { log, signal: abort.signal, deliveryCount, tmp });
      await msg.ackAck();
      log.info({ ms: Date.now() - startedAt }, 'work done');
      return 'done';
    } catch (err) {
      if (err instanceof MeshError && err.code === 'CANCELLED') {
        // The client cancelled the job: nothing failed, nothing to keep.
        log.info({ err: reasonOf(err) }, 'work cancelled');
        msg.term();
        return 'cancelled';
      }
      if (err instanceof MeshError && err.code === 'JOB_FAILED') {
        // The job failed elsewhere meanwhile: not this stage's failure, but the work must not be lost.
        // Kept as a dead letter, so re-driving the job's letters takes it the whole way.
        log.info({ err: reasonOf(err) }, 'work parked: the job has failed');
        await deadLetter(o.bus, msg, { durable, jobId: message ? o.source.jobIdOf(message) : undefined, reason: reasonOf(err) });
        msg.term();
        return 'parked';
      }
      if (abort.signal.aborted) {
        // Stopping: hand the message back at once for another replica; this try does not count against the job.
        log.warn({ err: reasonOf(err) }, 'work interrupted by shutdown; handed back');
        msg.nak();
        return 'handed_back';
      }
      recordError(err);
      const last = isPermanent(err) || deliveryCount >= maxDeliver;
      if (!last) {
        const delay = retryDelayMs(deliveryCount);
        log.warn({ err: reasonOf(err), retryInMs: delay }, 'work failed, will retry');
        msg.nak(delay);
        return 'retry';
      }
      // A permanent failure is usually the input's fault (not a video, too long): worth a warning, not a page.
      if (isPermanent(err)) log.warn({ err: reasonOf(err), permanent: true }, 'work failed, giving up');
      else log.error({ err: reasonOf(err), permanent: false, deliveries: deliveryCount }, 'work failed, giving up');
      try {
        await o.onGiveUp(message, raw, err);
        await deadLetter(o.bus, msg, { durable, jobId: message ? o.source.jobIdOf(message) : undefined, reason: reasonOf(err) });
        // No reason string: nats-server 2.9 ignores term() with a reason and redelivers.
        msg.term();
        return 'failed';
      } catch (giveUpErr) {
        // Recording the failure itself failed (NATS down?): let the message come back and try again.
        log.error({ err: reasonOf(giveUpErr) }, 'could not record failure; message will be redelivered');
        msg.nak(retryDelayMs(deliveryCount));
        return 'retry';
      }
    } finally {
      clearInterval(heartbeat);
      if (tmp) await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    }
  };

  const loop = async (): Promise<void> => {
    while (!stopping) {
      let msg: JsMsg | null;
      try {
        msg = await consumer.next(PULL);
      } catch (err) {
        if (stopping) break;
        o.log.warn({ err: reasonOf(err) }, 'pull failed; retrying');
        await sleep(1000);
        continue;
      }
      if (msg) await processOne(msg);
    }
  };
  const loops = Array.from({ length: concurrency }, () => loop());

  return {
    async stop() {
      stopping = true;
      const drainMs = o.drainMs ?? DEFAULT_DRAIN_MS;
      const timer = setTimeout(() => abort.abort(new Error('service stopping')), drainMs);
      await Promise.allSettled(loops);
      clearTimeout(timer);
    },
  };
}

function parseJson(data: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(data));
  } catch {
    return undefined;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
