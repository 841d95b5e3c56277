/**
 * Live job status for any number of listeners in one process, from one JetStream reader: the feed follows
 * JOB_EVENTS with a single ordered consumer (started with the first listener, stopped a little after the
 * last one leaves), folds each event into the job's status with `applyEvent`, and hands the one result to
 * every listener of that job and every listener of all jobs. Nothing is read from MongoDB per event.
 *
 * Every status a listener gets is exactly the job's status after that event (sequence = the event's
 * JOB_EVENTS sequence), so a listener that comes back with the last sequence it saw misses nothing and
 * sees nothing twice:
 *   - joining, a listener registers first (the feed buffers what arrives for it meanwhile), then reads its
 *     own backlog up to where the feed stood (the job's events from the projection document's `lastSeq`,
 *     or from the job's start when it resumes from before the document), then takes the buffer, then the
 *     shared feed; the switch happens in one synchronous step, so no event falls between;
 *   - the feed keeps each followed job's status (exact, from job.created or from such a catch-up), so a
 *     change costs one fold and one serialisation whatever the number of listeners.
 */
import { followStream, readRange, STREAMS, type Bus } from '@mesh/bus';
import { eventFitsSubject, EVENTS_SUBJECT_PREFIX, jobEventsFilter, JobEvent, reasonOf, type Logger } from '@mesh/common';
import { applyEvent, type JobView } from './projection.ts';
import type { ProjectionStore, SequencedEvent } from './store.ts';

/** A job's status right after the event at `seq`. */
export interface LiveUpdate {
  readonly seq: number;
  readonly jobId: string;
  readonly view: JobView;
}

export interface LiveListener {
  /** The next change, in stream order, never twice. Called synchronously: do not wait in it. */
  update(u: LiveUpdate): void;
  /**
   * (All jobs.) Where this listener's changes start: right after `seq`. `reset` says why its resume point
   * could not be honoured (too far back): it missed changes and should reload what it shows.
   */
  start?(seq: number, reset?: string): void;
  /** The feed stops serving this listener (its reader failed, or the listener fell too far behind): reconnect and resume. */
  drop(reason: string): void;
  /** While it sends this listener's backlog, the feed waits on this between changes (a client slower than the stream). */
  whenWritable?(): Promise<void> | undefined;
}

export interface JobWatch {
  /** The job's status when the watch joined the shared feed (after any backlog). */
  view: JobView;
  close(): void;
}

export interface LiveFeed {
  /**
   * Follows one job: its changes after `after` (a JOB_EVENTS sequence the client saw), or, without it, its
   * status now and then its changes. Null for a job the stream does not know.
   */
  watchJob(jobId: string, o: { after?: number | undefined }, listener: LiveListener): Promise<JobWatch | null>;
  /** Follows every job: changes after `after`, or from now. */
  watchAll(o: { after?: number | undefined }, listener: LiveListener): Promise<{ close(): void }>;
  /** Drops every listener and stops reading. */
  stop(): Promise<void>;
}

export interface LiveFeedOptions {
  /** A resume on all jobs from further back than this many events gets a reset instead. */
  maxBacklog?: number;
  /** Events buffered for one listener while it reads its backlog; beyond, it is dropped (and resumes). */
  maxPending?: number;
  /** Job statuses kept for jobs nobody follows one by one. */
  maxJobs?: number;
  /** The reader stops this long after the last listener left. */
  idleStopMs?: number;
}

/** A job has nothing more to say: ended, and no stage still running. A cancel stops stages without a word. */
export function isSettled(view: JobView): boolean {
  if (view.state === 'cancelled') return true;
  if (view.state !== 'complete' && view.state !== 'failed') return false;
  return !Object.values(view.stages).some((s) => s?.state === 'running');
}

type JobReg = { kind: 'job'; jobId: string; listener: LiveListener; live: boolean; pending: SequencedEvent[]; lastSent: number };
type AllReg = { kind: 'all'; listener: LiveListener; live: boolean; pending: LiveUpdate[]; lastSent: number };

