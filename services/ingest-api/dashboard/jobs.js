// Jobs: the recent tasks, newest first, a page at a time, filtered by state and searched by video id,
// object key or task id. Rows change in place as the tasks' changes arrive; a new task that fits the
// filter appears at the top of the first page. No reload.
import { tasks } from './api.js';
import { age, clear, h, refreshAges, time } from './dom.js';
import { failureOf, matches, stageBar, stagesOf, stateBadge, STATES, totalTime } from './model.js';

const PAGE_SIZE = 20;

export function jobsPage(app, params) {
  const filter = { state: STATES.includes(params.get('state')) ? params.get('state') : '', search: params.get('search') ?? '' };
  /** The `before` of each page shown so far: [undefined] is the first page. */
  const cursors = [undefined];
  let shown = [];
  let next = null;

  const state = h('select', { id: 'filter-state', on: { change: () => setFilter({ state: state.value }) } }, h('option', { value: '' }, 'every state'), STATES.map((s) => h('option', { value: s, selected: s === filter.state }, s)));
  let typing;
  const search = h('input', {
    id: 'filter-search',
    type: 'search',
    value: filter.search,
    placeholder: 'video id, object key or task id',
    on: {
      input: () => {
        clearTimeout(typing);
        typing = setTimeout(() => setFilter({ search: search.value }), 300);
      },
    },
  });
  const body = h('tbody');
  const status = h('p', { class: 'muted', role: 'status' });
  const newer = h('button', { type: 'button', class: 'quiet', on: { click: () => turn(-1) } }, '← Newer');
  const older = h('button', { type: 'button', class: 'quiet', on: { click: () => turn(1) } }, 'Older →');
  const pageNo = h('span', { class: 'muted' });

  const el = h(
    'section',
    { class: 'page jobs-page' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Jobs'), h('div', { class: 'filters' }, h('label', { for: 'filter-state' }, 'State'), state, h('label', { for: 'filter-search' }, 'Search'), search)),
    h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { class: 'jobs' },
        h('thead', {}, h('tr', {}, ['State', 'Video', 'Stages', 'Renditions', 'Age', 'Total', 'Failure'].map((c) => h('th', { scope: 'col' }, c)))),
        body,
      ),
    ),
    status,
    h('div', { class: 'pager' }, newer, pageNo, older),
  );

  function row(task) {
    return h(
      'tr',
      { dataset: { taskId: task.task_id, state: task.state } },
      h('td', { 'data-label': 'State' }, stateBadge(task.state), task.attempt > 1 ? h('span', { class: 'muted small' }, ` try ${task.attempt}`) : null),
      h(
        'td',
        { 'data-label': 'Video', class: 'video' },
        h('a', { href: `#/jobs/${task.task_id}`, class: 'strong' }, task.video_id),
        h('div', { class: 'muted small key', title: task.object_key }, task.object_key),
        h('div', { class: 'muted small mono' }, task.task_id.slice(0, 8)),
      ),
      h('td', { 'data-label': 'Stages' }, h('div', { class: 'stages' }, stagesOf(task).map(stageBar))),
      h('td', { 'data-label': 'Renditions' }, renditions(task)),
      h('td', { 'data-label': 'Age', title: time(task.created_at) }, h('span', { 'data-since': task.created_at }, age(task.created_at))),
      h('td', { 'data-label': 'Total' }, totalTime(task)),
      h('td', { 'data-label': 'Failure', class: 'reason' }, failureOf(task)),
    );
  }

  function draw() {
    clear(body, shown.map(row));
    status.textContent = shown.length === 0 ? (filter.state || filter.search ? 'No job fits this filter.' : 'No jobs yet.') : '';
    newer.disabled = cursors.length === 1;
    older.disabled = next === null;
    pageNo.textContent = `page ${cursors.length}`;
  }

  async function load() {
    try {
      const page = await tasks.list({ state: filter.state, search: filter.search.trim(), before: cursors.at(-1), limit: PAGE_SIZE });
      shown = page.tasks;
      next = page.next_before;
      draw();
    } catch (err) {
      status.textContent = `Could not load the jobs: ${err.message}`;
    }
  }

  function setFilter(change) {
    Object.assign(filter, change);
    const query = new URLSearchParams(Object.entries(filter).filter(([, v]) => v));
    history.replaceState(null, '', `#/jobs${query.size ? `?${query}` : ''}`);
    cursors.length = 1;
    void load();
  }

  function turn(by) {
    if (by > 0 && next) cursors.push(next);
    if (by < 0 && cursors.length > 1) cursors.pop();
    void load();
  }

  const ticker = setInterval(() => refreshAges(body), 5000);
  void load();

  return {
    el,
    reload: load,
    onTask(task) {
      const at = shown.findIndex((t) => t.task_id === task.task_id);
      if (at >= 0) {
        // Filtered by state: a task that left it stays in view until the list is read again, marked as it is now.
        shown[at] = task;
        body.children[at]?.replaceWith(row(task));
        return;
      }
      if (cursors.length > 1 || !matches(task, filter)) return;
      if (shown.length > 0 && task.created_at < shown.at(-1).created_at && shown.length >= PAGE_SIZE) return;
      shown = [...shown, task].sort((a, b) => b.created_at.localeCompare(a.created_at));
      if (shown.length > PAGE_SIZE) {
        shown = shown.slice(0, PAGE_SIZE);
        next = shown.at(-1).created_at;
      }
      draw();
    },
    unmount() {
      clearInterval(ticker);
      clearTimeout(typing);
    },
  };
}

function renditions(task) {
  const planned = task.planned_renditions.length ? task.planned_renditions : task.renditions;
  if (planned.length === 0) return h('span', { class: 'muted' }, '—');
  return h(
    'div',
    { class: 'chips' },
    planned.map((r) => h('span', { class: `chip ${task.renditions.includes(r) ? 'chip-on' : ''}`, title: task.renditions.includes(r) ? `${r}: in the manifest` : `${r}: not published (yet)` }, r)),
  );
}
