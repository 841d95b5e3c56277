/**
 * Which parts of a chunked rung are encoded, and who joins them. Each part (video chunk or audio) is a
 * work item any replica of the rung may take; its worker uploads the part, then adds it to the rung's
 * chunk set by compare-and-set. The worker whose addition completes the set is named the joiner in the
 * same write, so exactly one joins, however many finish at once. A joiner killed mid-join gets its
 * message back (it was not acked): its part is in the set already and it is still the joiner, so the
 * redelivery joins without encoding again. Any other part delivered again after it was added (a worker
 * killed between the addition and the ack) finds itself in the set and has nothing left to do.
 *
 * The set lives in the `work-done` bucket beside the done-markers (`<jobId>.<attempt>.chunks.<rung>`):
 * the transcoders may write there (they only read job records), and it expires with them.
 */
import { chunkName, type ChunkRef, type JobSpec, type Rendition } from '@mesh/common';
import { doneKey, updateJson, type JobStates } from './lifecycle.ts';

export interface ChunkSet {
  /** Parts encoded and uploaded: `c0`, `c1`, ..., `audio`. */
  parts: string[];
  /** The part whose worker joins the rung: set by the write that completed the set. */
  joiner?: string;
}

/** Every part a rung of `count` video chunks needs: its chunks, and its audio when it has some. */
export function expectedParts(count: number, audio: boolean): string[] {
  return [...Array.from({ length: count }, (_, index) => chunkName({ part: 'video', index, count })), ...(audio ? ['audio'] : [])];
}

export function isComplete(set: ChunkSet, expected: readonly string[]): boolean {
  return expected.every((p) => set.parts.includes(p));
}

/** `part` is in: the set as it is after, naming the joiner when this addition completed it. */
export function withPart(set: ChunkSet | null, part: string, expected: readonly string[]): ChunkSet {
  const current = set ?? { parts: [] };
  if (current.parts.includes(part)) return current;
  const next: ChunkSet = { ...current, parts: [...current.parts, part].sort(byPart) };
  return isComplete(next, expected) && !next.joiner ? { ...next, joiner: part } : next;
}

/** c0, c1, ..., c10, then audio. */
function byPart(a: string, b: string): number {
  const n = (p: string) => (p === 'audio' ? Infinity : Number(p.slice(1)));
  return n(a) - n(b);
}

export function chunkSetKey(job: Pick<JobSpec, 'jobId' | 'attempt'>, rendition: Rendition): string {
  return doneKey(job, 'chunks', rendition);
}

export async function getChunkSet(states: JobStates, job: Pick<JobSpec, 'jobId' | 'attempt'>, rendition: Rendition): Promise<ChunkSet | null> {
  const entry = await states.done.get(chunkSetKey(job, rendition));
  return entry && entry.operation === 'PUT' ? entry.json<ChunkSet>() : null;
}

/**
 * Records that `chunk` of `rendition` is encoded (its output uploaded); `join` is true for the one worker
 * that must join the rung: the one whose part completed the set.
 */
export async function recordPart(states: JobStates, job: Pick<JobSpec, 'jobId' | 'attempt'>, rendition: Rendition, chunk: ChunkRef, audio: boolean): Promise<{ set: ChunkSet; join: boolean }> {
  const part = chunkName(chunk);
  const expected = expectedParts(chunk.count, audio);
  const { rec } = await updateJson<ChunkSet>(states.done, chunkSetKey(job, rendition), (set) => withPart(set, part, expected));
  return { set: rec, join: isComplete(rec, expected) && rec.joiner === part };
}
