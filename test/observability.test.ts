/**
 * One trace per job, across the eight services, exported over OTLP to a receiver kept in the repo;
 * Prometheus metrics on every service; queue depths for scaling from the API.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, makeClip, SERVICES, SPAN_KIND, startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '@mesh/testkit';
import { api, getJob, headers, logLines, putInput, startSystem, submit, waitForState, type System } from './support/harness.ts';

let sys: System;
let otlp: OtlpReceiver;
let dir: string;
let taskId: string;
let trace: ReceivedSpan[];

const metricsOf = async (id: string) => {
  const p = sys.mesh.processes.find((x) => x.id === id)!;
  const res = await fetch(`http://127.0.0.1:${p.metricsPort}/metrics`);
  expect(res.status).toBe(200);
  return res.text();
};
/** The value of the first sample of `name` whose labels include all of `labels`. */
const sample = (text: string, name: string, labels: Record<string, string> = {}) => {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    if (Object.entries(labels).every(([k, v]) => (m[2] ?? '').includes(`${k}="${v}"`))) return Number(m[3]);
  }
  return undefined;
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'observability-'));
  otlp = await startOtlpReceiver();
  sys = await startSystem({
    apiPort: await freePort(),
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_BSP_SCHEDULE_DELAY: '200' },
  });
  const clip = await makeClip(join(dir, 'clip.mp4'), { width: 1280, height: 720, seconds: 4, audio: true });
  await putInput(sys, 'traced/clip.mp4', clip);
  taskId = await submit(sys, { object_key: 'traced/clip.mp4', base_url: 'https://cdn.example.test/t/', video_id: 'traced-1', has_audio: true });
  await waitForState(sys, taskId, ['complete'], 120_000);
  await sys.backend.waitFor((all) => all.some((r) => (r.body as { taskId?: string }).taskId === taskId));
  // The API's request span carries the job id; its trace must come to hold spans from every service,
  // and then stop growing (the last consumers' spans end after their children).
  const root = (await otlp.waitFor((spans) => spans.some((s) => s.kind === SPAN_KIND.server && s.attributes['job.id'] === taskId)))
    .find((s) => s.kind === SPAN_KIND.server && s.attributes['job.id'] === taskId)!;
  await otlp.waitFor((spans) => new Set(spans.filter((s) => s.traceId === root.traceId).map((s) => s.service)).size === SERVICES.length, 30_000);
  let count = -1;
  while (count !== otlp.spans.length) {
    count = otlp.spans.length;
    await new Promise((r) => setTimeout(r, 1500));
  }
  trace = otlp.spans.filter((s) => s.traceId === root.traceId);
}, 180_000);

