import { describe, expect, it } from 'vitest';
import { retryDelayMs } from '../src/worker.ts';
import { isUnavailable, retryUnavailable } from '../src/retry.ts';

describe('retryDelayMs', () => {
  it.each([
    [1, 1000, 2000],
    [2, 2000, 4000],
    [3, 4000, 8000],
    [6, 30_000, 60_000],
    [20, 30_000, 60_000],
  ])('after delivery %i waits between %i and %i ms', (n, low, high) => {
    expect(retryDelayMs(n, () => 0)).toBe(low);
    expect(retryDelayMs(n, () => 1)).toBe(high);
    const d = retryDelayMs(n);
    expect(d).toBeGreaterThanOrEqual(low);
    expect(d).toBeLessThanOrEqual(high);
  });
});

describe('retryUnavailable', () => {
  const named = (name: string, message = name) => Object.assign(new Error(message), { name });

  it.each([
    ['a stream without a leader (nats.js: no responders, "jetstream is not enabled")', named('JetStreamNotEnabled', 'jetstream is not enabled'), true],
    ['a request that timed out', named('TimeoutError', 'timeout'), true],
    ['a request nobody answered', Object.assign(named('RequestError', "no responders: '$JS.ACK.WORK'"), { cause: named('NoResponders') }), true],
    ['JetStream temporarily unavailable (503)', Object.assign(named('JetStreamApiError', 'JetStream system temporarily unavailable'), { status: 503 }), true],
    ['a compare-and-set conflict', Object.assign(named('JetStreamApiError', 'wrong last sequence: 7'), { status: 400 }), false],
    ['a permissions violation', named('PermissionViolationError', 'Permissions Violation for Publish'), false],
    ['a closed connection', named('ClosedConnectionError', 'closed connection'), false],
    ['anything else', new Error('boom'), false],
  ])('%s: retried %s', (_what, err, retried) => {
    expect(isUnavailable(err)).toBe(retried);
  });

  it('tries again while unavailable, and returns what the first success returns', async () => {
    let calls = 0;
    const value = await retryUnavailable(async () => {
      if (++calls < 3) throw named('JetStreamNotEnabled');
      return 'stored';
    });
    expect({ value, calls }).toEqual({ value: 'stored', calls: 3 });
  });

  it('does not retry other errors, and gives up after its time with the last error', async () => {
    let calls = 0;
    await expect(retryUnavailable(async () => (calls++, Promise.reject(new Error('conflict'))))).rejects.toThrow('conflict');
    expect(calls).toBe(1);
    calls = 0;
    // Waits of 200 and 400 ms (jittered down to 150 and 300) fit in 700 ms; the 800 ms one would not.
    await expect(retryUnavailable(async () => (calls++, Promise.reject(named('TimeoutError', 'timeout'))), { withinMs: 700 })).rejects.toThrow('timeout');
    expect(calls).toBeGreaterThanOrEqual(2);
    expect(calls).toBeLessThanOrEqual(3);
  });
});
