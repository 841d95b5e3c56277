/**
 * What a person sees while a command works. Three ways, chosen once per run:
 *   bars   stdout is a terminal: a byte progress bar for the upload, then one live bar per stage (cli-progress)
 *   lines  stdout is a file or a pipe: one plain line per change (a stage's state, every 10 %)
 *   quiet  --json: nothing while it works; the command prints one JSON document at the end
 * The texts themselves are made by pure functions (stageLines, statusLines, taskLines) that the tests
 * read directly.
 */
import cliProgress from 'cli-progress';
import type { StageStatus, Task } from './api.ts';

export type Mode = 'bars' | 'lines' | 'quiet';

export interface Display {
  readonly mode: Mode;
  uploadStarted(file: string, size: number): void;
  uploadProgress(sent: number): void;
  uploadDone(): void;
  /** A line of its own (above the bars while they are drawn). */
  note(text: string): void;
  /** The task's latest status. */
  status(task: Task): void;
  /** Stops drawing (before a question is asked) until resume(). */
  pause(): void;
  resume(): void;
  /** Ends drawing for good: the bars stay as they were. */
  stop(): void;
}

export function chooseMode(o: { json: boolean; isTTY: boolean | undefined }): Mode {
  if (o.json) return 'quiet';
  return o.isTTY ? 'bars' : 'lines';
}

export function createDisplay(mode: Mode, out: NodeJS.WriteStream = process.stdout): Display {
  if (mode === 'bars') return barsDisplay(out);
  if (mode === 'lines') return linesDisplay((text) => out.write(`${text}\n`));
  return { mode, uploadStarted() {}, uploadProgress() {}, uploadDone() {}, note() {}, status() {}, pause() {}, resume() {}, stop() {} };
}

// ---- texts ----------------------------------------------------------------------------------------

const STAGE_ORDER = ['download', 'transcode', 'package', 'upload', 'thumbnail', 'notify'];

/** The task's stages in pipeline order (transcodes largest rung first). */
export function orderedStages(task: Pick<Task, 'stages'>): [string, StageStatus][] {
  const rank = (name: string) => STAGE_ORDER.indexOf(name.startsWith('transcode-') ? 'transcode' : name);
  const rung = (name: string) => Number(/^transcode-(\d+)/.exec(name)?.[1] ?? 0);
  return Object.entries(task.stages)
    .filter((e): e is [string, StageStatus] => e[1] !== undefined)
    .sort(([a], [b]) => rank(a) - rank(b) || rung(b) - rung(a) || a.localeCompare(b));
}

export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

/** A stage as one short text: `running 40%`, `done`, `failed: reason`; a retry shows its attempt. */
export function stageText(s: StageStatus): string {
  const attempt = s.attempts > 1 ? ` (attempt ${s.attempts})` : '';
  if (s.state === 'running') return `running${s.percent !== undefined ? ` ${Math.floor(s.percent)}%` : ''}${attempt}`;
  if (s.state === 'failed') return `failed${s.code ? ` ${s.code}` : ''}${s.reason ? `: ${s.reason}` : ''}`;
  return 'done';
}

/** What changed between two statuses of a task, as plain lines: the job's state, and each stage's state or every 10 %. */
export function statusLines(prev: Task | undefined, next: Task): string[] {
  const lines: string[] = [];
  if (prev?.state !== next.state || prev.attempt !== next.attempt) {
    const attempt = next.attempt > 1 ? ` (attempt ${next.attempt})` : '';
    lines.push(`job ${next.task_id}: ${next.state}${attempt}${next.state === 'playable' && next.manifest ? `, manifest ${next.manifest.url}` : ''}`);
  }
  const step = (s: StageStatus | undefined) => (s ? `${s.state}/${s.attempts}/${s.state === 'running' ? Math.floor((s.percent ?? 0) / 10) : ''}` : '');
  for (const [name, s] of orderedStages(next)) {
    if (step(prev?.stages[name]) !== step(s)) lines.push(`  ${name}: ${stageText(s)}`);
  }
  return lines;
}

/** Where the dashboard shows the task: the API's own address serves the dashboard. */
export function dashboardUrl(apiUrl: string, taskId: string): string {
  return `${apiUrl}/#/jobs/${encodeURIComponent(taskId)}`;
}

/** The links of a task: manifest, HLS master, thumbnail, dashboard (those it has). */
export function linkLines(task: Task, apiUrl: string): string[] {
  return [
    task.manifest ? `  manifest:   ${task.manifest.url}` : null,
    task.hls ? `  HLS:        ${task.hls.url}` : null,
    task.thumbnail?.url ? `  thumbnail:  ${task.thumbnail.url}` : null,
    `  dashboard:  ${dashboardUrl(apiUrl, task.task_id)}`,
  ].filter((l): l is string => l !== null);
}

