/**
 * One OpenTelemetry setup for every service. Spans are always made (so logs carry trace ids and NATS
 * headers carry the context); they leave the process only when OTEL_EXPORTER_OTLP_ENDPOINT is set, over
 * OTLP/HTTP, protobuf unless OTEL_EXPORTER_OTLP_PROTOCOL=http/json. The standard OTEL_* variables apply.
 *
 * No auto-instrumentation: the spans that matter (HTTP in and out, NATS publish and consume, FFmpeg,
 * S3, MongoDB) are made where the work is, with the job's attributes on them.
 */
import { context, propagation, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Span } from '@opentelemetry/api';
import { OTLPTraceExporter as OtlpJsonExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as OtlpProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { NodeSDK } from '@opentelemetry/sdk-node';
import { BatchSpanProcessor, type SpanProcessor } from '@opentelemetry/sdk-trace';

export { SpanKind, type Attributes, type Context, type Span };

let sdk: NodeSDK | undefined;

const dropSpans: SpanProcessor = {
  onStart: () => undefined,
  onEnd: () => undefined,
  forceFlush: () => Promise.resolve(),
  shutdown: () => Promise.resolve(),
};

/** Starts tracing for `service` (its `service.name`); call once, first thing. Returns whether spans are exported. */
export function startTracing(service: string, env: NodeJS.ProcessEnv = process.env): boolean {
  if (sdk) return Boolean(env['OTEL_EXPORTER_OTLP_ENDPOINT']);
  const exporting = Boolean(env['OTEL_EXPORTER_OTLP_ENDPOINT'] || env['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT']);
  const exporter = exporting ? (env['OTEL_EXPORTER_OTLP_PROTOCOL'] === 'http/json' ? new OtlpJsonExporter() : new OtlpProtoExporter()) : undefined;
  sdk = new NodeSDK({
    resource: resourceFromAttributes({ 'service.name': env['OTEL_SERVICE_NAME'] ?? service }),
    // Without an endpoint, spans are still made (ids for logs and headers) and dropped at the end. The SDK
    // registers no tracer provider at all when given no span processor (every id would be zeros), hence
    // one that drops them.
    spanProcessors: [exporter ? new BatchSpanProcessor({ exporter, scheduledDelayMillis: Number(env['OTEL_BSP_SCHEDULE_DELAY'] ?? 5000) }) : dropSpans],
    instrumentations: [],
    // Metrics are served by /metrics (Prometheus) and logs go to stdout: the SDK exports traces only.
    metricReaders: [],
    logRecordProcessors: [],
  });
  sdk.start();
  return exporting;
}

/** Flushes spans not yet exported; call before the process exits. */
export async function stopTracing(): Promise<void> {
  await sdk?.shutdown().catch(() => undefined);
  sdk = undefined;
}

export const tracer = () => trace.getTracer('video-mesh');

/**
 * Runs `fn` in a new span (child of the active one, or of `parent`), records a thrown error on it, and
 * ends it. The span is active inside `fn`, so tools, S3 calls and log lines there belong to it.
 */
export async function inSpan<T>(name: string, o: { kind?: SpanKind; attributes?: Attributes; parent?: Context }, fn: (span: Span) => Promise<T>): Promise<T> {
  return tracer().startActiveSpan(name, { kind: o.kind ?? SpanKind.INTERNAL, attributes: o.attributes ?? {} }, o.parent ?? context.active(), async (span) => {
    try {
      return await fn(span);
    } catch (err) {
      failSpan(span, err);
      throw err;
    } finally {
      span.end();
    }
  });
}

export function failSpan(span: Span, err: unknown): void {
  span.recordException(err instanceof Error ? err : new Error(String(err)));
  span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
}

/** Marks the active span failed with `err` (for errors that are handled, not thrown on). */
export function recordError(err: unknown): void {
  const span = trace.getActiveSpan();
  if (span) failSpan(span, err);
}

/** Adds attributes to the active span (the work item's), if there is one. */
export function annotate(attributes: Attributes): void {
  trace.getActiveSpan()?.setAttributes(attributes);
}

/** Anything with header get/set, such as nats.js MsgHdrs or a plain record. */
export interface Carrier {
  set(key: string, value: string): void;
  get(key: string): string | null | undefined;
}

/** Writes the active context (W3C traceparent/tracestate) into message headers. */
export function injectContext(headers: Carrier, ctx: Context = context.active()): void {
  propagation.inject(ctx, headers, { set: (h, k, v) => h.set(k, v) });
}

/** The context a message's headers carry (the publisher's span), or the active one when they carry none. */
export function extractContext(headers: Carrier | undefined): Context {
  if (!headers) return context.active();
  return propagation.extract(context.active(), headers, {
    get: (h, k) => h.get(k) || undefined,
    keys: () => ['traceparent', 'tracestate'],
  });
}

/** trace_id and span_id of the active span, for log lines. */
export function traceIds(): { trace_id?: string; span_id?: string } {
  const span = trace.getActiveSpan();
  if (!span) return {};
  const c = span.spanContext();
  return { trace_id: c.traceId, span_id: c.spanId };
}
