// One job: its stages as a timeline (start, end, attempts, which replica), what it made (renditions,
// manifests, thumbnail), an embedded player on its manifest, every try at the backend's webhook, its
// trace, and Retry / Cancel for operators. Changes arrive live; the player is loaded once, when the
// first manifest is out, and keeps playing while the manifest grows.
import { ApiError, tasks } from './api.js';
import { bytes, clear, clock, duration, h, time } from './dom.js';
import { canCancel, canRetry, failureOf, stagesOf, stateBadge, totalTime } from './model.js';
import { attachPlayer } from './player.js';

export function jobPage(app, taskId) {
  let task = null;
  /** waiting_for comes with GET only (it reads the queues): kept from the last one. */
  let waitingFor = [];
  /** The thumbnail is served from what GET reads (the projection), which may trail the live changes a moment. */
  let thumbnailServed = false;
  let refetch;

  const head = h('div', { class: 'page-head' });
  const summary = h('div', { class: 'card' });
  const timeline = h('div', { class: 'card' });
  const outputs = h('div', { class: 'card' });
  const webhook = h('div', { class: 'card' });
  const video = h('video', { controls: true, muted: true, playsInline: true, preload: 'auto', 'aria-label': 'the job\'s manifest, played' });
  const playerNote = h('p', { class: 'muted small break', role: 'status' });
  const player = h('div', { class: 'card player' }, h('h2', {}, 'Player'), video, playerNote);
  const thumb = h('div', { class: 'card thumb' });
  let playing = null;

  const el = h(
    'section',
    { class: 'page job-page' },
    h('p', {}, h('a', { href: '#/jobs' }, '← Jobs')),
    head,
    h('div', { class: 'job-grid' }, h('div', { class: 'job-main' }, summary, timeline, webhook), h('div', { class: 'job-side' }, player, thumb, outputs)),
  );

  async function load() {
    clearTimeout(refetch);
    try {
      const fresh = await tasks.get(taskId);
      waitingFor = fresh.waiting_for;
      thumbnailServed = fresh.thumbnail !== null;
      // The live changes may be ahead of what GET read: keep the newer.
      draw(!task || fresh.updated_at >= task.updated_at ? fresh : task);
      if (task.thumbnail && !thumbnailServed) refetch = setTimeout(load, 1000);
    } catch (err) {
      clear(head, h('h1', {}, 'Job'), h('p', { class: 'error', role: 'alert' }, err instanceof ApiError && err.status === 404 ? `There is no job ${taskId}.` : `Could not load the job: ${err.message}`));
    }
  }

  function draw(next) {
    task = next;
    drawHead();
    drawSummary();
    drawTimeline();
    drawOutputs();
    drawWebhook();
    drawThumbnail();
    if (task.manifest && !playing) {
      playing = attachPlayer(video, task.manifest.url, (note) => (playerNote.textContent = note));
    } else if (!task.manifest) {
      playerNote.textContent = 'The player starts once the first rendition is published.';
    }
  }

  function drawHead() {
    const actions = h('div', { class: 'actions' });
    if (app.isOperator) {
      if (canRetry(task)) actions.append(h('button', { type: 'button', id: 'retry', on: { click: retry } }, 'Retry'));
      if (canCancel(task)) actions.append(h('button', { type: 'button', id: 'cancel', class: 'danger', on: { click: cancel } }, 'Cancel'));
    } else if (canRetry(task) || canCancel(task)) {
      actions.append(h('p', { class: 'muted small' }, "Retry and Cancel need the operators' key (ADMIN_API_KEY)."));
    }
    clear(
      head,
      h('div', {}, h('h1', {}, `Job ${task.video_id} `, stateBadge(task.state)), h('p', { class: 'muted mono small' }, task.task_id, task.attempt > 1 ? ` · attempt ${task.attempt}` : '')),
      actions,
    );
  }

  async function retry() {
    if (!(await app.confirm('Retry this job?', `Job ${task.video_id} runs again from the start, as attempt ${task.attempt + 1}.`, 'Retry'))) return;
    await app.act(() => tasks.retry(taskId), `Job ${task.video_id} is queued again.`);
  }

  async function cancel() {
    if (!(await app.confirm('Cancel this job?', `Its work stops now and nothing more is published for ${task.video_id}. It can be retried later.`, 'Cancel the job'))) return;
    await app.act(() => tasks.cancel(taskId), `Job ${task.video_id} is cancelled.`);
  }

  function drawSummary() {
    const reason = failureOf(task);
    const src = task.source;
    const rows = [
      ['Object key', h('span', { class: 'mono break' }, task.object_key)],
      ['Created', time(task.created_at)],
      ['Playable', task.playable_at ? `${time(task.playable_at)} (after ${duration(Date.parse(task.playable_at) - Date.parse(task.created_at))})` : '—'],
      ['Completed', task.completed_at ? time(task.completed_at) : '—'],
      ['Total time', totalTime(task)],
      ['Source', src ? `${src.width}×${src.height}, ${duration(src.durationSec * 1000)}, ${src.videoCodec}${src.audioCodec ? ` + ${src.audioCodec}` : ', no audio'}, ${bytes(src.sizeBytes)}` : '—'],
      ['Trace', trace()],
    ];
    clear(
      summary,
      h('h2', {}, 'Summary'),
      reason ? h('p', { class: 'error', role: 'alert' }, reason) : null,
      waitingFor.map((w) => h('p', { class: 'warn' }, `Waiting for ${w.service}: ${w.reason}`)),
      h('dl', { class: 'facts' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
    );
  }

  function trace() {
    if (!task.trace_id) return '—';
    const base = app.session.jaeger_ui_url;
    return base ? h('a', { href: `${base.replace(/\/$/, '')}/trace/${task.trace_id}`, target: '_blank', rel: 'noopener', class: 'mono' }, task.trace_id) : h('span', { class: 'mono' }, task.trace_id);
  }

  function drawTimeline() {
    const now = Date.now();
    clear(
      timeline,
      h('h2', {}, 'Stages'),
      h(
        'div',
        { class: 'table-wrap' },
        h(
          'table',
          { class: 'timeline' },
          h('thead', {}, h('tr', {}, ['Stage', 'State', 'Started', 'Ended', 'Took', 'Attempts', 'Replica'].map((c) => h('th', { scope: 'col' }, c)))),
          h(
            'tbody',
            {},
            stagesOf(task).map((s) =>
              h(
                'tr',
                { dataset: { stage: s.name, state: s.state } },
                h('th', { scope: 'row' }, s.name),
                h('td', {}, h('span', { class: `badge stage-badge-${s.state}` }, s.state === 'running' ? `running ${Math.round(s.percent ?? 0)}%` : s.state), s.reason ? h('div', { class: 'small reason' }, s.reason) : null),
                h('td', { title: time(s.startedAt) }, clock(s.startedAt)),
                h('td', { title: time(s.finishedAt) }, clock(s.finishedAt)),
                h('td', {}, s.startedAt && s.state !== 'stopped' ? duration((s.finishedAt ? Date.parse(s.finishedAt) : now) - Date.parse(s.startedAt)) : ''),
                h('td', {}, s.attempts || ''),
                h('td', { class: 'mono small' }, s.replica ?? ''),
              ),
            ),
          ),
        ),
      ),
    );
  }

  function drawOutputs() {
    const link = (label, url) => (url ? h('a', { href: url, target: '_blank', rel: 'noopener', class: 'break' }, label) : h('span', { class: 'muted' }, '—'));
    clear(
      outputs,
      h('h2', {}, 'Output'),
      h(
        'dl',
        { class: 'facts' },
        h('dt', {}, 'Renditions'),
        h('dd', {}, task.renditions.length ? task.renditions.join(', ') : '—', task.planned_renditions.length ? h('span', { class: 'muted' }, ` of ${task.planned_renditions.join(', ')}`) : null),
        h('dt', {}, 'DASH'),
        h('dd', {}, link(task.manifest?.key ?? '', task.manifest?.url)),
        h('dt', {}, 'HLS'),
        h('dd', {}, link(task.hls?.key ?? '', task.hls?.url)),
        h('dt', {}, 'Thumbnail'),
        h('dd', {}, task.thumbnail ? link(`${task.thumbnail.bucket}/${task.thumbnail.key}`, tasks.thumbnailUrl(taskId)) : h('span', { class: 'muted' }, '—')),
        // The seek previews' WebVTT track, for players that read it (Shaka and dash.js find them in the DASH manifest).
        h('dt', {}, 'Seek previews'),
        h('dd', {}, task.storyboard ? link(task.storyboard.key, task.storyboard.url) : h('span', { class: 'muted' }, '—')),
      ),
    );
  }

  let thumbShown = false;
  function drawThumbnail() {
    if (thumbShown) return;
    if (!task.thumbnail || !thumbnailServed) {
      clear(thumb, h('h2', {}, 'Thumbnail'), h('p', { class: 'muted small' }, task.thumbnail ? 'Made; loading.' : 'Not made yet.'));
      return;
    }
    thumbShown = true;
    clear(thumb, h('h2', {}, 'Thumbnail'), h('img', { src: tasks.thumbnailUrl(taskId), alt: `thumbnail of ${task.video_id}`, id: 'thumbnail' }));
  }

  function drawWebhook() {
    const tries = [...task.notifications].reverse();
    clear(
      webhook,
      h('h2', {}, 'Webhook'),
      tries.length === 0
        ? h('p', { class: 'muted small' }, 'The backend has not been called yet.')
        : h(
            'div',
            { class: 'table-wrap' },
            h(
              'table',
              { class: 'webhook' },
              h('thead', {}, h('tr', {}, ['When', 'Told', 'Try', 'Outcome', 'HTTP', 'Reason'].map((c) => h('th', { scope: 'col' }, c)))),
              h('tbody', {}, tries.map((n) => h('tr', {}, h('td', { title: time(n.at) }, clock(n.at)), h('td', {}, n.status), h('td', {}, n.attempt), h('td', {}, h('span', { class: `badge outcome-${n.outcome}` }, n.outcome.replace('_', ' '))), h('td', {}, n.httpStatus || '—'), h('td', { class: 'reason' }, n.error ?? '')))),
            ),
          ),
    );
  }

  void load();
  return {
    el,
    reload: load,
    onTask(next) {
      if (next.task_id !== taskId) return;
      draw(next);
      // waiting_for (and the thumbnail) are read with GET: once the changes settle, read it again.
      clearTimeout(refetch);
      refetch = setTimeout(() => void load(), 1000);
    },
    unmount() {
      clearTimeout(refetch);
      playing?.destroy();
    },
  };
}
