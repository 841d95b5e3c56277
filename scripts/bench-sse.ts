/**
 * `npm run bench:sse [-- --streams 1,100,1000 --events 200 --rate 50 --jobs 20 --rounds 3]`: live progress streams on
 * one API process, measured against a baseline in the same run.
 *
 * Starts nats-server, the MongoDB stand-in and ingest-api (a process of its own), submits a few jobs, then
 * for each stream count (the first is the baseline), on a freshly started and warmed-up API process each
 * time, in rounds that alternate the order: opens that many SSE streams, half on GET /events
 * and half on GET /video/encoding/{id}/events spread over the jobs (one stream: /events), waits until each
 * has joined, publishes job events to JetStream at a steady rate as the stages would, and measures the
 * delay from each publish to each stream that gets it, the API's RSS (before, with the streams open, peak
 * while publishing), the CPU the API used, the JetStream consumers on JOB_EVENTS, and whether any change
 * was lost. The clients run in worker threads (two from 100 streams on), so parsing a hundred thousand
 * events does not hold up the publisher's clock; on a 2-core host they still share the CPU with the API,
 * NATS and MongoDB, and the delays include that.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { closeBus, connectBus, publishEvent, STREAMS } from '@mesh/bus';
import { createLogger, sleep } from '@mesh/common';
import { openSse, startLoneApi, type SseClient } from '@mesh/testkit';

const { values: opts } = parseArgs({
  options: {
    streams: { type: 'string', default: '1,100,1000' },
    events: { type: 'string', default: '200' },
    rate: { type: 'string', default: '50' },
    jobs: { type: 'string', default: '20' },
    rounds: { type: 'string', default: '3' },
  },
});
const counts = opts.streams.split(',').map(Number);
const eventCount = Number(opts.events);
const ratePerSec = Number(opts.rate);
const jobCount = Number(opts.jobs);
const rounds = Number(opts.rounds);

interface Phase {
  streams: number;
  everyJob: number;
  perJob: number;
  rssBefore: number;
  rssOpen: number;
  rssPeak: number;
  consumers: number;
  delays: number[];
  expected: number;
  received: number;
  openMs: number;
  /** CPU seconds the API process used while the events were published and delivered. */
  cpuSec: number;
}

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
/** User + system CPU time of a process, in seconds (clock ticks of 1/100 s). */
const cpuSec = (pid: number) => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const pct = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

async function main() {
  const api = await startLoneApi({ env: { LOG_LEVEL: 'warn' } });
  const bus = await connectBus({ url: api.nats.url, name: 'bench-sse', log: createLogger('bench', 'warn') });
  try {
    const jobs = await Promise.all(Array.from({ length: jobCount }, () => api.submit()));
    // Rounds alternate the order of the stream counts; each figure is the median over the rounds, since
    // one round on a shared host measures its neighbours as much as itself.
    const byCount = new Map<number, Phase[]>(counts.map((n) => [n, []]));
    for (let round = 1; round <= rounds; round++) {
      for (const n of round % 2 === 1 ? counts : [...counts].reverse()) {
        // A fresh API process each time, warmed up by a few changes to one stream: its RSS is then this count's alone.
        await api.restart();
        const pid = api.process.child.pid!;
        await phase(api, bus, pid, jobs, 1, 20);
        const p = await phase(api, bus, pid, jobs, n, eventCount);
        byCount.get(n)!.push(p);
        process.stdout.write(`round ${round}, ${n} streams: p50 ${pct(p.delays, 50).toFixed(1)} ms, p99 ${pct(p.delays, 99).toFixed(1)} ms, ${p.received}/${p.expected} delivered\n`);
      }
    }
    report(counts.map((n) => byCount.get(n)!));
  } finally {
    await closeBus(bus);
    await api.stop();
  }
}


/** Wall-clock milliseconds with sub-millisecond precision, comparable between threads. */
const clock = () => performance.timeOrigin + performance.now();

/**
 * The clients, in worker threads: each opens its share of the streams, says when all have joined, and
 * reports when each change arrived (`[seq, time]`, batched); they stop when told.
 */
