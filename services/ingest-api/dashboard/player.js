// Shaka Player (served by the API from node_modules, loaded with the first job page) on a job's DASH
// manifest. Its errors are shown beside the video, not thrown: a manifest on a CDN this browser cannot
// reach is the job's news, not the page's failure.
import { loadScript } from './dom.js';

export function attachPlayer(video, manifestUrl, note) {
  let player = null;
  let destroyed = false;
  const show = (err) => note(`The player could not play the manifest (Shaka error ${err?.code ?? err?.detail?.code ?? err?.message ?? err}).`);
  loadScript('/dashboard/shaka-player.compiled.js').then(
    () => {
      if (destroyed) return;
      const { shaka } = window;
      shaka.polyfill.installAll();
      if (!shaka.Player.isBrowserSupported()) return note('This browser cannot play DASH (no Media Source Extensions).');
      player = new shaka.Player();
      player.addEventListener('error', (e) => show(e.detail));
      player
        .attach(video)
        .then(() => player.load(manifestUrl))
        .then(() => note(`Playing ${manifestUrl}`), show);
    },
    () => note('The player did not load.'),
  );
  return {
    destroy() {
      destroyed = true;
      void player?.destroy();
    },
  };
}
