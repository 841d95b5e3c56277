/**
 * A small Server-Sent Events client over node:http, for tests and the SSE benchmark: parses the stream as
 * the HTML spec says (fields, comments, multi-line data, `id` kept as the last event id), keeps what came,
 * and can wait for the next event. Lighter than fetch, so a thousand of them fit in one process.
 */
import { request, type IncomingHttpHeaders } from 'node:http';

export interface SseEvent {
  /** `message` unless the server named it. */
  event: string;
  data: string;
  /** The last event id when this event came (what a reconnect sends as Last-Event-ID). */
  lastEventId: string;
}

export interface SseClient {
  status: number;
  headers: IncomingHttpHeaders;
  /** The body, for an answer that is not a stream (4xx, 204). */
  body: string;
  events: SseEvent[];
  /** Comment lines (heartbeats) received. */
  comments: number;
  lastEventId: string;
  /** The next event not yet taken by `next`, waiting up to `timeoutMs`. */
  next(timeoutMs?: number): Promise<SseEvent>;
  /** Resolves when the server ends the stream or the connection drops. */
  ended: Promise<void>;
  /** Drops the connection, as a client that goes away. */
  close(): void;
  /** Stops reading (a slow client: what the server sends piles up), and reads again. */
  pause(): void;
  resume(): void;
}

export interface SseOptions {
  headers?: Record<string, string>;
  onEvent?: (e: SseEvent) => void;
  onComment?: () => void;
  /** false: events go to `onEvent` only, not kept in `events` (a benchmark's thousand streams). */
  keep?: boolean;
}

export function openSse(url: string, o: SseOptions = {}): Promise<SseClient> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { Accept: 'text/event-stream', ...o.headers }, agent: false });
    req.once('error', reject);
    req.once('response', (res) => {
      let taken = 0;
      let waiter: (() => void) | undefined;
      let endedFlag = false;
      const client: SseClient = {
        status: res.statusCode ?? 0,
        headers: res.headers,
        body: '',
        events: [],
        comments: 0,
        lastEventId: o.headers?.['Last-Event-ID'] ?? '',
        async next(timeoutMs = 10_000) {
          const deadline = Date.now() + timeoutMs;
          while (taken >= client.events.length) {
            if (endedFlag) throw new Error(`stream ended after ${client.events.length} events`);
            const left = deadline - Date.now();
            if (left <= 0) throw new Error(`no event within ${timeoutMs} ms (had ${client.events.length})`);
            await new Promise<void>((r) => {
              const timer = setTimeout(r, left);
              waiter = () => {
                clearTimeout(timer);
                r();
              };
            });
          }
          return client.events[taken++]!;
        },
        ended: new Promise<void>((r) => {
          res.once('close', () => {
            endedFlag = true;
            waiter?.();
            r();
          });
        }),
        close: () => req.destroy(),
        pause: () => void res.pause(),
        resume: () => void res.resume(),
      };
      req.removeListener('error', reject);
      req.on('error', () => undefined);
      res.setEncoding('utf8');
      const isStream = String(res.headers['content-type'] ?? '').startsWith('text/event-stream');
      let buffer = '';
      let data: string[] = [];
      let event = '';
      // The id of an event counts once the event is complete: a connection cut mid-event leaves the last one's.
      let idBuffer = client.lastEventId;
      const line = (text: string) => {
        if (text === '') {
          client.lastEventId = idBuffer;
          if (data.length > 0) {
            const e = { event: event || 'message', data: data.join('\n'), lastEventId: client.lastEventId };
            if (o.keep !== false) client.events.push(e);
            o.onEvent?.(e);
            waiter?.();
          }
          data = [];
          event = '';
          return;
        }
        if (text.startsWith(':')) {
          client.comments++;
          o.onComment?.();
          return;
        }
        const colon = text.indexOf(':');
        const field = colon < 0 ? text : text.slice(0, colon);
        const value = colon < 0 ? '' : text.slice(colon + 1).replace(/^ /, '');
        if (field === 'data') data.push(value);
        else if (field === 'event') event = value;
        else if (field === 'id' && !value.includes('\0')) idBuffer = value;
      };
      res.on('data', (chunk: string) => {
        if (!isStream) {
          client.body += chunk;
          return;
        }
        buffer += chunk;
        const lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop()!;
        for (const l of lines) line(l);
      });
      res.on('error', () => undefined);
      if (isStream) resolve(client);
      else res.once('end', () => resolve(client));
    });
    req.end();
  });
}