async function clientThread(o: { targets: string[]; headers: Record<string, string> }): Promise<void> {
  const port = parentPort!;
  const streams: SseClient[] = [];
  let seqs: number[] = [];
  let times: number[] = [];
  const flush = setInterval(() => {
    if (seqs.length === 0) return;
    port.postMessage({ seqs, times });
    seqs = [];
    times = [];
  }, 20);
  const joined: Promise<void>[] = [];
  const started = performance.now();
  // At most 100 connections being set up at once, as clients arriving over a few moments.
  for (let i = 0; i < o.targets.length; i += 100) {
    const batch = await Promise.all(
      o.targets.slice(i, i + 100).map((url) => {
        let first!: () => void;
        joined.push(new Promise<void>((r) => (first = r)));
        let started = false;
        return openSse(url, {
          headers: o.headers,
          keep: false,
          // The first event is the stream's start (ready, or the job's status now); changes follow.
          onEvent: (e) => {
            if (started) {
              seqs.push(Number(e.lastEventId));
              times.push(clock());
            }
            started = true;
            first();
          },
        });
      }),
    );
    streams.push(...batch);
  }
  await Promise.all(joined);
  const refused = streams.find((s) => s.status !== 200);
  port.postMessage({ joined: true, refused: refused?.status, openMs: performance.now() - started });
  port.once('message', () => {
    clearInterval(flush);
    if (seqs.length > 0) port.postMessage({ seqs, times });
    for (const s of streams) s.close();
    port.postMessage({ closed: true });
    port.close();
  });
}

async function phase(api: Awaited<ReturnType<typeof startLoneApi>>, bus: Awaited<ReturnType<typeof connectBus>>, pid: number, jobs: string[], n: number, events: number): Promise<Phase> {
  // Let the previous phase's streams go.
  await sleep(1000);
  const rssBefore = rssMb(pid);
  const everyJob = n === 1 ? 1 : Math.ceil(n / 2);
  const perJob = n - everyJob;
  const publishedAt = new Map<number, number>();
  const delays: number[] = [];
  let received = 0;
  // A change can reach a client before its publish's acknowledgement reaches us: kept until it does.
  const early = new Map<number, number[]>();
  const arrived = (seq: number, at: number) => {
    const t = publishedAt.get(seq);
    received++;
    if (t !== undefined) delays.push(at - t);
    else early.set(seq, [...(early.get(seq) ?? []), at]);
  };
  const headers = { ApiKey: api.apiKey };
  const targets = [...Array.from({ length: everyJob }, () => `${api.url}/events`), ...Array.from({ length: perJob }, (_, i) => `${api.url}/video/encoding/${jobs[i % jobs.length]}/events`)];
  // Two client threads from 100 streams on: the clients' parsing may use both cores, as the API may.
  const threads = n >= 100 ? 2 : 1;
  let openMs = 0;
  const workers = Array.from({ length: threads }, (_, k) => new Worker(new URL(import.meta.url), { workerData: { targets: targets.filter((_, i) => i % threads === k), headers } }));
  await Promise.all(
    workers.map(
      (w) =>
        new Promise<void>((resolve, reject) => {
          w.once('error', reject);
          w.on('message', (m: { joined?: boolean; refused?: number; openMs?: number; seqs?: number[]; times?: number[] }) => {
            if (m.joined) {
              openMs = Math.max(openMs, m.openMs!);
              if (m.refused) reject(new Error(`a stream was refused: ${m.refused}`));
              resolve();
            }
            m.seqs?.forEach((seq, i) => arrived(seq, m.times![i]!));
          });
        }),
    ),
  );
  await sleep(500);
  const rssOpen = rssMb(pid);
  const consumers = (await bus.jsm.streams.info(STREAMS.events.name)).state.consumer_count;

  let rssPeak = rssOpen;
  const cpuStart = cpuSec(pid);
  const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, rssMb(pid))), 100);
  const listenersOf = (jobId: string) => everyJob + Math.floor(perJob / jobs.length) + (jobs.indexOf(jobId) < perJob % jobs.length ? 1 : 0);
  let expected = 0;
  const t0 = performance.now();
  for (let i = 0; i < events; i++) {
    // A steady rate, whatever each publish took.
    const due = t0 + (i * 1000) / ratePerSec;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    const jobId = jobs[i % jobs.length]!;
    const at = clock();
    const { ack } = await publishEvent(bus, { type: 'stage.progress', jobId, stage: 'transcode-720p', percent: i % 100 });
    publishedAt.set(ack.seq, at);
    for (const t of early.get(ack.seq) ?? []) delays.push(t - at);
    early.delete(ack.seq);
    expected += listenersOf(jobId);
  }
  const deadline = performance.now() + 30_000;
  while (received < expected && performance.now() < deadline) await sleep(50);
  clearInterval(sampler);
  const cpu = cpuSec(pid) - cpuStart;
  await Promise.all(
    workers.map(
      (w) =>
        new Promise<void>((resolve) => {
          w.on('message', (m: { closed?: boolean }) => m.closed && resolve());
          w.postMessage('stop');
        }),
    ),
  );
  delays.sort((a, b) => a - b);
  return { streams: n, everyJob, perJob, rssBefore, rssOpen, rssPeak, consumers, delays, expected, received, openMs, cpuSec: cpu };
}

