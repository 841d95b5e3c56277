/**
 * The projector: a durable consumer on JOB_EVENTS that folds every event into MongoDB. It takes one
 * message at a time (max_ack_pending 1) so events apply in stream order across replicas.
 * Rebuilding = dropping the documents and the consumer; the loop recreates the consumer, which starts
 * again at the first event.
 */
import type { JsMsg } from '@nats-io/jetstream';
import { ensureConsumer, PULL, STREAMS, type Bus } from '@mesh/bus';
import { JobEvent, reasonOf, type Logger } from '@mesh/common';
import { extractContext, inSpan, SpanKind } from '@mesh/telemetry';
import type { ProjectionStore } from './store.ts';

export const PROJECTOR = { stream: STREAMS.events.name, durable: 'projector', filterSubject: `${STREAMS.events.subjects[0]}` } as const;

export interface Projector {
  stop(): Promise<void>;
}

export async function ensureProjectorConsumer(bus: Bus, ackWaitMs = 30_000): Promise<void> {
  await ensureConsumer(bus.jsm, { ...PROJECTOR, ackWaitMs, maxDeliver: -1, maxAckPending: 1 });
}

export async function runProjector(bus: Bus, store: ProjectionStore, log: Logger, o: { ackWaitMs?: number } = {}): Promise<Projector> {
  let stopping = false;
  await ensureProjectorConsumer(bus, o.ackWaitMs);
  const loop = async () => {
    while (!stopping) {
      let msg: JsMsg | null = null;
      try {
        const consumer = await bus.js.consumers.get(PROJECTOR.stream, PROJECTOR.durable);
        while (!stopping) {
          msg = await consumer.next(PULL);
          if (msg) {
            const m = msg;
            const attributes = { 'messaging.system': 'nats', 'messaging.operation.type': 'process', 'messaging.destination.name': m.subject, 'messaging.consumer.group.name': PROJECTOR.durable };
            await inSpan(`process ${m.subject}`, { kind: SpanKind.CONSUMER, parent: extractContext(m.headers), attributes }, () => applyMessage(store, m, log));
          }
        }
      } catch (err) {
        if (stopping) break;
        if (msg) msg.nak(1000);
        log.warn({ err: reasonOf(err) }, 'projector: retrying');
        await sleep(1000);
        // The consumer may have been deleted for a rebuild: recreate it (it starts at the first event).
        await ensureProjectorConsumer(bus, o.ackWaitMs).catch(() => undefined);
      }
    }
  };
  const done = loop();
  return {
    async stop() {
      stopping = true;
      await done;
    },
  };
}

async function applyMessage(store: ProjectionStore, msg: JsMsg, log: Logger): Promise<void> {
  let event: JobEvent;
  try {
    event = JobEvent.parse(msg.json());
  } catch (err) {
    // Not ours to fix and not worth blocking every other job for: log it loudly and move on.
    log.error({ seq: msg.seq, subject: msg.subject, err: reasonOf(err) }, 'projector: invalid event skipped');
    msg.term();
    return;
  }
  await store.apply(event, msg.seq);
  await msg.ackAck();
}

/** Forgets the projection and replays every stored event into it. */
export async function rebuildProjection(bus: Bus, store: ProjectionStore): Promise<void> {
  await store.drop();
  await bus.jsm.consumers.delete(PROJECTOR.stream, PROJECTOR.durable).catch(() => undefined);
  await ensureProjectorConsumer(bus);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
