/**
 * Live progress over Server-Sent Events (text/event-stream):
 *   GET /video/encoding/{task_id}/events  the task's status now, then each change; ends once it settles
 *   GET /events                           every task's changes, for a dashboard
 * Each change is an event of the default type whose `id` is the JOB_EVENTS sequence and whose data is
 * `LiveStatus` (schemas.ts); a client that reconnects with `Last-Event-ID` gets every change after it, none
 * twice. A comment line every `heartbeatMs` keeps proxies from closing a quiet stream.
 *
 * The routes are registered on the API's router behind its authentication, like every other route: who
 * may listen is decided there, once (the ApiKey header, or the dashboard's session cookie, which is what
 * an EventSource sends: it cannot send headers).
 * Changes come from the process's one LiveFeed (libs/jobs/src/live.ts), never from polling MongoDB.
 */
import type Router from '@koa/router';
import type Koa from 'koa';
import { reasonOf, type Logger, type ObjectRef } from '@mesh/common';
import { isSettled, JobNotFoundError, JobUnavailableError, toApiResponse, type JobView, type LiveFeed, type LiveListener, type LiveUpdate } from '@mesh/jobs';
import { BadRequest } from './request.ts';
import type { LiveEnd, LiveReady, LiveStatus } from './schemas.ts';

export interface LiveDeps {
  feed: LiveFeed;
  /** A comment this often keeps proxies from closing a quiet stream (SSE_HEARTBEAT_MS). */
  heartbeatMs: number;
  /** A client that leaves this much unread is disconnected; it resumes with Last-Event-ID. */
  maxUnreadBytes?: number;
}

const HEADERS = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  'Cache-Control': 'no-cache, no-transform',
  Connection: 'keep-alive',
  // nginx and others buffer responses unless told not to.
  'X-Accel-Buffering': 'no',
};
const HEARTBEAT = Buffer.from(': keep-alive\n\n');
const UNAVAILABLE = 'live changes are unavailable now; try again';
/** Sending a backlog waits for the client above this much unread. */
const BACKLOG_WATERMARK = 64 * 1024;

/** One serialisation per change, whatever the number of streams it goes to. */
const frames = new WeakMap<LiveUpdate, Buffer>();
function statusFrame(u: LiveUpdate, links: Links): Buffer {
  let frame = frames.get(u);
  if (!frame) {
    const data: LiveStatus = { seq: u.seq, task: toApiResponse(u.view, links) };
    // JSON.stringify escapes line breaks, so the data is one line.
    frame = Buffer.from(`id: ${u.seq}\ndata: ${JSON.stringify(data)}\n\n`);
    frames.set(u, frame);
  }
  return frame;
}

function namedFrame(event: string, data: LiveReady | LiveEnd, id?: number): string {
  return `event: ${event}\n${id === undefined ? '' : `id: ${id}\n`}data: ${JSON.stringify(data)}\n\n`;
}

/** The sequence the client saw last; absent when it has none. */
function lastEventId(ctx: Koa.Context): number | undefined {
  const raw = ctx.get('Last-Event-ID').trim();
  if (raw === '') return undefined;
  if (!/^\d{1,15}$/.test(raw)) throw new BadRequest('Last-Event-ID must be the id of an event this API sent (a whole number)', 'Last-Event-ID');
  return Number(raw);
}

/**
 * The response as an event stream, opened (status and headers sent) on the first write, so a request can
 * still be answered otherwise (404, 204, 503) until then.
 */