interface Row {
  streams: number;
  everyJob: number;
  perJob: number;
  deliveries: number;
  lost: number;
  p50: number;
  p99: number;
  max: number;
  rssBefore: number;
  rssOpen: number;
  rssPeak: number;
  consumers: number;
  openSec: number;
  cpuSec: number;
}

function summarise(phases: Phase[]): Row {
  const m = (f: (p: Phase) => number) => median(phases.map(f));
  const first = phases[0]!;
  return {
    streams: first.streams,
    everyJob: first.everyJob,
    perJob: first.perJob,
    deliveries: m((p) => p.received),
    lost: phases.reduce((n, p) => n + p.expected - p.received, 0),
    p50: m((p) => pct(p.delays, 50)),
    p99: m((p) => pct(p.delays, 99)),
    max: m((p) => p.delays.at(-1)!),
    rssBefore: m((p) => p.rssBefore),
    rssOpen: m((p) => p.rssOpen),
    rssPeak: m((p) => p.rssPeak),
    consumers: Math.max(...phases.map((p) => p.consumers)),
    openSec: m((p) => p.openMs / 1000),
    cpuSec: m((p) => p.cpuSec),
  };
}

function report(byCount: Phase[][]) {
  const rows = byCount.map(summarise);
  const base = rows[0]!;
  const ms = (x: number) => `${x.toFixed(1)} ms`;
  const mb = (x: number) => `${x.toFixed(0)} MB`;
  const cols: [string, (r: Row) => string][] = [
    ['streams', (r) => String(r.streams)],
    ['/events', (r) => String(r.everyJob)],
    ['per-job', (r) => String(r.perJob)],
    ['deliveries', (r) => String(r.deliveries)],
    ['lost', (r) => String(r.lost)],
    ['p50', (r) => ms(r.p50)],
    ['p99', (r) => ms(r.p99)],
    ['max', (r) => ms(r.max)],
    ['RSS before', (r) => mb(r.rssBefore)],
    ['open', (r) => mb(r.rssOpen)],
    ['peak', (r) => mb(r.rssPeak)],
    ['API CPU', (r) => `${r.cpuSec.toFixed(2)} s`],
    ['consumers', (r) => String(r.consumers)],
    ['joined in', (r) => `${r.openSec.toFixed(1)} s`],
  ];
  const widths = cols.map(([h, f]) => Math.max(h.length, ...rows.map((r) => f(r).length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i]!)).join('  ');
  console.log(`\n${eventCount} job events at ${ratePerSec}/s over ${jobCount} jobs, medians of ${rounds} rounds; streams half on GET /events, half per job; delay = publish -> client`);
  console.log(line(cols.map(([h]) => h)));
  for (const r of rows) console.log(line(cols.map(([, f]) => f(r))));
  console.log(`\nagainst ${base.streams} stream${base.streams === 1 ? '' : 's'} (same run):`);
  const x = (a: number, b: number) => `${(a / b).toFixed(2)}x`;
  for (const r of rows.slice(1)) {
    const perStream = ((r.rssOpen - base.rssOpen) * 1024) / (r.streams - base.streams);
    console.log(
      `  ${String(r.streams).padStart(5)} streams: p50 ${x(r.p50, base.p50)}, p99 ${x(r.p99, base.p99)}, max ${x(r.max, base.max)}, RSS open ${x(r.rssOpen, base.rssOpen)} ` +
        `(+${perStream.toFixed(0)} KB per added stream), peak ${x(r.rssPeak, base.rssPeak)}, deliveries ${x(r.deliveries, base.deliveries)}, API CPU ${x(r.cpuSec, base.cpuSec)}`,
    );
  }
  console.log('consumers: JetStream consumers on JOB_EVENTS while the streams were open (the projector and the one live reader)');
}

if (isMainThread) await main();
else await clientThread(workerData as { targets: string[]; headers: Record<string, string> });
