/**
 * Tools die with their service, and what a killed service leaves behind is swept: a real Node process
 * runs FFmpeg through runTool and is SIGKILLed; stale per-message temp dirs are removed at start.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from '@mesh/testkit';
import { sweepStaleTempDirs } from '@mesh/common';

let dir: { path: string; remove(): Promise<void> };
beforeAll(async () => {
  dir = await tempDir('lifetime');
});
afterAll(() => dir.remove());

interface Proc {
  pid: number;
  comm: string;
  state: string;
  ppid: number;
}

function proc(pid: number): Proc | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { pid, comm, state: state!, ppid: Number(ppid) };
  } catch {
    return null;
  }
}

const childrenOf = (ppid: number): Proc[] =>
  readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map((d) => proc(Number(d)))
    .filter((p): p is Proc => p !== null && p.ppid === ppid);

/** Gone, or dead and waiting to be reaped (a zombie runs nothing). */
const dead = (pid: number) => ['Z', 'X', undefined].includes(proc(pid)?.state);

async function until<T>(what: string, get: () => T | undefined, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = get();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('a service killed with SIGKILL', () => {
  it('takes its FFmpeg runs with it, the running one and the one it had paused', async () => {
    const yieldDir = join(dir.path, 'encodes');
    const fixture = join(fileURLToPath(new URL('.', import.meta.url)), 'fixtures', 'run-tools.ts');
    const service = spawn(process.execPath, [fixture, yieldDir], { stdio: ['ignore', 'pipe', 'inherit'] });
    let ffmpegs: Proc[] = [];
    try {
      await once(service.stdout!, 'data');
      // Both encodes run as the service's children (setpriv execs FFmpeg in place); one is paused (T).
      let seen: Proc[] = [];
      ffmpegs = await until(
        'two ffmpeg children, one paused',
        () => {
          seen = childrenOf(service.pid!);
          const found = seen.filter((p) => p.comm === 'ffmpeg');
          return found.length === 2 && found.some((p) => p.state === 'T') && found.some((p) => p.state !== 'T') ? found : undefined;
        },
        20_000,
      ).catch((err: Error) => {
        throw new Error(`${err.message}; children: ${JSON.stringify(seen)}`);
      });
      service.kill('SIGKILL');
      await once(service, 'exit');
      const left = await until('both ffmpeg runs dead', () => (ffmpegs.every((p) => dead(p.pid)) ? [] : undefined), 2000).catch(() =>
        ffmpegs.filter((p) => !dead(p.pid)).map((p) => `${p.pid} ${proc(p.pid)?.state}`),
      );
      expect(left).toEqual([]);
    } finally {
      service.kill('SIGKILL');
      // Whatever survived (without the fix) is ours to end.
      for (const p of ffmpegs) if (!dead(p.pid)) process.kill(p.pid, 'SIGKILL');
    }
  });
});

describe('sweepStaleTempDirs', () => {
  it('removes the dirs of processes that are gone, keeps the live ones and anything else', async () => {
    const base = join(dir.path, 'tmp');
    await mkdir(base);
    // A pid that was alive and is not any more.
    const gone = spawn('true');
    await once(gone, 'exit');
    const deadPid = gone.pid!;
    const names = {
      dead: `transcoder-720-${deadPid}-AbC123`,
      live: `transcoder-720-${process.ppid}-xYz789`,
      mine: `transcoder-720-${process.pid}-new000`,
      mineBefore: `transcoder-720-${process.pid}-old000`,
      otherStage: `transcoder-360-${deadPid}-AbC123`,
      oldNaming: `transcoder-720-QwErTy`,
      file: `transcoder-720-${deadPid}-file00`,
      link: `transcoder-720-${deadPid}-link00`,
    };
    for (const name of [names.dead, names.live, names.mine, names.mineBefore, names.otherStage, names.oldNaming]) {
      await mkdir(join(base, name));
      await writeFile(join(base, name, 'rendition.mp4'), 'bytes');
    }
    await writeFile(join(base, names.file), '');
    const target = join(dir.path, 'keep-me');
    await mkdir(target);
    await symlink(target, join(base, names.link));
    // Made by an earlier process that had this pid (a restarted container): older than this process.
    const longAgo = new Date(Date.now() - 3600_000);
    await utimes(join(base, names.mineBefore), longAgo, longAgo);

    const removed = sweepStaleTempDirs('transcoder-720', { dir: base });
    expect(removed.sort()).toEqual([join(base, names.dead), join(base, names.mineBefore)].sort());
    expect(readdirSync(base).sort()).toEqual([names.live, names.mine, names.otherStage, names.oldNaming, names.file, names.link].sort());
    expect(readdirSync(target)).toEqual([]);
  });
});
