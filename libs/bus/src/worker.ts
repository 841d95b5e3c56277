/**
 * The consume loop every stage shares: pull one message, check it, run the handler while telling the
 * server we are still working, then ack; retry failures with backoff; give up after `maxDeliver` tries or
 * on a permanent error, and hand the failure to `onGiveUp` so the job gets a readable reason.
 *
 * The rules that keep a job from being stuck, lost or doubled (docs/architecture.md, "The consume loop"):
 * - A delivery past `maxDeliver` (every try died before it could answer: SIGKILL, OOM) does not run the
 *   handler again: the failure is recorded at once. The server allows three deliveries more, only to
 *   record that failure when NATS or S3 was down; when even those run out, the server's max-deliveries
 *   advisory triggers the same recording from another replica.
 * - After the handler succeeded, nothing counts as a failure: `onDone` and the ack are retried and logged,
 *   never naked (a redelivery of finished work is skipped by the stage's done-marker).
 * - A message handed back on shutdown is not charged a delivery: it is published again as a new message
 *   and the old one acked, so drains and scale-ins never use up a job's tries.
 * - Recording a failure or parking a message that fails itself naks the message for later; it never ends
 *   the loop or the process.
 */
import type { JsMsg } from '@nats-io/jetstream';
import { headers, type Subscription } from '@nats-io/transport-node';
import type { z } from 'zod';
import { InputError, InvalidMessageError, isPermanent, makeTempDir, MeshError, reasonOf, sleep, sweepStaleTempDirs, WORK, workRoute, type Logger, type WorkKind } from '@mesh/common';
import { annotate, extractContext, inFlight, inSpan, recordError, redeliveries, SpanKind, stageDuration, workItems } from '@mesh/telemetry';
import { rm } from 'node:fs/promises';
import type { Bus } from './connect.ts';
import { ensureConsumer, STREAMS, type StreamName } from './topology.ts';
import { check, type WorkMessage } from './publish.ts';
import { deadLetter } from './dead-letters.ts';
import { retryUnavailable } from './retry.ts';

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
  /**
   * Whether a valid message may be believed on the subject it came on (an event's type must be its
   * subject's, which NATS permissions give to the services allowed to publish it). Default: yes.
   */
  fits?: (message: T, subject: string) => boolean;
}

/** The work of one kind (a transcode: of one rung), from its durable consumer. */
export function workSource<K extends WorkKind>(kind: K, rendition?: string): Source<WorkMessage<K>> {
  const { subject, consumer } = workRoute(kind, rendition);
  return { stream: STREAMS.work.name, durable: consumer, subject, schema: WORK[kind].schema as unknown as z.ZodType<WorkMessage<K>>, jobIdOf: (m) => m.job.jobId };
}

export interface WorkerOptions<T> {
  bus: Bus;
  source: Source<T>;
  log: Logger;
  /** The work. It may answer 'skipped' for a message it had nothing to do for (an event the notifier ignores). */
  handle: (message: T, ctx: WorkContext) => Promise<void | 'skipped'>;
  /**
   * After the handler succeeded, before the ack: record that the work is done (events, done-markers).
   * Retried a few times and logged if it still fails; never turns success into a failure.
   */
  onDone?: (message: T, ctx: WorkContext) => Promise<void>;
  /** Called once when the message will not be retried: record the failure on the job. */
  onGiveUp: (message: T | undefined, raw: unknown, err: unknown) => Promise<void>;
  /** Messages one process works on at once. */
  concurrency?: number;
  ackWaitMs?: number;
  maxDeliver?: number;
  /** How long stop() lets in-flight work finish before aborting it. */
  drainMs?: number;
  /** Delay before the next try after the n-th delivery failed (default retryDelayMs). */
  backoff?: (deliveryCount: number) => number;
  /** The settings a person changes to make replicas agree (default ACK_WAIT_MS and MAX_DELIVER), for the refusal's message. */
  settingsHint?: string;
  /** Chaos testing: the chance of SIGKILLing this process right after a handler succeeded (CHAOS_KILL_AFTER_WORK). */
  chaosKillAfterWork?: number;
}

export interface Worker {
  stop(): Promise<void>;
}

export const DEFAULT_ACK_WAIT_MS = 30_000;
export const DEFAULT_MAX_DELIVER = 5;
/** On SIGTERM, work in flight may finish for this long; then it is stopped and handed back. */
export const DEFAULT_DRAIN_MS = 25_000;
/** Deliveries the server allows past our own limit, used only to record the failure. */
export const GIVE_UP_HEADROOM = 3;