const ALL_EVENTS = `${EVENTS_SUBJECT_PREFIX}.>`;

/** Called with each status while a backlog is folded; may ask the fold to wait. */
type Each = (seq: number, view: JobView) => void | Promise<void> | undefined;

export function openLiveFeed(ctx: { bus: Bus; store: ProjectionStore; log: Logger }, o: LiveFeedOptions = {}): LiveFeed {
  const { bus, store, log } = ctx;
  const maxBacklog = o.maxBacklog ?? 10_000;
  const maxPending = o.maxPending ?? 5_000;
  const maxJobs = o.maxJobs ?? 5_000;
  const idleStopMs = o.idleStopMs ?? 5_000;
  const stream = STREAMS.events.name;

  const byJob = new Map<string, Set<JobReg>>();
  const all = new Set<AllReg>();
  /** Exact status of each job the feed follows, least recently changed first. */
  const views = new Map<string, JobView>();
  let reader: { abort: AbortController; done: Promise<void> } | null = null;
  let starting: Promise<void> | null = null;
  /** The sequence of the last event handed to listeners. */
  let position = 0;
  let idleTimer: NodeJS.Timeout | undefined;
  let stopped = false;

  const listeners = () => all.size + [...byJob.values()].reduce((n, s) => n + s.size, 0);

  const decode = (m: { seq: number; subject: string; json<T>(): T }): JobEvent | null => {
    let raw: unknown;
    try {
      raw = m.json();
    } catch {
      raw = undefined;
    }
    const parsed = JobEvent.safeParse(raw);
    // As the projector does: an event's type must be its subject's (what NATS permissions give out).
    if (parsed.success && eventFitsSubject(parsed.data, m.subject)) return parsed.data;
    log.warn({ seq: m.seq, subject: m.subject }, 'live: invalid event skipped');
    return null;
  };

  /** The job's events in [from, to], folded onto `view`; `each` sees every status on the way. */
  async function fold(jobId: string, view: JobView | null, from: number, to: number, each?: Each): Promise<JobView | null> {
    await readRange(bus, {
      stream,
      subject: jobEventsFilter(jobId),
      from,
      to,
      async onMessage(m) {
        const event = decode(m);
        if (!event) return;
        view = applyEvent(view, event, m.seq) ?? view;
        if (view) await each?.(m.seq, view);
      },
    });
    return view;
  }

  /**
   * The job's exact status after every one of its events up to `upTo`, and every status after
   * `exactFrom` on the way. The projection document is the start when it has not gone past `exactFrom`;
   * otherwise the job's history is folded again from its job.created.
   */
  async function statusAt(jobId: string, upTo: number, exactFrom: number, each?: Each): Promise<JobView | null> {
    const doc = await store.get(jobId);
    if (doc && doc.lastSeq <= exactFrom) return fold(jobId, doc, doc.lastSeq + 1, upTo, each);
    const first = doc?.createdSeq ?? 1;
    if (doc && first < (await bus.jsm.streams.info(stream)).state.first_seq) {
      // Its first events have aged out of the stream: the document is the best there is.
      return fold(jobId, doc, doc.lastSeq + 1, upTo, each);
    }
    return fold(jobId, null, first, upTo, each);
  }

  function remember(view: JobView): void {
    views.delete(view._id);
    views.set(view._id, view);
    if (views.size <= maxJobs) return;
    for (const id of views.keys()) {
      if (views.size <= maxJobs) break;
      if (!byJob.has(id)) views.delete(id);
    }
  }

  /** The job's status after event `seq`, when someone needs it. */
  async function statusAfter(seq: number, event: JobEvent): Promise<LiveUpdate | null> {
    const jobId = event.jobId;
    let next: JobView | null;
    const view = views.get(jobId);
    if (view) next = applyEvent(view, event, seq);
    else {
      const followed = [...(byJob.get(jobId) ?? [])].some((r) => r.live);
      if (all.size === 0 && !followed) return null;
      if (event.type === 'job.created') next = applyEvent(null, event, seq);
      else {
        // Up to this event included: the projection document is often exactly there already.
        const loaded = await statusAt(jobId, seq, seq);
        // A listener of this job may have joined meanwhile and left its (equally exact) status before it.
        const joined = views.get(jobId);
        next = joined ? applyEvent(joined, event, seq) : loaded;
      }
    }
    if (!next) return null;
    remember(next);
    return { seq, jobId, view: next };
  }

  function deliver(seq: number, event: JobEvent, update: LiveUpdate | null): void {
    for (const reg of byJob.get(event.jobId) ?? []) {
      if (!reg.live) {
        reg.pending.push({ seq, event });
        if (reg.pending.length > maxPending) drop(reg, 'too many changes arrived while this stream caught up');
      } else if (update && seq > reg.lastSent) {
        reg.lastSent = seq;
        safely(reg, update);
      }
    }
    if (!update) return;
    for (const reg of all) {
      if (!reg.live) {
        reg.pending.push(update);
        if (reg.pending.length > maxPending) drop(reg, 'too many changes arrived while this stream caught up');
      } else if (seq > reg.lastSent) {
        reg.lastSent = seq;
        safely(reg, update);
      }
    }
  }

  function safely(reg: JobReg | AllReg, update: LiveUpdate): void {
    try {
      reg.listener.update(update);
    } catch (err) {
      drop(reg, `listener failed: ${reasonOf(err)}`);
    }
  }

  function drop(reg: JobReg | AllReg, reason: string): void {
    remove(reg);
    try {
      reg.listener.drop(reason);
    } catch {
      // It is gone either way.
    }
  }

  function add(reg: JobReg | AllReg): void {
    clearTimeout(idleTimer);
    if (reg.kind === 'all') all.add(reg);
    else {
      const set = byJob.get(reg.jobId) ?? new Set();
      set.add(reg);
      byJob.set(reg.jobId, set);
    }
  }

  function remove(reg: JobReg | AllReg): void {
    if (reg.kind === 'all') all.delete(reg);
    else {
      const set = byJob.get(reg.jobId);
      set?.delete(reg);
      if (set?.size === 0) byJob.delete(reg.jobId);
    }
    if (listeners() === 0 && reader) {
      clearTimeout(idleTimer);
      idleTimer = setTimeout(() => void halt(), idleStopMs);
      idleTimer.unref();
    }
  }

  /** Starts the one reader of this process, from the end of the stream. */
  function follow(): Promise<void> {
    if (stopped) return Promise.reject(new Error('the server is shutting down'));
    if (reader) return Promise.resolve();
    starting ??= (async () => {
      const from = (await bus.jsm.streams.info(stream)).state.last_seq;
      position = from;
      const abort = new AbortController();
      const done = followStream(bus, {
        stream,
        fromSeq: from + 1,
        signal: abort.signal,
        onBatch: async (msgs) => {
          for (const m of msgs) {
            if (abort.signal.aborted) return;
            const event = decode(m);
            // The fold may wait (a job met for the first time); what follows it is synchronous, so a
            // listener joins either before an event is handed out or after, never in the middle.
            const update = event ? await statusAfter(m.seq, event) : null;
            if (abort.signal.aborted) return;
            if (event) deliver(m.seq, event, update);
            position = m.seq;
          }
        },
      }).then(
        () => undefined,
        (err: unknown) => {
          if (abort.signal.aborted) return;
          log.warn({ err: reasonOf(err) }, 'live: the event reader stopped; listeners are dropped and will resume');
          reader = null;
          dropAll('the server stopped reading job events');
        },
      );
      reader = { abort, done };
      log.debug({ from }, 'live: following job events');
    })().finally(() => {
      starting = null;
    });
    return starting;
  }

  function dropAll(reason: string): void {
    for (const reg of [...all, ...[...byJob.values()].flatMap((s) => [...s])]) drop(reg, reason);
    views.clear();
  }

  async function halt(): Promise<void> {
    const r = reader;
    reader = null;
    views.clear();
    if (!r) return;
    r.abort.abort();
    await r.done;
    log.debug('live: no listeners; stopped following job events');
  }

  /** A resume point past the end of the stream (another deployment's, or made up) resumes nothing. */
  async function resumable(after: number | undefined, at: number): Promise<number | undefined> {
    if (after === undefined || after <= at) return after;
    return after > (await bus.jsm.streams.info(stream)).state.last_seq ? undefined : after;
  }

  const registered = (reg: JobReg | AllReg) => (reg.kind === 'all' ? all.has(reg) : (byJob.get(reg.jobId)?.has(reg) ?? false));

  return {
    async watchJob(jobId, opts, listener) {
      const reg: JobReg = { kind: 'job', jobId, listener, live: false, pending: [], lastSent: 0 };
      add(reg);
      try {
        await follow();
        const at = position;
        const after = await resumable(opts.after, at);
        const send = (seq: number, view: JobView) => {
          if (after === undefined || seq <= after || seq <= reg.lastSent) return;
          reg.lastSent = seq;
          listener.update({ seq, jobId, view });
        };
        let view = await statusAt(jobId, at, after === undefined ? at : Math.min(after, at), (seq, v) => {
          send(seq, v);
          return listener.whenWritable?.();
        });
        if (!view || !registered(reg)) {
          remove(reg);
          return view ? { view, close: () => undefined } : null;
        }
        // From here to `live` nothing waits: the buffer, then the shared feed.
        for (const { seq, event } of reg.pending) {
          view = applyEvent(view, event, seq) ?? view;
          send(seq, view);
        }
        reg.pending = [];
        if (after === undefined) listener.update({ seq: view.lastSeq, jobId, view });
        reg.lastSent = Math.max(reg.lastSent, after ?? 0, view.lastSeq);
        if (!views.has(jobId)) remember(view);
        reg.live = true;
        return { view, close: () => remove(reg) };
      } catch (err) {
        remove(reg);
        throw err;
      }
    },

    async watchAll(opts, listener) {
      const reg: AllReg = { kind: 'all', listener, live: false, pending: [], lastSent: 0 };
      add(reg);
      const startAt = (seq: number, reset?: string) => {
        reg.lastSent = seq;
        listener.start?.(seq, reset);
      };
      try {
        await follow();
        const at = position;
        const after = await resumable(opts.after, at);
        const first = after !== undefined && after < at ? (await bus.jsm.streams.info(stream)).state.first_seq : 0;
        if (after === undefined || after >= at) startAt(after ?? at);
        else if (after + 1 < first) startAt(at, 'the changes after that point are no longer kept; reload');
        else if (at - after > maxBacklog) startAt(at, `more than ${maxBacklog} changes happened since; reload`);
        else {
          startAt(after);
          // This listener's own fold of its backlog: each job's status at the resume point, then forward.
          const mine = new Map<string, JobView | null>();
          await readRange(bus, {
            stream,
            subject: ALL_EVENTS,
            from: after + 1,
            to: at,
            async onMessage(m) {
              const event = decode(m);
              if (!event || !registered(reg)) return;
              const known = mine.has(event.jobId) || event.type === 'job.created';
              const view = known ? applyEvent(mine.get(event.jobId) ?? null, event, m.seq) : await statusAt(event.jobId, m.seq, m.seq);
              mine.set(event.jobId, view);
              if (view && m.seq > reg.lastSent) {
                reg.lastSent = m.seq;
                listener.update({ seq: m.seq, jobId: event.jobId, view });
                await listener.whenWritable?.();
              }
            },
          });
        }
        if (!registered(reg)) return { close: () => undefined };
        for (const update of reg.pending) {
          if (update.seq <= reg.lastSent) continue;
          reg.lastSent = update.seq;
          listener.update(update);
        }
        reg.pending = [];
        reg.live = true;
        return { close: () => remove(reg) };
      } catch (err) {
        remove(reg);
        throw err;
      }
    },

    async stop() {
      stopped = true;
      clearTimeout(idleTimer);
      dropAll('the server is shutting down');
      await halt();
    },
  };
}
