import { AuthorizationError, connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { ConfigError, reasonOf, type Logger, type NatsAuth } from '@mesh/common';
import { inboxPrefix } from './permissions.ts';

export interface Bus {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  log: Logger;
}

/**
 * Connects and keeps reconnecting forever: a NATS restart must not kill a service.
 * Status changes are logged so a person can see why work paused (a subject the service's NATS user may
 * not use shows as an error naming it). With `auth`, logs in as that user, whose replies come to its own
 * inbox prefix (only it may read them); a refused login is a ConfigError naming the user, never the password.
 */
export async function connectBus(o: { url: string; name: string; log: Logger; auth?: NatsAuth }): Promise<Bus> {
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers: o.url.split(','),
      name: o.name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 1000,
      waitOnFirstConnect: true,
      ...(o.auth ? { user: o.auth.user, pass: o.auth.password, inboxPrefix: inboxPrefix(o.auth.user) } : {}),
    });
  } catch (err) {
    if (err instanceof AuthorizationError) {
      throw new ConfigError(o.auth ? `NATS refused the login of NATS_USER ${o.auth.user}: check NATS_PASSWORD, and that the server has this user` : 'NATS refused the connection: the server wants a login (set NATS_USER and NATS_PASSWORD)');
    }
    throw err;
  }
  o.log.info({ server: nc.getServer(), user: o.auth?.user }, 'connected to NATS');
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect' || s.type === 'reconnect' || s.type === 'error') {
        o.log.warn({ status: s.type, server: 'server' in s ? s.server : undefined, ...(s.type === 'error' ? { err: reasonOf(s.error) } : {}) }, 'NATS connection status');
      }
    }
  })();
  return { nc, js: jetstream(nc), jsm: await jetstreamManager(nc), log: o.log };
}

export async function closeBus(bus: Bus): Promise<void> {
  if (bus.nc.isClosed()) return;
  await bus.nc.drain().catch(() => bus.nc.close());
}