/**
 * One pull waits up to 2 s for a message: a stopping worker waits for its pull in flight (whatever it
 * brings is handed back), so this bounds how long a drain waits on idle lanes, and how soon a lane notices
 * a new cluster leader. nats.js ends a pull after two missed idle heartbeats (nats.js#150) and defaults the
 * heartbeat to half the expiry, so that give-up raced the pull's own end: seen here as "heartbeats missed"
 * and a redelivery counted wrong. Heartbeats at a quarter of the expiry leave no race.
 */
export const PULL = { expires: 2000, idle_heartbeat: 500 } as const;

/** Header on a message handed back at shutdown: how often it was. */
const HANDED_BACK = 'Mesh-Handed-Back';

/**
 * Delay before retrying after the n-th delivery (1-based): exponential (2 s, 4 s, 8 s ... capped at a
 * minute) with jitter over its upper half, so retries of many messages failing together spread out.
 */
export function retryDelayMs(deliveryCount: number, random: () => number = Math.random): number {
  const ceiling = Math.min(60_000, 2000 * 2 ** Math.max(0, deliveryCount - 1));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

type Outcome = 'done' | 'retry' | 'failed' | 'cancelled' | 'handed_back' | 'parked';

export async function runWorker<T>(o: WorkerOptions<T>): Promise<Worker> {
  const { subject, durable, schema, stream } = o.source;
  const maxDeliver = o.maxDeliver ?? DEFAULT_MAX_DELIVER;
  const concurrency = o.concurrency ?? 1;
  const backoff = o.backoff ?? retryDelayMs;
  const swept = sweepStaleTempDirs(durable).length;
  if (swept > 0) o.log.info({ swept }, 'removed scratch directories of a process that died');
  await ensureConsumer(o.bus.jsm, {
    stream,
    durable,
    filterSubject: subject,
    ackWaitMs: o.ackWaitMs ?? DEFAULT_ACK_WAIT_MS,
    // Headroom past our own limit: when recording a failure fails on the last try, the message must
    // still come back so the failure is recorded once NATS or S3 is reachable again.
    maxDeliver: maxDeliver + GIVE_UP_HEADROOM,
    maxAckPending: 1000,
    ...(o.settingsHint ? { hint: o.settingsHint } : {}),
  });
  // Heartbeats follow the consumer's ack wait as the server has it (ensureConsumer made sure it is ours).
  const ackWaitMs = Math.round(((await retryUnavailable(() => o.bus.jsm.consumers.info(stream, durable))).config.ack_wait ?? 0) / 1e6) || (o.ackWaitMs ?? DEFAULT_ACK_WAIT_MS);
  const consumer = await retryUnavailable(() => o.bus.js.consumers.get(stream, durable));
  const abort = new AbortController();
  const pulling = new AbortController();
  o.log.info({ durable, subject, concurrency, ackWaitMs, maxDeliver }, 'worker consuming');

  const parse = (data: Uint8Array): unknown => {
    try {
      return JSON.parse(new TextDecoder().decode(data));
    } catch {
      return undefined;
    }
  };

  /**
   * Settling calls are retried a little, and while NATS is unavailable (a consumer electing a new leader):
   * a blip must not turn finished work into a redelivery.
   */
  const withRetries = async (what: string, log: Logger, fn: () => Promise<unknown>): Promise<boolean> => {
    for (let attempt = 1; ; attempt++) {
      try {
        await retryUnavailable(fn);
        return true;
      } catch (err) {
        if (attempt >= 3) {
          log.error({ err: reasonOf(err), attempt }, `${what} failed`);
          return false;
        }
        await sleep(250 * attempt);
      }
    }
  };

  /** The soak's crash points: right after the work, where a random SIGKILL from outside rarely lands. */
  const chaos = (where: string, log: Logger) => {
    if (!o.chaosKillAfterWork || Math.random() >= o.chaosKillAfterWork / 2) return;
    log.warn({ where }, 'chaos: killing this process');
    process.kill(process.pid, 'SIGKILL');
  };

  /**
   * A message this process cannot work on now goes back to the queue as a new message, so it is not
   * charged a delivery. Only on a work queue: on a stream that keeps its messages (JOB_EVENTS) a copy
   * would be a second event, so the message is naked there.
   */
  const workQueue = stream === STREAMS.work.name;
  const handBack = async (msg: JsMsg, log: Logger): Promise<'handed_back'> => {
    if (!workQueue) {
      msg.nak();
      return 'handed_back';
    }
    try {
      const h = msg.headers ?? headers();
      h.set(HANDED_BACK, String(Number(h.get(HANDED_BACK) || 0) + 1));
      await o.bus.js.publish(msg.subject, msg.data, { headers: h, msgID: `handback:${msg.info.stream}:${msg.seq}` });
      await msg.ackAck();
    } catch (err) {
      // NATS unreachable: the plain way, which counts as a delivery.
      log.warn({ err: reasonOf(err) }, 'hand-back by republishing failed; naked instead');
      msg.nak();
    }
    return 'handed_back';
  };

  /** Records the failure on the job and keeps the message as a dead letter (not input errors: those are the client's). */
  const giveUp = async (msg: JsMsg, message: T | undefined, raw: unknown, err: unknown, log: Logger): Promise<Outcome> => {
    try {
      await o.onGiveUp(message, raw, err);
      if (!(err instanceof InputError)) await deadLetter(o.bus, msg, { durable, jobId: message ? o.source.jobIdOf(message) : undefined, reason: reasonOf(err) });
      // No reason string: nats-server 2.9 ignores term() with a reason and redelivers.
      msg.term();
      return 'failed';
    } catch (giveUpErr) {
      // Recording the failure itself failed (NATS down?): let the message come back and try again.
      log.error({ err: reasonOf(giveUpErr) }, 'could not record failure; message will be redelivered');
      msg.nak(backoff(msg.info.deliveryCount));
      return 'retry';
    }
  };

  /**
   * Each message is one CONSUMER span, child of the span that published it (its headers carry the
   * context), so a job's trace runs unbroken across the stages. Its outcome is counted for /metrics.
   */
  const processOne = (msg: JsMsg): Promise<void> => {
    const attributes = { 'messaging.system': 'nats', 'messaging.operation.type': 'process', 'messaging.destination.name': msg.subject, 'messaging.consumer.group.name': durable, 'messaging.nats.delivery_count': msg.info.deliveryCount };
    return inSpan(`process ${msg.subject}`, { kind: SpanKind.CONSUMER, parent: extractContext(msg.headers), attributes }, async () => {
      const startedAt = Date.now();
      inFlight.inc({ consumer: durable });
      if (msg.info.deliveryCount > 1) redeliveries.inc({ consumer: durable });
      let outcome: Outcome = 'failed';
      try {
        outcome = await handleOne(msg);
      } finally {
        inFlight.dec({ consumer: durable });
        workItems.inc({ consumer: durable, outcome });
        stageDuration.observe({ consumer: durable, outcome }, (Date.now() - startedAt) / 1000);
      }
    });
  };

  /** Runs the handler for one message and settles it; returns the outcome. */
  const handleOne = async (msg: JsMsg): Promise<Outcome> => {
    const deliveryCount = msg.info.deliveryCount;
    let log = o.log.child({ seq: msg.seq, delivery: deliveryCount });
    // The pull was in flight when stop() came: this process takes no more work.
    if (pulling.signal.aborted) return handBack(msg, log);
    const raw = parse(msg.data);
    let message: T;
    try {
      message = check(schema, raw, msg.subject);
      if (o.source.fits && !o.source.fits(message, msg.subject)) throw new InvalidMessageError(msg.subject, 'the message does not belong on this subject');
    } catch (err) {
      log.warn({ err: reasonOf(err) }, 'invalid message, giving up');
      return giveUp(msg, undefined, raw, err, log);
    }
    const jobId = o.source.jobIdOf(message);
    annotate({ 'job.id': jobId });
    log = log.child({ jobId });
    if (deliveryCount > maxDeliver) {
      // Every try so far ended without an answer (the worker was killed, or ran out of memory): running the
      // handler again would only repeat that.
      const err = new MeshError('RETRIES_EXHAUSTED', `gave up after ${deliveryCount - 1} tries that never finished (the worker stopped each time: killed or out of memory?)`, { permanent: true });
      log.error({ err: reasonOf(err) }, 'work failed, giving up');
      return giveUp(msg, message, raw, err, log);
    }

    const heartbeat = setInterval(() => msg.working(), Math.max(1000, ackWaitMs / 3));
    const startedAt = Date.now();
    let tmp: string | undefined;
    try {
      tmp = await makeTempDir(durable);
      log.info('work started');
      const ctx: WorkContext = { log, signal: abort.signal, deliveryCount, tmp };
      let result: void | 'skipped';
      try {
        result = await o.handle(message, ctx);
      } catch (err) {
        return await failed(msg, message, raw, err, log);
      }
      // Done: from here on nothing is a failure of the work.
      const worked = result !== 'skipped';
      if (worked) chaos('before recording it done', log);
      if (o.onDone) await withRetries('recording the finished work', log, () => o.onDone!(message, ctx));
      if (worked) chaos('before the ack', log);
      await withRetries('ack', log, () => msg.ackAck());
      log.info({ ms: Date.now() - startedAt }, 'work done');
      return 'done';
    } finally {
      clearInterval(heartbeat);
      if (tmp) await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    }
  };

  const failed = async (msg: JsMsg, message: T, raw: unknown, err: unknown, log: Logger): Promise<Outcome> => {
    const deliveryCount = msg.info.deliveryCount;
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
      try {
        await deadLetter(o.bus, msg, { durable, jobId: o.source.jobIdOf(message), reason: reasonOf(err) });
        msg.term();
        return 'parked';
      } catch (parkErr) {
        log.error({ err: reasonOf(parkErr) }, 'could not park the message; it will come back');
        msg.nak(backoff(deliveryCount));
        return 'retry';
      }
    }
    if (abort.signal.aborted) {
      // Stopping: hand the message back at once for another replica; this try does not count against the job.
      log.warn({ err: reasonOf(err) }, 'work interrupted by shutdown; handed back');
      return handBack(msg, log);
    }
    recordError(err);
    const last = isPermanent(err) || deliveryCount >= maxDeliver;
    if (!last) {
      const delay = backoff(deliveryCount);
      log.warn({ err: reasonOf(err), retryInMs: delay }, 'work failed, will retry');
      msg.nak(delay);
      return 'retry';
    }
    // A permanent failure is usually the input's fault (not a video, too long): worth a warning, not a page.
    if (isPermanent(err)) log.warn({ err: reasonOf(err), permanent: true }, 'work failed, giving up');
    else log.error({ err: reasonOf(err), permanent: false, deliveries: deliveryCount }, 'work failed, giving up');
    return giveUp(msg, message, raw, err, log);
  };

  /**
   * The server gave up on a message (its deliveries ran out while recording the failure kept failing, or
   * every holder died): one replica of the stage records the failure from the stored copy and removes it.
   */
  const advisories: Subscription = o.bus.nc.subscribe(`$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${stream}.${durable}`, {
    queue: durable,
    callback: (_err, m) => {
      void (async () => {
        const seq = (m.json() as { stream_seq?: number }).stream_seq;
        if (!seq) return;
        const stored = await o.bus.jsm.streams.getMessage(stream, { seq }).catch(() => null);
        if (!stored) return;
        const raw = parse(stored.data);
        const result = schema.safeParse(raw);
        const message = result.success && (!o.source.fits || o.source.fits(result.data, stored.subject)) ? result.data : undefined;
        const err = new MeshError('RETRIES_EXHAUSTED', `gave up after ${maxDeliver + GIVE_UP_HEADROOM} deliveries without an answer`, { permanent: true });
        const log = o.log.child({ seq, ...(message ? { jobId: o.source.jobIdOf(message) } : {}) });
        log.error({ err: err.message }, 'the server gave up on a message; recording the failure');
        await o.onGiveUp(message, raw, err);
        // Off the work queue; a stream that keeps its messages (a job's history) keeps this one too.
        if (workQueue) await o.bus.jsm.streams.deleteMessage(stream, seq);
      })().catch((err: unknown) => o.log.error({ err: reasonOf(err) }, 'could not act on a max-deliveries advisory'));
    },
  });

  const loop = async (): Promise<void> => {
    while (!pulling.signal.aborted) {
      let msg: JsMsg | null;
      try {
        msg = await consumer.next(PULL);
      } catch (err) {
        if (pulling.signal.aborted) break;
        o.log.warn({ err: reasonOf(err) }, 'pull failed; retrying');
        await sleep(1000, pulling.signal).catch(() => undefined);
        continue;
      }
      if (msg) await processOne(msg);
    }
  };
  const loops = Array.from({ length: concurrency }, () => loop());

  return {
    async stop() {
      // Stop pulling first; a pull already in flight hands back what it brings.
      pulling.abort();
      advisories.unsubscribe();
      const drainMs = o.drainMs ?? DEFAULT_DRAIN_MS;
      const timer = setTimeout(() => abort.abort(new Error('service stopping')), drainMs);
      await Promise.allSettled(loops);
      clearTimeout(timer);
    },
  };
}
