/**
 * Dead letters: a message a stage gave up on is copied, with why, to `dead.<consumer>` on the
 * DEAD_LETTERS stream before it is dropped from its own stream. Operators list them and re-drive one
 * to its original subject once the cause is fixed.
 */
import { headers } from '@nats-io/transport-node';
import type { JsMsg } from '@nats-io/jetstream';
import { injectContext } from '@mesh/telemetry';
import type { Bus } from './connect.ts';
import { STREAMS } from './topology.ts';

const H = { subject: 'Mesh-Subject', jobId: 'Mesh-Job-Id', reason: 'Mesh-Reason', deliveries: 'Mesh-Deliveries', consumer: 'Mesh-Consumer' } as const;

export interface DeadLetter {
  seq: number;
  consumer: string;
  /** Where the message came from, and where a re-drive sends it. */
  subject: string;
  jobId: string | null;
  reason: string;
  deliveries: number;
  at: string;
  message: unknown;
}

/** Where a consumer's dead letters go. */
export function deadLetterSubject(durable: string): string {
  return `dead.${durable}`;
}

/** Header values are one line. */
const oneLine = (text: string) => text.replace(/[\r\n]+/g, ' ').slice(0, 2000);

export async function deadLetter(bus: Bus, msg: JsMsg, o: { durable: string; jobId: string | undefined; reason: string }): Promise<void> {
  const h = headers();
  h.set(H.subject, msg.subject);
  h.set(H.consumer, o.durable);
  h.set(H.reason, oneLine(o.reason));
  h.set(H.deliveries, String(msg.info.deliveryCount));
  if (o.jobId) h.set(H.jobId, o.jobId);
  // The failed work's span: the dead letter belongs to the job's trace.
  injectContext(h);
  // One dead letter per original message, however often this is retried.
  await bus.js.publish(deadLetterSubject(o.durable), msg.data, { headers: h, msgID: `dead:${msg.info.stream}:${msg.seq}` });
}

/** The dead letters still kept, oldest first, at most `limit`. */
export async function listDeadLetters(bus: Bus, limit = 100): Promise<DeadLetter[]> {
  const info = await bus.jsm.streams.info(STREAMS.deadLetters.name);
  const out: DeadLetter[] = [];
  if (info.state.messages === 0) return out;
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && out.length < limit; seq++) {
    const letter = await getDeadLetter(bus, seq);
    if (letter) out.push(letter);
  }
  return out;
}

export async function getDeadLetter(bus: Bus, seq: number): Promise<DeadLetter | null> {
  return (await readDeadLetter(bus, seq))?.letter ?? null;
}

async function readDeadLetter(bus: Bus, seq: number): Promise<{ letter: DeadLetter; data: Uint8Array } | null> {
  const stored = await bus.jsm.streams.getMessage(STREAMS.deadLetters.name, { seq }).catch(() => null);
  if (!stored) return null;
  const h = stored.header;
  let message: unknown;
  try {
    message = stored.json();
  } catch {
    message = stored.string();
  }
  const letter: DeadLetter = {
    seq,
    consumer: h.get(H.consumer),
    subject: h.get(H.subject),
    jobId: h.get(H.jobId) || null,
    reason: h.get(H.reason),
    deliveries: Number(h.get(H.deliveries) || 0),
    at: stored.time.toISOString(),
    message,
  };
  return { letter, data: stored.data };
}

/** Sends a dead letter back to its original subject and forgets it. Null when there is no such letter. */
export async function redrive(bus: Bus, seq: number): Promise<DeadLetter | null> {
  const found = await readDeadLetter(bus, seq);
  if (!found) return null;
  // The re-driven work continues the operator's request trace (the API span it runs in).
  const h = headers();
  injectContext(h);
  await bus.js.publish(found.letter.subject, found.data, { msgID: `redrive:${seq}`, headers: h });
  await bus.jsm.streams.deleteMessage(STREAMS.deadLetters.name, seq);
  return found.letter;
}
