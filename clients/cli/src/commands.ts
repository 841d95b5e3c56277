/**
 * The commands, each an async function of the run's context answering the exit code (or throwing a
 * CliError that carries one). They speak to the API through `api`, to the person through `display`
 * (while working) and `print` (results), and print one JSON document instead with --json.
 */
import { randomUUID } from 'node:crypto';
import { basename } from 'node:path';
import type { Api, Task, UploadTicket } from './api.ts';
import { taskLines, linkLines, type Display } from './display.ts';
import { CliError, EXIT, UsageError } from './errors.ts';
import { leftRunning, type Interrupts } from './interrupts.ts';
import { followTask } from './live.ts';
import { checkFile, contentTypeOf, putFile } from './upload.ts';

export interface Context {
  api: Api;
  display: Display;
  json: boolean;
  /** A line of the command's result on stdout. */
  print(text: string): void;
  interrupts: Interrupts;
  /** Asks whether to cancel the job; null when there is no terminal to ask on. */
  ask: ((taskId: string, signal: AbortSignal) => Promise<boolean>) | null;
}

const taskPath = (id: string) => `/video/encoding/${encodeURIComponent(id)}`;
const printJson = (ctx: Context, value: unknown) => ctx.print(JSON.stringify(value, null, 2));

// The API's rules for the fields a person types, checked before a large upload rather than after it
// (services/ingest-api/src/request.ts; the tests hold the two together).
export const VIDEO_ID = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

export function checkVideoId(id: string): string {
  if (!VIDEO_ID.test(id)) throw new UsageError(`--video-id: must be 1 to 128 letters, digits, '_', '-' or '.', starting with a letter, digit or '_' (got ${JSON.stringify(id)})`);
  return id;
}

export function checkBaseUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`--base-url: must be an absolute http(s) URL (got ${JSON.stringify(url)})`);
  }
  if (!['http:', 'https:'].includes(parsed.protocol) || url.length > 2048) throw new UsageError(`--base-url: must be an absolute http(s) URL of at most 2048 characters (got ${JSON.stringify(url.slice(0, 100))})`);
  return url;
}

/** video-mesh submit FILE: upload with a byte progress bar, submit, then follow the job to its end (unless --no-wait). */
export async function submit(ctx: Context, file: string, o: { videoId?: string | undefined; baseUrl?: string | undefined; wait: boolean }): Promise<number> {
  const size = await checkFile(file);
  const videoId = o.videoId !== undefined ? checkVideoId(o.videoId) : randomUUID();
  if (o.baseUrl !== undefined) checkBaseUrl(o.baseUrl);

  const ticket = await ctx.api.call<UploadTicket>('POST', '/uploads', { body: { filename: basename(file), content_type: contentTypeOf(file) } });
  const upload = new AbortController();
  ctx.interrupts.handle(() => upload.abort());
  ctx.display.uploadStarted(basename(file), size);
  try {
    await putFile(ticket.upload_url, file, { size, headers: ticket.headers, onBytes: (n) => ctx.display.uploadProgress(n), signal: upload.signal });
  } catch (err) {
    ctx.display.stop();
    if (upload.signal.aborted) throw new CliError('interrupted: the upload stopped; nothing was submitted', EXIT.interrupted);
    throw err;
  }
  ctx.display.uploadDone();
  // From here a Ctrl-C waits until the job exists, then asks about it.
  ctx.interrupts.handle('defer');

  const body = { object_key: ticket.object_key, base_url: o.baseUrl ?? ticket.base_url, video_id: videoId, has_audio: true };
  const taskId = await ctx.api.call<string>('POST', '/video/encoding', { body });
  if (!o.wait) {
    if (ctx.json) printJson(ctx, { task_id: taskId, ...body });
    else ctx.print(`submitted: task ${taskId} (video id ${videoId}); follow it with \`video-mesh watch ${taskId}\``);
    return EXIT.ok;
  }
  ctx.display.note(`submitted: task ${taskId} (video id ${videoId})`);
  return watch(ctx, taskId);
}

/** video-mesh watch ID: live progress until the job settles; exit 0 on SUCCESS, 1 with the reason on FAILURE. */
export async function watch(ctx: Context, taskId: string): Promise<number> {
  const task = await follow(ctx, taskId);
  ctx.display.stop();
  if (ctx.json) printJson(ctx, task);
  if (task.task_status === 'SUCCESS') {
    if (!ctx.json) ctx.print([`SUCCESS: job ${task.task_id} is ${task.state} (${task.renditions.join(', ')})`, ...linkLines(task, ctx.api.url)].join('\n'));
    return EXIT.ok;
  }
  if (!ctx.json) ctx.print(taskLines(task, ctx.api.url).join('\n'));
  const where = task.error ? ` at ${task.error.stage} (${task.error.code})` : '';
  throw new CliError(`job ${task.task_id} ${task.state === 'cancelled' ? 'was cancelled' : 'failed'}${where}: ${task.task_result ?? task.state}`, EXIT.jobFailed);
}

/**
 * Follows the task's live stream to its end and answers its final status. Ctrl-C meanwhile asks whether
 * to cancel it: yes cancels and keeps following (the job ends cancelled); no (or no terminal to ask on)
 * stops following and leaves the job running.
 */
