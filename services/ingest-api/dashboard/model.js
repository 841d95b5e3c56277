// What the pages read off a task (the API's TaskStatus): its stages in pipeline order, whether it can be
// retried or cancelled, how long it took, why it failed.
import { duration, h } from './dom.js';

export const STATES = ['queued', 'processing', 'playable', 'complete', 'failed', 'cancelled'];

/** Running tasks may be cancelled; ended ones (failed or cancelled) may be retried. */
export const canCancel = (task) => ['queued', 'processing', 'playable'].includes(task.state);
export const canRetry = (task) => task.state === 'failed' || task.state === 'cancelled';
/** A cancelled job's stages stop without a word: one still "running" has stopped. */
const stageState = (task, state) => (state === 'running' && task.state === 'cancelled' ? 'stopped' : state);

const rungHeight = (stage) => Number(/^transcode-(\d+)/.exec(stage)?.[1] ?? 0);

/** The stages the task has or will have, in pipeline order: download, transcodes (largest first), thumbnail, package, upload, notify. */
export function stagesOf(task) {
  const transcodes = new Set([...task.planned_renditions.map((r) => `transcode-${r}`), ...Object.keys(task.stages).filter((s) => s.startsWith('transcode-'))]);
  const ordered = ['download', ...[...transcodes].sort((a, b) => rungHeight(b) - rungHeight(a) || a.localeCompare(b)), 'thumbnail', 'package', 'upload'];
  if (task.stages.notify) ordered.push('notify');
  return ordered.map((name) => {
    const stage = task.stages[name] ?? { state: 'waiting', attempts: 0 };
    return { name, ...stage, state: stageState(task, stage.state) };
  });
}

/** "transcode-720p" reads "720p" where space is short. */
export const shortStage = (name) => ({ download: 'download', thumbnail: 'thumb', package: 'package', upload: 'upload', notify: 'notify' })[name] ?? name.replace(/^transcode-/, '');

/** From submit to complete; to now (and "so far") while it runs; to its last change when it ended otherwise. */
export function totalTime(task, now = Date.now()) {
  const start = Date.parse(task.created_at);
  if (task.completed_at) return duration(Date.parse(task.completed_at) - start);
  if (canCancel(task)) return `${duration(now - start, { coarse: true })} so far`;
  return duration(Date.parse(task.updated_at) - start);
}

export function failureOf(task) {
  if (task.state === 'cancelled') return 'cancelled';
  if (task.error) return `${task.error.stage}: ${task.error.reason}`;
  const failed = Object.entries(task.stages).find(([, s]) => s.state === 'failed');
  return failed ? `${failed[0]}: ${failed[1].reason ?? failed[1].code ?? 'failed'}` : '';
}

export function stateBadge(state) {
  return h('span', { class: `badge state-${state}` }, state);
}

/** One stage as a labelled bar: its share done, or full in its colour once it ended. */
export function stageBar(stage) {
  const percent = ['done', 'failed', 'stopped'].includes(stage.state) ? 100 : Math.round(stage.percent ?? 0);
  const label = `${stage.name}: ${stage.state}${stage.state === 'running' ? ` ${percent}%` : ''}${stage.attempts > 1 ? `, ${stage.attempts} attempts` : ''}`;
  return h(
    'span',
    { class: `stage stage-${stage.state}`, title: label },
    h('span', { class: 'stage-name' }, shortStage(stage.name)),
    h('progress', { max: 100, value: percent, 'aria-label': label }),
  );
}

/** Does the task belong in a list filtered by state and search (as the API's list filters)? */
export function matches(task, filter) {
  if (filter.state && task.state !== filter.state) return false;
  const q = (filter.search ?? '').trim().toLowerCase();
  if (!q) return true;
  return task.task_id === q || task.video_id.toLowerCase().includes(q) || task.object_key.toLowerCase().includes(q);
}
