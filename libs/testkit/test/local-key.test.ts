/** The local runtime's API key: the user's is never shown; ours is generated once, kept private, and shown. */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { localApiKey, tempDir } from '../src/index.ts';

const dirs: { remove(): Promise<void> }[] = [];
afterEach(async () => Promise.all(dirs.splice(0).map((d) => d.remove())));

describe('localApiKey', () => {
  it('uses APP_API_KEY from the environment without ever showing it', async () => {
    const dir = await tempDir('key');
    dirs.push(dir);
    const secret = 'the-users-own-secret-key-0123456789abcdef';
    const k = await localApiKey({ APP_API_KEY: secret }, dir.path);
    expect(k.key).toBe(secret);
    expect(k.shown).toBe('ApiKey: the APP_API_KEY you set');
    expect(`${k.shown} ${k.curlHeader}`).not.toContain(secret);
    await expect(stat(join(dir.path, 'api-key'))).rejects.toThrow();
  });

  it('generates a random key on first start into the data dir (owner only), shows it, and reuses it', async () => {
    const dir = await tempDir('key');
    dirs.push(dir);
    const first = await localApiKey({}, dir.path);
    expect(first.key).toMatch(/^[0-9a-f]{64}$/);
    const file = join(dir.path, 'api-key');
    expect((await readFile(file, 'utf8')).trim()).toBe(first.key);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(first.shown).toBe(`ApiKey: ${first.key}  (generated on first start, kept in ${file})`);
    expect(first.curlHeader).toBe(`-H 'ApiKey: ${first.key}'`);
    expect((await localApiKey({}, dir.path)).key).toBe(first.key);
    const other = await tempDir('key');
    dirs.push(other);
    expect((await localApiKey({}, other.path)).key).not.toBe(first.key);
  });
});