/** A task's whole status, for `status` and the end of `submit`/`watch`. */
export function taskLines(task: Task, apiUrl: string): string[] {
  const renditions = task.renditions.length > 0 ? task.renditions.join(', ') : 'none yet';
  const lines = [
    `task ${task.task_id}: ${task.task_status} (${task.state}${task.attempt > 1 ? `, attempt ${task.attempt}` : ''})`,
    `  video id:   ${task.video_id}`,
    `  object key: ${task.object_key}`,
    `  renditions: ${renditions}${task.planned_renditions.length > 0 ? ` of ${task.planned_renditions.join(', ')}` : ''}`,
  ];
  const stages = orderedStages(task);
  if (stages.length > 0) {
    const width = Math.max(...stages.map(([n]) => n.length));
    lines.push('  stages:', ...stages.map(([name, s]) => `    ${name.padEnd(width)}  ${stageText(s)}`));
  }
  for (const w of task.waiting_for) lines.push(`  waiting for ${w.service}: ${w.reason}`);
  if (task.task_status === 'FAILURE') lines.push(`  reason:     ${task.task_result ?? 'failed'}${task.error ? ` (${task.error.stage}, ${task.error.code})` : ''}`);
  lines.push(...linkLines(task, apiUrl));
  return lines;
}

// ---- plain lines ----------------------------------------------------------------------------------

function linesDisplay(write: (text: string) => void): Display {
  let last: Task | undefined;
  let size = 0;
  let quarter = -1;
  return {
    mode: 'lines',
    uploadStarted(file, bytes) {
      size = bytes;
      quarter = 0;
      write(`uploading ${file} (${formatBytes(bytes)})`);
    },
    uploadProgress(sent) {
      // Every quarter, so a log shows it moving without a line per chunk.
      const q = Math.floor((sent / size) * 4);
      if (q > quarter && q < 4) {
        quarter = q;
        write(`  upload ${q * 25}% (${formatBytes(sent)} of ${formatBytes(size)})`);
      }
    },
    uploadDone() {
      write(`  upload 100% (${formatBytes(size)})`);
    },
    note: write,
    status(task) {
      for (const line of statusLines(last, task)) write(line);
      last = task;
    },
    pause() {},
    resume() {},
    stop() {},
  };
}

// ---- bars -----------------------------------------------------------------------------------------

function barsDisplay(out: NodeJS.WriteStream): Display {
  const common = { stream: out, hideCursor: true, clearOnComplete: false, barsize: 30, fps: 8, autopadding: true };
  let upload: cliProgress.SingleBar | undefined;
  let multi: cliProgress.MultiBar | undefined;
  let bars = new Map<string, cliProgress.SingleBar>();
  let last: Task | undefined;
  let paused = false;
  let width = 14;

  const draw = (task: Task) => {
    if (paused) return;
    multi ??= new cliProgress.MultiBar({ ...common, format: ' {stage} [{bar}] {percentage}% {state}' }, cliProgress.Presets.shades_classic);
    for (const [name, s] of orderedStages(task)) {
      const value = s.state === 'done' ? 100 : Math.floor(s.percent ?? 0);
      const payload = { stage: name.padEnd(width), state: s.state === 'running' ? (s.attempts > 1 ? `running (attempt ${s.attempts})` : 'running') : stageText(s) };
      const bar = bars.get(name);
      if (bar) bar.update(value, payload);
      else bars.set(name, multi.create(100, value, payload));
    }
  };
  const stopBars = () => {
    // Lines logged above the bars wait for the next redraw: drawn now, or they would be lost.
    multi?.update();
    multi?.stop();
    multi = undefined;
    bars = new Map();
  };
  return {
    mode: 'bars',
    uploadStarted(file, size) {
      upload = new cliProgress.SingleBar({ ...common, format: ` upload [{bar}] {percentage}% {sent} of {size} ${file}` }, cliProgress.Presets.shades_classic);
      upload.start(size, 0, { sent: formatBytes(0), size: formatBytes(size) });
    },
    uploadProgress(sent) {
      upload?.update(sent, { sent: formatBytes(sent) });
    },
    uploadDone() {
      upload?.stop();
      upload = undefined;
    },
    note(text) {
      if (multi) multi.log(`${text}\n`);
      else out.write(`${text}\n`);
    },
    status(task) {
      width = Math.max(width, ...Object.keys(task.stages).map((n) => n.length));
      // The job's own changes (playable, failed, a retry) go above the bars as lines.
      const previous = last;
      last = task;
      if (previous?.state !== task.state || previous.attempt !== task.attempt) this.note(statusLines(previous, task)[0]!);
      draw(task);
    },
    pause() {
      paused = true;
      stopBars();
    },
    resume() {
      paused = false;
      if (last) draw(last);
    },
    stop() {
      upload?.stop();
      stopBars();
    },
  };
}
