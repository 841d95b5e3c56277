/** A job's events as stored in JOB_EVENTS, for tests on a real nats-server. */
import type { Bus } from '@mesh/bus';
import { STREAMS } from '@mesh/bus';
import { JobEvent, jobEventsFilter } from '@mesh/common';

export async function eventsOf(bus: Bus, jobId: string): Promise<JobEvent[]> {
  const info = await bus.jsm.streams.info(STREAMS.events.name, { subjects_filter: jobEventsFilter(jobId) });
  const total = Object.values(info.state.subjects ?? {}).reduce((a, b) => a + b, 0);
  const consumer = await bus.js.consumers.get(STREAMS.events.name, { filter_subjects: jobEventsFilter(jobId) });
  const out: JobEvent[] = [];
  while (out.length < total) {
    const m = await consumer.next({ expires: 2000 });
    if (!m) break;
    out.push(JobEvent.parse(m.json()));
  }
  return out;
}
