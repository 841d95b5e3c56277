import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '@mesh/common';
import { notifierConfig } from '../src/config.ts';

const key = randomBytes(32);
const good = { MAIN_API_ENDPOINT: 'https://api.example.test/v1', MAIN_API_KEY: 'the-backend-key' };

describe('notifier configuration', () => {
  it('takes an https backend, and no secret unless given', () => {
    expect(notifierConfig(good)).toEqual({ target: { endpoint: 'https://api.example.test/v1', apiKey: 'the-backend-key', timeoutMs: 10_000 }, maxTries: 8, events: [] });
  });

  it.each<[string, string[]]>([
    ['', []],
    ['rendition.ready', ['rendition.ready']],
    [' job.playable , rendition.ready,job.completed,job.failed ', ['job.playable', 'rendition.ready', 'job.completed', 'job.failed']],
    ['job.completed,job.completed', ['job.completed']],
  ])('takes WEBHOOK_EVENTS=%j as %j', (value, events) => {
    expect(notifierConfig({ ...good, WEBHOOK_EVENTS: value }).events).toEqual(events);
  });

  it.each(['1', 'true', 'TRUE'])('takes a plain http backend when WEBHOOK_ALLOW_HTTP=%s', (allow) => {
    expect(notifierConfig({ ...good, MAIN_API_ENDPOINT: 'http://127.0.0.1:8090', WEBHOOK_ALLOW_HTTP: allow }).target.endpoint).toBe('http://127.0.0.1:8090');
  });

  it('reads WEBHOOK_SECRET as the bytes it encodes', () => {
    expect(notifierConfig({ ...good, WEBHOOK_SECRET: `whsec_${key.toString('base64')}` }).target.signingKey).toEqual(key);
  });

  it.each<[string, Record<string, string>, RegExp]>([
    ['http without the switch', { MAIN_API_ENDPOINT: 'http://api.example.test' }, /^MAIN_API_ENDPOINT must use https:.*set WEBHOOK_ALLOW_HTTP=1$/],
    ['http with the switch off', { MAIN_API_ENDPOINT: 'http://api.example.test', WEBHOOK_ALLOW_HTTP: '0' }, /^MAIN_API_ENDPOINT must use https:.*WEBHOOK_ALLOW_HTTP/],
    ['a switch that is neither on nor off', { WEBHOOK_ALLOW_HTTP: 'yes' }, /^WEBHOOK_ALLOW_HTTP must be 1, true, 0 or false, got "yes"$/],
    ['another scheme', { MAIN_API_ENDPOINT: 'ftp://api.example.test', WEBHOOK_ALLOW_HTTP: '1' }, /^MAIN_API_ENDPOINT must use http: or https:/],
    ['credentials in the URL', { MAIN_API_ENDPOINT: 'https://u:p@api.example.test' }, /^MAIN_API_ENDPOINT must not carry a user or password/],
    ['a secret without its prefix', { WEBHOOK_SECRET: key.toString('base64') }, /^WEBHOOK_SECRET must be whsec_.*does not start with whsec_$/],
    ['a secret that is not base64', { WEBHOOK_SECRET: 'whsec_not base64 at all!' }, /^WEBHOOK_SECRET must be whsec_.*not base64$/],
    ['a secret too short', { WEBHOOK_SECRET: `whsec_${randomBytes(16).toString('base64')}` }, /^WEBHOOK_SECRET must be whsec_.*holds 16 bytes$/],
    ['a secret too long', { WEBHOOK_SECRET: `whsec_${randomBytes(65).toString('base64')}` }, /^WEBHOOK_SECRET must be whsec_.*holds 65 bytes$/],
    ['an event that is not one', { WEBHOOK_EVENTS: 'job.completed,job.done' }, /^WEBHOOK_EVENTS: "job.done" is not an event; use a comma-separated list of job.playable, rendition.ready, job.completed, job.failed$/],
    ['an empty item', { WEBHOOK_EVENTS: 'job.completed,,job.failed' }, /^WEBHOOK_EVENTS: "" is not an event/],
    ['an event the mesh has but does not send', { WEBHOOK_EVENTS: 'thumbnail.ready' }, /^WEBHOOK_EVENTS: "thumbnail.ready" is not an event/],
  ])('stops on %s, naming the variable', (_what, env, message) => {
    const err = (() => {
      try {
        notifierConfig({ ...good, ...env });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(message);
    // The secret itself never shows in the error.
    if (env['WEBHOOK_SECRET']) expect((err as Error).message).not.toContain(env['WEBHOOK_SECRET'].slice(6, 20));
  });
});