afterAll(async () => {
  await sys?.stop();
  await otlp?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('one trace per job', () => {
  it('starts at the API request and holds spans from all eight services', () => {
    const root = trace.find((s) => s.parentSpanId === undefined)!;
    expect(root).toMatchObject({ service: 'ingest-api', name: 'POST /video/encoding', kind: SPAN_KIND.server });
    expect(trace.filter((s) => s.parentSpanId === undefined)).toHaveLength(1);
    expect(new Set(trace.map((s) => s.service))).toEqual(new Set(SERVICES));
  });

  it('every span with the job id is in that one trace', () => {
    const withJob = otlp.spans.filter((s) => s.attributes['job.id'] === taskId);
    expect(withJob.length).toBeGreaterThan(20);
    expect(new Set(withJob.map((s) => s.traceId))).toEqual(new Set([trace[0]!.traceId]));
  });

  it('links every NATS hop: each consume span is the child of the publish span of its message', () => {
    const byId = new Map(trace.map((s) => [s.spanId, s]));
    const consumers = trace.filter((s) => s.kind === SPAN_KIND.consumer);
    // download, 2 transcodes, thumbnail, 2 packages, 2 uploads, and the events read by notifier and projector.
    expect(consumers.length).toBeGreaterThan(20);
    for (const c of consumers) {
      const parent = byId.get(c.parentSpanId!);
      expect(parent, `${c.service} ${c.name}`).toBeDefined();
      expect(parent!.kind, `${c.service} ${c.name} <- ${parent!.service} ${parent!.name}`).toBe(SPAN_KIND.producer);
      expect(parent!.attributes['messaging.destination.name']).toBe(c.attributes['messaging.destination.name']);
    }
    const hops = new Set(consumers.map((c) => `${byId.get(c.parentSpanId!)!.service} -> ${c.service}`));
    for (const hop of ['ingest-api -> downloader', 'downloader -> transcoder-720', 'downloader -> transcoder-360', 'downloader -> thumbnailer', 'transcoder-720 -> packager', 'packager -> uploader', 'uploader -> notifier']) {
      expect(hops, hop).toContain(hop);
    }
    // No span points at a parent outside the trace.
    for (const s of trace) if (s.parentSpanId) expect(byId.has(s.parentSpanId), `${s.service} ${s.name}`).toBe(true);
  });

  it('puts FFmpeg under each transcoder stage span, with the rendition, and S3 and MongoDB work in their services', () => {
    const byId = new Map(trace.map((s) => [s.spanId, s]));
    for (const [service, rendition] of [['transcoder-720', '720p'], ['transcoder-360', '360p']] as const) {
      const ffmpeg = trace.filter((s) => s.service === service && s.name === 'ffmpeg');
      expect(ffmpeg, service).toHaveLength(1);
      const stage = byId.get(ffmpeg[0]!.parentSpanId!)!;
      expect(stage).toMatchObject({ service, name: `transcode-${rendition}` });
      expect(stage.attributes).toMatchObject({ 'job.id': taskId, 'video.id': 'traced-1', 'media.rendition': rendition });
      expect(Number(stage.attributes['media.ffmpeg_speed'])).toBeGreaterThan(0);
      expect(byId.get(stage.parentSpanId!)).toMatchObject({ service, kind: SPAN_KIND.consumer });
      // The rendition's upload to S3 is in the stage too, with its size.
      expect(trace.some((s) => s.parentSpanId === stage.spanId && s.name === 's3 PutObject' && Number(s.attributes['mesh.bytes']) > 0)).toBe(true);
    }
    expect(trace.some((s) => s.service === 'downloader' && s.name === 'ffprobe')).toBe(true);
    expect(trace.some((s) => s.service === 'packager' && s.name === 'packager')).toBe(true);
    expect(trace.some((s) => s.service === 'ingest-api' && s.name === 'mongodb jobs apply' && s.kind === SPAN_KIND.client)).toBe(true);
    const webhook = trace.find((s) => s.service === 'notifier' && s.kind === SPAN_KIND.client)!;
    expect(webhook).toMatchObject({ name: 'PUT /video/processing/result', attributes: { 'http.response.status_code': 200 } });
  });

  it('passes the trace on to the backend in the webhook request', () => {
    const call = sys.backend.received.find((r) => (r.body as { taskId?: string }).taskId === taskId)!;
    expect(String(call.headers['traceparent'])).toContain(trace[0]!.traceId);
  });

  it('writes trace_id and span_id on the log lines of a job', () => {
    const line = logLines(sys, 'transcoder-720', { msg: 'running ffmpeg', jobId: taskId })[0]!;
    expect(line['trace_id']).toBe(trace[0]!.traceId);
    expect(trace.some((s) => s.spanId === line['span_id'] && s.name === 'ffmpeg')).toBe(true);
  });
});

describe('metrics', () => {
  it('every service serves Prometheus metrics with its own name', async () => {
    for (const p of sys.mesh.processes) {
      const text = await metricsOf(p.id);
      expect(text, p.id).toContain(`service="${p.name}"`);
      expect(text).toContain('process_resident_memory_bytes');
    }
  });

  it('counts work by outcome, stage durations, FFmpeg speed and bytes moved', async () => {
    const text = await metricsOf('transcoder-720');
    expect(sample(text, 'mesh_work_items_total', { consumer: 'transcoder-720', outcome: 'done' })).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'mesh_stage_duration_seconds_count', { consumer: 'transcoder-720', outcome: 'done' })).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'mesh_ffmpeg_speed_ratio_count', { work: 'transcode-720p' })).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'mesh_s3_bytes_total', { direction: 'upload' })).toBeGreaterThan(100_000);
    expect(sample(text, 'mesh_work_in_flight', { consumer: 'transcoder-720' })).toBe(0);
    const packager = await metricsOf('packager');
    expect(sample(packager, 'mesh_s3_bytes_total', { direction: 'download' })).toBeGreaterThan(100_000);
    expect(sample(packager, 'mesh_s3_bytes_total', { direction: 'upload' })).toBeGreaterThan(100_000);
  });

  it('the API shows queue depths per stage, as JSON and as metrics, that follow the work', async () => {
    // With transcoder-360 down, a new job's 360p waits in its queue: what an autoscaler scales on.
    const t360 = sys.mesh.processes.find((p) => p.id === 'transcoder-360')!;
    await t360.stop();
    const clip = await makeClip(join(dir, 'queued.mp4'), { width: 1280, height: 720, seconds: 2, audio: true });
    await putInput(sys, 'traced/queued.mp4', clip);
    const queued = await submit(sys, { object_key: 'traced/queued.mp4', base_url: 'https://cdn.example.test/q/', video_id: 'queued', has_audio: true });
    await waitForState(sys, queued, ['playable'], 60_000);
    const read = async () => ((await (await api(sys, `/admin/queues`, { headers })).json()) as { queues: { consumer: string; pending: number; ack_pending: number; waiting: number; exists: boolean; attached: boolean; stalled: boolean }[]; dead_letters: number });
    const before = await read();
    // No replica left to take it: stalled, and the job says what it waits for.
    expect(before.queues.find((q) => q.consumer === 'transcoder-360')).toMatchObject({ pending: 1, ack_pending: 0, waiting: 0, attached: false, stalled: true });
    expect((await getJob(sys, queued))['waiting_for']).toEqual([{ stage: 'transcode-360p', service: 'transcoder-360', reason: expect.stringContaining('no transcoder-360 replica is attached') }]);
    // An idle replica keeps a pull request waiting: it shows as attached.
    expect(before.queues.find((q) => q.consumer === 'transcoder-720')).toMatchObject({ pending: 0, exists: true });
    expect(before.queues.find((q) => q.consumer === 'transcoder-720')!.waiting).toBeGreaterThanOrEqual(1);
    const text = await metricsOf('ingest-api');
    expect(sample(text, 'mesh_queue_pending', { consumer: 'transcoder-360' })).toBe(1);
    expect(sample(text, 'mesh_queue_waiting_pulls', { consumer: 'transcoder-360' })).toBe(0);
    expect(sample(text, 'mesh_queue_stalled', { consumer: 'transcoder-360' })).toBe(1);
    expect(sample(text, 'mesh_queue_stalled', { consumer: 'transcoder-720' })).toBe(0);
    expect(sample(text, 'mesh_dead_letters')).toBe(before.dead_letters);

    await sys.mesh.respawn(t360);
    await waitForState(sys, queued, ['complete'], 60_000);
    const after = await read();
    expect(after.queues.find((q) => q.consumer === 'transcoder-360')).toMatchObject({ pending: 0, ack_pending: 0, stalled: false });
  }, 150_000);
});
