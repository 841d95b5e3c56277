import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import type { Logger } from '@mesh/common';

export interface Bus {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  log: Logger;
}

/**
 * Connects and keeps reconnecting forever: a NATS restart must not kill a service.
 * Status changes are logged so a person can see why work paused.
 */
export async function connectBus(o: { url: string; name: string; log: Logger }): Promise<Bus> {
  const nc = await connect({
    servers: o.url.split(','),
    name: o.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 1000,
    waitOnFirstConnect: true,
  });
  o.log.info({ server: nc.getServer() }, 'connected to NATS');
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect' || s.type === 'reconnect' || s.type === 'error') {
        o.log.warn({ status: s.type, server: 'server' in s ? s.server : undefined }, 'NATS connection status');
      }
    }
  })();
  return { nc, js: jetstream(nc), jsm: await jetstreamManager(nc), log: o.log };
}

export async function closeBus(bus: Bus): Promise<void> {
  if (bus.nc.isClosed()) return;
  await bus.nc.drain().catch(() => bus.nc.close());
}
