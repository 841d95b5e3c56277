/**
 * A stand-in for the backend behind MAIN_API_ENDPOINT: records every request it gets and answers with
 * the status `respond` picks (200 by default), so tests can also play a failing backend.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pollUntil } from './wait.ts';

export interface ReceivedRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
  at: number;
}

export interface WebhookReceiver {
  url: string;
  received: ReceivedRequest[];
  /** Resolves when `predicate` holds for the requests received so far. */
  waitFor(predicate: (all: ReceivedRequest[]) => boolean, timeoutMs?: number): Promise<ReceivedRequest[]>;
  stop(): Promise<void>;
}

/** `respond` picks the status, and may take its time (a slow backend). */
export async function startWebhookReceiver(o: { respond?: (req: ReceivedRequest) => number | Promise<number>; port?: number } = {}): Promise<WebhookReceiver> {
  const received: ReceivedRequest[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        // keep the raw text
      }
      const entry = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, body, at: Date.now() };
      received.push(entry);
      res.statusCode = (await o.respond?.(entry)) ?? 200;
      res.setHeader('content-type', 'application/json');
      res.end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(o.port ?? 0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    received,
    async waitFor(predicate, timeoutMs = 60_000) {
      await pollUntil(() => predicate(received), { timeoutMs, everyMs: 100, describe: () => `webhook got ${JSON.stringify(received.map((r) => r.body))}` });
      return received;
    },
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
