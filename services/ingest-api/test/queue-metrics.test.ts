/** The queue gauges: one read per scrape, booleans as 0/1, so `mesh_queue_stalled` can be alerted on. */
import { describe, expect, it } from 'vitest';
import type { QueueDepth } from '@mesh/bus';
import { registry } from '@mesh/telemetry';
import { registerQueueMetrics } from '../src/queue-metrics.ts';

const depth = (consumer: string, patch: Partial<QueueDepth>): QueueDepth => ({ consumer, stream: 'WORK', subject: `work.${consumer}`, pending: 0, ack_pending: 0, redelivered: 0, waiting: 0, exists: true, attached: true, stalled: false, last_active: null, ...patch });

describe('queue metrics', () => {
  it('serves depth, attachment and stalls per consumer from one read per scrape', async () => {
    let reads = 0;
    registerQueueMetrics(
      async () => {
        reads++;
        return [depth('transcoder-720', { pending: 2, ack_pending: 1, attached: false, stalled: true }), depth('transcoder-360', { waiting: 1 })];
      },
      async () => 3,
    );
    const text = await registry.metrics();
    const value = (name: string, consumer: string) => Number(new RegExp(`^${name}\\{consumer="${consumer}",stream="WORK"\\} (\\S+)$`, 'm').exec(text)?.[1]);
    expect(value('mesh_queue_pending', 'transcoder-720')).toBe(2);
    expect(value('mesh_queue_ack_pending', 'transcoder-720')).toBe(1);
    expect(value('mesh_queue_stalled', 'transcoder-720')).toBe(1);
    expect(value('mesh_queue_attached', 'transcoder-720')).toBe(0);
    expect(value('mesh_queue_stalled', 'transcoder-360')).toBe(0);
    expect(value('mesh_queue_attached', 'transcoder-360')).toBe(1);
    expect(value('mesh_queue_waiting_pulls', 'transcoder-360')).toBe(1);
    expect(text).toMatch(/^mesh_dead_letters 3$/m);
    expect(reads).toBe(1);
  });
});
