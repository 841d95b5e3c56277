/**
 * Prometheus metrics, served by every service on METRICS_PORT (`GET /metrics`). One registry per
 * process; the names are the same in every service and `service` is a label, so one dashboard covers
 * the mesh.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export const registry = new Registry();

/** Seconds, from a quick S3 call to a long encode. */
const DURATION_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800];
collectDefaultMetrics({ register: registry });

/** Work items a stage finished, by its consumer and outcome: done, retry, failed (given up), parked, cancelled, handed_back. */
export const workItems = new Counter({ name: 'mesh_work_items_total', help: 'Work items handled, by the stage\'s consumer and outcome', labelNames: ['consumer', 'outcome'] as const, registers: [registry] });

export const stageDuration = new Histogram({
  name: 'mesh_stage_duration_seconds',
  help: 'Time a stage spent on one work item, by its consumer and outcome',
  labelNames: ['consumer', 'outcome'] as const,
  buckets: DURATION_BUCKETS,
  registers: [registry],
});

export const inFlight = new Gauge({ name: 'mesh_work_in_flight', help: 'Work items being handled now, by the stage\'s consumer', labelNames: ['consumer'] as const, registers: [registry] });

export const redeliveries = new Counter({ name: 'mesh_redeliveries_total', help: 'Work items received again (a crashed or slow holder, or a retry), by the stage\'s consumer', labelNames: ['consumer'] as const, registers: [registry] });

/** FFmpeg speed: seconds of media encoded per second of wall time (2 = twice realtime). */
export const ffmpegSpeed = new Histogram({
  name: 'mesh_ffmpeg_speed_ratio',
  help: 'FFmpeg speed as a multiple of realtime, by job kind (transcode-720p, transcode-360p, thumbnail)',
  labelNames: ['work'] as const,
  buckets: [0.25, 0.5, 1, 2, 4, 8, 16, 32, 64],
  registers: [registry],
});

export const toolDuration = new Histogram({
  name: 'mesh_tool_duration_seconds',
  help: 'Run time of ffmpeg, ffprobe and Shaka Packager, by tool and result',
  labelNames: ['tool', 'result'] as const,
  buckets: DURATION_BUCKETS,
  registers: [registry],
});

/** Where the projector's time goes, per batch of events: `decode` (parse and check), `store` (MongoDB read and bulk write), `views` (JOB_VIEWS publishes). */
export const projectorBatch = new Histogram({
  name: 'mesh_projector_batch_seconds',
  help: 'Time the projector spent on one batch of job events, by part (decode, store, views)',
  labelNames: ['part'] as const,
  buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  registers: [registry],
});

export const projectorEvents = new Counter({ name: 'mesh_projector_events_total', help: 'Job events folded into the live projection', registers: [registry] });

/** How old the last event the projector folded was when it was folded: its lag behind the event stream. */
export const projectorLag = new Gauge({ name: 'mesh_projector_lag_seconds', help: 'Age of the last job event folded into the projection, when it was folded', registers: [registry] });

/** Job status reads answered from the in-memory view cache (hit) or from MongoDB (miss). */
export const viewCacheReads = new Counter({ name: 'mesh_view_cache_reads_total', help: 'Job status reads, by whether the in-memory view cache had the document (hit) or MongoDB was read (miss)', labelNames: ['result'] as const, registers: [registry] });

export const bytesMoved = new Counter({ name: 'mesh_s3_bytes_total', help: 'Bytes the services moved to and from S3, by direction (download, upload); sources FFmpeg reads in place are not counted', labelNames: ['direction'] as const, registers: [registry] });

/**
 * Serves `/metrics` (and `/healthz`) on `port` (0: any free port). Resolves with the port it listens on.
 * `collect` runs before each scrape, for gauges read on demand (queue depths).
 */
export async function serveMetrics(port: number, host = '0.0.0.0', collect?: () => Promise<void>): Promise<{ port: number; server: Server }> {
  const server = createServer((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (req.url !== '/metrics' || req.method !== 'GET') {
      res.writeHead(404).end();
      return;
    }
    Promise.resolve(collect?.())
      .catch(() => undefined)
      .then(() => registry.metrics())
      .then((text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text))
      .catch((err: unknown) => res.writeHead(500).end(String(err)));
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, host, resolve));
  return { port: (server.address() as AddressInfo).port, server };
}
