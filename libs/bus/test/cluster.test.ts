/**
 * The bus on a three-node JetStream cluster (R3) losing a node: publishes wait out the stream's election
 * and store each event once, and a follow whose ordered consumer sat on the dead node goes on from where
 * it was with a new one. The waits seen are printed (measurements, not assertions).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, sleep } from '@mesh/common';
import { startNatsCluster, type NatsCluster } from '@mesh/testkit';
import { closeBus, connectBus, followStream, publishEvent, STREAMS, ensureStream, type Bus } from '../src/index.ts';

const log = createLogger('test', process.env['TEST_LOG'] ?? 'silent');
let cluster: NatsCluster;
let bus: Bus;

beforeAll(async () => {
  cluster = await startNatsCluster({ nodes: 3 });
  bus = await connectBus({ url: cluster.url, name: 'test', log });
  await ensureStream(bus.jsm, { ...STREAMS.events, num_replicas: 3 });
}, 60_000);
afterAll(async () => {
  await closeBus(bus);
  await cluster.stop();
});

let n = 0;
const newJobId = () => `00000000-0000-4000-8000-${String(++n).padStart(12, '0')}`;
const progress = (jobId: string, percent: number) => publishEvent(bus, { type: 'stage.progress', jobId, stage: 'transcode-720p', percent });

/** Publishes an event every 100 ms until stopped; returns the sequences stored and the longest publish. */
function publishing(jobId: string) {
  let stop = false;
  const seqs: number[] = [];
  let longest = 0;
  const done = (async () => {
    for (let i = 0; !stop; i++) {
      const started = Date.now();
      seqs.push((await progress(jobId, i % 100)).ack.seq);
      longest = Math.max(longest, Date.now() - started);
      await sleep(100);
    }
  })();
  return {
    async stop() {
      stop = true;
      await done;
      return { seqs, longest };
    },
  };
}

describe('a cluster node lost', () => {
  it('publishes wait for the new leader of the stream and store every event once', async () => {
    const jobId = newJobId();
    const pub = publishing(jobId);
    await sleep(500);
    const leader = await cluster.streamLeader(STREAMS.events.name);
    await leader.kill();
    await sleep(8000);
    const { seqs, longest } = await pub.stop();
    console.log(`bus: ${leader.name}, leader of ${STREAMS.events.name}, SIGKILLed: the longest publish took ${(longest / 1000).toFixed(1)} s (${seqs.length} publishes)`);
    expect(new Set(seqs).size).toBe(seqs.length);
    const stored = (await bus.jsm.streams.info(STREAMS.events.name, { subjects_filter: `events.${jobId}.>` })).state.subjects?.[`events.${jobId}.stage.progress`];
    expect(stored).toBe(seqs.length);
    await leader.start();
    await cluster.waitCurrent(leader);
  }, 90_000);

  it('a follow whose consumer was on the dead node goes on with a new one: every event once, in order', async () => {
    const jobId = newJobId();
    const got: number[] = [];
    let lastAt = Date.now();
    let longestGap = 0;
    const stop = new AbortController();
    const from = (await bus.jsm.streams.info(STREAMS.events.name)).state.last_seq + 1;
    const following = followStream(bus, {
      stream: STREAMS.events.name,
      subject: `events.${jobId}.>`,
      fromSeq: from,
      signal: stop.signal,
      onBatch: async (msgs) => {
        longestGap = Math.max(longestGap, Date.now() - lastAt);
        lastAt = Date.now();
        got.push(...msgs.map((m) => m.seq));
      },
    });
    const pub = publishing(jobId);
    await sleep(1000);
    // The follow's ordered consumer lives on one node: that node goes.
    let host: string | undefined;
    for await (const c of bus.jsm.consumers.list(STREAMS.events.name)) host = c.cluster?.leader;
    const node = cluster.nodes.find((x) => x.name === host)!;
    longestGap = 0;
    await node.kill();
    await sleep(20_000);
    const { seqs } = await pub.stop();
    const deadline = Date.now() + 20_000;
    while (got.length < seqs.length && Date.now() < deadline) await sleep(100);
    stop.abort();
    await following;
    console.log(`bus: ${node.name}, holding a follow's consumer, SIGKILLed: the follow got nothing for ${(longestGap / 1000).toFixed(1)} s at most`);
    expect(got).toEqual(seqs);
    await node.start();
    await cluster.waitCurrent(node);
  }, 120_000);
});
