// Dead letters: work a stage gave up on, with its stage, job, reason and age; an operator re-drives one
// (after a confirmation) once its cause is fixed, and it goes back to its stage.
import { admin } from './api.js';
import { age, clear, h, refreshAges, time } from './dom.js';

const POLL_MS = 5000;

export function deadLettersPage(app) {
  const body = h('tbody');
  const status = h('p', { class: 'muted', role: 'status' });
  const el = h(
    'section',
    { class: 'page dead-letters-page' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Dead letters')),
    app.isOperator
      ? [
          h('p', { class: 'muted small' }, 'Re-driving sends the message to its stage again; a letter of a stage that can take its job to the end (download, transcode, package, upload) brings its failed job back first.'),
          h(
            'div',
            { class: 'table-wrap' },
            h('table', { class: 'dead-letters' }, h('thead', {}, h('tr', {}, ['Stage', 'Job', 'Reason', 'Tries', 'Age', ''].map((c) => h('th', { scope: 'col' }, c)))), body),
          ),
          status,
        ]
      : h('p', { class: 'muted' }, "Dead letters need the operators' key (ADMIN_API_KEY): sign in with it to see them."),
  );
  if (!app.isOperator) return { el };

  let timer;
  let stopped = false;
  async function load() {
    clearTimeout(timer);
    try {
      const { dead_letters: letters } = await admin.deadLetters();
      clear(body, letters.map(row));
      status.textContent = letters.length === 0 ? 'No dead letters: no stage has given up on anything.' : '';
    } catch (err) {
      status.textContent = `Could not read the dead letters: ${err.message}`;
    }
    if (!stopped) timer = setTimeout(load, POLL_MS);
  }

  function row(letter) {
    return h(
      'tr',
      { dataset: { seq: letter.seq } },
      h('td', { 'data-label': 'Stage' }, letter.consumer, h('div', { class: 'muted small mono' }, letter.subject)),
      h('td', { 'data-label': 'Job' }, letter.jobId ? h('a', { href: `#/jobs/${letter.jobId}`, class: 'mono' }, letter.jobId.slice(0, 8)) : h('span', { class: 'muted' }, 'none (unreadable message)')),
      h('td', { 'data-label': 'Reason', class: 'reason' }, letter.reason),
      h('td', { 'data-label': 'Tries' }, letter.deliveries),
      h('td', { 'data-label': 'Age', title: time(letter.at) }, h('span', { 'data-since': letter.at }, age(letter.at))),
      h('td', {}, h('button', { type: 'button', class: 'redrive', on: { click: () => redrive(letter) } }, 'Re-drive')),
    );
  }

  async function redrive(letter) {
    const what = `${letter.consumer}${letter.jobId ? ` of job ${letter.jobId.slice(0, 8)}` : ''}`;
    if (!(await app.confirm('Re-drive this dead letter?', `The message goes back to ${letter.subject} (${what}). Fix what made it fail first, or it fails again.`, 'Re-drive'))) return;
    if (await app.act(() => admin.redrive(letter.seq), `Dead letter ${letter.seq} re-driven to ${letter.subject}.`)) await load();
  }

  const ticker = setInterval(() => refreshAges(body), 5000);
  void load();
  return {
    el,
    reload: load,
    unmount() {
      stopped = true;
      clearTimeout(timer);
      clearInterval(ticker);
    },
  };
}
