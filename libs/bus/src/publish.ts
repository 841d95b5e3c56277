import { eventSubject, InvalidMessageError, JobEvent, WORK, workRoute, type NewJobEvent, type WorkKind } from '@mesh/common';
import type { PubAck } from '@nats-io/jetstream';
import { headers as natsHeaders } from '@nats-io/transport-node';
import { injectContext, inSpan, SpanKind } from '@mesh/telemetry';
import type { z } from 'zod';
import { randomUUID } from 'node:crypto';
import type { Bus } from './connect.ts';
import { retryUnavailable } from './retry.ts';

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
 * Publishes a work item for a stage (a transcode on its rung's subject). `msgId` makes a repeated publish
 * (a redelivered upstream message, or a retry while the stream had no leader: retry.ts) a no-op inside the
 * stream's duplicate window.
 */
export async function publishWork<K extends WorkKind>(bus: Bus, kind: K, message: WorkMessage<K>, msgId: string): Promise<PubAck> {
  const { subject } = workRoute(kind, 'rendition' in message ? message.rendition : undefined);
  const body = check(WORK[kind].schema, message, subject);
  return traced(subject, body.job.jobId, (headers) => retryUnavailable(() => bus.js.publish(subject, JSON.stringify(body), { msgID: msgId, headers })));
}

/**
 * A PRODUCER span around a publish, whose context travels in the message headers (W3C traceparent):
 * the consumer's span becomes its child, so one job is one trace across every service.
 */
function traced(subject: string, jobId: string, publish: (headers: ReturnType<typeof natsHeaders>) => Promise<PubAck>): Promise<PubAck> {
  const attributes = { 'messaging.system': 'nats', 'messaging.operation.type': 'send', 'messaging.destination.name': subject, 'job.id': jobId };
  return inSpan(`publish ${subject}`, { kind: SpanKind.PRODUCER, attributes }, async (span) => {
    const headers = natsHeaders();
    injectContext(headers);
    const ack = await publish(headers);
    span.setAttribute('messaging.nats.stream.sequence', ack.seq);
    return ack;
  });
}

/**
 * Publishes a job event, stamped now. Events with a natural identity pass `msgId` so repeats are dropped;
 * the others get a one-off id, so that retrying this publish (while the stream has no leader) never
 * stores the event twice.
 */
export async function publishEvent(bus: Bus, event: NewJobEvent, msgId?: string): Promise<{ ack: PubAck; event: JobEvent }> {
  const subject = eventSubject(event.jobId, event.type);
  const full = check(JobEvent, { ...event, at: new Date().toISOString() }, subject);
  const msgID = msgId ?? randomUUID();
  const ack = await traced(subject, event.jobId, (headers) => retryUnavailable(() => bus.js.publish(subject, JSON.stringify(full), { msgID, headers })));
  return { ack, event: full };
}
