/**
 * Queue depths as Prometheus gauges, read from JetStream at each scrape: `mesh_queue_pending{consumer}`
 * and friends. Scale a stage on pending (work waiting) and ack_pending (work held) per replica.
 */
import { Gauge } from 'prom-client';
import type { QueueDepth } from '@mesh/bus';
import { registry } from '@mesh/telemetry';

export function registerQueueMetrics(read: () => Promise<QueueDepth[]>, deadLetters: () => Promise<number>): void {
  // One read per scrape, shared by the four gauges.
  let current: Promise<QueueDepth[]> | undefined;
  const depths = () => (current ??= read().finally(() => setTimeout(() => (current = undefined), 100)));
  const gauge = (name: string, help: string, field: keyof Pick<QueueDepth, 'pending' | 'ack_pending' | 'redelivered' | 'waiting'>) =>
    new Gauge({
      name,
      help,
      labelNames: ['consumer', 'stream'] as const,
      registers: [registry],
      async collect() {
        for (const q of await depths()) this.set({ consumer: q.consumer, stream: q.stream }, q[field]);
      },
    });
  gauge('mesh_queue_pending', 'Messages waiting for a replica of the stage', 'pending');
  gauge('mesh_queue_ack_pending', 'Messages held by replicas of the stage (in progress)', 'ack_pending');
  gauge('mesh_queue_redelivered', 'Messages delivered more than once and not yet acknowledged', 'redelivered');
  gauge('mesh_queue_waiting_pulls', 'Pull requests waiting at the server: idle replicas attached to the stage', 'waiting');
  new Gauge({
    name: 'mesh_dead_letters',
    help: 'Messages kept on the DEAD_LETTERS stream',
    registers: [registry],
    async collect() {
      this.set(await deadLetters());
    },
  });
}
