/**
 * The API key of the local runtime (`npm start`). A key from the environment is the user's secret and is
 * never printed; without one, a random key is generated on first start into the data directory (readable
 * by its owner only) and reused after, and that one is shown, since it is ours to show.
 */
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface LocalApiKey {
  key: string;
  /** How the key is named to the user: `ApiKey: the APP_API_KEY you set`, or the generated key and where it is kept. */
  shown: string;
  /** The curl header option for printed examples: `-H "ApiKey: $APP_API_KEY"` for a key from the environment. */
  curlHeader: string;
}

export async function localApiKey(env: Record<string, string | undefined>, dataDir: string): Promise<LocalApiKey> {
  const fromEnv = env['APP_API_KEY'];
  if (fromEnv) return { key: fromEnv, shown: 'ApiKey: the APP_API_KEY you set', curlHeader: `-H "ApiKey: $APP_API_KEY"` };
  const file = join(dataDir, 'api-key');
  let key = (await readFile(file, 'utf8').catch(() => '')).trim();
  if (!key) {
    key = randomBytes(32).toString('hex');
    await writeFile(file, `${key}\n`, { mode: 0o600 });
  }
  return { key, shown: `ApiKey: ${key}  (generated on first start, kept in ${file})`, curlHeader: `-H 'ApiKey: ${key}'` };
}
