/**
 * The notifier's settings, checked once at start: a bad value stops it naming the variable (exit 78).
 * Neither MAIN_API_KEY nor WEBHOOK_SECRET ever appears in an error: only what is wrong with them.
 */
import { ConfigError, flag, int, optional, str, url, WEBHOOK_EVENTS, type Env, type WebhookEvent } from '@mesh/common';
import type { WebhookTarget } from './webhook.ts';

export interface NotifierConfig {
  target: WebhookTarget;
  maxTries: number;
  /** The opt-in webhook events (WEBHOOK_EVENTS), sent beside the result notification; none by default. */
  events: WebhookEvent[];
}

export function notifierConfig(env: Env): NotifierConfig {
  const secret = optional(env, 'WEBHOOK_SECRET');
  return {
    target: {
      endpoint: backendEndpoint(env),
      apiKey: str(env, 'MAIN_API_KEY'),
      timeoutMs: int(env, 'WEBHOOK_TIMEOUT_MS', 10_000, { min: 100 }),
      ...(secret ? { signingKey: signingKey(secret) } : {}),
    },
    maxTries: int(env, 'WEBHOOK_MAX_TRIES', 8, { min: 1, max: 100 }),
    events: webhookEvents(env),
  };
}

/** WEBHOOK_EVENTS: a comma-separated list of event types; unset or empty, none (the result notification alone). */
function webhookEvents(env: Env): WebhookEvent[] {
  const raw = optional(env, 'WEBHOOK_EVENTS');
  if (!raw) return [];
  const names = raw.split(',').map((n) => n.trim());
  for (const name of names) {
    if (!(WEBHOOK_EVENTS as readonly string[]).includes(name)) throw new ConfigError(`WEBHOOK_EVENTS: ${JSON.stringify(name)} is not an event; use a comma-separated list of ${WEBHOOK_EVENTS.join(', ')}`);
  }
  return [...new Set(names as WebhookEvent[])];
}

/** MAIN_API_ENDPOINT: https, unless WEBHOOK_ALLOW_HTTP allows plain http for a local backend. */
function backendEndpoint(env: Env): string {
  const allowHttp = flag(env, 'WEBHOOK_ALLOW_HTTP');
  const endpoint = url(env, 'MAIN_API_ENDPOINT');
  const parsed = new URL(endpoint);
  // fetch refuses such URLs anyway, and credentials there would reach logs and traces.
  if (parsed.username || parsed.password) {
    throw new ConfigError('MAIN_API_ENDPOINT must not carry a user or password (user:password@host): the backend key goes in MAIN_API_KEY');
  }
  if (parsed.protocol !== 'https:' && !allowHttp) {
    throw new ConfigError('MAIN_API_ENDPOINT must use https: (the ApiKey header travels with every call); for a local backend over plain http set WEBHOOK_ALLOW_HTTP=1');
  }
  return endpoint;
}

/**
 * A Standard Webhooks symmetric secret: `whsec_` and the base64 of 24 to 64 random bytes
 * (https://www.standardwebhooks.com). Returns the bytes HMAC-SHA256 signs with.
 */
export function signingKey(secret: string): Buffer {
  const shape = 'WEBHOOK_SECRET must be whsec_ followed by the base64 of 24 to 64 random bytes (e.g. `echo whsec_$(openssl rand -base64 32)`)';
  if (!secret.startsWith('whsec_')) throw new ConfigError(`${shape}; it does not start with whsec_`);
  const encoded = secret.slice('whsec_'.length);
  // Buffer.from(…, 'base64') skips what is not base64: check the text itself first.
  if (!/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(encoded)) throw new ConfigError(`${shape}; what follows whsec_ is not base64`);
  const key = Buffer.from(encoded, 'base64');
  if (key.length < 24 || key.length > 64) throw new ConfigError(`${shape}; it holds ${key.length} bytes`);
  return key;
}