function eventStream(ctx: Koa.Context, o: { heartbeatMs: number; maxUnreadBytes: number }) {
  const res = ctx.res;
  let opened = false;
  let ended = false;
  let heartbeat: NodeJS.Timeout | undefined;
  let closed!: () => void;
  const done = new Promise<void>((resolve) => (closed = resolve));
  const stop = () => {
    ended = true;
    clearInterval(heartbeat);
  };
  res.once('close', () => {
    stop();
    closed();
  });
  // A write after the end would be an 'error' event, and one nobody listens to ends the process.
  res.on('error', () => undefined);
  const open = () => {
    if (opened || ended) return;
    opened = true;
    ctx.status = 200;
    ctx.respond = false;
    res.writeHead(200, HEADERS);
    res.flushHeaders();
    res.socket?.setNoDelay(true);
    heartbeat = setInterval(() => write(HEARTBEAT), o.heartbeatMs);
    heartbeat.unref();
  };
  const write = (chunk: string | Buffer) => {
    if (ended) return;
    open();
    res.write(chunk);
    // A client that does not read would make us hold every change for it: let it go, it resumes.
    if (res.writableLength > o.maxUnreadBytes) {
      stop();
      res.destroy();
    }
  };
  return {
    open,
    write,
    /** Undefined while the client keeps up; otherwise resolves once it has read what waits (or is gone). */
    whenWritable(): Promise<void> | undefined {
      if (ended || res.writableLength < BACKLOG_WATERMARK) return undefined;
      return new Promise<void>((resolve) => {
        const go = () => {
          res.off('drain', go);
          res.off('close', go);
          resolve();
        };
        res.on('drain', go);
        res.on('close', go);
      });
    },
    get opened() {
      return opened;
    },
    get ended() {
      return ended;
    },
    end() {
      if (ended || !opened) return;
      // Nothing is written after this, whatever the feed still hands over before the connection closes.
      stop();
      res.end();
    },
    /** Resolves when the connection is gone, whoever closed it. */
    done,
  };
}

/** The links a status carries, as GET gives them (app.ts ApiLinks). */
type Links = { thumbnailUrl?: (ref: ObjectRef) => string };

export function registerLiveRoutes(router: Router, live: LiveDeps, getJob: (taskId: string) => Promise<JobView | null>, log: Logger, links: Links = {}): void {
  const options = { heartbeatMs: live.heartbeatMs, maxUnreadBytes: live.maxUnreadBytes ?? 1 << 20 };
  /** The feed could not serve the stream (NATS unreachable): 503 while nothing was sent, else the stream ends (the client resumes). The cause goes to the log only. */
  const unavailable = (stream: ReturnType<typeof eventStream>, err: unknown, fields: Record<string, string>): null => {
    log.warn({ ...fields, err: reasonOf(err) }, 'live: could not follow job events for a stream');
    if (!stream.opened) throw new JobUnavailableError(UNAVAILABLE);
    stream.end();
    return null;
  };

  router.get('/video/encoding/:taskId/events', async (ctx) => {
    const after = lastEventId(ctx);
    const taskId = ctx.params['taskId'] ?? '';
    const job = await getJob(taskId);
    if (!job) throw new JobNotFoundError(`task ${taskId}`);
    const stream = eventStream(ctx, options);
    let joined = false;
    let dropped: string | undefined;
    const settle = (u: { seq: number; view: JobView }) => {
      stream.write(namedFrame('end', { seq: u.seq, task_id: u.view._id, task_status: toApiResponse(u.view).task_status }));
      stream.end();
    };
    const listener: LiveListener = {
      update(u) {
        stream.write(statusFrame(u, links));
        // A backlog may pass through ended states (failed, then retried): only the live status decides.
        if (joined && isSettled(u.view)) settle(u);
      },
      drop(reason) {
        dropped = reason;
        stream.end();
      },
      whenWritable: () => stream.whenWritable(),
    };
    const watch = await live.feed.watchJob(job._id, { after }, listener).catch((err: unknown) => unavailable(stream, err, { jobId: job._id }));
    joined = true;
    if (!watch) {
      if (!stream.opened) throw new JobNotFoundError(`task ${taskId}`);
      return stream.done;
    }
    void stream.done.then(() => watch.close());
    if (dropped !== undefined && !stream.opened) throw new JobUnavailableError(UNAVAILABLE);
    if (isSettled(watch.view)) {
      // Resumed after the end: nothing more will come. 204 tells an EventSource not to reconnect.
      if (!stream.opened) {
        ctx.status = 204;
        return;
      }
      settle({ seq: watch.view.lastSeq, view: watch.view });
    }
    stream.open();
    await stream.done;
  });

  router.get('/events', async (ctx) => {
    const after = lastEventId(ctx);
    const stream = eventStream(ctx, options);
    const listener: LiveListener = {
      start: (seq, reset) => stream.write(namedFrame('ready', reset ? { seq, reset } : { seq }, seq)),
      update: (u) => stream.write(statusFrame(u, links)),
      drop: () => stream.end(),
      whenWritable: () => stream.whenWritable(),
    };
    const watch = await live.feed.watchAll({ after }, listener).catch((err: unknown) => unavailable(stream, err, {}));
    if (watch) void stream.done.then(() => watch.close());
    await stream.done;
  });
}
