/**
 * The encode-yield directory is private: made 0700, refused when others can write in it, and markers
 * never follow links. And a tool is paused only once it can die with its service.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, lstatSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, createLogger } from '@mesh/common';
import { tempDir } from '@mesh/testkit';
import { defaultYieldDir, holdUrgency, yieldConfig, yieldToUrgentEncodes } from '../src/index.ts';

let dir: { path: string; remove(): Promise<void> };
beforeAll(async () => {
  dir = await tempDir('yield');
});
afterAll(() => dir.remove());

const at = (name: string) => join(dir.path, name);
const isRoot = process.getuid?.() === 0;

describe('yield directory', () => {
  it('is made private (0700), one per user by default', () => {
    const o = yieldConfig({ ENCODE_YIELD_DIR: at('fresh/encodes') }, 1)!;
    expect(statSync(o.dir).mode & 0o777).toBe(0o700);
    expect(defaultYieldDir()).toMatch(new RegExp(`video-mesh-encodes-${process.getuid?.()}$`));
    expect(yieldConfig({ ENCODE_YIELD_DIR: 'off' }, 1)).toBeUndefined();
  });

  it.each<[string, (path: string) => void, RegExp]>([
    ['open to others', (p) => (mkdirSync(p), chmodSync(p, 0o777)), /open to other users \(mode 777, want 700\)/],
    ['readable by the group', (p) => (mkdirSync(p), chmodSync(p, 0o750)), /open to other users \(mode 750/],
    ['a link to a directory', (p) => (mkdirSync(`${p}-real`, { mode: 0o700 }), symlinkSync(`${p}-real`, p)), /is not a directory \(a symlink\?\)/],
    // Only root can give a directory away.
    ...(isRoot ? [['owned by another user', (p: string) => (mkdirSync(p, { mode: 0o700 }), chownSync(p, 65534, 65534)), /belongs to user 65534, not to this user \(0\)/] as [string, (p: string) => void, RegExp]] : []),
  ])('is refused at start when %s, naming ENCODE_YIELD_DIR and why', (name, make, why) => {
    const path = at(name.replaceAll(' ', '-'));
    make(path);
    const start = () => yieldConfig({ ENCODE_YIELD_DIR: path }, 1);
    expect(start).toThrow(ConfigError);
    expect(start).toThrow(why);
    expect(start).toThrow(/^ENCODE_YIELD_DIR /);
  });

  it('is not used once it became unsafe: no marker, a warning, the work goes on', () => {
    const path = at('became-unsafe');
    const o = yieldConfig({ ENCODE_YIELD_DIR: path }, 0)!;
    chmodSync(path, 0o777);
    const lines: string[] = [];
    const release = holdUrgency(o, createLogger('test', 'info', { write: (l: string) => lines.push(l) }));
    expect(readdirSync(path)).toEqual([]);
    expect(lines.join('\n')).toMatch(/not yielding: the encode yield directory is unsafe/);
    expect(lines.join('\n')).toMatch(/open to other users/);
    release();
  });

  it('never writes through a link planted where a marker goes', () => {
    const o = yieldConfig({ ENCODE_YIELD_DIR: at('planted') }, 0)!;
    const victim = at('victim.txt');
    writeFileSync(victim, 'precious');
    // holdUrgency's markers are `<rank>-<pid>-<n>`: plant links under every name it may pick.
    for (let n = 1; n <= 50; n++) symlinkSync(victim, join(o.dir, `0-${process.pid}-${n}`));
    const release = holdUrgency(o);
    expect(readFileSync(victim, 'utf8')).toBe('precious');
    const made = readdirSync(o.dir).filter((name) => !lstatSync(join(o.dir, name)).isSymbolicLink());
    expect(made).toHaveLength(1);
    expect(lstatSync(join(o.dir, made[0]!)).isFile()).toBe(true);
    release();
    expect(readFileSync(victim, 'utf8')).toBe('precious');
  });
});

describe('yielding', () => {
  it('pauses a process only once it may be paused (runTool: once setpriv armed the parent-death signal and exec\'d the tool)', async () => {
    const o = { ...yieldConfig({ ENCODE_YIELD_DIR: at('pausable') }, 1)!, everyMs: 20 };
    const release = holdUrgency({ ...o, rank: 0 });
    const sleeper = spawn('sleep', ['60']);
    const state = () => readFileSync(`/proc/${sleeper.pid}/stat`, 'utf8').split(') ')[1]![0];
    const settle = () => new Promise((r) => setTimeout(r, 200));
    let ready = false;
    const stop = yieldToUrgentEncodes(sleeper.pid!, o, createLogger('test', 'silent'), () => ready);
    try {
      await settle();
      expect(state()).toBe('S');
      ready = true;
      await settle();
      expect(state()).toBe('T');
    } finally {
      stop();
      release();
      sleeper.kill('SIGKILL');
    }
  });
});
