// The dashboard: signs in once (POST /session sets an HttpOnly cookie; the key is kept nowhere), then
// one page per task, by hash route: #/jobs, #/jobs/<task id>, #/queues, #/dead-letters. Every job change
// arrives over one EventSource on /events (authenticated by the cookie) and goes to the page shown.
import { ApiError, session, whenSignedOut } from './api.js';
import { clear, h } from './dom.js';
import { jobsPage } from './jobs.js';
import { jobPage } from './job.js';
import { queuesPage } from './queues.js';
import { deadLettersPage } from './dead-letters.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const live = document.getElementById('live');
const flashBox = document.getElementById('flash');

const app = {
  /** GET /session's answer while signed in. */
  session: null,
  get isOperator() {
    return this.session?.role === 'admin';
  },
  /** A short message at the top: what an action did, or why it could not. */
  flash(text, kind = 'info') {
    flashBox.hidden = false;
    flashBox.className = `flash flash-${kind}`;
    flashBox.textContent = text;
    clearTimeout(this.flashTimer);
    this.flashTimer = setTimeout(() => (flashBox.hidden = true), 8000);
  },
  /** Asks before an action; Enter confirms (the confirm button has the focus), Escape keeps things as they are. */
  confirm(title, text, action) {
    const dialog = document.getElementById('confirm');
    document.getElementById('confirm-title').textContent = title;
    document.getElementById('confirm-text').textContent = text;
    document.getElementById('confirm-yes').textContent = action;
    dialog.returnValue = '';
    dialog.showModal();
    return new Promise((resolve) => dialog.addEventListener('close', () => resolve(dialog.returnValue === 'yes'), { once: true }));
  },
  /** Runs an action, flashing what it did or the API's reason it could not. */
  async act(run, done) {
    try {
      await run();
      this.flash(done, 'ok');
      return true;
    } catch (err) {
      if (!(err instanceof ApiError && err.signedOut)) this.flash(err instanceof ApiError ? err.message : `failed: ${err.message}`, 'error');
      return false;
    }
  },
};

// ---- live changes ------------------------------------------------------------------------------

let events = null;
let page = null;

function follow() {
  events?.close();
  events = new EventSource('/events');
  setLive('connecting');
  events.addEventListener('ready', (e) => {
    setLive('live');
    // Changes were missed (away too long): what the page shows is read again.
    if (JSON.parse(e.data).reset) page?.reload?.();
  });
  events.addEventListener('message', (e) => page?.onTask?.(JSON.parse(e.data).task));
  events.addEventListener('error', () => {
    if (events.readyState !== EventSource.CLOSED) return setLive('reconnecting');
    // Refused (the session ended?) rather than dropped: ask before trying again.
    setLive('offline');
    setTimeout(() => void start(), 3000);
  });
}

function setLive(state) {
  live.textContent = state;
  live.className = `live live-${state}`;
}

// ---- pages -------------------------------------------------------------------------------------

const ROUTES = [
  [/^#\/jobs\/([0-9a-f-]{36})$/i, (m) => jobPage(app, m[1])],
  [/^#\/queues$/, () => queuesPage(app)],
  [/^#\/dead-letters$/, () => deadLettersPage(app)],
  [/^#\/jobs(?:\?(.*))?$/, (m) => jobsPage(app, new URLSearchParams(m[1] ?? ''))],
];

function render() {
  if (!app.session) return;
  page?.unmount?.();
  // What an action did belongs to the page it was done on.
  flashBox.hidden = true;
  const route = ROUTES.find(([re]) => re.test(location.hash));
  if (!route) {
    history.replaceState(null, '', '#/jobs');
    return render();
  }
  const [re, make] = route;
  page = make(location.hash.match(re));
  clear(main, page.el);
  for (const link of nav.querySelectorAll('a')) link.toggleAttribute('aria-current', location.hash.startsWith(`#/${link.dataset.page}`));
  // A page change moves the focus to the new content, for keyboard and screen reader users.
  if (document.activeElement?.closest('nav, #main')) main.focus({ preventScroll: true });
}

function signInForm(reason) {
  const key = h('input', { id: 'key', type: 'password', name: 'key', required: true, autocomplete: 'current-password', spellcheck: 'false' });
  const error = h('p', { class: 'error', role: 'alert' }, reason ?? '');
  const form = h(
    'form',
    {
      class: 'sign-in',
      method: 'post',
      on: {
        async submit(e) {
          e.preventDefault();
          try {
            app.session = await session.signIn(key.value);
            key.value = '';
            signedIn();
          } catch (err) {
            error.textContent = err instanceof ApiError ? (err.status === 403 ? 'That key is not valid here.' : err.message) : `could not sign in: ${err.message}`;
            key.select();
          }
        },
      },
    },
    h('h1', {}, 'Sign in'),
    h('p', {}, 'Use the API key: APP_API_KEY to follow jobs, ADMIN_API_KEY (when set) to retry, cancel and re-drive. It is sent once; the browser then holds a session cookie that scripts cannot read.'),
    h('label', { for: 'key' }, 'API key'),
    key,
    error,
    h('button', { type: 'submit' }, 'Sign in'),
  );
  return { form, key };
}

function signedOut(reason) {
  app.session = null;
  events?.close();
  events = null;
  page?.unmount?.();
  page = null;
  nav.hidden = true;
  who.hidden = true;
  const { form, key } = signInForm(reason);
  clear(main, form);
  key.focus();
}

function signedIn() {
  nav.hidden = false;
  who.hidden = false;
  document.getElementById('role').textContent = app.isOperator ? 'operator' : 'client (read only)';
  follow();
  render();
}

async function start() {
  try {
    app.session = await session.get();
  } catch (err) {
    return signedOut(`The API did not answer (${err.message}).`);
  }
  if (!app.session.signed_in) return signedOut();
  // Back after the stream was refused: follow again, the page stays as it is.
  if (page) follow();
  else signedIn();
}

document.getElementById('sign-out').addEventListener('click', async () => {
  await session.signOut().catch(() => undefined);
  signedOut();
});
whenSignedOut(() => signedOut('The session has ended: sign in again.'));
window.addEventListener('hashchange', render);
void start();
