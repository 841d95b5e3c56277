import { eventSubject, InvalidMessageError, JobEvent, WORK, type NewJobEvent, type WorkKind } from '@mesh/common';
import type { PubAck } from '@nats-io/jetstream';
import type { z } from 'zod';
import type { Bus } from './connect.ts';

export type WorkMessage<K extends WorkKind> = z.infer<(typeof WORK)[K]['schema']>;

/** Checks `value` against `schema`; the error names the first bad field. */
export function check<S extends z.ZodType>(schema: S, value: unknown, where: string): z.infer<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const path = issue && issue.path.length > 0 ? issue.path.join('.') : '(root)';
  throw new InvalidMessageError(where, `${path}: ${issue?.message ?? 'does not match its schema'}`);
}

/**
 * Publishes a work item for a stage. `msgId` makes a repeated publish (a redelivered upstream message)
 * a no-op inside the stream's duplicate window.
 */
export async function publishWork<K extends WorkKind>(bus: Bus, kind: K, message: WorkMessage<K>, msgId: string, subject: string = WORK[kind].subject): Promise<PubAck> {
  const body = check(WORK[kind].schema, message, subject);
  return bus.js.publish(subject, JSON.stringify(body), { msgID: msgId });
}

/** Publishes a job event, stamped now. Events with a natural identity pass `msgId` so repeats are dropped. */
export async function publishEvent(bus: Bus, event: NewJobEvent, msgId?: string): Promise<{ ack: PubAck; event: JobEvent }> {
  const subject = eventSubject(event.jobId);
  const full = check(JobEvent, { ...event, at: new Date().toISOString() }, subject);
  const ack = await bus.js.publish(subject, JSON.stringify(full), msgId ? { msgID: msgId } : {});
  return { ack, event: full };
}
