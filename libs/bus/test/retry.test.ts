import { describe, expect, it } from 'vitest';
import { retryDelayMs } from '../src/worker.ts';

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
