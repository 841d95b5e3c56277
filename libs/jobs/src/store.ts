/**
 * MongoDB persistence of the projection. Writes stay inside what every MongoDB-compatible server does
 * (whole-document replace guarded by `lastSeq` in the filter; no $max/$push/pipelines), so the same code
 * runs on MongoDB in production and on the in-memory stand-in in tests.
 */
import { MongoClient, type Collection } from 'mongodb';
import type { JobEvent } from '@mesh/common';
import { inSpan, SpanKind } from '@mesh/telemetry';
import { applyEvent, type JobView } from './projection.ts';

export interface ProjectionStore {
  get(jobId: string): Promise<JobView | null>;
  /** Applies one event at stream sequence `seq`. Returns false when it was already applied. */
  apply(event: JobEvent, seq: number): Promise<boolean>;
  /** Forgets every job: the projector then rebuilds them from the event stream. */
  drop(): Promise<void>;
  close(): Promise<void>;
}

/** Uses the database named in `uri` unless `dbName` is given. */
export async function openProjectionStore(uri: string, dbName?: string): Promise<ProjectionStore> {
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 10_000 });
  await client.connect();
  const jobs: Collection<JobView> = client.db(dbName).collection<JobView>('jobs');
  return {
    get: (jobId) => jobs.findOne({ _id: jobId }),
    apply: (event, seq) =>
      inSpan('mongodb jobs apply', { kind: SpanKind.CLIENT, attributes: { 'db.system.name': 'mongodb', 'db.collection.name': 'jobs', 'db.operation.name': 'replaceOne', 'job.id': event.jobId, 'job.event': event.type } }, async () => {
      for (let attempt = 0; attempt < 20; attempt++) {
        const current = await jobs.findOne({ _id: event.jobId });
        if (current && current.lastSeq >= seq) return false;
        const next = applyEvent(current, event, seq);
        if (!next) return false;
        if (!current) {
          try {
            await jobs.insertOne(next);
            return true;
          } catch (err) {
            if (isDuplicateKey(err)) continue;
            throw err;
          }
        }
        const res = await jobs.replaceOne({ _id: event.jobId, lastSeq: current.lastSeq }, next);
        if (res.matchedCount === 1) return true;
      }
      throw new Error(`job ${event.jobId}: projection update kept conflicting`);
    }),
    async drop() {
      await jobs.deleteMany({});
    },
    close: () => client.close(),
  };
}

function isDuplicateKey(err: unknown): boolean {
  return typeof err === 'object' && err !== null && 'code' in err && (err as { code: unknown }).code === 11000;
}
