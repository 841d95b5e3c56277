/**
 * MongoDB persistence of the projection. Writes stay inside what every MongoDB-compatible server does
 * (whole-document replace guarded by `lastSeq` in the filter, bulkWrite; no $max/$push/pipelines, no
 * renameCollection), so the same code runs on MongoDB in production and on the in-memory stand-in in tests.
 *
 * Collections:
 *   projection        one document `{_id: 'jobs', collection, seq, rebuild}`: which collection holds the
 *                     job documents now, the last event sequence folded into it, and the rebuild, if any
 *   jobs, jobs_<n>    one document per job (JobView). A rebuild folds into a fresh `jobs_<n>` beside the
 *                     live one and switches the pointer when it has caught up, so GETs never see a gap.
 */
import { MongoClient, type Collection, type Db } from 'mongodb';
import type { JobEvent } from '@mesh/common';
import { inSpan, SpanKind } from '@mesh/telemetry';
import { applyEvent, type JobView } from './projection.ts';

export interface RebuildState {
  state: 'requested' | 'running' | 'done' | 'failed';
  requestedAt: string;
  startedAt?: string;
  finishedAt?: string;
  /** Jobs restored from their compacted snapshot (their first events had expired from the stream). */
  fromSnapshots?: number;
  /** Events folded so far. */
  events?: number;
  error?: string;
}

export interface ProjectionMeta {
  _id: 'jobs';
  collection: string;
  /** The last JOB_EVENTS sequence folded into `collection`. */
  seq: number;
  rebuild?: RebuildState;
}

export interface SequencedEvent {
  event: JobEvent;
  seq: number;
}

export interface JobQuery {
  state?: JobView['state'];
  /** Task id, video id or object key (substring of the latter two). */
  search?: string;
  limit: number;
  /** Jobs created before this time (ISO), for paging back. */
  before?: string;
}

export interface ProjectionStore {
  get(jobId: string): Promise<JobView | null>;
  /** Recent jobs, newest first. */
  list(q: JobQuery): Promise<JobView[]>;
  /** Waits (briefly) until the job's document has folded the event at `seq`: a client reads its own write. */
  waitFor(jobId: string, seq: number, timeoutMs?: number): Promise<JobView | null>;
  meta(): Promise<ProjectionMeta>;
  /**
   * Folds a batch of events (in stream order). Into the live collection, with `cursor`: the batch follows
   * sequence `from` and ends at `to`, and the cursor moves from one to the other; CursorMovedError when
   * the stored cursor is not at `from` (the projection was lost, or another leader moved it). Into another
   * collection (a rebuild's), with `collection`: no cursor.
   */
  applyBatch(batch: SequencedEvent[], o: { cursor: { from: number; to: number } } | { collection: string }): Promise<JobView[]>;
  /** Asks for a rebuild; false when one is already requested or running. */
  requestRebuild(): Promise<{ accepted: boolean; rebuild: RebuildState }>;
  updateRebuild(patch: Partial<RebuildState>): Promise<void>;
  /** A fresh collection for a rebuild to fold into. */
  newCollection(): Promise<string>;
  /** Writes snapshot documents into `collection` as they are. */
  insertViews(collection: string, views: JobView[]): Promise<void>;
  /** Makes `collection` the live one at cursor `seq`, and drops the old one a little later. */
  switchTo(collection: string, seq: number): Promise<void>;
  close(): Promise<void>;
}

const META_ID = 'jobs' as const;

/** The stored cursor is not where the leader left it: the documents were lost, or another leader folds. */
export class CursorMovedError extends Error {
  override name = 'CursorMovedError';
}
/** Readers look up the live collection at most this often. */
const POINTER_TTL_MS = 1000;

