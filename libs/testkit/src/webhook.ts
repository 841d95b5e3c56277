/**
 * A stand-in for the backend behind MAIN_API_ENDPOINT: records every request it gets and answers with
 * the status `respond` picks (200 by default), so tests can also play a failing or redirecting backend.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pollUntil } from './wait.ts';

export interface ReceivedRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
  /** The body exactly as received (what a signature covers). */
  text: string;
  at: number;
}

export interface WebhookReceiver {
  url: string;
  received: ReceivedRequest[];
  /** Resolves when `predicate` holds for the requests received so far. */
  waitFor(predicate: (all: ReceivedRequest[]) => boolean, timeoutMs?: number): Promise<ReceivedRequest[]>;
  stop(): Promise<void>;
}

/** `respond` picks the status (and headers, e.g. a Location), and may take its time (a slow backend). */
export type Answer = number | { status: number; headers?: Record<string, string> };

export async function startWebhookReceiver(o: { respond?: (req: ReceivedRequest) => Answer | Promise<Answer>; port?: number } = {}): Promise<WebhookReceiver> {
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
      const entry = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, body, text, at: Date.now() };
      received.push(entry);
      const answer = (await o.respond?.(entry)) ?? 200;
      res.statusCode = typeof answer === 'number' ? answer : answer.status;
      res.setHeader('content-type', 'application/json');
      for (const [name, value] of Object.entries(typeof answer === 'number' ? {} : (answer.headers ?? {}))) res.setHeader(name, value);
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
