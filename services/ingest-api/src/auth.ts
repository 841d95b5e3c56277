import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * Compares an offered API key with the expected one in constant time. Both are hashed first so the
 * comparison takes as long whatever the offered key's length.
 */
export function keyMatches(offered: string | undefined, expected: string): boolean {
  if (offered === undefined) return false;
  const a = createHash('sha256').update(offered).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}
