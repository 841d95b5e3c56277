// Queues and replicas: per stage, the work waiting, in progress and redelivered, whether replicas are
// attached and how many pulls of idle ones wait, read every 2 s, each with a chart of its last 15 minutes
// (uPlot, from the API's own samples). What an operator reads to decide how many replicas of a stage to
// run: work that keeps waiting wants more; idle pulls that stay high want fewer; "stalled" wants one at all.
import { admin } from './api.js';
import { age, clear, h, loadScript, time } from './dom.js';

const POLL_MS = 2000;
const COLORS = { waiting: '#d97706', progress: '#2563eb' };

export function queuesPage(app) {
  const body = h('tbody');
  const note = h('p', { class: 'muted small', role: 'status' });
  const deadLetters = h('p', {});
  const legend = h('span', { class: 'legend small' }, h('span', { class: 'swatch swatch-waiting' }), 'waiting ', h('span', { class: 'swatch swatch-progress' }), 'in progress');
  const el = h(
    'section',
    { class: 'page queues-page' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Queues and replicas'), deadLetters),
    app.isOperator
      ? [
          h(
            'div',
            { class: 'table-wrap' },
            h(
              'table',
              { class: 'queues' },
              h(
                'thead',
                {},
                h(
                  'tr',
                  {},
                  h('th', { scope: 'col' }, 'Stage'),
                  h('th', { scope: 'col', class: 'num', title: 'work no replica has taken yet' }, 'Waiting'),
                  h('th', { scope: 'col', class: 'num', title: 'work a replica holds now' }, 'In progress'),
                  h('th', { scope: 'col', class: 'num', title: 'held work delivered more than once' }, 'Redelivered'),
                  h('th', { scope: 'col', class: 'num', title: 'pull requests of idle replicas (or their free slots)' }, 'Idle pulls'),
                  h('th', { scope: 'col' }, 'Replicas'),
                  h('th', { scope: 'col' }, 'Last active'),
                  h('th', { scope: 'col', class: 'chart-col' }, 'Last 15 minutes ', legend),
                ),
              ),
              body,
            ),
          ),
          note,
        ]
      : h('p', { class: 'muted' }, "Queues need the operators' key (ADMIN_API_KEY): sign in with it to see them."),
  );
  if (!app.isOperator) return { el };

  /** Per stage: its row's cells, made once, and its chart. */
  const rows = new Map();
  let timer;
  let historyTimer;
  let stopped = false;

  function rowOf(q) {
    let r = rows.get(q.consumer);
    if (r) return r;
    const cell = (field) => h('td', { class: 'num', 'data-field': field });
    r = { tr: null, cells: { pending: cell('pending'), ack_pending: cell('ack_pending'), redelivered: cell('redelivered'), waiting: cell('waiting') }, replicas: h('td', {}), active: h('td', {}), chart: h('div', { class: 'chart' }), plot: null };
    r.tr = h('tr', { dataset: { consumer: q.consumer } }, h('th', { scope: 'row' }, q.consumer, h('div', { class: 'muted small mono' }, q.subject)), Object.values(r.cells), r.replicas, r.active, h('td', { class: 'chart-col' }, r.chart));
    rows.set(q.consumer, r);
    body.append(r.tr);
    return r;
  }

  async function poll() {
    try {
      const { queues, dead_letters } = await admin.queues();
      for (const q of queues) {
        const r = rowOf(q);
        for (const [field, td] of Object.entries(r.cells)) td.textContent = String(q[field]);
        clear(r.replicas, q.stalled ? h('span', { class: 'badge state-failed' }, 'stalled: none attached') : q.attached ? h('span', { class: 'badge state-complete' }, 'attached') : h('span', { class: 'badge state-queued' }, q.exists ? 'none attached' : 'never started'));
        r.active.textContent = q.last_active ? `${age(q.last_active)} ago` : '—';
        r.active.title = q.last_active ? time(q.last_active) : '';
      }
      clear(deadLetters, dead_letters === 0 ? 'No dead letters.' : h('a', { href: '#/dead-letters' }, `${dead_letters} dead letter${dead_letters === 1 ? '' : 's'}`));
    } catch (err) {
      note.textContent = `Could not read the queues: ${err.message}`;
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }

  async function pollHistory() {
    let next = 10_000;
    try {
      const [history] = await Promise.all([admin.history(), loadScript('/dashboard/uPlot.iife.min.js')]);
      next = history.interval_sec * 1000;
      if (!stopped) drawCharts(history);
    } catch (err) {
      note.textContent = `Could not read the queue history: ${err.message}`;
    }
    if (!stopped) historyTimer = setTimeout(pollHistory, next);
  }

  function drawCharts(history) {
    const from = history.samples[0];
    note.textContent = `Charts: a point every ${history.interval_sec} s${from ? `, from ${time(from.at)}` : ''}, read by this API process since it started (up to ${history.window_sec / 60} minutes).`;
    const xs = history.samples.map((s) => Date.parse(s.at) / 1000);
    for (const [consumer, r] of rows) {
      const of = (field) => history.samples.map((s) => s.queues.find((q) => q.consumer === consumer)?.[field] ?? null);
      const data = [xs, of('pending'), of('ack_pending')];
      if (r.plot) r.plot.setData(data);
      else r.plot = sparkline(r.chart, data);
    }
  }

  void poll().then(pollHistory);
  return {
    el,
    unmount() {
      stopped = true;
      clearTimeout(timer);
      clearTimeout(historyTimer);
      for (const r of rows.values()) r.plot?.destroy();
    },
  };
}

/** A small chart of waiting and in-progress work: a y axis for the scale, the time in the tooltip-free cursor's legend. */
function sparkline(box, data) {
  const width = () => Math.max(160, box.clientWidth);
  const plot = new window.uPlot(
    {
      width: width(),
      height: 56,
      legend: { show: false },
      cursor: { show: false },
      padding: [8, 6, 2, 0],
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(2, max)] } },
      axes: [{ show: false }, { size: 26, gap: 2, ticks: { show: false }, font: '10px system-ui', splits: (_u, _i, _min, max) => [0, max] }],
      series: [{}, { label: 'waiting', stroke: COLORS.waiting, width: 1.5, points: { show: false } }, { label: 'in progress', stroke: COLORS.progress, width: 1.5, points: { show: false } }],
    },
    data,
    box,
  );
  new ResizeObserver(() => plot.setSize({ width: width(), height: 56 })).observe(box);
  return plot;
}
