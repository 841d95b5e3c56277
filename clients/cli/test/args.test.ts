/**
 * The command line without a mesh: the bin run as a child process, as a person runs it. Usage and input
 * mistakes are one line and exit 2, before any network call; an API that is not there is exit 3; the
 * package runs from the repo with npx and from an installed copy (inside node_modules).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const PKG = fileURLToPath(new URL('../', import.meta.url));
const REPO = join(PKG, '..', '..');
const BIN = join(PKG, 'bin', 'video-mesh.js');
const pkg = JSON.parse(await readFile(join(PKG, 'package.json'), 'utf8')) as { version: string; dependencies: Record<string, string>; files: string[] };

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `video-mesh ARGS` with only the environment given (none of the caller's VIDEO_MESH_*). */
function video(args: string[], env: Record<string, string> = {}, bin = BIN): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { env: { PATH: process.env['PATH'] ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c));
    child.stderr.on('data', (c: Buffer) => (stderr += c));
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A port nothing listens on: the API "is not there". */
let closed: string;
let dir: string;
beforeAll(async () => {
  const server: Server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  closed = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  await new Promise((r) => server.close(r));
  dir = await mkdtemp(join(tmpdir(), 'cli-args-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

const withApi = () => ({ VIDEO_MESH_URL: closed, VIDEO_MESH_API_KEY: 'k' });

describe('usage', () => {
  it('--version and --help answer with exit 0; help lists every command and the exit codes', async () => {
    expect(await video(['--version'])).toEqual({ code: 0, stdout: `${pkg.version}\n`, stderr: '' });
    const help = await video(['--help']);
    expect(help.code).toBe(0);
    for (const command of ['submit', 'status', 'watch', 'retry', 'cancel', 'queues', 'dead-letters']) expect(help.stdout).toMatch(new RegExp(`^  ${command}\\b`, 'm'));
    expect(help.stdout).toMatch(/Exit codes: 0 .* 1 .*\n2 .* 3 .* 130/s);
    const submit = await video(['submit', '--help']);
    for (const option of ['--video-id <id>', '--base-url <url>', '--no-wait']) expect(submit.stdout).toContain(option);
  });

  it.each([
    ['no command', [], /^Usage: video-mesh/],
    ['an unknown command', ['sumbit', 'x.mp4'], /^error: unknown command 'sumbit'\n\(Did you mean submit\?\)\n$/],
    ['a missing argument', ['status'], /^error: missing required argument 'id'\n$/],
    ['an unknown option', ['status', 'x', '--verbose'], /^error: unknown option '--verbose'\n$/],
    ['a --redrive that is not a number', ['dead-letters', '--redrive', 'x'], /^error: option '--redrive <seq>' argument 'x' is invalid\. must be a dead letter's sequence number/],
    ['a --redrive of 0', ['dead-letters', '--redrive', '0'], /argument '0' is invalid/],
  ])('%s is exit 2', async (_name, args, message) => {
    const run = await video(args, withApi());
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(message);
  });

  it('options go before or after the command', async () => {
    const before = await video(['--json', '--url', closed, 'status', 'x'], { VIDEO_MESH_API_KEY: 'k' });
    const after = await video(['status', 'x', '--url', closed, '--json'], { VIDEO_MESH_API_KEY: 'k' });
    expect(before.code).toBe(3);
    expect(after).toEqual(before);
  });
});

describe('endpoint and key', () => {
  it('no key is exit 2 naming the flag and the variable', async () => {
    expect(await video(['status', 'x'])).toEqual({ code: 2, stdout: '', stderr: 'error: no API key: give --api-key or set VIDEO_MESH_API_KEY\n' });
  });

  it('a URL that is not http(s), or that carries a password, is exit 2 naming where it came from', async () => {
    expect((await video(['status', 'x', '--url', 'ftp://h/'], { VIDEO_MESH_API_KEY: 'k' })).stderr).toBe('error: --url: must be an http or https URL, not ftp:\n');
    expect((await video(['status', 'x'], { VIDEO_MESH_URL: 'nope', VIDEO_MESH_API_KEY: 'k' })).stderr).toBe('error: VIDEO_MESH_URL: not a URL: nope\n');
    const secret = await video(['status', 'x', '--url', 'http://me:hunter2@h/'], { VIDEO_MESH_API_KEY: 'k' });
    expect(secret.code).toBe(2);
    expect(secret.stderr).not.toContain('hunter2');
  });

  it('an API that is not there is exit 3, saying where and why; the key is never printed', async () => {
    const run = await video(['status', 'x'], { VIDEO_MESH_URL: closed, VIDEO_MESH_API_KEY: 'secret-key-123' });
    expect(run).toEqual({ code: 3, stdout: '', stderr: `error: cannot reach the API at ${closed}: connection refused\n` });
    const flags = await video(['--url', closed, '--api-key', 'secret-key-123', 'watch', 'x']);
    expect(flags.code).toBe(3);
    expect(flags.stderr + flags.stdout).not.toContain('secret-key-123');
  });
});

describe('submit checks its input before any upload', () => {
  // The API is not there: each of these would be exit 3 if it were asked anything.
  it('a missing file, a directory or an empty file is exit 2', async () => {
    const empty = join(dir, 'empty.mp4');
    await writeFile(empty, '');
    expect((await video(['submit', join(dir, 'nope.mp4')], withApi())).stderr).toBe(`error: no such file: ${join(dir, 'nope.mp4')}\n`);
    expect((await video(['submit', dir], withApi())).stderr).toBe(`error: ${dir} is a directory, not a video file\n`);
    const run = await video(['submit', empty], withApi());
    expect(run).toEqual({ code: 2, stdout: '', stderr: `error: ${empty} is empty\n` });
  });

  it('a --video-id or --base-url the API would refuse is exit 2 naming the option', async () => {
    const file = join(dir, 'v.mp4');
    await writeFile(file, 'x');
    const id = await video(['submit', file, '--video-id', '../etc'], withApi());
    expect(id.code).toBe(2);
    expect(id.stderr).toMatch(/^error: --video-id: must be 1 to 128 letters/);
    const base = await video(['submit', file, '--base-url', 'cdn.example.com/v/'], withApi());
    expect(base.code).toBe(2);
    expect(base.stderr).toMatch(/^error: --base-url: must be an absolute http\(s\) URL/);
    // Valid input gets as far as the API, which is not there.
    expect((await video(['submit', file, '--video-id', 'v_1.0', '--base-url', 'https://cdn.example.com/v/'], withApi())).code).toBe(3);
  });
});

describe('running it', () => {
  const run = promisify(execFile);

  it('with npx from the repo', async () => {
    const { stdout } = await run('npx', ['--no-install', 'video-mesh', '--version'], { cwd: REPO });
    expect(stdout).toBe(`${pkg.version}\n`);
  });

  it('installed on its own: the packed files inside a node_modules run, without warnings', async () => {
    // What `npm pack` would put in the tarball, laid out as `npm install` lays it out.
    const { stdout } = await run('npm', ['pack', '--dry-run', '--json'], { cwd: PKG });
    const files = (JSON.parse(stdout) as [{ files: { path: string }[] }])[0].files.map((f) => f.path);
    expect(files).toEqual(expect.arrayContaining(['package.json', 'README.md', 'bin/video-mesh.js', 'src/main.ts', 'src/cli.ts']));
    expect(files.some((f) => f.startsWith('test/'))).toBe(false);
    const installed = join(dir, 'app', 'node_modules', 'video-mesh-cli');
    for (const f of files) {
      await mkdir(dirname(join(installed, f)), { recursive: true });
      await cp(join(PKG, f), join(installed, f));
    }
    // Its dependencies beside it, as npm would put them (those of the repo's install).
    const resolveFrom = [join(PKG, 'node_modules'), join(REPO, 'node_modules')];
    for (const dep of Object.keys(pkg.dependencies)) {
      const source = await firstExisting(resolveFrom.map((d) => join(d, dep)));
      await mkdir(dirname(join(dir, 'app', 'node_modules', dep)), { recursive: true });
      await symlink(source, join(dir, 'app', 'node_modules', dep));
    }
    const bin = join(installed, 'bin', 'video-mesh.js');
    expect(await video(['--version'], {}, bin)).toEqual({ code: 0, stdout: `${pkg.version}\n`, stderr: '' });
    expect(await video(['status', 'x'], withApi(), bin)).toEqual({ code: 3, stdout: '', stderr: `error: cannot reach the API at ${closed}: connection refused\n` });
  });
});

async function firstExisting(paths: string[]): Promise<string> {
  for (const p of paths) {
    const ok = await readFile(join(p, 'package.json')).then(
      () => true,
      () => false,
    );
    if (ok) return p;
  }
  throw new Error(`none of ${paths.join(', ')}`);
}
