/**
 * A task's live progress from GET /video/encoding/{id}/events (Server-Sent Events, parsed by
 * eventsource-parser): each status as it changes, then the end. A connection that drops (the API
 * restarted, a proxy timed out) is opened again with `Last-Event-ID`, so nothing is missed or repeated;
 * the API answers 204 to a resume after the end. An API that cannot be reached at the start is an error
 * at once.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { EventSourceParserStream } from 'eventsource-parser/stream';
import type { Api, LiveMessage, Task, TaskStatusName } from './api.ts';
import { ApiProblemError, networkReason, UnreachableError } from './errors.ts';

export interface FollowOptions {
  signal?: AbortSignal | undefined;
  /** How long to keep trying to get the stream back before giving up (default 60 s). */
  reconnectForMs?: number;
  /** Told each time the stream is lost, with why and the wait before the next try. */
  onReconnect?: (reason: string, delayMs: number) => void;
}

/** The wait before reconnect number `n` (0-based): quick at first, at most 5 s. */
export function reconnectDelay(n: number): number {
  return Math.min(250 * 2 ** n, 5000);
}

/** Every change of the task, then its end (`kind: 'end'`); throws UnreachableError once the API stays away. */
export async function* followTask(api: Api, taskId: string, o: FollowOptions = {}): AsyncGenerator<LiveMessage> {
  const reconnectForMs = o.reconnectForMs ?? 60_000;
  let lastEventId: string | undefined;
  let lostSince: number | undefined;
  let tries = 0;
  let opened = false;
  for (;;) {
    let reason: string;
    try {
      const res = await api.openEvents(taskId, { lastEventId, signal: o.signal });
      opened = true;
      // Resumed after the end: nothing more will come.
      if (res.status === 204 || !res.body) return;
      const events = res.body.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream());
      for await (const ev of events) {
        lostSince = undefined;
        tries = 0;
        if (ev.id) lastEventId = ev.id;
        if (ev.event === 'end') {
          const end = JSON.parse(ev.data) as { seq: number; task_id: string; task_status: TaskStatusName };
          yield { kind: 'end', ...end };
          return;
        }
        if (ev.event === undefined || ev.event === 'message') {
          const data = JSON.parse(ev.data) as { seq: number; task: Task };
          yield { kind: 'status', seq: data.seq, task: data.task };
        }
      }
      reason = 'the API closed the stream';
    } catch (err) {
      if (o.signal?.aborted) throw err;
      // The API answered, and no: an unknown task, a refused key. Trying again would not help; nor
      // when it was never there (a wrong address): only a stream that was open is waited for.
      if ((err instanceof ApiProblemError && err.status < 500) || !opened) throw err;
      reason = err instanceof ApiProblemError || err instanceof UnreachableError ? err.message : networkReason(err);
    }
    lostSince ??= Date.now();
    if (Date.now() - lostSince > reconnectForMs) {
      throw new UnreachableError(`lost the API's live stream of task ${taskId} for ${Math.round(reconnectForMs / 1000)} s (${reason}); the job goes on: follow it again with \`video-mesh watch ${taskId}\``);
    }
    const delay = reconnectDelay(tries++);
    o.onReconnect?.(reason, delay);
    await sleep(delay, undefined, { signal: o.signal });
  }
}
