/**
 * How every service starts and stops: read and check config first (a bad value stops the service with a
 * line naming the variable, exit 78), connect to NATS, make sure the streams exist, start the work, and
 * on SIGTERM/SIGINT stop taking work, let what is in flight finish, close, exit 0. Every service also
 * traces (libs/telemetry) and serves Prometheus metrics on METRICS_PORT.
 */
import { ConfigError, commonConfig, configWarnings, createLogger, EX_CONFIG, reasonOf, type CommonConfig, type Env, type Logger } from '@mesh/common';
import { registry, serveMetrics, startTracing, stopTracing } from '@mesh/telemetry';
import { closeBus, connectBus, type Bus } from './connect.ts';
import { configuredStreams, ensureBucketReplicas, ensureStream, SHARED_STREAM_NAMES } from './topology.ts';

export interface Stoppable {
  stop(): Promise<void>;
}

export interface ServiceOptions<C> {
  name: string;
  config: (env: Env) => C;
  /**
   * The service that owns the streams (ingest-api): applies their settings (limits from its config,
   * NATS_REPLICAS) to existing streams, and keeps JOB_VIEWS. The others only create a stream that is missing.
   */
  ownsStreams?: boolean;
  start: (ctx: { bus: Bus; log: Logger; config: C; common: CommonConfig }) => Promise<Stoppable[]>;
}

export async function runService<C>(o: ServiceOptions<C>): Promise<void> {
  // Tracing first, so everything after runs with a tracer (spans exported if OTEL_EXPORTER_OTLP_ENDPOINT is set).
  const exporting = startTracing(o.name);
  const log = createLogger(o.name);
  let config: C;
  let common: CommonConfig;
  try {
    common = commonConfig(process.env);
    config = o.config(process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    log.fatal(`configuration error: ${err.message}`);
    process.stderr.write(`${o.name}: configuration error: ${err.message}\n`);
    process.exit(EX_CONFIG);
  }
  for (const warning of configWarnings) log.warn(`configuration: ${warning}`);
  let bus: Bus;
  let parts: Stoppable[];
  try {
    bus = await connectBus({ url: common.natsUrl, name: o.name, log, ...(common.natsAuth ? { auth: common.natsAuth } : {}) });
    const streams = configuredStreams({ replicas: common.natsReplicas, ...common.streams }).filter((s) => o.ownsStreams || SHARED_STREAM_NAMES.includes(s.name));
    for (const stream of streams) await ensureStream(bus.jsm, stream, { update: o.ownsStreams ?? false });
    // Consumers follow their stream's replicas (created without their own, the server moves them along).
    if (o.ownsStreams) await ensureBucketReplicas(bus.jsm, common.natsReplicas);
    parts = await o.start({ bus, log, config, common });
  } catch (err) {
    // A setting that only shows it is wrong once connected (a refused NATS login, replicas that disagree on a shared consumer).
    if (!(err instanceof ConfigError)) throw err;
    log.fatal(`configuration error: ${err.message}`);
    process.stderr.write(`${o.name}: configuration error: ${err.message}\n`);
    process.exit(EX_CONFIG);
  }
  registry.setDefaultLabels({ service: o.name });
  const metrics = await serveMetrics(common.metricsPort, common.metricsHost);
  log.info({ metricsPort: metrics.port, tracesExported: exporting }, 'service started');
  // A launcher that started us with an IPC channel (tests, `npm start`) learns we are ready, whatever
  // the log level; the channel must not keep the process alive.
  if (process.send) {
    process.send({ ready: true, metricsPort: metrics.port });
    process.channel?.unref();
  }

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping: finishing work in flight');
    // In order: what takes work stops before what it writes to closes (the API before the projector before MongoDB).
    for (const part of parts) await part.stop().catch((err: unknown) => log.error({ err: reasonOf(err) }, 'error while stopping'));
    await closeBus(bus);
    metrics.server.close();
    await stopTracing();
    log.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}