/** Uses the database named in `uri` unless `dbName` is given. */
export async function openProjectionStore(uri: string, dbName?: string): Promise<ProjectionStore> {
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 10_000 });
  await client.connect();
  const db = client.db(dbName);
  const metaColl = db.collection<ProjectionMeta>('projection');
  await metaColl.updateOne({ _id: META_ID }, { $setOnInsert: { collection: 'jobs', seq: 0 } }, { upsert: true });
  await ensureIndexes(db.collection<JobView>('jobs'));

  let pointer = { name: 'jobs', at: 0 };
  const live = async (): Promise<Collection<JobView>> => {
    if (Date.now() - pointer.at > POINTER_TTL_MS) pointer = { name: (await metaColl.findOne({ _id: META_ID }))?.collection ?? 'jobs', at: Date.now() };
    return db.collection<JobView>(pointer.name);
  };
  // Made again if MongoDB lost it (a restart of an in-memory server, a dropped database): the cursor then
  // reads 0, which the leader notices.
  const meta = async (): Promise<ProjectionMeta> =>
    (await metaColl.findOneAndUpdate({ _id: META_ID }, { $setOnInsert: { collection: 'jobs', seq: 0 } }, { upsert: true, returnDocument: 'after' }))!;

  const store: ProjectionStore = {
    get: async (jobId) => (await live()).findOne({ _id: jobId }),
    async list(q) {
      const filter: Record<string, unknown> = {};
      if (q.state) filter['state'] = q.state;
      if (q.before) filter['createdAt'] = { $lt: q.before };
      if (q.search) {
        const text = q.search.trim();
        const pattern = { $regex: text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), $options: 'i' };
        filter['$or'] = [{ _id: text.toLowerCase() }, { videoId: pattern }, { objectKey: pattern }];
      }
      return (await live()).find(filter).sort({ createdAt: -1 }).limit(q.limit).toArray();
    },
    async waitFor(jobId, seq, timeoutMs = 3000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        pointer.at = 0;
        const view = await store.get(jobId);
        if ((view && view.lastSeq >= seq) || Date.now() > deadline) return view;
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    meta,
    applyBatch: (batch, o) =>
      inSpan('mongodb jobs apply', { kind: SpanKind.CLIENT, attributes: { 'db.system.name': 'mongodb', 'db.operation.name': 'bulkWrite', 'mesh.events': batch.length } }, async () => {
        if ('collection' in o) return foldInto(db.collection<JobView>(o.collection), batch);
        const current = await meta();
        if (current.seq !== o.cursor.from) throw new CursorMovedError(`the projection's cursor is at ${current.seq}, not ${o.cursor.from}`);
        const changed = await foldInto(db.collection<JobView>(current.collection), batch);
        const moved = await metaColl.updateOne({ _id: META_ID, seq: o.cursor.from }, { $set: { seq: o.cursor.to } });
        if (moved.matchedCount !== 1) throw new CursorMovedError(`the projection's cursor moved from ${o.cursor.from} meanwhile`);
        return changed;
      }),
    async requestRebuild() {
      const rebuild: RebuildState = { state: 'requested', requestedAt: new Date().toISOString() };
      await meta();
      const res = await metaColl.updateOne({ _id: META_ID, 'rebuild.state': { $nin: ['requested', 'running'] } }, { $set: { rebuild } });
      if (res.modifiedCount === 1) return { accepted: true, rebuild };
      return { accepted: false, rebuild: (await meta()).rebuild! };
    },
    async updateRebuild(patch) {
      const current = (await meta()).rebuild;
      await metaColl.updateOne({ _id: META_ID }, { $set: { rebuild: { ...current!, ...patch } } });
    },
    async newCollection() {
      const name = `jobs_${Date.now()}`;
      await ensureIndexes(db.collection<JobView>(name));
      return name;
    },
    async insertViews(collection, views) {
      if (views.length === 0) return;
      await db.collection<JobView>(collection).bulkWrite(views.map((v) => ({ replaceOne: { filter: { _id: v._id }, replacement: v, upsert: true } })), { ordered: false });
    },
    async switchTo(collection, seq) {
      const old = (await meta()).collection;
      await metaColl.updateOne({ _id: META_ID }, { $set: { collection, seq } });
      pointer = { name: collection, at: Date.now() };
      // Readers may look at the old one for another second: drop it once none can.
      if (old !== collection) setTimeout(() => void db.collection(old).drop().catch(() => undefined), 10 * POINTER_TTL_MS).unref();
    },
    close: () => client.close(),
  };
  return store;
}

async function ensureIndexes(jobs: Collection<JobView>): Promise<void> {
  await jobs.createIndex({ createdAt: -1 });
  await jobs.createIndex({ state: 1, createdAt: -1 });
}

/**
 * Folds the batch's events into their jobs' documents: one read and one bulk write per batch. Events a
 * document has folded already (seq <= lastSeq) change nothing, so a replay is harmless. A write that lost
 * to another writer (a previous leader still finishing) is folded again from what is there.
 */
async function foldInto(jobs: Collection<JobView>, batch: SequencedEvent[]): Promise<JobView[]> {
  const ids = [...new Set(batch.map((b) => b.event.jobId))];
  const changed = new Map<string, JobView>();
  for (let attempt = 0; attempt < 10; attempt++) {
    const current = new Map((await jobs.find({ _id: { $in: ids } }).toArray()).map((d) => [d._id, d]));
    const next = new Map<string, JobView | null>(ids.map((id) => [id, current.get(id) ?? null]));
    for (const { event, seq } of batch) next.set(event.jobId, applyEvent(next.get(event.jobId) ?? null, event, seq));
    const writes = [];
    for (const [id, view] of next) {
      const before = current.get(id);
      if (!view || view === before || (before && before.lastSeq >= view.lastSeq)) continue;
      changed.set(id, view);
      writes.push(before ? { replaceOne: { filter: { _id: id, lastSeq: before.lastSeq }, replacement: view } } : { insertOne: { document: view } });
    }
    if (writes.length === 0) return [...changed.values()];
    try {
      const res = await jobs.bulkWrite(writes, { ordered: false });
      const replaces = writes.length - res.insertedCount;
      if (res.matchedCount === replaces) return [...changed.values()];
    } catch (err) {
      if (!isDuplicateKey(err)) throw err;
    }
  }
  throw new Error('projection update kept conflicting');
}

function isDuplicateKey(err: unknown): boolean {
  return typeof err === 'object' && err !== null && 'code' in err && (err as { code: unknown }).code === 11000;
}
