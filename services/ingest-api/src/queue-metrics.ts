/**
 * Queue depths as Prometheus gauges, read from JetStream at each scrape: `mesh_queue_pending{consumer}`
 * and friends. Scale a stage on pending (work waiting) and ack_pending (work held) per replica; alert on
 * `mesh_queue_stalled` (work waiting and no replica attached to do it).
 */
import { Gauge } from 'prom-client';
import { cachedFor, type QueueDepth } from '@mesh/bus';
import { registry } from '@mesh/telemetry';

type Numeric = 'pending' | 'ack_pending' | 'redelivered' | 'waiting' | 'attached' | 'stalled';

export function registerQueueMetrics(read: () => Promise<QueueDepth[]>, deadLetters: () => Promise<number>): void {
  // One read per scrape, shared by the gauges.
  const depths = cachedFor(read, 100);
  const gauge = (name: string, help: string, field: Numeric) =>
    new Gauge({
      name,
      help,
      labelNames: ['consumer', 'stream'] as const,
      registers: [registry],
      async collect() {
        for (const q of await depths()) this.set({ consumer: q.consumer, stream: q.stream }, Number(q[field]));
      },
    });
  gauge('mesh_queue_pending', 'Messages waiting for a replica of the stage', 'pending');
  gauge('mesh_queue_ack_pending', 'Messages held by replicas of the stage (in progress)', 'ack_pending');
  gauge('mesh_queue_redelivered', 'Messages delivered more than once and not yet acknowledged', 'redelivered');
  gauge('mesh_queue_waiting_pulls', 'Pull requests waiting at the server: idle replicas attached to the stage', 'waiting');
  gauge('mesh_queue_attached', '1 while a replica of the stage is attached (pulling, or holding work it reports on)', 'attached');
  gauge('mesh_queue_stalled', '1 while the stage has work waiting (or held by a replica that is gone) and no replica attached', 'stalled');
  new Gauge({
    name: 'mesh_dead_letters',
    help: 'Messages kept on the DEAD_LETTERS stream',
    registers: [registry],
    async collect() {
      this.set(await deadLetters());
    },
  });
}