async function follow(ctx: Context, taskId: string): Promise<Task> {
  const stop = new AbortController();
  const ended = new AbortController();
  let left: CliError | undefined;
  let asking: Promise<void> | undefined;
  const decide = async () => {
    let cancel = false;
    if (ctx.ask) {
      ctx.display.pause();
      cancel = await ctx.ask(taskId, ended.signal);
      ctx.display.resume();
    }
    if (!cancel) {
      left = new CliError(leftRunning(taskId), EXIT.interrupted);
      stop.abort();
      return;
    }
    try {
      await ctx.api.call('POST', `${taskPath(taskId)}/cancel`);
      ctx.display.note(`cancelling job ${taskId}...`);
    } catch (err) {
      // It may have ended meanwhile (409): what the stream says next is the truth.
      ctx.display.note(`could not cancel job ${taskId}: ${err instanceof Error ? err.message : String(err)}`);
    }
  };
  ctx.interrupts.handle(() => {
    asking ??= decide().finally(() => (asking = undefined));
  });
  let last: Task | undefined;
  try {
    for await (const m of followTask(ctx.api, taskId, { signal: stop.signal, onReconnect: (why, ms) => ctx.display.note(`live stream lost (${why}); reconnecting in ${ms} ms`) })) {
      if (m.kind !== 'status') continue;
      last = m.task;
      ctx.display.status(m.task);
    }
  } catch (err) {
    if (left) throw left;
    throw err;
  } finally {
    ctx.interrupts.handle('exit');
  }
  // The job ended while the person was being asked: the question no longer matters.
  ended.abort();
  await asking;
  // The stream's last status is the settled one. GET reads the job store, which may lag the stream by a
  // moment: it is asked only when the stream had ended before (answered 204) and said nothing.
  if (last && ENDED.has(last.state)) return last;
  return ctx.api.call<Task>('GET', taskPath(taskId));
}

const ENDED = new Set(['complete', 'failed', 'cancelled']);

/** video-mesh status ID: the task's status once (exit 0 whatever the job's state: read task_status). */
export async function status(ctx: Context, taskId: string): Promise<number> {
  const task = await ctx.api.call<Task>('GET', taskPath(taskId));
  if (ctx.json) printJson(ctx, task);
  else ctx.print(taskLines(task, ctx.api.url).join('\n'));
  return EXIT.ok;
}

/** video-mesh retry ID: runs a failed or cancelled task again, as a new attempt. */
export async function retry(ctx: Context, taskId: string): Promise<number> {
  const id = await ctx.api.call<string>('POST', `${taskPath(taskId)}/retry`);
  if (ctx.json) printJson(ctx, { task_id: id, retried: true });
  else ctx.print(`job ${id} runs again; follow it with \`video-mesh watch ${id}\``);
  return EXIT.ok;
}

/** video-mesh cancel ID: stops a running task. */
export async function cancel(ctx: Context, taskId: string): Promise<number> {
  const id = await ctx.api.call<string>('POST', `${taskPath(taskId)}/cancel`);
  if (ctx.json) printJson(ctx, { task_id: id, cancelled: true });
  else ctx.print(`job ${id} is being cancelled: its work stops and its status becomes FAILURE (cancelled by the client)`);
  return EXIT.ok;
}

/** The fields of GET /admin/queues this client reads (the API's QueueDepth; the tests hold the two together). */
export interface QueueDepth {
  consumer: string;
  pending: number;
  ack_pending: number;
  waiting: number;
  exists: boolean;
  attached: boolean;
  stalled: boolean;
  last_active: string | null;
}

/** The queues as a table: what waits, what is held, idle replicas, and whether a replica is there. */
export function queueLines(body: { queues: QueueDepth[]; dead_letters: number }): string[] {
  const rows = body.queues.map((q) => [q.consumer, String(q.pending), String(q.ack_pending), String(q.waiting), q.stalled ? 'STALLED: work and no replica' : q.attached ? 'attached' : q.exists ? 'no replica' : 'never started']);
  return [...table(['stage', 'waiting', 'held', 'idle pulls', 'replicas'], rows), `dead letters: ${body.dead_letters}`];
}

/** video-mesh queues: per-stage queue depth (GET /admin/queues). */
export async function queues(ctx: Context): Promise<number> {
  const body = await ctx.api.call<{ queues: QueueDepth[]; dead_letters: number }>('GET', '/admin/queues');
  if (ctx.json) printJson(ctx, body);
  else ctx.print(queueLines(body).join('\n'));
  return EXIT.ok;
}

/** The fields of a dead letter this client reads (the API's DeadLetter; the tests hold the two together). */
export interface DeadLetter {
  seq: number;
  consumer: string;
  subject: string;
  jobId: string | null;
  reason: string;
  deliveries: number;
  at: string;
}

export function deadLetterLines(letters: DeadLetter[]): string[] {
  if (letters.length === 0) return ['no dead letters'];
  return table(
    ['seq', 'stage', 'job', 'deliveries', 'at', 'reason'],
    letters.map((l) => [String(l.seq), l.consumer, l.jobId ?? '-', String(l.deliveries), l.at, l.reason]),
  );
}

/** video-mesh dead-letters [--redrive SEQ]: lists what stages gave up on, or sends one back to its stage. */
export async function deadLetters(ctx: Context, o: { redrive?: number | undefined }): Promise<number> {
  if (o.redrive !== undefined) {
    const body = await ctx.api.call<{ redriven: DeadLetter }>('POST', `/admin/dead-letters/${o.redrive}/redrive`);
    if (ctx.json) printJson(ctx, body);
    else ctx.print(`re-driven: dead letter ${body.redriven.seq} back to ${body.redriven.subject}${body.redriven.jobId ? ` (job ${body.redriven.jobId})` : ''}`);
    return EXIT.ok;
  }
  const body = await ctx.api.call<{ dead_letters: DeadLetter[] }>('GET', '/admin/dead-letters');
  if (ctx.json) printJson(ctx, body);
  else ctx.print(deadLetterLines(body.dead_letters).join('\n'));
  return EXIT.ok;
}

/** Rows under a header, columns padded (the last one, free text, is not). */
function table(header: string[], rows: string[][]): string[] {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  '));
}
