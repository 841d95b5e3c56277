/**
 * A chunked rung's bookkeeping: exactly one worker joins, however the parts finish (at once, twice, after a
 * crash); the status shows each part and the rung built from them; the stage events of parts are their own.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeBus, connectBus, ensureStream, publishWork, STREAMS, type Bus, type Worker, type WorkMessage } from '@mesh/bus';
import { createLogger, sleep, type ChunkRef, type JobEvent as Event } from '@mesh/common';
import { eventsOf } from './events.ts';
import { startNats, type NatsServer } from '@mesh/testkit';
import { applyEvent, expectedParts, getChunkSet, isDone, doneKey, openJobStates, recordPart, runStage, toApiResponse, withPart, type JobStates, type JobView } from '../src/index.ts';

describe('withPart', () => {
  const expected = expectedParts(3, true);

  it('lists every part a rung needs', () => {
    expect(expected).toEqual(['c0', 'c1', 'c2', 'audio']);
    expect(expectedParts(2, false)).toEqual(['c0', 'c1']);
  });

  it('names as joiner the part that completes the set, and only that one', () => {
    let set = withPart(null, 'c2', expected);
    set = withPart(set, 'audio', expected);
    set = withPart(set, 'c0', expected);
    expect(set.joiner).toBeUndefined();
    set = withPart(set, 'c1', expected);
    expect(set).toEqual({ parts: ['c0', 'c1', 'c2', 'audio'], joiner: 'c1' });
    // A part recorded again (a redelivery) changes nothing: the joiner stays.
    expect(withPart(set, 'c0', expected)).toBe(set);
    expect(withPart(set, 'c1', expected)).toBe(set);
  });
});

describe('recordPart on a real KV bucket', () => {
  let nats: NatsServer;
  let bus: Bus;
  let states: JobStates;
  const workers: Worker[] = [];
  let n = 0;
  const job = () => ({ jobId: `00000000-0000-4000-b000-${String(++n).padStart(12, '0')}`, attempt: 1 });

  beforeAll(async () => {
    nats = await startNats();
    bus = await connectBus({ url: nats.url, name: 'test', log: createLogger('test', 'silent') });
    for (const s of [STREAMS.work, STREAMS.events, STREAMS.deadLetters]) await ensureStream(bus.jsm, s);
    states = await openJobStates(bus);
  });
  afterAll(async () => {
    await Promise.all(workers.map((w) => w.stop()));
    await closeBus(bus);
    await nats.stop();
  });

  it('lets exactly one of many parts finishing at once join', async () => {
    const j = job();
    const parts: ChunkRef[] = [...Array.from({ length: 12 }, (_, index): ChunkRef => ({ part: 'video', index, count: 12 })), { part: 'audio', count: 12 }];
    const results = await Promise.all(parts.map((p) => recordPart(states, j, '720p', p, true)));
    expect(results.filter((r) => r.join)).toHaveLength(1);
    expect((await getChunkSet(states, j, '720p'))!.parts).toHaveLength(13);
    // Another rung of the same job and another attempt have sets of their own.
    expect(await getChunkSet(states, j, '360p')).toBeNull();
    expect(await getChunkSet(states, { ...j, attempt: 2 }, '720p')).toBeNull();
  });

  it('lets the joiner join again when its message comes back, and nobody else', async () => {
    const j = job();
    expect((await recordPart(states, j, '360p', { part: 'video', index: 1, count: 2 }, false)).join).toBe(false);
    expect((await recordPart(states, j, '360p', { part: 'video', index: 0, count: 2 }, false)).join).toBe(true);
    // Killed mid-join: its part comes back and still joins; a late repeat of the other part does not.
    expect((await recordPart(states, j, '360p', { part: 'video', index: 0, count: 2 }, false)).join).toBe(true);
    expect((await recordPart(states, j, '360p', { part: 'video', index: 1, count: 2 }, false)).join).toBe(false);
  });

  it('gives each part of a rung its own stage events and done-marker', async () => {
    const seen: string[] = [];
    workers.push(
      await runStage({
        bus,
        states,
        kind: 'transcode',
        rendition: '720p',
        log: createLogger('test', 'silent'),
        stage: ({ rendition }) => `transcode-${rendition}`,
        item: ({ chunk }) => `transcode-720p.${chunk?.part === 'video' ? `c${chunk.index}` : 'audio'}`,
        chunk: ({ chunk }) => (chunk?.part === 'video' ? { part: 'video', index: chunk.index, count: chunk.count } : chunk ? { part: 'audio', count: chunk.count } : undefined),
        handle: async (m) => void seen.push(m.chunk?.part === 'video' ? `c${m.chunk.index}` : 'audio'),
      }),
    );
    const j = { ...job(), objectKey: 'k.mp4', baseUrl: 'http://x/', videoId: 'v', hasAudio: true };
    const probe = { formatName: 'mov', durationSec: 200, sizeBytes: 1, video: { codec: 'h264', width: 2, height: 2, rotation: 0, frameRate: { num: 30, den: 1 }, sampleAspectRatio: { num: 1, den: 1 }, pixFmt: 'yuv420p', interlaced: false }, audio: null };
    const plan = { renditions: ['720p'], sizes: { '720p': { width: 2, height: 2 } }, frameRate: { num: 30, den: 1 }, segmentSeconds: 4, audio: true };
    const base: WorkMessage<'transcode'> = { kind: 'transcode', job: j, rendition: '720p', source: { etag: 'e' }, probe, plan };
    await publishWork(bus, 'transcode', { ...base, chunk: { part: 'audio', count: 2 } }, 'a');
    await publishWork(bus, 'transcode', { ...base, chunk: { part: 'video', index: 0, count: 2, startFrame: 0, endFrame: 1800 } }, 'c0');
    await publishWork(bus, 'transcode', { ...base, chunk: { part: 'video', index: 1, count: 2, startFrame: 1800, endFrame: null } }, 'c1');
    const events = () => eventsOf(bus, j.jobId);
    const deadline = Date.now() + 15_000;
    while ((await events()).filter((e) => e.type === 'stage.done').length < 3 && Date.now() < deadline) await sleep(100);
    const all = await events();
    // Three parts, three of each event (the same stage: before, message ids of the stage alone dropped all but one), each naming its part.
    for (const type of ['stage.started', 'stage.done'] as const) {
      expect(all.filter((e) => e.type === type).map((e) => (e as Extract<Event, { type: typeof type }>).chunk).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)))).toEqual([
        { part: 'audio', count: 2 },
        { part: 'video', index: 0, count: 2 },
        { part: 'video', index: 1, count: 2 },
      ]);
    }
    expect(seen.sort()).toEqual(['audio', 'c0', 'c1']);
    for (const p of ['c0', 'c1', 'audio']) expect(await isDone(states, doneKey(j, 'transcode', `transcode-720p.${p}`))).toBe(true);
  });
});

describe('the status of a chunked rung', () => {
  const jobId = '00000000-0000-4000-8000-000000000077';
  const at = (s: number) => new Date(Date.UTC(2026, 10, 24, 10, 0, s)).toISOString();
  const stage = 'transcode-720p';
  const c = (index: number): ChunkRef => ({ part: 'video', index, count: 3 });
  const audio: ChunkRef = { part: 'audio', count: 3 };
  const fold = (events: Event[]) =>
    events.reduce<JobView | null>((v, e, i) => applyEvent(v, e, i + 1), null);
  const created: Event = { type: 'job.created', jobId, at: at(0), spec: { jobId, objectKey: 'k.mp4', baseUrl: 'b', videoId: 'v', hasAudio: true, attempt: 1 } };

  it('shows each part, and the rung running with the mean of its chunks', () => {
    const view = fold([
      created,
      { type: 'stage.started', jobId, at: at(1), stage, chunk: audio },
      { type: 'stage.started', jobId, at: at(1), stage, chunk: c(0) },
      { type: 'stage.done', jobId, at: at(2), stage, chunk: audio },
      { type: 'stage.progress', jobId, at: at(3), stage, percent: 50, chunk: c(0) },
      { type: 'stage.started', jobId, at: at(3), stage, chunk: c(1) },
      { type: 'stage.progress', jobId, at: at(4), stage, percent: 40, chunk: c(1) },
    ])!;
    const api = toApiResponse(view);
    expect(api.state).toBe('processing');
    expect(api.stages[stage]).toMatchObject({ state: 'running', attempts: 1, startedAt: at(1), percent: 30 });
    expect(api.stages[stage]!.chunks).toEqual([
      { part: 'video', index: 0, state: 'running', attempts: 1, startedAt: at(1), percent: 50 },
      { part: 'video', index: 1, state: 'running', attempts: 1, startedAt: at(3), percent: 40 },
      { part: 'video', index: 2, state: 'waiting', attempts: 0 },
      { part: 'audio', state: 'done', attempts: 1, startedAt: at(1), finishedAt: at(2), percent: 100 },
    ]);
  });

  it('is done only when joined, stays done when a part comes back, and counts a part delivered again', () => {
    const parts = [c(0), c(1), c(2), audio];
    const view = fold([
      created,
      ...parts.map((chunk): Event => ({ type: 'stage.started', jobId, at: at(1), stage, chunk })),
      // c1's replica was killed: it starts again.
      { type: 'stage.started', jobId, at: at(5), stage, chunk: c(1) },
      ...parts.map((chunk): Event => ({ type: 'stage.done', jobId, at: at(9), stage, chunk })),
    ])!;
    expect(view.stages[stage]).toMatchObject({ state: 'running', attempts: 2, percent: 99 });
    expect(view.stages[stage]!.chunks![1]).toMatchObject({ state: 'done', attempts: 2 });
    const joined = applyEvent(view, { type: 'stage.done', jobId, at: at(10), stage }, 100)!;
    expect(joined.stages[stage]).toMatchObject({ state: 'done', percent: 100, finishedAt: at(10) });
    const late = applyEvent(joined, { type: 'stage.started', jobId, at: at(11), stage, chunk: c(2) }, 101)!;
    expect(late.stages[stage]).toMatchObject({ state: 'done', percent: 100 });
  });

  it('fails the rung when a part gives up, with the reason; a re-driven part runs it again', () => {
    const view = fold([
      created,
      { type: 'stage.started', jobId, at: at(1), stage, chunk: c(2) },
      { type: 'stage.failed', jobId, at: at(2), stage, chunk: c(2), code: 'TOOL_TIMEOUT', reason: 'chunk 2: ffmpeg ran too long', fatal: false },
    ])!;
    expect(view.stages[stage]).toMatchObject({ state: 'failed', code: 'TOOL_TIMEOUT', reason: 'chunk 2: ffmpeg ran too long' });
    expect(view.stages[stage]!.chunks![2]).toMatchObject({ state: 'failed', code: 'TOOL_TIMEOUT' });
    const again = applyEvent(view, { type: 'stage.started', jobId, at: at(3), stage, chunk: c(2) }, 10)!;
    expect(again.stages[stage]!.state).toBe('running');
    expect(again.stages[stage]).not.toHaveProperty('reason');
    expect(again.stages[stage]!.chunks![2]).toEqual({ part: 'video', index: 2, state: 'running', attempts: 2, startedAt: at(3), percent: 0 });
  });
});
